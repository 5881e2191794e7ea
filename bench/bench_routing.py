"""Routing quality on the bundled labelled routing set: precision and recall per adapter.

Routes every unit of ``memory_pipeline/eval_sets/routing_set.jsonl`` (176 units of the demo
corpus and the real Russian conversations in it, labelled core / sport / neither by reading) with
the adapters, thresholds and embedding model of memory_pipeline.yaml, as ``promote`` routes
items. Reports precision and recall per adapter on all units, on the tune and report halves and
per kind of unit, the topic threshold that the tune half prefers, and every misroute with the
reasons (stance phrases, nearest example, similarity). Writes bench/results/routing.json.

    .venv/bin/python bench/bench_routing.py [--model packaged:use-multilingual-v3] [--set my_labels.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from memory_pipeline.config import load_config
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.scoring.routing_eval import evaluate_routing, load_routing_set

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
    result = evaluate_routing(config, load_embedder(config.embedding), load_routing_set(args.routing_set))
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for part in ("all", "tune", "report"):
        print(part, {name: (f["precision"], f["recall"]) for name, f in result[part].items()})
    tuned = result["threshold_tuning"]["best_route_threshold"]
    print("route_threshold", result["route_threshold"], "tune prefers", tuned)
    print(f"{len(result['misroutes'])} misroutes; wrote {RESULTS}")


if __name__ == "__main__":
    main()
