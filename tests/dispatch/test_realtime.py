"""The real-time path through Dagster and the SDK: concurrency bound, retries, shape, waves."""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from llm_pipelines.costs import default_price_table
from llm_pipelines.dispatch import realtime
from llm_pipelines.dispatch.realtime import cache_waves
from llm_pipelines.emulator import FaultPlan
from llm_pipelines.resources import AnthropicResource
from llm_pipelines.routing import default_policy, route
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import DEAD_LETTER, RESULTS, RESULTS_SCHEMA, TASKS, TASKS_FILE

CYCLE = ["raw_llm_events", "routed_tasks", "realtime_results"]
LONG_SYSTEM = "You answer chats for the store. " + "policy note " * 500  # ~1,500 tokens


class MessagesObserver:
    """WSGI middleware in front of the emulator: watches ``POST /v1/messages`` calls.

    It records how many calls are in flight at once, and the order calls start and end.
    The first ``hold`` calls wait for one another, so a pool that really runs ``hold``
    calls at once is seen doing so, whatever the machine's speed.
    """

    def __init__(self, app: Any, hold: int = 0) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
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
        system = orjson.loads(body).get("system")
        group = hashlib.sha1(orjson.dumps(system)).hexdigest()[:8] if system else "-"
        with self.lock:
            self.in_flight += 1
            self.calls += 1
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
