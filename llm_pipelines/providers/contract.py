"""The Messages API request contract, read from the installed ``anthropic`` SDK's own types.

A request (a batch request's ``params``, a ``/v1/messages`` body, a ``count_tokens`` body) is
valid when the SDK's request TypedDict accepts it — every content block, tool, thinking and
output option that SDK version knows — and nothing else: unknown fields are refused at every
level, as the API refuses them. Upgrading the SDK is the only step needed to follow a new API
version: the contract is built from its types at import time, not written by hand here.

Two things make the SDK's types a contract rather than hints, both done once when the
contract is built (a :class:`pydantic.TypeAdapter`, then only validation per request):

* every TypedDict is copied with ``extra="forbid"`` (unless the SDK set its own ``extra``, as
  it does for JSON Schema objects), and ``Iterable``/``Sequence`` fields become ``list``:
  pydantic validates an ``Iterable`` lazily (it hands back a generator), which would let a bad
  nested block through;
* unions of TypedDicts with a literal ``type`` (or ``role``) become tagged unions, so a bad
  block is reported against the one member its ``type`` names, not against all fifteen.

::

    request_problem({"model": "claude-haiku-5-5", "max_tokens": 5, "messages": []})
    # -> "messages: must hold at least one message"
"""

from __future__ import annotations

import collections.abc
import types
import typing
from functools import lru_cache
from typing import Any, NamedTuple

import anthropic
import typing_extensions
from anthropic.types import message_count_tokens_params, message_create_params
from pydantic import ConfigDict, Discriminator, Tag, TypeAdapter, ValidationError

from llm_pipelines.providers.request_rules import value_problem
from llm_pipelines.providers.sdk_types import TAG_KEYS, is_not_json, literal_values, origin_of

try:  # where the SDK keeps the API version it speaks (the ``anthropic-version`` header)
    from anthropic._constants import ANTHROPIC_API_VERSION as API_VERSION
except ImportError:  # pragma: no cover - a future SDK that moved it
    API_VERSION = "unknown"

SDK_VERSION: str = anthropic.__version__
"""The installed SDK's version: the request contract is its types."""

REMOVED_FIELDS = frozenset({"temperature", "top_p", "top_k"})
"""Request fields earlier API versions had and the current one removed (API 2026-10-21 dropped
the sampling parameters). The SDK only lacks them; naming them here lets the reason say so."""

MAX_REASON_CHARS = 300
"""A reason is one line a person can act on; long JSON paths and values are cut."""


class RequestInvalid(ValueError):
    """A request the API would refuse with ``invalid_request_error``; the text says why."""


# -- building the strict types -----------------------------------------------------------------


class _Builder:
    """Rewrites an SDK request type into its strict, eager twin (memoised per type)."""

    def __init__(self) -> None:
        self._done: dict[Any, Any] = {}

    def strict(self, tp: Any) -> Any:
        if typing_extensions.is_typeddict(tp):
            if tp not in self._done:
                self._done[tp] = self._typed_dict(tp)
            return self._done[tp]
        origin = origin_of(tp)
        args = typing_extensions.get_args(tp)
        if origin is typing_extensions.Annotated:
            return typing_extensions.Annotated[(self.strict(args[0]), *tp.__metadata__)]
        if origin in (typing.Union, types.UnionType):
            return self._union([a for a in args if not is_not_json(a)])
        if origin in (typing_extensions.Required, typing_extensions.NotRequired):
            return origin[self.strict(args[0])]
        if origin is dict or origin is collections.abc.Mapping:
            return dict[self.strict(args[0]), self.strict(args[1])]  # type: ignore[misc]
        if origin in (
            list,
            collections.abc.Iterable,
            collections.abc.Sequence,
            collections.abc.Iterator,
        ):
            # Eager: a list is validated item by item now, not when someone iterates it.
            return list[self.strict(args[0]) if args else Any]  # type: ignore[misc]
        return tp

    def _typed_dict(self, source: Any) -> Any:
        # The SDK's modules use ``from __future__ import annotations``: ``__required_keys__``
        # cannot see ``Required[...]`` in a string, so the hints override its totality.
        hints = typing_extensions.get_type_hints(source, include_extras=True)
        fields: dict[str, Any] = {}
        for name, hint in hints.items():
            inner, required = hint, name in source.__required_keys__
            while origin_of(inner) in (typing_extensions.Required, typing_extensions.NotRequired):
                required = origin_of(inner) is typing_extensions.Required
                inner = typing_extensions.get_args(inner)[0]
            wrapper = typing_extensions.Required if required else typing_extensions.NotRequired
            fields[name] = wrapper[self.strict(inner)]
        strict = typing_extensions.TypedDict(source.__name__, fields)  # type: ignore[operator]
        config = ConfigDict(**getattr(source, "__pydantic_config__", {}))
        config.setdefault("extra", "forbid")
        strict.__pydantic_config__ = config  # type: ignore[attr-defined]
        return strict

    def _union(self, members: list[Any]) -> Any:
        built = [self.strict(m) for m in members]
        optional = type(None) in built
        objects = [m for m in built if m is not type(None)]
        tagged = _tagged(objects)
        if tagged is None:
            return typing.Union[tuple(built)]  # noqa: UP007 - built at run time
        return typing.Optional[tagged] if optional else tagged  # noqa: UP045


def _tagged(members: list[Any]) -> Any | None:
    """A tagged union of TypedDicts told apart by one literal field, or None if they aren't.

    The field may be missing from one member's requests (a custom tool has an optional
    ``type``): a request without it is that member's.
    """
    if len(members) < 2 or not all(typing_extensions.is_typeddict(m) for m in members):
        return None
    for key in TAG_KEYS:
        by_value: dict[Any, str] = {}
        default: str | None = None
        usable = True
        for member in members:
            annotations = member.__annotations__
            values = literal_values(annotations[key]) if key in annotations else None
            if values is None or any(v in by_value for v in values):
                usable = False
                break
            tag = member.__name__
            by_value.update(dict.fromkeys(values, tag))
            if key not in member.__required_keys__:
                if default is not None:
                    usable = False
                    break
                default = tag
        if not usable:
            continue
        expected = ", ".join(repr(v) for v in by_value)

        def pick(value: Any, key: str = key, by_value: dict = by_value, default=default) -> Any:
            if not isinstance(value, dict):
                return None
            if key not in value:
                return default
            tag = value[key]
            return by_value.get(tag) if isinstance(tag, str | bool) else None

        tagged = tuple(typing_extensions.Annotated[m, Tag(m.__name__)] for m in members)
        union = typing.Union[tagged]  # noqa: UP007 - built at run time
        return typing_extensions.Annotated[
            union,
            Discriminator(
                pick,
                custom_error_type="request_tag_invalid",
                custom_error_message=f"{key} must be one of {expected}",
            ),
        ]
    return None


# -- the contracts -----------------------------------------------------------------------------


class Contract:
    """One request type of the SDK, as a validator that names the first problem it finds."""

    def __init__(self, request_type: Any, what: str) -> None:
        self.what = what
        self.request_type = request_type
        self.adapter: TypeAdapter[Any] = TypeAdapter(_Builder().strict(request_type))

    def validate(self, params: Any) -> dict[str, Any]:
        """``params`` checked against the contract; raises :class:`RequestInvalid` with the reason.

        Returns the request as validated (plain dicts and lists, nothing coerced: the API reads
        JSON strictly, so ``"5"`` is not an integer here either).
        """
        if not isinstance(params, dict):
            raise RequestInvalid(f"{self.what}: must be a JSON object, not {type(params).__name__}")
        try:
            value = self.adapter.validate_python(params, strict=True)
        except ValidationError as error:
            raise RequestInvalid(_cap(self._describe(error, params))) from None
        problem = value_problem(value)
        if problem:
            raise RequestInvalid(_cap(problem))
        return value

    def problem(self, params: Any) -> str | None:
        """Why the API would refuse ``params`` (one line), or None when it would accept them."""
        try:
            self.validate(params)
        except RequestInvalid as error:
            return str(error)
        return None

    def _describe(self, error: ValidationError, params: Any) -> str:
        best: list[tuple[str, str]] = []
        best_depth = -1
        for detail in error.errors(include_url=False, include_context=False, include_input=False):
            path, depth = _resolve(params, detail["loc"], detail["type"])
            message = self._message(detail, path)
            if depth > best_depth:
                best, best_depth = [(path, message)], depth
            elif depth == best_depth and (path, message) not in best:
                best.append((path, message))
        path = best[0][0]
        # Several union members failing at the same place: say what each wanted.
        messages = [m for p, m in best if p == path]
        return f"{path or self.what}: {' or '.join(messages)}"

    def _message(self, detail: Any, path: str) -> str:
        if detail["type"] == "extra_forbidden":
            field = path.rsplit(".", 1)[-1]
            if "." not in path and field in REMOVED_FIELDS:
                return (
                    f"removed from the Messages API in version {API_VERSION} "
                    f"(anthropic SDK {SDK_VERSION} has no such field); drop it"
                )
            return f"unknown field (not part of API version {API_VERSION}); drop it"
        if detail["type"] == "missing":
            return "required field missing"
        return str(detail["msg"])


def _resolve(params: Any, loc: tuple[Any, ...], kind: str) -> tuple[str, int]:
    """The request path an error points at, and how deep into the request it got.

    pydantic's ``loc`` mixes the request's keys and indices with the names of union members
    it tried; only the steps that exist in the request make the path.
    """
    parts: list[str] = []
    value = params
    depth = 0
    for index, step in enumerate(loc):
        last = index == len(loc) - 1
        if (isinstance(value, dict) and isinstance(step, str) and step in value) or (
            isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value)
        ):
            value = value[step]
        elif last and kind == "missing" and isinstance(value, dict):
            value = None
        else:
            continue  # a union member's name
        parts.append(str(step))
        depth += 1
    return ".".join(parts), depth


def _cap(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


class Contracts(NamedTuple):
    """The request contracts of the installed SDK (built once, on first use)."""

    message: Contract
    """A ``/v1/messages`` body (either value of ``stream``); :func:`validated_request` adds the
    one rule of a batch request's ``params``: no streaming."""
    count_tokens: Contract
    """A ``/v1/messages/count_tokens`` body."""


@lru_cache(maxsize=1)
def contracts() -> Contracts:
    """The contracts, built from the SDK's types once per process (a few hundred ms)."""
    return Contracts(
        message=Contract(message_create_params.MessageCreateParams, "request"),
        count_tokens=Contract(message_count_tokens_params.MessageCountTokensParams, "request"),
    )


def request_problem(params: Any) -> str | None:
    """Why the Messages API would refuse this batch request, in one line; None if it would not.

    ``params`` is a request as JSON-decoded Python values (a batch request's ``params``). The
    reason names the field path (``messages.0.content.1.source.media_type: …``).
    """
    try:
        validated_request(params)
    except RequestInvalid as error:
        return str(error)
    return None


def validated_request(params: Any) -> dict[str, Any]:
    """A batch request's ``params`` as the contract validated them; raises
    :class:`RequestInvalid` with the reason. A batch request cannot stream."""
    value = contracts().message.validate(params)
    if value.get("stream"):
        raise RequestInvalid("stream: a batch request cannot stream; drop it or set it false")
    return value
