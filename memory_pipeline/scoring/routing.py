"""Which LoRA adapter an item teaches: ``core`` (the user's own views) and at most one topic.

``core`` learns how the user thinks, so it takes the items where he states his own view, belief,
hypothesis, plan, self-assessment or how his AI should think, in his own words: the user's turns
of a dialogue exchange, or a note of his own (an article section written in the first person).
The first-person stance detector (``stance.py``) decides; an assistant's answer never does.

A topic adapter takes the items that are substantively on its topic: the item's vector against
the adapter's description and ``examples`` (a multilingual model makes Russian items meet English
examples and back). Keywords are shown as evidence but never route by themselves, so a word in
passing ("аналогия со спортом") does not make a conversation about AI a sport item. Nor does a
passage that borrows the topic's words: an item must also be closer to the topic than to the
alternatives, the adapter's ``contrast`` texts (an analogy, another sense of a keyword) and the
other adapters' texts. A plain similarity threshold cannot tell these apart: a focus-training
note with a running analogy lies as close to the sport examples as a real training question.
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
from memory_pipeline.scoring.stance import own_stance

CORE = "core"
CORE_MIN_STANCE = 0.5
"""Stance score (``Stance.score``) that sends an item to core: a stance phrase, or an argument move of the user."""
CONTRAST_MARGIN = 0.04
"""How much closer to a topic than to its nearest alternative an item must be. Short sentences meet
every text at 0.2-0.4, so a tie decides nothing: "продолжим прошлые чаты, там было и про спорт" was
0.004 closer to sport than to the "продолжим наши прошлые разговоры" contrast. On the labelled sets,
each sport item that was closer at all was at least 0.048 closer; three others were 0.004-0.018 closer."""
ROUTING_RULES = "stance-v2+contrast-margin"
"""Part of the profiles fingerprint: stored routes are redone when the routing rules change."""


class PassageEmbedder(Protocol):
    """What routing needs from an embedder (``memory_pipeline.index.embedding`` provides it)."""

    model_id: str

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class AdapterProfile:
    """An adapter as routing sees it: vectors of its description and examples, keyword stems, contrast texts."""

    name: str
    vectors: np.ndarray
    keywords: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)
    texts: tuple[str, ...] = field(default_factory=tuple)
    contrast: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    contrast_texts: tuple[str, ...] = field(default_factory=tuple)


def profile_texts(adapter: AdapterConfig) -> list[str]:
    """The texts an item of this adapter is near: its description and examples."""
    return [t for t in (adapter.description, *adapter.examples) if t.strip()]


def contrast_texts(adapter: AdapterConfig) -> list[str]:
    return [t for t in adapter.contrast if t.strip()]


def routing_texts(adapters: Sequence[AdapterConfig]) -> list[str]:
    """Every text routing embeds: each adapter's profile and contrast texts."""
    return sorted({t for a in adapters for t in (*profile_texts(a), *contrast_texts(a))})


def profiles_fingerprint(adapters: Sequence[AdapterConfig], model_id: str) -> str:
    """Changes when any adapter's description, examples, contrast or keywords change: routes are then redone."""
    parts = [ROUTING_RULES, model_id]
    for a in adapters:
        parts += [a.name, *profile_texts(a), "|", *contrast_texts(a), "|", *a.keywords, "||"]
    return sha256_text("\x1f".join(parts))[:32]


def build_profiles(adapters: Sequence[AdapterConfig], vectors_by_text: dict[str, np.ndarray]) -> list[AdapterProfile]:
    """Profiles from the adapters in config and the vectors of their texts (``routing_texts``)."""

    def stack(texts: list[str]) -> np.ndarray:
        return np.stack([vectors_by_text[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    profiles = []
    for a in adapters:
        texts, contrast = profile_texts(a), contrast_texts(a)
        keywords = tuple((k, keyword_stems(k)) for k in a.keywords)
        profiles.append(AdapterProfile(a.name, stack(texts), keywords, tuple(texts), stack(contrast), tuple(contrast)))
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


def route_item(
    *,
    kind: Kind,
    text: str,
    user_text: str,
    vector: np.ndarray | None,
    profiles: Sequence[AdapterProfile],
    config: PromoteConfig,
) -> dict[str, dict]:
    """Per adapter: its route score and what it came from.

    core: the stance score of the user's own words (dialogue: his turns, when at least
    ``core_min_user_chars``; article: the section, stance phrases only, as an article's argument
    may be anyone's; profile: always, it is the user's own statement of himself; lectures: never),
    with the phrases found. Topic: the best cosine between the item's vector and the adapter's
    description and examples (``sim``, with the nearest of those texts) and the best cosine to the
    alternatives (``contrast``, with the nearest of them: the adapter's contrast texts, then the
    other adapters' texts, named ``adapter: text``), and any keyword seen. The topic's route
    ``score`` is ``sim`` when the item is closer to the topic than to every alternative (by
    ``CONTRAST_MARGIN``), else 0.
    """
    routes: dict[str, dict] = {}
    for profile in profiles:
        found, nearest = _similarity(vector, profile.vectors, profile.texts)
        sim = found or 0.0
        if profile.name == CORE:
            own = own_stance(kind, text, user_text, min_user_chars=config.core_min_user_chars)
            reasons = own.stance.describe() if own.stance else []
            routes[CORE] = {"score": own.score, "sim": round(sim, 6), "stance": reasons, "eligible": own.eligible}
        else:
            keywords = keyword_hits(text, profile.keywords)
            contrast, against = _nearest_alternative(vector, profile, profiles)
            topical = on_topic(sim, contrast)
            sim = round(sim, 6)
            routes[profile.name] = {
                "score": sim if topical else 0.0,
                "sim": sim,
                "nearest": nearest,
                "contrast": None if contrast is None else round(contrast, 6),
                "contrast_nearest": against,
                "keywords": keywords,
            }
    return routes


def on_topic(sim: float, contrast: float | None) -> bool:
    """Whether an item is closer to a topic than to its nearest alternative, by ``CONTRAST_MARGIN``
    (always, where there is no alternative): the rule routing applies and ``explain`` reports."""
    return contrast is None or sim > contrast + CONTRAST_MARGIN


def _nearest_alternative(
    vector: np.ndarray | None, profile: AdapterProfile, profiles: Sequence[AdapterProfile]
) -> tuple[float | None, str]:
    """Best cosine to the profile's contrast texts and the other adapters' texts, and that text; None without any."""
    found = [_similarity(vector, profile.contrast, profile.contrast_texts)]
    for other in profiles:
        if other.name != profile.name:
            sim, text = _similarity(vector, other.vectors, other.texts)
            found.append((sim, f"{other.name}: {text}"))
    found = [(sim, text) for sim, text in found if sim is not None]
    return max(found, key=lambda pair: pair[0]) if found else (None, "")


def _similarity(vector: np.ndarray | None, vectors: np.ndarray, texts: Sequence[str]) -> tuple[float | None, str]:
    """Best cosine to ``vectors`` and its text (shortened) so a person can see what matched; None without any."""
    if vector is None or vectors.size == 0 or vectors.shape[1] != len(vector):
        return None, ""
    sims = vectors @ vector
    best = int(np.argmax(sims))
    text = texts[best] if best < len(texts) else ""
    return float(sims[best]), " ".join(text.split())[:80]


def choose_adapters(routes: dict[str, dict], threshold: float, adapter_names: Sequence[str]) -> list[str]:
    """``core`` when the user's stance reaches ``CORE_MIN_STANCE``, plus the best topic at or above ``threshold``."""
    chosen = []
    core = routes.get(CORE)
    if CORE in adapter_names and core and core["score"] >= CORE_MIN_STANCE:
        chosen.append(CORE)
    topics = [(r["score"], name) for name, r in routes.items() if name != CORE and name in adapter_names]
    topics = [(score, name) for score, name in topics if score >= threshold]
    if topics:
        chosen.append(max(topics)[1])
    return chosen
