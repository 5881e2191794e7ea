"""memory_job on dagster-dask over a local distributed cluster of 2 worker processes, parsing fanned out over
4 source-path hash ranges and embedding over 4 document-hash ranges, gives the same documents, chunks, items
and training sets as the in-process run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from memory_pipeline import cli
from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV, load_config
from memory_pipeline.index.embedding import embedder_model_id
from memory_pipeline.index.fanout import partition_of
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import load_reports
from memory_pipeline.scoring.assignments import load_assignments

pytestmark = pytest.mark.slow  # two full memory runs, one on a dask cluster of 2 worker processes

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CORPUS = {
    "dialogues": [
        "dialogues/chatgpt_single.json",
        "dialogues/claude_export.json",
        "dialogues/chat_conversations.jsonl",
        "nexus_obsidian",
    ],
    "articles": ["articles/training_notes.md", "articles/plain_notes.txt", "articles/marathon_pacing.pdf"],
    "lectures": ["lectures/coach_talk.srt", "lectures/interval_qa.vtt", "lectures/timed_transcript.txt"],
}
DASK = {
    "executor": "dask",
    "executor_config": {"cluster": {"local": {"n_workers": 2, "threads_per_worker": 1}}},
    "ingest_partitions": 4,
    "embed_partitions": 4,
}


def _memory_run(root: Path, sources: dict, scaleout: dict) -> tuple[Path, Path]:
    """memory_job through the dagster CLI on a config with this scaleout section, then `datasets build`;
    returns (config file, storage root)."""
    root.mkdir(parents=True)
    config_file = root / "memory_pipeline.yaml"
    adapters = yaml.safe_load((REPO / "memory_pipeline.yaml").read_text(encoding="utf-8"))["adapters"]
    raw = {"sources": sources, "adapters": adapters, "promote": {"lora_threshold": 0.35}, "scaleout": scaleout}
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    storage = root / "storage"
    home = storage / "dagster_home"
    home.mkdir(parents=True)
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        MEMORY_PIPELINE_CONFIG=str(config_file),
        MEMORY_PIPELINE_STORAGE=str(storage),
    )
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "job",
        "execute",
        "-f",
        "definitions.py",
        "-j",
        "memory_job",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    built = CliRunner().invoke(
        cli.app,
        ["--config", str(config_file), "--storage", str(storage), "datasets", "build"],
        env={CONFIG_ENV: None, STORAGE_ENV: None},
    )
    assert built.exit_code == 0, built.output
    return config_file, storage


def _steps(storage: Path) -> dict[str, str]:
    """Step key -> status of the one run on the storage root's Dagster instance."""
    with dg.DagsterInstance.from_config(str(storage / "dagster_home")) as instance:
        [run] = instance.get_runs()
        return {stats.step_key: stats.status.value for stats in instance.get_run_step_stats(run.run_id)}


def _chunks(config_file: Path, storage: Path) -> dict[str, tuple]:
    config = load_config(config_file, storage=storage)
    store = ChunkStore(config.lancedb_uri, embedder_model_id(config.embedding))
    return {
        r["chunk_id"]: (r["doc_id"], r["text"], np.asarray(r["vector"]))
        for r in store.rows(["chunk_id", "doc_id", "text", "vector"])
    }


def _documents(config_file: Path, storage: Path) -> dict[str, str]:
    config = load_config(config_file, storage=storage)
    return {d.doc_id: d.model_dump_json() for d in DocumentStore(config.documents_dir).iter_documents()}


def _items(config_file: Path, storage: Path) -> dict[str, tuple]:
    config = load_config(config_file, storage=storage)
    return {a.item_id: (a.tier, tuple(a.adapters), round(a.score, 3)) for a in load_assignments(config)}


def _datasets(storage: Path) -> dict[str, str]:
    cards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((storage / "datasets").glob("*/*/card.json"))]
    return {card["adapter"]: card["content_hash"] for card in cards}


def test_memory_job_on_dask_with_4_partitions_matches_the_in_process_run(tmp_path):
    sources = {}
    for kind, names in CORPUS.items():
        folder = tmp_path / "sources" / kind
        folder.mkdir(parents=True)
        for name in names:
            source = FIXTURES / name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / source.name)
        sources[kind] = [str(folder)]

    local = _memory_run(tmp_path / "in_process", sources, {"executor": "in_process"})
    dask = _memory_run(tmp_path / "dask", sources, DASK)

    documents = _documents(*local)
    assert documents and _documents(*dask) == documents
    reports = load_reports(load_config(dask[0], storage=dask[1]))
    assert sum(r.files_staged for r in reports.values()) > 0  # the kinds' steps took what the ranges parsed

    chunks_local, chunks_dask = _chunks(*local), _chunks(*dask)
    assert chunks_local and set(chunks_dask) == set(chunks_local)
    for chunk_id, (doc_id, text, vector) in chunks_local.items():
        assert chunks_dask[chunk_id][:2] == (doc_id, text)
        assert np.allclose(chunks_dask[chunk_id][2], vector, atol=1e-5)
    partitions = {partition_of(doc_id, 4) for doc_id, _, _ in chunks_local.values()}
    assert partitions == {0, 1, 2, 3}  # every range had documents to embed

    items = _items(*local)
    assert items and _items(*dask) == items
    assert _datasets(local[1]) and _datasets(dask[1]) == _datasets(local[1])

    # The dask run parsed and embedded in the 4 range steps each, every one run and succeeded (dagster-dask can
    # leave steps out of a run it reports as a success), then committed in the kinds' steps and in chunk_index;
    # the in-process run had one range step of each.
    dask_steps, local_steps = _steps(dask[1]), _steps(local[1])
    assert all(dask_steps.get(f"parsed_sources.parse_range_{p}") == "SUCCESS" for p in range(4)), dask_steps
    assert "parsed_sources.parse_range_0" in local_steps and "parsed_sources.parse_range_1" not in local_steps
    assert all(dask_steps.get(f"chunk_embeddings.embed_range_{p}") == "SUCCESS" for p in range(4)), dask_steps
    assert dask_steps["chunk_embeddings.embedding_totals"] == dask_steps["chunk_index"] == "SUCCESS"
    assert "chunk_embeddings.embed_range_0" in local_steps and "chunk_embeddings.embed_range_1" not in local_steps
    assert set(dask_steps.values()) == set(local_steps.values()) == {"SUCCESS"}
