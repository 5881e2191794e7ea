"""Scoring throughput on a generated corpus: 10,000 documents, ~30,000 items, clustered vectors.

Items are generated directly (texts from topic vocabularies, vectors around topic centres,
dates over three years, 3% exact copies), so the benchmark measures scoring alone: a full first
run, an incremental run after 1% more documents, and a re-tier after a weight change.
Writes bench/results/bench_scoring.json.

    .venv/bin/python bench/bench_scoring.py [--docs 10000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from memory_pipeline.config import Config
from memory_pipeline.records import Kind
from memory_pipeline.scoring.items import Item, ItemUnit
from memory_pipeline.scoring.promote import ItemBatch, retier, update_scores
from memory_pipeline.scoring.routing import build_profiles, profile_texts
from memory_pipeline.scoring.store import ScoreState, ScoreStore, scores_dir

RESULTS = Path(__file__).parent / "results" / "bench_scoring.json"
TOPICS = 200
START = datetime(2022, 1, 1)


def generate(n_docs: int, dim: int, *, seed: int, first_doc: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(TOPICS, dim)).astype(np.float32)
    vocab = [f"w{i}" for i in range(20000)]
    items: list[Item] = []
    previous_texts: list[tuple[str, str]] = []
    for d in range(first_doc, first_doc + n_docs):
        doc_id = f"doc{d:06d}"
        topic = int(rng.integers(TOPICS))
        when = START + timedelta(days=float(rng.uniform(0, 3 * 365)))
        for turn in range(int(rng.integers(1, 6))):
            if previous_texts and rng.random() < 0.03:
                user, answer = previous_texts[int(rng.integers(len(previous_texts)))]
            else:
                words = rng.choice(100, size=int(rng.integers(20, 120))) + topic * 100
                user = " ".join(vocab[w] for w in words[: len(words) // 3])
                answer = " ".join(vocab[w] for w in words[len(words) // 3 :]) + "."
                previous_texts.append((user, answer))
            vector = centres[topic] + rng.normal(scale=1.2, size=dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            items.append(
                Item(
                    item_id=f"{doc_id}-{turn}",
                    doc_id=doc_id,
                    kind=Kind.DIALOGUE,
                    title=doc_id,
                    source_path=f"/bench/{doc_id}.json",
                    unit=ItemUnit(turn_index=2 * turn),
                    text=f"{user}\n\n{answer}",
                    user_text=user,
                    answer_text=answer,
                    created_at=when + timedelta(minutes=turn),
                    chunk_ids=[f"{doc_id}-c{turn}"],
                    vector=vector,
                )
            )
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(storage_root=Path(tmp))
        store = ScoreStore(scores_dir(config))
        rng = np.random.default_rng(3)
        profile_vectors = {t: (v := rng.normal(size=args.dim).astype(np.float32)) / np.linalg.norm(v) for a in config.adapters for t in profile_texts(a)}
        profiles = build_profiles(config.adapters, profile_vectors)
        now = START + timedelta(days=3 * 365)

        items = generate(args.docs, args.dim, seed=1)
        docs = {i.doc_id for i in items}
        t0 = time.perf_counter()
        state, first = update_scores(
            ScoreState.empty(), ItemBatch(items, docs, docs), config=config, now=now, model_id="bench", hits_by_chunk={}, profiles=profiles, profiles_key="p"
        )
        store.save(state)
        full_seconds = time.perf_counter() - t0

        extra = generate(max(1, args.docs // 100), args.dim, seed=2, first_doc=args.docs)
        extra_docs = {i.doc_id for i in extra}
        t0 = time.perf_counter()
        state, incremental = update_scores(
            store.load(), ItemBatch(extra, extra_docs, docs | extra_docs), config=config, now=now, model_id="bench", hits_by_chunk={}, profiles=profiles, profiles_key="p"
        )
        store.save(state)
        incremental_seconds = time.perf_counter() - t0

        config.promote.weights = {**config.promote.weights, "importance": 0.5}
        t0 = time.perf_counter()
        retiered = retier(config, now=now)
        retier_seconds = time.perf_counter() - t0

    result = {
        "benchmark": "scoring",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "documents": args.docs,
        "dim": args.dim,
        "full": {"items": first.items_total, "seconds": round(full_seconds, 2), "items_per_second": round(first.items_total / full_seconds, 1), "tiers": first.tiers},
        "incremental": {
            "documents_added": len(extra_docs),
            "items_new": incremental.items_new,
            "items_rescored": incremental.items_rescored,
            "signals_computed": incremental.signals_computed,
            "seconds": round(incremental_seconds, 2),
        },
        "retier": {"items": retiered.items_total, "seconds": round(retier_seconds, 2), "tiers": retiered.tiers},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
