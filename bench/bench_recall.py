"""Proxy memory retrieval latency: what each chat request through the proxy spends before it is forwarded.

    .venv/bin/python bench/bench_recall.py [--documents 2000] [--queries 300] [--workdir NEW_DIR]

Builds bench_service's generated Russian/English corpus, ingests, indexes and scores it in-process,
then times, on a warm service app, the proxy's memory step for chat requests: hybrid search with
the tier rules and priors, the selection (similarity threshold, one memory per turn, not already in
the conversation) and the dated, sourced memory block; and, separately, ``model: "auto"`` routing.
Half the queries name a time span ("на прошлой неделе", "two months ago"), so the dateparser path is
in the figures. Writes bench/results/recall.json. The target is p50 <= 50 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_service import QUERIES, make_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPANS = ["на прошлой неделе", "два месяца назад", "last week", "two months ago", "в прошлом году"]


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {
        "p50": round(statistics.median(ordered), 2),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="a new folder to work in (kept); default: a temp folder, removed"
    )
    args = parser.parse_args()

    from memory_pipeline.config import Config
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.search import Searcher
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.ingest.pipeline import ingest_all
    from memory_pipeline.scoring import run_promotion
    from memory_pipeline.service.app import create_app
    from memory_pipeline.service.proxy import _memories_for, choose_adapters_for

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_recall_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        corpus = make_corpus(workdir / "corpus", args.documents)
        config = Config(
            storage_root=workdir / "storage",
            sources={"dialogues": [workdir / "corpus" / "dialogues"], "articles": [workdir / "corpus" / "articles"]},
        )
        started = time.perf_counter()
        ingest_all(config)
        embedder = load_embedder(config.embedding)
        index_report = sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
        prepared = time.perf_counter() - started
        promotion = run_promotion(config, progress=False, embedder=embedder)
        app = create_app(config, searcher=Searcher(config, embedder=embedder))

        rng = random.Random(11)
        requests = []
        for n in range(args.queries):
            topic = rng.choice(list(QUERIES))
            question = rng.choice(QUERIES[topic][rng.choice(["ru", "en"])])
            if n % 2:
                question = f"{question} {rng.choice(SPANS)}"
            requests.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}])
        for messages in requests[:10]:  # warm-up: first FTS index open, dateparser's language data
            _memories_for(app, messages)
            choose_adapters_for(app, "auto", messages[-1]["content"])

        searcher = app.state.searcher
        memory_ms, routing_ms, request_ms, injected = [], [], [], []
        for messages in requests:
            # the pool repeats questions: every request embeds afresh, as a new one would
            searcher._query_vectors.clear()
            t0 = time.perf_counter()
            block = _memories_for(app, messages)
            memory_ms.append((time.perf_counter() - t0) * 1000)
            injected.append(max(len(block.splitlines()) - 1, 0))
            searcher._query_vectors.clear()
            t0 = time.perf_counter()
            choose_adapters_for(app, "auto", messages[-1]["content"])  # routing alone, embedding included
            routing_ms.append((time.perf_counter() - t0) * 1000)
            searcher._query_vectors.clear()
            t0 = time.perf_counter()
            choose_adapters_for(
                app, "auto", messages[-1]["content"]
            )  # an auto request: routing, then memories (one embedding)
            _memories_for(app, messages)
            request_ms.append((time.perf_counter() - t0) * 1000)
        memory = _percentiles(memory_ms)
        result = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_at_start": list(os.getloadavg()),
            },
            "started": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "settings": {
                "documents": args.documents,
                "queries": args.queries,
                "memory_k": config.service.memory_k,
                "memory_min_similarity": config.service.memory_min_similarity,
                "time_span_share": 0.5,
            },
            "embedding_model": embedder.model_id,
            "corpus": corpus,
            "index": {"chunks": getattr(index_report, "chunks_total", None), "prepare_seconds": round(prepared, 1)},
            "tiers": promotion.tiers,
            "proxy_memory_ms": memory,
            "auto_routing_ms": _percentiles(routing_ms),
            "auto_request_ms": _percentiles(request_ms),
            "memories_injected": {
                "mean": round(statistics.mean(injected), 2),
                "none": sum(1 for i in injected if i == 0),
            },
            "target": {"p50_ms": 50, "met": memory["p50"] <= 50},
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "recall.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result, ensure_ascii=False, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
