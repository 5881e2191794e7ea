"""Combined score and tier: pure functions of the stored signals and the config.

Tiers are recomputed on every run from stored signals, so changing weights or thresholds
re-tiers everything without reading a vector or embedding a text.

Each tier is defined by what recall does with it (memory_pipeline/index/recall.py): ``discard`` is
not recalled unless asked for, ``cache`` is recalled with a recency prior, ``rag`` and
``lora:*`` are recalled with their (decayed) score as a prior. The rule, first match wins:

1. ``discard``: junk (text shorter than ``min_chars``) or a duplicate that is not its cluster's
   keeper (the earliest copy is kept). Nothing is deleted: the raw document stays in the store.
2. ``cache``: not indexed yet (no vector: the vector signals cannot be known).
3. ``lora:<adapters>``: score at or above ``lora_threshold``, routed to at least one adapter
   (``core`` and/or one topic), e.g. ``lora:core+sport``, and above the content floor: the user's
   own text (his turns; an article's or lecture's text) carries ``lora_min_own_chars`` once
   greetings and thanks are removed, so chit-chat never teaches an adapter. Decided at once.
4. ``cache``: fresh, dated within ``cache_days`` (a live capture, a new import). Short-term
   memory: recalled at once with a recency prior, rescored every run, so recurrence and usage
   can lift it before promotion decides between rag and discard when the window closes.
5. ``rag``: recall score (the score decayed by age in the memory and time since last use) at or
   above ``rag_threshold``: long-term searchable memory, not trained on.
6. ``discard`` again: below ``rag_threshold`` once out of the cache: never useful, or faded.

Before, cache was "score below rag_threshold" only, and scoring runs after indexing, so every
item had a vector and almost none scored that low: the cache was always empty and fresh
captures were tiered like old archives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from memory_pipeline.config import PromoteConfig
from memory_pipeline.errors import ConfigError
from memory_pipeline.scoring.routing import choose_adapters
from memory_pipeline.scoring.signals import SIGNALS

# Greetings, thanks, goodbyes and filler in Russian and English: what is left after removing them
# is the content an item carries. "Привет ещё раз" has none and must not teach an adapter.
_CHIT_CHAT = re.compile(
    r"(?iu)\b(?:привет(?:ик|ствую)?|здравствуй(?:те)?|добр(?:ый|ое|ого)\s+(?:день|утро|вечер|дня|утра|вечера)|хай|ещё\s+раз|еще\s+раз"
    r"|спасибо|благодарю|пожалуйста|пока|до\s+встречи|до\s+свидания|всего\s+доброго|ок(?:ей)?|ладно|хорошо|понятно|ясно|да|нет|угу|ага"
    r"|hi|hello|hey|again|thanks?(?:\s+you)?|thx|please|bye|goodbye|see\s+you|ok(?:ay)?|sure|yes|no|got\s+it|cool|great|nice)\b"
)


def own_content_chars(text: str) -> int:
    """Letters and digits of the user's own text once greetings, thanks and filler words are removed."""
    return sum(ch.isalnum() for ch in _CHIT_CHAT.sub(" ", text or ""))


class Tier(StrEnum):
    CACHE = "cache"
    RAG = "rag"
    LORA = "lora"
    DISCARD = "discard"


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Every signal with its weight (missing = 0); unknown names are a config error."""
    unknown = sorted(set(weights) - set(SIGNALS))
    if unknown:
        raise ConfigError(f"promote.weights: unknown signal(s) {unknown}; known: {', '.join(SIGNALS)}")
    return {name: float(weights.get(name, 0.0)) for name in SIGNALS}


def combined_scores(signals: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of the signal columns (each 0..1), so the score is 0..1 too."""
    full = validate_weights(weights)
    total = sum(full.values())
    if total <= 0:
        raise ConfigError("promote.weights: at least one weight must be > 0")
    score = sum(w * np.asarray(signals[name], dtype=np.float64) for name, w in full.items() if w > 0)
    return np.asarray(score, dtype=np.float64) / total


def contributions(signals: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """Each signal's share of the combined score (they sum to it)."""
    full = validate_weights(weights)
    total = sum(full.values())
    return {name: full[name] * float(signals[name]) / total for name in SIGNALS}


@dataclass(frozen=True)
class TierDecision:
    tier: Tier
    adapters: tuple[str, ...]
    rule: str

    @property
    def label(self) -> str:
        """``cache``, ``rag``, ``discard`` or ``lora:<adapter>[+<adapter>]``."""
        return f"lora:{'+'.join(self.adapters)}" if self.tier is Tier.LORA else self.tier.value


def decide_tier(
    *,
    n_chars: int,
    keeper: str,
    item_id: str,
    exact_duplicate: bool,
    has_vector: bool,
    score: float,
    routes: Mapping[str, dict],
    config: PromoteConfig,
    adapter_names: Sequence[str],
    age_days: float = float("inf"),
    recall_score: float | None = None,
    own_chars: int | None = None,
) -> TierDecision:
    """Apply the rule in the module docstring; ``rule`` says which threshold or rule decided."""
    if n_chars < config.min_chars:
        return TierDecision(Tier.DISCARD, (), f"junk: {n_chars} chars < min_chars {config.min_chars}")
    if keeper != item_id:
        what = "exact duplicate" if exact_duplicate else "near duplicate"
        return TierDecision(Tier.DISCARD, (), f"{what} of {keeper} (the earliest copy is kept)")
    if not has_vector:
        return TierDecision(Tier.CACHE, (), "not indexed yet: no vector, vector signals unknown")
    recall_score = score if recall_score is None else recall_score
    fresh = age_days < config.cache_days
    floor = own_chars is not None and own_chars < config.lora_min_own_chars
    if score >= config.lora_threshold and floor and recall_score >= config.rag_threshold and not fresh:
        why = f"the user's own content is {own_chars} chars < lora_min_own_chars {config.lora_min_own_chars}"
        return TierDecision(Tier.RAG, (), f"score {score:.3f} >= lora_threshold but {why}")
    if score >= config.lora_threshold and not floor:
        adapters = choose_adapters(dict(routes), config.route_threshold, adapter_names)
        if adapters:
            detail = ", ".join(f"{a} {routes[a]['score']:.2f}" for a in adapters)
            return TierDecision(
                Tier.LORA,
                tuple(adapters),
                f"score {score:.3f} >= lora_threshold {config.lora_threshold}; "
                f"routed ({detail} >= route_threshold {config.route_threshold})",
            )
    if fresh:
        why = f"fresh: {age_days:.1f} days old < cache_days {config.cache_days:g}"
        return TierDecision(Tier.CACHE, (), f"{why}; rag or discard decided when the window closes")
    if recall_score < config.rag_threshold:
        if score >= config.rag_threshold:
            why = f"recall score {recall_score:.3f} (score {score:.3f} decayed by age and disuse)"
            return TierDecision(Tier.DISCARD, (), f"faded: {why} < rag_threshold {config.rag_threshold}")
        return TierDecision(
            Tier.DISCARD, (), f"score {score:.3f} < rag_threshold {config.rag_threshold} after the cache window"
        )
    if score >= config.lora_threshold:
        return TierDecision(
            Tier.RAG,
            (),
            f"score {score:.3f} >= lora_threshold {config.lora_threshold} but no adapter reached route_threshold "
            f"{config.route_threshold} (a topic also needs the item nearer to it than to any alternative)",
        )
    return TierDecision(
        Tier.RAG,
        (),
        f"rag_threshold {config.rag_threshold} <= recall score {recall_score:.3f}, "
        f"score {score:.3f} < lora_threshold {config.lora_threshold}",
    )
