"""The lake and its datasets."""

from llm_pipelines.storage.datasets import BatchManifest, read_manifests, write_manifest
from llm_pipelines.storage.lake import Lake
from llm_pipelines.storage.landing import LandingZone

__all__ = ["BatchManifest", "Lake", "LandingZone", "read_manifests", "write_manifest"]
