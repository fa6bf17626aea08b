"""The partitioning every dataset shares: one UTC day."""

import dagster as dg

DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")
"""One partition per UTC day, up to yesterday: the nightly cycle processes the day just ended."""

OWNERS = ["team:llm-platform"]


def run_owner(context: dg.OpExecutionContext) -> str:
    """Who holds a partition lease: the Dagster run, readable in the error of a second run."""
    return f"run {context.run_id}"
