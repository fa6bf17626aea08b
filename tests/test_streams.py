"""The streaming helpers every hot loop relies on."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from llm_pipelines.streams import iter_lines, line_blocks, paused_gc, prefetched, runs


def test_lines_survive_any_cut_of_the_stream() -> None:
    data = b"alpha\n\nbeta\r\ngamma-without-newline"
    for size in range(1, len(data) + 1):
        blocks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(iter_lines(blocks)) == data.split(b"\n")
        assert b"".join(line_blocks(blocks, 7)) == data


def test_prefetched_yields_everything_in_order_and_closes_an_abandoned_source() -> None:
    closed = threading.Event()

    def source():  # type: ignore[no-untyped-def]
        try:
            yield from range(100)
        finally:
            closed.set()

    assert list(prefetched(iter(range(50)))) == list(range(50))
    stream = prefetched(source())
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(5)


def test_paused_gc_restores_the_collector_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # nested: the inner pause must not re-enable it
            pass
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_runs_cover_every_row_once_each_run_one_key() -> None:
    keys = np.array([3, 3, 5, 5, 5, 7, 3])
    assert list(runs(keys)) == [(0, 2, 3), (2, 5, 5), (5, 6, 7), (6, 7, 3)]
    assert list(runs(np.array([4]))) == [(0, 1, 4)]
    assert list(runs(np.array([], dtype=np.int64))) == []
