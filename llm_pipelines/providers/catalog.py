"""The model catalog: which models exist, their lifecycle, line and limits, as the provider's
own Models API says (``client.models.list()``), kept in the lake.

Nothing here lists models by hand: a new model, a deprecation or a retirement reaches the
pipeline with the next refresh (the ``model_catalog`` asset, on a schedule). The catalog
answers three questions for intake and routing: is this a model id at all (dated ids and
aliases resolve to the listed model), what is its ``max_tokens`` ceiling, and where does a
retired model's work go (a named successor, or the newest active model of its line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llm_pipelines.storage.datasets import utcnow
from llm_pipelines.storage.lake import Lake

CATALOG = "catalog"
"""The lake dataset of the model catalog (not partitioned: one current file)."""
CATALOG_FILE = "models.json"

Lifecycle = Literal["active", "deprecated", "retired"]
_NEVER = datetime.min.replace(tzinfo=UTC)
_DATED = re.compile(r"^(?P<alias>.+)-(?P<date>\d{8})$")


class CatalogModel(BaseModel):
    """One model as the Models API lists it (the fields routing uses)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    display_name: str = ""
    lifecycle: Lifecycle = "active"
    line: str | None = None
    created_at: datetime | None = None
    deprecated_at: datetime | None = None
    retires_at: datetime | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None


class ModelCatalog(BaseModel):
    """The provider's models at one moment, with where they came from."""

    model_config = ConfigDict(extra="forbid")

    provider: str = "anthropic"
    fetched_at: datetime
    source: str
    """Which backend answered: ``anthropic-api``, ``emulator-http`` or ``emulator-in-process``."""
    models: list[CatalogModel]

    @classmethod
    def from_listing(cls, listing: Iterable[Any], source: str) -> ModelCatalog:
        """A catalog from the SDK's ``ModelInfo`` objects (or dicts of their fields)."""
        models = [
            CatalogModel.model_validate(m if isinstance(m, Mapping) else m.model_dump())
            for m in listing
        ]
        return cls(fetched_at=utcnow(), source=source, models=models)

    def _by_id(self) -> dict[str, CatalogModel]:
        return {model.id: model for model in self.models}

    def resolve(self, model_id: str) -> CatalogModel | None:
        """The listed model ``model_id`` names: itself, its dated id's model
        (``claude-haiku-4-5-20251001`` → ``claude-haiku-4-5``) or, for an alias, the one
        dated model listed under it; None for an id the API does not know."""
        by_id = self._by_id()
        if model_id in by_id:
            return by_id[model_id]
        dated = _DATED.match(model_id)
        if dated and dated["alias"] in by_id:
            return by_id[dated["alias"]]
        under_alias = [
            m for m in self.models if (d := _DATED.match(m.id)) and d["alias"] == model_id
        ]
        return max(under_alias, key=lambda m: m.id) if under_alias else None

    def accepted_ids(self) -> dict[str, int | None]:
        """Every id a task may name (listed ids, their aliases and dated forms resolve) →
        its ``max_tokens`` ceiling (None: not published). Picklable, for intake's workers."""
        accepted: dict[str, int | None] = {}
        for model in self.models:
            accepted[model.id] = model.max_tokens
            if dated := _DATED.match(model.id):
                accepted.setdefault(dated["alias"], model.max_tokens)
        return accepted

    def successor(self, model_id: str, named: Mapping[str, str] | None = None) -> str | None:
        """Where a retired model's work goes: the successor ``named`` for it (by the policy),
        else the newest active model of the same line; None if there is neither."""
        if named and model_id in named:
            return named[model_id]
        model = self.resolve(model_id)
        if model is None or model.line is None:
            return None
        same_line = [m for m in self.models if m.line == model.line and m.lifecycle == "active"]
        newest = max(same_line, key=lambda m: m.created_at or _NEVER, default=None)
        return newest.id if newest is not None else None

    def retired_successors(self, named: Mapping[str, str] | None = None) -> dict[str, str | None]:
        """Every id naming a retired model (listed, alias and dated forms) → its
        :meth:`successor` (None: it has none)."""
        retired: dict[str, str | None] = {}
        for model in self.models:
            if model.lifecycle != "retired":
                continue
            names = [model.id]
            if dated := _DATED.match(model.id):
                names.append(dated["alias"])
            for name in names:
                retired[name] = self.successor(name, named) or self.successor(model.id, named)
        return retired

    def intake_models(
        self,
        priced: Callable[[str], bool],
        retired: Literal["migrate", "dead_letter"] = "migrate",
        successors: Mapping[str, str] | None = None,
    ) -> dict[str, int | str | None]:
        """What intake accepts: every id a task may name → its ``max_tokens`` ceiling, or why
        work for it is refused (a retired model the policy dead-letters, or one with nowhere
        to go). Models without a price (``priced``) are left out: they cannot be reported."""
        accepted: dict[str, int | str | None] = {
            name: ceiling for name, ceiling in self.accepted_ids().items() if priced(name)
        }
        for name, successor in self.retired_successors(successors).items():
            if name not in accepted:
                continue
            model = self.resolve(name)
            assert model is not None
            when = f" on {model.retires_at:%Y-%m-%d}" if model.retires_at else ""
            if retired == "dead_letter":
                instead = f"; send it to a current model such as {successor}" if successor else ""
                accepted[name] = (
                    f"model: {name} was retired{when} (the provider's Models API) and the "
                    f"routing policy dead-letters work for retired models{instead}"
                )
            elif successor is None:
                accepted[name] = (
                    f"model: {name} was retired{when} (the provider's Models API) and has no "
                    "successor: name one in the routing policy's model_lifecycle.successors"
                )
        return accepted

    def save(self, lake: Lake) -> str:
        """Write the catalog to the lake (atomically); returns its path."""
        path = catalog_path(lake)
        lake.write_json(path, self.model_dump(mode="json"))
        return path

    @classmethod
    def load(cls, lake: Lake) -> ModelCatalog | None:
        """The catalog last saved to the lake, or None if there is none yet."""
        path = catalog_path(lake)
        if not lake.exists(path):
            return None
        return cls.model_validate(lake.read_json(path))


def catalog_path(lake: Lake) -> str:
    """Where the catalog lives in the lake."""
    return f"{lake.root}/{CATALOG}/{CATALOG_FILE}"
