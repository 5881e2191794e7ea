"""Sensors, schedules and the runs they start, through Dagster's testing API, over real source folders in tmp dirs.

Run status sensors are evaluated tick by tick against real runs in a temporary instance.
"""

import json
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

import definitions
from assets.ingest import dialogue_documents
from assets.resources import MemoryPipelineResource
from memory_pipeline.config import load_config
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.records import Kind
from sensors.schedules import nightly_schedule
from sensors.sensors import (
    CHANGE_SET_TAG,
    MAX_RUNS_PER_CHANGE_SET,
    nightly_training_sensor,
    run_failure_record_sensor,
    source_files_sensor,
)


@pytest.fixture()
def workspace(tmp_path):
    for kind in ("dialogues", "articles", "lectures"):
        (tmp_path / kind).mkdir()
    (tmp_path / "articles" / "a.md").write_text("# Бег\n\nЛёгкий бег.\n", encoding="utf-8")
    (tmp_path / "articles" / "b.md").write_text("# Плавание\n\nКроль.\n", encoding="utf-8")
    (tmp_path / "lectures" / "l.txt").write_text(
        "[00:00:01] Лектор: Сегодня о памяти.\n[00:00:09] Лектор: Повторение.\n", encoding="utf-8"
    )
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "storage_root": "storage",
                "sources": {"dialogues": ["dialogues"], "articles": ["articles"], "lectures": ["lectures"]},
                "schedule": {"settle_seconds": 0},
            }
        )
    )
    ingest_all(load_config(config_file))
    return tmp_path, config_file


@pytest.fixture()
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _tick(config_file, cursor=None, instance=None):
    resources = {"pipeline": MemoryPipelineResource(config_path=str(config_file))}
    context = dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources)
    return source_files_sensor(context), context


def test_no_changes_means_no_run(workspace):
    _, config_file = workspace
    result, _ = _tick(config_file)
    assert isinstance(result, dg.SkipReason)


def test_run_covers_exactly_the_new_changed_and_deleted_files(workspace):
    root, config_file = workspace
    (root / "articles" / "a.md").write_text("# Бег\n\nТемповый бег.\n", encoding="utf-8")
    (root / "articles" / "c.md").write_text("# Новое\n\nНовая заметка.\n", encoding="utf-8")
    (root / "articles" / "b.md").unlink()
    result, _ = _tick(config_file)
    assert isinstance(result, dg.RunRequest)
    paths = result.run_config["ops"]["article_documents"]["config"]["paths"]
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["a.md", "b.md", "c.md"]
    assert "lecture_documents" not in result.run_config["ops"]
    selected = {key.to_user_string() for key in result.asset_selection}
    assert "article_documents" in selected and "lecture_documents" not in selected and "chunks" in selected
    again, _ = _tick(config_file)
    assert again.run_key == result.run_key  # same change set -> same run key: Dagster launches it once


def test_a_burst_waits_to_settle_and_becomes_one_run(workspace):
    root, config_file = workspace
    raw = yaml.safe_load(config_file.read_text())
    raw["schedule"]["settle_seconds"] = 0.5
    config_file.write_text(yaml.safe_dump(raw))
    (root / "articles" / "a.md").write_text("# Бег\n\nИнтервалы.\n", encoding="utf-8")
    first, context = _tick(config_file)
    assert isinstance(first, dg.SkipReason) and "settle" in first.skip_message
    (root / "lectures" / "l.txt").write_text("[00:00:01] Лектор: Другая лекция.\n", encoding="utf-8")
    second, context = _tick(config_file, context.cursor)
    assert isinstance(second, dg.SkipReason)
    time.sleep(0.6)
    third, _ = _tick(config_file, context.cursor)
    assert isinstance(third, dg.RunRequest)
    assert set(third.run_config["ops"]) == {"article_documents", "lecture_documents"}
    assert json.loads(context.cursor)["digest"]


def test_after_ingesting_the_changes_the_sensor_is_quiet(workspace):
    root, config_file = workspace
    (root / "dialogues" / "chat.jsonl").write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "Привет"}, {"role": "assistant", "content": "Здравствуй"}]},
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    result, _ = _tick(config_file)
    assert isinstance(result, dg.RunRequest)
    ingest_all(load_config(config_file), paths=[root / "dialogues" / "chat.jsonl"])
    quiet, _ = _tick(config_file)
    assert isinstance(quiet, dg.SkipReason)


# A failed or canceled re-index run, tick by tick against runs in a temporary instance


def _launch(instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    """The run of reindex_job the daemon creates for a request of the file sensor, left in ``status``."""
    return instance.create_run_for_job(
        job_def=definitions.defs.resolve_job_def("reindex_job"),
        run_config=request.run_config,
        asset_selection=set(request.asset_selection),
        tags={**request.tags, "dagster/run_key": request.run_key},
        status=status,
    )


def test_a_failed_or_canceled_run_is_retried_and_nothing_is_launched_while_one_runs(workspace, instance):
    root, config_file = workspace
    (root / "articles" / "a.md").write_text("# Бег\n\nТемповый бег.\n", encoding="utf-8")
    first, context = _tick(config_file, instance=instance)
    assert isinstance(first, dg.RunRequest) and first.tags[CHANGE_SET_TAG]
    running = _launch(instance, first, dg.DagsterRunStatus.STARTED)
    (root / "articles" / "c.md").write_text("# Новое\n\nПока идёт прогон.\n", encoding="utf-8")
    waiting, context = _tick(config_file, context.cursor, instance)
    assert isinstance(waiting, dg.SkipReason) and running.run_id in waiting.skip_message  # no second run beside it
    (root / "articles" / "c.md").unlink()

    instance.report_run_failed(running)
    retry, context = _tick(config_file, context.cursor, instance)
    assert isinstance(retry, dg.RunRequest) and retry.run_key != first.run_key
    assert retry.run_config == first.run_config and retry.tags[CHANGE_SET_TAG] == first.tags[CHANGE_SET_TAG]
    again, _ = _tick(config_file, context.cursor, instance)
    assert again.run_key == retry.run_key  # until that run exists, the same request: Dagster launches it once

    instance.report_run_canceled(_launch(instance, retry, dg.DagsterRunStatus.STARTED))
    last_try, context = _tick(config_file, context.cursor, instance)
    assert isinstance(last_try, dg.RunRequest) and last_try.run_key not in {first.run_key, retry.run_key}
    instance.report_run_failed(_launch(instance, last_try, dg.DagsterRunStatus.STARTED))
    given_up, _ = _tick(config_file, context.cursor, instance)
    assert isinstance(given_up, dg.SkipReason) and f"{MAX_RUNS_PER_CHANGE_SET} runs" in given_up.skip_message


def test_a_run_that_failed_after_ingesting_its_files_is_retried_with_its_config(workspace, instance):
    root, config_file = workspace
    (root / "articles" / "c.md").write_text("# Новое\n\nНовая заметка.\n", encoding="utf-8")
    request, context = _tick(config_file, instance=instance)
    failed = _launch(instance, request, dg.DagsterRunStatus.STARTED)
    ingest_all(
        load_config(config_file), paths=[root / "articles" / "c.md"]
    )  # its ingest step finished, a later one failed
    instance.report_run_failed(failed)
    retry, context = _tick(config_file, context.cursor, instance)
    assert isinstance(retry, dg.RunRequest) and retry.run_key != request.run_key
    assert retry.run_config == request.run_config and set(retry.asset_selection) == set(request.asset_selection)
    _launch(instance, retry, dg.DagsterRunStatus.SUCCESS)
    quiet, _ = _tick(config_file, context.cursor, instance)
    assert isinstance(quiet, dg.SkipReason) and quiet.skip_message.startswith("no new")


def test_nightly_schedule_comes_from_config():
    config = load_config()
    assert nightly_schedule.cron_schedule == config.schedule.nightly_cron
    assert nightly_schedule.execution_timezone == config.schedule.timezone
    assert nightly_schedule.job_name == "memory_job"
    context = dg.build_schedule_context(scheduled_execution_time=None)
    request = nightly_schedule.evaluate_tick(context).run_requests[0]
    assert isinstance(request, dg.RunRequest)


# One source kind alone (a backfill of just its sources)


def test_one_source_kind_alone_and_its_rerun_write_no_duplicates(workspace, instance):
    root, config_file = workspace
    chat = {
        "messages": [
            {"role": "user", "content": "Как восстановиться после марафона?"},
            {"role": "assistant", "content": "Неделя лёгкого бега."},
        ]
    }
    (root / "dialogues" / "chat.jsonl").write_text(json.dumps(chat, ensure_ascii=False) + "\n", encoding="utf-8")
    (root / "articles" / "c.md").write_text("# Новое\n\nНе в этом прогоне.\n", encoding="utf-8")
    resources = {"pipeline": MemoryPipelineResource(config_path=str(config_file))}
    store = DocumentStore(load_config(config_file).documents_dir)
    articles = store.count(Kind.ARTICLE)
    first = dg.materialize([dialogue_documents], instance=instance, resources=resources)
    again = dg.materialize([dialogue_documents], instance=instance, resources=resources)
    written = [
        run.asset_materializations_for_node("dialogue_documents")[0].metadata["documents_written"].value
        for run in (first, again)
    ]
    assert first.success and again.success and written == [1, 0]
    assert (
        store.count(Kind.DIALOGUE) == 1 and store.count(Kind.ARTICLE) == articles
    )  # only that kind's sources were scanned


def _job_subset(select: str):
    """What `dagster asset materialize --select SELECT` runs, resolved the way the command does."""
    keys = dg.AssetSelection.from_coercible(select.split(",")).resolve(definitions.defs.resolve_asset_graph())
    return definitions.defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)


def test_one_kind_reindex_selection_in_the_docs_resolves():
    with pytest.raises(dg.DagsterInvalidSubsetError, match="chunk_index"):
        _job_subset("dialogue_documents,chunks")  # chunks and faiss_index are one step: both or neither
    subset = _job_subset("dialogue_documents,chunks,faiss_index,item_scores,item_tiers")
    assert {key.to_user_string() for key in subset.asset_layer.selected_asset_keys} == {
        "dialogue_documents",
        "chunks",
        "faiss_index",
        "item_scores",
        "item_tiers",
    }
    operations = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "--select dialogue_documents,chunks,faiss_index,item_scores,item_tiers" in operations


# Run status sensors, tick by tick


def _run(instance: dg.DagsterInstance, job_name: str, *, fail: bool) -> dg.ExecuteInProcessResult:
    """A stand-in run of ``job_name``: one step that succeeds, or fails the way a real step would."""

    @dg.op(name="write_chunks")
    def step() -> None:
        if fail:
            raise ValueError("disk full while writing chunks")

    @dg.job(name=job_name)
    def stand_in() -> None:
        step()

    return stand_in.execute_in_process(instance=instance, raise_on_error=False)


def _sensor_context(instance: dg.DagsterInstance, storage: Path) -> dg.SensorEvaluationContext:
    """A daemon-like context: the real definitions (training_job's partitions), storage in a tmp dir."""
    resources = {"pipeline": MemoryPipelineResource(storage=str(storage))}
    return dg.build_sensor_context(instance=instance, definitions=definitions.defs, resources=resources)


def test_failed_run_is_recorded_with_the_step_and_its_error(tmp_path, instance):
    context = _sensor_context(instance, tmp_path)
    run_failure_record_sensor.evaluate_tick(context)  # the first tick only sets the cursor
    _run(instance, "memory_job", fail=False)
    failed = _run(instance, "reindex_job", fail=True)
    run_failure_record_sensor.evaluate_tick(context)
    failures = load_config(storage=tmp_path).reports_dir / "failures"
    assert [p.name for p in failures.iterdir()] == [f"{failed.run_id}.json"]
    record = json.loads((failures / f"{failed.run_id}.json").read_text(encoding="utf-8"))
    assert record["run_id"] == failed.run_id and record["job"] == "reindex_job"
    assert "write_chunks" in record["message"]
    [step] = record["failed_steps"]
    assert step["step"] == "write_chunks" and step["error"] == "ValueError: disk full while writing chunks"
    assert 'raise ValueError("disk full while writing chunks")' in step["traceback"]


def test_failure_record_from_a_built_run_status_context(tmp_path, instance):
    failed = _run(instance, "training_job", fail=True)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_record_sensor",
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources={"pipeline": MemoryPipelineResource(storage=str(tmp_path))},
    )
    run_failure_record_sensor(context)
    record = json.loads(
        (load_config(storage=tmp_path).reports_dir / "failures" / f"{failed.run_id}.json").read_text(encoding="utf-8")
    )
    assert record["job"] == "training_job" and record["failed_steps"][0]["error"].endswith(
        "disk full while writing chunks"
    )


def test_nightly_training_follows_only_a_successful_memory_job(tmp_path, instance):
    context = _sensor_context(instance, tmp_path)
    assert not nightly_training_sensor.evaluate_tick(context).run_requests  # the first tick only sets the cursor
    _run(instance, "memory_job", fail=True)
    _run(instance, "reindex_job", fail=False)
    assert not nightly_training_sensor.evaluate_tick(context).run_requests
    nightly = _run(instance, "memory_job", fail=False)
    requests = nightly_training_sensor.evaluate_tick(context).run_requests
    adapters = [a.name for a in load_config().adapters]
    assert [r.partition_key for r in requests] == adapters
    assert [r.run_key for r in requests] == [f"{nightly.run_id}:{name}" for name in adapters]
    assert {r.tags["memory_pipeline/after_run"] for r in requests} == {nightly.run_id}
    assert not nightly_training_sensor.evaluate_tick(context).run_requests  # that run is handled once


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """The demo corpus ingested, indexed and scored in a tmp storage root."""
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.scoring.engine import run_promotion

    storage = tmp_path_factory.mktemp("promoted")
    config = load_config(storage=storage)
    ingest_all(config)
    sync_index(config, DocumentStore(config.documents_dir), load_embedder(config.embedding), progress=False)
    run_promotion(config, progress=False)
    return storage


def _examples_tick(storage, threshold: int):
    from sensors.sensors import new_examples_sensor

    raw = yaml.safe_load(open("memory_pipeline.yaml", encoding="utf-8"))
    raw["datasets"]["min_new_examples"] = threshold
    config_file = storage / f"threshold_{threshold}.yaml"
    raw["sources"] = {
        k: [str(Path("memory_pipeline.yaml").resolve().parent / p) for p in v] for k, v in raw["sources"].items()
    }
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    resource = MemoryPipelineResource(config_path=str(config_file), storage=str(storage))
    return new_examples_sensor(dg.build_sensor_context(resources={"pipeline": resource})), resource.config


@pytest.mark.slow
def test_new_examples_sensor_fires_at_the_threshold_and_not_below(promoted):
    from memory_pipeline.datasets.versions import new_examples_since_latest

    _, config = _examples_tick(promoted, 1)
    counts = {a.name: new_examples_since_latest(config, a.name) for a in config.adapters}
    assert counts["core"] > 0 and counts["sport"] > 0
    lowest = min(counts.values())
    fired, _ = _examples_tick(promoted, lowest)
    requests = fired if isinstance(fired, list) else [fired]
    assert {r.partition_key for r in requests if isinstance(r, dg.RunRequest)} >= {
        name for name, n in counts.items() if n >= lowest
    }
    below, _ = _examples_tick(promoted, max(counts.values()) + 1)
    assert isinstance(below, dg.SkipReason) and "not enough" in below.skip_message
