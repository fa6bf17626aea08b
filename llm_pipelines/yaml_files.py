"""Reading the deployment's YAML files (routing policy, price sheet) with errors that say where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


def read_yaml(path: str | Path, label: str, error: type[ValueError]) -> Any:
    """The parsed document at ``path``; ``error`` names ``label`` and the path otherwise."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise error(f"{label} {path}: cannot read it: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{label} {path}: not valid YAML: {exc}") from None


def problems(error: ValidationError, root: str) -> str:
    """Each validation problem as ``dotted.field.path: message``, joined by ``; ``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}"
        for e in error.errors(include_url=False)
    )
