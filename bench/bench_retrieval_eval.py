"""Retrieval quality on the bundled hand-written question set, per embedding model and search mode.

Indexes the demo corpus (which holds the four real Russian conversations of the shared samples)
into a temporary storage once per model, then runs ``evaluate_questions``: recall@1/5/10 and MRR
per mode on all questions, on the tune and report splits and on the cross-lingual ones, and the
hybrid fusion weight tuned on the tune split with its figures on the report split. The
self-supervised check runs beside it for comparison. Writes bench/results/retrieval_eval.json.

    .venv/bin/python bench/bench_retrieval_eval.py [--models packaged:use-multilingual-v3 packaged:all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from memory_pipeline.config import load_config
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.evaluation import evaluate_questions, evaluate_retrieval
from memory_pipeline.index.search import Searcher
from memory_pipeline.index.sync import sync_index
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "retrieval_eval.json"


def run(model: str, storage: Path) -> dict:
    config = load_config(ROOT / "memory_pipeline.yaml", storage=storage)
    config = config.model_copy(update={"embedding": config.embedding.model_copy(update={"model": model})})
    started = time.perf_counter()
    ingest_all(config)
    embedder = load_embedder(config.embedding)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    indexed = time.perf_counter() - started
    searcher = Searcher(config, embedder=embedder)
    return {
        "model": model,
        "index_seconds": round(indexed, 1),
        "question_set": evaluate_questions(config, searcher=searcher),
        "self_supervised": evaluate_retrieval(config, searcher=searcher),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["packaged:use-multilingual-v3", "packaged:all-MiniLM-L6-v2"])
    args = parser.parse_args()
    runs = []
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run(model, Path(tmp)))
        qs = runs[-1]["question_set"]
        recall = {m: qs["report"][m]["recall@5"] for m in ("vector", "fts", "hybrid")}
        print(model, "report recall@5:", recall, "tuned fts weight:", qs["fusion_tuning"]["best_fts_weight"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "corpus": "demo/", "runs": runs}
    RESULTS.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
