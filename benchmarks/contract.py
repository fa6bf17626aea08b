"""How long the request contract takes per request: a plain text request, and a rich one.

    uv run python benchmarks/contract.py [--rounds 20000]

Intake validates every task's request with :func:`llm_pipelines.providers.contract.request_problem`
(a million tasks must validate in seconds), so the figure that matters is microseconds per
request once the contract is built. The build itself (once per process) is reported too.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from llm_pipelines.providers.contract import contracts, request_problem
from llm_pipelines.providers.fast_contract import fast_request_ok, generated

PNG_1x1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000000000005000157a2b4e60000000049454e44ae426082"
    )
).decode()


def plain_request(i: int) -> dict[str, Any]:
    """A one-turn text request, as most batch tasks are."""
    return {
        "model": "claude-haiku-5-5",
        "max_tokens": 400,
        "system": "You summarise support tickets in one sentence.",
        "messages": [{"role": "user", "content": f"Summarise ticket {i}: the parcel is late."}],
    }


def rich_request(i: int) -> dict[str, Any]:
    """Tools, an image, a PDF and a text document, cache breakpoints, thinking, output config."""
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 4000,
        "system": [
            {
                "type": "text",
                "text": "You are a claims assistant.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1x1},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBERi0xLjQK",
                        },
                        "title": "claim.pdf",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "Policy text.",
                        },
                        "citations": {"enabled": True},
                    },
                    {"type": "text", "text": f"Assess claim {i}."},
                ],
            }
        ],
        "tools": [
            {
                "name": "record_decision",
                "description": "Record the decision on a claim.",
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "claim_id": {"type": "string"},
                        "approved": {"type": "boolean"},
                        "amount": {"type": "number", "minimum": 0},
                    },
                    "required": ["claim_id", "approved"],
                },
            }
        ],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "medium"},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "batch"},
    }


def per_request_us(make: Any, rounds: int, check: Any = request_problem) -> float:
    """Mean microseconds of one ``check`` call (the contract's ``request_problem``, or the
    mirror's ``fast_request_ok``) over ``rounds`` distinct requests, each accepted."""
    requests = [make(i) for i in range(rounds)]
    started = time.perf_counter()
    for request in requests:
        verdict = check(request)
        assert verdict in (None, True), verdict
    return (time.perf_counter() - started) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    contracts()
    built = time.perf_counter() - started
    started = time.perf_counter()
    generated()
    figures = {
        "build_s": round(built, 3),
        "mirror_build_s": round(time.perf_counter() - started, 3),
        "plain_us": round(per_request_us(plain_request, args.rounds), 2),
        "rich_us": round(per_request_us(rich_request, args.rounds), 2),
        # The msgspec mirror intake tries first (types only; the value rules are apart).
        "mirror_plain_us": round(per_request_us(plain_request, args.rounds, fast_request_ok), 2),
        "mirror_rich_us": round(per_request_us(rich_request, args.rounds, fast_request_ok), 2),
        "rounds": args.rounds,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
