"""Routing evaluation: a labelled set of items, routed as promote routes them, scored per adapter.

The set (``eval_sets/routing_set.jsonl``) holds units of the demo corpus and the real Russian
conversations in it, each labelled by reading: ``core`` (the user states his own view, plan,
self-assessment, …), a topic (``sport``: substantively about sport), both, or neither. Units are
whole exchanges, single sentences of the user's turns, paragraphs of the assistant's answers,
article sections and lecture segments, so the set has enough of each voice. Each unit is routed
with ``route_item`` from its own text and the vector of that text; ``choose_adapters`` decides.
The set is split in halves (by line: odd lines ``tune``, even ``report``) so the topic
threshold can be chosen on one half and reported on the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.jsonl import read_rows
from memory_pipeline.records import Kind
from memory_pipeline.scoring.routing import PassageEmbedder, build_profiles, choose_adapters, route_item, routing_texts

DEFAULT_ROUTING_SET = Path(__file__).resolve().parents[1] / "eval_sets" / "routing_set.jsonl"
PHRASINGS_SET = DEFAULT_ROUTING_SET.with_name("routing_phrasings.jsonl")
"""Single statements and short exchanges in the user's own register (dropped pronouns, "Гипотеза:", plans
about his AI, sport words in passing), not from the demo corpus: routing only, no promotion figures."""
THRESHOLD_GRID = tuple(round(0.2 + 0.025 * i, 3) for i in range(13))


class RoutingUnit(BaseModel):
    id: str
    source: str
    title: str
    unit: Literal["exchange", "user_sentence", "answer_paragraph", "section", "segment"]
    kind: Kind
    labels: list[str] = Field(description="adapters the unit belongs to; [] = neither")
    note: str | None = None
    user_text: str = ""
    text: str
    split: Literal["tune", "report"] = "tune"


def load_routing_set(path: Path | str | None = None) -> list[RoutingUnit]:
    """The labelled units (the bundled set by default); a bad line is an error naming the file and line."""
    path = Path(path) if path else DEFAULT_ROUTING_SET
    return read_rows(path, RoutingUnit, what="routing unit", overrides=_alternate_split)


def _alternate_split(line_number: int) -> dict[str, str]:
    """Odd lines tune the topic threshold, even lines report on it."""
    return {"split": "tune" if line_number % 2 else "report"}


def precision_recall(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, float | int]:
    tp = sum(1 for p, g in zip(predicted, gold, strict=True) if p and g)
    fp = sum(1 for p, g in zip(predicted, gold, strict=True) if p and not g)
    fn = sum(1 for p, g in zip(predicted, gold, strict=True) if g and not p)
    return {
        "positives": tp + fn,
        "routed": tp + fp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
    }


def route_units(
    config: Config, embedder: PassageEmbedder, units: Sequence[RoutingUnit]
) -> tuple[list[dict], np.ndarray]:
    """Each unit's routes (as promote stores them) and its vector."""
    texts = routing_texts(config.adapters)
    vectors_by_text = dict(zip(texts, embedder.embed_passages(texts), strict=True)) if texts else {}
    profiles = build_profiles(config.adapters, vectors_by_text)
    vectors = embedder.embed_passages([u.text for u in units])
    routes = [
        route_item(kind=u.kind, text=u.text, user_text=u.user_text, vector=v, profiles=profiles, config=config.promote)
        for u, v in zip(units, vectors, strict=True)
    ]
    return routes, vectors


def evaluate_routing(config: Config, embedder: PassageEmbedder, units: Sequence[RoutingUnit] | None = None) -> dict:
    """Precision and recall per adapter, overall and per split; the topic threshold tuned on ``tune``; misroutes."""
    units = list(units if units is not None else load_routing_set())
    routes, _ = route_units(config, embedder, units)
    names = [a.name for a in config.adapters]
    threshold = config.promote.route_threshold

    def figures(chosen: Sequence[list[str]], select) -> dict:
        picked = [i for i, u in enumerate(units) if select(u)]
        return {
            name: precision_recall([name in chosen[i] for i in picked], [name in units[i].labels for i in picked])
            for name in names
        }

    chosen = [choose_adapters(r, threshold, names) for r in routes]
    grid = []
    for candidate in THRESHOLD_GRID:
        picks = [choose_adapters(r, candidate, names) for r in routes]
        grid.append(
            {
                "route_threshold": candidate,
                "tune": figures(picks, lambda u: u.split == "tune"),
                "report": figures(picks, lambda u: u.split == "report"),
            }
        )
    topics = [n for n in names if n != "core"]

    def tune_key(row: dict) -> tuple:
        # Topic precision first (the target is >= 0.9), then recall.
        scores = [row["tune"][n] for n in topics]
        precise = min((s["precision"] >= 0.9 for s in scores), default=True)
        return (precise, sum(s["recall"] for s in scores), -row["route_threshold"])

    best = max(grid, key=tune_key) if grid else None
    unit_kinds = sorted({u.unit for u in units})
    return {
        "units": len(units),
        "labels": {name: sum(1 for u in units if name in u.labels) for name in names}
        | {"neither": sum(1 for u in units if not u.labels)},
        "model_id": getattr(embedder, "model_id", ""),
        "route_threshold": threshold,
        "all": figures(chosen, lambda u: True),
        "tune": figures(chosen, lambda u: u.split == "tune"),
        "report": figures(chosen, lambda u: u.split == "report"),
        "by_unit": {unit: figures(chosen, lambda u, unit=unit: u.unit == unit) for unit in unit_kinds},
        "threshold_tuning": {"grid": grid, "best_route_threshold": best["route_threshold"] if best else threshold},
        "misroutes": [
            {"id": u.id, "labels": u.labels, "routed": c, "routes": r}
            for u, c, r in zip(units, chosen, routes, strict=True)
            if set(c) != set(u.labels)
        ],
    }
