"""Routing quality on the bundled labelled routing set: precision and recall per adapter.

Routes every unit of ``memory_pipeline/eval_sets/routing_set.jsonl`` (176 units of the demo
corpus and the real Russian conversations in it, labelled core / sport / neither by reading) with
the adapters, thresholds and embedding model of memory_pipeline.yaml, as ``promote`` routes
items. Reports precision and recall per adapter on all units, on the tune and report halves and
per kind of unit, the topic threshold that the tune half prefers, and every misroute with the
reasons (stance phrases, nearest example, similarity).

Then promotion: ingests, indexes and scores the configured sources (the demo corpus the units come
from) in a temporary storage, and reports which units end up in each adapter's training set
(``scoring/promotion_eval.py``): before (no stance in importance), as configured, and the
thresholds the tune half prefers. Both routing and promotion are also reported without the adapters'
``contrast`` texts (``without_contrast``), the comparison they were chosen by on the tune half.
Routing alone also runs on ``routing_phrasings.jsonl`` (66 statements in the user's own register,
outside the demo corpus): ``phrasings``.
Writes bench/results/routing.json.

    .venv/bin/python bench/bench_routing.py [--model packaged:use-multilingual-v3] [--set my_labels.jsonl]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from memory_pipeline.config import Config, load_config
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.sync import sync_index
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.scoring.engine import run_promotion
from memory_pipeline.scoring.promotion_eval import evaluate_promotion, score_units
from memory_pipeline.scoring.routing_eval import PHRASINGS_SET, evaluate_routing, load_routing_set
from memory_pipeline.scoring.store import ScoreStore, scores_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "routing.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="embedding model (default: memory_pipeline.yaml's)")
    parser.add_argument("--set", dest="routing_set", default=None, help="labelled routing set JSONL (default: bundled)")
    args = parser.parse_args()
    config = load_config(ROOT / "memory_pipeline.yaml")
    if args.model:
        config = config.model_copy(update={"embedding": config.embedding.model_copy(update={"model": args.model})})
    started = time.perf_counter()
    embedder = load_embedder(config.embedding)
    units = load_routing_set(args.routing_set)
    result = evaluate_routing(config, embedder, units)
    result["seconds"] = round(time.perf_counter() - started, 1)
    plain = without_contrast(config)
    result["without_contrast"] = {part: evaluate_routing(plain, embedder, units)[part] for part in ("tune", "report")}
    result["promotion"], result["without_contrast"]["promotion"] = promotion(config, plain, embedder, units)
    phrasings = evaluate_routing(config, embedder, load_routing_set(PHRASINGS_SET))
    result["phrasings"] = {key: phrasings[key] for key in ("units", "labels", "all", "misroutes")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for part in ("all", "tune", "report"):
        print(part, {name: (f["precision"], f["recall"]) for name, f in result[part].items()})
    tuned = result["threshold_tuning"]["best_route_threshold"]
    print("route_threshold", result["route_threshold"], "tune prefers", tuned)
    print(f"{len(result['misroutes'])} misroutes")
    print("phrasings", _pairs(result["phrasings"]["all"]), f"{len(result['phrasings']['misroutes'])} misroutes")
    figures = result["promotion"]
    for name in ("before", "configured"):
        for part in ("tune", "report"):
            print("promoted", name, part, {a: (f["precision"], f["recall"]) for a, f in figures[name][part].items()})
    for part in ("tune", "report"):
        plain = result["without_contrast"]
        print("without contrast", part, "routed", _pairs(plain[part]), "promoted", _pairs(plain["promotion"][part]))
    print("tune prefers", figures["tuning"]["best"], "meets targets", figures["meets_targets"], f"; wrote {RESULTS}")


def _pairs(figures: dict) -> dict:
    return {name: (f["precision"], f["recall"]) for name, f in figures.items()}


def without_contrast(config: Config) -> Config:
    adapters = [a.model_copy(update={"contrast": []}) for a in config.adapters]
    return config.model_copy(update={"adapters": adapters})


def promotion(config: Config, plain: Config, embedder, units) -> tuple[dict, dict]:
    """Promotion figures of a real ingest, index and scoring run over the configured sources, in a temporary storage;
    and, from the same run, "ends up in the training set" as configured when routed by ``plain`` (no contrast texts)."""
    with tempfile.TemporaryDirectory(prefix="bench_routing_") as storage:
        config = config.model_copy(update={"storage_root": Path(storage)})
        ingest_all(config)
        sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
        now = datetime.now(UTC)
        run_promotion(config, now=now, progress=False, embedder=embedder)
        items = ScoreStore(scores_dir(config)).load_frame()
        scored, missing = score_units(config, embedder, units, items, now=now)
        scored_plain, _ = score_units(plain, embedder, units, items, now=now)
        configured = evaluate_promotion(plain, scored_plain, missing)["configured"]
        return evaluate_promotion(config, scored, missing), {part: configured[part] for part in ("tune", "report")}


if __name__ == "__main__":
    main()
