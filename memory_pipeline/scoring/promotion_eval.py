"""Promotion evaluation: which labelled units end up in each adapter's LoRA training set.

Routing alone says where an item would go; an item reaches a training set only when its score
also reaches ``lora_threshold`` (``tiers.decide_tier``). This scores each unit of the labelled
routing set (``routing_eval``) the way promote scores an item, inside a real scoring run over
the corpus the units come from: its own text gives the text signals (density, importance with
the user's stance) and its route; the item it lies in gives what depends on the rest of the
memory (novelty, recurrence, duplicates, usage, recency, answer quality, age) and the content
floor (a sentence of the user's or an answer paragraph is judged inside its exchange). For whole
exchanges, sections and lecture windows that is the item itself.

``stance_importance`` and ``route_threshold`` are chosen on the ``tune`` half, at the configured
``lora_threshold``, against the issue's targets (core precision and recall >= 0.7, each topic's
precision >= 0.9), preferring values that keep meeting them wherever ``lora_threshold`` is set
in 0.40..0.55; they are reported on the ``report`` half.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from memory_pipeline.config import Config, PromoteConfig
from memory_pipeline.records import Kind
from memory_pipeline.scoring import signals as sg
from memory_pipeline.scoring.routing import CORE, PassageEmbedder
from memory_pipeline.scoring.routing_eval import RoutingUnit, precision_recall, route_units
from memory_pipeline.scoring.stance import own_stance
from memory_pipeline.scoring.tiers import combined_scores, decide_tier, own_content_chars
from memory_pipeline.timeutil import naive_utc

LORA_GRID = tuple(round(0.40 + 0.01 * i, 2) for i in range(16))
STANCE_GRID = (0.0, 0.25, 0.5, 0.75)
"""Up to 0.8 at most: the user's explicit "запомни" (a marker, 0.8) must count at least as much as an implicit view."""
ROUTE_GRID = (0.25, 0.3, 0.35, 0.4)
CORE_TARGET = 0.7
TOPIC_PRECISION_TARGET = 0.9
_FROM_ITEM = ("novelty", "redundancy", "recurrence", "quality", "usage", "recency")


@dataclass(frozen=True)
class ScoredUnit:
    """A unit with the signals promote would give it, its routes and the item it lies in."""

    unit: RoutingUnit
    item_id: str
    keeper: str
    exact_duplicate: bool
    signals: dict[str, float]
    markers_importance: float
    stance: float
    routes: dict[str, dict]
    age_days: float
    decay: float
    own_chars: int


def _normalized(text: str) -> str:
    return sg.normalize_text(text)


def _item_of(unit: RoutingUnit, items: pd.DataFrame, normalized: list[str]) -> int | None:
    """Row of the item of ``unit.source`` whose text holds the unit's text (the first, in item order)."""
    wanted = _normalized(unit.text)
    for row, (source, text) in enumerate(zip(items["source_path"], normalized, strict=True)):
        if str(source).endswith(unit.source) and wanted in text:
            return row
    return None


def score_units(
    config: Config,
    embedder: PassageEmbedder,
    units: Sequence[RoutingUnit],
    items: pd.DataFrame,
    *,
    now: datetime,
) -> tuple[list[ScoredUnit], list[str]]:
    """Each unit scored as promote scores an item (see the module docstring); ids of units found in no item.

    ``items`` is the scored item frame of a run over the units' sources (``ScoreStore.load_frame``).
    """
    routes, _ = route_units(config, embedder, units)
    normalized = [_normalized(t) for t in items["text"]]
    promote = config.promote
    scored: list[ScoredUnit] = []
    missing: list[str] = []
    for unit, route in zip(units, routes, strict=True):
        row = _item_of(unit, items, normalized)
        if row is None:
            missing.append(unit.id)
            continue
        item = items.iloc[row]
        own = unit.user_text if unit.kind is Kind.DIALOGUE else unit.text
        stance = own_stance(unit.kind, unit.text, unit.user_text, min_user_chars=promote.core_min_user_chars).score
        signals = {name: float(item[name]) for name in _FROM_ITEM}
        signals["density"] = sg.information_density(unit.text).value
        when = pd.Timestamp(item["created_at"] if pd.notna(item["created_at"]) else item["first_seen"])
        item_score = float(item["score"])
        scored.append(
            ScoredUnit(
                unit=unit,
                item_id=item["item_id"],
                keeper=item["cluster_keeper"],
                exact_duplicate=bool(item["exact_duplicate"]),
                signals=signals,
                markers_importance=sg.explicit_importance(own, promote.importance_markers).value,
                stance=stance,
                routes=route,
                age_days=(pd.Timestamp(naive_utc(now)) - when).total_seconds() / 86400.0,
                decay=float(item["recall_score"]) / item_score if item_score > 0 else 0.0,
                own_chars=own_content_chars(item["user_text"] if unit.kind is Kind.DIALOGUE else item["text"]),
            )
        )
    return scored, missing


def promoted(scored: Sequence[ScoredUnit], promote: PromoteConfig, adapter_names: Sequence[str]) -> list[list[str]]:
    """The adapters each unit's tier sends it to under ``promote`` (empty: not in any training set)."""
    importance = [max(s.markers_importance, promote.stance_importance * s.stance) for s in scored]
    columns = {
        name: np.array([s.signals.get(name, 0.0) for s in scored]) for name in sg.SIGNALS if name != "importance"
    }
    scores = combined_scores({**columns, "importance": np.array(importance)}, promote.weights) if scored else []
    chosen = []
    for s, score in zip(scored, scores, strict=True):
        decision = decide_tier(
            n_chars=len(s.unit.text),
            keeper=s.keeper,
            item_id=s.item_id,
            exact_duplicate=s.exact_duplicate,
            has_vector=True,
            score=float(score),
            routes=s.routes,
            config=promote,
            adapter_names=adapter_names,
            age_days=s.age_days,
            recall_score=float(score) * s.decay,
            own_chars=s.own_chars,
        )
        chosen.append(list(decision.adapters))
    return chosen


def _figures(
    scored: Sequence[ScoredUnit], chosen: Sequence[list[str]], names: Sequence[str], split: str | None
) -> dict:
    picked = [i for i, s in enumerate(scored) if split is None or s.unit.split == split]
    return {
        name: precision_recall([name in chosen[i] for i in picked], [name in scored[i].unit.labels for i in picked])
        for name in names
    }


def _compact(row: dict) -> dict:
    """A grid row as one line of figures: thresholds, then precision and recall per adapter on each half."""
    thresholds = {k: row[k] for k in ("lora_threshold", "stance_importance", "route_threshold")}
    halves = {
        part: {name: f"P {f['precision']:.2f} R {f['recall']:.2f}" for name, f in row[part].items()}
        for part in ("tune", "report")
    }
    return {**thresholds, **halves}


def meets_targets(figures: dict) -> bool:
    """The issue's targets: core precision and recall >= 0.7, every topic adapter's precision >= 0.9."""
    core = figures.get(CORE)
    topics_ok = all(f["precision"] >= TOPIC_PRECISION_TARGET for name, f in figures.items() if name != CORE)
    core_ok = core is None or (core["precision"] >= CORE_TARGET and core["recall"] >= CORE_TARGET)
    return core_ok and topics_ok


def evaluate_promotion(config: Config, scored: Sequence[ScoredUnit], missing: Sequence[str] = ()) -> dict:
    """Per adapter precision and recall of "ends up in its training set": before (no stance in importance),
    with the configured values, and over a grid of the three thresholds, tuned on ``tune`` (module docstring)."""
    names = [a.name for a in config.adapters]
    promote = config.promote

    def run(variant: PromoteConfig) -> dict:
        chosen = promoted(scored, variant, names)
        return {
            part: _figures(scored, chosen, names, None if part == "all" else part) for part in ("all", "tune", "report")
        }

    def variant(**update) -> PromoteConfig:
        return promote.model_copy(update=update)

    grid = [
        {
            "lora_threshold": lora,
            "stance_importance": stance,
            "route_threshold": route,
            **run(variant(lora_threshold=lora, stance_importance=stance, route_threshold=route)),
        }
        for route in ROUTE_GRID
        for stance in STANCE_GRID
        for lora in LORA_GRID
        if lora >= promote.rag_threshold
    ]

    def holds(route: float, stance: float) -> int:
        """At how many ``lora_threshold`` values of the grid the tune half meets the targets."""
        rows = [r for r in grid if (r["route_threshold"], r["stance_importance"]) == (route, stance)]
        return sum(meets_targets(r["tune"]) for r in rows)

    def tune_key(row: dict) -> tuple:
        tune = row["tune"]
        total = sum(f["recall"] + f["precision"] for f in tune.values())
        # Targets first; then robustness to where the user sets lora_threshold; then recall + precision.
        return (meets_targets(tune), holds(row["route_threshold"], row["stance_importance"]), round(total, 4))

    # lora_threshold is the tier boundary of every item (set on the score histogram): tuned here are
    # what a stance is worth and the topic route threshold, at the configured lora_threshold.
    best = max((r for r in grid if r["lora_threshold"] == promote.lora_threshold), key=tune_key)
    configured = run(promote)
    chosen = promoted(scored, promote, names)
    return {
        "units": len(scored),
        "units_without_item": list(missing),
        "before": {
            "lora_threshold": promote.lora_threshold,
            "stance_importance": 0.0,
            **run(variant(stance_importance=0.0)),
        },
        "configured": {
            "lora_threshold": promote.lora_threshold,
            "stance_importance": promote.stance_importance,
            "route_threshold": promote.route_threshold,
            **configured,
        },
        "meets_targets": {part: meets_targets(configured[part]) for part in ("all", "tune", "report")},
        "tuning": {
            "best": {k: best[k] for k in ("lora_threshold", "stance_importance", "route_threshold")},
            "best_tune": best["tune"],
            "best_report": best["report"],
            "grid": [_compact(r) for r in grid if r["lora_threshold"] == promote.lora_threshold],
            "lora_sweep": [
                _compact(r)
                for r in grid
                if (r["route_threshold"], r["stance_importance"])
                == (best["route_threshold"], best["stance_importance"])
            ],
        },
        "wrong": [
            {"id": s.unit.id, "labels": s.unit.labels, "promoted": c, "routes": json.loads(json.dumps(s.routes))}
            for s, c in zip(scored, chosen, strict=True)
            if set(c) != set(s.unit.labels)
        ],
    }
