"""JSON lines from a stream of byte blocks: one split per block, not one call per line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def iter_lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Every line of a byte stream, blank ones included, without their ``\\n``.

    Splitting whole blocks is several times cheaper per line than iterating a file object or
    an HTTP response line by line. A last line without a newline is still a line.
    """
    rest = b""
    for block in blocks:
        if not block:
            continue
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def read_blocks(handle: object, size: int) -> Iterator[bytes]:
    """``handle.read(size)`` until the end of the file."""
    read = handle.read  # type: ignore[attr-defined]
    while block := read(size):
        yield block


def line_blocks(blocks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a byte stream into blocks of whole lines of at least ``size`` bytes (but the last).

    For decoders that take many lines at once; a line longer than ``size`` stays whole.
    """
    pending: list[bytes] = []
    pending_bytes = 0
    for block in blocks:
        pending.append(block)
        pending_bytes += len(block)
        if pending_bytes < size:
            continue
        data = b"".join(pending)
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        rest = data[cut:]
        pending, pending_bytes = ([rest], len(rest)) if rest else ([], 0)
    data = b"".join(pending)
    if data.strip():
        yield data
