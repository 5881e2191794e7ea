"""The scoring signals: pure functions from texts, vectors and times to numbers in 0..1.

Each signal answers one question about an item ("is it new?", "does its topic come back?",
"did the user mark it?") so the combined score can be explained signal by signal. Nothing here
touches storage; ``engine.py`` decides which items need which signal recomputed.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from memory_pipeline.config import PromoteConfig
from memory_pipeline.records import Kind, sha256_text
from memory_pipeline.scoring.stance import own_stance

SIGNALS: tuple[str, ...] = PromoteConfig.signal_names

MINHASH_PERM = 64
NEIGHBOURS_K = 32
NEIGHBOUR_FLOOR = 0.3
USAGE_SATURATION_HITS = 50
IDEAL_MIN_CHARS = 200
IDEAL_MAX_CHARS = 6000
_BLOCK_CELLS = 1 << 24

_WORD = re.compile(r"\w+", re.UNICODE)
_TAG = re.compile(r"(?<![\w#])#(\w[\w-]*)", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case-folded words joined by single spaces: two texts that differ only in layout are equal."""
    return " ".join(_WORD.findall(text.casefold()))


def text_fingerprint(text: str) -> str:
    """Hash of the normalized text: the exact-duplicate key."""
    return sha256_text(normalize_text(text))[:32]


# Information density and length sanity


@dataclass(frozen=True)
class Density:
    value: float
    compress_ratio: float
    token_entropy: float
    n_chars: int


def information_density(text: str) -> Density:
    """zlib ratio and word entropy (both low for repetitive filler), times a length sanity factor.

    Natural prose compresses to ~0.35-0.6 of its bytes; "ok ok ok" or pasted log spam to well
    under 0.15. Normalized word entropy is ~0.9+ for prose and drops for repetition.
    """
    raw = text.encode("utf-8")
    n_chars = len(text)
    if not raw.strip():
        return Density(0.0, 0.0, 0.0, n_chars)
    ratio = len(zlib.compress(raw, 9)) / len(raw)
    words = _WORD.findall(text.casefold())
    entropy = _normalized_entropy(words)
    compress_score = min(1.0, max(0.0, (ratio - 0.1) / 0.3))
    value = (0.5 * compress_score + 0.5 * entropy) * length_sanity(n_chars)
    return Density(round(value, 6), ratio, entropy, n_chars)


def _normalized_entropy(words: Sequence[str]) -> float:
    if len(words) < 2:
        return 0.0
    counts = np.fromiter(Counter(words).values(), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() / math.log2(len(words)))


def length_sanity(n_chars: int) -> float:
    """1 for a normal length; scored down (square-root ramp) for very short and absurdly long items."""
    if n_chars <= 0:
        return 0.0
    if n_chars < IDEAL_MIN_CHARS:
        return math.sqrt(n_chars / IDEAL_MIN_CHARS)
    if n_chars > IDEAL_MAX_CHARS:
        return math.sqrt(IDEAL_MAX_CHARS / n_chars)
    return 1.0


# Explicit importance


@dataclass(frozen=True)
class Importance:
    value: float
    markers: tuple[str, ...]
    tags: tuple[str, ...]
    stance: float = 0.0
    stance_reasons: tuple[str, ...] = ()


def explicit_importance(text: str, markers: Sequence[str]) -> Importance:
    """User markers ("запомни", "remember this", ...) and #tags: the user saying "this matters".

    Markers match case-insensitively as whole words, so "важно" does not fire inside "неважно".
    One marker gives 0.8, two or more 1.0; tags alone 0.5 (curation, weaker than an explicit ask).
    """
    folded = text.casefold()
    hits = _markers_in(folded, tuple(markers))
    tags = tuple(sorted({t.casefold() for t in _TAG.findall(text)}))
    if len(hits) >= 2:
        value = 1.0
    elif hits:
        value = 0.8
    elif tags:
        value = 0.5
    else:
        value = 0.0
    return Importance(value, hits, tags)


def own_importance(kind: str, text: str, user_text: str, config: PromoteConfig) -> Importance:
    """Importance of the user's own words: his markers and tags, or his first-person stance.

    The user rarely writes "запомни" before saying what he thinks, yet a view, plan or
    self-assessment of his own is what he would keep: a stance (``own_stance``, the rule that
    routes items to ``core``) is worth ``stance_importance`` x its score, a marker still more.
    Without it such items sat at the promotion threshold on novelty and recurrence alone.
    """
    kind = Kind(kind)
    own = user_text if kind is Kind.DIALOGUE else text
    found = explicit_importance(own, config.importance_markers)
    stance = own_stance(kind, text, user_text, min_user_chars=config.core_min_user_chars)
    value = max(found.value, round(config.stance_importance * stance.score, 6))
    reasons = tuple(stance.stance.describe()) if stance.score and stance.stance else ()
    return Importance(value, found.markers, found.tags, stance.score, reasons)


IMPORTANCE_RULES = "markers+stance-v1"
"""Part of the importance key: stored importance is recomputed when these rules change."""


def _markers_in(folded: str, markers: tuple[str, ...]) -> tuple[str, ...]:
    """Markers found as whole words, in config order (one regex pass over the text)."""
    found = set(markers_pattern(markers).findall(folded))
    return tuple(m for m in markers if m.casefold().strip() in found)


@lru_cache(maxsize=32)
def markers_pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation of whole-word phrases (longest first); matches are case-folded phrases."""
    phrases = sorted({m.casefold().strip() for m in markers if m.strip()}, key=len, reverse=True)
    if not phrases:
        return re.compile(r"(?!x)x")
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in phrases) + r")(?!\w)")


# Answer quality

_REFUSALS = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm sorry, but",
    "i am sorry, but",
    "i'm unable to",
    "i am unable to",
    "i cannot provide",
    "i can't provide",
    "as an ai",
    "as a language model",
    "i won't be able to",
    "как ии, я не могу",
    "как ии я не могу",
    "как искусственный интеллект",
    "как языковая модель",
    "я не могу помочь",
    "я не могу выполнить",
    "я не могу предоставить",
    "к сожалению, я не могу",
    "извините, но я не могу",
)
_APOLOGIES = (
    "i apologize",
    "my apologies",
    "apologies for",
    "sorry for",
    "извините",
    "прошу прощения",
    "приношу извинения",
)
_ERRORS = (
    "network error",
    "error in body stream",
    "something went wrong",
    "an error occurred",
    "ошибка сети",
    "произошла ошибка",
)
_TERMINAL = set(".!?…)\"»”'`*]>")
_LIST_LINE = re.compile(r"^\s*([-*+•|#>]|\d+[.)])")
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |return\b|#include|for \(|if \(|while \(|}|{|\$ |>>> |"
    r"[\w.\[\]]+\s*=[^=])"
    r"|[;{]\s*$"
)


@dataclass(frozen=True)
class Quality:
    value: float
    reasons: tuple[str, ...] = field(default_factory=tuple)
    code_fraction: float = 0.0


def answer_quality(text: str, *, answer_text: str = "") -> Quality:
    """Heuristics for answers not worth learning from: refusals, apologies, truncation, code dumps.

    Refusals and apologies are looked for at the start of the answer (where models put them),
    so a long answer that mentions "as an AI" in passing is not punished.
    """
    reasons: list[str] = []
    penalty = 0.0
    head = answer_text[:300].casefold()
    if any(p in head for p in _REFUSALS):
        reasons.append("refusal")
        penalty += 0.7
    elif any(p in head for p in _APOLOGIES):
        reasons.append("apology")
        penalty += 0.2
    if answer_text and _truncated(answer_text):
        reasons.append("truncated")
        penalty += 0.4
    fraction = code_fraction(text)
    prose = len(text) * (1.0 - fraction)
    if fraction >= 0.6 and prose < 400:
        reasons.append(f"code dump ({fraction:.0%} code)")
        penalty += 0.5 * min(1.0, (fraction - 0.4) / 0.4)
    return Quality(round(max(0.0, 1.0 - penalty), 6), tuple(reasons), fraction)


def _truncated(answer: str) -> bool:
    tail = answer.rstrip()
    if any(e in tail[-200:].casefold() for e in _ERRORS):
        return True
    if not tail or tail.endswith("```"):
        return False
    last_line = tail.splitlines()[-1]
    if _LIST_LINE.match(last_line) or len(last_line) < 60:
        return False
    return tail[-1] not in _TERMINAL


def code_fraction(text: str) -> float:
    """Share of characters that are code: inside ``` fences, or lines that look like code."""
    if not text.strip():
        return 0.0
    code = 0
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            code += len(line) + 1
        elif in_fence or _CODE_LINE.search(line):
            code += len(line) + 1
    return min(1.0, code / (len(text) + 1))


# Usage and recency


def usage(hits: int) -> float:
    """Search hits, log-squashed: the first hits count most; saturates at USAGE_SATURATION_HITS."""
    return min(1.0, math.log1p(max(0, hits)) / math.log1p(USAGE_SATURATION_HITS))


def recency(age_days: np.ndarray | float, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life); items from the future (clock skew) count as new."""
    age = np.maximum(np.asarray(age_days, dtype=np.float64), 0.0)
    return np.power(0.5, age / half_life_days)


# Vector signals: novelty and the neighbour lists recurrence is computed from


@dataclass
class Similarities:
    """Per query row: the closest allowed predecessor (novelty) and the top-k neighbours (recurrence).

    ``argmax`` and ``neighbour_idx`` are positions in the full vector matrix; -1 when none.
    """

    max_sim: np.ndarray
    argmax: np.ndarray
    neighbour_idx: list[np.ndarray]
    neighbour_sim: list[np.ndarray]


def similarities(
    queries: np.ndarray,
    vectors: np.ndarray,
    predecessors: Predecessors,
    *,
    columns: np.ndarray | None = None,
    k: int = NEIGHBOURS_K,
    floor: float = NEIGHBOUR_FLOOR,
) -> Similarities:
    """One blocked pass over ``queries`` x ``columns`` (cosine: vectors are normalized).

    ``queries`` and ``columns`` (default: all) are row positions into ``vectors``; rows of
    zeros (items without a vector) never reach ``floor``. For each query: the highest
    similarity to a column allowed as its predecessor, and its top-k neighbours among the
    columns at or above ``floor`` (itself excluded). Memory per block stays near 64 MB.
    """
    queries = np.asarray(queries, dtype=np.int64)
    columns = np.arange(len(vectors)) if columns is None else np.asarray(columns, dtype=np.int64)
    max_sim = np.zeros(len(queries), dtype=np.float32)
    argmax = np.full(len(queries), -1, dtype=np.int64)
    neighbour_idx: list[np.ndarray] = []
    neighbour_sim: list[np.ndarray] = []
    column_of = np.full(len(vectors), -1, dtype=np.int64)
    column_of[columns] = np.arange(len(columns))
    column_vectors = np.ascontiguousarray(vectors[columns].T)
    column_order = predecessors.order[columns]
    learned = np.flatnonzero(predecessors.learned[columns])
    block = max(16, _BLOCK_CELLS // max(len(columns), 1))
    for start in range(0, len(queries), block):
        rows = queries[start : start + block]
        local = np.arange(len(rows))
        sims = vectors[rows] @ column_vectors
        own = column_of[rows]
        sims[local[own >= 0], own[own >= 0]] = -np.inf
        span = slice(start, start + len(rows))
        if len(columns):
            masked = np.where(column_order[None, :] < predecessors.order[rows][:, None], sims, -np.inf)
            if len(learned):
                before = predecessors.first_seen[columns[learned]][None, :] < predecessors.first_seen[rows][:, None]
                masked[:, learned] = np.where(before, sims[:, learned], masked[:, learned])
            best = masked.argmax(axis=1)
            best_sim = masked[local, best]
            found = np.isfinite(best_sim) & (best_sim > 0)
            max_sim[span] = np.where(found, best_sim, 0.0)
            argmax[span] = np.where(found, columns[best], -1)
        hit_rows, hit_cols = np.nonzero(sims >= floor)
        hit_sims = sims[hit_rows, hit_cols]
        order = np.lexsort((-hit_sims, hit_rows))
        bounds = np.searchsorted(hit_rows[order], np.arange(len(rows) + 1))
        for i in range(len(rows)):
            picked = order[bounds[i] : min(bounds[i + 1], bounds[i] + k)]
            neighbour_idx.append(columns[hit_cols[picked]])
            neighbour_sim.append(hit_sims[picked].astype(np.float32))
    return Similarities(max_sim, argmax, neighbour_idx, neighbour_sim)


@dataclass(frozen=True)
class Predecessors:
    """Who may make an item "not novel": items earlier in time, and items already learned.

    ``order`` ranks items by (time, id): a strict order, so two items never lower each other.
    ``learned`` marks items promoted to a LoRA at the previous run and ``first_seen`` when each
    item arrived: an item is not novel against what was already learned *when it arrived*.
    Both are strict orders, so an item's novelty never depends on its own tier and tiers
    cannot oscillate between runs.
    """

    order: np.ndarray
    learned: np.ndarray
    first_seen: np.ndarray


def novelty(max_sim: np.ndarray) -> np.ndarray:
    return 1.0 - np.clip(max_sim, 0.0, 1.0)


def rank_order(times: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Rank of each item by (time, id): ties in time are broken by id, never left equal."""
    order = np.lexsort((np.asarray(ids, dtype=object).astype(str), times))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


# Recurrence


@dataclass(frozen=True)
class Recurrence:
    value: float
    other_documents: int
    span_days: float


def recurrence(
    own_doc: str,
    own_time: float,
    neighbour_sims: Sequence[float],
    neighbour_docs: Sequence[str],
    neighbour_times: Sequence[float],
    *,
    radius: float,
) -> Recurrence:
    """How often the topic returns in *other* documents, weighted by the time span it covers.

    evidence = other documents within ``radius`` x (0.25 + 0.75 x span factor), where the span
    factor grows with log(days covered) up to a year; squashed as 1 - exp(-evidence / 2).
    Three conversations two months apart give ~0.5; five over a year ~0.85; one-offs 0.
    Times are in days.
    """
    docs: set[str] = set()
    times = [own_time]
    for sim, doc, t in zip(neighbour_sims, neighbour_docs, neighbour_times, strict=True):
        if sim >= radius and doc != own_doc:
            docs.add(doc)
            times.append(t)
    if not docs:
        return Recurrence(0.0, 0, 0.0)
    span = max(times) - min(times)
    span_factor = min(1.0, math.log1p(span) / math.log1p(365.0))
    evidence = len(docs) * (0.25 + 0.75 * span_factor)
    return Recurrence(round(1.0 - math.exp(-evidence / 2.0), 6), len(docs), span)


# Redundancy: exact and near duplicates


def minhash_signatures(texts: Sequence[str], *, num_perm: int = MINHASH_PERM) -> np.ndarray:
    """MinHash signatures (uint32, one row per text) of word 3-shingles of the normalized text.

    Scoring's redundancy and the training sets' near-duplicate filter both read these, so "near
    duplicate" means one thing; :func:`lean_minhash` turns a row back into a MinHash for LSH.
    """
    from datasketch import MinHash

    shingle_sets = [word_shingles(t) for t in texts]
    if not shingle_sets:
        return np.zeros((0, num_perm), dtype=np.uint32)
    hashes = MinHash.bulk(shingle_sets, num_perm=num_perm)
    return np.stack([np.asarray(m.hashvalues, dtype=np.uint32) for m in hashes])


def lean_minhash(signature: np.ndarray):
    """A row of :func:`minhash_signatures` as a datasketch ``LeanMinHash`` (for ``MinHashLSH``)."""
    from datasketch import LeanMinHash

    return LeanMinHash(seed=1, hashvalues=signature, scheme="affine32")


def word_shingles(text: str) -> set[bytes]:
    """Word 3-shingles of the normalized text; a text of fewer than three words is its one shingle."""
    words = normalize_text(text).split()
    if len(words) < 3:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + 3]).encode("utf-8") for i in range(len(words) - 2)}


@dataclass(frozen=True)
class Redundancy:
    """Per item: its value, the cluster keeper, cluster size, and whether it is an exact copy."""

    value: np.ndarray
    keeper: np.ndarray
    cluster_size: np.ndarray
    exact: np.ndarray


def redundancy(
    fingerprints: Sequence[str], signatures: np.ndarray, order: np.ndarray, *, threshold: float
) -> Redundancy:
    """Cluster exact duplicates (same normalized text) and near duplicates (MinHash LSH).

    The earliest member (lowest ``order``) of each cluster is its keeper and scores 1; an exact
    copy scores 0; a near copy 0.5 / cluster size (lower the more copies there are).
    """
    from datasketch import MinHashLSH

    n = len(fingerprints)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj, key=lambda r: order[r])] = min(ri, rj, key=lambda r: order[r])

    first_by_fp: dict[str, int] = {}
    for i, fp in enumerate(fingerprints):
        if fp in first_by_fp:
            union(first_by_fp[fp], i)
        else:
            first_by_fp[fp] = i
    num_perm = signatures.shape[1] if n else MINHASH_PERM
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    minhashes = [lean_minhash(signatures[i]) for i in range(n)]
    for i in sorted(first_by_fp.values()):
        lsh.insert(i, minhashes[i])
    for i in sorted(first_by_fp.values()):
        for j in lsh.query(minhashes[i]):
            if j != i and float(np.mean(signatures[i] == signatures[j])) >= threshold:
                union(i, j)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    sizes = np.bincount(roots, minlength=n)[roots] if n else np.zeros(0, dtype=np.int64)
    keeper = roots
    fps = np.asarray(fingerprints, dtype=object)
    exact = (keeper != np.arange(n)) & (fps == fps[keeper]) if n else np.zeros(0, dtype=bool)
    value = np.where(keeper == np.arange(n), 1.0, np.where(exact, 0.0, 0.5 / np.maximum(sizes, 1)))
    return Redundancy(value, keeper, sizes, exact)
