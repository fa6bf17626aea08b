"""Code-location benchmark: what loading the definitions costs over a bare ``import dagster``.

Run: ``uv run python benchmarks/code_location.py [--runs 5] [--top 12]``. Times, in fresh
interpreters of this venv and alternating so machine load hits each alike:

* ``import dagster`` (the floor every Dagster process pays),
* ``import llm_pipelines.definitions`` (what a run's worker process and a reload pay to load
  the code location before any step runs),
* ``dagster definitions validate`` on ``workspace.yaml`` (the CLI's start, the load and the
  validation),
* the same command on an empty ``Definitions()``: the CLI's own cost (it imports sqlalchemy,
  alembic, grpc, ... beyond ``import dagster``), which no code location can avoid,

then prints the medians, each one's difference to ``import dagster`` (the target: at most
2 s) and the ratios, what this project's code location adds to the CLI's own cost, and the
largest cumulative imports of ``python -X importtime`` under the definitions. Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).with_name("dagster"))
EMPTY_DEFINITIONS = "import dagster as dg\n\ndefs = dg.Definitions()\n"
TARGET_OVER_DAGSTER_S = 2.0
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def wall_time(command: list[str]) -> float:
    """Seconds one run of ``command`` takes, start to exit; raises if it fails."""
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def top_imports(count: int) -> list[tuple[str, float]]:
    """The packages (top-level names) that cost the most to import, cumulative seconds."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import llm_pipelines.definitions"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    cumulative: dict[str, float] = {}
    for line in run.stderr.splitlines():
        if (match := _IMPORTTIME.match(line)) and "." not in match.group(4):
            name = match.group(4)
            cumulative[name] = max(cumulative.get(name, 0.0), int(match.group(2)) / 1e6)
    return sorted(cumulative.items(), key=lambda item: -item[1])[:count]


def main(argv: list[str] | None = None) -> int:
    """Time the three commands alternately and print the figures; last line JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--top", type=int, default=12, help="importtime entries shown")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="llm-pipelines-code-location-") as folder:
        empty = Path(folder) / "empty_definitions.py"
        empty.write_text(EMPTY_DEFINITIONS)
        commands = {
            "import_dagster": [sys.executable, "-c", "import dagster"],
            "import_definitions": [sys.executable, "-c", "import llm_pipelines.definitions"],
            "definitions_validate": [DAGSTER, "definitions", "validate", "-w", "workspace.yaml"],
            "empty_validate": [DAGSTER, "definitions", "validate", "-f", str(empty)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(wall_time(command))
    median = {name: round(statistics.median(runs), 2) for name, runs in times.items()}
    floor = median["import_dagster"]
    summary: dict[str, object] = {"runs": args.runs, "median_s": median}
    for name in ("import_definitions", "definitions_validate", "empty_validate"):
        over = round(median[name] - floor, 2)
        summary[f"{name}_over_dagster_s"] = over
        summary[f"{name}_ratio"] = round(median[name] / floor, 2)
        verdict = "within" if over <= TARGET_OVER_DAGSTER_S else "OVER"
        print(
            f"{name:22} median {median[name]:6.2f} s  (+{over:.2f} s over import dagster, "
            f"x{median[name] / floor:.2f}; {verdict} the {TARGET_OVER_DAGSTER_S:.0f} s target)"
        )
    print(f"{'import_dagster':22} median {floor:6.2f} s")
    ours = round(median["definitions_validate"] - median["empty_validate"], 2)
    summary["definitions_validate_over_empty_s"] = ours
    print(f"this code location adds {ours:.2f} s to validating an empty Definitions()")
    print("all runs (s):", {name: [round(t, 2) for t in runs] for name, runs in times.items()})
    print("largest cumulative imports under llm_pipelines.definitions (-X importtime, s):")
    top = top_imports(args.top)
    for name, seconds in top:
        print(f"  {seconds:6.2f}  {name}")
    summary["importtime_top_s"] = dict(top)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
