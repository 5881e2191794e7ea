"""Index stage on the dask executor (2 workers) beside the in-process run: wall time, chunks/s, overhead.

    .venv/bin/python bench/bench_fanout.py [--size 1000]

Writes bench/results/fanout.json. One corpus (the index benchmark's shape: one exchange per dialogue) is
ingested once; then each setting indexes a fresh copy of those documents, with an empty embedding cache,
by materializing chunk_embeddings, chunks and faiss_index through the dagster CLI (a real instance):

- in_process: Dagster's in-process executor, embed_partitions 1 (the chunks step embeds; torch uses
  every core);
- dask_2w_2p / dask_2w_4p: dagster-dask on a local distributed cluster of 2 worker processes (one
  thread each), embedding in 2 / 4 document-hash ranges, then one committing chunks step.

Wall time is the whole command (Python start, code location load, cluster start, model load per worker),
which is what a user waits for; overhead = dask wall / in-process wall - 1. On 2 cores no speed-up is
expected: the point is what the fan-out costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

SETTINGS = {
    "in_process": {"executor": "in_process"},
    "dask_2w_2p": {"executor": "dask", "executor_config": {"cluster": {"local": {"n_workers": 2, "threads_per_worker": 1}}}, "embed_partitions": 2},
    "dask_2w_4p": {"executor": "dask", "executor_config": {"cluster": {"local": {"n_workers": 2, "threads_per_worker": 1}}}, "embed_partitions": 4},
}


def ingest_corpus(work: Path, size: int) -> Path:
    """The documents of ``size`` generated dialogues in a storage root (ingest only, no index)."""
    from bench_ingest import make_vault

    from memory_pipeline.config import Config
    from memory_pipeline.ingest.pipeline import ingest_all

    make_vault(work / "vault", size, seed=size, max_exchanges=1, max_answer_paragraphs=1)
    storage = work / "template"
    ingest_all(Config(storage_root=storage, sources={"dialogues": [work / "vault"]}))
    return storage


def index_with(work: Path, template: Path, name: str, scaleout: dict) -> dict:
    from memory_pipeline.config import load_config
    from memory_pipeline.index.embedding import embedder_model_id
    from memory_pipeline.index.lancedb_store import ChunkStore

    root = work / name
    storage = root / "storage"
    shutil.copytree(template, storage)
    config_file = root / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump({"sources": {"dialogues": [str(work / "vault")]}, "scaleout": scaleout}), encoding="utf-8")
    env = dict(os.environ, DAGSTER_HOME=str(storage / "dagster_home"), MEMORY_PIPELINE_CONFIG=str(config_file), MEMORY_PIPELINE_STORAGE=str(storage))
    (storage / "dagster_home").mkdir()
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-f", "definitions.py", "--select", "chunk_embeddings,chunks,faiss_index"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    config = load_config(config_file, storage=storage)
    chunks = ChunkStore(config.lancedb_uri, embedder_model_id(config.embedding)).count()
    out = {"scaleout": scaleout, "wall_s": round(seconds, 2), "chunks": chunks, "chunks_per_s": round(chunks / seconds, 2)}
    print(name, json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1000, help="documents in the corpus")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    load_before = os.getloadavg()[0]
    try:
        template = ingest_corpus(work, args.size)
        runs = {name: index_with(work, template, name, scaleout) for name, scaleout in SETTINGS.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = runs["in_process"]["wall_s"]
    results = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "documents": args.size,
        "cores": os.cpu_count(),
        # Other work on the machine shows here: figures taken under load are noise-dominated.
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "runs": runs,
        "overhead_vs_in_process": {name: round(run["wall_s"] / base - 1, 3) for name, run in runs.items() if name != "in_process"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fanout.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
