"""Intake: validation reasons, deduplication by task_id, nothing dropped silently."""

from __future__ import annotations

import orjson
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_pipelines.intake import ingest_partition, parse_line
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA, EVENTS, LANDING
from llm_pipelines.tasks import LLMTask, content_task_id

GOOD = {
    "task_type": "ticket_triage",
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "my order is late"}],
}


def test_reasons_name_the_field_and_the_problem() -> None:
    cases = {
        b'{"task_type": ': "not valid JSON",
        b"[1, 2]": "expected a JSON object, got list",
        orjson.dumps({**GOOD, "max_tokens": -1}): "max_tokens: must be 0 or more",
        orjson.dumps({**GOOD, "temperature": 0.2}): (
            "temperature: removed from the Messages API in version 2026-10-21"
        ),
        orjson.dumps({**GOOD, "messages": [{"role": "user", "content": ""}]}): (
            "messages.0.content: must not be empty"
        ),
        orjson.dumps(
            {k: v for k, v in GOOD.items() if k != "messages"}
        ): "messages: required field missing",
        orjson.dumps({**GOOD, "task_id": "has spaces"}): "task_id: String should match pattern",
        orjson.dumps(
            {**GOOD, "model": "gpt-4o"}
        ): "model: 'gpt-4o' is not a model the pipeline can serve and price",
        orjson.dumps({**GOOD, "messages": []}): "messages: must hold at least one message",
        orjson.dumps({**GOOD, "surprise": 1}): "surprise: unknown field",
    }
    for line, expected in cases.items():
        row, reason = parse_line(line)
        assert row is None, line
        assert reason is not None and expected in reason, (line, reason)


def test_task_id_is_the_key_or_a_content_hash() -> None:
    row, _ = parse_line(orjson.dumps({**GOOD, "task_id": "order-42"}))
    assert row is not None and row["task_id"] == "order-42"
    row, _ = parse_line(orjson.dumps(GOOD))
    assert row is not None
    request = LLMTask.model_validate(GOOD).request_params()
    assert row["task_id"] == content_task_id(
        "ticket_triage", orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
    )
    # Key order in the landing line does not change the identity.
    reordered, _ = parse_line(orjson.dumps(dict(reversed(list(GOOD.items())))))
    assert reordered is not None and reordered["task_id"] == row["task_id"]


def test_partition_intake_dedupes_and_dead_letters(lake: Lake, day: str) -> None:
    landing = LandingZone(lake)
    landing.append([GOOD, {**GOOD, "task_id": "k1"}, "not json at all"], partition=day)
    landing.append([GOOD, {**GOOD, "task_id": "k1"}, {**GOOD, "max_tokens": -1}], partition=day)
    stats = ingest_partition(lake, day)
    assert (stats.lines, stats.valid, stats.duplicates, stats.invalid) == (6, 2, 2, 2)
    events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
    assert sorted(events["task_id"].to_pylist())[0] == "k1"
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert dead.num_rows == 2
    assert set(dead["stage"].to_pylist()) == {"intake"}
    assert "not json at all" in dead["payload"].to_pylist()
    assert all(":" in source for source in dead["source"].to_pylist())

    # Re-running replaces, never doubles.
    again = ingest_partition(lake, day)
    assert again.valid == 2
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert dead.num_rows == 2
    assert pc.count_distinct(dead["source"]).as_py() == 2


def test_flush_id_makes_a_retried_flush_idempotent(lake: Lake, day: str) -> None:
    landing = LandingZone(lake)
    first = landing.append([GOOD], partition=day, flush_id="producer-7")
    second = landing.append([GOOD], partition=day, flush_id="producer-7")
    assert first == second
    assert ingest_partition(lake, day).lines == 1


def test_pieces_of_a_landing_file_add_up_to_the_whole_file(tmp_path, day: str, monkeypatch) -> None:
    """Whole files parsed here, small pieces parsed here, and small pieces shared with a
    worker process all give the same events, dead letters and counts."""
    import llm_pipelines.intake as intake
    from llm_pipelines.demo.workload import generate_tasks

    items = list(generate_tasks(day, 300, seed=4, invalid_share=0.05, duplicate_share=0.08))
    outcomes = []
    for piece_bytes, workers in ((intake.PIECE_BYTES, 0), (16 * 1024, 0), (16 * 1024, 1)):
        # Small pieces: several per file, so line numbers and repeats cross piece borders.
        monkeypatch.setattr(intake, "PIECE_BYTES", piece_bytes)
        lake = Lake(str(tmp_path / f"lake-{piece_bytes}-{workers}"))
        LandingZone(lake).append(items, partition=day, flush_id="f", flush_rows=120)
        stats = ingest_partition(lake, day, workers=workers)
        events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
        dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
        outcomes.append((stats, events, dead.drop_columns(["dead_lettered_at"])))
    (whole, whole_events, whole_dead), *in_pieces = outcomes
    assert whole.duplicates > 0 and whole.invalid > 0
    assert whole.lines == 300 and whole.landing_files == 3
    for pieces, piece_events, piece_dead in in_pieces:
        assert whole == pieces
        assert piece_events.equals(whole_events)
        assert piece_dead.equals(whole_dead)
    # Each event's source is the landing file and line it came from.
    landing = {
        path.rsplit("/", 1)[1]: lake.read_bytes(path).split(b"\n")
        for path in lake.files(LANDING, day, ".jsonl")
    }
    for source, task_id in zip(
        whole_events["source"].to_pylist(), whole_events["task_id"].to_pylist(), strict=True
    ):
        name, number = source.rsplit(":", 1)
        row, _ = parse_line(landing[name][int(number) - 1])
        assert row is not None and row["task_id"] == task_id, source


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from([b"", b"a", b"bb", b"{}", b"x" * 40, b" \r"]), min_size=0, max_size=30
    ),
    final_newline=st.booleans(),
    piece_bytes=st.integers(min_value=1, max_value=64),
)
def test_pieces_planned_from_sizes_hold_every_line_once(
    tmp_path_factory, lines: list[bytes], final_newline: bool, piece_bytes: int
) -> None:
    """Ranges cut anywhere (inside a line, on a newline, past a line longer than a piece):
    each line is read whole, once, by the piece its first byte falls in."""
    from llm_pipelines.intake import plan_pieces, read_piece

    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    lake = Lake(str(tmp_path_factory.mktemp("lake")))
    path = lake.path(LANDING, "2026-11-23", "f.jsonl")
    lake.write_bytes(path, data)
    read: list[bytes] = []
    with lake.fs.open(path, "rb") as handle:
        for piece in plan_pieces(lake, [path], piece_bytes):
            read.extend(bytes(line) for line in read_piece(handle, piece))
    expected = data.split(b"\n")
    if expected[-1] == b"":  # a final newline ends the last line; it starts none
        expected.pop()
    assert read == expected


def test_a_worker_that_fails_stops_intake_and_publishes_nothing(
    lake: Lake, day: str, monkeypatch
) -> None:
    """A piece that cannot be read in the worker (every piece goes to the worker): its error,
    with the worker's traceback, stops the partition; no events file appears."""
    import llm_pipelines.intake as intake
    from llm_pipelines.worker_pool import WorkerError

    LandingZone(lake).append([GOOD] * 50, partition=day, flush_id="f")
    [path] = lake.files(LANDING, day, ".jsonl")
    pieces = intake.plan_pieces(lake, [path], 512)
    gone = [intake.PieceRange(p.path + ".gone", p.start, p.end) for p in pieces[:2]]
    monkeypatch.setattr(intake, "plan_pieces", lambda *_: gone + pieces[2:])
    monkeypatch.setattr(intake, "PARSE_HERE", False)
    with pytest.raises(WorkerError, match="FileNotFoundError"):
        ingest_partition(lake, day, workers=1)
    assert lake.files(EVENTS, day, ".parquet") == []


def test_blank_lines_are_skipped_and_windows_line_ends_are_taken(lake: Lake, day: str) -> None:
    """Lines are decoded straight from the landing bytes: what JSON calls whitespace is fine."""
    good = orjson.dumps({**GOOD, "task_id": "crlf"})
    lines = [good + b"\r", b"", b"  \t ", b"  " + orjson.dumps(GOOD) + b" ", b"\r", b"{oops}\r"]
    lake.write_bytes(lake.path(LANDING, day, "raw.jsonl"), b"\n".join(lines) + b"\n")
    stats = ingest_partition(lake, day)
    assert (stats.lines, stats.valid, stats.invalid) == (3, 2, 1)
    assert stats.landing_bytes == sum(len(line) + 1 for line in lines if line.strip())
    events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
    assert events["source"].to_pylist() == ["raw.jsonl:1", "raw.jsonl:4"]
    row, _ = parse_line(good)
    assert row is not None and events["request"][0].as_py() == row["request"]
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert dead["source"].to_pylist() == ["raw.jsonl:6"]
    assert dead["payload"].to_pylist() == ["{oops}"]


def test_a_line_nested_past_any_parser_limit_is_a_dead_letter(lake: Lake, day: str) -> None:
    """Depth is the model's to reject: it must not stop the partition."""
    deep = b'{"task_type":"t","model":"claude-haiku-4-5","max_tokens":1,"deadline":'
    lines = [deep + b"[" * depth + b"]" * depth + b"}" for depth in (10, 1_000, 5_000)]
    lake.write_bytes(
        lake.path(LANDING, day, "deep.jsonl"), b"\n".join([*lines, orjson.dumps(GOOD)])
    )
    stats = ingest_partition(lake, day)
    assert (stats.lines, stats.valid, stats.invalid) == (4, 1, 3)


def test_repeats_are_dropped_and_conflicts_dead_lettered_wherever_they_fall_in_a_piece(
    tmp_path, day: str, monkeypatch
) -> None:
    """First occurrences kept in landing order: repeats first or last in a piece, in runs,
    and a piece of nothing but repeats. A repeat word for word is dropped; one with the same
    id and other content is dead-lettered with a reason naming where the task first landed."""
    import llm_pipelines.intake as intake

    ids = ["a", "b", "a", "a", "c", "b", "d", "d", "e", "a", "b", "c", "d", "e", "f", "f"]
    conflicting = {3, 7, 13}  # positions whose line changes the task first landed
    firsts = {task_id: n for n, task_id in reversed(list(enumerate(ids)))}
    lines = []
    for n, task_id in enumerate(ids):
        line = {**GOOD, "task_id": task_id, "metadata": {"n": str(firsts[task_id])}}
        if n in conflicting:
            line["max_tokens"] = 99 + n
        lines.append(line)
    monkeypatch.setattr(intake, "PIECE_BYTES", len(orjson.dumps(lines[0])) * 3)  # ~3 lines
    lake = Lake(str(tmp_path / "lake"))
    LandingZone(lake).append(lines, partition=day, flush_id="f")
    monkeypatch.setattr(intake, "PARSE_HERE", False)  # every piece through the worker
    stats = ingest_partition(lake, day, workers=1)
    assert stats.worker_pieces >= 5
    events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
    assert events["task_id"].to_pylist() == ["a", "b", "c", "d", "e", "f"]
    # Each kept row is the first occurrence, whole.
    assert [orjson.loads(r)["max_tokens"] for r in events["request"].to_pylist()] == [50] * 6
    kept = [int(orjson.loads(m)["n"]) for m in events["metadata"].to_pylist()]
    assert kept == [0, 1, 4, 6, 8, 14]
    assert (stats.lines, stats.valid, stats.duplicates, stats.conflicts) == (16, 6, 7, 3)
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert dead["stage"].to_pylist() == ["intake"] * 3
    assert dead["task_id"].to_pylist() == ["a", "d", "e"]
    [name] = {source.rsplit(":", 1)[0] for source in dead["source"].to_pylist()}
    assert dead["source"].to_pylist() == [f"{name}:{n + 1}" for n in sorted(conflicting)]
    for reason, task_id in zip(dead["reason"].to_pylist(), ["a", "d", "e"], strict=True):
        assert reason.startswith(
            f"task_id '{task_id}' conflicts with the task first landed at "
            f"{name}:{firsts[task_id] + 1}: same id, different max_tokens, request;"
        ), reason
    # The payload is the conflicting line itself, ready to be fixed and landed again.
    payloads = [orjson.loads(p) for p in dead["payload"].to_pylist()]
    assert [p["max_tokens"] for p in payloads] == [99 + n for n in sorted(conflicting)]
    assert LLMTask.model_validate(payloads[0]).fields()[:4] == (
        "a",
        "ticket_triage",
        GOOD["model"],
        102,
    )


def test_a_worker_answers_a_piece_of_thousands_of_bad_lines_and_1_mb_lines_whole(
    tmp_path, day: str
) -> None:
    """At realistic size, with the worker engaged: a piece whose dead letters add up to
    megabytes (thousands of invalid lines, some of 1 MB) comes back whole from the worker,
    the same as parsed here. (Its answer once crossed an unbuffered pipe read with
    ``pickle.load``, which took a short read for the end of the data: any answer over the
    pipe's 64 KB crashed the partition, and a retry crashed again.)"""
    big = "x" * (1 << 20)
    items: list = []
    for n in range(4_000):
        if n % 1_000 == 0:  # 1 MB lines: a valid one, and one rejected with its payload
            items.append(
                {**GOOD, "task_id": f"big-{n}", "messages": [{"role": "user", "content": big}]}
            )
            items.append({**GOOD, "max_tokens": "many", "system": big})
        items.append({**GOOD, "task_id": f"ok-{n}"})
        items.append({**GOOD, "max_tokens": -1, "metadata": {"pad": "p" * 1000, "n": str(n)}})
    outcomes = []
    for workers in (0, 1):
        lake = Lake(str(tmp_path / f"lake-{workers}"))
        LandingZone(lake).append(items, partition=day, flush_id="f")
        stats = ingest_partition(lake, day, workers=workers)
        dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
        events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
        outcomes.append((stats, events, dead.drop_columns(["dead_lettered_at"])))
    (here, here_events, here_dead), (worker, worker_events, worker_dead) = outcomes
    assert here.invalid == 4_004 and here.valid == 4_004
    assert sum(len(p) for p in here_dead["payload"].to_pylist()) > 8 << 20
    assert worker == here
    assert worker_events.equals(here_events)
    assert worker_dead.equals(here_dead)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("requires_realtime", "yes", "requires_realtime: Input should be a valid boolean"),
        ("requires_realtime", 1, "requires_realtime: Input should be a valid boolean"),
        ("max_tokens", "100", "max_tokens: Input should be a valid integer"),
        ("max_tokens", 100.0, "max_tokens: Input should be a valid integer"),
        ("priority", True, "priority: Input should be a valid integer"),
        ("priority", "1", "priority: Input should be a valid integer"),
        ("task_type", 7, "task_type: Input should be a valid string"),
    ],
)
def test_producer_fields_are_taken_as_typed_never_coerced(
    field: str, value: object, expected: str
) -> None:
    """A producer that writes ``"requires_realtime": "yes"`` has a bug: it must hear of it,
    not have its task routed real-time on a guess."""
    row, reason = parse_line(orjson.dumps({**GOOD, field: value}))
    assert row is None
    assert reason is not None and reason.startswith(expected), reason


def test_invalid_utf8_is_named_as_such_with_where(lake: Lake, day: str) -> None:
    line = orjson.dumps({**GOOD, "task_id": "bad-bytes"}).replace(b"late", b"l\xe9te")
    row, reason = parse_line(line)
    assert row is None
    at = line.index(b"\xe9")
    assert reason == f"not valid UTF-8: byte 0xe9 at offset {at} (invalid continuation byte)"
    row, reason = parse_line(b"\xff" + line)
    assert reason == "not valid UTF-8: byte 0xff at offset 0 (invalid start byte)"


def test_a_byte_order_mark_at_the_start_of_a_landing_file_is_taken(lake: Lake, day: str) -> None:
    """Spreadsheet exports start files with a UTF-8 BOM: the first line is not lost to it."""
    lines = [orjson.dumps({**GOOD, "task_id": f"bom-{n}"}) for n in range(3)]
    lake.write_bytes(
        lake.path(LANDING, day, "export.jsonl"), b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n"
    )
    stats = ingest_partition(lake, day)
    assert (stats.lines, stats.valid, stats.invalid) == (3, 3, 0)
    events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
    assert events["source"].to_pylist() == [f"export.jsonl:{n}" for n in (1, 2, 3)]
    # Only at the start of a file: elsewhere it is not whitespace, and the line is rejected.
    row, reason = parse_line(b"\xef\xbb\xbf" + lines[0])
    assert row is None and reason


def test_unknown_models_and_max_tokens_over_a_models_ceiling_are_dead_lettered(
    lake: Lake, day: str
) -> None:
    """The catalog's ceilings apply on both parsing paths (the common shape and the rest)."""
    models = {"claude-haiku-4-5": 64_000, "claude-haiku-4-5-20251001": 64_000, "free": None}
    lines = [
        {**GOOD, "task_id": "at-limit", "max_tokens": 64_000},
        {**GOOD, "task_id": "over", "max_tokens": 64_001},
        {
            **GOOD,
            "task_id": "over-blocks",
            "max_tokens": 100_000,
            "system": [{"type": "text", "text": "be brief"}],
        },
        {**GOOD, "task_id": "dated", "model": "claude-haiku-4-5-20251001"},
        {**GOOD, "task_id": "no-ceiling", "model": "free", "max_tokens": 128_000},
        {**GOOD, "task_id": "unknown", "model": "claude-3-5-haiku"},
    ]
    LandingZone(lake).append(lines, partition=day, flush_id="f")
    stats = ingest_partition(lake, day, models=models)
    events = lake.read_table(lake.files(EVENTS, day, ".parquet"))
    assert events["task_id"].to_pylist() == ["at-limit", "dated", "no-ceiling"]
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    reasons = dead["reason"].to_pylist()
    assert stats.invalid == 3
    assert reasons[0] == (
        "max_tokens: 64,001 is above claude-haiku-4-5's limit of 64,000 output tokens "
        "(the provider's Models API)"
    )
    assert reasons[1].startswith("max_tokens: 100,000 is above claude-haiku-4-5's limit")
    assert reasons[2].startswith("model: 'claude-3-5-haiku' is not a model the pipeline can")
