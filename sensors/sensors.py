"""Sensors: re-index on source changes, and record failed runs where a person will find them."""

import json
import time

import dagster as dg

from assets.jobs import memory_job, reindex_job, training_job
from assets.resources import MemoryPipelineResource
from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import load_config
from memory_pipeline.records import Kind
from memory_pipeline.watch import pending_changes

DOWNSTREAM_OF_INGEST = ["ingest_report", "chunks", "faiss_index", "retrieval_eval", "item_scores", "item_tiers"]
KIND_ASSETS = {Kind.DIALOGUE: "dialogue_documents", Kind.ARTICLE: "article_documents", Kind.LECTURE: "lecture_documents"}


def _interval_seconds() -> int:
    return load_config().schedule.sensor_interval_seconds


@dg.sensor(
    job=reindex_job,
    minimum_interval_seconds=_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the source folders and the service inbox; launches a re-index run for just the new, "
    "changed and deleted files once a burst of changes has settled.",
)
def source_files_sensor(context: dg.SensorEvaluationContext, pipeline: MemoryPipelineResource):
    config = pipeline.config
    changes = pending_changes(config)
    if changes.empty:
        return dg.SkipReason("no new, changed or deleted source files")
    cursor = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    if cursor.get("digest") != changes.digest:
        cursor = {"digest": changes.digest, "since": now}
        context.update_cursor(json.dumps(cursor))
    waited = now - cursor["since"]
    settle = config.schedule.settle_seconds
    if waited < settle:
        return dg.SkipReason(f"{changes.count()} changed paths; waiting {settle - waited:.0f}s more for the burst to settle")
    ops = {KIND_ASSETS[kind]: {"config": {"paths": changes.paths(kind)}} for kind in changes.kinds()}
    selection = [dg.AssetKey(KIND_ASSETS[kind]) for kind in changes.kinds()] + [
        dg.AssetKey(name) for name in DOWNSTREAM_OF_INGEST
    ]
    return dg.RunRequest(
        run_key=changes.digest,
        run_config={"ops": ops},
        asset_selection=selection,
        tags={"memory_pipeline/changed_paths": str(changes.count())},
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
        yield dg.RunRequest(run_key=f"{run_id}:{adapter.name}", partition_key=adapter.name, tags={"memory_pipeline/after_run": run_id})


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
            requests.append(dg.RunRequest(run_key=f"{adapter.name}:{latest}:{new}", partition_key=adapter.name, tags={"memory_pipeline/new_examples": str(new)}))
        else:
            waiting.append(f"{adapter.name}: {new}/{threshold}")
    if not requests:
        return dg.SkipReason("not enough new promoted examples yet (" + ", ".join(waiting) + ")")
    return requests
