"""The real Dagster webserver loads the whole project: checked through its GraphQL API."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from memory_pipeline.config import load_config
from memory_pipeline.instance import ensure_dagster_home

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        jobs { name }
        schedules { name cronSchedule executionTimezone }
        sensors { name }
        assetNodes { assetKey { path } groupName description assetChecksOrError { ... on AssetChecks { checks { name } } } }
      }
    }
    ... on PythonError { message stack }
  }
  workspaceOrError {
    ... on Workspace { locationEntries { name locationOrLoadError { ... on PythonError { message } } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def graphql(tmp_path_factory):
    storage = tmp_path_factory.mktemp("ui_storage")
    config = load_config(REPO / "memory_pipeline.yaml", storage=storage)
    env = dict(os.environ, DAGSTER_HOME=str(ensure_dagster_home(config)), MEMORY_PIPELINE_CONFIG=str(REPO / "memory_pipeline.yaml"), MEMORY_PIPELINE_STORAGE=str(storage))
    port = _free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    process = subprocess.Popen(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited: {process.stdout.read()}")
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("dagster-webserver did not start in time")
            time.sleep(0.5)
        response = httpx.post(f"{base}/graphql", json={"query": QUERY}, timeout=120)
        response.raise_for_status()
        yield response.json()["data"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_workspace_loads_without_errors(graphql):
    entries = graphql["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["memory_pipeline"]
    assert not (entries[0]["locationOrLoadError"] or {}).get("message")


def test_all_assets_checks_jobs_schedules_and_sensors_are_loaded(graphql):
    (repo,) = graphql["repositoriesOrError"]["nodes"]
    assets = {"/".join(a["assetKey"]["path"]): a for a in repo["assetNodes"]}
    expected_assets = {
        "dialogue_documents": "ingest", "article_documents": "ingest", "lecture_documents": "ingest", "ingest_report": "ingest",
        "chunks": "index", "faiss_index": "index", "retrieval_eval": "index",
        "item_scores": "promote", "item_tiers": "promote",
        "training_sets": "train", "lora_adapters": "train",
    }
    for name, group in expected_assets.items():
        assert name in assets, f"asset {name} missing"
        assert assets[name]["groupName"] == group
        assert assets[name]["description"], f"asset {name} has no description"
    checks = {c["name"] for a in assets.values() for c in (a["assetChecksOrError"] or {}).get("checks", [])}
    assert {"ingest_report_no_failures", "faiss_index_matches_chunks", "item_tiers_complete_and_exclusive", "lora_adapters_gate_passed"} <= checks
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"reindex_job", "memory_job", "training_job"} <= jobs
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert schedules["nightly_schedule"]["cronSchedule"] == "0 3 * * *"
    sensors = {s["name"] for s in repo["sensors"]}
    assert {"source_files_sensor", "new_examples_sensor", "run_failure_record_sensor", "nightly_training_sensor"} <= sensors
