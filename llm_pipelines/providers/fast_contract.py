"""The request contract again, as msgspec structs generated from the same SDK types: a fast
first check for intake, never the last word.

:mod:`~llm_pipelines.providers.contract` validates a request with pydantic (30-100 µs for a
request with tools, images or documents); a million tasks a night make that the cost of
intake. The same SDK TypedDicts, walked the same way, become msgspec structs here, which
validate in C in a few microseconds. The mirror only ever *accepts less*:

* every TypedDict becomes a struct that forbids unknown fields (or keeps the SDK's own
  ``extra``), ``Iterable``/``Sequence`` become ``list``, and tagged unions become msgspec
  tagged unions, as the contract builds them;
* whatever msgspec cannot say exactly (a union a member of which has no tag, two list types
  in one union, ``Literal[True]`` …) is left out of its struct, so a request that uses it is
  refused here and goes to the contract, which decides and words the reason.

So :func:`fast_request_ok` says "valid" only where the contract says so too (held by a
property test against the contract, ``tests/providers/test_fast_contract.py``); a "no"
means "ask the contract". Nothing is listed by hand: upgrading the SDK regenerates it.
"""

from __future__ import annotations

import sys
import types
import typing
from functools import cache
from typing import Any, Literal

import msgspec
import typing_extensions

from llm_pipelines.providers.sdk_types import (
    TAG_KEYS,
    is_not_json,
    literal_values,
    origin_of,
)


class _Unsupported(Exception):
    """A type msgspec cannot check exactly as the contract does."""


class _DefaultMember(_Unsupported):
    """A union told apart by a tag that one member may leave out (a custom tool's ``type``):
    msgspec needs every tag present, so each value is checked apart (:meth:`check`)."""

    def __init__(self, key: str, default: Any, default_values: tuple[Any, ...], others: Any):
        super().__init__(f"union with an optional {key!r} tag")
        self.key, self.default, self.default_values, self.others = (
            key,
            default,
            default_values,
            others,
        )

    def check(self, value: Any) -> None:
        """Raise :class:`msgspec.ValidationError` unless the union takes ``value``."""
        if type(value) is not dict:
            raise msgspec.ValidationError("expected an object")
        # As the contract's discriminator: no tag is the default member; a null tag is no tag.
        target = (
            self.default
            if self.key not in value or value[self.key] in self.default_values
            else self.others
        )
        msgspec.convert(value, target, strict=True)


_NAMESPACE = types.ModuleType(f"{__name__}._generated")
"""Where the generated structs live, so forward references between them resolve."""
sys.modules[_NAMESPACE.__name__] = _NAMESPACE

_LIST_ORIGINS = (
    list,
    typing.List,  # noqa: UP006 - matched as an origin, not used as a hint
    typing_extensions.get_origin(typing.Iterable[int]),
    typing_extensions.get_origin(typing.Sequence[int]),
    typing_extensions.get_origin(typing.Iterator[int]),
)


class _Mirror:
    """Turns SDK request types into msgspec types (memoised per TypedDict and tag)."""

    def __init__(self) -> None:
        self._structs: dict[tuple[Any, str | None, Any], str] = {}
        self._top: Any = None
        self.dropped: set[str] = set()
        """``Type.field`` left out of their structs (requests using them go to the contract)."""
        self.deferred: dict[str, _DefaultMember] = {}
        """Top-level list fields whose items are checked one by one after decoding."""

    def request(self, td: Any) -> Any:
        """The struct of a request TypedDict; its list fields of default-member unions are
        typed ``list[Any]`` and listed in :attr:`deferred`."""
        self._top = td
        return self.type_of(td)

    def type_of(self, tp: Any) -> Any:
        """The msgspec type for ``tp``; raises :class:`_Unsupported`."""
        if typing_extensions.is_typeddict(tp):
            return self._struct(tp, None, None)
        origin = origin_of(tp)
        args = typing_extensions.get_args(tp)
        if origin is typing_extensions.Annotated:
            return self.type_of(args[0])  # the SDK's PropertyInfo: the contract ignores it too
        if origin in (typing_extensions.Required, typing_extensions.NotRequired):
            return self.type_of(args[0])
        if origin in (typing.Union, types.UnionType):
            return self._union([a for a in args if not is_not_json(a)])
        if origin in _LIST_ORIGINS:
            return list[self.type_of(args[0]) if args else Any]  # type: ignore[misc]
        if origin is dict or origin is typing_extensions.get_origin(typing.Mapping[str, int]):
            if args and args[0] is not str:
                raise _Unsupported(f"mapping keyed by {args[0]!r}")
            return dict[str, self.type_of(args[1]) if args else Any]  # type: ignore[misc]
        if origin is Literal:
            if not all(type(v) is str for v in args):  # bool/int/None literals: ask the contract
                raise _Unsupported(f"literal {args!r}")
            return tp
        if tp is float:
            return int | float  # as pydantic's strict float: an integer is a number too
        if tp in (str, int, bool, type(None), Any, object):
            return Any if tp is object else tp
        raise _Unsupported(repr(tp))

    def _union(self, members: list[Any]) -> Any:
        optional = type(None) in members
        members = [m for m in members if m is not type(None)]
        tag = _union_tag(members)
        if tag is not None:
            key, by_member, default = tag
            structs = [
                self._struct(member, key, value)
                for member in members
                if member is not default
                for value in by_member[member]
            ]
            if default is not None:
                others = structs[0] if len(structs) == 1 else typing.Union[tuple(structs)]  # noqa: UP007
                raise _DefaultMember(
                    key, self._struct(default, None, None), by_member[default], others
                )
            built: list[Any] = structs
        else:
            built = [self.type_of(m) for m in members]
            # A string literal beside ``str`` adds nothing (a model id is any string), nor
            # does an object type beside "any object" (a tool's input_schema).
            if str in built:
                built = [b for b in built if origin_of(b) is not Literal]
            if dict[str, Any] in built:
                built = [b for b in built if _kind(b) != "object" or b == dict[str, Any]]
            kinds = [_kind(b) for b in built]
            if len(kinds) != len(set(kinds)):
                raise _Unsupported(f"union of {built!r}")
        union = built[0] if len(built) == 1 else typing.Union[tuple(built)]  # noqa: UP007
        return typing.Optional[union] if optional else union  # noqa: UP045

    def _struct(self, td: Any, tag_key: str | None, tag_value: Any) -> Any:
        key = (td, tag_key, tag_value)
        if key not in self._structs:
            name = f"{td.__name__}_{len(self._structs)}"
            self._structs[key] = name
            setattr(_NAMESPACE, name, self._define(td, name, tag_key, tag_value))
        return getattr(_NAMESPACE, self._structs[key])

    def _define(self, td: Any, name: str, tag_key: str | None, tag_value: Any) -> Any:
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for field, (inner, required) in sorted(_fields(td).items()):
            if field == tag_key:
                continue  # msgspec reads and checks the tag itself
            try:
                value = self.type_of(inner)
            except _DefaultMember as union:
                if td is not self._top or origin_of(inner) not in _LIST_ORIGINS:
                    self.dropped.add(f"{td.__name__}.{field}")
                    continue
                self.deferred[field] = union
                value = list[Any]
            except _Unsupported:
                self.dropped.add(f"{td.__name__}.{field}")
                if required:
                    raise
                continue  # a request that has it is refused here: the contract decides
            if required:
                fields.append((field, value))
            else:
                fields.append((field, typing.Union[value, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
        extra = getattr(td, "__pydantic_config__", {}).get("extra", "forbid")
        options: dict[str, Any] = {}
        if tag_key is not None:
            options.update(tag_field=tag_key, tag=tag_value)
        return msgspec.defstruct(
            name,
            fields,
            module=_NAMESPACE.__name__,
            kw_only=True,
            forbid_unknown_fields=extra != "allow",
            gc=False,  # decoded JSON holds no cycles
            **options,
        )


@cache
def _fields(td: Any) -> dict[str, tuple[Any, bool]]:
    """A TypedDict's fields: each one's type (Required/NotRequired taken off) and whether it is
    required. The SDK's modules use ``from __future__ import annotations``, so
    ``__required_keys__`` cannot see ``Required[...]`` in a string: the hints decide."""
    fields = {}
    for name, hint in typing_extensions.get_type_hints(td, include_extras=True).items():
        inner, required = hint, name in td.__required_keys__
        while origin_of(inner) in (typing_extensions.Required, typing_extensions.NotRequired):
            required = origin_of(inner) is typing_extensions.Required
            inner = typing_extensions.get_args(inner)[0]
        fields[name] = (inner, required)
    return fields


def _union_tag(
    members: list[Any],
) -> tuple[str, dict[Any, tuple[str, ...]], Any] | None:
    """The literal field that tells these TypedDicts apart, each member's values, and the one
    member (if any) that may leave it out; None if they are not all TypedDicts. Raises
    :class:`_Unsupported` for TypedDicts no field tells apart."""
    if len(members) < 2 or not all(typing_extensions.is_typeddict(m) for m in members):
        return None
    for key in TAG_KEYS:
        by_member: dict[Any, tuple[str, ...]] = {}
        seen: set[Any] = set()
        default = None
        for member in members:
            hint, required = _fields(member).get(key, (None, False))
            values = literal_values(hint) if hint is not None else None
            if (
                not values
                or not all(type(v) is str for v in values)
                or seen & set(values)
                or (not required and default is not None)
            ):
                break
            if not required:
                default = member
            seen.update(values)
            by_member[member] = values
        else:
            return key, by_member, default
    if len(members) >= 2:
        raise _Unsupported(f"untagged union of {[m.__name__ for m in members]}")
    return None


def _kind(tp: Any) -> str:
    """msgspec's class of a type in a union: at most one of each may appear."""
    origin = origin_of(tp) or tp
    if origin is Literal or tp is str:
        return "str"
    if tp is int or tp == int | float:
        return "number"
    if origin is list:
        return "array"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return "object"
    return repr(tp)


class Generated(typing.NamedTuple):
    """The mirror of the batch request type, and what it left to the contract."""

    request: Any
    """The struct of a non-streaming Messages request (``messages.batches`` params)."""
    deferred: dict[str, _DefaultMember]
    """Its list fields whose items are checked one by one (custom tools and typed tools)."""
    dropped: frozenset[str]
    """``Type.field`` the mirror leaves to the contract."""


@cache
def generated() -> Generated | None:
    """The msgspec mirror of the installed SDK's batch request type (None if it could not be
    built: then every request goes to the contract)."""
    from anthropic.types import message_create_params  # seconds: only when intake runs

    mirror = _Mirror()
    try:
        request = mirror.request(message_create_params.MessageCreateParamsNonStreaming)
        msgspec.json.Decoder(request)  # resolves every reference now, not on first use
    except (_Unsupported, TypeError):
        return None
    return Generated(request, mirror.deferred, frozenset(mirror.dropped))


def fast_request_ok(params: dict[str, Any]) -> bool:
    """Whether the mirror takes ``params`` (a decoded batch request's params): True only for
    requests whose types the contract accepts too (its value rules, such as non-empty text,
    are :func:`~llm_pipelines.providers.contract.value_problem`'s). False: ask the contract.
    """
    built = generated()
    if built is None:
        return False
    try:
        msgspec.convert(params, built.request, strict=True)
        for field, union in built.deferred.items():
            for item in params.get(field, ()):
                union.check(item)
    except (msgspec.ValidationError, RecursionError):
        return False
    return True
