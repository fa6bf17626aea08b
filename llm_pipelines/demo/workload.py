"""A realistic, deterministic day of LLM tasks for the demo, the tests and the benchmarks."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

WORDS = [
    "order",
    "delivery",
    "refund",
    "account",
    "invoice",
    "shipping",
    "warranty",
    "battery",
    "screen",
    "cable",
    "charger",
    "size",
    "colour",
    "fabric",
    "cotton",
    "leather",
    "steel",
    "bottle",
    "kettle",
    "blender",
    "lamp",
    "desk",
    "chair",
    "sofa",
    "mattress",
    "pillow",
    "blanket",
    "towel",
    "jacket",
    "boots",
    "sneakers",
    "backpack",
    "wallet",
    "watch",
    "headphones",
    "speaker",
    "camera",
    "lens",
    "tripod",
    "monitor",
    "keyboard",
    "mouse",
    "router",
    "printer",
    "tablet",
    "phone",
    "case",
    "late",
    "broken",
    "missing",
    "damaged",
    "wrong",
    "great",
    "excellent",
    "slow",
    "fast",
    "helpful",
    "confusing",
    "expensive",
    "cheap",
    "quality",
]

STYLE_GUIDE = (
    "You write product descriptions for an online store. House style: second person, present "
    "tense, no superlatives without evidence, lead with the customer's benefit, then materials "
    "and dimensions, then care instructions. Never invent certifications. Keep to 80-120 words. "
)
TICKET_PROMPT = (
    "You triage customer support tickets. Return JSON with fields category (billing, shipping, "
    "product, account, other), sentiment (-1..1), urgency (low, medium, high) and a one-line "
    "summary. Be strict about categories; do not add fields. "
)
JUDGE_PROMPT = (
    "You are an exacting evaluator. Score the answer to the question from 1 to 10 for "
    "correctness and completeness, then justify the score in two sentences. "
)

REFERENCE_REREQUEST_SHARE = 0.04
"""In the reference workload: share of tasks asking again for a request already made."""
REFERENCE_EVAL_DOCUMENTS = 24
"""In the reference workload: reference documents the offline evaluations are judged on."""

# (task type, share of the day, model, max_tokens): about 85% batchable work.
MIX: tuple[tuple[str, float, str, int], ...] = (
    ("catalog_description", 0.35, "claude-haiku-5-5", 300),
    ("ticket_triage", 0.30, "claude-sonnet-5-5", 200),
    ("offline_eval", 0.20, "claude-sonnet-5-5", 400),
    ("chat_reply", 0.10, "claude-sonnet-5-5", 500),
    ("agent_assist", 0.05, "claude-sonnet-5-5", 300),
)


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def _long_prefix(base: str, rng: random.Random, chars: int) -> str:
    # Shared prefixes must be long enough to be worth caching; pad with fixed reference text.
    return base + "Reference notes: " + _text(rng, chars)


def _pick(rng: random.Random) -> tuple[str, str, int]:
    roll = rng.random()
    for task_type, share, model, max_tokens in MIX:
        if roll < share:
            return task_type, model, max_tokens
        roll -= share
    return MIX[-1][0], MIX[-1][2], MIX[-1][3]


def generate_tasks(
    day: date | str,
    count: int,
    *,
    seed: int = 7,
    invalid_share: float = 0.01,
    duplicate_share: float = 0.02,
    rerequest_share: float = 0.0,
    eval_documents: int = 0,
) -> Iterator[dict[str, Any] | str]:
    """Yield ``count`` landing items for ``day``: valid tasks, some repeats and some bad input.

    Repeats carry the same ``task_id`` (an at-least-once producer retrying); bad input is a
    mix of broken JSON and tasks that break the schema, each of which intake must
    dead-letter with a reason. Two options shape the reference workload (both off by
    default, so the default stream is unchanged):

    - ``rerequest_share``: tasks that ask again for a request already made, under a new
      ``task_id`` (another producer wanting the same description): reuse candidates.
    - ``eval_documents``: offline evaluations judge an answer against one of this many
      reference documents (about 2,000 tokens each), sent as the leading block of the user
      turn, so evaluations of the same document share a cacheable prefix.
    """
    rng = random.Random(f"{seed}-{day}")
    prefixes = {
        "catalog_description": _long_prefix(STYLE_GUIDE, random.Random(1), 18_000),
        "ticket_triage": _long_prefix(TICKET_PROMPT, random.Random(2), 6_000),
        "offline_eval": _long_prefix(JUDGE_PROMPT, random.Random(3), 6_000),
    }
    documents = [
        _long_prefix(f"Reference document {n}. ", random.Random(100 + n), 8_000)
        for n in range(eval_documents)
    ]
    start = datetime.combine(date.fromisoformat(str(day)), time(0), tzinfo=UTC)
    recent: deque[dict[str, Any]] = deque(maxlen=50)
    for index in range(count):
        roll = rng.random()
        if roll < invalid_share:
            yield _invalid(rng, index)
            continue
        if roll < invalid_share + duplicate_share and recent:
            yield rng.choice(recent)
            continue
        if roll < invalid_share + duplicate_share + rerequest_share and recent:
            again = rng.choice(recent)
            yield {
                **again,
                "task_id": f"{again['task_type'][:4]}-{day}-{index:07d}",
                "metadata": {"producer": "demo-rerequest", "seq": str(index)},
            }
            continue
        task_type, model, max_tokens = _pick(rng)
        task: dict[str, Any] = {
            "task_id": f"{task_type[:4]}-{day}-{index:07d}",
            "task_type": task_type,
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": _text(rng, rng.randint(200, 3_000))}],
            "metadata": {"producer": "demo", "seq": str(index)},
        }
        if task_type in prefixes:
            task["system"] = prefixes[task_type]
        if task_type == "offline_eval" and documents:
            answer = task["messages"][0]["content"]
            task["messages"][0]["content"] = [
                {"type": "text", "text": rng.choice(documents)},
                {"type": "text", "text": answer},
            ]
        if task_type == "agent_assist":
            task["deadline"] = (start + timedelta(hours=rng.randint(1, 4))).isoformat()
            task["priority"] = rng.randint(0, 3)
        recent.append(task)
        yield task


def _invalid(rng: random.Random, index: int) -> dict[str, Any] | str:
    kind = index % 5
    if kind == 0:
        return '{"task_type": "catalog_description", "model": '  # truncated JSON
    if kind == 1:  # a producer still on the 2025 API: sampling parameters are gone
        return {
            "task_type": "ticket_triage",
            "model": "claude-sonnet-5-5",
            "max_tokens": 100,
            "temperature": 0.7,
            "messages": [{"role": "user", "content": "hello"}],
        }
    if kind == 2:
        return {"task_type": "offline_eval", "model": "claude-sonnet-5-5", "max_tokens": 100}
    if kind == 3:
        return {
            "task_id": "not a valid id!",
            "task_type": "chat_reply",
            "model": "claude-sonnet-5-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
        }
    return {
        "task_type": "chat_reply",
        "model": "gpt-unknown",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": _text(rng, 40)}],
    }
