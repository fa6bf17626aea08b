"""Offline evaluation: an eval set times two or more models → answers → judge tasks → per-answer
judgements → a per-model score table that compares the models.

Two rounds through the same pipeline. Answers come first; once they are all settled, the
sensor materializes ``eval_judge_tasks`` (a second producer, downstream of the answers' results),
then runs the daily batch cycle again for the same partition so the judge tasks are routed and
submitted, and once those are settled it materializes the judgements and the score table.
Nothing sleeps: every wait is a sensor tick.
"""

import statistics
from functools import cache
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from llm_pipelines.assets.dispatch import batch_results, realtime_results
from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.resources import LakeResource
from llm_pipelines.sensors import daily_batch_cycle
from llm_pipelines.storage.lake import Lake
from llm_pipelines.tasks import ChatMessage, LLMTask
from llm_pipelines.workloads.common import (
    FAILED,
    MISSING,
    OUTPUTS,
    SOURCES,
    SUCCEEDED,
    WORKLOAD_TASKS,
    Stage,
    asset_factory,
    cost_metadata,
    count_by,
    coverage_check,
    json_output,
    land_tasks,
    outcomes_for,
    parse_answer,
    producer_progress,
    read_table,
    results_sensor,
    run_key,
    stable_digest,
    workload_jobs,
    workload_metadata,
    write_table,
)
from llm_pipelines.workloads.samples import MATERIALS_CARE, bundled_text, eval_set

WORKLOAD = "offline_eval"
workload_asset = asset_factory(WORKLOAD, owners=["team:ml-evaluation"])
CANDIDATE_MODELS = ["claude-haiku-5-5", "claude-sonnet-5-5"]
JUDGE_MODEL = "claude-opus-5-5"
"""The judge is a stronger model than every candidate, and never one of them."""
ANSWER_TASK_TYPE = "eval_answer"
JUDGE_TASK_TYPE = "eval_judge"
"""Own task types, so routing's right-sizing (by task type) never swaps an evaluated model."""
PASS_SCORE = 7
UNPARSED = "unparsed"
NOT_JUDGED = "not_judged"
"""No judge task: the answer itself failed or is missing."""


class JudgeVerdict(BaseModel):
    """The judge's structured answer; its JSON Schema goes into the judge prompt."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=10, description="10: matches the reference in every fact.")
    verdict: Literal["correct", "partially_correct", "incorrect"]
    rationale: str = Field(max_length=300)


class AnswerTasksConfig(dg.Config):
    """The models to compare and their output budget."""

    models: list[str] = CANDIDATE_MODELS
    max_tokens: int = 250


class JudgeTasksConfig(dg.Config):
    """The judge model and its output budget."""

    judge_model: str = JUDGE_MODEL
    max_tokens: int = 300


@cache
def answer_system_prompt() -> str:
    """What every candidate model is told: the policy handbook, shared as a cacheable prefix."""
    care = "\n".join(f"- {material}: {how}." for material, how in MATERIALS_CARE.items())
    return f"{bundled_text('policy_handbook.md')}\n## Product care quick reference\n\n{care}\n"


@cache
def judge_system_prompt() -> str:
    """The judge's rubric and the handbook it grades against (the verdict's form is the
    request's structured output format)."""
    return (
        "You are an exacting evaluator of a customer assistant's answers. You see a customer's "
        "question, the reference answer written by the policy team, and a candidate answer. "
        "Judge only whether the candidate gives the customer the same facts and the same "
        "outcome as the reference, using the handbook below as the source of truth. Do not "
        "reward length, politeness or style. A candidate that adds a fact the handbook does "
        "not support scores at most 4. You do not know which model wrote the candidate.\n\n"
        f"{answer_system_prompt()}"
    )


def answers_table(questions: pa.Table, models: list[str]) -> pa.Table:
    """The eval grid: one row per (question, model), keyed ``answer_key``."""
    rows = [
        {**q, "candidate_model": model, "answer_key": f"{q['question_id']}:{model}"}
        for model in models
        for q in questions.to_pylist()
    ]
    return pa.Table.from_pylist(rows)


@workload_asset(
    kinds={"python", "parquet"},
    description=(
        "Source table: the eval set used on the day (questions with reference answers; the "
        "bundled set, versioned by a content hash). Point this at your own eval set."
    ),
)
def eval_questions(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    table = eval_set()
    version = stable_digest(*(str(r) for r in table.to_pylist()))
    table = table.append_column("eval_set_version", pa.array([version] * table.num_rows))
    write_table(lake.lake(), SOURCES, "eval_questions", context.partition_key, table)
    return dg.MaterializeResult(
        metadata={
            "questions": table.num_rows,
            "topics": len(pc.unique(table["topic"])),
            "eval_set_version": version,
            "dagster/row_count": table.num_rows,
        }
    )


def _task_id(kind: str, partition: str, answer_key: str) -> str:
    question, model = answer_key.split(":", 1)
    return f"{kind}-{partition}-{question}-{model}"


@workload_asset(
    kinds={"python", "json"},
    deps=[eval_questions],
    description=(
        "Producer, round one: every question to every candidate model (the handbook is the "
        "shared, cacheable system prompt), into the landing zone."
    ),
)
def eval_answer_tasks(
    context: dg.AssetExecutionContext, config: AnswerTasksConfig, lake: LakeResource
) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    grid = answers_table(read_table(store, SOURCES, "eval_questions", partition), config.models)
    landed = land_tasks(
        store,
        partition,
        "eval_answer_tasks",
        (
            (
                row["answer_key"],
                LLMTask(
                    task_id=_task_id("evans", partition, row["answer_key"]),
                    task_type=ANSWER_TASK_TYPE,
                    model=row["candidate_model"],
                    system=answer_system_prompt(),
                    messages=[ChatMessage(role="user", content=row["question"])],
                    max_tokens=config.max_tokens,
                    metadata=workload_metadata(WORKLOAD, row["answer_key"], round="answer"),
                ),
            )
            for row in grid.to_pylist()
        ),
    )
    return dg.MaterializeResult(metadata={**landed.metadata(), "models": len(config.models)})


def _grid(lake: Lake, partition: str) -> pa.Table:
    """The (question, model) grid the answer producer worked from, as it recorded it."""
    questions = read_table(lake, SOURCES, "eval_questions", partition)
    keys = read_table(lake, WORKLOAD_TASKS, "eval_answer_tasks", partition)["source_key"]
    models = list(dict.fromkeys(k.split(":", 1)[1] for k in keys.to_pylist()))
    return answers_table(questions, models)


def judge_prompt(row: dict[str, Any]) -> str:
    """What the judge reads: question, reference, candidate answer (never the model's name)."""
    return (
        f"Customer question:\n{row['question']}\n\n"
        f"Reference answer:\n{row['reference_answer']}\n\n"
        f"Candidate answer:\n{row['output_text']}"
    )


@workload_asset(
    kinds={"python", "json"},
    deps=[eval_answer_tasks, batch_results, realtime_results],
    description=(
        "Producer, round two: once the answers are settled, one blind judge task per answer "
        "(a stronger model grades it against the reference, returning JSON), landed into the "
        "same day's landing zone; offline_eval_sensor then runs the batch cycle again. "
        "Answers that failed get no judge task and are reported as such downstream."
    ),
)
def eval_judge_tasks(
    context: dg.AssetExecutionContext, config: JudgeTasksConfig, lake: LakeResource
) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    answers = outcomes_for(
        store, partition, "eval_answer_tasks", _grid(store, partition), "answer_key"
    )
    answered = answers.filter(pc.equal(answers["status"], SUCCEEDED))
    landed = land_tasks(
        store,
        partition,
        "eval_judge_tasks",
        (
            (
                row["answer_key"],
                LLMTask(
                    task_id=_task_id("evjudge", partition, row["answer_key"]),
                    task_type=JUDGE_TASK_TYPE,
                    model=config.judge_model,
                    system=judge_system_prompt(),
                    output_config=json_output(JudgeVerdict),
                    messages=[ChatMessage(role="user", content=judge_prompt(row))],
                    max_tokens=config.max_tokens,
                    metadata=workload_metadata(WORKLOAD, row["answer_key"], round="judge"),
                ),
            )
            for row in answered.to_pylist()
        ),
    )
    return dg.MaterializeResult(
        metadata={
            **landed.metadata(),
            "answers": answers.num_rows,
            "answers_not_judged": answers.num_rows - answered.num_rows,
        }
    )


def judgements_table(lake: Lake, partition: str) -> pa.Table:
    """One row per (question, model): the answer, its outcome, the judge's verdict, costs."""
    grid = _grid(lake, partition)
    answers = outcomes_for(lake, partition, "eval_answer_tasks", grid, "answer_key")
    judges = outcomes_for(
        lake, partition, "eval_judge_tasks", grid.select(["answer_key"]), "answer_key"
    )
    assert judges.num_rows == answers.num_rows, "one judge row per answer row"
    verdicts: dict[str, list[Any]] = {"score": [], "verdict": [], "rationale": []}
    judge_status = judges["status"].to_pylist()
    judge_detail = judges["detail"].to_pylist()
    answer_status = answers["status"].to_pylist()
    for index, text in enumerate(judges["output_text"].to_pylist()):
        verdict = None
        if answer_status[index] != SUCCEEDED:
            judge_status[index], judge_detail[index] = NOT_JUDGED, "the answer has no result"
        elif judge_status[index] == SUCCEEDED:
            verdict, problem = parse_answer(text, JudgeVerdict)
            if verdict is None:
                judge_status[index], judge_detail[index] = UNPARSED, problem
        for field, values in verdicts.items():
            values.append(getattr(verdict, field) if verdict else None)
    answer_costs = answers.select(["cost_usd", "sync_cost_usd"])
    judge_costs = judges.select(["cost_usd", "sync_cost_usd"])
    return pa.table(
        {
            "question_id": answers["question_id"],
            "topic": answers["topic"],
            "model": answers["candidate_model"],
            "served_model": answers["model"],
            "answer_status": answers["status"],
            "answer_detail": answers["detail"],
            "answer": answers["output_text"],
            "answer_stop_reason": answers["stop_reason"],
            "judge_status": pa.array(judge_status, pa.string()),
            "judge_detail": pa.array(judge_detail, pa.string()),
            "score": pa.array(verdicts["score"], pa.int32()),
            "verdict": pa.array(verdicts["verdict"], pa.string()),
            "rationale": pa.array(verdicts["rationale"], pa.string()),
            "answer_cost_usd": answer_costs["cost_usd"],
            "answer_sync_cost_usd": answer_costs["sync_cost_usd"],
            "judge_cost_usd": judge_costs["cost_usd"],
            "judge_sync_cost_usd": judge_costs["sync_cost_usd"],
            "answer_task_id": answers["task_id"],
            "judge_task_id": judges["task_id"],
        }
    )


@workload_asset(
    kinds={"python", "parquet"},
    deps=[eval_questions, eval_answer_tasks, eval_judge_tasks, batch_results, realtime_results],
    check_specs=[
        dg.AssetCheckSpec(
            "every_question_model_pair_has_a_row",
            asset="eval_judgements",
            description="One row per question and candidate model: none dropped, none doubled.",
        )
    ],
    description=(
        "Consumer: every (question, model) pair with the answer, the judge's score and verdict, "
        "and the status of both rounds (failed, missing, unparsed and not-judged rows are kept "
        "with the reason)."
    ),
)
def eval_judgements(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    table = judgements_table(store, partition)
    write_table(store, OUTPUTS, "eval_judgements", partition, table)
    expected = len(_grid(store, partition))
    judged = int(pc.sum(pc.is_valid(table["score"])).as_py() or 0)
    judge_counts = count_by(
        table["judge_status"], (SUCCEEDED, UNPARSED, FAILED, MISSING, NOT_JUDGED)
    )
    answer_counts = count_by(table["answer_status"], (SUCCEEDED, FAILED, MISSING))
    return dg.MaterializeResult(
        metadata={
            "pairs": table.num_rows,
            "scored": judged,
            **{f"answers_{k}": v for k, v in answer_counts.items()},
            **{f"judges_{k}": v for k, v in judge_counts.items()},
            "answer_cost_usd": round(pc.sum(table["answer_cost_usd"]).as_py() or 0.0, 6),
            "judge_cost_usd": round(pc.sum(table["judge_cost_usd"]).as_py() or 0.0, 6),
            "dagster/row_count": table.num_rows,
        },
        check_results=[
            coverage_check(
                "every_question_model_pair_has_a_row", table, ["question_id", "model"], expected
            )
        ],
    )


SCORES_SCHEMA = pa.schema(
    [
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("questions", pa.int32(), nullable=False),
        pa.field("answered", pa.int32(), nullable=False),
        pa.field("scored", pa.int32(), nullable=False),
        pa.field("mean_score", pa.float64()),
        pa.field("median_score", pa.float64()),
        pa.field("pass_rate_pct", pa.float64()),
        pa.field("correct", pa.int32(), nullable=False),
        pa.field("partially_correct", pa.int32(), nullable=False),
        pa.field("incorrect", pa.int32(), nullable=False),
        pa.field("not_scored", pa.int32(), nullable=False),
        pa.field("answer_cost_usd", pa.float64(), nullable=False),
        pa.field("answer_all_sync_cost_usd", pa.float64(), nullable=False),
        pa.field("judge_cost_usd", pa.float64(), nullable=False),
        pa.field("cost_per_pass_usd", pa.float64()),
    ]
)


def scores_table(judgements: pa.Table) -> pa.Table:
    """Per model: how many answers, how they scored, what they cost; best mean score first.

    ``pass_rate_pct`` counts scores of at least :data:`PASS_SCORE` over every question, so
    an answer that failed or was never scored counts against its model, not for it.
    """
    rows = []
    for model in dict.fromkeys(judgements["model"].to_pylist()):
        mine = judgements.filter(pc.equal(judgements["model"], model))
        scores = [s for s in mine["score"].to_pylist() if s is not None]
        verdicts = mine["verdict"].to_pylist()
        passed = sum(1 for s in scores if s >= PASS_SCORE)
        answer_cost = pc.sum(mine["answer_cost_usd"]).as_py() or 0.0
        rows.append(
            {
                "model": model,
                "questions": mine.num_rows,
                "answered": mine["answer_status"].to_pylist().count(SUCCEEDED),
                "scored": len(scores),
                "mean_score": round(statistics.fmean(scores), 3) if scores else None,
                "median_score": float(statistics.median(scores)) if scores else None,
                "pass_rate_pct": round(100 * passed / mine.num_rows, 2),
                "correct": verdicts.count("correct"),
                "partially_correct": verdicts.count("partially_correct"),
                "incorrect": verdicts.count("incorrect"),
                "not_scored": mine.num_rows - len(scores),
                "answer_cost_usd": round(answer_cost, 6),
                "answer_all_sync_cost_usd": round(
                    pc.sum(mine["answer_sync_cost_usd"]).as_py() or 0.0, 6
                ),
                "judge_cost_usd": round(pc.sum(mine["judge_cost_usd"]).as_py() or 0.0, 6),
                "cost_per_pass_usd": round(answer_cost / passed, 6) if passed else None,
            }
        )
    rows.sort(key=lambda r: (-(r["mean_score"] or 0.0), r["model"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)


@workload_asset(
    kinds={"python", "parquet"},
    deps=[eval_judgements],
    description=(
        "The per-model score table: mean and median judge score, pass rate, verdict counts "
        "and cost per passing answer, ranked; the day's model comparison."
    ),
)
def eval_model_scores(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    judgements = read_table(store, OUTPUTS, "eval_judgements", partition)
    scores = scores_table(judgements)
    write_table(store, OUTPUTS, "eval_model_scores", partition, scores)
    per_model: dict[str, Any] = {}
    for row in scores.to_pylist():
        per_model[f"mean_score__{row['model']}"] = row["mean_score"] or 0.0
        per_model[f"pass_rate_pct__{row['model']}"] = row["pass_rate_pct"]
    lines = [
        "| rank | model | mean score | pass rate % | scored / questions | answer cost $ |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['rank']} | {r['model']} | {r['mean_score']} | {r['pass_rate_pct']} | "
            f"{r['scored']} / {r['questions']} | {r['answer_cost_usd']} |"
            for r in scores.to_pylist()
        ),
    ]
    return dg.MaterializeResult(
        metadata={
            "models": scores.num_rows,
            "best_model": scores["model"][0].as_py() if scores.num_rows else "",
            **per_model,
            **cost_metadata(judgements, "answer_", "answer_cost_usd", "answer_sync_cost_usd"),
            **cost_metadata(judgements, "judge_", "judge_cost_usd", "judge_sync_cost_usd"),
            "dagster/row_count": scores.num_rows,
            "scores": dg.MetadataValue.md("\n".join(lines)),
        }
    )


jobs = workload_jobs(
    WORKLOAD,
    produce=[eval_questions, eval_answer_tasks],
    consume=[eval_judgements, eval_model_scores],
    minute_past_one=20,
    tasks="answer tasks",
)

offline_eval_judge = dg.define_asset_job(
    "offline_eval_judge",
    selection=dg.AssetSelection.assets(eval_judge_tasks),
    partitions_def=DAILY,
    description="Land judge tasks for the day's settled answers; launched by offline_eval_sensor.",
)


def plan_offline_eval(lake: Lake, partition: str) -> list[dg.RunRequest]:
    """The evaluation's next step for a partition, if any: judge, cycle again, or score."""
    answers = producer_progress(lake, "eval_answer_tasks", partition)
    if answers is None or not answers.settled:
        return []
    judges = producer_progress(lake, "eval_judge_tasks", partition)
    if judges is None:
        step, job = run_key("eval_judge_tasks", partition, answers), offline_eval_judge.name
    elif judges.count(Stage.IN_FLIGHT) or judges.count(Stage.ROUTED):
        return []  # the judge round is on its way; its results will wake the sensor
    elif judges.count(Stage.LANDED):
        # Judge tasks wait in the landing zone: run the day's cycle again to send them.
        step, job = run_key("eval_judge_cycle", partition, judges), daily_batch_cycle.name
    else:
        step = f"{run_key('eval_judgements', partition, answers)}-{judges.key or 'nojudges'}"
        job = jobs.consume.name
    return [dg.RunRequest(run_key=step, job_name=job, partition_key=partition)]


offline_eval_sensor = results_sensor(
    name="offline_eval_sensor",
    jobs=[offline_eval_judge, daily_batch_cycle, jobs.consume],
    plan=plan_offline_eval,
    also_watch=[eval_judge_tasks.key],
    description=(
        "Drives the evaluation's second round: when a day's answers are settled it lands "
        "judge tasks, runs the batch cycle again to send them, and once the verdicts are in "
        "scores the models."
    ),
)

ASSETS = [
    eval_questions,
    eval_answer_tasks,
    eval_judge_tasks,
    eval_judgements,
    eval_model_scores,
]
PRODUCERS = [eval_answer_tasks]
"""Only the first round feeds intake in the graph: the judge round comes after results."""
JOBS = [jobs.produce, offline_eval_judge, jobs.consume]
SCHEDULES = [jobs.nightly]
SENSORS = [offline_eval_sensor]
