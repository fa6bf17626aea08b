"""Reading the ``anthropic`` SDK's request TypedDicts: helpers shared by the contract
(:mod:`~llm_pipelines.providers.contract`) and its msgspec mirror
(:mod:`~llm_pipelines.providers.fast_contract`). Nothing here imports the SDK itself, so
loading the code location does not pay for it."""

from __future__ import annotations

import os
import types
import typing
from typing import Any, Literal

import pydantic
import typing_extensions

TAG_KEYS = ("type", "role", "stream")
"""Literal fields that tell the members of a union of request objects apart."""
NOT_JSON = (bytes, os.PathLike, typing.IO)
"""Python-only inputs the SDK accepts (it reads files into base64 itself); never on the wire."""


def origin_of(tp: Any) -> Any:
    return typing_extensions.get_origin(tp)


def is_not_json(tp: Any) -> bool:
    """Inputs only the Python SDK takes: files it reads into base64, and its own response
    objects (a ``Message``'s blocks passed back as a turn), which are sent as the block dicts
    the request types also describe."""
    if origin_of(tp) is typing_extensions.Annotated:
        return is_not_json(typing_extensions.get_args(tp)[0])
    if origin_of(tp) in (typing.Union, types.UnionType):
        return all(is_not_json(a) for a in typing_extensions.get_args(tp))
    origin = origin_of(tp) or tp
    return isinstance(origin, type) and issubclass(origin, (*NOT_JSON, pydantic.BaseModel))


def literal_values(hint: Any) -> tuple[Any, ...] | None:
    while origin_of(hint) in (typing_extensions.Required, typing_extensions.NotRequired):
        hint = typing_extensions.get_args(hint)[0]
    if origin_of(hint) in (typing.Union, types.UnionType):  # Optional[Literal[...]]
        args = [a for a in typing_extensions.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None
        hint = args[0]
    if origin_of(hint) is Literal:
        return typing_extensions.get_args(hint)
    return None
