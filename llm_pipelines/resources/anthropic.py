"""The Anthropic API (or the embedded emulator) as a Dagster resource."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from llm_pipelines.providers.anthropic import ANTHROPIC_LIMITS, AnthropicProvider
from llm_pipelines.providers.base import BatchLimits

if TYPE_CHECKING:  # the SDK (seconds to import) loads when a run asks for a client
    import anthropic

DEFAULT_EMULATOR_DIR = ".llm_pipelines/emulator"


def default_emulator_dir() -> str:
    """``LLM_PIPELINES_EMULATOR_DIR`` if set, else a folder under the working directory."""
    return os.environ.get("LLM_PIPELINES_EMULATOR_DIR", DEFAULT_EMULATOR_DIR)


class AnthropicResource(dg.ConfigurableResource):
    """An ``anthropic.Anthropic`` client: the real API when a key is set, else the emulator.

    Set the key with ``dg.EnvVar("ANTHROPIC_API_KEY")`` so it never appears in run config;
    it is never logged or written. ``base_url`` points at an emulator served over HTTP
    (``llm-pipelines emulator serve``); without key and URL, the emulator runs in process.
    """

    api_key: str | None = Field(default=None, description="Anthropic API key (use EnvVar).")
    base_url: str | None = Field(default=None, description="API base URL override.")
    emulator_dir: str = Field(
        default_factory=default_emulator_dir,
        description="State folder of the in-process emulator, shared by every process.",
    )
    emulator_batch_latency_s: float = Field(
        default=0.0, ge=0, description="How long emulated batches stay in progress."
    )
    emulator_faults: str = Field(
        default="",
        description="Faults the in-process emulator injects: a preset (flaky, chaos) or a "
        "YAML fault plan path; empty injects none.",
    )
    max_batch_requests: int = Field(
        default=ANTHROPIC_LIMITS.max_requests,
        ge=1,
        le=ANTHROPIC_LIMITS.max_requests,
        description="Requests per batch at most (lower it to spread work over more batches).",
    )
    max_retries: int = Field(default=5, ge=0, description="SDK retries on 429/5xx/529.")
    timeout_s: float = Field(default=600.0, gt=0, description="Per-request timeout.")
    realtime_concurrency: int = Field(
        default=8, ge=1, le=256, description="Synchronous calls in flight at once."
    )

    @property
    def mode(self) -> str:
        """``anthropic-api``, ``emulator-http`` or ``emulator-in-process``."""
        if self.api_key:
            return "anthropic-api"
        return "emulator-http" if self.base_url else "emulator-in-process"

    def client(self, log: logging.Logger | None = None) -> anthropic.Anthropic:
        """A configured SDK client; says in the log which backend it talks to."""
        import anthropic

        log = log or dg.get_dagster_logger()
        options = {"max_retries": self.max_retries, "timeout": self.timeout_s}
        if self.api_key:
            log.info(
                "LLM backend: Anthropic API%s", f" at {self.base_url}" if self.base_url else ""
            )
            return anthropic.Anthropic(api_key=self.api_key, base_url=self.base_url, **options)
        if self.base_url:
            log.info(
                "LLM backend: Anthropic emulator over HTTP at %s (no API key set)", self.base_url
            )
            return anthropic.Anthropic(api_key="emulator", base_url=self.base_url, **options)
        from llm_pipelines.emulator import EmulatorConfig, FaultPlan, in_process_client

        log.info(
            "LLM backend: embedded Anthropic emulator, in process, state in %s "
            "(set ANTHROPIC_API_KEY to use the real API)",
            self.emulator_dir,
        )
        config = EmulatorConfig(
            state_dir=self.emulator_dir,
            batch_latency_s=self.emulator_batch_latency_s,
            faults=FaultPlan.resolve(self.emulator_faults),
        )
        return in_process_client(config, **options)

    def provider(self, log: logging.Logger | None = None) -> AnthropicProvider:
        """The batch provider adapter over :meth:`client`."""
        limits = BatchLimits(self.max_batch_requests, ANTHROPIC_LIMITS.max_bytes)
        return AnthropicProvider(self.client(log), limits)
