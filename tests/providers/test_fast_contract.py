"""The msgspec mirror of the contract accepts only what the contract accepts, and most of it."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from sample_requests import CUSTOM_TOOL, SEEDS, mutated_requests, plain

from llm_pipelines.providers.contract import request_problem
from llm_pipelines.providers.fast_contract import fast_request_ok, generated
from llm_pipelines.providers.request_rules import value_problem


def test_the_mirror_covers_the_request_type() -> None:
    """Built from the installed SDK, it leaves to the contract only what msgspec cannot say;
    without this the property below would pass with a mirror that takes nothing."""
    built = generated()
    assert built is not None
    assert built.dropped == {"MessageCreateParamsNonStreaming.stream"}  # Literal[False]
    assert set(built.deferred) == {"tools"}  # a custom tool may leave its type out
    for seed in SEEDS:
        assert request_problem(seed) is None
        assert fast_request_ok(seed), seed


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_requests())
def test_the_mirror_accepts_only_what_the_contract_accepts(request: dict[str, Any]) -> None:
    if fast_request_ok(request) and value_problem(request) is None:
        assert request_problem(request) is None, request


def test_what_the_mirror_cannot_say_goes_to_the_contract() -> None:
    """A custom tool with a null type, a streaming flag, a removed field: refused here, so the
    contract words the reason."""
    assert not fast_request_ok(plain(tools=[{**CUSTOM_TOOL, "type": None}]))
    assert request_problem(plain(tools=[{**CUSTOM_TOOL, "type": None}])) is not None
    assert not fast_request_ok(plain(stream=False))
    assert request_problem(plain(stream=False)) is None  # allowed, just not by the mirror
    assert not fast_request_ok(plain(temperature=0.5))
