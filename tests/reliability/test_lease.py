"""The partition lease: one holder at a time, on a local lake and on S3; crashes free it."""

from __future__ import annotations

import collections
import os
import threading
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

from llm_pipelines.crashpoints import CRASH_EXIT_CODE, paused_at, run_in_child
from llm_pipelines.definitions import build_definitions
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage import Lake, LandingZone, read_manifests
from llm_pipelines.storage.datasets import BATCHES, TASKS, utcnow
from llm_pipelines.storage.lease import (
    REALTIME_LEASE,
    LeaseHeld,
    LeaseLost,
    LeaseRecord,
    current_lease,
    lease_dir,
    partition_lease,
)

DAY = "2026-11-23"


def _take(lake: Lake, owner: str = "test"):
    return partition_lease(lake, DAY, owner=owner, purpose="test")


@pytest.mark.parametrize("where", ["lake", "s3_lake"])
def test_exactly_one_of_many_racers_takes_the_lease(where: str, request) -> None:
    lake: Lake = request.getfixturevalue(where)
    racers = 8
    start, done = threading.Barrier(racers), threading.Barrier(racers)
    outcomes: list[str] = []

    def race(index: int) -> None:
        start.wait()
        try:
            with _take(lake, f"racer {index}"):
                outcomes.append("won")
                done.wait(timeout=30)  # hold it until everyone has tried
        except LeaseHeld:
            outcomes.append("held")
            done.wait(timeout=30)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert collections.Counter(outcomes) == {"won": 1, "held": racers - 1}
    # Released on exit: the next taker gets a newer generation.
    with _take(lake) as lease:
        assert lease.record.generation >= 2


def test_a_crashed_holder_frees_the_lease_at_once_on_its_host(lake: Lake) -> None:
    def hold_and_die() -> None:
        with _take(lake, "doomed"):
            os._exit(CRASH_EXIT_CODE)

    assert run_in_child(hold_and_die).crashed
    assert current_lease(lake, DAY).released_at is None, "it never released"
    with _take(lake, "successor") as lease:
        assert lease.record.generation == 2


def test_a_holder_elsewhere_blocks_until_its_lease_expires(lake: Lake) -> None:
    now = utcnow()
    record = LeaseRecord(
        generation=1,
        owner="run abc",
        purpose="submit",
        host="another-machine",
        pid=1,
        token="t",
        acquired_at=now,
        expires_at=now + timedelta(minutes=10),
    )
    path = f"{lease_dir(lake, DAY)}/g{1:012d}.json"
    lake.write_json(path, record.model_dump(mode="json"))
    with pytest.raises(LeaseHeld, match=r"run abc .*another-machine"), _take(lake):
        pass
    record.expires_at = now - timedelta(seconds=1)
    lake.write_json(path, record.model_dump(mode="json"))
    with _take(lake) as lease:
        assert lease.record.generation == 2


def test_a_holder_that_was_taken_over_stops_before_acting(lake: Lake) -> None:
    with _take(lake, "slow") as lease:
        lease.check()
        # Someone took over (as after an expiry): a newer generation exists.
        taken = lease.record.model_copy(update={"generation": 2, "owner": "fast"})
        lake.write_json(f"{lease_dir(lake, DAY)}/g{2:012d}.json", taken.model_dump(mode="json"))
        with pytest.raises(LeaseLost, match="taken over"):
            lease.check()


def test_the_real_time_lease_is_apart_from_the_submission_lease(lake: Lake) -> None:
    """One run's submission and real-time steps run side by side; each lease has one holder."""

    def answer(owner: str):
        return partition_lease(lake, DAY, owner=owner, purpose="test", kind=REALTIME_LEASE)

    with _take(lake, "run submitting") as submitting, answer("run answering") as answering:
        submitting.check()
        answering.check()
        late = pytest.raises(LeaseHeld, match="is being answered in real time by run answering")
        with late, answer("run late"):
            pass
        with pytest.raises(LeaseHeld, match="is being submitted by run submitting"), _take(lake):
            pass
    assert current_lease(lake, DAY).owner == "run submitting"
    assert current_lease(lake, DAY, REALTIME_LEASE).owner == "run answering"


def test_two_materializations_at_once_submit_each_task_once(
    tmp_path: Path, day: str, disk_instance: dg.DagsterInstance, fault_resources
) -> None:
    resources = fault_resources()
    lake = resources["lake"].lake()
    LandingZone(lake).append(generate_tasks(day, 150, seed=4), partition=day)
    defs = build_definitions(resources)
    routing = defs.resolve_job_def("daily_batch_cycle").execute_in_process(
        partition_key=day,
        instance=disk_instance,
        asset_selection=[dg.AssetKey("raw_llm_events"), dg.AssetKey("routed_tasks")],
    )
    assert routing.success
    submit = defs.resolve_job_def("resubmit_batch_retries")

    def materialize() -> bool:
        return submit.execute_in_process(
            partition_key=day, instance=disk_instance, raise_on_error=False
        ).success

    # The first materialization stops right after its first intent, holding the lease...
    with paused_at(materialize, "submit.after_intent", tmp_path / "gate") as first:
        # ...while a second one runs from start to end: it must not submit anything.
        second = submit.execute_in_process(
            partition_key=day, instance=disk_instance, raise_on_error=False
        )
        assert not second.success
        [failure] = [e for e in second.all_events if e.is_step_failure]
        assert "is being submitted by run" in str(failure.step_failure_data.error)
    assert first.wait().value is True

    manifests = read_manifests(lake, day)
    ids = [
        task_id
        for m in manifests
        for task_id in lake.read_table([lake.path(BATCHES, day, m.tasks_name)])[
            "task_id"
        ].to_pylist()
    ]
    tasks = lake.read_table([lake.path(TASKS, day, TASKS_FILE)], ["task_id", "route"])
    batch_ids = tasks.filter(pc.equal(tasks["route"], "batch"))["task_id"].to_pylist()
    assert sorted(ids) == sorted(batch_ids), "every batch task submitted exactly once"
    emulator = EmulatorStore(EmulatorConfig(state_dir=resources["anthropic"].emulator_dir))
    assert set(emulator.list_batch_ids()) == {m.provider_batch_id for m in manifests}


@pytest.mark.parametrize("held", ["realtime", "submission"])
def test_a_day_is_not_routed_again_while_another_run_dispatches_it(
    lake: Lake, held: str, materialize_assets
) -> None:
    """A run's real-time (or submission) pass reads the routes once, under its lease; were a
    second run to route the day again meanwhile, a task could be answered real-time by one
    run and sent in a batch by the other. Routing waits for neither: it fails, and says so;
    with the lease free again it routes."""
    LandingZone(lake).append(
        [
            {
                "task_id": f"t{n}",
                "task_type": "chat_reply",
                "model": "claude-haiku-5-5",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": f"hello {n}"}],
            }
            for n in range(3)
        ],
        partition=DAY,
    )
    materialize_assets(["raw_llm_events"])
    kind = {"realtime": REALTIME_LEASE, "submission": None}[held]
    options = {"kind": kind} if kind is not None else {}
    with partition_lease(lake, DAY, owner="run other", purpose="dispatch", **options):
        result = materialize_assets(["routed_tasks"], expect_success=False)
        assert not result.success
        [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "not routed again while it is dispatched" in str(failure.event_specific_data)
        assert "run other" in str(failure.event_specific_data)
        assert not lake.exists(lake.path(TASKS, DAY, TASKS_FILE))
    assert materialize_assets(["routed_tasks"]).success
    assert lake.exists(lake.path(TASKS, DAY, TASKS_FILE))
