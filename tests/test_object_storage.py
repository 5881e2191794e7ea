"""Chunks in LanceDB on S3-compatible object storage, FAISS in a shared folder, a second process reading both.

The object store is moto's S3 server, started as its own process on a free port; LanceDB reaches it
through the usual AWS_* environment variables, as it would reach a real bucket.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from memory_pipeline import cli

pytestmark = pytest.mark.slow  # an S3 server, MiniLM embeddings, the service in a second process

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
BUCKET = "memory"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"{what} exited"
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    pytest.fail(f"{what} did not answer in time")


@pytest.fixture
def s3(monkeypatch):
    """An S3-compatible server with an empty bucket; AWS_* variables point this process (and children) at it."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for(endpoint, server, "moto server")
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }.items():
            monkeypatch.setenv(name, value)
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def invoke(config_file: Path, storage: Path, *args):
    return CliRunner().invoke(cli.app, ["--config", str(config_file), "--storage", str(storage), *map(str, args)])


def test_index_on_s3_with_shared_faiss_and_the_service_sees_new_chunks(tmp_path, s3, monkeypatch):
    sources = {kind: tmp_path / "sources" / kind for kind in ("dialogues", "lectures")}
    for folder in sources.values():
        folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "dialogues" / "chatgpt_single.json", sources["dialogues"])
    shared_faiss = tmp_path / "shared" / "faiss"
    raw = {
        "sources": {kind: [str(folder)] for kind, folder in sources.items()},
        "stores": {"lancedb_uri": f"s3://{BUCKET}/memory/lancedb", "faiss_dir": str(shared_faiss)},
    }
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    storage = tmp_path / "storage"
    monkeypatch.delenv("MEMORY_PIPELINE_CONFIG", raising=False)
    monkeypatch.delenv("MEMORY_PIPELINE_STORAGE", raising=False)

    first = invoke(config_file, storage, "ingest", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["index"]["chunks_total"] > 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="memory/lancedb/")["Contents"]]
    assert any(k.endswith(".manifest") for k in keys) and any(k.endswith(".lance") for k in keys)
    assert not (storage / "lancedb").exists()
    assert list(shared_faiss.iterdir())
    found = invoke(config_file, storage, "search", "pacing", "--json")
    assert found.exit_code == 0 and found.stdout.strip(), found.output

    port = _free_port()
    env = dict(os.environ, MEMORY_PIPELINE_CONFIG=str(config_file), MEMORY_PIPELINE_STORAGE=str(storage))
    service = subprocess.Popen(
        [str(Path(sys.executable).with_name("memory-pipeline")), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/health", service, "memory service")

        def lecture_hits() -> list[dict]:
            answer = httpx.post(
                f"{base}/search", json={"query": "How easy is easy? pacing first half", "k": 5}, timeout=60
            )
            assert answer.status_code == 200, answer.text
            return [h for h in answer.json()["hits"] if h["kind"] == "lecture"]

        assert lecture_hits() == []
        before = httpx.get(f"{base}/health", timeout=10).json()["stores"]["chunks"]
        shutil.copy(FIXTURES / "lectures" / "coach_talk.srt", sources["lectures"])
        second = invoke(config_file, storage, "ingest", "--json")
        assert second.exit_code == 0, second.output
        deadline = time.time() + 30
        while not (hits := lecture_hits()) and time.time() < deadline:
            time.sleep(1)
        assert hits and hits[0]["source_path"].endswith("coach_talk.srt")
        after = httpx.get(f"{base}/health", timeout=10).json()["stores"]["chunks"]
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
    assert after > before > 0
