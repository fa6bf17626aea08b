"""A lease on one partition's submissions, held in the lake itself (local folder or S3).

Two runs submitting the same partition at once would each pack the tasks that no manifest
names yet and send them twice. Whoever submits (or re-enqueues) first takes the partition's
lease; a second run finds it held and stops with a clear error instead.

How it works, with nothing but the lake:

- The lease is a sequence of *generation* files ``batches/dt=<day>/_lease/g<n>.json``, each
  naming its owner (host, pid, Dagster run) and an expiry. The newest generation rules.
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
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from pydantic import BaseModel

from llm_pipelines.storage.datasets import BATCHES, utcnow
from llm_pipelines.storage.lake import Lake

DEFAULT_LEASE_TTL_S = 600.0
"""How long a lease lasts without renewal: far longer than one provider call."""
KEEP_GENERATIONS = 20
"""Old generation files kept for the record; older ones are removed when a lease is taken."""


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


def lease_dir(lake: Lake, partition: str) -> str:
    """Where a partition's lease generations live (hidden from dataset listings by ``_``)."""
    return lake.path(BATCHES, partition, "_lease")


def _generation_path(lake: Lake, partition: str, generation: int) -> str:
    return f"{lease_dir(lake, partition)}/g{generation:012d}.json"


def _generations(lake: Lake, partition: str) -> list[int]:
    try:
        names = lake.fs.ls(lease_dir(lake, partition), detail=False, refresh=True)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        base = name.rsplit("/", 1)[1]
        if base.startswith("g") and base.endswith(".json"):
            found.append(int(base[1:-5]))
    return sorted(found)


def current_lease(lake: Lake, partition: str) -> LeaseRecord | None:
    """The newest generation of a partition's lease, live or not (None if never leased)."""
    generations = _generations(lake, partition)
    if not generations:
        return None
    return LeaseRecord.model_validate(
        lake.read_json(_generation_path(lake, partition, generations[-1]))
    )


def live_lease(lake: Lake, partition: str) -> LeaseRecord | None:
    """The lease's holder if someone holds it now."""
    record = current_lease(lake, partition)
    return record if record is not None and record.live(utcnow()) else None


class PartitionLease:
    """A held lease: check it before acting, renew it while working, release it at the end."""

    def __init__(self, lake: Lake, partition: str, record: LeaseRecord, ttl_s: float) -> None:
        self.lake = lake
        self.partition = partition
        self.record = record
        self.ttl_s = ttl_s
        self._renewed_at = record.acquired_at

    @property
    def path(self) -> str:
        """This generation's file."""
        return _generation_path(self.lake, self.partition, self.record.generation)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless we still hold the lease (and renew it at half-life)."""
        now = utcnow()
        newest = _generations(self.lake, self.partition)
        if newest and newest[-1] != self.record.generation:
            raise LeaseLost(
                f"the submission lease of {self.partition} was taken over (generation "
                f"{newest[-1]} after ours, {self.record.generation}); stopping"
            )
        if self.record.expires_at <= now:
            raise LeaseLost(
                f"the submission lease of {self.partition} expired at "
                f"{self.record.expires_at:%H:%M:%S} UTC before it was renewed; stopping"
            )
        if (now - self._renewed_at).total_seconds() > self.ttl_s / 2:
            self.record.expires_at = now + timedelta(seconds=self.ttl_s)
            self._renewed_at = now
            self.lake.write_json(self.path, self.record.model_dump(mode="json"))

    def release(self) -> None:
        """Give the lease up (a newer generation, if any, is left alone)."""
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
) -> Iterator[PartitionLease]:
    """Hold the partition's lease for the block, or raise :class:`LeaseHeld`."""
    generations = _generations(lake, partition)
    now = utcnow()
    if generations:
        newest = current_lease(lake, partition)
        if newest is not None and newest.live(now):
            raise LeaseHeld(
                f"partition {partition} is being submitted by {newest.describe()}; "
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
    path = _generation_path(lake, partition, generation)
    if not lake.create_exclusive(path, record.model_dump_json(indent=2).encode()):
        winner = current_lease(lake, partition)
        raise LeaseHeld(
            f"partition {partition} was just leased by "
            f"{winner.describe() if winner else 'another run'}; run again once it has finished"
        )
    for old in generations[:-KEEP_GENERATIONS]:
        lake.delete(_generation_path(lake, partition, old))
    lease = PartitionLease(lake, partition, record, ttl_s)
    try:
        yield lease
    finally:
        lease.release()
