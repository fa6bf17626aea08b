"""Prompt-cache planning: which prefixes get cache_control, with which TTL, in which order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from llm_pipelines.costs import default_price_table
from llm_pipelines.dispatch.submit import sidecar_ids, submit_partition
from llm_pipelines.emulator import EmulatorConfig, in_process_client
from llm_pipelines.providers import AnthropicProvider, BatchLimits
from llm_pipelines.routing import default_policy, route
from llm_pipelines.storage import Lake, LandingZone, read_manifests
from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA, TASKS, TASKS_FILE


def _prose(seed: str, chars: int) -> str:
    words = itertools.cycle(f"{seed}{n}" for n in range(50))
    text = ""
    while len(text) < chars:
        text += next(words) + " "
    return text


SONNET_MIN_CHARS = 1024 * 4 + 400  # past Sonnet's 1,024-token minimum
SYSTEMS = {name: _prose(name, SONNET_MIN_CHARS) for name in ("three", "two", "lone", "rt", "own")}
HAIKU_SHORT = _prose("haiku", 2000 * 4)  # 2,000 tokens: under Haiku 4.5's 4,096 minimum
SHORT = _prose("short", 400)
DOCS = {name: _prose(name, SONNET_MIN_CHARS) for name in ("doc1", "doc2")}


def _task(group: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": f"{group}-{n}",
        "task_type": f"bulk_{group}",
        "model": "claude-sonnet-5-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"question {n} for {group}"}],
        **fields,
    }


def _doc_task(n: int, doc: str) -> dict[str, Any]:
    blocks = [{"type": "text", "text": DOCS[doc]}, {"type": "text", "text": f"question {n}"}]
    return _task(doc, n, system=SHORT, messages=[{"role": "user", "content": blocks}])


GROUPS: dict[str, list[dict[str, Any]]] = {
    # 3 batch tasks share a long system prompt: worth a 1-hour write (break-even is 3).
    "three": [_task("three", n, system=SYSTEMS["three"]) for n in range(3)],
    # 2 batch tasks: a 1-hour write would cost more than it saves.
    "two": [_task("two", n, system=SYSTEMS["two"]) for n in range(2)],
    "lone": [_task("lone", 0, system=SYSTEMS["lone"])],
    # Long enough for Sonnet but the group is on Haiku, whose minimum is 4,096 tokens.
    "haiku": [_task("haiku", n, system=HAIKU_SHORT, model="claude-haiku-4-5") for n in range(3)],
    "short": [_task("short", n, system=SHORT) for n in range(4)],
    # 2 real-time tasks: a 5-minute write pays off at 2.
    "rt": [_task("rt", n, system=SYSTEMS["rt"], requires_realtime=True) for n in range(2)],
    # A shared document after a short system prompt: 3 questions on doc1, 1 on doc2.
    "doc1": [_doc_task(n, "doc1") for n in range(3)],
    "doc2": [_doc_task(9, "doc2")],
    # The producer placed its own breakpoint: left exactly as sent.
    "own": [
        _task(
            "own",
            n,
            system=[
                {"type": "text", "text": SYSTEMS["own"], "cache_control": {"type": "ephemeral"}}
            ],
        )
        for n in range(3)
    ],
}


def _interleaved() -> list[dict[str, Any]]:
    """Groups mixed together in arrival order, as producers would land them."""
    mixed = itertools.zip_longest(*GROUPS.values())
    return [task for row in mixed for task in row if task is not None]


def _tasks_by_id(lake: Lake, day: str) -> dict[str, dict[str, Any]]:
    table = lake.read_table([lake.path(TASKS, day, TASKS_FILE)])
    return {row["task_id"]: row for row in table.to_pylist()}


def _breakpoints(request: str) -> list[tuple[str, str]]:
    params = orjson.loads(request)
    found = []
    system = params.get("system")
    for block in system if isinstance(system, list) else []:
        if block.get("cache_control"):
            found.append(("system", block["cache_control"].get("ttl", "5m")))
    content = params["messages"][0]["content"]
    for block in content if isinstance(content, list) else []:
        if block.get("cache_control"):
            found.append(("document", block["cache_control"]["ttl"]))
    return found


def test_breakpoints_only_where_long_enough_and_shared_enough(
    lake: Lake, day: str, materialize_assets
) -> None:
    LandingZone(lake).append(_interleaved(), partition=day)
    result = materialize_assets(["raw_llm_events", "routed_tasks"])
    metadata = result.asset_materializations_for_node("routed_tasks")[0].metadata
    tasks = _tasks_by_id(lake, day)
    marks = {task_id: _breakpoints(row["request"]) for task_id, row in tasks.items()}

    assert all(marks[f"three-{n}"] == [("system", "1h")] for n in range(3))
    assert all(marks[f"rt-{n}"] == [("system", "5m")] for n in range(2))
    assert all(marks[f"doc1-{n}"] == [("document", "1h")] for n in range(3))
    for unmarked in ("two-0", "two-1", "lone-0", "doc2-9", "haiku-0", "short-0"):
        assert marks[unmarked] == [], unmarked
        assert tasks[unmarked]["prefix_key"] is None
    # Tasks sharing a marked prefix share its key; different prefixes have different keys.
    assert len({tasks[f"three-{n}"]["prefix_key"] for n in range(3)}) == 1
    assert tasks["three-0"]["prefix_key"] != tasks["rt-0"]["prefix_key"]
    # The producer's own breakpoint is kept as it was sent, and nothing is added.
    landed = next(t for t in GROUPS["own"] if t["task_id"] == "own-0")
    assert orjson.loads(tasks["own-0"]["request"])["system"] == landed["system"]
    assert metadata["cache_marked"].value == 3 + 2 + 3
    assert metadata["cache_prefix_groups"].value == 3


def test_prefix_groups_are_contiguous_in_dispatch_order_and_across_batches(
    tmp_path: Path, lake: Lake, day: str, materialize_assets, monkeypatch: pytest.MonkeyPatch
) -> None:
    LandingZone(lake).append(_interleaved(), partition=day)
    materialize_assets(["raw_llm_events"])
    # Read 4 events at a time, stretches of ~3 tasks, a row group per ~2 tasks: the order
    # must still be global, not per chunk, stretch or row group.
    monkeypatch.setattr(route, "DISPATCH_STRETCH_BYTES", 3 * (SONNET_MIN_CHARS + 600))
    monkeypatch.setattr(route, "ROW_GROUP_BYTES", 2 * (SONNET_MIN_CHARS + 600))
    stats = route.route_partition(
        lake, day, default_policy(), default_price_table(), datetime.now(UTC), chunk_rows=4
    )
    assert stats.tasks == sum(len(group) for group in GROUPS.values())
    path = lake.path(TASKS, day, TASKS_FILE)
    table = lake.read_table([path])
    arrival = [t["task_id"] for t in _interleaved()]
    assert sorted(table["task_id"].to_pylist()) == sorted(arrival)
    assert table["request_bytes"].to_pylist() == [
        len(r.encode()) for r in table["request"].to_pylist()
    ]

    # Each row group holds one route, in arrival order; real-time ones in dispatch order.
    with lake.fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        groups = [parquet.read_row_group(n) for n in range(parquet.num_row_groups)]
    assert len(groups) > 3
    for group in groups:
        [route_name] = set(group["route"].to_pylist())
        ids = group["task_id"].to_pylist()
        positions = group["dispatch_position"].to_pylist()
        if route_name == "realtime":
            assert positions == sorted(positions)
        else:
            assert ids == sorted(ids, key=arrival.index)

    # In dispatch order, routes come realtime, batch, reuse, and every group (one shared
    # system prompt, or system + document) is one contiguous run.
    ordered = table.sort_by("dispatch_position")
    assert ordered["dispatch_position"].to_pylist() == list(range(table.num_rows))
    routes = ordered["route"].to_pylist()
    assert routes == sorted(routes, key=["realtime", "batch", "reuse"].index)
    prefix_groups = [task_id.split("-")[0] for task_id in ordered["task_id"].to_pylist()]
    runs = [group for group, _ in itertools.groupby(prefix_groups)]
    assert len(runs) == len(set(runs)) == len(GROUPS)

    # Submitted four requests a batch, each group fills consecutive batches.
    client = in_process_client(EmulatorConfig(state_dir=str(tmp_path / "emulator")))
    provider = AnthropicProvider(client, limits=BatchLimits(max_requests=4, max_bytes=10**9))
    stats = submit_partition(lake, provider, day)
    manifests = sorted(read_manifests(lake, day), key=lambda m: m.intent_at)
    assert stats.batches == len(manifests) > 3
    spans: dict[str, list[int]] = {}
    for number, manifest in enumerate(manifests):
        for task_id in sidecar_ids(lake, manifest).to_pylist():
            spans.setdefault(task_id.split("-")[0], []).append(number)
    for group, numbers in spans.items():
        assert numbers == sorted(numbers), group
        assert set(numbers) == set(range(numbers[0], numbers[-1] + 1)), group


def test_stretches_grow_past_their_cap_instead_of_multiplying(
    lake: Lake, day: str, materialize_assets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stretch per task would make a row group per task; capped, each route's tasks share
    at most two stretches, and each stretch is written as one row group."""
    LandingZone(lake).append(_interleaved(), partition=day)
    materialize_assets(["raw_llm_events"])
    monkeypatch.setattr(route, "DISPATCH_STRETCH_BYTES", 1)  # uncapped: one task a stretch
    monkeypatch.setattr(route, "ROW_GROUP_BYTES", 1 << 30)
    path = lake.path(TASKS, day, TASKS_FILE)

    def row_groups() -> int:
        route.route_partition(lake, day, default_policy(), default_price_table(), datetime.now(UTC))
        with lake.fs.open(path, "rb") as handle:
            return pq.ParquetFile(handle).num_row_groups

    tasks = sum(len(group) for group in GROUPS.values())
    monkeypatch.setattr(route, "MAX_STRETCHES", 10_000)
    assert row_groups() == tasks
    monkeypatch.setattr(route, "MAX_STRETCHES", 2)
    routes = len(set(lake.read_table([path], ["route"])["route"].to_pylist()))
    assert routes <= row_groups() <= routes + 1  # a route boundary starts a stretch too


def test_marked_prefixes_are_written_once_then_read_through_the_emulator(
    lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    LandingZone(lake).append(_interleaved(), partition=day)
    materialize_assets(["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"])
    for request in tick_sensor().run_requests:
        materialize_assets(["batch_results"], request.run_config)
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    usage = {row["task_id"]: row for row in results.to_pylist()}

    def split(group: str, column: str) -> list[bool]:
        return sorted(usage[t["task_id"]][column] > 0 for t in GROUPS[group])

    # One request of each marked group writes the prefix (with its TTL); the others read it.
    assert split("three", "cache_write_1h_tokens") == [False, False, True]
    assert split("three", "cache_read_tokens") == [False, True, True]
    assert split("doc1", "cache_write_1h_tokens") == [False, False, True]
    assert split("doc1", "cache_read_tokens") == [False, True, True]
    assert split("rt", "cache_write_5m_tokens") == [False, True]
    assert split("rt", "cache_read_tokens") == [False, True]
    for group in ("two", "lone", "haiku", "short", "doc2"):
        for task in GROUPS[group]:
            row = usage[task["task_id"]]
            cached = row["cache_read_tokens"] + row["cache_write_5m_tokens"]
            assert cached + row["cache_write_1h_tokens"] == 0, task["task_id"]
    three = [usage[t["task_id"]] for t in GROUPS["three"]]
    assert all(row["cost_usd"] < row["sync_cost_usd"] for row in three)
