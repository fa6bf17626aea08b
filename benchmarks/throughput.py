"""Throughput and peak memory of the hot path, against the same steps written the obvious way.

    uv run python benchmarks/throughput.py --tasks 1000000

In one process, with the Anthropic emulator in process, it measures

* ingest: landing JSON lines → validated, deduplicated events → routed tasks → serialised
  batch request bodies, with the functions the assets run (``ingest_partition``,
  ``route_partition``, ``batch_payloads``);
* results: result lines streamed from the emulator's results endpoint through the official
  SDK → priced parquet rows, with ``collect_batch`` (dead letters included);
* apart from both: a submission pass with nothing new to send (``resubmit_s``), as every
  retry pass and re-run makes one;

then the baseline of the same steps: a pydantic model and a dict per event, routing row by
row, one JSON document per batch body; iterating the SDK's typed
``MessageBatchIndividualResponse`` objects (``client.messages.batches.results()``).

Tasks are realistic: prompts of 200-6,000 characters, most behind one of a few shared system
prompts, the task mix of a nightly platform partition, 20% carrying tools, an image or a text
document (:data:`RICH_SHARE`), ~0.5% invalid lines and ~1% producer repeats. Result lines
have the API's shape (text, usage with cache split, errored, expired and canceled requests;
with ``--tool-share`` / ``--json-share``, answers that think and call a tool, or whose text
is JSON); they are generated, then replayed by the emulator as ended batches. Both sides
build the same result rows, the whole content and tool calls included.

The partition is landed by a child process, as producers land it: what is measured starts
in a process that has not just generated gigabytes of JSON. Peak RSS is sampled (every few
ms, from /proc) while the pipeline's steps run; they run before any baseline, whose peak is
reported apart (``baseline_peak_rss_mb``), as memory a process has touched is rarely given
back. Before each measured stage the writes before it are flushed to disk and given time to
settle (``DiskSettler``), so no stage pays for another's write-back. The last line printed
is JSON.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

import llm_pipelines.intake as intake_module
from llm_pipelines.costs import default_price_table
from llm_pipelines.demo.workload import _pick, _text  # the demo's task mix and wording
from llm_pipelines.dispatch.collect import collect_batch, task_requests
from llm_pipelines.dispatch.packing import ENVELOPE_BYTES, Oversized
from llm_pipelines.dispatch.results import COMPLETE_STOP_REASONS
from llm_pipelines.dispatch.submit import SIDECAR_SCHEMA, SubmitStats, batch_key, batch_payloads
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore, in_process_client
from llm_pipelines.intake import EVENTS_FILE, ingest_partition, intake_workers, plan_pieces
from llm_pipelines.providers import ANTHROPIC_LIMITS, AnthropicProvider
from llm_pipelines.routing import BATCH, REALTIME, default_policy
from llm_pipelines.routing.caching import CHARS_PER_TOKEN
from llm_pipelines.routing.route import EXPECTED_OUTPUT_SHARE, TASKS_FILE, route_partition
from llm_pipelines.storage import BatchManifest, Lake, LandingZone, write_manifest
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER_SCHEMA,
    EVENTS_SCHEMA,
    LANDING,
    RESULTS_SCHEMA,
    TASKS,
    TASKS_SCHEMA,
    utcnow,
)
from llm_pipelines.tasks import LLMTask, canonical_json, prompt_chars

DAY = "2026-11-23"
WARM_UP_TASKS = 2_000

SYSTEM_PROMPT_CHARS = (800, 1_500, 2_500, 3_000, 4_200, 4_500, 4_800, 5_000)


# -- workload --------------------------------------------------------------------------------


class Corpus:
    """Random text to slice prompts and answers from (slicing is fast; sampling words is not)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.text = _text(rng, 4_000_000)
        self.systems = [
            f"You are assistant {i} of the platform team. " + _text(random.Random(100 + i), n)
            for i, n in enumerate(SYSTEM_PROMPT_CHARS)
        ]

    def slice(self, rng: random.Random, chars: int) -> str:
        start = rng.randrange(0, len(self.text) - chars)
        return self.text[start : start + chars]


def realistic_tasks(count: int, seed: int, corpus: Corpus) -> Iterator[dict[str, Any] | str]:
    """Landing items: prompts 200-6,000 chars, 75% with a shared system prompt, some bad input."""
    rng = random.Random(seed)
    day = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    recent: list[dict[str, Any]] = []
    for index in range(count):
        roll = rng.random()
        if roll < 0.005:
            yield '{"task_type": "catalog_description", "model": '  # a truncated line
            continue
        if roll < 0.015 and recent:
            yield rng.choice(recent)  # a producer retry
            continue
        task_type, model, max_tokens = _pick(rng)
        task: dict[str, Any] = {"task_type": task_type, "model": model, "max_tokens": max_tokens}
        if rng.random() < 0.8:  # most producers send an idempotency key; the rest get a hash
            task["task_id"] = f"{task_type[:4]}-{seed}-{index:08d}"
        prompt = rng.randint(200, 6_000)
        if rng.random() < 0.75:
            system = rng.choice(corpus.systems)
            if len(system) + 200 <= prompt:
                task["system"] = system
                prompt -= len(system)
        task["messages"] = [{"role": "user", "content": corpus.slice(rng, prompt)}]
        rich = rng.random()
        if rich < RICH_SHARE:
            _enrich(task, rich / RICH_SHARE, rng)
        if rng.random() < 0.3:
            task["metadata"] = {"producer": "benchmark", "seq": str(index)}
        if task_type == "agent_assist":
            task["deadline"] = (day + timedelta(hours=rng.randint(1, 40))).isoformat()
            task["priority"] = rng.randint(0, 3)
        if len(recent) < 64:
            recent.append(task)
        else:
            recent[rng.randrange(64)] = task
        yield task


RICH_SHARE = 0.2
"""Tasks carrying more than text (issue 15's mix): tools, an image or a document."""
_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000400000003008060000006b8e1a"
        "6c0000000d49444154789c6360000000000005000157a2b4e60000000049454e44ae426082"
    )
).decode()
_LOOKUP_TOOL = {
    "name": "lookup_order",
    "description": "Look an order up by its number.",
    "input_schema": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "include_items": {"type": "boolean"}},
        "required": ["order_id"],
    },
}


def _enrich(task: dict[str, Any], which: float, rng: random.Random) -> None:
    """Give a text task tools (40%), an image (30%) or a text document (30%)."""
    text = task["messages"][0]["content"]
    if which < 0.4:
        task["tools"] = [_LOOKUP_TOOL]
        task["tool_choice"] = {"type": "auto"}
    elif which < 0.7:
        image = {"type": "base64", "media_type": "image/png", "data": _PNG}
        task["messages"][0]["content"] = [
            {"type": "image", "source": image},
            {"type": "text", "text": text},
        ]
    else:
        half = max(1, len(text) // 2)
        document = {"type": "text", "media_type": "text/plain", "data": text[:half]}
        task["messages"][0]["content"] = [
            {"type": "document", "source": document, "title": f"doc {rng.randrange(100)}"},
            {"type": "text", "text": text[half:] or "Summarise it."},
        ]


@dataclass(frozen=True)
class AnswerMix:
    """Shares of the answers that are not plain text (none by default, so the default lines
    are those of earlier rounds and figures stay comparable).

    ``tools``: the model thinks, then calls a tool with nested JSON input (``tool_use``);
    ``json``: the text is a JSON object, as answers to prompts that ask for JSON are, so
    collection reads the requests to see whether they asked for structured output.
    (The generated tasks carry tools, images and documents: :data:`RICH_SHARE`; these
    result lines are generated apart from them.)
    """

    tools: float = 0.0
    json: float = 0.0


def _answer(
    rng: random.Random, corpus: Corpus, output_tokens: int, mix: AnswerMix
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Content, stop reason and extra usage of one succeeded answer."""
    roll = rng.random() if mix.tools or mix.json else 1.0  # the default draws nothing more
    if roll < mix.tools:
        thinking = output_tokens // 2
        call = {
            "type": "tool_use",
            "id": f"toolu_{rng.getrandbits(64):016x}",
            "name": rng.choice(["search_catalog", "lookup_order", "create_ticket"]),
            "input": {
                "query": corpus.slice(rng, 80),
                "filters": {"limit": rng.randint(1, 50), "tags": ["a", "b"], "exact": False},
            },
        }
        content = [
            {"type": "thinking", "thinking": corpus.slice(rng, thinking * 4), "signature": "sig"},
            {"type": "text", "text": corpus.slice(rng, 120)},
            call,
        ]
        return content, "tool_use", {"output_tokens_details": {"thinking_tokens": thinking}}
    if roll < mix.tools + mix.json:
        document = {"category": "billing", "summary": corpus.slice(rng, output_tokens * 3)}
        return [{"type": "text", "text": orjson.dumps(document).decode()}], "end_turn", {}
    text = [{"type": "text", "text": corpus.slice(rng, output_tokens * 4)}]
    return text, "end_turn" if rng.random() < 0.9 else "max_tokens", {}


def result_line(
    rng: random.Random, corpus: Corpus, custom_id: str, model: str, mix: AnswerMix
) -> bytes:
    """One results line as the Message Batches API streams it."""
    roll = rng.random()
    if roll < 0.015:
        result: dict[str, Any] = {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            },
        }
    elif roll < 0.022:
        result = {"type": "expired"}
    elif roll < 0.025:
        result = {"type": "canceled"}
    else:
        output_tokens = rng.randint(40, 450)
        cached = rng.random() < 0.5
        message_id = f"msg_{rng.getrandbits(96):024x}"
        content, stop_reason, usage = _answer(rng, corpus, output_tokens, mix)
        result = {
            "type": "succeeded",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": rng.randint(50, 1_500),
                    "cache_creation_input_tokens": 0 if cached else 1_100,
                    "cache_read_input_tokens": 1_100 if cached else 0,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 0,
                        "ephemeral_1h_input_tokens": 0 if cached else 1_100,
                    },
                    "output_tokens": output_tokens,
                    "service_tier": "batch",
                    **usage,
                },
            },
        }
    return orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"


# -- measuring -------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_descendants(int(child)))
    return found


class RssSampler:
    """Samples resident memory on a thread and records the peak of each phase.

    Counts this process and any process it started (shared pages once per process, so it
    over-counts rather than under-counts).
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.peaks: dict[str, float] = {}
        self._phase: str | None = None
        self._interval = interval_s
        self._page = os.sysconf("SC_PAGE_SIZE") if Path("/proc/self/statm").exists() else 0
        threading.Thread(target=self._run, daemon=True, name="rss-sampler").start()

    def rss_mb(self) -> float:
        if not self._page:  # not Linux: the process-wide high-water mark is all there is
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        pages = 0
        for pid in [os.getpid(), *_descendants(os.getpid())]:
            with contextlib.suppress(OSError):
                pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * self._page / 2**20

    def _run(self) -> None:
        while True:
            phase = self._phase
            if phase is not None:
                self.peaks[phase] = max(self.peaks.get(phase, 0.0), self.rss_mb())
            time.sleep(self._interval)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.peaks[name] = max(self.peaks.get(name, 0.0), self.rss_mb())
        self._phase = name
        try:
            yield
        finally:
            self._phase = None
            self.peaks[name] = max(self.peaks[name], self.rss_mb())


@contextlib.contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Wall seconds into ``into[name]``, CPU seconds (all threads) into ``name + "_cpu"``."""
    started, cpu = time.perf_counter(), time.process_time()
    yield
    into[name] = into.get(name, 0.0) + time.perf_counter() - started
    into[f"{name}_cpu"] = into.get(f"{name}_cpu", 0.0) + time.process_time() - cpu


# -- the pipeline ----------------------------------------------------------------------------


def pipeline_ingest(lake: Lake, now: datetime) -> dict[str, Any]:
    """Landing → events → routed tasks → batch bodies, as the assets run it."""
    steps: dict[str, float] = {}
    pieces = len(plan_pieces(lake, lake.files(LANDING, DAY, ".jsonl")))
    workers = intake_workers(pieces)
    with timed(steps, "intake_s"):
        intake = ingest_partition(lake, DAY)
    with timed(steps, "routing_s"):
        routing = route_partition(lake, DAY, default_policy(), default_price_table(), now)
    bodies = payload_bytes = 0
    with timed(steps, "payloads_s"):
        for item in batch_payloads(lake, DAY, ANTHROPIC_LIMITS):
            if isinstance(item, Oversized):
                continue
            body = item.close()
            bodies += 1
            payload_bytes += len(body)
            body.discard()
    return {
        "valid": intake.valid,
        "invalid": intake.invalid,
        "duplicates": intake.duplicates,
        "conflicts": intake.conflicts,
        "intake_pieces": pieces,
        "intake_workers": workers,
        "intake_worker_pieces": intake.worker_pieces,
        "batch_routed": routing.batch,
        "batch_bodies": bodies,
        "payload_bytes": payload_bytes,
        "ingest_steps_s": {k: round(v, 2) for k, v in steps.items() if not k.endswith("_cpu")},
    }


def pipeline_resubmit(lake: Lake) -> dict[str, Any]:
    """A submission pass with nothing new to send, as a retry pass or a re-run makes one:
    every batch-routed task is already in a batch."""
    tasks = lake.read_table([lake.path(TASKS, DAY, TASKS_FILE)], ["task_id", "route"])
    taken = tasks.filter(pc.equal(tasks["route"], BATCH))["task_id"].combine_chunks()
    stats = SubmitStats()
    started = time.perf_counter()
    bodies = sum(1 for _ in batch_payloads(lake, DAY, ANTHROPIC_LIMITS, taken, stats))
    return {
        "resubmit_s": round(time.perf_counter() - started, 3),
        "resubmit_bodies": bodies,
        "resubmit_already_submitted": stats.already_submitted,
    }


def prepare_results(
    lake: Lake, store: EmulatorStore, corpus: Corpus, seed: int, mix: AnswerMix
) -> list[Any]:
    """Manifests, task lists and emulator batches for every batch-routed task, ended."""
    rng = random.Random(seed)
    tasks = lake.path(TASKS, DAY, TASKS_FILE)
    columns = ["task_id", "route", "model", "task_type", "requested_model"]
    manifests: list[BatchManifest] = []
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        sidecar = pa.Table.from_batches(pending).combine_chunks()
        lines = Path(store.root) / f"replay-{len(manifests)}.jsonl"
        with open(lines, "wb") as sink:
            for task_id, model in zip(
                sidecar["task_id"].to_pylist(), sidecar["model"].to_pylist(), strict=True
            ):
                sink.write(result_line(rng, corpus, task_id, model, mix))
        record = store.replay_batch(lines)
        ids = sidecar["task_id"].to_pylist()
        manifest = BatchManifest(
            key=batch_key(ids, 1),
            partition=DAY,
            provider="anthropic",
            attempt=1,
            request_count=len(ids),
            payload_bytes=0,
            provider_batch_id=record.id,
            intent_at=utcnow(),
            submitted_at=utcnow(),
        )
        lake.write_table(
            lake.path(BATCHES, DAY, manifest.tasks_name),
            sidecar.select(SIDECAR_SCHEMA.names).cast(SIDECAR_SCHEMA),
        )
        write_manifest(lake, manifest)
        manifests.append(manifest)
        pending, pending_rows = [], 0

    for chunk in lake.iter_batches([tasks], columns):
        chunk = chunk.filter(pc.equal(chunk["route"], BATCH))
        while chunk.num_rows:
            room = ANTHROPIC_LIMITS.max_requests - pending_rows
            pending.append(chunk.slice(0, room))
            pending_rows += min(room, chunk.num_rows)
            chunk = chunk.slice(room)
            if pending_rows == ANTHROPIC_LIMITS.max_requests:
                flush()
    if pending_rows:
        flush()
    return manifests


def pipeline_results(lake: Lake, provider: AnthropicProvider, manifests: list[Any]) -> int:
    """Every ended batch streamed into priced parquet, as the batch_results asset does."""
    rows = 0
    for manifest in manifests:
        rows += collect_batch(lake, provider, manifest, default_price_table()).totals.rows
    return rows


# -- the baseline: the same steps, written the obvious way ----------------------------------


def baseline_cache_mark(params: dict[str, Any], ttl: str, min_tokens: int) -> str | None:
    """The obvious cache plan: a breakpoint on every long enough system prompt."""
    system = params.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
    if not blocks:
        return None
    text = "".join(block.get("text", "") for block in blocks)
    if len(text) / CHARS_PER_TOKEN < min_tokens:
        return None
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral", "ttl": ttl}}
    params["system"] = blocks
    return hashlib.blake2b(f"{params['model']}\x00{text}".encode(), digest_size=8).hexdigest()


def baseline_ingest(lake: Lake, out: Path, now: datetime) -> dict[str, int]:
    """A pydantic model and a dict per event; routing row by row; one JSON document per body."""
    out.mkdir(parents=True, exist_ok=True)
    prices, policy = default_price_table(), default_policy()
    events_schema = pa.schema([f.remove_metadata() for f in EVENTS_SCHEMA])
    # The baseline does no request reuse and packs in file order: no columns for either.
    unused = {"request_key", "reuse_of", "reuse_partition", "dispatch_position", "request_bytes"}
    tasks_schema = pa.schema([f.remove_metadata() for f in TASKS_SCHEMA if f.name not in unused])
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    valid = 0
    with pq.ParquetWriter(out / EVENTS_FILE, events_schema) as events:
        for path in lake.files(LANDING, DAY, ".jsonl"):
            name = path.rsplit("/", 1)[1]
            with lake.fs.open(path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        task = LLMTask.model_validate_json(line)
                    except ValidationError:
                        continue
                    if task.request_problem() is not None:
                        continue
                    if not prices.knows(task.model):
                        continue
                    params = task.request_params()
                    request = canonical_json(params)
                    task_id = task.resolved_task_id(request)
                    if task_id in seen:
                        continue
                    seen.add(task_id)
                    rows.append(
                        {
                            "task_id": task_id,
                            "task_type": task.task_type,
                            "model": task.model,
                            "max_tokens": params["max_tokens"],
                            "priority": task.priority,
                            "deadline": task.deadline,
                            "requires_realtime": task.requires_realtime,
                            "prompt_chars": prompt_chars(params),
                            "request": request.decode(),
                            "metadata": json.dumps(task.metadata) if task.metadata else None,
                            "source": f"{name}:{number}",
                        }
                    )
                    valid += 1
                    if len(rows) >= 8_192:
                        events.write_table(pa.Table.from_pylist(rows, schema=events_schema))
                        rows.clear()
        events.write_table(pa.Table.from_pylist(rows, schema=events_schema))
        rows.clear()

    cutoff = now + timedelta(hours=policy.batch_turnaround_hours)
    caching = policy.prompt_caching
    with pq.ParquetWriter(out / TASKS_FILE, tasks_schema) as tasks:
        for chunk in pq.ParquetFile(out / EVENTS_FILE).iter_batches(8_192):
            routed = []
            for row in chunk.to_pylist():
                if row["requires_realtime"]:
                    rule = "requires_realtime"
                elif row["task_type"] in policy.realtime_task_types:
                    rule = "task_type"
                elif row["deadline"] is not None and row["deadline"] < cutoff:
                    rule = "deadline"
                elif (
                    policy.realtime_max_priority is not None
                    and row["priority"] <= policy.realtime_max_priority
                ):
                    rule = "priority"
                else:
                    rule = "default"
                route = BATCH if rule == "default" else REALTIME
                model = policy.model_map.get(row["task_type"], row["model"])
                params = json.loads(row["request"])
                params["model"] = model
                prefix = None
                if caching.enabled and "system" in params:
                    ttl = caching.batch_ttl if route == BATCH else caching.realtime_ttl
                    minimum = prices.price(model).min_cacheable_tokens
                    prefix = baseline_cache_mark(params, ttl, minimum)
                estimate = prices.cost_usd(
                    model,
                    input_tokens=row["prompt_chars"] / CHARS_PER_TOKEN,
                    output_tokens=row["max_tokens"] * EXPECTED_OUTPUT_SHARE,
                    batch=route == BATCH,
                )
                routed.append(
                    {
                        **row,
                        "model": model,
                        "request": canonical_json(params).decode(),
                        "route": route,
                        "rule": rule,
                        "requested_model": row["model"],
                        "model_rule": "requested" if model == row["model"] else "right_sized",
                        "prefix_key": prefix,
                        "est_cost_usd": estimate,
                    }
                )
            tasks.write_table(pa.Table.from_pylist(routed, schema=tasks_schema))

    bodies = payload_bytes = 0
    requests: list[dict[str, Any]] = []
    size = ENVELOPE_BYTES

    def close() -> None:
        nonlocal bodies, payload_bytes, requests, size
        payload_bytes += len(json.dumps({"requests": requests}, separators=(",", ":")).encode())
        bodies += 1
        requests, size = [], ENVELOPE_BYTES

    columns = ["task_id", "route", "request"]
    for chunk in pq.ParquetFile(out / TASKS_FILE).iter_batches(8_192, columns=columns):
        for row in chunk.to_pylist():
            if row["route"] != BATCH:
                continue
            entry = {"custom_id": row["task_id"], "params": json.loads(row["request"])}
            entry_size = len(json.dumps(entry, separators=(",", ":")).encode()) + 1
            if (
                len(requests) >= ANTHROPIC_LIMITS.max_requests
                or size + entry_size > ANTHROPIC_LIMITS.max_bytes
            ):
                close()
            requests.append(entry)
            size += entry_size
    if requests:
        close()
    return {"valid": valid, "batch_bodies": bodies, "payload_bytes": payload_bytes}


def baseline_results(lake: Lake, client: Any, manifests: list[Any], out: Path) -> int:
    """The SDK's typed result objects and a dict per row; failures dead-lettered with their
    request, looked up with the pipeline's own ``task_requests`` (the comparison is about
    decoding results and building rows, not about that lookup)."""
    out.mkdir(parents=True, exist_ok=True)
    prices = default_price_table()
    priced = ("cost_usd", "sync_cost_usd")
    schema = pa.schema([f.remove_metadata() for f in RESULTS_SCHEMA if f.name not in priced])
    dead_schema = pa.schema([f.remove_metadata() for f in DEAD_LETTER_SCHEMA])
    written = 0
    for manifest in manifests:
        sidecar = lake.read_table([lake.path(BATCHES, DAY, manifest.tasks_name)])
        expected = {row["task_id"]: row for row in sidecar.to_pylist()}
        collected_at = utcnow()
        rows = []
        failed: dict[str, str] = {}
        for item in client.messages.batches.results(manifest.provider_batch_id):
            meta = expected.get(item.custom_id)
            if meta is None:
                continue
            if item.result.type != "succeeded":
                failed[item.custom_id] = item.result.type
                continue
            message = item.result.message
            usage = message.usage
            split = usage.cache_creation
            write_1h = (split.ephemeral_1h_input_tokens if split else 0) or 0
            created = usage.cache_creation_input_tokens or 0
            details = usage.output_tokens_details
            rows.append(
                {
                    "task_id": item.custom_id,
                    "task_type": meta["task_type"],
                    "route": BATCH,
                    "batch_id": manifest.provider_batch_id,
                    "attempt": 1,
                    "model": message.model,
                    "requested_model": meta["requested_model"],
                    "message_id": message.id,
                    "stop_reason": message.stop_reason,
                    "stop_sequence": message.stop_sequence,
                    "stop_details": (
                        message.stop_details.to_json(indent=None) if message.stop_details else None
                    ),
                    "complete": message.stop_reason in COMPLETE_STOP_REASONS,
                    "output_text": "".join(b.text for b in message.content if b.type == "text"),
                    "content_json": orjson.dumps([b.to_dict() for b in message.content]).decode(),
                    "tool_calls": [
                        {"id": b.id, "name": b.name, "input_json": orjson.dumps(b.input).decode()}
                        for b in message.content
                        if b.type == "tool_use"
                    ],
                    # (no request of the benchmark asks for structured output, and the
                    # baseline is spared reading requests to find that out)
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "thinking_tokens": details.thinking_tokens if details else None,
                    "cache_write_5m_tokens": (
                        split.ephemeral_5m_input_tokens if split else created - write_1h
                    )
                    or 0,
                    "cache_write_1h_tokens": write_1h,
                    "cache_read_tokens": usage.cache_read_input_tokens or 0,
                    "collected_at": collected_at,
                }
            )
        table = prices.with_cost_columns(pa.Table.from_pylist(rows, schema=schema))
        pq.write_table(table, out / f"batch-{manifest.key}.parquet")
        written += table.num_rows
        requests = task_requests(lake, DAY, list(failed))
        dead = [
            {
                "task_id": task_id,
                "stage": "collect",
                "reason": reason,
                "attempt": 1,
                "payload": requests.get(task_id),
                "source": manifest.provider_batch_id,
                "dead_lettered_at": utcnow(),
            }
            for task_id, reason in failed.items()
        ]
        pq.write_table(
            pa.Table.from_pylist(dead, schema=dead_schema), out / f"dead-{manifest.key}.parquet"
        )
    return written


# -- the run ---------------------------------------------------------------------------------


def land(lake: Lake, tasks: int, seed: int, corpus: Corpus) -> None:
    LandingZone(lake).append(realistic_tasks(tasks, seed, corpus), partition=DAY, flush_id="bench")


def land_elsewhere(lake: Lake, tasks: int, seed: int) -> None:
    """Land the partition from another process, as producers do.

    Generating gigabytes of JSON leaves this process's allocator in a state no pipeline
    process starts in (routing a million tasks measured 19.7 s after landing them here,
    15.4 s after landing them from a child); the pipeline is what is measured, not that.
    """
    child = multiprocessing.get_context("spawn").Process(
        target=_land_in_child, args=(lake.url, tasks, seed), name="producer"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"landing the benchmark partition failed (exit {child.exitcode})")


def _land_in_child(url: str, tasks: int, seed: int) -> None:
    land(Lake(url), tasks, seed, Corpus(seed))


SETTLE_S_PER_GB = 20.0
MAX_SETTLE_S = 60.0


class DiskSettler:
    """Lets the set-up's writes reach the disk before a measured step.

    Generating a landing zone (or result streams) writes gigabytes; their write-back would
    land on the next step, charging it for data a nightly run has had on disk for hours.
    ``os.sync`` returns once the guest has written them, but on a virtual machine the host
    keeps writing for a while, and the guest's CPUs feel it: at a million tasks, routing took
    19-23 s right after the landing was synced, 15 s a minute later. So after syncing, it
    also waits (up to a minute) in proportion to the gigabytes written since the last call.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.bytes = self._written()

    def _written(self) -> int:
        return sum(path.stat().st_size for path in self.work.rglob("*") if path.is_file())

    def __call__(self) -> None:
        if hasattr(os, "sync"):
            os.sync()
        total = self._written()
        written, self.bytes = max(total - self.bytes, 0), total
        time.sleep(min(MAX_SETTLE_S, SETTLE_S_PER_GB * written / 2**30))


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(tasks: int, work: Path, seed: int, mix: AnswerMix) -> dict[str, Any]:
    corpus = Corpus(seed)
    now = utcnow()
    sampler = RssSampler()

    # Warm up on a small partition: imports and first-use set-up are not what is measured.
    warm = Lake(str(work / "warm" / "lake"))
    land(warm, min(WARM_UP_TASKS, tasks), seed + 1, corpus)
    pipeline_ingest(warm, now)
    baseline_ingest(warm, work / "warm" / "baseline", now)

    lake = Lake(str(work / "lake"))
    settle_disk = DiskSettler(work)
    say(f"landing {tasks:,} tasks in {lake.url}")
    land_elsewhere(lake, tasks, seed)
    settle_disk()
    landing_bytes = sum(lake.size(p) for p in lake.files(LANDING, DAY, ".jsonl"))
    emulator = EmulatorConfig(state_dir=str(work / "emulator"))
    client = in_process_client(emulator, max_retries=0)
    provider = AnthropicProvider(client)

    seconds: dict[str, float] = {}
    say("pipeline: landing → events → routed tasks → batch payloads")
    with sampler.phase("pipeline"), timed(seconds, "ingest"):
        ingest = pipeline_ingest(lake, now)
    say("pipeline: a submission pass with nothing new to send")
    resubmit = pipeline_resubmit(lake)
    say("preparing result streams in the emulator")
    manifests = prepare_results(lake, EmulatorStore(emulator), corpus, seed, mix)
    settle_disk()
    say(f"pipeline: {len(manifests)} batches of results → parquet")
    with sampler.phase("pipeline"), timed(seconds, "results"):
        result_rows = pipeline_results(lake, provider, manifests)

    say("baseline: the same steps, the obvious way")
    settle_disk()
    with sampler.phase("baseline"), timed(seconds, "baseline_ingest"):
        baseline = baseline_ingest(lake, work / "baseline", now)
    settle_disk()
    with sampler.phase("baseline"), timed(seconds, "baseline_results"):
        baseline_rows = baseline_results(lake, client, manifests, work / "baseline" / "results")
    # The two ways must agree on what they did, or the comparison means nothing.
    assert baseline["valid"] == ingest["valid"], (baseline, ingest)
    assert baseline_rows == result_rows, (baseline_rows, result_rows)

    return {
        "tasks": tasks,
        "landing_mb": round(landing_bytes / 2**20, 1),
        **ingest,
        "ingest_s": round(seconds["ingest"], 3),
        "ingest_rows_per_s": round(tasks / seconds["ingest"]),
        "ingest_cpu_s": round(seconds["ingest_cpu"], 3),
        **resubmit,
        "results": result_rows,
        "results_s": round(seconds["results"], 3),
        "results_rows_per_s": round(len_lines(manifests) / seconds["results"]),
        "results_cpu_s": round(seconds["results_cpu"], 3),
        "peak_rss_mb": round(sampler.peaks["pipeline"], 1),
        "baseline_ingest_s": round(seconds["baseline_ingest"], 3),
        "baseline_results_s": round(seconds["baseline_results"], 3),
        "baseline_ingest_cpu_s": round(seconds["baseline_ingest_cpu"], 3),
        "baseline_results_cpu_s": round(seconds["baseline_results_cpu"], 3),
        "baseline_results": baseline_rows,
        "baseline_peak_rss_mb": round(sampler.peaks["baseline"], 1),
        "ingest_speedup_vs_baseline": round(seconds["baseline_ingest"] / seconds["ingest"], 2),
        "results_speedup_vs_baseline": round(seconds["baseline_results"] / seconds["results"], 2),
        "answer_mix": {"tools": mix.tools, "json": mix.json},
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def len_lines(manifests: list[Any]) -> int:
    """Result lines streamed: one per request of every batch."""
    return sum(m.request_count for m in manifests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="landing lines to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="where the lake and emulator go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--piece-bytes",
        type=int,
        help="intake's piece size (default: the pipeline's); small pieces at a small --tasks "
        "engage the intake worker process as a large day does",
    )
    parser.add_argument(
        "--workers-only",
        action="store_true",
        help="intake's own process only coordinates: every piece is parsed in its worker "
        "(with --piece-bytes, a small day takes the path a large day's pieces take)",
    )
    parser.add_argument(
        "--tool-share",
        type=float,
        default=0.0,
        help="share of answers that think, then call a tool (default 0)",
    )
    parser.add_argument(
        "--json-share",
        type=float,
        default=0.0,
        help="share of answers whose text is JSON: their requests are read (default 0)",
    )
    args = parser.parse_args(argv)
    if args.piece_bytes:
        intake_module.PIECE_BYTES = args.piece_bytes
    if args.workers_only:
        intake_module.PARSE_HERE = False
    work = Path(args.workdir or tempfile.mkdtemp(prefix="llm-bench-"))
    try:
        figures = run(args.tasks, work, args.seed, AnswerMix(args.tool_share, args.json_share))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name:>30}: {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
