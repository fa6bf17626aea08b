"""Packing a routed partition: batches follow dispatch order, whatever order the file is in."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_pipelines.costs import default_price_table
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.dispatch.packing import ENVELOPE_BYTES, Oversized, PackedBatch, request_entry
from llm_pipelines.dispatch.submit import batch_payloads
from llm_pipelines.providers import BatchLimits
from llm_pipelines.routing import default_policy, route
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import TASKS, TASKS_FILE

LIMITS = BatchLimits(max_requests=7, max_bytes=40_000)


def _bodies(lake: Lake, day: str, taken: list[str] | None = None) -> list[list[str]]:
    """Each batch's ids, checked against its body and the limits."""
    out = []
    for item in batch_payloads(lake, day, LIMITS, pa.array(taken or [], pa.string())):
        assert isinstance(item, PackedBatch)
        body = item.close()
        data = body.getvalue()
        body.discard()
        assert len(data) == item.size <= LIMITS.max_bytes and item.count <= LIMITS.max_requests
        assert [r["custom_id"] for r in orjson.loads(data)["requests"]] == item.custom_ids
        out.append(item.custom_ids)
    return out


@pytest.fixture
def routed(lake: Lake, day: str, materialize_assets) -> pa.Table:
    LandingZone(lake).append(generate_tasks(day, 150, seed=5), partition=day)
    materialize_assets(["raw_llm_events", "routed_tasks"])
    return lake.read_table([lake.path(TASKS, day, TASKS_FILE)])


def test_batches_are_filled_in_dispatch_order_whatever_the_file_order(
    lake: Lake, day: str, routed: pa.Table
) -> None:
    batch = routed.filter(pa.compute.equal(routed["route"], "batch")).sort_by("dispatch_position")
    in_dispatch_order = batch["task_id"].to_pylist()
    assert in_dispatch_order != [
        t for t in routed["task_id"].to_pylist() if t in set(batch["task_id"].to_pylist())
    ], "the file is not in dispatch order, or this test shows nothing"
    whole = _bodies(lake, day)
    assert len(whole) > 4
    # Every batch task once; batches consecutive in dispatch order.
    flat = [task_id for ids in whole for task_id in ids]
    assert sorted(flat) == sorted(in_dispatch_order)
    runs = [sorted(ids, key=in_dispatch_order.index) for ids in whole]
    assert [t for ids in runs for t in ids] == in_dispatch_order


def test_tasks_already_in_a_batch_are_left_out_and_the_rest_repacked(
    lake: Lake, day: str, routed: pa.Table
) -> None:
    whole = _bodies(lake, day)
    taken = [task_id for ids in whole[::2] for task_id in ids]
    rest = _bodies(lake, day, taken)
    assert sorted(t for ids in rest for t in ids) == sorted(t for ids in whole[1::2] for t in ids)


def test_oversized_requests_are_set_aside_once_and_the_rest_packed(
    lake: Lake, day: str, routed: pa.Table
) -> None:
    batch = routed.filter(pa.compute.equal(routed["route"], "batch"))
    largest = int(np.max(batch["request_bytes"].to_numpy()))
    limits = BatchLimits(max_requests=7, max_bytes=largest)  # the largest one cannot fit
    items = list(batch_payloads(lake, day, limits))
    aside = [item.custom_id for item in items if isinstance(item, Oversized)]
    packed = [t for item in items if isinstance(item, PackedBatch) for t in item.custom_ids]
    body_of_one = {
        row["task_id"]: ENVELOPE_BYTES + len(request_entry(row["task_id"], row["request"].encode()))
        for row in batch.select(["task_id", "request"]).to_pylist()
    }
    too_big = [task_id for task_id, size in body_of_one.items() if size > limits.max_bytes]
    assert sorted(aside) == sorted(too_big) and aside
    assert sorted(aside + packed) == sorted(batch["task_id"].to_pylist())


def test_a_tasks_file_from_an_older_routing_asks_to_be_routed_again(
    lake: Lake, day: str, routed: pa.Table
) -> None:
    path = lake.path(TASKS, day, TASKS_FILE)
    with lake.fs.open(path, "wb") as handle:
        pq.write_table(routed.drop_columns(["dispatch_position", "request_bytes"]), handle)
    with pytest.raises(ValueError, match="materialize routed_tasks for this partition again"):
        list(batch_payloads(lake, day, LIMITS))


def test_the_same_batches_from_many_small_row_groups(
    lake: Lake, day: str, routed: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is filled from several row groups, read in the order of their first batch:
    the batches are those of a file with one row group per route."""
    whole = _bodies(lake, day)
    monkeypatch.setattr(route, "DISPATCH_STRETCH_BYTES", 3 * LIMITS.max_bytes // 7)
    monkeypatch.setattr(route, "MAX_STRETCHES", 10_000)
    monkeypatch.setattr(route, "ROW_GROUP_BYTES", LIMITS.max_bytes // 7)
    route.route_partition(lake, day, default_policy(), default_price_table(), datetime.now(UTC))
    with lake.fs.open(lake.path(TASKS, day, TASKS_FILE), "rb") as handle:
        assert pq.ParquetFile(handle).num_row_groups > len(whole)
    assert [sorted(ids) for ids in _bodies(lake, day)] == [sorted(ids) for ids in whole]
