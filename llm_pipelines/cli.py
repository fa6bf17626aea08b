"""``llm-pipelines``: the demo, the three workloads, and the emulator server."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_pipelines.emulator import EmulatorConfig


def _quiet_dagster_warnings() -> None:
    # Preview/beta notices about Dagster APIs are for developers, not for someone running a demo.
    import dagster as dg

    for category in (dg.PreviewWarning, dg.BetaWarning):
        warnings.filterwarnings("ignore", category=category)


def _demo(args: argparse.Namespace) -> int:
    # Imported here: Dagster is slow to import, and `emulator serve` does not need it.
    _quiet_dagster_warnings()
    from llm_pipelines.demo.progress import Reporter
    from llm_pipelines.demo.runner import DemoOptions, default_day, run_demo
    from llm_pipelines.routing.policy import PolicyError, load_policy

    if args.policy:
        # A bad policy file is a usage error: say so before landing anything.
        try:
            load_policy(args.policy)
        except PolicyError as error:
            print(f"llm-pipelines demo: {error}", file=sys.stderr)
            return 2
    lake = args.lake or tempfile.mkdtemp(prefix="llm-pipelines-demo-")
    emulator_dir = args.emulator_dir or str(Path(lake) / "_emulator")
    options = DemoOptions(
        lake_url=lake,
        emulator_dir=emulator_dir,
        day=args.date or default_day(),
        events=args.events,
        seed=args.seed,
        batch_latency_s=args.batch_latency,
        policy_path=args.policy,
        faults=args.faults or "",
        reporter=Reporter(),
    )
    summary = run_demo(options)
    report = summary.pop("report_markdown")
    if not args.json:
        print()
        print(f"llm_pipelines demo — {summary['date']} — lake: {summary['lake']}")
        print(
            f"  events landed {summary['events']:,}: valid {summary['valid']:,}, "
            f"rejected at intake {summary['rejected_at_intake']:,}, "
            f"repeats of a task already landed {summary['duplicates_dropped']:,}"
        )
        print(
            f"  routed: {summary['batched']:,} to Message Batches "
            f"({summary['batches']} batch(es) collected by this run),"
            f" {summary['realtime']:,} real-time, {summary['reused']:,} reusing an answer"
        )
        print(
            f"  succeeded {summary['succeeded']:,}, dead-lettered after intake "
            f"{summary['dead_lettered'] - summary['rejected_at_intake']:,}, "
            f"lost {summary['lost']}, duplicated {summary['duplicated']}"
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
        print(
            "  saved by lever (% of all-sync): "
            + ", ".join(
                f"{lever} {summary[f'savings_pct_{lever}']:.1f}"
                for lever in ("batching", "caching", "downshifting", "reuse")
            )
        )
        print()
        print(report)
    else:
        print(json.dumps(summary))
    return 0 if summary["lost"] == 0 and summary["duplicated"] == 0 else 1


def _workloads(args: argparse.Namespace) -> int:
    _quiet_dagster_warnings()
    from llm_pipelines.demo.progress import Reporter
    from llm_pipelines.demo.runner import default_day
    from llm_pipelines.demo.workloads_run import WorkloadsOptions, run_workloads

    lake = args.lake or tempfile.mkdtemp(prefix="llm-pipelines-workloads-")
    summary = run_workloads(
        WorkloadsOptions(
            lake_url=lake,
            emulator_dir=args.emulator_dir or str(Path(lake) / "_emulator"),
            day=args.date or default_day(),
            products=args.products,
            tickets=args.tickets,
            batch_latency_s=args.batch_latency,
            reporter=Reporter(),
        )
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print()
        print(f"llm_pipelines workloads — {summary['date']} — lake: {summary['lake']}")
        for workload in ("catalog", "support_analytics"):
            counts = ", ".join(f"{k} {v}" for k, v in summary[workload].items())
            print(f"  {workload}: {counts}")
        for model, score in summary["offline_eval"].items():
            print(
                f"  offline_eval {model}: mean score {score['mean_score']}, pass rate "
                f"{score['pass_rate_pct']}% ({score['scored']}/{score['questions']} scored)"
            )
        print(
            f"  {summary['batches']} batches, lost {summary['lost']}; cost "
            f"${summary['cost_usd']:.4f} vs ${summary['all_sync_cost_usd']:.4f} all-sync: "
            f"saved {summary['savings_pct']:.1f}%  ({summary['elapsed_s']}s)"
        )
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
        f"  point the pipeline at it: ANTHROPIC_BASE_URL=http://{args.host}:{args.port}\n"
        f"  your own SDK code: anthropic.Anthropic(base_url=..., api_key='emulator') "
        "(any key; the SDK will not send none)"
    )
    serve(config, host=args.host, port=args.port)
    return 0


def _day_on_emulator_options(command: argparse.ArgumentParser) -> None:
    """The options of every command that runs one day on the emulator."""
    command.add_argument(
        "--lake", help="lake root (folder or s3://...); default: a new temp folder"
    )
    command.add_argument("--date", help="partition day YYYY-MM-DD; default: yesterday (UTC)")
    command.add_argument("--batch-latency", type=float, default=2.0, help="emulated batch seconds")
    command.add_argument("--emulator-dir", help="emulator state folder; default: <lake>/_emulator")
    command.add_argument("--json", action="store_true", help="print one JSON summary line")


FAULTS_HELP = (
    "inject API faults: a preset (none, flaky, chaos) or a YAML fault plan "
    "(fields of llm_pipelines.emulator.FaultPlan)"
)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="llm-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run one realistic day end to end on the emulator")
    _day_on_emulator_options(demo)
    demo.add_argument("--events", type=int, default=2_000, help="events to land (default 2000)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed")
    demo.add_argument(
        "--policy", help="routing policy YAML; default: $LLM_PIPELINES_ROUTING_POLICY or shipped"
    )
    demo.add_argument("--faults", help=FAULTS_HELP)
    demo.set_defaults(handler=_demo)

    runs = commands.add_parser(
        "workloads",
        help=(
            "run the nightly batch cycle for catalog, support analytics and offline eval "
            "(for yesterday's partition, as the schedules do, unless --date)"
        ),
    )
    _day_on_emulator_options(runs)
    runs.add_argument("--products", type=int, default=40, help="catalog products (default 40)")
    runs.add_argument("--tickets", type=int, default=60, help="support tickets (default 60)")
    runs.set_defaults(handler=_workloads)

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
