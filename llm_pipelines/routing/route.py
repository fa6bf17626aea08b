"""Route a whole partition: events in, routed tasks out, each with its place in dispatch order.

Two streaming passes over the partition's events, with the whole-partition decisions between:

1. **Plan**: per task, the route and deciding rule (:meth:`RoutingPolicy.decide`), the
   right-sized model, and the request's shape (its reuse key, its candidate cache prefixes),
   from narrow columns only: intake recorded each request's model-free hashes and lengths
   (``events.shape``, :func:`~llm_pipelines.routing.caching.canonical_request`), and the
   right-sized model is folded into them here, vectorised; no request is read or parsed.
   Only this compact plan, about 140 bytes a task, is kept for the whole partition.
2. **Decide across the partition**: which tasks reuse an identical request (answered in an
   earlier partition, or the first copy in this one; :mod:`llm_pipelines.routing.reuse`);
   how many tasks on each route share each prefix, hence which breakpoints repay their
   cache write; and the dispatch order: route, system prompt, shared document, arrival.
3. **Write**: read the events again, rewrite requests (model, ``cache_control``: a splice at
   the offsets intake recorded, see :func:`~llm_pipelines.routing.caching.rewrite`), and
   write them to ``tasks/dt=D/tasks.parquet`` with their ``dispatch_position``, grouped by
   *stretch* of dispatch order: each row group holds tasks of one route whose positions lie
   within :data:`DISPATCH_STRETCH_BYTES` of requests (or more, see :data:`MAX_STRETCHES`), in
   arrival order (real-time ones in dispatch order, as that path sends in file order).

The file is not sorted row by row: that meant spilling every request to local disk and
reading it back, half of routing's time at a million tasks. Stretches need only one small
buffer each in memory. The packer assigns tasks to batches in dispatch order
(:func:`~llm_pipelines.dispatch.packing.assign_batches`), so tasks sharing a prefix go to the
same batch or consecutive ones across the *whole* partition, and reads each row group once,
stretch by stretch, handing each batch on once whole; a dispatcher reads only its own
route's row groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llm_pipelines.costs import PriceTable
from llm_pipelines.intake import EVENTS_FILE
from llm_pipelines.routing import caching
from llm_pipelines.routing.policy import (
    BATCH,
    REALTIME,
    REUSE,
    REUSE_RULE,
    ROUTES,
    RoutingPolicy,
    migrated_models,
)
from llm_pipelines.routing.reuse import answered_keys, answered_partitions, source_tasks
from llm_pipelines.storage.datasets import (
    EVENT_FIELDS,
    EVENTS,
    MODEL_MIGRATED,
    REQUESTED,
    RIGHT_SIZED,
    TASKS,
    TASKS_FILE,
    TASKS_SCHEMA,
    RowWriter,
    write_rows,
)
from llm_pipelines.storage.lake import Lake
from llm_pipelines.streams import paused_gc, runs

__all__ = ["TASKS_FILE", "RoutingStats", "estimated_cost", "route_partition"]

ROUTE_CHUNK_ROWS = 2_048
"""Events per chunk in both passes: requests can be long, so chunks stay small."""
DISPATCH_STRETCH_BYTES = 64 * 1024 * 1024
"""Requests (by bytes) in one stretch of dispatch order, at least. The packer reads each row
group once, in stretch order, so a batch (256 MB) is filled from about five stretches while
its neighbours wait on local disk; smaller stretches mean fewer bodies open at once."""
MAX_STRETCHES = 48
"""Beyond this many stretches (3 GB of requests) stretches grow instead: every stretch has
rows waiting in :data:`PENDING_BYTES`, so more of them would make ever smaller row groups
(row groups would grow with the square of the partition). A route's first task starts a
stretch too, so there can be a few more."""
PENDING_BYTES = 96 * 1024 * 1024
"""Routed chunks kept in memory while rows of theirs wait for their stretch's next row group.
A waiting row is a slice that keeps its whole chunk alive, so whole chunks are counted."""
ROW_GROUP_BYTES = 16 * 1024 * 1024
"""The largest row group written, by request bytes."""
ROW_ALLOWANCE_BYTES = 256
"""Bytes a routed row holds besides its request, when sizing row groups."""
EXPECTED_OUTPUT_SHARE = 0.5
"""Estimated output tokens as a share of ``max_tokens``."""


_PLAN_SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("route", pa.string()),
        ("rule", pa.string()),
        ("model", pa.string()),
        ("model_rule", pa.string()),
        ("request_key", pa.binary(16)),
        ("system_key", pa.int64()),
        ("system_tokens", pa.int64()),
        ("document_key", pa.int64()),
        ("document_tokens", pa.int64()),
        ("producer_marked", pa.bool_()),
        ("request_bytes", pa.int64()),
        ("prompt_chars", pa.int64()),
        ("max_tokens", pa.int32()),
    ]
)
_PLAN_COLUMNS = [
    *("task_id", "task_type", "model", "priority", "deadline", "requires_realtime"),
    *("prompt_chars", "max_tokens", "shape"),
]
"""What pass 1 reads of the events: no request."""


@dataclass
class RoutingStats:
    """How a partition was routed."""

    tasks: int = 0
    batch: int = 0
    realtime: int = 0
    reused: int = 0
    reused_from_earlier: int = 0
    est_cost_usd: float = 0.0
    by_rule: Counter[str] = field(default_factory=Counter)
    by_model_rule: Counter[str] = field(default_factory=Counter)
    """How each task's model was chosen: requested, right_sized or model_migrated."""
    by_model: Counter[str] = field(default_factory=Counter)
    """Tasks per model they are sent to."""
    cache_marked: int = 0
    """Tasks with at least one ``cache_control`` breakpoint placed by routing."""
    prefix_groups: int = 0
    """Distinct marked prefixes (system prompts and shared documents) across the partition."""


@dataclass
class _Decisions:
    """Per-task decisions for the whole partition, in event order (compact Arrow/numpy)."""

    route: pa.Array
    rule: pa.Array
    model: pa.Array
    model_rule: pa.Array
    request_key: pa.Array
    mark_system: pa.Array
    mark_document: pa.Array
    system_key: pa.Array
    document_key: pa.Array
    reuse_of: pa.Array
    reuse_partition: pa.Array
    est_cost_usd: pa.Array
    position: np.ndarray
    """Each task's rank in dispatch order."""
    stretch: np.ndarray
    """Each task's stretch of dispatch order (see :data:`DISPATCH_STRETCH_BYTES`)."""
    stretch_route: np.ndarray
    """The route code (index in :data:`ROUTES`) of each stretch."""
    ttl: dict[str, str]


def route_partition(
    lake: Lake,
    partition: str,
    policy: RoutingPolicy,
    prices: PriceTable,
    now: datetime,
    *,
    migrations: Mapping[str, str] | None = None,
    chunk_rows: int = ROUTE_CHUNK_ROWS,
) -> RoutingStats:
    """Apply ``policy`` to every event of the partition and write ``tasks/`` in dispatch order.

    ``migrations`` maps each retired model to the model its work goes to (from the model
    catalog: :meth:`~llm_pipelines.providers.catalog.ModelCatalog.retired_successors`).
    """
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    with lake.fs.open(events_path, "rb") as handle:
        if "shape" not in pq.read_schema(handle).names:
            raise ValueError(
                f"{events_path} was written by an older intake, without request shapes: "
                "materialize raw_llm_events for this partition again, then route it"
            )
    with paused_gc():
        return _route(
            lake, partition, events_path, policy, prices, now, dict(migrations or {}), chunk_rows
        )


def _route(
    lake: Lake,
    partition: str,
    events_path: str,
    policy: RoutingPolicy,
    prices: PriceTable,
    now: datetime,
    migrations: dict[str, str],
    chunk_rows: int,
) -> RoutingStats:
    plan = _plan(lake, events_path, policy, now, migrations, chunk_rows)
    decisions = _decide(lake, partition, plan, policy, prices)
    del plan  # what the decisions keep of it stays; the ids and the rest can go
    stats = _stats(partition, decisions)
    path = lake.path(TASKS, partition, TASKS_FILE)
    with write_rows(lake, path, TASKS_SCHEMA, keep_empty=True) as out:
        stretches = _RowGroupsByStretch(out, decisions.stretch_route)
        for rows, stretch in _routed_chunks(lake, events_path, decisions, chunk_rows):
            stretches.add(rows, stretch)
        stretches.flush()
    assert stats.batch + stats.realtime + stats.reused == stats.tasks, "every task has a route"
    return stats


class _RowGroupsByStretch:
    """Routed rows, buffered per stretch of dispatch order and written a row group at a time.

    Rows wait as slices of the chunk they came in, which keep the whole chunk in memory. So
    the chunks held are what is counted: past :data:`PENDING_BYTES`, every stretch holding a
    row of the oldest chunk is written, which lets that chunk go. With tasks arriving evenly
    that writes every stretch every dozen chunks or so; a stretch is also written once it
    holds :data:`ROW_GROUP_BYTES`. Real-time row groups are sorted by dispatch position.
    """

    def __init__(self, out: RowWriter, stretch_route: np.ndarray) -> None:
        self._out = out
        self._realtime = stretch_route == ROUTES.index(REALTIME)
        self._pending: dict[int, list[pa.RecordBatch]] = {}
        self._bytes: dict[int, int] = {}
        """Request bytes waiting, per stretch."""
        self._chunks_of: dict[int, set[int]] = {}
        """Per stretch, the chunks its waiting rows keep."""
        self._holders: dict[int, set[int]] = {}
        """Per chunk held, the stretches with rows of it waiting."""
        self._chunk_bytes: dict[int, int] = {}
        self._chunks = 0
        self.held_bytes = 0
        """Bytes of the chunks held now."""

    def add(self, rows: pa.RecordBatch, stretch: np.ndarray) -> None:
        """Queue a chunk's rows, grouped by stretch (``stretch`` ascending), each under its
        stretch; write stretches as the budget and the row group size ask."""
        if not rows.num_rows:
            return
        if np.any(np.diff(stretch) < 0):
            raise ValueError("a routed chunk's rows must come grouped by stretch")
        chunk, self._chunks = self._chunks, self._chunks + 1
        self._chunk_bytes[chunk] = rows.nbytes
        self.held_bytes += rows.nbytes
        self._holders[chunk] = set()
        weight = rows["request_bytes"].to_numpy() + ROW_ALLOWANCE_BYTES
        full = []
        for start, end, key in runs(stretch):
            self._pending.setdefault(key, []).append(rows.slice(start, end - start))
            self._bytes[key] = self._bytes.get(key, 0) + int(weight[start:end].sum())
            self._chunks_of.setdefault(key, set()).add(chunk)
            self._holders[chunk].add(key)
            if self._bytes[key] >= ROW_GROUP_BYTES:
                full.append(key)
        for key in full:  # once the chunk's every row is queued: it is let go once, whole
            self._write(key)
        while self.held_bytes > PENDING_BYTES and self._holders:
            for key in sorted(self._holders[min(self._holders)]):
                self._write(key)

    def flush(self) -> None:
        """Write what every stretch still has waiting."""
        for key in sorted(self._pending):
            self._write(key)

    def _write(self, key: int) -> None:
        group = pa.Table.from_batches(self._pending.pop(key))
        if self._realtime[key]:
            group = group.sort_by("dispatch_position")
        self._out.add_batch(group)
        del self._bytes[key]
        for chunk in self._chunks_of.pop(key):
            holders = self._holders[chunk]
            holders.discard(key)
            if not holders:  # no row of it waits any more
                del self._holders[chunk]
                self.held_bytes -= self._chunk_bytes.pop(chunk)


def _plan(
    lake: Lake,
    events_path: str,
    policy: RoutingPolicy,
    now: datetime,
    migrations: dict[str, str],
    chunk_rows: int,
) -> pa.RecordBatch:
    """Pass 1: route, rule, model and request shape of every task, from narrow columns only.

    Intake recorded each request's shape (model-free hashes, lengths); here the right-sized
    model is folded into the hashes, vectorised, so no request is read, let alone parsed.
    """
    chunks = []
    for chunk in lake.iter_batches([events_path], _PLAN_COLUMNS, batch_size=chunk_rows * 8):
        route, rule = policy.decide(chunk, now)
        sized = policy.target_models(chunk["task_type"], chunk["model"])
        model = migrated_models(sized, migrations)
        model_rule = pc.case_when(
            pc.make_struct(pc.not_equal(model, sized), pc.not_equal(sized, chunk["model"])),
            MODEL_MIGRATED,
            RIGHT_SIZED,
            REQUESTED,
        )
        shape = chunk["shape"]
        encoded = pc.dictionary_encode(model)
        narrow, wide = caching.model_hashes(encoded.dictionary.to_pylist())
        which = encoded.indices.to_numpy(zero_copy_only=False)
        chunks.append(
            pa.RecordBatch.from_pydict(
                {
                    "task_id": chunk["task_id"],
                    "task_type": chunk["task_type"],
                    "route": route,
                    "rule": rule,
                    "model": model,
                    "model_rule": model_rule,
                    "request_key": _xor16(shape.field("request_hash"), wide[which]),
                    "system_key": _xor64(shape.field("system_hash"), narrow[which]),
                    "system_tokens": pc.divide(
                        shape.field("system_chars"), caching.CHARS_PER_TOKEN
                    ),
                    "document_key": _xor64(shape.field("document_hash"), narrow[which]),
                    "document_tokens": pc.divide(
                        shape.field("document_chars"), caching.CHARS_PER_TOKEN
                    ),
                    "producer_marked": shape.field("producer_marked"),
                    "request_bytes": shape.field("request_bytes"),
                    "prompt_chars": chunk["prompt_chars"],
                    "max_tokens": chunk["max_tokens"],
                },
                schema=_PLAN_SCHEMA,
            )
        )
    table = pa.Table.from_batches(chunks, _PLAN_SCHEMA)
    return pa.RecordBatch.from_arrays(
        [column.combine_chunks() for column in table.columns], schema=_PLAN_SCHEMA
    )


def _xor64(hashes: pa.Array, model_hash: np.ndarray) -> pa.Array:
    """Model-free 64-bit hashes (nulls kept) folded with each row's model hash."""
    values = hashes.fill_null(0).to_numpy(zero_copy_only=False) ^ model_hash
    return pa.array(values, pa.int64(), mask=hashes.is_null().to_numpy(zero_copy_only=False))


def _xor16(hashes: pa.Array, model_hash: np.ndarray) -> pa.Array:
    """Model-free 16-byte hashes folded with each row's model hash."""
    rows = len(hashes)
    data = np.frombuffer(hashes.buffers()[1], dtype=np.uint8)
    data = data[hashes.offset * 16 : (hashes.offset + rows) * 16].reshape(rows, 16)
    folded = np.bitwise_xor(data, model_hash)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), rows, [None, pa.py_buffer(folded.tobytes())]
    )


def _decide(
    lake: Lake, partition: str, plan: pa.RecordBatch, policy: RoutingPolicy, prices: PriceTable
) -> _Decisions:
    """Reuse, cache breakpoints and dispatch order, from the whole partition's plan."""
    rows = plan.num_rows
    route_code = np.asarray(
        pc.index_in(plan["route"], value_set=pa.array(ROUTES)).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    reuse_of, reuse_partition = _mark_reuse(lake, partition, plan, policy, route_code)
    reused = np.asarray(reuse_partition.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    route_code[reused] = ROUTES.index(REUSE)
    route = pc.take(pa.array(ROUTES), pa.array(route_code))
    rule = pc.if_else(pa.array(reused), REUSE_RULE, plan["rule"])

    mark_system, mark_document = _mark_prefixes(plan, policy, prices, route_code)

    order = pc.sort_indices(
        pa.table(
            {
                "route": route_code,
                "system": plan["system_key"],
                "document": plan["document_key"],
                "arrival": np.arange(rows),
            }
        ),
        sort_keys=[
            (name, "ascending", "at_end") for name in ("route", "system", "document", "arrival")
        ],
    ).to_numpy()
    position = np.empty(rows, dtype=np.int64)
    position[order] = np.arange(rows)
    # Stretches: about DISPATCH_STRETCH_BYTES of requests each (more in a large partition),
    # in dispatch order; a new one starts with each route, so a row group never mixes routes.
    weight = plan["request_bytes"].to_numpy()[order] + ROW_ALLOWANCE_BYTES
    stretch_bytes = max(DISPATCH_STRETCH_BYTES, int(weight.sum()) // MAX_STRETCHES + 1)
    routes_in_order = route_code[order]
    starts = np.ones(rows, dtype=bool)
    starts[1:] = (np.diff((np.cumsum(weight) - weight) // stretch_bytes) != 0) | (
        np.diff(routes_in_order) != 0
    )
    stretch_in_order = np.cumsum(starts) - 1
    stretch = np.empty(rows, dtype=np.int64)
    stretch[order] = stretch_in_order
    return _Decisions(
        route=route,
        rule=rule,
        model=plan["model"],
        model_rule=plan["model_rule"],
        request_key=plan["request_key"],
        mark_system=mark_system,
        mark_document=mark_document,
        system_key=plan["system_key"],
        document_key=plan["document_key"],
        reuse_of=reuse_of,
        reuse_partition=reuse_partition,
        # One vectorised call for the partition: per chunk, the call's overhead dominated.
        est_cost_usd=estimated_cost(
            plan["model"], plan["prompt_chars"], plan["max_tokens"], route, prices
        ),
        position=position,
        stretch=stretch,
        stretch_route=routes_in_order[starts],
        ttl={route: policy.prompt_caching.ttl(route) for route in (REALTIME, BATCH)},
    )


def _mark_reuse(
    lake: Lake, partition: str, plan: pa.RecordBatch, policy: RoutingPolicy, route_code: np.ndarray
) -> tuple[pa.Array, pa.Array]:
    """``reuse_of`` and ``reuse_partition`` of every task (null where it is sent itself)."""
    rows = plan.num_rows
    source_row = np.full(rows, -1, dtype=np.int64)  # this partition: the row answering it
    source_day = np.full(rows, -1, dtype=np.int64)  # index into ``days``
    source_id = pa.nulls(rows, pa.string())
    days: list[str] = []
    free = np.asarray(policy.reusable(plan["task_type"]).to_numpy(zero_copy_only=False), bool)
    keys = plan["request_key"]
    lookback = policy.reuse.lookback_days if policy.reuse.enabled else 0
    for day in answered_partitions(lake, partition, lookback):
        hit = free & np.asarray(
            pc.is_in(keys, value_set=answered_keys(lake, day)).to_numpy(zero_copy_only=False),
            dtype=bool,
        )
        if not hit.any():
            continue
        sources = source_tasks(lake, day, keys.filter(pa.array(hit)))
        # Which earlier task answered each hit: a join, then back to event order.
        matched = pa.table({"request_key": keys, "row": np.arange(rows)}).filter(pa.array(hit))
        matched = matched.join(sources, "request_key").sort_by("row")
        ids = np.full(rows, -1, dtype=np.int64)
        ids[matched["row"].to_numpy()] = np.arange(matched.num_rows)
        found = pc.take(matched["task_id_min"].combine_chunks(), pa.array(ids, mask=ids < 0))
        source_id = pc.coalesce(source_id, found)
        source_day[hit] = len(days)
        days.append(day)
        free &= ~hit
    if policy.reuse.enabled and free.any():
        # Within the partition, one task of each request key is sent: a real-time one if
        # any (it cannot wait for a batch), else the first to arrive.
        rank = route_code * rows + np.arange(rows)
        candidates = pa.table({"request_key": keys, "rank": rank}).filter(pa.array(free))
        first = candidates.group_by("request_key").aggregate([("rank", "min")])
        joined = candidates.join(first, "request_key")
        copies = joined.filter(pc.not_equal(joined["rank"], joined["rank_min"]))
        copy_rows = copies["rank"].to_numpy() % rows
        source_row[copy_rows] = copies["rank_min"].to_numpy() % rows
        source_day[copy_rows] = len(days)
        days.append(partition)
        within = pc.take(plan["task_id"], pa.array(source_row, mask=source_row < 0))
        source_id = pc.coalesce(source_id, within)
    reuse_partition = pc.take(
        pa.array(days, pa.string()), pa.array(source_day, mask=source_day < 0)
    )
    return source_id, reuse_partition


def _mark_prefixes(
    plan: pa.RecordBatch, policy: RoutingPolicy, prices: PriceTable, route_code: np.ndarray
) -> tuple[pa.Array, pa.Array]:
    """Which tasks get a breakpoint after the system prompt, and after a shared document."""
    rows = plan.num_rows
    caching_policy = policy.prompt_caching
    if not caching_policy.enabled or rows == 0:
        none = pa.array(np.zeros(rows, dtype=bool))
        return none, none
    sent = route_code != ROUTES.index(REUSE)
    # Minimum cacheable length and break-even group size of each (model, route) pair.
    pairs = pa.table({"model": plan["model"], "route": route_code})
    combos = pairs.group_by(["model", "route"]).aggregate([])
    thresholds = pa.table(
        {
            "model": combos["model"],
            "route": combos["route"],
            "min_tokens": [
                prices.price(m).min_cacheable_tokens for m in combos["model"].to_pylist()
            ],
            "min_sharers": [
                caching_policy.min_sharers(prices.price(m), ROUTES[r])
                for m, r in zip(
                    combos["model"].to_pylist(), combos["route"].to_pylist(), strict=True
                )
            ],
        }
    )
    limits = (
        pairs.append_column("row", pa.array(np.arange(rows)))
        .join(thresholds, ["model", "route"])
        .sort_by("row")
    )
    min_tokens = limits["min_tokens"].to_numpy()
    min_sharers = limits["min_sharers"].to_numpy()
    usable = sent & ~np.asarray(plan["producer_marked"].to_numpy(zero_copy_only=False), bool)

    def marked(key_column: str, tokens_column: str) -> pa.Array:
        keys = plan[key_column]
        counted = pa.table({"route": route_code, "key": keys}).filter(
            pa.array(sent & np.asarray(keys.is_valid().to_numpy(zero_copy_only=False), bool))
        )
        counts = counted.group_by(["route", "key"]).aggregate([("key", "count")])
        sharers = (
            pa.table({"route": route_code, "key": keys, "row": np.arange(rows)})
            .join(counts, ["route", "key"])
            .sort_by("row")
        )
        count = pc.fill_null(sharers["key_count"], 0).to_numpy()
        long_enough = plan[tokens_column].to_numpy(zero_copy_only=False) >= min_tokens
        return pa.array(usable & long_enough & (count >= min_sharers))

    mark_system = marked("system_key", "system_tokens")
    if caching_policy.shared_documents:
        mark_document = marked("document_key", "document_tokens")
    else:
        mark_document = pa.array(np.zeros(rows, dtype=bool))
    return mark_system, mark_document


def _routed_chunks(
    lake: Lake,
    events_path: str,
    decisions: _Decisions,
    chunk_rows: int,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Pass 2: the events with their decisions applied, ordered by stretch, and each row's
    stretch (so each stretch's rows are one run)."""
    offset = 0
    for chunk in lake.iter_batches([events_path], batch_size=chunk_rows):
        start, rows = offset, chunk.num_rows
        offset += rows
        stretch = decisions.stretch[start : start + rows]
        order = np.argsort(stretch, kind="stable") if np.any(np.diff(stretch) < 0) else None
        pick = _Picker(start, rows, order)
        events = pick(chunk.drop_columns(["request"]))
        route, model = pick.of_partition(decisions.route), pick.of_partition(decisions.model)
        # The requests are reordered by the rewrite itself: one copy of each, not two.
        requests, prefixes = _rewrite(
            events, chunk["request"], order, model, route, decisions, pick
        )
        columns = {
            field.name: events[field.name] for field in EVENT_FIELDS if field.name != "request"
        }
        columns.update(
            model=model,
            request=requests,
            route=route,
            rule=pick.of_partition(decisions.rule),
            model_rule=pick.of_partition(decisions.model_rule),
            requested_model=events["model"],
            prefix_key=prefixes,
            request_key=pick.of_partition(decisions.request_key),
            reuse_of=pick.of_partition(decisions.reuse_of),
            reuse_partition=pick.of_partition(decisions.reuse_partition),
            est_cost_usd=pick.of_partition(decisions.est_cost_usd),
            dispatch_position=pa.array(pick.of_partition(decisions.position)),
            request_bytes=pc.binary_length(requests),
        )
        yield pa.RecordBatch.from_pydict(columns, schema=TASKS_SCHEMA), pick(stretch)


@dataclass(frozen=True)
class _Picker:
    """A chunk's rows in ``order`` (None: as they are), of the chunk's own columns or, with
    :meth:`of_partition`, of a whole-partition column."""

    start: int
    rows: int
    order: np.ndarray | None

    def __call__(self, values: Any) -> Any:
        if self.order is None:
            return values
        return values[self.order] if isinstance(values, np.ndarray) else values.take(self.order)

    def of_partition(self, values: Any) -> Any:
        return self(values[self.start : self.start + self.rows])


def _rewrite(
    events: pa.RecordBatch,
    requests: pa.Array,
    order: np.ndarray | None,
    model: pa.Array,
    route: pa.Array,
    decisions: _Decisions,
    pick: _Picker,
) -> tuple[pa.Array, pa.Array]:
    """Requests as they will be sent (model, breakpoints), in ``order``, and their
    ``prefix_key``; ``events`` and the other columns are in that order already."""
    rows = events.num_rows
    mark_system = pick.of_partition(decisions.mark_system)
    mark_document = pick.of_partition(decisions.mark_document)
    requests = caching.rewrite_column(
        requests,
        events["shape"],
        requested_models=events["model"],
        models=model,
        system=mark_system,
        document=mark_document,
        ttls=[decisions.ttl.get(path, "") for path in route.to_pylist()],
        order=order,
    )
    prefixes: list[str | None] = [None] * rows
    if pc.any(pc.or_(mark_system, mark_document)).as_py():
        for i, (system, document, system_key, document_key) in enumerate(
            zip(
                mark_system.to_pylist(),
                mark_document.to_pylist(),
                pick.of_partition(decisions.system_key).to_pylist(),
                pick.of_partition(decisions.document_key).to_pylist(),
                strict=True,
            )
        ):
            if system or document:
                prefixes[i] = caching.prefix_key_text(
                    system_key if system else None, document_key if document else None
                )
    return requests, pa.array(prefixes, pa.string())


def _stats(partition: str, decisions: _Decisions) -> RoutingStats:
    stats = RoutingStats(tasks=len(decisions.route))
    stats.est_cost_usd = pc.sum(decisions.est_cost_usd).as_py() or 0.0
    counts = pc.value_counts(decisions.route)
    by_route = dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )
    stats.batch = by_route.get(BATCH, 0)
    stats.realtime = by_route.get(REALTIME, 0)
    stats.reused = by_route.get(REUSE, 0)
    stats.reused_from_earlier = int(
        pc.sum(pc.not_equal(decisions.reuse_partition, partition)).as_py() or 0
    )
    rules = pc.value_counts(decisions.rule)
    stats.by_rule.update(
        dict(zip(rules.field("values").to_pylist(), rules.field("counts").to_pylist(), strict=True))
    )
    for counted, into in (
        (decisions.model_rule, stats.by_model_rule),
        (decisions.model, stats.by_model),
    ):
        counts = pc.value_counts(counted)
        into.update(
            dict(
                zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                )
            )
        )
    marked = pc.or_(decisions.mark_system, decisions.mark_document)
    stats.cache_marked = int(pc.sum(marked).as_py() or 0)
    stats.prefix_groups = len(pc.unique(decisions.system_key.filter(decisions.mark_system))) + len(
        pc.unique(decisions.document_key.filter(decisions.mark_document))
    )
    return stats


def estimated_cost(
    models: pa.Array,
    prompt_chars: pa.Array,
    max_tokens: pa.Array,
    route: pa.Array,
    prices: PriceTable,
) -> pa.Array:
    """Expected cost before sending: prompt chars / 4 in, half of ``max_tokens`` out.

    An upper estimate: it leaves out cache savings; a reused task is estimated at 0.
    """
    rows = len(models)
    table = pa.table(
        {
            "model": models,
            "requested_model": models,
            "route": route,
            "input_tokens": pc.divide(pc.cast(prompt_chars, pa.float64()), caching.CHARS_PER_TOKEN),
            "output_tokens": pc.multiply(pc.cast(max_tokens, pa.float64()), EXPECTED_OUTPUT_SHARE),
            "cache_write_5m_tokens": pa.nulls(rows, pa.int64()),
            "cache_write_1h_tokens": pa.nulls(rows, pa.int64()),
            "cache_read_tokens": pa.nulls(rows, pa.int64()),
        }
    )
    return prices.with_cost_columns(table).column("cost_usd").combine_chunks()
