"""The emulator's model lineup (``models.yaml``): ids, aliases, lifecycle, limits, capabilities."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

LINEUP_FILE = Path(__file__).with_name("models.yaml")
Lifecycle = Literal["active", "deprecated", "retired"]
ThinkingType = Literal["enabled", "adaptive", "disabled", "between_tools"]
Effort = Literal["low", "medium", "high", "xhigh", "max"]
EPOCH = date(1970, 1, 1)


class ModelEntry(BaseModel):
    """One model of the lineup, as ``models.yaml`` states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    aliases: tuple[str, ...] = ()
    display_name: str
    line: Literal["haiku", "sonnet", "opus", "fable", "mythos"] | None
    created_at: date
    lifecycle: Lifecycle
    deprecated_at: date | None = None
    retires_at: date | None = None
    max_input_tokens: int = Field(gt=0)
    max_tokens: int = Field(gt=0)
    thinking: tuple[ThinkingType, ...]
    effort: tuple[Effort, ...]
    forced_tool_use: bool
    min_cacheable_tokens: int = Field(ge=0)

    @property
    def callable(self) -> bool:
        """Whether inference requests naming it are served (retired models are not)."""
        return self.lifecycle != "retired"

    def to_api(self) -> dict[str, Any]:
        """The ``ModelInfo`` object ``GET /v1/models`` returns."""
        return {
            "id": self.id,
            "type": "model",
            "display_name": self.display_name,
            "created_at": _rfc3339(self.created_at),
            "lifecycle": self.lifecycle,
            "deprecated_at": _rfc3339(self.deprecated_at),
            "retires_at": _rfc3339(self.retires_at),
            "line": self.line,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "capabilities": self._capabilities(),
        }

    def _capabilities(self) -> dict[str, Any]:
        yes = {"supported": True}
        thinking = {kind: {"supported": kind in self.thinking} for kind in ThinkingType.__args__}
        effort = {level: {"supported": level in self.effort} for level in Effort.__args__}
        return {
            "batch": yes,
            "citations": yes,
            "code_execution": yes,
            "context_management": {
                "supported": True,
                "clear_thinking_20251015": yes,
                "clear_tool_uses_20250919": yes,
                "compact_20260112": yes,
            },
            "effort": {"supported": bool(self.effort), **effort},
            "image_input": yes,
            "pdf_input": yes,
            "server_tools": {"supported": True, "code_execution": yes, "web_search": yes},
            "structured_outputs": yes,
            "thinking": {"supported": bool(set(self.thinking) - {"disabled"}), "types": thinking},
        }


def _rfc3339(day: date | None) -> str | None:
    if day is None:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat().replace("+00:00", "Z")


class Lineup:
    """Every model the emulated Models API knows, newest first, with its ids and aliases."""

    def __init__(self, entries: list[ModelEntry]) -> None:
        # Newest first, as the Models API lists them; ties keep the file's order.
        self.models = sorted(entries, key=lambda m: m.created_at, reverse=True)
        self._by_id: dict[str, ModelEntry] = {}
        for entry in self.models:
            for name in (entry.id, *entry.aliases):
                if name in self._by_id:
                    raise ValueError(f"{LINEUP_FILE.name}: {name} is listed twice")
                self._by_id[name] = entry

    def get(self, model: str) -> ModelEntry | None:
        """The model an id or alias names, retired ones included; None for an unknown id."""
        return self._by_id.get(model)

    def serving(self, model: str) -> ModelEntry | None:
        """The model that answers requests naming ``model``; None if unknown or retired."""
        entry = self._by_id.get(model)
        return entry if entry is not None and entry.callable else None


@lru_cache(maxsize=1)
def lineup() -> Lineup:
    """The lineup of ``models.yaml`` (read once per process)."""
    raw = yaml.safe_load(LINEUP_FILE.read_text())
    return Lineup([ModelEntry.model_validate(m) for m in raw["models"]])
