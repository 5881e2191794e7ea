"""A storage root can be moved, backed up while the service writes, and restored elsewhere.

One module-scoped memory is built through the CLI (ingest, promote, datasets) plus one Dagster run on its
instance; every test works on copies of it, so the original is never changed.
"""

import json
import shutil
import threading
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from memory_pipeline import cli
from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV, load_config
from memory_pipeline.instance import dagster_env
from memory_pipeline.service.app import create_app
from memory_pipeline.storage_root import MARKER
from tests.test_service import running

pytestmark = pytest.mark.slow  # real ingest and MiniLM embeddings, once per module

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
QUERY = "marathon pacing"


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args], env={CONFIG_ENV: None, STORAGE_ENV: None})


@dg.op
def _noop() -> int:
    return 1


@dg.job
def _history_job():
    _noop()


def _run_on_instance(storage: Path, config_file: Path) -> str:
    """Execute a small job on the storage root's own Dagster instance (DAGSTER_HOME as the CLI sets it)."""
    env = dagster_env(load_config(config_file, storage=storage))
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return _history_job.execute_in_process(instance=instance).run_id


def _run_ids(storage: Path) -> set[str]:
    with dg.DagsterInstance.from_config(str(storage / "dagster_home")) as instance:
        return {run.run_id for run in instance.get_runs()}


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    """(config file, storage root holding a memory, the run id of one Dagster run on its instance)."""
    root = tmp_path_factory.mktemp("movable")
    config_file = root / "memory_pipeline.yaml"
    adapters = yaml.safe_load((REPO / "memory_pipeline.yaml").read_text(encoding="utf-8"))["adapters"]
    raw = {
        "sources": {
            "dialogues": [
                str(FIXTURES / "dialogues" / "chatgpt_single.json"),
                str(FIXTURES / "dialogues" / "claude_export.json"),
            ],
            "lectures": [str(FIXTURES / "lectures" / "coach_talk.srt")],
        },
        "adapters": adapters,
        "promote": {"lora_threshold": 0.35},
    }
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    storage = root / "storage"
    for args in (["ingest"], ["promote"], ["datasets", "build"]):
        result = invoke("--config", config_file, "--storage", storage, *args)
        assert result.exit_code == 0, result.output
    return config_file, storage, _run_on_instance(storage, config_file)


def _search(config_file: Path, storage: Path) -> list[tuple]:
    """The hits' chunk ids, sources and relevance (the final score also weighs usage, which each search adds to)."""
    result = invoke("--config", config_file, "--storage", storage, "search", QUERY, "--json")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert hits
    return [(h["chunk_id"], h["source_path"], round(h.get("relevance", h["score"]), 4)) for h in hits]


@pytest.mark.parametrize(
    "command", [["search", "x"], ["tiers"], ["promote"], ["datasets", "list"], ["adapters", "list"], ["backup", "b"]]
)
def test_read_commands_on_a_folder_without_memory_fail_and_create_nothing(tmp_path, memory, command):
    config_file, _, _ = memory
    typo = tmp_path / "storgae"
    result = invoke("--config", config_file, "--storage", typo, *command)
    assert result.exit_code == 2
    assert f"no memory at {typo} (run `memory-pipeline ingest` first, or pass --storage)" in " ".join(
        result.output.split()
    )
    assert not typo.exists()


def test_nothing_under_storage_holds_its_own_absolute_path(memory):
    _, storage, _ = memory
    needle = str(storage.resolve()).encode()
    holders = [str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert (storage / MARKER).is_file()
    assert holders == []
    assert "storage" not in yaml.safe_load((storage / "dagster_home" / "dagster.yaml").read_text())


def test_an_instance_file_written_with_an_absolute_base_dir_is_made_portable(tmp_path):
    config = load_config(REPO / "memory_pipeline.yaml", storage=tmp_path / "storage")
    old = "# Local Dagster instance for memory_pipeline: SQLite run/event/schedule storage in this folder.\n"
    old += f"storage:\n  sqlite:\n    base_dir: {tmp_path / 'old place'}\n"
    (tmp_path / "storage" / "dagster_home").mkdir(parents=True)
    (tmp_path / "storage" / "dagster_home" / "dagster.yaml").write_text(old)
    home = dagster_env(config)["DAGSTER_HOME"]
    assert "old place" not in (Path(home) / "dagster.yaml").read_text()
    own = "storage:\n  sqlite:\n    base_dir: /srv/dagster\n"
    (Path(home) / "dagster.yaml").write_text(own)
    dagster_env(config)
    assert (Path(home) / "dagster.yaml").read_text() == own


def test_a_moved_storage_root_keeps_search_scores_datasets_history_and_the_service(tmp_path, memory):
    config_file, storage, first_run = memory
    expected = _search(config_file, storage)
    moved = tmp_path / "elsewhere" / "my memory"
    shutil.copytree(storage, moved)
    original_runs = _run_ids(storage)

    assert _search(config_file, moved) == expected
    tiers = invoke("--config", config_file, "--storage", moved, "tiers", "--json")
    assert tiers.exit_code == 0 and json.loads(tiers.stdout)["items"] > 0
    listed = invoke("--config", config_file, "--storage", moved, "datasets", "list", "--json")
    assert listed.exit_code == 0 and str(moved) in listed.stdout and str(storage) not in listed.stdout

    # Dagster: the history came along, and a new run is written into the moved folder, not the original.
    assert first_run in _run_ids(moved)
    second_run = _run_on_instance(moved, config_file)
    assert second_run in _run_ids(moved) and _run_ids(storage) == original_runs

    config = load_config(config_file, storage=moved)
    with running(create_app(config)) as url:
        response = httpx.post(f"{url}/search", json={"query": QUERY, "k": 3}, timeout=60)
    assert response.status_code == 200 and response.json()["hits"]


def test_backup_while_the_service_records_then_restore_into_a_new_folder_and_search(tmp_path, memory):
    config_file, original, _ = memory
    storage = tmp_path / "live"
    shutil.copytree(original, storage)
    config = load_config(config_file, storage=storage)
    stop = threading.Event()
    recorded: list[int] = []

    def record_dialogues(url: str) -> None:
        turn = 0
        while not stop.is_set():
            messages = [
                {"role": "user", "content": f"вопрос {turn} про темп марафона"},
                {"role": "assistant", "content": "держи ровный темп"},
            ]
            body = {"conversation_id": "backup-test", "start_index": 2 * turn, "messages": messages}
            recorded.append(httpx.post(f"{url}/dialogues", json=body, timeout=30).status_code)
            turn += 1

    with running(create_app(config)) as url:
        writer = threading.Thread(target=record_dialogues, args=(url,))
        writer.start()
        try:
            result = invoke("--config", config_file, "--storage", storage, "backup", tmp_path / "backup", "--json")
        finally:
            stop.set()
            writer.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert recorded and set(recorded) == {200}
    report = json.loads(result.stdout)
    assert any(t.startswith("documents/") for t in report["lance_tables"])
    assert any(t.startswith("lancedb/") for t in report["lance_tables"])
    assert "cache/embeddings.sqlite" in report["sqlite_databases"]
    backup = tmp_path / "backup"
    assert (backup / "backup.json").is_file() and (backup / "inbox").is_dir() and (backup / "faiss").is_dir()

    target = tmp_path / "restored"
    into_memory = invoke("--config", config_file, "--storage", storage, "restore", backup)
    assert into_memory.exit_code == 2 and "already holds a memory" in into_memory.output
    restored = invoke("--config", config_file, "--storage", target, "restore", backup, "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["lance_tables"] == report["lance_tables"]
    assert _search(config_file, target) == _search(config_file, original)
    check = load_config(config_file, storage=target)
    from memory_pipeline.index.sync import check_consistency

    assert check_consistency(check).ok
    assert sorted(p.name for p in (target / "inbox").rglob("*") if p.is_file()) == sorted(
        p.name for p in (backup / "inbox").rglob("*") if p.is_file()
    )
