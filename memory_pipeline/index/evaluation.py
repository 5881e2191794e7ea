"""Retrieval evaluation: hand-written questions with accepted answers, and a self-supervised check.

The question set (``eval_sets/retrieval_questions.jsonl``, over the demo corpus and the real
Russian conversations in it) is what a person would ask, in other words than the answer, in
Russian and English, with cross-lingual pairs. Accepted answers name the source file plus the
dialogue turns or a distinctive substring of the text, so the set survives re-chunking and a
change of model. Questions whose answers are not in the memory are skipped and counted, so the
same command runs on any memory. The set is split in two: the hybrid fusion weight is tuned on
``tune`` and reported on ``report`` (which alone holds the questions written after the tuning).

The self-supervised check (sentences taken from inside indexed answers, target = their exchange)
needs no labels, so it also runs on the user's own memory; it measures recall of near-copies,
not of paraphrases.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from memory_pipeline.config import Config
from memory_pipeline.errors import ConfigError
from memory_pipeline.index.search import MODES, Searcher, fuse, ranked
from memory_pipeline.jsonl import read_rows
from memory_pipeline.records import ASSISTANT_LABEL, USER_LABEL

DEFAULT_QUESTIONS = Path(__file__).parents[1] / "eval_sets" / "retrieval_questions.jsonl"
FUSION_GRID = tuple(round(0.05 * i, 2) for i in range(21))
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_LABEL = re.compile(rf"^({USER_LABEL}|{ASSISTANT_LABEL}):\s*", re.MULTILINE)
_SPACE = re.compile(r"\s+")


class AcceptedAnswer(BaseModel):
    """Where an answer lives: a source file (by name) and either dialogue turns or text it contains."""

    source: str = Field(description="file name of the source (a per-exchange folder of that stem counts too)")
    title: str | None = Field(None, description="document title, for exports holding many conversations")
    turns: list[int] | None = Field(None, description="dialogue turn indexes of the exchange")
    contains: list[str] = Field(default_factory=list, description="any of these substrings (case and spacing ignored)")

    @model_validator(mode="after")
    def _located(self) -> AcceptedAnswer:
        if not self.turns and not self.contains:
            raise ValueError("an answer needs 'turns' or 'contains'")
        return self

    def matches(self, row: dict) -> bool:
        path = Path(str(row.get("source_path") or ""))
        if path.name != self.source and Path(self.source).stem not in path.parts:
            return False
        if self.title is not None and row.get("title") != self.title:
            return False
        if self.turns and row.get("turn_index") not in self.turns:
            return False
        if self.contains:
            text = _fold(str(row.get("text") or ""))
            return any(_fold(c) in text for c in self.contains)
        return True


class EvalQuestion(BaseModel):
    id: str
    split: Literal["tune", "report"]
    lang: str
    source_lang: str = Field(description="language of the accepted answers' text: ru, en or mixed")
    question: str
    answers: list[AcceptedAnswer] = Field(min_length=1)

    @property
    def cross_lingual(self) -> bool:
        return self.source_lang not in (self.lang, "mixed")


def load_questions(path: Path | str | None = None) -> list[EvalQuestion]:
    """The question set (the bundled one by default); a bad line is an error naming the file and line."""
    path = Path(path) if path else DEFAULT_QUESTIONS
    questions = read_rows(path, EvalQuestion, what="question")
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: duplicate question ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return questions


def metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """recall@1/5/10 and MRR (at the ranks given, 1-based; None = not found)."""
    n = max(1, len(ranks))
    return {
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "recall@5": round(sum(1 for r in ranks if r and r <= 5) / n, 4),
        "recall@10": round(sum(1 for r in ranks if r and r <= 10) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
    }


def unit_key(row: dict) -> tuple:
    """What a person counts as one result: a dialogue exchange (all its chunks), otherwise the chunk."""
    if row.get("kind") == "dialogue" and row.get("turn_index") is not None:
        return ("exchange", row.get("doc_id"), row.get("turn_index"))
    return ("chunk", row.get("chunk_id"))


def first_match(rows: Sequence[dict], answers: Sequence[AcceptedAnswer], k: int) -> int | None:
    """1-based rank, among the first ``k`` distinct units (``unit_key``), of the best one an accepted answer matches.

    Rows are ranked chunks; further chunks of an exchange already listed do not take a rank, as the
    question is whether the right exchange (or article passage) is among the first k results. An
    exchange ranks where its first chunk came, whichever of its chunks holds the accepted text: a
    long exchange is several chunks, and the one that ranked first may be another part of it.
    """
    ranks: dict[tuple, int] = {}
    best: int | None = None
    for row in rows:
        rank = ranks.setdefault(unit_key(row), len(ranks) + 1)
        if rank <= k and (best is None or rank < best) and any(a.matches(row) for a in answers):
            best = rank
    return best


def answerable(searcher: Searcher, questions: Sequence[EvalQuestion]) -> list[EvalQuestion]:
    """Questions with at least one accepted answer in the memory (read from the sources they name only)."""
    sources = sorted({a.source for q in questions for a in q.answers})
    clauses = " OR ".join(
        f"source_path LIKE '%{_like(s)}' OR source_path LIKE '%{_like(Path(s).stem)}/%'" for s in sources
    )
    rows = searcher.store.rows(["source_path", "title", "turn_index", "text"], clauses) if sources else []
    return [q for q in questions if any(a.matches(row) for a in q.answers for row in rows)]


def evaluate_questions(
    config: Config, *, searcher: Searcher | None = None, questions: Sequence[EvalQuestion] | None = None, k: int = 10
) -> dict:
    """Figures per mode on the whole set, per split and on the cross-lingual part; the fusion weight tuned on ``tune``.

    Every mode is ranked here from the candidate lists hybrid search fuses (the vector and the
    full-text list as they are, hybrid by the same ``fuse`` the search uses), so one pass gives
    each mode, the configured weight and every weight of the grid; nothing is logged.
    """
    searcher = searcher or Searcher(config)
    questions = list(questions if questions is not None else load_questions())
    usable = answerable(searcher, questions)
    configured = config.search.hybrid_fts_weight
    ranks: dict[str, list[int | None]] = {"vector": [], "fts": []}
    by_weight: dict[float, list[int | None]] = {w: [] for w in sorted({*FUSION_GRID, configured})}
    for q in usable:
        fts_scores, vector_scores, known = searcher.hybrid_candidates(q.question, k)
        rows = searcher.rows_of(list({*fts_scores, *vector_scores}), known)
        for mode, scores in (("vector", vector_scores), ("fts", fts_scores)):
            ranks[mode].append(first_match([rows[i] for i in ranked(scores) if i in rows], q.answers, k))
        for weight, found in by_weight.items():
            order = ranked(fuse(fts_scores, vector_scores, fts_weight=weight))
            found.append(first_match([rows[i] for i in order if i in rows], q.answers, k))
    ranks["hybrid"] = by_weight[configured]

    def figures(select) -> dict:
        picked = [i for i, q in enumerate(usable) if select(q)]
        return {"questions": len(picked), **{mode: metrics([ranks[mode][i] for i in picked]) for mode in MODES}}

    tune = [i for i, q in enumerate(usable) if q.split == "tune"]
    grid = [{"fts_weight": w, **metrics([found[i] for i in tune])} for w, found in sorted(by_weight.items())]
    best = max(grid, key=lambda g: (g["recall@5"], g["mrr"], -abs(g["fts_weight"] - configured)))
    report = [i for i, q in enumerate(usable) if q.split == "report"]
    return {
        "questions": len(questions),
        "answerable": len(usable),
        "skipped": [q.id for q in questions if q not in usable],
        "model_id": searcher.embedder.model_id,
        "k": k,
        "hybrid_fts_weight": configured,
        "modes": figures(lambda q: True),
        "tune": figures(lambda q: q.split == "tune"),
        "report": figures(lambda q: q.split == "report"),
        "cross_lingual": figures(lambda q: q.cross_lingual),
        "fusion_tuning": {
            "grid": grid,
            "best_fts_weight": best["fts_weight"],
            "report_at_best": {"questions": len(report), **metrics([by_weight[best["fts_weight"]][i] for i in report])},
        },
        "misses": {mode: [q.id for q, r in zip(usable, ranks[mode], strict=True) if not r or r > 5] for mode in MODES},
    }


def build_queries(searcher: Searcher, n_queries: int, seed: int) -> list[tuple[str, tuple[str, int]]]:
    """(query sentence, (doc_id, turn_index)) pairs from dialogue answers, sampled reproducibly."""
    rows = searcher.store.rows(["doc_id", "turn_index", "text"], "kind = 'dialogue'")
    rng = random.Random(seed)
    candidates = []
    for row in sorted(rows, key=lambda r: (r["doc_id"], r["turn_index"] or 0, r["text"])):
        answer = row["text"].split(f"{ASSISTANT_LABEL}:", 1)[-1]
        sentences = [_LABEL.sub("", s).strip(" *#>-\n") for s in _SENTENCE.split(answer)]
        sentences = [s for s in sentences if 8 <= len(s.split()) <= 40]
        if sentences:
            candidates.append((rng.choice(sentences), (row["doc_id"], row["turn_index"])))
    rng.shuffle(candidates)
    return candidates[:n_queries]


def evaluate_retrieval(
    config: Config, *, searcher: Searcher | None = None, n_queries: int = 200, seed: int = 13, k: int = 10
) -> dict:
    """Self-supervised: recall@1/5/10 and MRR per mode; not logged (these searches would distort usage scores)."""
    searcher = searcher or Searcher(config)
    queries = build_queries(searcher, n_queries, seed)
    result: dict = {"queries": len(queries), "model_id": searcher.embedder.model_id, "modes": {}}
    for mode in MODES:
        ranks = []
        for query, target in queries:
            hits = searcher.search(query, k=k, mode=mode, log=False)
            found = [(h.doc_id, h.turn_index) for h in hits]
            ranks.append(found.index(target) + 1 if target in found else None)
        result["modes"][mode] = metrics(ranks)
    return result


def _fold(text: str) -> str:
    return _SPACE.sub(" ", text.casefold()).strip()


def _like(value: str) -> str:
    """A file name inside a SQL LIKE pattern: quotes doubled, '%' dropped ('_' may over-match; ``matches`` decides)."""
    return value.replace("'", "''").replace("%", "")
