"""The emulator's state on disk: batches, the prompt cache and the clock.

Every process that opens the same folder sees the same batches. Writes are atomic (temporary
file, then rename) and anything read-modify-write runs under a file lock, so the webserver,
the daemon and run workers can share one emulator without a server.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from filelock import FileLock

from llm_pipelines.emulator.config import EmulatorConfig, RareStop
from llm_pipelines.emulator.lineup import ModelEntry, lineup
from llm_pipelines.emulator.model import RequestRefused, answer, check_request, fingerprint
from llm_pipelines.emulator.tokens import PromptCache, PromptTooLong
from llm_pipelines.providers.contract import RequestInvalid, validated_request

EXPIRY_S = 24 * 3600
"""A batch that has not ended 24 hours after creation expires, as on the real API."""

Status = Literal["in_progress", "canceling", "ended"]
OUTCOMES = ("succeeded", "errored", "canceled", "expired")
RETRYABLE_FAULTS = (
    ("overloaded_error", "emulated fault: overloaded, try again"),
    ("api_error", "emulated fault: internal server error"),
)
"""Request errors the fault plan injects that a retry in a later batch can fix."""


def rfc3339(epoch: float | None) -> str | None:
    """Epoch seconds as the API writes timestamps."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BatchRecord:
    """One batch's metadata as stored in ``batches/<id>/batch.json``."""

    id: str
    created_at: float
    expires_at: float
    ends_at: float | None  # None: a stalled batch that will only expire
    request_count: int
    processing_status: Status = "in_progress"
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    counts: dict[str, int] | None = None

    def to_api(self, base_url: str) -> dict[str, Any]:
        """The ``MessageBatch`` object the API returns."""
        counts = dict.fromkeys(("processing", *OUTCOMES), 0)
        if self.processing_status == "ended" and self.counts is not None:
            counts.update(self.counts)
        else:
            counts["processing"] = self.request_count
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": counts,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "ended_at": rfc3339(self.ended_at),
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": (
                f"{base_url}/v1/messages/batches/{self.id}/results"
                if self.processing_status == "ended"
                else None
            ),
        }


def checked(params: Any, validate: Any = validated_request) -> tuple[dict[str, Any], ModelEntry]:
    """A request the API would answer, and the model answering it.

    Raises :class:`RequestInvalid` (400) for a request the contract refuses, and
    :class:`RequestRefused` (its own status) for one the model refuses.
    """
    request = validate(params)
    return request, check_request(request, lineup().serving(request["model"]))


@dataclass
class ModelState:
    """What answering changes: the prompt cache and, per request, its truncated attempts."""

    cache: PromptCache
    attempts: dict[str, int]
    attempts_changed: bool = False

    def respond(
        self,
        request: dict[str, Any],
        entry: ModelEntry,
        now: float,
        service_tier: str,
        forced_stop: RareStop | None = None,
    ) -> dict[str, Any]:
        """The answer to a checked request, its prompt cached as the API caches it.

        A request answered before and cut short by ``max_tokens`` is a new attempt: a fresh
        draw (see :mod:`llm_pipelines.emulator.model`).
        """
        try:
            usage = self.cache.use(request, entry.min_cacheable_tokens, now, entry.max_input_tokens)
        except PromptTooLong as error:
            raise RequestRefused(str(error)) from None
        identity = fingerprint(request)
        key = identity.hex()
        attempt = self.attempts.get(key, 0)
        message = answer(
            request,
            usage,
            service_tier,
            entry=entry,
            attempt=attempt,
            forced_stop=forced_stop,
            identity=identity,
        )
        if message["stop_reason"] == "max_tokens" and request["max_tokens"]:
            self.attempts[key] = attempt + 1
            self.attempts_changed = True
        return message


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so readers see the old content or the new, never half."""
    temporary = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class EmulatorStore:
    """Batches, cache and clock under one state folder."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.root = config.root
        self.batches_dir = self.root / "batches"
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self._cache_path = self.root / "prompt_cache.json"
        self._attempts_path = self.root / "attempts.json"
        self._cache_lock = FileLock(str(self.root / "prompt_cache.lock"))
        self._clock_path = self.root / "clock.json"
        self._fault_log = self.root / "faults.jsonl"
        self._answered_log = self.root / "answered_messages.log"
        self._fault_streams = self.root / "fault_streams.json"

    # -- clock -------------------------------------------------------------------------------

    def now(self) -> float:
        """Emulated time: the wall clock plus any offset set by :meth:`advance_clock`."""
        try:
            offset = float(orjson.loads(self._clock_path.read_bytes())["offset_s"])
        except (FileNotFoundError, ValueError, KeyError):
            offset = 0.0
        return time.time() + offset

    def advance_clock(self, seconds: float) -> None:
        """Move emulated time forward (tests: let batches end, expire, caches lapse)."""
        with FileLock(str(self._clock_path) + ".lock"):
            offset = self.now() - time.time() + seconds
            atomic_write(self._clock_path, orjson.dumps({"offset_s": offset}))

    # -- fault accounting --------------------------------------------------------------------

    def next_fault_stream(self) -> int:
        """A fresh number for an emulator instance's HTTP-fault draws.

        Every client (each asset run, each process) builds its own emulator instance; seeding
        each from the plan's seed alone would replay the same first faults in every one.
        """
        with FileLock(str(self._fault_streams) + ".lock"):
            try:
                stream = int(orjson.loads(self._fault_streams.read_bytes())["next"])
            except (FileNotFoundError, ValueError, KeyError):
                stream = 0
            atomic_write(self._fault_streams, orjson.dumps({"next": stream + 1}))
        return stream

    def record_faults(self, kind: str, count: int = 1) -> None:
        """Note injected faults in the shared log, so every process's faults are counted."""
        if count:
            # One short O_APPEND write per call: lines from concurrent processes never mix.
            with open(self._fault_log, "ab") as log:
                log.write(orjson.dumps({"kind": kind, "n": count}) + b"\n")

    def record_answered_message(self, body: dict[str, Any]) -> None:
        """Note a ``/v1/messages`` call that was answered (and so billed), by a digest of its
        body: the same request answered twice is a call paid twice."""
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        with open(self._answered_log, "ab") as log:  # one short O_APPEND write, as above
            log.write(digest[:32].encode() + b"\n")

    def answered_messages(self) -> collections.Counter[str]:
        """How often each distinct ``/v1/messages`` request was answered, over every process."""
        try:
            with open(self._answered_log, "rb") as log:
                return collections.Counter(line.strip().decode() for line in log if line.strip())
        except FileNotFoundError:
            return collections.Counter()

    def fault_totals(self) -> dict[str, int]:
        """Injected faults so far, by kind (``http_429``, ``errored_overloaded_error``, ...)."""
        totals: dict[str, int] = {}
        try:
            with open(self._fault_log, "rb") as log:
                for line in log:
                    entry = orjson.loads(line)
                    totals[entry["kind"]] = totals.get(entry["kind"], 0) + entry["n"]
        except FileNotFoundError:
            pass
        return totals

    # -- prompt cache ------------------------------------------------------------------------

    @contextlib.contextmanager
    def model_state(self) -> Iterator[ModelState]:
        """The shared prompt cache and attempt counts, locked for the duration, then saved."""
        with self._cache_lock:
            state = ModelState(PromptCache(_load(self._cache_path)), _load(self._attempts_path))
            yield state
            state.cache.prune(self.now())
            atomic_write(self._cache_path, orjson.dumps(state.cache.entries))
            if state.attempts_changed:
                atomic_write(self._attempts_path, orjson.dumps(state.attempts))

    # -- batches -----------------------------------------------------------------------------

    def _dir(self, batch_id: str) -> Path:
        return self.batches_dir / batch_id

    def _lock(self, batch_id: str) -> FileLock:
        return FileLock(str(self._dir(batch_id) / ".lock"))

    def exists(self, batch_id: str) -> bool:
        """Whether a batch with this id was ever created (and not deleted)."""
        return "/" not in batch_id and (self._dir(batch_id) / "batch.json").exists()

    def _read(self, batch_id: str) -> BatchRecord:
        return BatchRecord(**orjson.loads((self._dir(batch_id) / "batch.json").read_bytes()))

    def _write(self, record: BatchRecord) -> None:
        atomic_write(self._dir(record.id) / "batch.json", orjson.dumps(record.__dict__))

    def staging_file(self) -> Path:
        """A fresh file name to write a new batch's validated request lines into."""
        staging = self.root / "staging"
        staging.mkdir(exist_ok=True)
        return staging / f"{secrets.token_hex(8)}.jsonl"

    def create_batch(self, requests_file: Path, count: int) -> BatchRecord:
        """Make a new batch from a staged file of validated ``{"custom_id", "params"}`` lines."""
        now = self.now()
        batch_id = f"msgbatch_{int(now * 1_000_000):014x}{secrets.token_hex(5)}"
        directory = self._dir(batch_id)
        directory.mkdir(parents=True)
        os.replace(requests_file, directory / "requests.jsonl")
        faults = self.config.faults
        stalled = random.Random(f"{faults.seed}:stall:{batch_id}").random()
        record = BatchRecord(
            id=batch_id,
            created_at=now,
            expires_at=now + EXPIRY_S,
            ends_at=None
            if stalled < faults.stalled_batch_rate
            else now + self.config.batch_latency_s,
            request_count=count,
        )
        self._write(record)
        if record.ends_at is None:
            self.record_faults("stalled_batch")
        return record

    def replay_batch(self, results_file: Path) -> BatchRecord:
        """An ended batch whose results are the JSON lines of ``results_file`` (moved in).

        For replaying a recorded batch, and for benchmarks that need millions of result lines
        without emulating every request; the outcome counts are read from the lines.
        """
        counts = dict.fromkeys(OUTCOMES, 0)
        with open(results_file, "rb") as lines:
            for line in lines:
                outcome = orjson.loads(line).get("result", {}).get("type") if line.strip() else None
                if outcome in counts:  # a malformed line (for tests) counts as nothing
                    counts[outcome] += 1
        now = self.now()
        batch_id = f"msgbatch_{int(now * 1_000_000):014x}{secrets.token_hex(5)}"
        directory = self._dir(batch_id)
        directory.mkdir(parents=True)
        (directory / "requests.jsonl").touch()
        os.replace(results_file, self.results_path(batch_id))
        record = BatchRecord(
            id=batch_id,
            created_at=now,
            expires_at=now + EXPIRY_S,
            ends_at=now,
            request_count=sum(counts.values()),
            processing_status="ended",
            ended_at=now,
            counts=counts,
        )
        self._write(record)
        return record

    def get_batch(self, batch_id: str) -> BatchRecord:
        """A batch as of now: one whose time has come is processed on the way."""
        record = self._read(batch_id)
        if record.processing_status == "ended":
            return record
        now = self.now()
        due = record.cancel_initiated_at is not None or now >= record.expires_at
        if record.ends_at is not None and now >= record.ends_at:
            due = True
        if not due:
            return record
        with self._lock(batch_id):
            record = self._read(batch_id)  # another process may have ended it meanwhile
            if record.processing_status != "ended":
                self._finish(record, now)
        return record

    def list_batch_ids(self) -> list[str]:
        """Every batch id, newest first (ids sort by creation time)."""
        return sorted((p.name for p in self.batches_dir.iterdir() if p.is_dir()), reverse=True)

    def request_ids(self, batch_id: str) -> list[str]:
        """The custom_ids a batch was created with, in order: what the provider was asked.

        For tests and benchmarks that count how often each task was sent, across batches.
        """
        with open(self._dir(batch_id) / "requests.jsonl", "rb") as lines:
            return [orjson.loads(line)["custom_id"] for line in lines if line.strip()]

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        """Ask a batch to stop: it reports ``canceling`` and ends on the next look."""
        with self._lock(batch_id):
            record = self._read(batch_id)
            if record.processing_status == "in_progress":
                record.cancel_initiated_at = self.now()
                record.processing_status = "canceling"
                self._write(record)
        return record

    def delete_batch(self, batch_id: str) -> None:
        """Remove an ended batch and its results."""
        directory = self._dir(batch_id)
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()

    def results_path(self, batch_id: str) -> Path:
        """Where an ended batch's result lines are."""
        return self._dir(batch_id) / "results.jsonl"

    # -- processing --------------------------------------------------------------------------

    def _finish(self, record: BatchRecord, now: float) -> None:
        """Work out every request's result and end the batch (caller holds the batch lock)."""
        latency = (record.ends_at or record.expires_at) - record.created_at
        if record.cancel_initiated_at is not None:
            # Requests the batch got through before the cancel were answered; the rest weren't.
            done = (record.cancel_initiated_at - record.created_at) / latency if latency else 0.0
            limit, leftover = int(record.request_count * min(done, 1.0)), "canceled"
        elif record.ends_at is None or record.ends_at > record.expires_at:
            limit, leftover = 0, "expired"
        else:
            limit, leftover = record.request_count, "expired"
        counts = dict.fromkeys(OUTCOMES, 0)
        injected: dict[str, int] = {}
        results = self.results_path(record.id)
        temporary = results.with_name(".tmp-results.jsonl")
        with (
            self.model_state() as state,
            open(self._dir(record.id) / "requests.jsonl", "rb") as source,
            open(temporary, "wb") as sink,
        ):
            for index, line in enumerate(source):
                item = orjson.loads(line)
                custom_id = item["custom_id"]
                if index >= limit:
                    outcome: dict[str, Any] = {"type": leftover}
                else:
                    outcome = self._outcome(record.id, custom_id, item["params"], state, now)
                    if "fault" in outcome:
                        kind = outcome.pop("fault")
                        injected[kind] = injected.get(kind, 0) + 1
                counts[outcome["type"]] += 1
                sink.write(orjson.dumps({"custom_id": custom_id, "result": outcome}))
                sink.write(b"\n")
        os.replace(temporary, results)
        record.processing_status = "ended"
        record.ended_at = now
        record.counts = counts
        self._write(record)
        for kind, count in injected.items():
            self.record_faults(kind, count)

    def _outcome(
        self, batch_id: str, custom_id: str, params: Any, state: ModelState, now: float
    ) -> dict[str, Any]:
        faults = self.config.faults
        forced_stop = None
        if faults.active:
            draw = random.Random(f"{faults.seed}:{batch_id}:{custom_id}")
            roll = draw.random()
            if roll < faults.errored_rate:
                if draw.random() < faults.non_retryable_error_share:
                    kind, message = "invalid_request_error", "emulated fault: request rejected"
                else:
                    kind, message = draw.choice(RETRYABLE_FAULTS)
                return {**errored(kind, message), "fault": f"errored_{kind}"}
            roll -= faults.errored_rate
            if roll < faults.expired_rate:
                return {"type": "expired", "fault": "expired"}
            roll -= faults.expired_rate
            if roll < faults.canceled_rate:
                return {"type": "canceled", "fault": "canceled"}
            forced_stop = faults.rare_stop(draw.random())
        # Each request is validated now, not at creation: the API checks a batch's requests
        # asynchronously and reports an invalid one as an errored result.
        try:
            request, entry = checked(params)
        except RequestInvalid as error:
            return errored("invalid_request_error", str(error))
        except RequestRefused as error:
            return errored(error.kind, str(error))
        try:
            message = state.respond(request, entry, now, "batch", forced_stop)
        except RequestRefused as error:
            return errored(error.kind, str(error))
        outcome = {"type": "succeeded", "message": message}
        if forced_stop is not None:
            outcome["fault"] = f"stop_{forced_stop}"
        return outcome


def errored(kind: str, message: str) -> dict[str, Any]:
    """An errored request result, nested as the API nests it (an ``ErrorResponse``)."""
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": message}, "request_id": None},
    }


def _load(path: Path) -> dict[str, Any]:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
