"""Peak RSS of ingest + index per stage, 1,000 vs 10,000 documents, with the model taken out.

    .venv/bin/python bench/bench_index_memory.py [--sizes 1000 10000]

bench_index.py's peak RSS includes the embedding model's activations and its own bare-encode
sample; this one swaps the model for a stand-in that returns random unit vectors instantly (and
counts model tokens as characters / 2, so its chunk counts differ a little from bench_index's), so
what is left is what the pipeline itself holds (documents, chunk batches, LanceDB, FAISS) and
how it grows with the corpus. Each size runs in a fresh subprocess; RSS is sampled every 20 ms
and the peak is kept per stage. Writes bench/results/index_memory.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_index import run_child

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, sys, threading, time
from pathlib import Path
import numpy as np, psutil
sys.path.insert(0, sys.argv[3])
from bench_ingest import make_vault
import memory_pipeline.index.sync as indexer
from memory_pipeline.config import Config
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.ingest.pipeline import ingest_all

class InstantEmbedder:
    model_id, dimension, max_tokens = "instant-random-384", 384, 256
    def count_tokens(self, text): return len(text) // 2
    def embed_passages(self, texts, *, show_progress=False):
        v = np.random.default_rng(len(texts)).normal(size=(len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    def embed_query(self, text): return self.embed_passages([text])[0]

work, size = Path(sys.argv[1]), int(sys.argv[2])
process, stage, peaks = psutil.Process(), ["generate"], {}
def sample():
    while True:
        peaks[stage[0]] = max(peaks.get(stage[0], 0.0), process.memory_info().rss / 2**20)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

def staged(name, function):
    def wrapper(*args, **kwargs):
        stage[0] = name
        try:
            return function(*args, **kwargs)
        finally:
            stage[0] = "index: chunk, embed, store"
    return wrapper

make_vault(work / "vault", size, seed=size, max_exchanges=1, max_answer_paragraphs=1)
config = Config(storage_root=work / "storage", sources={"dialogues": [work / "vault"]})
stage[0] = "ingest"
ingest_all(config)
ChunkStore.optimize = staged("index: optimize (FTS, compaction)", ChunkStore.optimize)
indexer.sync_faiss = staged("index: FAISS sync", indexer.sync_faiss)
stage[0] = "index: chunk, embed, store"
report = indexer.sync_index(config, DocumentStore(config.documents_dir), InstantEmbedder(), progress=False)
time.sleep(0.1)
print(json.dumps({"documents": size, "chunks": report.chunks_total,
                  "peak_rss_mb_by_stage": {k: round(v, 1) for k, v in peaks.items()},
                  "peak_rss_mb": round(max(peaks.values()), 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    args = parser.parse_args()
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "corpora": {}}
    for size in args.sizes:
        results["corpora"][str(size)] = run_child(f"bench_index_memory_{size}_", CHILD, str(size))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'index_memory.json'}")


if __name__ == "__main__":
    main()
