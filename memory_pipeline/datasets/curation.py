"""Curation steps between promoted items and a training set; each says what it removed.

Every step is a pure function of a list of examples (and options), deterministic for a given
input, so re-building an unchanged set gives byte-identical files and the same content hash.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from memory_pipeline.datasets.formats import MESSAGE_OVERHEAD_TOKENS, example_texts
from memory_pipeline.records import guess_language
from memory_pipeline.scoring.signals import MINHASH_PERM, lean_minhash, minhash_signatures
from memory_pipeline.tokens import count_tokens as _count_tokens

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Example:
    """One candidate training line with where it came from and what curation needs to judge it."""

    item_id: str
    doc_id: str
    kind: str
    score: float
    record: dict[str, Any]  # the JSONL line: {"messages": [...]} or {"text": ...}
    key_text: str  # prompt and target (or the text): what duplicates and language are judged on
    tokens: int = 0  # the whole line, context and template overhead included
    target_tokens: int = 0  # the part that is learned: the last assistant turn, or the whole text
    target_source: str = ""  # whose text the target is: user, assistant, article, lecture (see datasets.build)

    @property
    def format(self) -> str:
        return "text" if "text" in self.record else "chat"


@dataclass(frozen=True)
class StepReport:
    """What one curation step did, for the dataset card."""

    step: str
    removed: int
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "removed": self.removed, **self.detail}


@dataclass(frozen=True)
class Filtered:
    """A filter's outcome: what stays, what goes, and the card's line about it."""

    kept: list[Example]
    removed: list[Example]
    report: StepReport


@lru_cache(maxsize=200_000)
def count_tokens(text: str) -> int:
    """:func:`memory_pipeline.tokens.count_tokens`, cached: a set's lines repeat the same context turns."""
    return _count_tokens(text)


def with_token_counts(examples: Sequence[Example]) -> list[Example]:
    """Fill ``tokens`` (the whole line) and ``target_tokens`` (what is learned) of each example."""
    counted = []
    for example in examples:
        if example.format == "text":
            n = count_tokens(example.record["text"])
            counted.append(replace(example, tokens=n, target_tokens=n))
            continue
        messages = example.record["messages"]
        total = sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        counted.append(replace(example, tokens=total, target_tokens=count_tokens(messages[-1]["content"])))
    return counted


def token_stats(examples: Sequence[Example]) -> dict[str, float | int]:
    """Total, mean, median, 95th percentile and maximum line length in tokens."""
    lengths = sorted(e.tokens for e in examples)
    if not lengths:
        return {"total": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0}

    def percentile(q: float) -> int:
        return lengths[min(len(lengths) - 1, math.ceil(q * len(lengths)) - 1)]

    return {
        "total": sum(lengths),
        "mean": round(sum(lengths) / len(lengths), 1),
        "p50": percentile(0.5),
        "p95": percentile(0.95),
        "max": lengths[-1],
    }


def _partition(step: str, examples: Iterable[Example], keep: Callable[[Example], bool], **detail: Any) -> Filtered:
    kept, removed = [], []
    for example in examples:
        (kept if keep(example) else removed).append(example)
    return Filtered(kept, removed, StepReport(step, len(removed), detail))


def filter_languages(examples: Sequence[Example], languages: Sequence[str]) -> Filtered:
    """Keep examples whose guessed language (records.guess_language) is one of ``languages``; empty keeps all."""
    if not languages:
        return Filtered(list(examples), [], StepReport("language", 0, {"languages": "all"}))
    allowed = set(languages)
    guesses = {e.item_id: guess_language(e.key_text) for e in examples}
    removed_by = Counter(g for g in guesses.values() if g not in allowed)
    return _partition(
        "language",
        examples,
        lambda e: guesses[e.item_id] in allowed,
        languages=sorted(allowed),
        removed_by_language=dict(sorted(removed_by.items())),
    )


def filter_token_bounds(examples: Sequence[Example], *, min_tokens: int, max_tokens: int) -> Filtered:
    """Drop lines whose target is too short or too long.

    Shorter than ``min_tokens`` leaves nothing to learn; longer than ``max_tokens`` does not fit.
    """
    too_short = sum(e.target_tokens < min_tokens for e in examples)
    too_long = sum(e.target_tokens >= min_tokens and e.tokens > max_tokens for e in examples)
    return _partition(
        "token_bounds",
        examples,
        lambda e: min_tokens <= e.target_tokens and e.tokens <= max_tokens,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        too_short=too_short,
        too_long=too_long,
    )


# --- PII scrub -------------------------------------------------------------------------------------

_KEY_PATTERNS = [
    r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}",  # OpenAI / Anthropic / Stripe
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"\bAIza[0-9A-Za-z_\-]{35}\b",  # Google
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\bglpat-[A-Za-z0-9_\-]{20,}",  # GitLab
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
]


def _enough_digits(value: str) -> bool:
    return sum(c.isdigit() for c in value) >= 8


def _looks_random(value: str) -> bool:
    """A long base64-ish run is a secret only if it mixes cases and digits with high entropy.

    Paths and words do not.
    """
    if not (any(c.isdigit() for c in value) and any(c.isupper() for c in value) and any(c.islower() for c in value)):
        return False
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    return entropy >= 4.2


# (placeholder, pattern, check a match must pass), applied in this order: keys before the generic rules.
_PII_RULES: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    ("API_KEY", re.compile("|".join(_KEY_PATTERNS)), None),
    ("EMAIL", re.compile(r"(?<![\w.+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"), None),
    # Russian numbers: +7 / 8, then 10 digits in the usual groupings: +7 (916) 123-45-67, 8-916-123-45-67, 89161234567.
    ("PHONE", re.compile(r"(?<![\w+])(?:\+7|8)[ \-]?\(?\d{3}\)?[ \-]?\d{3}[ \-]?\d{2}[ \-]?\d{2}(?!\w)"), None),
    # Other international numbers written with a leading +: +44 20 7946 0958, +1 (555) 123-4567.
    (
        "PHONE",
        re.compile(r"(?<![\w+])\+\d{1,3}[ \-]?(?:\(\d{1,4}\)[ \-]?)?\d{2,4}(?:[ \-]?\d{2,4}){1,4}(?!\w)"),
        _enough_digits,
    ),
    ("SECRET", re.compile(r"(?<![\w\-])[0-9a-fA-F]{32,}(?![\w\-])"), None),
    ("SECRET", re.compile(r"(?<![\w/+=\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![\w/+=\-])"), _looks_random),
]


def scrub_text(text: str) -> tuple[str, Counter[str]]:
    """Replace emails, phone numbers, API keys and long random secrets with placeholders like ``<EMAIL>``."""
    scrubbed, found = _scrub_cached(text)
    return scrubbed, Counter(dict(found))


@lru_cache(maxsize=100_000)
def _scrub_cached(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """Cached: a conversation's earlier turns recur as context in each of its lines."""
    found: Counter[str] = Counter()
    for label, pattern, check in _PII_RULES:

        def substitute(match: re.Match[str], label: str = label, check=check) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            found[label] += 1
            return f"<{label}>"

        text = pattern.sub(substitute, text)
    return text, tuple(sorted(found.items()))


def scrub_examples(examples: Sequence[Example]) -> tuple[list[Example], StepReport]:
    """Scrub every line's content (system prompts are config, left as they are); removes nothing."""
    total: Counter[str] = Counter()
    changed = 0
    scrubbed = []
    for example in examples:
        found: Counter[str] = Counter()
        if example.format == "text":
            text, found = scrub_text(example.record["text"])
            record: dict[str, Any] = {"text": text}
        else:
            messages = []
            for message in example.record["messages"]:
                content = message["content"]
                if message["role"] != "system":
                    content, hits = scrub_text(content)
                    found += hits
                messages.append({"role": message["role"], "content": content})
            record = {"messages": messages}
        if found:
            changed += 1
            total += found
            example = replace(example, record=record, key_text=scrub_text(example.key_text)[0])
        scrubbed.append(example)
    return scrubbed, StepReport("pii_scrub", 0, {"examples_changed": changed, "replaced": dict(sorted(total.items()))})


# --- duplicates ------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def by_score(examples: Iterable[Example]) -> list[Example]:
    """Highest score first, ties by item id: the order that decides which duplicate and which budget slot wins."""
    return sorted(examples, key=lambda e: (-e.score, e.item_id))


def dedup_exact(examples: Sequence[Example]) -> Filtered:
    """Drop examples whose prompt and target equal a higher-scored one's (case and spacing ignored)."""
    seen: set[str] = set()
    keep: set[str] = set()
    for example in by_score(examples):
        fingerprint = hashlib.sha256(" ".join(example.key_text.lower().split()).encode()).hexdigest()
        if fingerprint not in seen:
            seen.add(fingerprint)
            keep.add(example.item_id)
    return _partition("exact_duplicates", examples, lambda e: e.item_id in keep)


def dedup_near(examples: Sequence[Example], *, threshold: float) -> Filtered:
    """Drop examples whose word 3-shingles have MinHash Jaccard >= ``threshold`` with a higher-scored kept one."""
    from datasketch import MinHashLSH

    ordered = by_score(examples)
    lsh = MinHashLSH(threshold=threshold, num_perm=MINHASH_PERM)
    signatures = {}
    keep: set[str] = set()
    for example, row in zip(ordered, minhash_signatures([e.key_text for e in ordered]), strict=True):
        signature = lean_minhash(row)
        if any(signatures[other].jaccard(signature) >= threshold for other in lsh.query(signature)):
            continue
        lsh.insert(example.item_id, signature)
        signatures[example.item_id] = signature
        keep.add(example.item_id)
    return _partition(
        "near_duplicates",
        examples,
        lambda e: e.item_id in keep,
        threshold=threshold,
        method="MinHash LSH, word 3-shingles",
    )


# --- budget, split, decontamination -------------------------------------------------------------


def apply_token_budget(examples: Sequence[Example], *, budget: int) -> Filtered:
    """Keep the highest-scored examples while their tokens fit in ``budget`` (a line that does not fit is skipped)."""
    keep: set[str] = set()
    used = 0
    for example in by_score(examples):
        if used + example.tokens <= budget:
            used += example.tokens
            keep.add(example.item_id)
    return _partition("token_budget", examples, lambda e: e.item_id in keep, budget=budget, used=used)


def eval_position(doc_id: str, seed: int) -> float:
    """A document's fixed place in [0, 1): below ``eval_fraction`` it is an eval document, in every version."""
    digest = hashlib.sha256(f"{seed}\x1f{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_document(
    examples: Sequence[Example], *, eval_fraction: float, seed: int
) -> tuple[list[Example], list[Example], StepReport]:
    """Train and eval examples, split by source document so no conversation is on both sides.

    A document's side depends only on its id and the seed, so it stays on that side as the set grows.
    When the rule picks no eval document out of two or more, the one closest to the cut goes to eval,
    so a small set still has something to evaluate on.
    """
    doc_ids = sorted({e.doc_id for e in examples})
    eval_docs = {d for d in doc_ids if eval_position(d, seed) < eval_fraction}
    forced = False
    if eval_fraction > 0 and not eval_docs and len(doc_ids) >= 2:
        eval_docs = {min(doc_ids, key=lambda d: eval_position(d, seed))}
        forced = True
    train = [e for e in examples if e.doc_id not in eval_docs]
    eval_ = [e for e in examples if e.doc_id in eval_docs]
    detail = {
        "eval_fraction": eval_fraction,
        "seed": seed,
        "train_documents": len(doc_ids) - len(eval_docs),
        "eval_documents": len(eval_docs),
        "eval_document_forced": forced,
    }
    return train, eval_, StepReport("split_by_document", 0, detail)


def _ngram_hashes(text: str, n: int) -> set[int]:
    words = _words(text)
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


def decontaminate(train: Sequence[Example], eval_: Sequence[Example], *, n: int) -> Filtered:
    """Drop eval examples sharing a word ``n``-gram with any train example (system prompts excluded).

    Only the eval n-grams are held in memory (eval is the small side); train texts are streamed
    once, each distinct text hashed once, since context repeats across a conversation's lines.
    """
    owners: dict[int, list[int]] = {}
    for index, example in enumerate(eval_):
        for text in example_texts(example.record):
            for gram in _ngram_hashes(text, n):
                owners.setdefault(gram, []).append(index)
    contaminated: set[int] = set()
    if owners:
        seen_texts: set[str] = set()
        for example in train:
            for text in example_texts(example.record):
                if text in seen_texts:
                    continue
                seen_texts.add(text)
                for gram in _ngram_hashes(text, n):
                    contaminated.update(owners.get(gram, ()))
    dropped = {eval_[i].item_id for i in contaminated}
    return _partition("decontamination", eval_, lambda e: e.item_id not in dropped, ngram=n)
