"""`dagster asset materialize` from the command line, against a real instance in a tmp DAGSTER_HOME."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory_pipeline.config import load_config
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.instance import dagster_env
from memory_pipeline.records import Kind

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_materialize_ingest_group_from_the_command_line(tmp_path):
    config = load_config(REPO / "memory_pipeline.yaml", storage=tmp_path / "storage")
    env = dagster_env(config)
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [
        dagster,
        "asset",
        "materialize",
        "-f",
        "definitions.py",
        "--select",
        "dialogue_documents,article_documents,lecture_documents,ingest_report",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    store = DocumentStore(config.documents_dir)
    assert store.count(Kind.DIALOGUE) >= 5 and store.count(Kind.ARTICLE) >= 3 and store.count(Kind.LECTURE) >= 2
    assert (Path(env["DAGSTER_HOME"]) / "dagster.yaml").is_file()
    assert os.listdir(Path(env["DAGSTER_HOME"]) / "history")
