"""memory_job on a Dagster instance whose run, event-log and schedule storage live on a real PostgreSQL server.

The server is PostgreSQL 16 from the `pgserver` wheel (binaries inside, nothing else to install), started
on a free TCP port in a tmp folder; the instance is deploy/dagster.postgres.yaml as shipped, filled from its
environment variables. The run is read back through the webserver's GraphQL, as the UI would.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.slow  # a PostgreSQL server, the memory job on MiniLM, a webserver

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
RUNS_QUERY = """
query { runsOrError { __typename ... on Runs { results { runId jobName status stats {
  ... on RunStatsSnapshot { stepsSucceeded stepsFailed materializations } } } } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server():
    """A PostgreSQL server listening on 127.0.0.1; yields its port. Stopped (fast) and removed on exit.

    pgserver initialises the data folder (as an unprivileged user when the tests run as root, which
    PostgreSQL requires: hence a folder of its own under the system temp dir, which that user can reach,
    rather than pytest's root-only one) and starts a socket-only server; it is restarted here on TCP,
    as Dagster's postgres storage connects by host and port.
    """
    import pgserver
    from pgserver._commands import pg_ctl

    folder = Path(tempfile.mkdtemp(prefix="memory-pipeline-pg-"))
    folder.chmod(0o755)
    data = folder / "pgdata"
    server = pgserver.get_server(data, cleanup_mode=None)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=server.system_user)
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {data}"
    pg_ctl(["-w", "-o", options, "-l", str(data / "log"), "start"], pgdata=data, user=server.system_user, timeout=60)
    try:
        yield port
    finally:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=server.system_user, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_memory_job_runs_on_a_postgres_instance_and_the_webserver_reads_it_back(tmp_path):
    import psycopg2

    config_file = tmp_path / "memory_pipeline.yaml"
    sources = {
        "dialogues": [str(FIXTURES / "dialogues" / "chatgpt_single.json")],
        "lectures": [str(FIXTURES / "lectures" / "coach_talk.srt")],
    }
    # In-process: one process for the whole run is enough to exercise the storage, and much faster on 2 cores.
    config_file.write_text(
        yaml.safe_dump({"sources": sources, "scaleout": {"executor": "in_process"}}), encoding="utf-8"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    bin_dir = Path(sys.executable).parent

    with postgres_server() as port:
        env = dict(
            os.environ,
            DAGSTER_HOME=str(home),
            DAGSTER_PG_HOST="127.0.0.1",
            DAGSTER_PG_PORT=str(port),
            DAGSTER_PG_USER="postgres",
            DAGSTER_PG_PASSWORD="",
            DAGSTER_PG_DB="postgres",
            MEMORY_PIPELINE_CONFIG=str(config_file),
            MEMORY_PIPELINE_STORAGE=str(tmp_path / "storage"),
        )
        command = [str(bin_dir / "dagster"), "job", "execute", "-f", "definitions.py", "-j", "memory_job"]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

        # Nothing went to SQLite beside dagster.yaml: run, event and schedule storage are the server's tables.
        assert not (home / "history").exists() and not (home / "schedules").exists()
        with psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as connection:
            cursor = connection.cursor()
            cursor.execute("SELECT pipeline_name, status FROM runs")
            assert cursor.fetchall() == [("memory_job", "SUCCESS")]
            cursor.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
            assert cursor.fetchone()[0] >= 6
            cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('jobs', 'job_ticks')")
            assert cursor.fetchone()[0] == 2  # schedule storage

        web_port = _free_port()
        web = subprocess.Popen(
            [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(web_port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            runs = _graphql_runs(f"http://127.0.0.1:{web_port}", web)
        finally:
            web.terminate()
            try:
                web.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
                web.wait()
    assert [(r["jobName"], r["status"]) for r in runs] == [("memory_job", "SUCCESS")]
    assert runs[0]["stats"]["stepsFailed"] == 0 and runs[0]["stats"]["materializations"] >= 6


def _graphql_runs(base: str, process: subprocess.Popen) -> list[dict]:
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None, "dagster-webserver exited"
        try:
            if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                answer = httpx.post(f"{base}/graphql", json={"query": RUNS_QUERY}, timeout=30).json()
                return answer["data"]["runsOrError"]["results"]
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail("dagster-webserver did not answer in time")
