"""Leases on one partition's provider calls, held in the lake itself (local folder or S3).

Two runs submitting the same partition at once would each pack the tasks that no manifest
names yet and send them twice; two runs answering its real-time tasks at once would each
call the API for every task neither has answered yet. Whoever submits (or re-enqueues)
first takes the partition's submission lease, whoever answers real-time tasks first takes
its real-time lease; a second run finds the lease held and stops with a clear error instead.
The two leases are apart (:data:`SUBMISSION_LEASE`, :data:`REALTIME_LEASE`): they cover
disjoint routes, and one run's submission and real-time steps run side by side.

How it works, with nothing but the lake:

- A lease is a sequence of *generation* files ``batches/dt=<day>/_lease/g<n>.json``
  (``_lease_realtime/`` for the real-time lease), each naming its owner (host, pid, Dagster
  run) and an expiry. The newest generation rules.
- To take the lease, read the newest generation; if it is released, expired, or its owner is
  a dead process on this host, create generation n+1 with an *exclusive create*
  (:meth:`Lake.create_exclusive`: hard link locally, ``If-None-Match: *`` on S3). Of several
  racing takers exactly one creates n+1; the others get :class:`LeaseHeld`. Files are never
  overwritten by a taker, so there is no read-modify-write race.
- The holder renews by rewriting its own generation (nobody else writes it) and checks,
  before each provider call, that no newer generation exists and its own has not expired;
  otherwise it stops with :class:`LeaseLost`. Releasing marks the generation released.

Limits, stated plainly: expiry compares wall clocks, so the TTL (default 10 minutes) must
dwarf clock skew and the longest single provider call; a holder frozen past its expiry (a
stop-the-world pause) can act once more after another process took over. After a crash the
lease is free at once on the same host (the owner pid is gone) and after the TTL elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel

from llm_pipelines.storage.datasets import BATCHES, utcnow
from llm_pipelines.storage.lake import Lake

DEFAULT_LEASE_TTL_S = 600.0
"""How long a lease lasts without renewal: far longer than one provider call."""
KEEP_GENERATIONS = 20
"""Old generation files kept for the record; older ones are removed when a lease is taken."""


@dataclass(frozen=True)
class LeaseKind:
    """One of a partition's leases: where its generations live and what its holder does."""

    folder: str
    """The folder of its generation files, beside the partition's manifests."""
    name: str
    """What it is called in messages ("the submission lease")."""
    activity: str
    """What a holder is doing, for an error a person can act on ("being submitted")."""


SUBMISSION_LEASE = LeaseKind("_lease", "submission", "being submitted")
"""Held by batch submission and replays: everything that packs or re-enqueues batch work."""
REALTIME_LEASE = LeaseKind("_lease_realtime", "real-time", "being answered in real time")
"""Held by the real-time path while it calls the Messages API."""


class LeaseHeld(RuntimeError):
    """Another live owner holds the partition's lease."""


class LeaseLost(RuntimeError):
    """The lease expired or was taken over while we held it: stop before acting again."""


class LeaseRecord(BaseModel):
    """One generation of a partition lease, as stored."""

    generation: int
    owner: str
    purpose: str
    host: str
    pid: int
    token: str
    acquired_at: datetime
    expires_at: datetime
    released_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Whether this generation still holds the lease."""
        if self.released_at is not None or self.expires_at <= now:
            return False
        return not (self.host == socket.gethostname() and not _pid_alive(self.pid))

    def describe(self) -> str:
        """Who holds it and until when, for an error a person can act on."""
        return (
            f"{self.owner} ({self.purpose}, pid {self.pid} on {self.host}) until "
            f"{self.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def lease_dir(lake: Lake, partition: str, kind: LeaseKind = SUBMISSION_LEASE) -> str:
    """Where a partition's lease generations live (hidden from dataset listings by ``_``)."""
    return lake.path(BATCHES, partition, kind.folder)


def _generation_path(lake: Lake, partition: str, generation: int, kind: LeaseKind) -> str:
    return f"{lease_dir(lake, partition, kind)}/g{generation:012d}.json"


def _generations(lake: Lake, partition: str, kind: LeaseKind) -> list[int]:
    try:
        names = lake.fs.ls(lease_dir(lake, partition, kind), detail=False, refresh=True)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        base = name.rsplit("/", 1)[1]
        if base.startswith("g") and base.endswith(".json"):
            found.append(int(base[1:-5]))
    return sorted(found)


def current_lease(
    lake: Lake, partition: str, kind: LeaseKind = SUBMISSION_LEASE
) -> LeaseRecord | None:
    """The newest generation of a partition's lease, live or not (None if never leased)."""
    generations = _generations(lake, partition, kind)
    if not generations:
        return None
    return LeaseRecord.model_validate(
        lake.read_json(_generation_path(lake, partition, generations[-1], kind))
    )


def live_lease(
    lake: Lake, partition: str, kind: LeaseKind = SUBMISSION_LEASE
) -> LeaseRecord | None:
    """The lease's holder if someone holds it now."""
    record = current_lease(lake, partition, kind)
    return record if record is not None and record.live(utcnow()) else None


class PartitionLease:
    """A held lease: check it before acting, renew it while working, release it at the end.

    :meth:`check` may be called from several threads at once (the real-time path checks
    before each call of its pool): renewals take turns.
    """

    def __init__(
        self,
        lake: Lake,
        partition: str,
        record: LeaseRecord,
        ttl_s: float,
        kind: LeaseKind = SUBMISSION_LEASE,
    ) -> None:
        self.lake = lake
        self.partition = partition
        self.record = record
        self.ttl_s = ttl_s
        self.kind = kind
        self._renewed_at = record.acquired_at
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """This generation's file."""
        return _generation_path(self.lake, self.partition, self.record.generation, self.kind)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless we still hold the lease (and renew it at half-life)."""
        # The listing runs outside the lock: threads checking at once each list in parallel
        # (one round trip on S3), and only renewals take turns.
        newest = _generations(self.lake, self.partition, self.kind)
        if newest and newest[-1] != self.record.generation:
            raise LeaseLost(
                f"the {self.kind.name} lease of {self.partition} was taken over "
                f"(generation {newest[-1]} after ours, {self.record.generation}); stopping"
            )
        with self._lock:
            now = utcnow()
            if self.record.expires_at <= now:
                raise LeaseLost(
                    f"the {self.kind.name} lease of {self.partition} expired at "
                    f"{self.record.expires_at:%H:%M:%S} UTC before it was renewed; stopping"
                )
            if (now - self._renewed_at).total_seconds() > self.ttl_s / 2:
                self.record.expires_at = now + timedelta(seconds=self.ttl_s)
                self._renewed_at = now
                self.lake.write_json(self.path, self.record.model_dump(mode="json"))

    def release(self) -> None:
        """Give the lease up (a newer generation, if any, is left alone)."""
        with self._lock:
            self.record.released_at = utcnow()
            self.lake.write_json(self.path, self.record.model_dump(mode="json"))


@contextlib.contextmanager
def partition_lease(
    lake: Lake,
    partition: str,
    *,
    owner: str,
    purpose: str,
    ttl_s: float = DEFAULT_LEASE_TTL_S,
    kind: LeaseKind = SUBMISSION_LEASE,
) -> Iterator[PartitionLease]:
    """Hold the partition's lease of ``kind`` for the block, or raise :class:`LeaseHeld`."""
    generations = _generations(lake, partition, kind)
    now = utcnow()
    if generations:
        newest = current_lease(lake, partition, kind)
        if newest is not None and newest.live(now):
            raise LeaseHeld(
                f"partition {partition} is {kind.activity} by {newest.describe()}; "
                "run again once it has finished"
            )
    generation = (generations[-1] if generations else 0) + 1
    record = LeaseRecord(
        generation=generation,
        owner=owner,
        purpose=purpose,
        host=socket.gethostname(),
        pid=os.getpid(),
        token=uuid.uuid4().hex,
        acquired_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    path = _generation_path(lake, partition, generation, kind)
    if not lake.create_exclusive(path, record.model_dump_json(indent=2).encode()):
        winner = current_lease(lake, partition, kind)
        raise LeaseHeld(
            f"partition {partition} was just leased ({kind.name}) by "
            f"{winner.describe() if winner else 'another run'}; run again once it has finished"
        )
    for old in generations[:-KEEP_GENERATIONS]:
        lake.delete(_generation_path(lake, partition, old, kind))
    lease = PartitionLease(lake, partition, record, ttl_s, kind)
    try:
        yield lease
    finally:
        lease.release()


@contextlib.contextmanager
def every_lease(lake: Lake, partition: str, *, owner: str, purpose: str) -> Iterator[None]:
    """Hold every lease of the partition (submission and real-time) for the block, or raise
    :class:`LeaseHeld`: for work that changes what either dispatch pass reads (routing)."""
    with contextlib.ExitStack() as held:
        for kind in (SUBMISSION_LEASE, REALTIME_LEASE):
            held.enter_context(
                partition_lease(lake, partition, owner=owner, purpose=purpose, kind=kind)
            )
        yield
