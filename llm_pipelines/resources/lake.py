"""The lake as a Dagster resource."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import Field

from llm_pipelines.storage.lake import Lake

DEFAULT_LAKE_URL = ".llm_pipelines/lake"


def default_lake_url() -> str:
    """``LLM_PIPELINES_LAKE`` if set, else a folder under the working directory."""
    return os.environ.get("LLM_PIPELINES_LAKE", DEFAULT_LAKE_URL)


class LakeResource(dg.ConfigurableResource):
    """Where every dataset lives: a local folder or ``s3://bucket/prefix`` (via s3fs)."""

    url: str = Field(default_factory=default_lake_url, description="Root URL of the lake.")
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint (MinIO, moto, ...); AWS credentials come from "
        "the usual environment variables.",
    )

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for the lake's filesystem."""
        if self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}

    def lake(self) -> Lake:
        """An open :class:`~llm_pipelines.storage.lake.Lake`."""
        return Lake(self.url, self.storage_options())
