"""Sensors and schedules through Dagster's testing API, over real source folders in tmp dirs."""

import json
import time

import dagster as dg
import pytest
import yaml

from assets.resources import MemoryPipelineResource
from memory_pipeline.config import load_config
from memory_pipeline.ingest import ingest_all
from sensors.schedules import nightly_schedule
from sensors.sensors import source_files_sensor


@pytest.fixture()
def workspace(tmp_path):
    for kind in ("dialogues", "articles", "lectures"):
        (tmp_path / kind).mkdir()
    (tmp_path / "articles" / "a.md").write_text("# Бег\n\nЛёгкий бег.\n", encoding="utf-8")
    (tmp_path / "articles" / "b.md").write_text("# Плавание\n\nКроль.\n", encoding="utf-8")
    (tmp_path / "lectures" / "l.txt").write_text("[00:00:01] Лектор: Сегодня о памяти.\n[00:00:09] Лектор: Повторение.\n", encoding="utf-8")
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


def _tick(config_file, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, resources={"pipeline": MemoryPipelineResource(config_path=str(config_file))})
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
        json.dumps({"messages": [{"role": "user", "content": "Привет"}, {"role": "assistant", "content": "Здравствуй"}]}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    result, _ = _tick(config_file)
    assert isinstance(result, dg.RunRequest)
    ingest_all(load_config(config_file), paths=[root / "dialogues" / "chat.jsonl"])
    quiet, _ = _tick(config_file)
    assert isinstance(quiet, dg.SkipReason)


def test_nightly_schedule_comes_from_config():
    config = load_config()
    assert nightly_schedule.cron_schedule == config.schedule.nightly_cron
    assert nightly_schedule.execution_timezone == config.schedule.timezone
    assert nightly_schedule.job_name == "memory_job"
    context = dg.build_schedule_context(scheduled_execution_time=None)
    request = nightly_schedule.evaluate_tick(context).run_requests[0]
    assert isinstance(request, dg.RunRequest)
