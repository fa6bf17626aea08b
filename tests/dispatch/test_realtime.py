"""The real-time path through Dagster and the SDK: concurrency bound, retries, shape, waves,
and each task asked once however runs of the day overlap or crash."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from llm_pipelines.costs import default_price_table
from llm_pipelines.crashpoints import paused_at, run_in_child
from llm_pipelines.dispatch import realtime
from llm_pipelines.dispatch.realtime import cache_waves
from llm_pipelines.emulator import FaultPlan
from llm_pipelines.resources import AnthropicResource
from llm_pipelines.routing import default_policy, route
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    TASKS,
    TASKS_FILE,
)
from llm_pipelines.storage.lease import (
    REALTIME_LEASE,
    SUBMISSION_LEASE,
    LeaseHeld,
    LeaseLost,
    current_lease,
    lease_dir,
    partition_lease,
)

CYCLE = ["raw_llm_events", "routed_tasks", "realtime_results"]
LONG_SYSTEM = "You answer chats for the store. " + "policy note " * 500  # ~1,500 tokens


class MessagesObserver:
    """WSGI middleware in front of the emulator: watches ``POST /v1/messages`` calls.

    It records how many calls are in flight at once, the order calls start and end, and
    how many times each prompt was asked (:func:`_prompt`: what tells tasks apart). The
    first ``hold`` calls wait for one another, so a pool that really runs ``hold`` calls at
    once is seen doing so, whatever the machine's speed. Calls from other processes (a
    forked run) are seen too: they come over HTTP.
    """

    def __init__(self, app: Any, hold: int = 0) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.asked: collections.Counter[str] = collections.Counter()
        self.events: list[tuple[str, str]] = []
        self.held = hold == 0
        self.barrier = threading.Barrier(hold or 1, action=self._release, timeout=20)

    def _release(self) -> None:
        self.held = True

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/v1/messages":
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        request = orjson.loads(body)
        system = request.get("system")
        group = hashlib.sha1(orjson.dumps(system)).hexdigest()[:8] if system else "-"
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.asked[_prompt(request)] += 1
            self.peak = max(self.peak, self.in_flight)
            self.events.append(("start", group))
        try:
            if not self.held:
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    self.held = True
            return list(self.app(environ, start_response))
        finally:
            with self.lock:
                self.in_flight -= 1
                self.events.append(("end", group))


def _prompt(request: dict[str, Any]) -> str:
    """The text of a request's last turn: each chat of :func:`_chats` has its own."""
    content = request["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)


def _chats(day: str, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        {
            "task_id": f"chat-{n}",
            "task_type": "chat_reply",
            "model": "claude-sonnet-5-5",
            "max_tokens": 40,
            "messages": [{"role": "user", "content": f"where is my order {n}?"}],
            **fields,
        }
        for n in range(count)
    ]


def _watched_emulator(
    http_emulator: Any, faults: FaultPlan | None = None, hold: int = 0
) -> tuple[str, Any, MessagesObserver]:
    """The HTTP emulator behind a :class:`MessagesObserver`: its URL, app and observer."""
    observer: dict[str, MessagesObserver] = {}

    def wrap(app: Any) -> MessagesObserver:
        observer["it"] = MessagesObserver(app, hold=hold)
        return observer["it"]

    url, app = http_emulator(faults, wrap=wrap)
    return url, app, observer["it"]


def test_calls_in_flight_never_exceed_the_concurrency_bound(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    url, _, watched = _watched_emulator(http_emulator, hold=3)
    LandingZone(lake).append(_chats(day, 12), partition=day)
    anthropic = AnthropicResource(base_url=url, realtime_concurrency=3)
    result = materialize_assets(CYCLE, resources_override={"anthropic": anthropic})
    metadata = result.asset_materializations_for_node("realtime_results")[0].metadata
    assert metadata["answered"].value == 12
    assert watched.calls == 12
    assert watched.peak == 3, "three calls ran at once, and never more"


def test_sdk_retries_absorb_transient_errors_and_results_keep_the_batch_shape(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    faults = FaultPlan(seed=3, endpoint_error_rates={"messages": 0.3}, retry_after_ms=1)
    url, app, observer = _watched_emulator(http_emulator, faults)
    LandingZone(lake).append(_chats(day, 10), partition=day)
    anthropic = AnthropicResource(base_url=url, max_retries=10)
    result = materialize_assets(CYCLE, resources_override={"anthropic": anthropic})
    metadata = result.asset_materializations_for_node("realtime_results")[0].metadata
    assert (metadata["answered"].value, metadata["dead_lettered"].value) == (10, 0)
    assert app.faults_injected > 0
    assert observer.calls == 10 + app.faults_injected, "the SDK retried each fault"
    assert lake.files(DEAD_LETTER, day, ".parquet") == []

    [path] = lake.files(RESULTS, day, ".parquet")
    with lake.fs.open(path, "rb") as handle:
        assert pq.read_schema(handle) == RESULTS_SCHEMA, "the same shape as batch results"
    rows = lake.read_table([path]).to_pylist()
    assert {row["route"] for row in rows} == {"realtime"}
    for row in rows:
        assert row["batch_id"] is None and row["attempt"] == 1
        assert row["model"] == row["requested_model"] == "claude-sonnet-5-5"
        assert row["output_text"] and row["stop_reason"] in ("end_turn", "max_tokens")
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        # No batch discount, no cache, no downshift: it costs exactly the all-sync price.
        assert row["cost_usd"] == row["sync_cost_usd"] > 0


def test_first_request_of_a_shared_prefix_completes_before_the_rest_start(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    url, _, observer = _watched_emulator(http_emulator)
    shared = _chats(day, 4, system=LONG_SYSTEM)
    alone = _chats(day, 3)
    for n, task in enumerate(alone):
        task["task_id"] = f"alone-{n}"
    LandingZone(lake).append(shared + alone, partition=day)
    anthropic = AnthropicResource(base_url=url, realtime_concurrency=8)
    materialize_assets(CYCLE, resources_override={"anthropic": anthropic})

    events = observer.events
    group = next(g for kind, g in events if kind == "start" and g != "-")
    positions = [i for i, (_, g) in enumerate(events) if g == group]
    first_end = events.index(("end", group))
    later_starts = [i for i in positions if events[i][0] == "start"][1:]
    assert len(later_starts) == 3
    assert all(start > first_end for start in later_starts), events

    [path] = lake.files(RESULTS, day, ".parquet")
    rows = {row["task_id"]: row for row in lake.read_table([path]).to_pylist()}
    writes = sorted(rows[f"chat-{n}"]["cache_write_5m_tokens"] > 0 for n in range(4))
    reads = sorted(rows[f"chat-{n}"]["cache_read_tokens"] > 0 for n in range(4))
    assert writes == [False, False, False, True] and reads == [False, True, True, True]


def test_cache_waves_put_the_first_of_each_prefix_level_first() -> None:
    keys = ["s1.d1", "s1.d1", "s1.d2", None, "s2", "s2", "s1.d2", "s1"]
    # Wave 0: first sight of each system prompt (s1 via "s1.d1", s2); wave 1: first of a
    # new document under a known system prompt; then everything else.
    assert cache_waves(keys) == [[0, 4], [2], [1, 3, 5, 6, 7]]
    assert cache_waves([None, None]) == [[0, 1]]
    assert cache_waves([]) == []


def test_tasks_of_a_shared_prefix_go_out_together_across_row_groups_and_chunks(
    lake: Lake, day: str, materialize_assets, http_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two prompts' chats arriving interleaved, routed into many small row groups: sent in
    dispatch order, each prompt's chats go out one after another, chunk after chunk."""
    url, _, observer = _watched_emulator(http_emulator)
    first = _chats(day, 6, system=LONG_SYSTEM)
    second = _chats(day, 6, system="Another store's assistant. " + "other note " * 500)
    for n, task in enumerate(second):
        task["task_id"] = f"other-{n}"
    LandingZone(lake).append(
        [task for pair in zip(first, second, strict=True) for task in pair], partition=day
    )
    materialize_assets(["raw_llm_events"])
    monkeypatch.setattr(route, "ROW_GROUP_BYTES", 1)  # a row group per stretch and chunk
    route.route_partition(
        lake, day, default_policy(), default_price_table(), datetime.now(UTC), chunk_rows=2
    )
    with lake.fs.open(lake.path(TASKS, day, TASKS_FILE), "rb") as handle:
        assert pq.ParquetFile(handle).num_row_groups >= 6
    monkeypatch.setattr(realtime, "REALTIME_CHUNK", 3)  # each chunk one prompt's, in order
    anthropic = AnthropicResource(base_url=url, realtime_concurrency=1)
    materialize_assets(["realtime_results"], resources_override={"anthropic": anthropic})

    sent = [group for kind, group in observer.events if kind == "start"]
    assert len(sent) == 12
    assert len([group for group, _ in itertools.groupby(sent)]) == 2, sent


# -- each task asked once, however runs overlap ----------------------------------------------


def _routed_chats(lake: Lake, day: str, count: int, materialize_assets) -> dict[str, int]:
    """Land and route ``count`` chats; each one's prompt, to be asked exactly once."""
    chats = _chats(day, count)
    LandingZone(lake).append(chats, partition=day)
    materialize_assets(["raw_llm_events", "routed_tasks"])
    return {_prompt(chat): 1 for chat in chats}


def _realtime_pass(lake: Lake, url: str, day: str) -> Callable[[], int]:
    """A real-time pass over the day through the SDK at ``url``: what a run's step does.

    Built inside the caller (a forked child, say), so no HTTP connection is shared.
    """

    def answer() -> int:
        provider = AnthropicResource(base_url=url).provider()
        return realtime.answer_partition(lake, provider, day, default_price_table(), 2).answered

    return answer


def _terminal_rows(lake: Lake, day: str) -> collections.Counter[str]:
    """How many result and dead-letter rows each task has."""
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), ["task_id"], RESULTS_SCHEMA)
    dead = lake.read_table(
        lake.files(DEAD_LETTER, day, ".parquet"), ["task_id"], DEAD_LETTER_SCHEMA
    )
    return collections.Counter(results["task_id"].to_pylist() + dead["task_id"].to_pylist())


def test_a_pass_started_while_another_is_midway_asks_no_task_again(
    lake: Lake,
    day: str,
    materialize_assets,
    http_emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 20: two overlapping runs of a day each called the API for every real-time task
    neither had answered when it started (413 tasks, 826 calls)."""
    url, _, observer = _watched_emulator(http_emulator)
    once = _routed_chats(lake, day, 12, materialize_assets)
    monkeypatch.setattr(realtime, "REALTIME_CHUNK", 4)  # three chunks; the child inherits it
    answer = _realtime_pass(lake, url, day)
    # A first pass (another process, as another run) stops once its first chunk is written,
    # while a second pass runs from start to end.
    with (
        paused_at(answer, "realtime.after_chunk", tmp_path / "gate") as first,
        contextlib.suppress(LeaseHeld),
    ):
        answer()
    assert first.wait().value == 12, "the first pass answered every task"
    assert observer.asked == once, "every task asked exactly once"
    assert _terminal_rows(lake, day) == {f"chat-{n}": 1 for n in range(12)}


@pytest.mark.parametrize(
    ("point", "answered_before", "asked_again"),
    [
        # Killed once its second chunk was written: the retry asks only the third.
        ("realtime.after_chunk", 8, 0),
        # Killed with its second chunk's answers received, none written: they are asked
        # again (the documented exception), and nothing else is.
        ("realtime.after_calls", 4, 4),
    ],
)
def test_a_run_retried_after_a_crash_mid_pass_asks_only_what_was_not_recorded(
    point: str,
    answered_before: int,
    asked_again: int,
    lake: Lake,
    day: str,
    materialize_assets,
    http_emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, observer = _watched_emulator(http_emulator)
    once = _routed_chats(lake, day, 12, materialize_assets)
    monkeypatch.setattr(realtime, "REALTIME_CHUNK", 4)
    assert run_in_child(_realtime_pass(lake, url, day), crash_at=f"{point}:2").crashed
    before_crash = set(observer.asked)

    # The crashed run left its lease behind; its process is gone, so the retry takes it.
    anthropic = AnthropicResource(base_url=url)
    retry = materialize_assets(["realtime_results"], resources_override={"anthropic": anthropic})
    metadata = retry.asset_materializations_for_node("realtime_results")[0].metadata
    assert metadata["already_answered"].value == answered_before
    assert metadata["answered"].value == 12 - answered_before

    assert set(observer.asked) == set(once)
    twice = {prompt for prompt, n in observer.asked.items() if n > 1}
    assert len(twice) == asked_again and twice <= before_crash
    assert max(observer.asked.values()) <= 2
    assert _terminal_rows(lake, day) == {f"chat-{n}": 1 for n in range(12)}


def test_a_run_finding_the_real_time_lease_held_fails_and_asks_nothing(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    url, _, observer = _watched_emulator(http_emulator)
    once = _routed_chats(lake, day, 6, materialize_assets)
    anthropic = AnthropicResource(base_url=url)
    with partition_lease(lake, day, owner="run other-run", purpose="realtime", kind=REALTIME_LEASE):
        held = materialize_assets(
            ["realtime_results"], resources_override={"anthropic": anthropic}, expect_success=False
        )
    assert not held.success
    [failure] = [event for event in held.all_events if event.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert f"partition {day} is being answered in real time by run other-run" in message
    assert observer.calls == 0, "nothing asked while another run holds the lease"

    # Run again once the holder is done: everything is answered, once. Submission's lease
    # (held by another run meanwhile) is no obstacle: it covers the other route.
    with partition_lease(
        lake, day, owner="run submitting", purpose="submit", kind=SUBMISSION_LEASE
    ):
        again = materialize_assets(
            ["realtime_results"], resources_override={"anthropic": anthropic}
        )
    metadata = again.asset_materializations_for_node("realtime_results")[0].metadata
    assert metadata["answered"].value == 6
    assert observer.asked == once


class _TakenOverAfterFirstCall:
    """A provider whose real-time lease another run takes over once one call is answered
    (as after an expiry: a newer generation appears)."""

    def __init__(self, provider: Any, lake: Lake, day: str) -> None:
        self.provider, self.lake, self.day = provider, lake, day

    def create_message(self, params: dict[str, Any]) -> dict[str, Any]:
        answer = self.provider.create_message(params)
        ours = current_lease(self.lake, self.day, REALTIME_LEASE)
        assert ours is not None
        theirs = ours.model_copy(update={"generation": ours.generation + 1, "owner": "run b"})
        path = f"{lease_dir(self.lake, self.day, REALTIME_LEASE)}/g{theirs.generation:012d}.json"
        self.lake.write_json(path, theirs.model_dump(mode="json"))
        return answer


def test_a_pass_that_lost_its_lease_asks_nothing_more(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    url, _, observer = _watched_emulator(http_emulator)
    _routed_chats(lake, day, 6, materialize_assets)
    provider = _TakenOverAfterFirstCall(AnthropicResource(base_url=url).provider(), lake, day)
    with pytest.raises(LeaseLost, match=r"real-time lease .* was taken over"):
        realtime.answer_partition(lake, provider, day, default_price_table(), 1)
    assert observer.calls == 1, "no call after the takeover"
    # The answer in hand is not written: the new holder may be writing the same chunk.
    assert _terminal_rows(lake, day) == {}


def test_a_request_the_sdk_refuses_is_a_dead_letter_not_a_crashed_chunk(tmp_path) -> None:
    """Tasks routed before intake checked requests against the SDK's types may still hold
    temperature: ``messages.create`` raises TypeError before any call is made."""
    from llm_pipelines.emulator import EmulatorConfig, in_process_client
    from llm_pipelines.providers import AnthropicProvider

    provider = AnthropicProvider(in_process_client(EmulatorConfig(state_dir=str(tmp_path))))
    good = {
        "model": "claude-haiku-5-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    message, reason = realtime._call(provider, orjson.dumps(good).decode())
    assert message is not None and reason is None
    message, reason = realtime._call(provider, orjson.dumps({**good, "temperature": 0.3}).decode())
    assert message is None
    assert reason is not None and reason.startswith(
        "the installed anthropic SDK refuses this request"
    )
    assert "temperature" in reason
