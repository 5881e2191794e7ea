"""Training set build time and sizes for a generated corpus of dialogues (in memory, no stores).

    .venv/bin/python bench/bench_datasets.py [--dialogues 10000] [--seed 1] [--workdir DIR]

Dialogues of 2-6 exchanges in Russian (80%) and English, with some exact and near duplicate
conversations and some contact details, every exchange promoted to the core adapter (user voice)
with a random score. Times a first build, an unchanged re-build (same process: token and scrub
caches warm) and new_examples_since_latest, then a profiled build from cold caches in a fresh
folder for where the CPU time goes (cProfile adds overhead; the shares are what matter).
Writes bench/results/datasets.json.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import platform
import pstats
import random
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from memory_pipeline.config import Config
from memory_pipeline.datasets import build_dataset, curation, new_examples_since_latest
from memory_pipeline.records import Document, Kind, Turn

RESULTS = Path(__file__).resolve().parent / "results"
RU_SYLLABLES = "ка ло ми ра ту не по ве да ст ри ко ль мо за пре ны ся ть ла го".split()
EN_SYLLABLES = "ta lo mi ra tu ne po ve da st ri co el mo za pre ny sy th la go".split()


@dataclass
class Assignment:
    item_id: str
    doc_id: str
    kind: str
    unit: dict
    score: float
    adapters: list[str]
    tier: str = "lora:core"
    text: str = ""


def vocabulary(rng: random.Random, syllables: list[str], size: int) -> list[str]:
    return sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(size * 2)})[:size]


def sentence(rng: random.Random, vocab: list[str], cum_weights: list[float], n: int) -> str:
    return " ".join(rng.choices(vocab, cum_weights=cum_weights, k=n)).capitalize() + "."


def generate(n_dialogues: int, seed: int) -> tuple[list[Document], list[Assignment]]:
    rng = random.Random(seed)
    languages = {}
    for lang, syllables in (("ru", RU_SYLLABLES), ("en", EN_SYLLABLES)):
        vocab = vocabulary(rng, syllables, 6000)
        languages[lang] = (vocab, list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocab)))))  # Zipf
    docs: list[Document] = []
    for d in range(n_dialogues):
        roll = rng.random()
        if docs and roll < 0.05:  # the same conversation exported twice
            turns = [t.model_copy() for t in rng.choice(docs).turns]
        elif docs and roll < 0.08:  # near copy: one word changed in every turn
            turns = [Turn(role=t.role, text=t.text.replace(" ", " изменено ", 1)) for t in rng.choice(docs).turns]
        else:
            vocab, weights = languages["ru" if rng.random() < 0.8 else "en"]
            turns = []
            for _ in range(rng.randint(2, 6)):
                user = " ".join(sentence(rng, vocab, weights, rng.randint(6, 16)) for _ in range(rng.randint(1, 5)))
                if rng.random() < 0.02:
                    user += f" Пиши на user{d}@example.com или звони +7 916 {d % 1000:03d}-45-67."
                answer = " ".join(sentence(rng, vocab, weights, rng.randint(8, 20)) for _ in range(rng.randint(2, 10)))
                turns += [Turn(role="user", text=user), Turn(role="assistant", text=answer)]
        docs.append(
            Document(
                doc_id=f"dlg{d:06d}",
                kind=Kind.DIALOGUE,
                format="chatgpt_json",
                title=f"Разговор {d}",
                source_path=f"/exports/conversations.json#{d}",
                source_hash="0" * 64,
                turns=turns,
            )
        )
    assignments = [
        Assignment(
            f"{doc.doc_id}:{i}",
            doc.doc_id,
            "dialogue",
            {"turn_index": i},
            round(rng.uniform(0.55, 1.0), 4),
            ["core"],
            text=doc.turns[i].text,
        )
        for doc in docs
        for i in range(0, len(doc.turns), 2)
    ]
    return docs, assignments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    docs, assignments = generate(args.dialogues, args.seed)
    generate_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        config = Config(storage_root=Path(tmp) / "storage")

        started = time.perf_counter()
        first = build_dataset(config, "core", assignments, docs)
        build_seconds = time.perf_counter() - started

        started = time.perf_counter()
        again = build_dataset(config, "core", assignments, docs)
        rebuild_seconds = time.perf_counter() - started

        started = time.perf_counter()
        new = new_examples_since_latest(config, "core", assignments=assignments)
        new_examples_seconds = time.perf_counter() - started

        sizes = {p.name: p.stat().st_size for p in sorted(first.path.iterdir())}
        curation.count_tokens.cache_clear()  # the profiled build starts cold, like a fresh run
        curation._scrub_cached.cache_clear()
        profile = cProfile.Profile(time.process_time)  # CPU time: other processes on the machine do not count
        profiled = Config(storage_root=Path(tmp) / "profiled")
        profile.runcall(build_dataset, profiled, "core", assignments, docs)
        stats = pstats.Stats(profile)
        wanted = (
            "make_examples",
            "with_token_counts",
            "filter_languages",
            "scrub_examples",
            "filter_token_bounds",
            "dedup_exact",
            "dedup_near",
            "apply_token_budget",
            "split_by_document",
            "decontaminate",
            "make_card",
            "commit_version",
        )
        stage_seconds = {
            name: round(cumulative, 2)
            for (_, _, name), (_, _, _, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
            if name in wanted
        }

    card = first.card.model_dump(mode="json")
    result = {
        "benchmark": "datasets",
        "dialogues": args.dialogues,
        "promoted_items": len(assignments),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "generate_seconds": round(generate_seconds, 2),
        "build_seconds": round(build_seconds, 2),
        "items_per_second": round(len(assignments) / build_seconds, 1),
        "rebuild_unchanged_seconds_warm": round(rebuild_seconds, 2),
        "rebuild_created": again.created,
        "new_examples_since_latest": new,
        "new_examples_seconds": round(new_examples_seconds, 3),
        "stage_seconds_profiled": dict(sorted(stage_seconds.items(), key=lambda kv: -kv[1])),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "counts": card["counts"],
        "tokens": card["tokens"],
        "filters": card["filters"],
        "file_bytes": sizes,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "datasets.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
