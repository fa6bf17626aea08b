"""llm_pipelines."""

import warnings

# Partitioned asset checks (conservation, budget, dead-letter rate per day) are a Dagster
# preview feature we rely on knowingly; its notice would greet every run and benchmark.
# Only that notice is silenced; any other warning still shows.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=Warning
)
