"""llm_pipelines."""
