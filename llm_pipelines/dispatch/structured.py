"""Structured output: answers to requests that asked for JSON following a schema.

A request asks with ``output_config.format`` (``{"type": "json_schema", "schema": {...}}``);
the API then constrains the answer's text to that schema. A result row keeps the text as
``structured_output`` only once it is checked here: it parses as JSON and the schema accepts
it. Otherwise ``structured_output`` is null and ``structured_output_error`` says why (cut
short by ``max_tokens``, refused, not JSON, or where it breaks the schema), and the text stays
in ``output_text``: a consumer that reads ``structured_output`` never gets JSON it did not ask
for, and nothing the model said is lost.

Requests are read only for rows that may have asked (:func:`may_have_asked`): the API's
guarantee means an answer that ended normally with text that is not JSON did not.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

FORMAT_MARK = '"output_config"'
"""What a request that asks for a format contains, looked for before parsing it."""
_ENDED = ["end_turn", "stop_sequence", "max_tokens"]
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\r\n")] = True
_JSON_START = np.zeros(256, dtype=bool)
_JSON_START[list(b"{[")] = True
_LOOK_PAST = 64
"""Leading whitespace looked past, at most, to find where a text starts."""


def requested_schema(request: str | None) -> dict[str, Any] | None:
    """The JSON Schema a request's ``output_config.format`` asks the answer to follow."""
    if request is None or FORMAT_MARK not in request:  # most requests: no parse at all
        return None
    output_config = orjson.loads(request).get("output_config") or {}
    format_ = output_config.get("format") or {}
    schema = format_.get("schema") if format_.get("type") == "json_schema" else None
    return schema if isinstance(schema, dict) else None


def check_structured(
    text: str, stop_reason: str | None, schema: dict[str, Any]
) -> tuple[str | None, str | None]:
    """``(structured_output, structured_output_error)`` of one answer to a format request."""
    stopped = (
        "" if stop_reason in ("end_turn", "stop_sequence") else f" (stop_reason {stop_reason})"
    )
    try:
        # msgspec, not orjson: an integer past 64 bits stays an integer, as the schema sees it
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        return None, f"the answer is not JSON: {error}{stopped}"
    # jsonschema loads here, where a run checks an answer, not when the definitions load.
    from jsonschema import exceptions as schema_errors

    try:
        problem = schema_errors.best_match(_validator(orjson.dumps(schema)).iter_errors(value))
    except schema_errors.SchemaError as error:  # the API refuses such requests; to be sure
        return None, f"the requested schema is not a valid JSON Schema: {error.message}"
    if problem is not None:
        return None, f"the answer breaks the schema at {problem.json_path}: {problem.message}"
    return text, None


@lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Any:
    # Keyed by the schema's JSON: a day's format requests share a few schemas, and building
    # a validator costs far more than using one.
    from jsonschema import validators

    schema = orjson.loads(schema_json)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def structured_columns(
    texts: list[str], stop_reasons: list[str | None], requests: list[str | None]
) -> tuple[pa.Array, pa.Array]:
    """``structured_output`` and ``structured_output_error`` of answers to ``requests``."""
    outputs: list[str | None] = []
    errors: list[str | None] = []
    for text, stop_reason, request in zip(texts, stop_reasons, requests, strict=True):
        schema = requested_schema(request)
        output, error = (
            (None, None) if schema is None else check_structured(text, stop_reason, schema)
        )
        outputs.append(output)
        errors.append(error)
    return pa.array(outputs, pa.string()), pa.array(errors, pa.string())


def may_have_asked(output_text: pa.Array | pa.ChunkedArray, stop_reason: pa.Array) -> np.ndarray:
    """Rows whose request may have asked for a format, from the answers alone.

    Under a format the API's answer is JSON unless it was stopped early or refused: so an
    answer that ended (or ran out of tokens) with text that does not start like JSON did not
    ask, and its request need not be read. The rest (text that is empty or starts, past any
    whitespace, with a bracket; tool use, refusals, pauses) is checked against the request.
    """
    texts = (
        output_text.combine_chunks() if isinstance(output_text, pa.ChunkedArray) else output_text
    )
    # The first byte of each text, straight from arrow's buffers: no copy of the texts.
    _, offsets, data = texts.buffers()
    starts = np.frombuffer(offsets, dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    empty = starts[1:] <= starts[:-1]
    first = np.zeros(len(texts), dtype=np.uint8)
    if data is not None:
        first[~empty] = np.frombuffer(data, dtype=np.uint8)[starts[:-1][~empty]]
    maybe = empty | _JSON_START[first]
    spaced = np.flatnonzero(_SPACE[first])  # few: look past their leading whitespace
    if len(spaced):
        heads = pc.utf8_slice_codeunits(texts.take(pa.array(spaced)), 0, _LOOK_PAST)
        stripped = pc.utf8_ltrim_whitespace(heads)
        starts_like_json = pc.match_substring_regex(stripped, r"^[\[{]")
        maybe[spaced] = pc.or_(pc.equal(stripped, ""), starts_like_json).to_numpy(
            zero_copy_only=False
        )
    ended = pc.is_in(stop_reason, value_set=pa.array(_ENDED, pa.string()))
    return maybe | ~pc.fill_null(ended, False).to_numpy(zero_copy_only=False)
