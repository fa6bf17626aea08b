"""The Messages API's documented limits that its request types cannot carry (they are
types, not ranges). Plain Python: no SDK import."""

from __future__ import annotations

from typing import Any


def value_problem(request: dict[str, Any]) -> str | None:
    """Documented limits the SDK's types cannot carry (they are types, not ranges): the
    first one ``request`` (a request the types accept) breaks, or None."""
    max_tokens = request.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < 0:
        return "max_tokens: must be 0 or more (0 only fills the prompt cache)"
    if "messages" in request and not request["messages"]:
        return "messages: must hold at least one message"
    if problem := _empty_text(request):
        return problem
    thinking = request.get("thinking") or {}
    budget = thinking.get("budget_tokens")
    if thinking.get("type") == "enabled" and isinstance(budget, int):
        if budget < 1024:
            return "thinking.budget_tokens: must be at least 1024"
        if isinstance(max_tokens, int) and max_tokens and budget >= max_tokens:
            return "thinking.budget_tokens: must be less than max_tokens"
    return None


def _empty_text(request: dict[str, Any]) -> str | None:
    """The API refuses empty text ("text content blocks must be non-empty"), which the
    types allow: a prompt string or text block with no text."""
    system = request.get("system")
    if system == "":
        return "system: must not be empty (leave it out instead)"
    if isinstance(system, list):
        for index, block in enumerate(system):
            if block.get("type") == "text" and not block.get("text"):
                return f"system.{index}.text: text content blocks must be non-empty"
    for turn, message in enumerate(request.get("messages") or ()):
        content = message.get("content")
        if content == "":
            return f"messages.{turn}.content: must not be empty"
        if isinstance(content, list):
            for index, block in enumerate(content):
                if (
                    isinstance(block, dict)
                    and block.get("type") == "text"
                    and not block.get("text")
                ):
                    return (
                        f"messages.{turn}.content.{index}.text: text content blocks must be "
                        "non-empty"
                    )
    return None
