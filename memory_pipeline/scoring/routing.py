"""Which LoRA adapter an item teaches: ``core`` (the user's own views) and at most one topic.

``core`` learns to answer the way the user thinks, so it takes dialogue exchanges where the
user says enough and takes a stance, argues or explains; topic adapters take items close to
their description and examples, helped by keyword hits (stemmed, so Russian inflections match).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np

from memory_pipeline.config import AdapterConfig, PromoteConfig
from memory_pipeline.records import Kind, sha256_text
from memory_pipeline.scoring.signals import markers_pattern

CORE = "core"
KEYWORD_BONUS = 0.15
KEYWORD_BONUS_MAX = 0.45

_OPINION = (
    "я думаю",
    "я считаю",
    "по-моему",
    "по моему",
    "мне кажется",
    "на мой взгляд",
    "я уверен",
    "я убежден",
    "я убеждён",
    "моё мнение",
    "мое мнение",
    "я не согласен",
    "я согласен",
    "i think",
    "i believe",
    "in my opinion",
    "in my view",
    "i'm convinced",
    "i am convinced",
    "i disagree",
    "i agree",
    "i feel that",
    "my view is",
    "imo",
)
_ARGUMENT = (
    "потому что",
    "поэтому",
    "следовательно",
    "во-первых",
    "во-вторых",
    "значит",
    "однако",
    "например",
    "because",
    "therefore",
    "however",
    "for example",
    "which means",
    "the reason",
    "first,",
    "second,",
)


class PassageEmbedder(Protocol):
    """What routing needs from an embedder (``memory_pipeline.embedding`` provides it)."""

    model_id: str

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class AdapterProfile:
    """An adapter as routing sees it: vectors of its description and examples, keyword stems."""

    name: str
    vectors: np.ndarray
    keywords: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)


def profile_texts(adapter: AdapterConfig) -> list[str]:
    return [t for t in (adapter.description, *adapter.examples) if t.strip()]


def profiles_fingerprint(adapters: Sequence[AdapterConfig], model_id: str) -> str:
    """Changes when any adapter's description, examples or keywords change: routes are then redone."""
    parts = [model_id]
    for a in adapters:
        parts += [a.name, *profile_texts(a), "|", *a.keywords, "||"]
    return sha256_text("\x1f".join(parts))[:32]


def build_profiles(adapters: Sequence[AdapterConfig], vectors_by_text: dict[str, np.ndarray]) -> list[AdapterProfile]:
    """Profiles from the adapters in config and the vectors of their texts (``profile_texts``)."""
    profiles = []
    for a in adapters:
        texts = profile_texts(a)
        vecs = np.stack([vectors_by_text[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)
        profiles.append(AdapterProfile(a.name, vecs, tuple((k, keyword_stems(k)) for k in a.keywords)))
    return profiles


def keyword_stems(keyword: str) -> tuple[str, ...]:
    """Stems of a keyword's words (Russian or English stemmer by script), lower-cased."""
    words = re.findall(r"\w+", keyword.casefold())
    return tuple(_stem(w) for w in words)


def _stem(word: str) -> str:
    cyrillic = any("\u0400" <= ch <= "\u04ff" for ch in word)
    stemmed = _stemmer("russian" if cyrillic else "english").stemWord(word)
    return stemmed if len(stemmed) >= 3 else word


@lru_cache(maxsize=2)
def _stemmer(language: str):
    import Stemmer

    return Stemmer.Stemmer(language)


def keyword_hits(text: str, keywords: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Keywords whose every word stem starts a word of the text ("марафон" hits "марафоне")."""
    folded = text.casefold()
    return [
        keyword
        for keyword, stems in keywords
        if stems and all(re.search(r"(?<!\w)" + re.escape(stem), folded) for stem in stems)
    ]


def stance_markers(user_text: str) -> tuple[list[str], list[str]]:
    """Opinion markers ("я думаю", "I believe") and argument markers ("потому что", "therefore")."""
    folded = user_text.casefold()
    opinions = set(markers_pattern(_OPINION).findall(folded))
    arguments = set(markers_pattern(_ARGUMENT).findall(folded))
    return [m for m in _OPINION if m in opinions], [m for m in _ARGUMENT if m in arguments]


def route_item(
    *,
    kind: Kind,
    text: str,
    user_text: str,
    vector: np.ndarray | None,
    profiles: Sequence[AdapterProfile],
    config: PromoteConfig,
) -> dict[str, dict]:
    """Per adapter: its route score and what it came from (similarity, markers, keywords).

    core = max(stance, similarity to core's profile) for dialogue exchanges whose user text has
    at least ``core_min_user_chars``, else 0; stance = 0.5 per opinion marker + 0.15 per argument
    marker, capped at 1. Topic = max similarity to description/examples + 0.15 per keyword hit
    (up to 0.45).
    """
    routes: dict[str, dict] = {}
    for profile in profiles:
        sim = _similarity(vector, profile.vectors)
        if profile.name == CORE:
            eligible = kind is Kind.DIALOGUE and len(user_text.strip()) >= config.core_min_user_chars
            opinions, arguments = stance_markers(user_text) if eligible else ([], [])
            stance = min(1.0, 0.5 * len(opinions) + 0.15 * len(arguments))
            score = max(stance, sim) if eligible else 0.0
            routes[CORE] = {"score": round(score, 6), "sim": round(sim, 6), "opinions": opinions, "arguments": arguments, "eligible": eligible}
        else:
            hits = keyword_hits(text, profile.keywords)
            score = sim + min(KEYWORD_BONUS_MAX, KEYWORD_BONUS * len(hits))
            routes[profile.name] = {"score": round(score, 6), "sim": round(sim, 6), "keywords": hits}
    return routes


def _similarity(vector: np.ndarray | None, vectors: np.ndarray) -> float:
    if vector is None or vectors.size == 0 or vectors.shape[1] != len(vector):
        return 0.0
    return float(np.max(vectors @ vector))


def choose_adapters(routes: dict[str, dict], threshold: float, adapter_names: Sequence[str]) -> list[str]:
    """``core`` when its score reaches the threshold, plus the best topic that does (at most one)."""
    chosen = []
    core = routes.get(CORE)
    if CORE in adapter_names and core and core["score"] >= threshold:
        chosen.append(CORE)
    topics = [(r["score"], name) for name, r in routes.items() if name != CORE and name in adapter_names and r["score"] >= threshold]
    if topics:
        chosen.append(max(topics)[1])
    return chosen
