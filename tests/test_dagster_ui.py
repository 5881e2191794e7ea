"""`memory-pipeline ui` (`dagster dev -w workspace.yaml`: webserver and daemon) loads the whole project: checked through
its GraphQL API and its log."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from memory_pipeline.config import load_config
from memory_pipeline.instance import ensure_dagster_home

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
OUR_SENSORS = {
    "source_files_sensor",
    "new_examples_sensor",
    "run_failure_record_sensor",
    "nightly_training_sensor",
    "default_automation_condition_sensor",
}

QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        jobs { name }
        schedules { name cronSchedule executionTimezone }
        sensors { name sensorState { status ticks(limit: 5) { status skipReason error { message } } } }
        assetNodes {
          assetKey { path } groupName description assetChecksOrError { ... on AssetChecks { checks { name } } }
        }
      }
    }
    ... on PythonError { message stack }
  }
  workspaceOrError {
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""

_WARNING = re.compile(r"WARNING|Warning:")  # log levels are wrapped in colour codes, so no \b


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(base: str) -> dict:
    response = httpx.post(f"{base}/graphql", json={"query": QUERY}, timeout=120)
    response.raise_for_status()
    return response.json()["data"]


def _sensors_ticked(data: dict) -> bool:
    nodes = data["repositoriesOrError"].get("nodes") or []
    ticks = {s["name"]: s["sensorState"]["ticks"] for node in nodes for s in node["sensors"]}
    return all(ticks.get(name) for name in OUR_SENSORS)


def _interruptible() -> None:
    """Runs in the child before `dagster dev` starts: a shell that started the tests in the background leaves
    SIGINT ignored, and `dagster dev` handles SIGTERM as SIGINT, so it would ignore the test's SIGTERM too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    """(GraphQL answer once the daemon has ticked each of our sensors, the log of webserver, daemon and code server).

    The project's config with its source folders swapped for empty ones, so the file sensor finds
    nothing and no run starts while the test looks.
    """
    root = tmp_path_factory.mktemp("ui")
    raw = yaml.safe_load((REPO / "memory_pipeline.yaml").read_text(encoding="utf-8"))
    raw["sources"] = {kind: [str(root / "sources" / kind)] for kind in raw["sources"]}
    for (folder,) in raw["sources"].values():
        Path(folder).mkdir(parents=True)
    config_file = root / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    storage = root / "storage"
    config = load_config(config_file, storage=storage)
    env = dict(
        os.environ,
        DAGSTER_HOME=str(ensure_dagster_home(config)),
        MEMORY_PIPELINE_CONFIG=str(config_file),
        MEMORY_PIPELINE_STORAGE=str(storage),
    )
    port = _free_port()
    log_path = root / "dagster_dev.log"
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(  # `memory-pipeline ui`: dagster dev -w workspace.yaml with the project's settings
            [
                sys.executable,
                "-m",
                "memory_pipeline.cli",
                "--config",
                str(config_file),
                "--storage",
                str(storage),
                "ui",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_interruptible,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        data = None
        while data is None or not _sensors_ticked(data):
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited: {log_path.read_text(encoding='utf-8')[-5000:]}")
            if time.time() > deadline:
                pytest.fail(
                    "dagster dev did not load and tick the sensors in time: "
                    f"{log_path.read_text(encoding='utf-8')[-5000:]}"
                )
            time.sleep(2)
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    data = _query(base)
            except httpx.HTTPError:
                pass
        yield data, log_path.read_text(encoding="utf-8")
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the CLI and dagster dev (which treats it as an interrupt and shuts webserver and daemon down);
    waits until every process of the group is gone, killing what is left after a minute."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait()
    for tick in range(130):
        try:
            os.killpg(process.pid, signal.SIGKILL if tick >= 120 else 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def graphql(dagster_dev):
    return dagster_dev[0]


def test_workspace_loads_without_errors(graphql):
    entries = graphql["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["memory_pipeline"]
    assert entries[0]["loadStatus"] == "LOADED"
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries[0][
        "locationOrLoadError"
    ].get("message")


def test_all_assets_checks_jobs_schedules_and_sensors_are_loaded(graphql):
    (repo,) = graphql["repositoriesOrError"]["nodes"]
    assets = {"/".join(a["assetKey"]["path"]): a for a in repo["assetNodes"]}
    expected_assets = {
        "parsed_sources": "ingest",
        "dialogue_documents": "ingest",
        "article_documents": "ingest",
        "lecture_documents": "ingest",
        "ingest_report": "ingest",
        "chunk_embeddings": "index",
        "chunks": "index",
        "faiss_index": "index",
        "retrieval_eval": "index",
        "item_scores": "promote",
        "item_tiers": "promote",
        "training_sets": "train",
        "lora_adapters": "train",
    }
    for name, group in expected_assets.items():
        assert name in assets, f"asset {name} missing"
        assert assets[name]["groupName"] == group
        assert assets[name]["description"], f"asset {name} has no description"
    checks = {c["name"] for a in assets.values() for c in (a["assetChecksOrError"] or {}).get("checks", [])}
    assert {
        "ingest_report_no_failures",
        "faiss_index_matches_chunks",
        "item_tiers_complete_and_exclusive",
        "lora_adapters_gate_passed",
    } <= checks
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"reindex_job", "memory_job", "training_job"} <= jobs
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert schedules["nightly_schedule"]["cronSchedule"] == "0 3 * * *"
    sensors = {s["name"] for s in repo["sensors"]}
    assert OUR_SENSORS <= sensors


def test_the_daemon_evaluates_every_sensor_without_error(graphql):
    (repo,) = graphql["repositoriesOrError"]["nodes"]
    for sensor in repo["sensors"]:
        for tick in sensor["sensorState"]["ticks"]:
            assert tick["status"] != "FAILURE", f"{sensor['name']}: {(tick['error'] or {}).get('message')}"


def test_every_sensor_runs_in_a_fresh_instance_and_its_skipped_ticks_say_why(graphql):
    """Automation the docs promise (retrieval_eval following the chunks) needs no toggle: the instance says running."""
    (repo,) = graphql["repositoriesOrError"]["nodes"]
    sensors = {s["name"]: s["sensorState"] for s in repo["sensors"]}
    for name in OUR_SENSORS:
        assert sensors[name]["status"] == "RUNNING", name
    for name in ("source_files_sensor", "new_examples_sensor"):
        skipped = [t for t in sensors[name]["ticks"] if t["status"] == "SKIPPED"]
        assert skipped and all(t["skipReason"] for t in skipped), (name, sensors[name]["ticks"])


def test_the_log_has_no_warnings(dagster_dev):
    """Not even dagster dev's notice that `dg dev` supersedes it: `memory-pipeline ui` filters that one."""
    _, log = dagster_dev
    warnings = [line for line in log.splitlines() if _WARNING.search(line)]
    assert not warnings, "\n".join(warnings)
