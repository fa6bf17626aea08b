"""Named crash points: kill the process at a dangerous moment, on purpose, to prove recovery.

The pipeline calls :func:`crash_point` at each moment where a crash could lose or double work
(a batch created but its manifest not yet written, results read but not yet written, ...).
Unarmed — always, in production — a call costs one environment lookup.

Armed through the environment, so a test or benchmark can arm a *child process*:

- ``LLM_PIPELINES_CRASH_AT="point[:n]"``: the process dies with :data:`CRASH_EXIT_CODE` the
  n-th time (default: first) it reaches ``point``, through ``os._exit`` — no ``finally``, no
  flush, no atexit: what a SIGKILL or a lost machine leaves behind.
- ``LLM_PIPELINES_HOLD_AT="point:lock_file"``: at ``point`` the process creates
  ``lock_file + ".reached"`` and blocks until it can share-lock ``lock_file``, which the test
  holds exclusively: a deterministic way to stop a process mid-way and race another one.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CRASH_ENV = "LLM_PIPELINES_CRASH_AT"
HOLD_ENV = "LLM_PIPELINES_HOLD_AT"
CRASH_EXIT_CODE = 86
"""Exit status of a process killed at a crash point (tells a harness "crashed as asked")."""

POINTS = frozenset(
    {
        "submit.after_intent",  # intent manifest written, provider not called yet
        "submit.after_create",  # provider batch exists, manifest does not name it yet
        "collect.after_read",  # every result line read, nothing published yet
        "collect.after_results",  # results published, manifest not yet marked collected
        "sensor.mid_tick",  # the sensor has decided on some run requests, not all
        "cancel.after_cancel",  # cancel sent to the provider, manifest not yet updated
        "replay.before_write",  # dead letters chosen, retry rows not yet written
        "realtime.after_calls",  # a chunk's real-time answers received, none written yet
        "realtime.after_chunk",  # a chunk's real-time results and dead letters written
    }
)
"""Every crash point the pipeline has; arming another name is an error."""

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Die here if this point is armed for this hit; otherwise do nothing."""
    crash, hold = os.environ.get(CRASH_ENV), os.environ.get(HOLD_ENV)
    if not crash and not hold:
        return
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}")
    _hits[name] += 1
    if crash:
        point, _, nth = crash.partition(":")
        _check(point)
        if point == name and _hits[name] == int(nth or 1):
            os._exit(CRASH_EXIT_CODE)
    if hold:
        point, _, lock_file = hold.partition(":")
        _check(point)
        if point == name and _hits[name] == 1:
            Path(lock_file + ".reached").touch()
            with open(lock_file, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_SH)  # blocks while the test holds LOCK_EX


def reset() -> None:
    """Forget hit counts (a forked child starts counting afresh)."""
    _hits.clear()


def _check(point: str) -> None:
    if point not in POINTS:
        raise ValueError(f"{CRASH_ENV}/{HOLD_ENV}: unknown crash point {point!r}")


@dataclass(frozen=True)
class ChildOutcome:
    """How a child process ended, and what it returned if it finished."""

    exitcode: int
    value: Any = None

    @property
    def crashed(self) -> bool:
        """Whether it died at its armed crash point."""
        return self.exitcode == CRASH_EXIT_CODE


class Child:
    """A forked child process running one function, armed with a crash or hold point."""

    def __init__(
        self,
        fn: Callable[[], Any],
        *,
        crash_at: str | None = None,
        hold_at: str | None = None,
        quiet: bool = False,
    ) -> None:
        for spec in (crash_at, hold_at):
            if spec is not None:
                _check(spec.partition(":")[0])
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)

        def child() -> None:
            if quiet:  # the child's own output (Dagster's console log) goes nowhere
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            reset()
            os.environ.pop(CRASH_ENV, None)
            os.environ.pop(HOLD_ENV, None)
            if crash_at is not None:
                os.environ[CRASH_ENV] = crash_at
            if hold_at is not None:
                os.environ[HOLD_ENV] = hold_at
            send.send(fn())

        self._process = context.Process(target=child, daemon=False)
        self._process.start()
        send.close()

    def running(self, for_s: float) -> bool:
        """Wait up to ``for_s`` seconds for the child to end; whether it still runs."""
        self._process.join(timeout=for_s)
        return self._process.is_alive()

    def wait(self) -> ChildOutcome:
        """Wait for the child to end; what it returned, if it got that far."""
        value = None
        with contextlib.suppress(EOFError):  # EOF: it died (or failed) before answering
            value = self._receive.recv()
        self._process.join()
        return ChildOutcome(int(self._process.exitcode or 0), value)


def run_in_child(
    fn: Callable[[], Any], *, crash_at: str | None = None, quiet: bool = False
) -> ChildOutcome:
    """Run ``fn`` in a forked child process, armed to die at ``crash_at``; wait for it.

    The child shares nothing with the parent but what is on disk (lake, emulator state,
    Dagster instance storage), so a crash leaves exactly what a killed run would leave.
    Forking keeps the already-imported modules: far faster than a fresh interpreter.
    """
    return Child(fn, crash_at=crash_at, quiet=quiet).wait()


@contextlib.contextmanager
def paused_at(
    fn: Callable[[], Any],
    point: str,
    gate: Path,
    *,
    patience_s: float = 120.0,
    quiet: bool = False,
) -> Iterator[Child]:
    """Run ``fn`` in a child held at ``point`` (its first hit) while the block runs.

    The block starts once the child has reached ``point``; the child goes on when it ends
    (then :meth:`Child.wait` for it). ``gate`` is a file of the caller's: the lock file of
    ``LLM_PIPELINES_HOLD_AT``. Raises if the child ends, or takes ``patience_s``, before it
    gets there.
    """
    gate.touch()
    reached = Path(f"{gate}.reached")
    with open(gate) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            child = Child(fn, hold_at=f"{point}:{gate}", quiet=quiet)
            deadline = time.monotonic() + patience_s
            while not reached.exists():
                if not child.running(0.05):
                    raise RuntimeError(f"the child ended before it reached {point}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the child did not reach {point} in {patience_s:.0f} s")
            yield child
        finally:
            # Unlocked explicitly: the child forked with this open file, so closing ours
            # alone would leave it locked and the child waiting for ever.
            fcntl.flock(held, fcntl.LOCK_UN)
