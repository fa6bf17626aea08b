"""The emulator answers JSON that follows a schema the prompt asks for, through the real SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from llm_pipelines.emulator import EmulatorConfig, in_process_client


class Verdict(BaseModel):
    label: Literal["billing", "shipping", "product"]
    score: int = Field(ge=1, le=10)
    confidence: float = Field(ge=0, le=1)
    flagged: bool
    tags: list[str] = Field(min_length=1, max_length=3)
    note: str = Field(max_length=40)


SYSTEM = (
    'Classify the message. Example answer: {"label": "billing"}. Return JSON following '
    f"this JSON schema: {json.dumps(Verdict.model_json_schema())}"
)


@pytest.fixture
def client(tmp_path: Path):
    return in_process_client(EmulatorConfig(state_dir=str(tmp_path)))


def ask(client, text: str, max_tokens: int = 200, system: str = SYSTEM):
    return client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=max_tokens,
        system=system,
        messages=[{"role": "user", "content": text}],
    )


def test_schema_in_the_prompt_gets_valid_json_every_time(client) -> None:
    labels = set()
    for n in range(30):
        message = ask(client, f"ticket {n}: where is my order?")
        verdict = Verdict.model_validate_json(message.content[0].text)
        labels.add(verdict.label)
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == -(-len(message.content[0].text) // 4)
    assert len(labels) > 1, "values are drawn per request, not fixed"


def test_answers_are_deterministic_and_prefer_the_option_the_input_mentions(client) -> None:
    first = ask(client, "my shipping is late, order 12")
    again = ask(client, "my shipping is late, order 12")
    assert first.content[0].text == again.content[0].text
    for n in range(10):
        verdict = Verdict.model_validate_json(ask(client, f"shipping problem #{n}").content[0].text)
        assert verdict.label == "shipping"


def test_max_tokens_cuts_the_json_short_like_a_real_model(client) -> None:
    message = ask(client, "refund please", max_tokens=8)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 8
    with pytest.raises(ValueError, match="JSON"):
        Verdict.model_validate_json(message.content[0].text)


def test_prompts_without_a_schema_get_prose(client) -> None:
    plain = ask(client, "describe a lamp", system="Write product copy. Mention JSON never.")
    assert not plain.content[0].text.lstrip().startswith("{")
    no_json_word = ask(
        client, "x", system=f"Schema: {json.dumps(Verdict.model_json_schema())} (answer in prose)"
    )
    assert not no_json_word.content[0].text.startswith("{")
