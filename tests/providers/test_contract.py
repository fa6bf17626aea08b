"""The request contract is the installed SDK's request types, strictly: tried on real shapes."""

from __future__ import annotations

import copy

import pytest
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from pydantic import TypeAdapter
from sample_requests import PNG, RICH, plain

from llm_pipelines.providers.contract import (
    API_VERSION,
    MAX_REASON_CHARS,
    SDK_VERSION,
    RequestInvalid,
    contracts,
    request_problem,
    validated_request,
)


def test_everything_the_sdk_types_accept_is_accepted() -> None:
    assert request_problem(plain()) is None
    assert request_problem(RICH) is None
    assert contracts().message.problem(plain(stream=True)) is None  # a /v1/messages body may
    assert request_problem(plain(stream=True)) == (  # ... but a batch request cannot stream
        "stream: a batch request cannot stream; drop it or set it false"
    )
    assert request_problem(plain(max_tokens=0)) is None  # documented: only fills the cache
    for choice in ({"type": "auto"}, {"type": "none"}, {"type": "tool", "name": "lookup"}):
        assert request_problem({**RICH, "tool_choice": choice}) is None
    for thinking in ({"type": "adaptive"}, {"type": "disabled"}):
        assert request_problem(plain(thinking=thinking)) is None


def test_validated_requests_are_plain_lists_not_lazy_iterables() -> None:
    value = validated_request(RICH)
    assert isinstance(value["messages"], list)
    assert isinstance(value["messages"][0]["content"], list)
    assert value == RICH


def test_a_bad_block_deep_inside_is_found() -> None:
    """pydantic validates ``Iterable`` fields lazily: the SDK's types as they are let this by."""
    bad = copy.deepcopy(RICH)
    bad["messages"][2]["content"][0]["content"][0] = {"type": "text"}  # no text
    lazy = TypeAdapter(MessageCreateParamsNonStreaming).validate_python(bad)
    assert lazy["model"] == "claude-opus-5-5"  # accepted: nothing looked inside the messages
    assert request_problem(bad) == "messages.2.content.0.content.0.text: required field missing"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"temperature": 0.2}, "temperature: removed from the Messages API in version"),
        ({"top_p": 0.9}, "top_p: removed from the Messages API"),
        ({"top_k": 5}, "top_k: removed from the Messages API"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"max_tokens": "64"}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": -1}, "max_tokens: must be 0 or more"),
        ({"messages": []}, "messages: must hold at least one message"),
        ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
        ({"service_tier": "batch"}, "service_tier: Input should be 'auto' or 'standard_only'"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 100}},
            "thinking.budget_tokens: must be at least",
        ),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name: required field missing"),
        ({"metadata": {"user_id": "u", "team": "x"}}, "metadata.team: unknown field"),
    ],
)
def test_what_the_types_refuse_is_refused_with_its_path(change: dict, reason: str) -> None:
    problem = request_problem(plain(**change))
    assert problem is not None and problem.startswith(reason), problem


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        ({"type": "txt", "text": "x"}, "messages.0.content.0: type must be one of 'text', 'image'"),
        ({"type": "text", "text": "x", "bold": True}, "messages.0.content.0.bold: unknown field"),
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}},
            "messages.0.content.0.source.media_type: Input should be 'image/jpeg'",
        ),
        (
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}},
            "messages.0.content.0.cache_control.ttl: Input should be '5m' or '1h'",
        ),
        ({"type": "tool_use", "id": "t", "name": "n"}, "messages.0.content.0.input: required"),
    ],
)
def test_nested_blocks_are_checked_against_the_member_their_type_names(
    block: dict, reason: str
) -> None:
    problem = request_problem(plain(messages=[{"role": "user", "content": [block]}]))
    assert problem is not None and problem.startswith(reason), problem


def test_reasons_name_the_versions_read_from_the_sdk_and_stay_one_short_line() -> None:
    import anthropic
    from anthropic._constants import ANTHROPIC_API_VERSION

    assert (ANTHROPIC_API_VERSION, anthropic.__version__) == (API_VERSION, SDK_VERSION)
    problem = request_problem(plain(temperature=1))
    assert problem is not None and API_VERSION in problem and SDK_VERSION in problem
    long = request_problem(plain(messages=[{"role": "user", "content": [{"type": "x" * 5000}]}]))
    assert long is not None and len(long) <= MAX_REASON_CHARS and "\n" not in long
    assert request_problem(["not", "a", "request"]) == "request: must be a JSON object, not list"
    with pytest.raises(RequestInvalid, match="messages: must hold"):
        validated_request(plain(messages=[]))


def test_count_tokens_has_its_own_contract() -> None:
    body = {"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": "hi"}]}
    assert contracts().count_tokens.problem(body) is None
    assert "max_tokens: unknown field" in (
        contracts().count_tokens.problem({**body, "max_tokens": 5}) or ""
    )
    assert contracts() is contracts()  # built once per process
