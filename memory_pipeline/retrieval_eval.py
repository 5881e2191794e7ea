"""Self-supervised retrieval evaluation: can search find the exchange a sentence came from?

Queries are sentences taken from inside indexed dialogue answers; the target is the exchange
(document + turn) they came from. No labels needed, so it runs on the user's own memory after
every indexing run and shows whether a change of model or fusion helped.
"""

from __future__ import annotations

import random
import re

from memory_pipeline.config import Config
from memory_pipeline.search import MODES, Searcher

_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_LABEL = re.compile(r"^(User|Assistant):\s*", re.MULTILINE)


def build_queries(searcher: Searcher, n_queries: int, seed: int) -> list[tuple[str, tuple[str, int]]]:
    """(query sentence, (doc_id, turn_index)) pairs from dialogue answers, sampled reproducibly."""
    rows = searcher.store.rows(["doc_id", "turn_index", "text"], "kind = 'dialogue'")
    rng = random.Random(seed)
    candidates = []
    for row in sorted(rows, key=lambda r: (r["doc_id"], r["turn_index"] or 0, r["text"])):
        answer = row["text"].split("Assistant:", 1)[-1]
        sentences = [_LABEL.sub("", s).strip(" *#>-\n") for s in _SENTENCE.split(answer)]
        sentences = [s for s in sentences if 8 <= len(s.split()) <= 40]
        if sentences:
            candidates.append((rng.choice(sentences), (row["doc_id"], row["turn_index"])))
    rng.shuffle(candidates)
    return candidates[:n_queries]


def evaluate_retrieval(config: Config, *, searcher: Searcher | None = None, n_queries: int = 200, seed: int = 13, k: int = 10) -> dict:
    """recall@1/5/10 and MRR per mode; these searches are not logged (they would distort usage scores)."""
    searcher = searcher or Searcher(config)
    queries = build_queries(searcher, n_queries, seed)
    result: dict = {"queries": len(queries), "model_id": searcher.embedder.model_id, "modes": {}}
    for mode in MODES:
        ranks = []
        for query, target in queries:
            hits = searcher.search(query, k=k, mode=mode, log=False)
            found = [(h.doc_id, h.turn_index) for h in hits]
            ranks.append(found.index(target) + 1 if target in found else None)
        n = max(1, len(ranks))
        result["modes"][mode] = {
            "recall@1": sum(1 for r in ranks if r == 1) / n,
            "recall@5": sum(1 for r in ranks if r and r <= 5) / n,
            "recall@10": sum(1 for r in ranks if r and r <= 10) / n,
            "mrr": sum(1 / r for r in ranks if r) / n,
        }
    return result
