"""``llm-pipelines``: the demo and the emulator server."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_pipelines.emulator import EmulatorConfig


def _demo(args: argparse.Namespace) -> int:
    # Imported here: Dagster is slow to import, and `emulator serve` does not need it.
    from llm_pipelines.demo.runner import DemoOptions, default_day, run_demo

    lake = args.lake or tempfile.mkdtemp(prefix="llm-pipelines-demo-")
    emulator_dir = args.emulator_dir or str(Path(lake) / "_emulator")
    options = DemoOptions(
        lake_url=lake,
        emulator_dir=emulator_dir,
        day=args.date or default_day(),
        events=args.events,
        seed=args.seed,
        batch_latency_s=args.batch_latency,
        faults=args.faults or "",
        progress=(lambda message: print(f"· {message}", file=sys.stderr)),
    )
    summary = run_demo(options)
    report = summary.pop("report_markdown")
    if not args.json:
        print()
        print(f"llm_pipelines demo — {summary['date']} — lake: {summary['lake']}")
        print(
            f"  events landed {summary['events']:,}: valid {summary['valid']:,}, "
            f"dead-lettered {summary['dead_lettered']:,}"
        )
        print(
            f"  routed: {summary['batched']:,} to Message Batches ({summary['batches']} batches),"
            f" {summary['realtime']:,} real-time"
        )
        print(
            f"  succeeded {summary['succeeded']:,}, lost {summary['lost']}, "
            f"duplicated {summary['duplicated']}"
        )
        if args.faults:
            print(
                f"  faults injected ({args.faults}): {summary['faults_injected']:,}; "
                f"retried requests still waiting: {summary['retrying']}"
            )
        print(
            f"  cost ${summary['cost_usd']:.4f} vs ${summary['all_sync_cost_usd']:.4f} all-sync: "
            f"saved {summary['savings_pct']:.1f}%  ({summary['elapsed_s']}s)"
        )
        print()
        print(report)
    else:
        print(json.dumps(summary))
    return 0 if summary["lost"] == 0 and summary["duplicated"] == 0 else 1


def emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    """The emulator ``emulator serve`` runs, from its command-line options."""
    from llm_pipelines.emulator import EmulatorConfig, FaultPlan

    return EmulatorConfig(
        state_dir=args.state_dir,
        batch_latency_s=args.batch_latency,
        faults=FaultPlan.resolve(args.faults),
    )


def _serve(args: argparse.Namespace) -> int:
    from llm_pipelines.emulator import serve

    config = emulator_config(args)
    print(f"Anthropic emulator on http://{args.host}:{args.port} (state in {args.state_dir})")
    if config.faults.active:
        print(f"  injecting faults: {config.faults.model_dump_json(exclude_defaults=True)}")
    print(
        f"  point the SDK or the pipeline at it: ANTHROPIC_BASE_URL=http://{args.host}:{args.port}"
    )
    serve(config, host=args.host, port=args.port)
    return 0


FAULTS_HELP = (
    "inject API faults: a preset (none, flaky, chaos) or a YAML fault plan "
    "(fields of llm_pipelines.emulator.FaultPlan)"
)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="llm-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run one realistic day end to end on the emulator")
    demo.add_argument("--lake", help="lake root (folder or s3://...); default: a new temp folder")
    demo.add_argument("--date", help="partition day YYYY-MM-DD; default: yesterday (UTC)")
    demo.add_argument("--events", type=int, default=2_000, help="events to land (default 2000)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed")
    demo.add_argument("--batch-latency", type=float, default=2.0, help="emulated batch seconds")
    demo.add_argument("--emulator-dir", help="emulator state folder; default: <lake>/_emulator")
    demo.add_argument("--json", action="store_true", help="print one JSON summary line")
    demo.add_argument("--faults", help=FAULTS_HELP)
    demo.set_defaults(handler=_demo)

    emulator = commands.add_parser("emulator", help="the Anthropic-compatible emulator")
    emulator_commands = emulator.add_subparsers(dest="emulator_command", required=True)
    serve = emulator_commands.add_parser("serve", help="serve the emulator over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--state-dir", default=".llm_pipelines/emulator")
    serve.add_argument("--batch-latency", type=float, default=5.0)
    serve.add_argument("--faults", help=FAULTS_HELP)
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llm-pipelines`` command."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
