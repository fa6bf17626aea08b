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
from llm_pipelines.dispatch import submit
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


def _route_in_small_row_groups(lake: Lake, day: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Route again, 4 events at a time, into stretches of a few batches' bytes and row groups
    of a request or two (batches here close at 7 requests, most before their bytes are full)."""
    with monkeypatch.context() as patch:
        patch.setattr(route, "DISPATCH_STRETCH_BYTES", 3 * LIMITS.max_bytes)
        patch.setattr(route, "MAX_STRETCHES", 10_000)
        patch.setattr(route, "ROW_GROUP_BYTES", 4_000)
        route.route_partition(
            lake, day, default_policy(), default_price_table(), datetime.now(UTC), chunk_rows=4
        )


def test_the_same_batches_from_many_small_row_groups(
    lake: Lake, day: str, routed: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is filled from several row groups, read in dispatch order of their first
    task: the batches are those of a file with one row group per route."""
    whole = _bodies(lake, day)
    _route_in_small_row_groups(lake, day, monkeypatch)
    with lake.fs.open(lake.path(TASKS, day, TASKS_FILE), "rb") as handle:
        assert pq.ParquetFile(handle).num_row_groups > len(whole)
    assert [sorted(ids) for ids in _bodies(lake, day)] == [sorted(ids) for ids in whole]


def test_a_batch_packed_again_after_a_crash_is_the_same_body(
    lake: Lake, day: str, routed: pa.Table
) -> None:
    """The first batches submitted, the rest packed again: the same ids in the same order,
    hence the same manifest key as before the crash. Here row groups of two tasks in random
    order: many hold tasks of two batches, and what else is left to send changes which of
    them holds a batch's first task."""
    shuffled = routed.take(np.random.default_rng(11).permutation(routed.num_rows))
    with lake.fs.open(lake.path(TASKS, day, TASKS_FILE), "wb") as handle:
        pq.write_table(shuffled, handle, row_group_size=2)
    whole = _bodies(lake, day)
    for submitted in (1, 2, 5, 10, 20):
        taken = [task_id for ids in whole[:submitted] for task_id in ids]
        assert _bodies(lake, day, taken) == whole[submitted:]


def test_a_tasks_file_routed_again_mid_pass_does_not_mix_into_the_batches(
    lake: Lake, day: str, routed: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sizes and requests come from one open file: replaced meanwhile (a re-routing with
    another layout), the pass still packs the file it assigned batches from."""
    _route_in_small_row_groups(lake, day, monkeypatch)
    whole = _bodies(lake, day)
    items = batch_payloads(lake, day, LIMITS)
    first = next(items)
    assert isinstance(first, PackedBatch)
    route.route_partition(lake, day, default_policy(), default_price_table(), datetime.now(UTC))
    assert [first.custom_ids] + [item.custom_ids for item in items] == whole


def test_rows_other_than_those_assigned_stop_the_pass(
    lake: Lake, day: str, routed: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that serves another object under the same name mid-read (the batches were
    assigned for other rows): nothing more is packed, rather than the wrong tasks sent."""
    real = submit.read_row_groups

    def shuffled(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        for group, part in real(*args, **kwargs):  # type: ignore[arg-type]
            yield group, part.take(pa.array(range(part.num_rows - 1, -1, -1)))

    monkeypatch.setattr(submit, "read_row_groups", shuffled)
    with pytest.raises(RuntimeError, match="changed while its batches were being packed"):
        list(batch_payloads(lake, day, LIMITS))
