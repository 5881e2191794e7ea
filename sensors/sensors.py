"""Sensors: re-index on source changes, and record failed runs where a person will find them."""

import json
import time

import dagster as dg

from assets.jobs import memory_job, reindex_job, training_job
from assets.resources import MemoryPipelineResource
from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import load_config
from memory_pipeline.ingest.watch import pending_changes
from memory_pipeline.records import Kind

DOWNSTREAM_OF_INGEST = [
    "ingest_report",
    "chunk_embeddings",
    "chunks",
    "faiss_index",
    "retrieval_eval",
    "item_scores",
    "item_tiers",
]
KIND_ASSETS = {
    Kind.DIALOGUE: "dialogue_documents",
    Kind.ARTICLE: "article_documents",
    Kind.LECTURE: "lecture_documents",
}
CHANGE_SET_TAG = "memory_pipeline/change_set"
CHANGED_PATHS_TAG = "memory_pipeline/changed_paths"
MAX_RUNS_PER_CHANGE_SET = 3
ENDED_BADLY = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

# Declared here so declarative automation is on in every instance: the one Dagster adds by itself is stopped
# until someone finds its toggle. Same name, so the docs and Dagster's own pages about it still apply.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the assets' automation conditions: retrieval_eval re-runs whenever the chunks change, "
    "whichever run changed them.",
)


def _interval_seconds() -> int:
    return load_config().schedule.sensor_interval_seconds


@dg.sensor(
    job=reindex_job,
    minimum_interval_seconds=_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the source folders and the service inbox; launches a re-index run for just the new, "
    "changed and deleted files once a burst of changes has settled, one run at a time; a change set whose run "
    f"failed or was canceled is retried (at most {MAX_RUNS_PER_CHANGE_SET} runs).",
)
def source_files_sensor(context: dg.SensorEvaluationContext, pipeline: MemoryPipelineResource):
    """One re-index run per settled change set, retried when it fails or is canceled.

    Each run is tagged with its change set's digest, and the cursor remembers the last one
    requested; that set's runs, looked up in the instance by the tag, decide the tick. While one
    is in progress nothing is launched (new changes wait for it, so two runs never write the
    stores at once). When the latest failed or was canceled, the set is requested again under
    a new run key (digest and attempt: Dagster launches each run key once), up to
    MAX_RUNS_PER_CHANGE_SET runs; then the nightly run or the next change picks it up. A run
    that failed after ingesting its files leaves no file looking changed, so its retry reuses
    that run's config; indexing and scoring diff the whole store, so the retry finishes its work.
    """
    config = pipeline.config
    cursor = json.loads(context.cursor) if context.cursor else {}
    last = cursor.get("requested")
    runs = context.instance.get_runs(filters=dg.RunsFilter(tags={CHANGE_SET_TAG: last})) if last else []
    active = next((run for run in runs if not run.is_finished), None)
    if active is not None:
        return dg.SkipReason(
            f"run {active.run_id} of the last change set is {active.status.value.lower()}; new changes wait for it"
        )
    failures = sum(run.status in ENDED_BADLY for run in runs)
    changes = pending_changes(config)
    if changes.empty:
        if runs and runs[0].status in ENDED_BADLY:
            return _retry(last, runs[0], failures)
        return dg.SkipReason("no new, changed or deleted source files")
    now = time.time()
    if cursor.get("digest") != changes.digest:
        cursor.update(digest=changes.digest, since=now)
        context.update_cursor(json.dumps(cursor))
    waited = now - cursor["since"]
    settle = config.schedule.settle_seconds
    if waited < settle:
        return dg.SkipReason(
            f"{changes.count()} changed paths; waiting {settle - waited:.0f}s more for the burst to settle"
        )
    attempt = failures if changes.digest == last else 0
    if attempt >= MAX_RUNS_PER_CHANGE_SET:
        return _given_up(runs[0], attempt)
    ops = {KIND_ASSETS[kind]: {"config": {"paths": changes.paths(kind)}} for kind in changes.kinds()}
    selection = [dg.AssetKey(KIND_ASSETS[kind]) for kind in changes.kinds()] + [
        dg.AssetKey(name) for name in DOWNSTREAM_OF_INGEST
    ]
    context.update_cursor(json.dumps({**cursor, "requested": changes.digest}))
    return dg.RunRequest(
        run_key=f"{changes.digest}:{attempt}",
        run_config={"ops": ops},
        asset_selection=selection,
        tags={CHANGED_PATHS_TAG: str(changes.count()), CHANGE_SET_TAG: changes.digest},
    )


def _retry(digest: str, failed: dg.DagsterRun, failures: int) -> dg.RunRequest | dg.SkipReason:
    """The failed run of a change set again, with its config and assets, under the next run key."""
    if failures >= MAX_RUNS_PER_CHANGE_SET:
        return _given_up(failed, failures)
    return dg.RunRequest(
        run_key=f"{digest}:{failures}",
        run_config=failed.run_config,
        asset_selection=sorted(failed.asset_selection, key=lambda key: key.to_user_string())
        if failed.asset_selection
        else None,
        tags={CHANGED_PATHS_TAG: failed.tags.get(CHANGED_PATHS_TAG, "0"), CHANGE_SET_TAG: digest},
    )


def _given_up(latest: dg.DagsterRun, failures: int) -> dg.SkipReason:
    return dg.SkipReason(
        f"{failures} runs of the last change set failed or were canceled (latest: {latest.run_id}); not retrying it "
        "again: the nightly run or the next file change picks it up"
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes a clear record of every failed run to storage/reports/failures/ and the Dagster log.",
)
def run_failure_record_sensor(context: dg.RunFailureSensorContext, pipeline: MemoryPipelineResource):
    config = pipeline.config
    run = context.dagster_run
    failure = context.failure_event
    steps = [_step_failure(event) for event in context.get_step_failure_events()]
    record = {
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": dict(run.tags),
        "message": failure.message if failure else "",
        "failed_steps": steps,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = config.reports_dir / "failures" / f"{run.run_id}.json"
    atomic_write_text(path, json.dumps(record, ensure_ascii=False, indent=2))
    errors = "; ".join(f"{s['step']}: {s['error']}" for s in steps) or record["message"]
    context.log.error(f"run {run.run_id} of {run.job_name} failed: {errors} (record: {path})")


def _step_failure(event: dg.DagsterEvent) -> dict:
    """The failed step, the error that caused it (the user's, not Dagster's wrapper) and the full traceback."""
    error = event.step_failure_data.error
    if error is None:
        return {"step": event.step_key, "error": "", "traceback": ""}
    cause = error
    while cause.cause is not None:
        cause = cause.cause
    return {"step": event.step_key, "error": cause.message.strip(), "traceback": error.to_string()}


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[memory_job],
    request_job=training_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After the nightly memory run succeeds, builds each adapter's training set and trains it "
    "(the adapter asset skips with a reason when no new dataset version exists).",
)
def nightly_training_sensor(context: dg.RunStatusSensorContext, pipeline: MemoryPipelineResource):
    run_id = context.dagster_run.run_id
    for adapter in pipeline.config.adapters:
        yield dg.RunRequest(
            run_key=f"{run_id}:{adapter.name}", partition_key=adapter.name, tags={"memory_pipeline/after_run": run_id}
        )


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a training run for an adapter once it has at least datasets.min_new_examples new "
    "promoted examples since its last dataset version (the user's 5-20k rule).",
)
def new_examples_sensor(context: dg.SensorEvaluationContext, pipeline: MemoryPipelineResource):
    from memory_pipeline.datasets.versions import latest_version_name, new_examples_since_latest

    config = pipeline.config
    threshold = config.datasets.min_new_examples
    requests, waiting = [], []
    for adapter in config.adapters:
        new = new_examples_since_latest(config, adapter.name)
        if new >= threshold:
            latest = latest_version_name(config, adapter.name) or "none"
            requests.append(
                dg.RunRequest(
                    run_key=f"{adapter.name}:{latest}:{new}",
                    partition_key=adapter.name,
                    tags={"memory_pipeline/new_examples": str(new)},
                )
            )
        else:
            waiting.append(f"{adapter.name}: {new}/{threshold}")
    if not requests:
        return dg.SkipReason("not enough new promoted examples yet (" + ", ".join(waiting) + ")")
    return requests
