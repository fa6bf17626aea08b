"""Requests the provider tests share: a plain one, and one with every kind of content."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAAAAAUAAVeitOYAAAAASUVORK5CYII="


def plain(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-haiku-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
        **extra,
    }


RICH: dict[str, Any] = {
    "model": "claude-opus-5-5",
    "max_tokens": 4096,
    "system": [
        {"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {
                    "type": "document",
                    "source": {
                        "type": "base64",
                        "media_type": "application/pdf",
                        "data": "JVBERi0x",
                    },
                    "title": "a.pdf",
                    "context": "a claim",
                    "citations": {"enabled": True},
                },
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "t"},
                },
                {
                    "type": "document",
                    "source": {"type": "content", "content": [{"type": "text", "text": "part"}]},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "found"}],
                    "is_error": False,
                }
            ],
        },
    ],
    "tools": [
        {
            "name": "lookup",
            "description": "Look things up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "output_config": {
        "effort": "high",
        "format": {"type": "json_schema", "schema": {"type": "object", "properties": {}}},
    },
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u-1"},
    "service_tier": "standard_only",
    "cache_control": {"type": "ephemeral"},
}


CUSTOM_TOOL = {
    "name": "lookup",
    "description": "Look things up.",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}
SEEDS: list[dict[str, Any]] = [
    {k: v for k, v in RICH.items() if k != "metadata"},
    RICH,
    plain(system="You help."),
    plain(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    plain(tools=[CUSTOM_TOOL], tool_choice={"type": "auto"}),
    plain(tools=[{**CUSTOM_TOOL, "type": "custom"}, {"type": "bash_20250124", "name": "bash"}]),
    plain(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
    ),
]
"""Valid requests of many shapes; every one is accepted by the mirror (checked below)."""

TAGS = ["text", "image", "document", "tool_use", "tool_result", "thinking", "custom", "bash",
        "base64", "url", "ephemeral", "auto", "any", "tool", "none", "enabled", "adaptive",
        "user", "assistant", "system", "json_schema", "bash_20250124"]  # fmt: skip
KEYS = ["type", "text", "role", "content", "source", "cache_control", "ttl", "name",
        "input_schema", "input", "id", "temperature", "stream", "title", "citations", "data",
        "media_type", "budget_tokens", "effort", "format", "schema", "x"]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=5000),
    st.floats(min_value=-1, max_value=2, allow_nan=False),
    st.sampled_from(["", "x", "5m", "1h", "image/png", "application/pdf", *TAGS]),
    st.lists(st.sampled_from(["END", 1]), max_size=2),
    st.fixed_dictionaries({"type": st.sampled_from(TAGS)}),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(["x", "", 1]), max_size=2),
)


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a dict or list in ``value``."""
    found = [path] if isinstance(value, dict | list) else []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        found.extend(_nodes(child, (*path, key)))
    return found


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A seed request with up to three changes anywhere in it: a value replaced, a key dropped
    or added, a tag swapped, a list item dropped."""
    request = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        node = _at(request, draw(st.sampled_from(_nodes(request))))
        if isinstance(node, dict):
            key = draw(st.sampled_from(sorted(node) + KEYS))
            action = draw(st.sampled_from(["replace", "drop", "tag"]))
            if action == "drop":
                node.pop(key, None)
            elif action == "tag":
                node["type"] = draw(st.sampled_from(TAGS))
            else:
                node[key] = draw(VALUES)
        elif node:
            index = draw(st.integers(min_value=0, max_value=len(node) - 1))
            if draw(st.booleans()):
                node.pop(index)
            else:
                node[index] = draw(VALUES)
    return request
