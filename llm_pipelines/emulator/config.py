"""How the emulator behaves: where state lives, how long batches take, which faults it injects."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal[
    "messages",
    "count_tokens",
    "models_list",
    "models_retrieve",
    "batches_create",
    "batches_retrieve",
    "batches_list",
    "batches_cancel",
    "batches_results",
    "batches_delete",
]
"""The API operations a fault plan can target."""

ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)

Rate = float
RareStop = Literal["pause_turn", "refusal", "model_context_window_exceeded"]
"""Stop reasons a model gives rarely, which tests ask for through the plan."""


class FaultPlan(BaseModel):
    """Seeded, configurable faults, so retries and recovery can be exercised on purpose.

    HTTP faults answer a call with 429, 500 or 529 before it does anything; the SDK sees what
    it would see from the real API (``retry-after-ms`` included) and retries on its own.
    Request outcomes are drawn per (batch, custom_id), so a retried request in a new batch
    gets a fresh draw. Every draw comes from ``seed``: the same plan replays the same faults.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    http_error_rate: Rate = Field(default=0.0, ge=0, le=1, description="Every endpoint.")
    endpoint_error_rates: dict[Endpoint, Rate] = Field(
        default_factory=dict, description="Per endpoint, overriding http_error_rate."
    )
    http_statuses: list[Literal[429, 500, 529]] = Field(default_factory=lambda: [429, 500, 529])
    retry_after_ms: int = Field(
        default=20, ge=0, description="Sent with every injected fault; 0 sends no header."
    )
    errored_rate: Rate = Field(default=0.0, ge=0, le=1, description="Requests that error.")
    non_retryable_error_share: Rate = Field(
        default=0.5, ge=0, le=1, description="Of errored requests: invalid_request_error."
    )
    expired_rate: Rate = Field(default=0.0, ge=0, le=1)
    canceled_rate: Rate = Field(default=0.0, ge=0, le=1)
    stalled_batch_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="Batches that never finish before they expire."
    )
    truncated_results_rate: Rate = Field(
        default=0.0, ge=0, le=1, description="Result streams cut off part-way through."
    )
    stop_reason_rates: dict[RareStop, Rate] = Field(
        default_factory=dict,
        description="Answers (batch or not) that stop for a rare reason, by reason.",
    )

    def error_rate(self, endpoint: Endpoint) -> float:
        """The HTTP fault rate of one endpoint."""
        return self.endpoint_error_rates.get(endpoint, self.http_error_rate)

    def rare_stop(self, roll: float) -> RareStop | None:
        """The rare stop reason a draw of ``roll`` (uniform in [0, 1)) lands on, if any."""
        for reason, rate in self.stop_reason_rates.items():
            if roll < rate:
                return reason
            roll -= rate
        return None

    @property
    def active(self) -> bool:
        """Whether the plan injects anything at all."""
        return any(
            (
                self.http_error_rate,
                any(self.endpoint_error_rates.values()),
                self.errored_rate,
                self.expired_rate,
                self.canceled_rate,
                self.stalled_batch_rate,
                self.truncated_results_rate,
                any(self.stop_reason_rates.values()),
            )
        )

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        """Read a plan from a YAML (or JSON) file."""
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    @classmethod
    def resolve(cls, spec: str | None) -> FaultPlan:
        """A plan from a preset name (see :data:`FAULT_PRESETS`) or a YAML file path.

        Empty or ``None`` means no faults. Used by ``--faults`` on the demo and on
        ``emulator serve``, and by the resource's ``emulator_faults``.
        """
        if not spec:
            return cls()
        if spec in FAULT_PRESETS:
            return FAULT_PRESETS[spec].model_copy(deep=True)
        path = Path(spec)
        if path.is_file():
            return cls.load(path)
        raise ValueError(
            f"--faults {spec!r}: neither a preset ({', '.join(FAULT_PRESETS)}) nor a YAML file"
        )


FAULT_PRESETS: dict[str, FaultPlan] = {
    "none": FaultPlan(),
    # What a bad day on a real API looks like: every kind of fault, all recoverable quickly.
    "flaky": FaultPlan(
        seed=1,
        http_error_rate=0.05,
        errored_rate=0.03,
        non_retryable_error_share=0.2,
        expired_rate=0.01,
        canceled_rate=0.01,
        truncated_results_rate=0.1,
        retry_after_ms=5,
    ),
    # Stress: many faults of every kind, including batches that stall until canceled or expired.
    "chaos": FaultPlan(
        seed=2,
        http_error_rate=0.2,
        errored_rate=0.12,
        non_retryable_error_share=0.25,
        expired_rate=0.06,
        canceled_rate=0.06,
        stalled_batch_rate=0.05,
        truncated_results_rate=0.2,
        retry_after_ms=1,
    ),
}
"""Named fault plans for ``--faults``: ``none``, ``flaky`` (the demo's) and ``chaos``."""


class EmulatorConfig(BaseModel):
    """Everything that shapes one emulator instance.

    State lives in ``state_dir``, so an in-process emulator in the webserver, the daemon and
    each run worker, or one served over HTTP, all see the same batches.
    """

    model_config = ConfigDict(extra="forbid")

    state_dir: str
    batch_latency_s: float = Field(
        default=0.0, ge=0, description="How long a batch stays in_progress before it ends."
    )
    faults: FaultPlan = Field(default_factory=FaultPlan)

    @property
    def root(self) -> Path:
        """The state folder as a path."""
        return Path(self.state_dir)
