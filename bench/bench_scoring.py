"""Scoring throughput on a generated corpus shaped like one user's memory: 10,000 documents, ~30,000 items.

Items are generated directly, so the benchmark measures scoring alone. 200 topics of unequal
popularity and spread (the tight ones recur within ``recurrence_radius`` across documents and
years); the centres of topics 0-7 (views, plans) and 8-15 (sport) lean towards the directions
given to the core and sport adapters' profile texts, so routing by similarity runs offline with
no embedding model. A few percent of user turns each carry one of the config's importance markers,
a stated view with an argument (core's stance markers) or sport keywords; some answers are
refusals or apologies, some exchanges a short "thanks" (junk), 3% exact copies; dates span three
years. Adapters and thresholds are those of memory_pipeline.yaml. Measured: a full first run, an
incremental run after 1% more documents, and a re-tier after a weight change, with tier and
per-adapter counts. Writes bench/results/bench_scoring.json.

    .venv/bin/python bench/bench_scoring.py [--docs 10000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from memory_pipeline.config import load_config
from memory_pipeline.records import Kind
from memory_pipeline.scoring.engine import ItemBatch, PromotionReport, retier, update_scores
from memory_pipeline.scoring.items import Item, ItemUnit
from memory_pipeline.scoring.routing import build_profiles, contrast_texts, profile_texts
from memory_pipeline.scoring.store import ScoreState, ScoreStore, scores_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "bench_scoring.json"
TOPICS = 200
LEANING = {"core": range(0, 8), "sport": range(8, 16)}
START = datetime(2022, 1, 1)
OPINIONS = ("Я думаю, что", "Мне кажется,", "На мой взгляд,", "I believe", "In my view,", "I disagree:")
ARGUMENTS = ("потому что", "поэтому", "например,", "because", "therefore", "however,")
SPORT = (
    "готовлюсь к марафону, пульс на длинных держу низким:",
    "после тренировки и футбола болят ноги:",
    "a training plan for the autumn marathon:",
    "running after a football match:",
)
REFUSALS = ("I'm sorry, but I can't help with that.", "К сожалению, я не могу помочь с этим.")
APOLOGIES = ("Прошу прощения, в прошлом ответе ошибка.", "I apologize for the confusion earlier.")


def topic_space(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Unit topic centres, their spread, their popularity (Zipf-like) and each adapter's direction."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(TOPICS, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    directions = {}
    for name, topics in LEANING.items():
        direction = rng.normal(size=dim)
        directions[name] = (direction / np.linalg.norm(direction)).astype(np.float32)
        centres[topics] += directions[name]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.6, 1.3, size=TOPICS)
    popularity = rng.permutation(1.0 / np.arange(1, TOPICS + 1) ** 0.8)
    return centres.astype(np.float32), spread, popularity / popularity.sum(), directions


def exchange(rng: np.random.Generator, words: Sequence[str], markers: Sequence[str]) -> tuple[str, str]:
    """One user turn and its answer: topic words, now and then a marker, a view, sport, a refusal."""
    if rng.random() < 0.02:
        return "спасибо!", "Пожалуйста!"
    n = len(words) // 3
    user, answer = " ".join(words[:n]), " ".join(words[n:]) + "."
    if rng.random() < 0.08:
        user = f"{rng.choice(OPINIONS)} {user}, {rng.choice(ARGUMENTS)} {' '.join(words[n : 2 * n])}."
    if rng.random() < 0.04:
        user = f"{rng.choice(SPORT)} {user}"
    if rng.random() < 0.03:
        user = f"{rng.choice(markers).capitalize()}: {user}"
    quality = rng.random()
    if quality < 0.02:
        answer = f"{rng.choice(REFUSALS)} {' '.join(words[n : n + 8])}."
    elif quality < 0.05:
        answer = f"{rng.choice(APOLOGIES)} {answer}"
    return user, answer


def generate(n_docs: int, dim: int, markers: Sequence[str], *, seed: int, first_doc: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    centres, spread, popularity, _ = topic_space(dim)
    vocab = [f"w{i}" for i in range(20000)]
    items: list[Item] = []
    previous_texts: list[tuple[str, str]] = []
    for d in range(first_doc, first_doc + n_docs):
        doc_id = f"doc{d:06d}"
        topic = int(rng.choice(TOPICS, p=popularity))
        when = START + timedelta(days=float(rng.uniform(0, 3 * 365)))
        for turn in range(int(rng.integers(1, 6))):
            if previous_texts and rng.random() < 0.03:
                user, answer = previous_texts[int(rng.integers(len(previous_texts)))]
            else:
                words = rng.choice(100, size=int(rng.integers(20, 120))) + topic * 100
                user, answer = exchange(rng, [vocab[w] for w in words], markers)
                previous_texts.append((user, answer))
            vector = centres[topic] + rng.normal(scale=spread[topic] / np.sqrt(dim), size=dim).astype(np.float32)
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


def counts(report: PromotionReport) -> dict:
    return {"tiers": report.tiers, "adapters": {f"lora:{name}": n for name, n in report.adapters.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    load_average = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(ROOT / "memory_pipeline.yaml", storage=tmp)
        store = ScoreStore(scores_dir(config))
        directions = topic_space(args.dim)[3]
        vectors = {t: directions[a.name] for a in config.adapters for t in profile_texts(a)}
        # The synthetic topic space has no direction for a contrast text: it matches nothing.
        vectors |= {t: np.zeros(args.dim, dtype=np.float32) for a in config.adapters for t in contrast_texts(a)}
        profiles = build_profiles(config.adapters, vectors)
        markers = config.promote.importance_markers
        now = START + timedelta(days=3 * 365)

        items = generate(args.docs, args.dim, markers, seed=1)
        docs = {i.doc_id for i in items}
        t0 = time.perf_counter()
        state, first = update_scores(
            ScoreState.empty(),
            ItemBatch(items, docs, docs),
            config=config,
            now=now,
            model_id="bench",
            hits_by_chunk={},
            profiles=profiles,
            profiles_key="p",
        )
        store.save(state)
        full_seconds = time.perf_counter() - t0

        extra = generate(max(1, args.docs // 100), args.dim, markers, seed=2, first_doc=args.docs)
        extra_docs = {i.doc_id for i in extra}
        t0 = time.perf_counter()
        state, incremental = update_scores(
            store.load(),
            ItemBatch(extra, extra_docs, docs | extra_docs),
            config=config,
            now=now,
            model_id="bench",
            hits_by_chunk={},
            profiles=profiles,
            profiles_key="p",
        )
        store.save(state)
        incremental_seconds = time.perf_counter() - t0

        config.promote.weights = {**config.promote.weights, "importance": 0.5}
        t0 = time.perf_counter()
        retiered = retier(config, now=now)
        retier_seconds = time.perf_counter() - t0

    result = {
        "benchmark": "scoring",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average,
        },
        "documents": args.docs,
        "dim": args.dim,
        "full": {
            "items": first.items_total,
            "seconds": round(full_seconds, 2),
            "items_per_second": round(first.items_total / full_seconds, 1),
            **counts(first),
        },
        "incremental": {
            "documents_added": len(extra_docs),
            "items_new": incremental.items_new,
            "items_rescored": incremental.items_rescored,
            "signals_computed": incremental.signals_computed,
            "seconds": round(incremental_seconds, 2),
            **counts(incremental),
        },
        "retier": {
            "items": retiered.items_total,
            "weights": config.promote.weights,
            "seconds": round(retier_seconds, 2),
            **counts(retiered),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
