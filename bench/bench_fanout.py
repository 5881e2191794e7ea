"""Index stage on the dask executor (2 workers) beside the in-process run: wall, CPU time, chunks/s, overhead.

    .venv/bin/python bench/bench_fanout.py [--size 10000] [--settings in_process dask_2w_2p dask_2w_4p]

Writes bench/results/fanout.json. One corpus (the index benchmark's shape: one exchange per dialogue) is
generated and ingested once, outside the timings; then each setting indexes its own copy of those documents,
with an empty embedding cache, by materializing chunk_embeddings, chunks and faiss_index through the dagster
CLI (a real instance):

- in_process: Dagster's in-process executor, embed_partitions 1 (the chunks step embeds on every core);
- dask_2w_2p / dask_2w_4p: dagster-dask on a local distributed cluster of 2 worker processes (one
  thread each, no dashboard), embedding in 2 / 4 document-hash ranges, then one committing chunks step.

Wall time is the whole command (Python start, code location load, cluster start, model load per worker),
which is what a user waits for; overhead = dask wall / in-process wall - 1. On 2 cores no speed-up is
expected: the point is what the fan-out costs. CPU time (the command and every process it waited for, the
dask workers included) and each step's duration come beside it, as does the load average before and after
each run: wall time on a machine others are using is noise, CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

# No dashboard: the bench measures the fan-out, not a web server the run does not need (dagster-dask passes
# the local block to distributed.LocalCluster as it is).
_LOCAL = {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None}
_DASK_2W = {"executor": "dask", "executor_config": {"cluster": {"local": _LOCAL}}}
SETTINGS = {
    "in_process": {"executor": "in_process"},
    "dask_2w_2p": {**_DASK_2W, "embed_partitions": 2},
    "dask_2w_4p": {**_DASK_2W, "embed_partitions": 4},
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _steps(dagster_home: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Step key -> seconds it ran, and -> CPU seconds its process spent meanwhile (the range steps report it)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs()
        stats = instance.get_run_step_stats(run.run_id)
        seconds = {s.step_key: round(s.end_time - s.start_time, 2) for s in stats if s.end_time and s.start_time}
        cpu = {}
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
            metadata = entry.dagster_event.step_output_data.metadata
            if "cpu_seconds" in metadata:
                cpu[entry.step_key] = metadata["cpu_seconds"].value
        return seconds, cpu


def index_with(work: Path, template: Path, name: str, scaleout: dict) -> dict:
    from memory_pipeline.config import load_config
    from memory_pipeline.index.embedding import embedder_model_id
    from memory_pipeline.index.lancedb_store import ChunkStore

    root = work / name
    storage = root / "storage"
    shutil.copytree(template, storage)
    config_file = root / "memory_pipeline.yaml"
    config_file.write_text(
        yaml.safe_dump({"sources": {"dialogues": [str(work / "vault")]}, "scaleout": scaleout}), encoding="utf-8"
    )
    home = storage / "dagster_home"
    home.mkdir()
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        MEMORY_PIPELINE_CONFIG=str(config_file),
        MEMORY_PIPELINE_STORAGE=str(storage),
    )
    dagster = str(Path(sys.executable).with_name("dagster"))
    selection = "chunk_embeddings,chunks,faiss_index"
    command = [dagster, "asset", "materialize", "-f", "definitions.py", "--select", selection]
    load_before, cpu_before = _load(), _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    steps_s, steps_cpu_s = _steps(home)
    config = load_config(config_file, storage=storage)
    chunks = ChunkStore(config.lancedb_uri, embedder_model_id(config.embedding)).count()
    out = {
        "scaleout": scaleout,
        "wall_s": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "chunks": chunks,
        "chunks_per_s": round(chunks / seconds, 2),
        "steps_s": steps_s,
        "range_steps_cpu_s": steps_cpu_s,
        "load_average": {"before": load_before, "after": _load()},
    }
    print(name, json.dumps(out), flush=True)
    shutil.rmtree(root)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="documents in the corpus")
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="settings to run, in order"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "fanout.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    load_before = _load()
    started = time.perf_counter()
    try:
        template = ingest_corpus(work, args.size)
        corpus_s = time.perf_counter() - started
        print(f"corpus of {args.size} documents generated and ingested in {corpus_s:.1f} s", flush=True)
        runs = {name: index_with(work, template, name, SETTINGS[name]) for name in args.settings}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "documents": args.size,
        "cores": os.cpu_count(),
        # Other work on the machine shows here: figures taken under load are noise-dominated.
        "load_average_1_5_15min": {"before": load_before, "after": _load()},
        "corpus_s": round(corpus_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    if "in_process" in runs:
        base = runs["in_process"]
        others = [name for name in runs if name != "in_process"]
        results["overhead_vs_in_process"] = {
            name: {
                "wall": round(runs[name]["wall_s"] / base["wall_s"] - 1, 3),
                "cpu": round(runs[name]["cpu_s"] / base["cpu_s"] - 1, 3),
            }
            for name in others
        }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
