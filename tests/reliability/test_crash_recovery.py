"""Kill the process at each dangerous moment; the next run reconciles, nothing lost or doubled.

Each crash is a real process death: the work runs in a forked child armed with a crash
point (``os._exit`` there: no ``finally``, no flush), against a lake, an emulator and a
Dagster instance on disk. The parent then does what Dagster would (mark the dead run failed,
tick the sensor, retry the run) and checks the lake.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson

from llm_pipelines.crashpoints import CRASH_ENV, CRASH_EXIT_CODE, run_in_child
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.dispatch.ledger import Ledger, partition_ledger
from llm_pipelines.dispatch.state import PartitionState, live_dead_letters, sidecar_ids
from llm_pipelines.dispatch.submit import ORPHAN_SAMPLE
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.sensors.daemon import InProcessDaemon
from llm_pipelines.sensors.daemon import disk_instance as on_disk
from llm_pipelines.storage import LandingZone, read_manifests
from llm_pipelines.storage.datasets import ORPHANS, RESULTS, RESULTS_SCHEMA, TASKS

WORKER = Path(__file__).with_name("crash_worker.py")


def _land(resources, day: str, count: int) -> None:
    LandingZone(resources["lake"].lake()).append(generate_tasks(day, count, seed=21), partition=day)


def _cycle(daemon: InProcessDaemon, day: str) -> bool:
    return daemon.run("daily_batch_cycle", day).success


def _emulator(resources) -> EmulatorStore:
    return EmulatorStore(EmulatorConfig(state_dir=resources["anthropic"].emulator_dir))


def _assert_clean(resources, day: str, ledger: Ledger) -> None:
    """Every task ended once (answered or dead-lettered); no result row twice."""
    lake = resources["lake"].lake()
    assert ledger.holds and ledger.open == 0, ledger
    assert ledger.succeeded + ledger.dead_lettered == ledger.valid, ledger
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), ["task_id"], RESULTS_SCHEMA)
    counts = collections.Counter(results["task_id"].to_pylist())
    assert len(counts) == ledger.succeeded and max(counts.values()) == 1


def _unnamed_batches(resources, day: str) -> set[str]:
    """Provider batches no manifest names: the duplicates a crash may leave."""
    named = {m.provider_batch_id for m in read_manifests(resources["lake"].lake(), day)}
    return set(_emulator(resources).list_batch_ids()) - named


def _sends(resources) -> collections.Counter[str]:
    """How often the provider was asked each task, over every batch it holds."""
    store = _emulator(resources)
    return collections.Counter(
        task_id for batch in store.list_batch_ids() for task_id in store.request_ids(batch)
    )


def _named_sends(resources, day: str) -> collections.Counter[str]:
    """How often the lake's manifests say each task was sent (once per attempt)."""
    lake = resources["lake"].lake()
    pairs = PartitionState.load(lake, day).submitted_pairs(lake)
    return collections.Counter(pairs["task_id"].to_pylist())


def _crash_leaving_an_intent(resources, instance, day: str, tasks: int, point: str):
    """Land ``tasks``, kill the daily cycle at a submission crash point; the daemon (over
    the Definitions on ``resources``) and the one intent it left."""
    daemon = InProcessDaemon.for_resources(resources, instance)
    _land(resources, day, tasks)
    crashed = run_in_child(lambda: _cycle(daemon, day), crash_at=point)
    assert crashed.crashed
    assert daemon.fail_dead_runs("worker killed") == 1
    [intent] = [m for m in read_manifests(resources["lake"].lake(), day) if not m.provider_batch_id]
    return daemon, intent


def _adoption_record(resources, day: str, orphan: str, intent_key: str) -> None:
    """Assert the orphan was adopted for the intent: its manifest and its orphans/ record."""
    lake = resources["lake"].lake()
    [adopted] = [m for m in read_manifests(lake, day) if m.key == intent_key]
    assert adopted.provider_batch_id == orphan and "adopted" in (adopted.note or "")
    [record_path] = lake.files(ORPHANS, day, ".json")
    record = lake.read_json(record_path)
    assert (record["provider_batch_id"], record["intent_key"]) == (orphan, intent_key)
    assert record["action"] == "adopted"


def test_crash_after_batch_created_adopts_the_ended_orphan_and_sends_nothing_twice(
    day: str, disk_instance: dg.DagsterInstance, fault_resources
) -> None:
    # No batch latency: the duplicate has ended by the time the run is retried.
    resources = fault_resources()
    lake = resources["lake"].lake()
    daemon, intent = _crash_leaving_an_intent(
        resources, disk_instance, day, 120, "submit.after_create:2"
    )
    intent_tasks = sorted(sidecar_ids(lake, intent).to_pylist())
    [orphan] = _unnamed_batches(resources, day)

    assert _cycle(daemon, day)
    assert _cycle(daemon, day), "a later pass, before collection, sends nothing"
    _assert_clean(resources, day, daemon.drive(day))
    twice = sorted(task for task, sent in _sends(resources).items() if sent > 1)
    assert not twice, f"{len(twice)} tasks sent to the provider twice"
    assert not _unnamed_batches(resources, day)
    # The orphan's answers are the results of the intent's tasks.
    results = lake.read_table(
        lake.files(RESULTS, day, ".parquet"), ["task_id", "batch_id"], RESULTS_SCHEMA
    ).to_pylist()
    assert sorted(r["task_id"] for r in results if r["batch_id"] == orphan) == intent_tasks
    _adoption_record(resources, day, orphan, intent.key)


def test_an_adopted_orphan_retries_only_the_requests_it_did_not_answer(
    day: str, disk_instance: dg.DagsterInstance, fault_resources
) -> None:
    # Draws are per (batch id, custom_id) and batch ids are random: rates high enough that a
    # batch of 40 mixes outcomes (all-or-none has odds below 1e-7).
    plan = "seed: 7\nerrored_rate: 0.4\nnon_retryable_error_share: 0.5\nexpired_rate: 0.1\n"
    resources = fault_resources(plan + "canceled_rate: 0.05\n")
    lake = resources["lake"].lake()
    daemon, intent = _crash_leaving_an_intent(
        resources, disk_instance, day, 120, "submit.after_create:2"
    )
    [orphan] = _unnamed_batches(resources, day)
    assert _cycle(daemon, day)
    _adoption_record(resources, day, orphan, intent.key)

    lines = _emulator(resources).results_path(orphan).read_bytes().splitlines()
    outcomes = {line["custom_id"]: line["result"] for line in map(orjson.loads, lines)}
    invalid = {
        task
        for task, result in outcomes.items()
        if result["type"] == "errored"
        and result["error"]["error"]["type"] == "invalid_request_error"
    }
    unanswered = {task for task, result in outcomes.items() if result["type"] != "succeeded"}
    retried = unanswered - invalid
    assert retried and len(unanswered) < len(outcomes), "the plan must mix outcomes"

    _assert_clean(resources, day, daemon.drive(day))
    # Sent once per attempt the lake records, and nothing else: no unnamed batch, no re-pack.
    assert _sends(resources) == _named_sends(resources, day)
    state = PartitionState.load(lake, day)
    pairs = state.submitted_pairs(lake).to_pylist()
    assert {
        p["task_id"] for p in pairs if p["task_id"] in outcomes and p["attempt"] == 2
    } == retried
    firsts = collections.Counter(p["task_id"] for p in pairs if p["attempt"] == 1)
    assert all(firsts[task] == 1 for task in outcomes)
    dead = live_dead_letters(lake, state, ["source"]).to_pylist()
    assert {d["task_id"] for d in dead if d["source"] == orphan} == invalid


def test_an_adopted_orphan_ignores_results_for_tasks_it_was_not_given(
    day: str, disk_instance: dg.DagsterInstance, fault_resources
) -> None:
    # One batch for the whole day, large enough that its last line is past the sample.
    resources = fault_resources(max_batch_requests=1000)
    lake = resources["lake"].lake()
    daemon, intent = _crash_leaving_an_intent(
        resources, disk_instance, day, 150, "submit.after_intent"
    )
    ids = sidecar_ids(lake, intent).to_pylist()
    assert len(ids) > ORPHAN_SAMPLE + 1
    tasks = lake.read_table([lake.path(TASKS, day, TASKS_FILE)], ["task_id", "request"])
    requests = dict(zip(tasks["task_id"].to_pylist(), tasks["request"].to_pylist(), strict=True))
    # The batch the call made, except that its last request is not one of the intent's.
    *kept, left_out = ids
    body = [{"custom_id": task, "params": orjson.loads(requests[task])} for task in kept]
    body.append({"custom_id": "stranger-1", "params": orjson.loads(requests[left_out])})
    orphan = resources["anthropic"].provider().create_batch(orjson.dumps({"requests": body}))

    assert _cycle(daemon, day)
    _adoption_record(resources, day, orphan.id, intent.key)
    _assert_clean(resources, day, daemon.drive(day))
    results = lake.read_table(
        lake.files(RESULTS, day, ".parquet"), ["task_id", "attempt"], RESULTS_SCHEMA
    ).to_pylist()
    attempts = {r["task_id"]: r["attempt"] for r in results}
    assert "stranger-1" not in attempts, "a line for a task the batch was not given is ignored"
    assert {attempts[task] for task in kept} == {1}
    assert attempts[left_out] == 2, "the intent's task the batch did not answer is retried"


def test_crash_after_batch_created_costs_one_batch_found_and_canceled(
    day: str, disk_instance: dg.DagsterInstance, fault_resources
) -> None:
    # Batches stay in progress for an hour of emulated time, so the duplicate is running.
    resources = fault_resources(emulator_batch_latency_s=3600)
    lake = resources["lake"].lake()
    daemon, _ = _crash_leaving_an_intent(
        resources, disk_instance, day, 120, "submit.after_create:2"
    )
    [orphan] = _unnamed_batches(resources, day)

    # The run retry reconciles: the duplicate is found by listing and canceled.
    assert _cycle(daemon, day)
    [record_path] = lake.files(ORPHANS, day, ".json")
    record = lake.read_json(record_path)
    assert record["provider_batch_id"] == orphan and record["action"] == "canceled"
    assert _emulator(resources).get_batch(orphan).processing_status in ("canceling", "ended")
    assert all(m.provider_batch_id for m in read_manifests(lake, day))

    _emulator(resources).advance_clock(3600)
    _assert_clean(resources, day, daemon.drive(day))
    assert _unnamed_batches(resources, day) == {orphan}, "at most one duplicate batch per crash"


def test_crash_after_results_read_before_written_collects_again_once(
    day: str, disk_instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources()
    daemon = start_day(resources, disk_instance, 100, seed=21)
    first = daemon.new_run_requests(daemon.evaluate())
    assert len(first) > 1

    crashed = run_in_child(
        lambda: daemon.launch(first[0]).success,
        crash_at="collect.after_read",
    )
    assert crashed.crashed
    daemon.fail_dead_runs("worker killed")
    lake = resources["lake"].lake()
    assert partition_ledger(lake, day).in_flight > 0, "nothing of that batch was published"

    again = daemon.evaluate().run_requests
    assert f"{first[0].run_key}-retry1" in {r.run_key for r in again}
    _assert_clean(resources, day, daemon.drive(day))


def test_crash_after_results_written_needs_no_second_collection(
    day: str, disk_instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources("seed: 4\nerrored_rate: 0.2\n")
    daemon = start_day(resources, disk_instance, 100, seed=21)
    [request, *_] = daemon.new_run_requests(daemon.evaluate())
    crashed = run_in_child(
        lambda: daemon.launch(request).success,
        crash_at="collect.after_results",
    )
    assert crashed.crashed
    daemon.fail_dead_runs("worker killed")
    # Published means collected: its retries and dead letters count, the manifest is stale.
    ledger = partition_ledger(resources["lake"].lake(), day)
    assert ledger.holds, ledger
    again = daemon.evaluate().run_requests
    assert not [r for r in again if r.tags.get("llm_pipelines/work") == request.run_key]
    _assert_clean(resources, day, daemon.drive(day))


def test_crash_mid_sensor_tick_and_between_launches(
    day: str, disk_instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources()
    daemon = start_day(resources, disk_instance, 140, seed=21)

    # The sensor dies half-way through deciding: nothing was launched, nothing written.
    mid_tick = run_in_child(
        lambda: len(daemon.evaluate().run_requests),
        crash_at="sensor.mid_tick:2",
    )
    assert mid_tick.crashed

    # The daemon dies between launching the first run of a tick and the rest.
    def launch_one_then_die() -> None:
        requests = daemon.new_run_requests(daemon.evaluate())
        assert daemon.launch(requests[0]).success
        os._exit(CRASH_EXIT_CODE)

    assert run_in_child(launch_one_then_die).crashed
    _assert_clean(resources, day, daemon.drive(day))
    runs = disk_instance.get_runs(dg.RunsFilter(job_name="collect_batch_results"))
    per_batch = collections.Counter(r.tags["llm_pipelines/batch_id"] for r in runs)
    assert set(per_batch.values()) == {1}, "every batch collected by exactly one run"


def test_crash_hook_kills_a_fresh_interpreter_through_the_environment(
    tmp_path: Path, day: str, fault_resources
) -> None:
    resources = fault_resources()
    lake = resources["lake"].lake()
    _land(resources, day, 60)
    settings = {
        "lake": resources["lake"].url,
        "emulator": resources["anthropic"].emulator_dir,
        "day": day,
        "home": str(tmp_path / "dagster_home"),
    }
    env = {**os.environ, CRASH_ENV: "submit.after_intent"}
    worker = subprocess.run(
        [sys.executable, str(WORKER), orjson.dumps(settings).decode()],
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert worker.returncode == CRASH_EXIT_CODE, worker.stderr.decode()[-2000:]
    [intent] = read_manifests(lake, day)
    assert intent.provider_batch_id is None and not _emulator(resources).list_batch_ids()

    with on_disk(settings["home"]) as instance:
        daemon = InProcessDaemon.for_resources(resources, instance)
        daemon.fail_dead_runs("worker killed")
        assert _cycle(daemon, day)
        _assert_clean(resources, day, daemon.drive(day))
    assert not lake.files(ORPHANS, day) and not _unnamed_batches(resources, day)


def test_a_batch_that_only_looks_like_the_lost_one_is_left_alone(
    day: str, disk_instance: dg.DagsterInstance, fault_resources
) -> None:
    resources = fault_resources(max_batch_requests=1000)
    lake = resources["lake"].lake()
    daemon, intent = _crash_leaving_an_intent(
        resources, disk_instance, day, 60, "submit.after_intent"
    )
    # Someone else's batch: same size, created just after the intent, other custom_ids.
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    }
    body = {
        "requests": [
            {"custom_id": f"other-{i}", "params": params} for i in range(intent.request_count)
        ]
    }
    stranger = resources["anthropic"].provider().create_batch(orjson.dumps(body))
    assert _cycle(daemon, day)
    assert not lake.files(ORPHANS, day), "its results name other tasks: not our orphan"
    assert _emulator(resources).get_batch(stranger.id).counts["succeeded"] == intent.request_count
    _assert_clean(resources, day, daemon.drive(day))
