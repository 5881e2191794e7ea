"""Indexing and search benchmark: throughput vs bare encode, incremental costs, search latency, memory.

    .venv/bin/python bench/bench_index.py [--sizes 1000 10000] [--search-chunks 100000] [--output PATH]

Writes bench/results/index.json (or --output). Each corpus size runs in a fresh subprocess so its peak RSS is
its own. Figures:
- end to end (ingest + chunk + embed + store) and index-stage tokens/s and chunks/s, and the bare
  encode of all the same chunk texts in the same process: the configured embedder's own
  ``embed_passages`` (the default USE model, or MiniLM's ``model.encode`` behind it). The first
  index is timed ``--repeats`` times (each over an emptied chunk table, FAISS folder and embedding
  cache), alternating with as many bare encodes; the ratio is bare / index of the best of each
  (the least disturbed run, as ``timeit`` advises), with every run, the ratio of the medians and
  the median of the paired ratios (each index against the bare encode run right after it: a shared
  VM's slow minutes slow both alike) kept beside it, in wall seconds and in CPU seconds of all
  threads. Dialogues are short (one exchange, one answer paragraph: one or two chunks each) so that
  10,000 of them embed in minutes on two CPU cores;
- a re-run with no changes, and a re-run after changing one file, as a share of the full run;
- search p50/p95 per mode over a synthetic table of --search-chunks chunks.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"

CORPUS_CHILD = r"""
import json, os, resource, shutil, statistics, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from bench_ingest import make_vault
from memory_pipeline.config import Config
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.sync import sync_index
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.tokens import count_tokens

work, size, repeats = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
make_vault(work / "vault", size, seed=size, max_exchanges=1, max_answer_paragraphs=1)
config = Config(storage_root=work / "storage", sources={"dialogues": [work / "vault"]})
embedder = load_embedder(config.embedding)
embedder.embed_passages(["warm up"])  # weights loaded before any timing, as MiniLM's are by load_embedder
import faiss  # a once-per-process import (~0.3 CPU-s) like the model load: not indexing work
out = {"documents": size, "shape": "one exchange per dialogue, one answer paragraph", "model_id": embedder.model_id,
       "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}

def timed(work):
    t0, c0 = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - t0, time.process_time() - c0, result

def index():
    return sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)

def run():
    ingest_s, ingest_cpu, _ = timed(lambda: ingest_all(config))
    index_s, index_cpu, report = timed(index)
    run.cpu = (ingest_cpu, index_cpu)
    return ingest_s, index_s, report

def forget_index():  # the chunk table, FAISS files and embedding cache gone: the next index is a first one again
    shutil.rmtree(config.lancedb_uri)
    shutil.rmtree(config.faiss_dir)
    config.embedding_cache_path.unlink()

ingest_s, index_s, report = run()
ingest_cpu, index_cpu = run.cpu
pipeline_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any bare encode of all chunks
lancedb_store = __import__("memory_pipeline.index.lancedb_store", fromlist=["ChunkStore"])
texts = [r["text"] for r in lancedb_store.ChunkStore(config.lancedb_uri, embedder.model_id).rows(["text"])]
tokens = sum(count_tokens(t) for t in texts)
index_runs, bare_runs = [(index_s, index_cpu)], []
for repeat in range(repeats):
    bare_s, bare_cpu, _ = timed(lambda: embedder.embed_passages(texts))
    bare_runs.append((bare_s, bare_cpu))
    if repeat + 1 < repeats:
        forget_index()
        again_s, again_cpu, report = timed(index)
        index_runs.append((again_s, again_cpu))
best_index, best_bare = min(index_runs), min(bare_runs)
median_index, median_bare = statistics.median(s for s, _ in index_runs), statistics.median(s for s, _ in bare_runs)
total_s = ingest_s + best_index[0]
out["full"] = {"chunks": len(texts), "tokens": tokens, "ingest_s": round(ingest_s, 2),
               "index_s": round(best_index[0], 2),
               "ingest_cpu_s": round(ingest_cpu, 2), "index_cpu_s": round(best_index[1], 2),
               "embed_s": report.embed_seconds, "end_to_end_s": round(total_s, 2),
               "end_to_end_chunks_per_s": round(len(texts) / total_s, 1),
               "end_to_end_tokens_per_s": round(tokens / total_s, 1),
               "index_chunks_per_s": round(len(texts) / best_index[0], 1),
               "index_tokens_per_s": round(tokens / best_index[0], 1),
               "index_runs_s_cpu_s": [[round(s, 2), round(c, 2)] for s, c in index_runs]}
out["bare_encode"] = {"chunks": len(texts), "seconds": round(best_bare[0], 2), "cpu_s": round(best_bare[1], 2),
                      "chunks_per_s": round(len(texts) / best_bare[0], 1),
                      "tokens_per_s": round(tokens / best_bare[0], 1),
                      "runs_s_cpu_s": [[round(s, 2), round(c, 2)] for s, c in bare_runs]}
out["ratio_index_vs_bare"] = round(best_bare[0] / best_index[0], 3)
out["ratio_index_vs_bare_median"] = round(median_bare / median_index, 3)
paired = [bare / index for (index, _), (bare, _) in zip(index_runs, bare_runs)]  # each index, then its bare encode
out["ratio_index_vs_bare_paired_median"] = round(statistics.median(paired), 3)
# CPU seconds of all threads: what the neighbours on a shared machine barely move
out["ratio_index_vs_bare_cpu"] = round(best_bare[1] / best_index[1], 3)
out["ratio_end_to_end_vs_bare"] = round(best_bare[0] / total_s, 3)

i, x, rep = run()
out["no_change_rerun"] = {"seconds": round(i + x, 3), "share_of_full": round((i + x) / total_s, 4),
                          "embedded": rep.embedded}

victim = sorted((work / "vault").rglob("*.md"))[size // 2]
new_turn = "\n>[!nexus_user] **User** - 01.01.2026 at 10:00\n> Новый вопрос про темп бега на марафоне?\n"
victim.write_text(victim.read_text(encoding="utf-8") + new_turn, encoding="utf-8")
i, x, rep = run()
out["one_changed_file"] = {"seconds": round(i + x, 3), "share_of_full": round((i + x) / total_s, 4),
                           "embedded": rep.embedded, "docs_indexed": rep.docs_indexed}
out["peak_rss_mb"] = round(pipeline_peak_mb, 1)
out["peak_rss_mb_with_bare_encodes_and_reruns"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
print(json.dumps(out))
"""

SEARCH_CHILD = r"""
import json, random, resource, statistics, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[3])
from bench_ingest import WORDS_EN, WORDS_RU
from memory_pipeline.config import Config
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.sync import open_stores, sync_faiss
from memory_pipeline.records import Chunk, Kind, sha256_text, stable_id
from memory_pipeline.index.search import MODES, Searcher

work, total = Path(sys.argv[1]), int(sys.argv[2])
config = Config(storage_root=work / "storage")
embedder = load_embedder(config.embedding)
store, faiss_index = open_stores(config, embedder.model_id, embedder.dimension)
rng = random.Random(5)
nrng = np.random.default_rng(5)
t0 = time.perf_counter()
per_doc = 10
for start in range(0, total, 5000):
    chunks, keys, vectors = [], {}, {}
    for n in range(start, min(total, start + 5000)):
        doc = f"doc{n // per_doc}"
        words = WORDS_RU if n % 5 else WORDS_EN
        text = " ".join(rng.choice(words) for _ in range(rng.randint(30, 120)))
        h = sha256_text(text + str(n))
        chunks.append(Chunk(chunk_id=stable_id(doc, h), doc_id=doc, kind=Kind.DIALOGUE,
                            title=f"Разговор {n // per_doc}", source_path=f"/vault/{doc}.md", text=text,
                            text_hash=h, ordinal=n % per_doc, turn_index=n % per_doc))
        keys[doc] = "k"
        v = nrng.normal(size=embedder.dimension).astype(np.float32)
        vectors[h] = v / np.linalg.norm(v)
    store.replace_documents(keys, chunks, vectors)
store.optimize()
sync_faiss(store, faiss_index)
build_s = time.perf_counter() - t0
searcher = Searcher(config, embedder=embedder)
queries = [" ".join(rng.choice(WORDS_RU if i % 3 else WORDS_EN) for _ in range(rng.randint(2, 6))) for i in range(120)]
out = {"chunks": store.count(), "faiss_index": faiss_index.kind, "build_s": round(build_s, 1), "modes": {}}
for mode in MODES:
    searcher.search(queries[0], k=10, mode=mode, log=False)
    lat = []
    for q in queries:
        t = time.perf_counter()
        searcher.search(q, k=10, mode=mode, log=False)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    out["modes"][mode] = {"p50_ms": round(statistics.median(lat), 2), "p95_ms": round(lat[int(0.95 * len(lat)) - 1], 2),
                          "queries": len(lat)}
out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(out))
"""


def run_child(prefix: str, code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python (its own peak RSS) over a new temp folder.

    Its last stdout line is the JSON result.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, str(work), *args, str(Path(__file__).resolve().parent)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-4000:])
        out = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--search-chunks", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="first indexes (and bare encodes) timed per size")
    parser.add_argument("--output", type=Path, default=RESULTS / "index.json", help="the JSON (a trial run: elsewhere)")
    args = parser.parse_args()
    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "corpora": {},
    }
    for size in args.sizes:
        results["corpora"][str(size)] = run_child(f"bench_index_{size}_", CORPUS_CHILD, str(size), str(args.repeats))
    if args.search_chunks:
        results["search"] = run_child("bench_search_", SEARCH_CHILD, str(args.search_chunks))
    results["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
