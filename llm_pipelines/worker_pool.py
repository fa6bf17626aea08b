"""Worker processes for a CPU-bound stage, beside the process that runs it.

Python runs one thread at a time, so a stage whose work is Python (intake's validation, say)
uses one core however many the machine has. A :class:`WorkerProcess` is a fresh interpreter
that imports only what its function needs (not Dagster, nor the caller's ``__main__``, as
``multiprocessing``'s spawn would), runs the calls it is sent in order, and answers each.

An answer is an Arrow record batch and a picklable value. The batch comes back through
a file in shared memory (``/dev/shm``) that the caller maps: one copy, made by the worker,
where a pipe would copy it three times. Messages on the pipes are framed (a length, then the
pickle), and a frame is read until it is whole: a pipe holds 64 KB, so a larger message
arrives in several reads, and an unbuffered read returns whatever has arrived so far.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from llm_pipelines.storage.scratch import scratch_dir

SPOOL_MIN_FREE_BYTES = 1 << 30
"""Shared memory holds results when it has this much free; otherwise the temporary folder."""
STOP_TIMEOUT_S = 10.0

Work = Callable[..., tuple[pa.RecordBatch, Any]]
FRAME_HEADER = struct.Struct("!Q")
"""A message's length in bytes, before the message."""


class WorkerError(RuntimeError):
    """A worker process failed: its traceback, or how it ended."""


def available_cores() -> int:
    """The cores this process may run on."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class WorkerProcess:
    """One worker process: ``function(*args)`` sent in, results received in the order sent.

    Use as a context manager: leaving it stops the worker (kills it on an error) and removes
    its spool. A failure in the worker is raised by :meth:`receive` as :class:`WorkerError`
    with the worker's traceback.
    """

    def __init__(self) -> None:
        self.pending = 0
        """Calls sent whose result has not been received yet."""
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch = contextlib.ExitStack()

    def __enter__(self) -> WorkerProcess:
        spool = self._scratch.enter_context(
            scratch_dir("llm-pipelines-worker-", SPOOL_MIN_FREE_BYTES)
        )
        try:
            self._process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", __name__, spool],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,  # unbuffered: no answer waits in a buffer that ready() cannot see
                env={**os.environ, "PYTHONPATH": _import_path()},
            )
        except BaseException:
            self._scratch.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        process, self._process = self._process, None
        try:
            if process is not None:
                _stop(process, kill=kind is not None)
        finally:
            self._scratch.close()

    def send(self, function: Work, args: tuple[Any, ...]) -> None:
        """Queue ``function(*args)`` (a module-level function, picklable arguments)."""
        process = self._running()
        try:
            write_message(process.stdin, (function, args))
        except BrokenPipeError:
            raise WorkerError(
                f"worker process {process.pid} ended (exit code {process.wait()}); "
                "its error, if any, is on standard error"
            ) from None
        self.pending += 1

    def ready(self) -> bool:
        """Whether an answer has (begun to) come back: :meth:`receive` would not wait long."""
        process = self._running()
        assert process.stdout is not None
        return self.pending > 0 and bool(select.select([process.stdout], [], [], 0)[0])

    def receive(self) -> tuple[pa.RecordBatch, Any]:
        """The result of the oldest call not yet received (blocks until it is ready)."""
        process = self._running()
        assert process.stdout is not None
        try:
            status, payload = read_message(process.stdout)
        except EOFError as ended:
            raise WorkerError(
                f"worker process {process.pid} ended {ended} (exit code {process.wait()}); "
                "its error, if any, is on standard error"
            ) from None
        self.pending -= 1
        if status != "ok":
            raise WorkerError(f"worker process {process.pid} failed:\n{payload}")
        path, extra = payload
        # The batch's buffers keep the mapping alive after the file is gone.
        batch = pa.ipc.open_file(pa.memory_map(path)).get_batch(0)
        os.unlink(path)
        return batch, extra

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the worker process is not running: use it in a `with` block")
        return self._process


def _stop(process: subprocess.Popen[bytes], *, kill: bool) -> None:
    if kill:
        process.kill()
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()  # end of input: the worker returns
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def write_message(stream: IO[bytes] | None, message: object) -> None:
    """Send ``message`` whole: its length, then its pickle (a raw pipe may take part of a
    write, so the rest is written until none is left)."""
    assert stream is not None
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(FRAME_HEADER.pack(len(data)) + data)
    while view:
        written = stream.write(view)
        view = view[written if written is not None else len(view) :]
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next message :func:`write_message` sent, read until whole.

    Raises EOFError, saying how far it got, if the stream ends first.
    """
    (size,) = FRAME_HEADER.unpack(_read_exactly(stream, FRAME_HEADER.size, "without answering"))
    data = _read_exactly(stream, size, "in the middle of an answer")
    return pickle.loads(data)  # noqa: S301 - our own process, on a pipe only it holds


def _read_exactly(stream: IO[bytes], size: int, ended: str) -> bytearray:
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        count = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not count:
            raise EOFError(ended if got == 0 else f"{ended} ({got:,} of {size:,} bytes came)")
        got += count
    return data


def _import_path() -> str:
    """PYTHONPATH for a worker: where this package is, then the caller's own."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


def serve(spool: str, requests: IO[bytes], replies: IO[bytes]) -> None:
    """A worker's loop: ``(function, args)`` in, ``("ok", (batch file, value))`` or
    ``("error", traceback)`` out, until its input ends."""
    for number in range(sys.maxsize):
        try:
            function, args = read_message(requests)
        except EOFError:
            return
        try:
            batch, extra = function(*args)
            path = os.path.join(spool, f"{os.getpid()}-{number}.arrow")
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
            reply: tuple[str, Any] = ("ok", (path, extra))
        except Exception:
            reply = ("error", traceback.format_exc())
        write_message(replies, reply)


if __name__ == "__main__":
    # The protocol owns standard output: anything the work prints goes to standard error.
    replies, sys.stdout = sys.stdout.buffer, sys.stderr
    serve(sys.argv[1], sys.stdin.buffer, replies)
