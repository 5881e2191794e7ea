"""Ingest throughput and memory: a generated vault of dialogues, and one huge conversations.json.

    .venv/bin/python bench/bench_ingest.py [--dialogues 10000] [--export-mb 500] [--workdir DIR]

Writes bench/results/ingest.json. Each measured ingest runs in a fresh subprocess so its peak
RSS (ru_maxrss of the child) is the ingest's own, not this script's.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORDS_RU = (
    "память модель обучение данные смысл вопрос ответ бег марафон темп идея система проект текст знание опыт".split()
)
WORDS_EN = "memory model training data meaning question answer running marathon pace idea system project text".split()


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    words = WORDS_RU if rng.random() < 0.8 else WORDS_EN
    return " ".join(_sentence(rng, words, rng.randint(6, 16)) for _ in range(sentences))


def make_vault(
    folder: Path, count: int, seed: int = 1, *, max_exchanges: int = 6, max_answer_paragraphs: int = 4
) -> int:
    """Nexus-style Obsidian notes (callout format), one dialogue of up to max_exchanges exchanges per file."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        lines = []
        for turn in range(rng.randint(min(2, max_exchanges), max_exchanges)):
            day = f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2025"
            stamp = f"{day} at {rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
            lines.append(f">[!nexus_user] **User** - {stamp}")
            lines.append(f"> {_paragraph(rng, rng.randint(1, 3))}")
            lines.append(f"<!-- UID: u{i}-{turn} -->\n\n")
            lines.append(f">[!nexus_agent] **Assistant** - {stamp}")
            for _ in range(rng.randint(1, max_answer_paragraphs)):
                lines.append(f"> {_paragraph(rng, rng.randint(2, 5))}\n>")
            lines.append(f"<!-- UID: a{i}-{turn} -->\n\n")
        path = folder / f"{i // 1000:02d}" / f"dialogue_{i:05d}.md"
        path.parent.mkdir(exist_ok=True)
        text = "\n".join(lines)
        path.write_text(text, encoding="utf-8")
        total += len(text.encode("utf-8"))
    return total


def make_chatgpt_export(path: Path, target_mb: float, seed: int = 2) -> int:
    """A ChatGPT conversations.json of about target_mb, written streaming (never held in memory)."""
    rng = random.Random(seed)
    target = int(target_mb * 1_000_000)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write("[")
        n = 0
        while written < target:
            mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}}
            parent = "root"
            turns = rng.randint(2, 10)
            for t in range(turns):
                node = f"m{t}"
                role = "user" if t % 2 == 0 else "assistant"
                mapping[node] = {
                    "id": node,
                    "parent": parent,
                    "children": [f"m{t + 1}"] if t + 1 < turns else [],
                    "message": {
                        "id": node,
                        "author": {"role": role},
                        "create_time": 1_700_000_000 + n * 100 + t,
                        "content": {"content_type": "text", "parts": [_paragraph(rng, rng.randint(2, 12))]},
                        "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
                        "recipient": "all",
                    },
                }
                parent = node
            conversation = {
                "id": f"conv-{n}",
                "conversation_id": f"conv-{n}",
                "title": f"Разговор {n}",
                "create_time": 1_700_000_000 + n * 100,
                "update_time": 1_700_000_000 + n * 100 + turns,
                "current_node": parent,
                "mapping": mapping,
            }
            chunk = ("," if n else "") + json.dumps(conversation, ensure_ascii=False)
            out.write(chunk)
            written += len(chunk.encode("utf-8"))
            n += 1
        out.write("]")
    return n


INGEST_CHILD = """
import json, resource, sys, time
from pathlib import Path
from memory_pipeline.config import Config
from memory_pipeline.ingest.pipeline import ingest_kind
from memory_pipeline.records import Kind
source, storage = Path(sys.argv[1]), Path(sys.argv[2])
config = Config(storage_root=storage, sources={"dialogues": [source]})
started = time.perf_counter()
report = ingest_kind(config, Kind.DIALOGUE)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "documents": report.documents_total, "files": report.files_parsed,
                  "failed": report.files_failed, "bytes": report.bytes_parsed,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure_ingest(source: Path, storage: Path) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", INGEST_CHILD, str(source), str(storage)], capture_output=True, text=True, check=True
    )
    figures = json.loads(output.stdout.strip().splitlines()[-1])
    figures["documents_per_s"] = round(figures["documents"] / figures["seconds"], 1)
    figures["mb_per_s"] = round(figures["bytes"] / 1e6 / figures["seconds"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dialogues", type=int, default=10_000)
    parser.add_argument("--export-mb", type=float, default=500)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_"))
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        vault = work / "vault"
        vault_bytes = make_vault(vault, args.dialogues)
        results["vault"] = {
            "dialogues": args.dialogues,
            "mb": round(vault_bytes / 1e6, 1),
            **measure_ingest(vault, work / "storage_vault"),
        }
        rerun = measure_ingest(vault, work / "storage_vault")
        results["vault_rerun_no_changes"] = {"seconds": round(rerun["seconds"], 3), "files_parsed": rerun["files"]}
        print(json.dumps(results["vault"], indent=1), flush=True)
        export_dir = work / "export"
        export_dir.mkdir()
        conversations = make_chatgpt_export(export_dir / "conversations.json", args.export_mb)
        size_mb = (export_dir / "conversations.json").stat().st_size / 1e6
        results["chatgpt_export"] = {
            "conversations": conversations,
            "mb": round(size_mb, 1),
            **measure_ingest(export_dir, work / "storage_export"),
        }
        print(json.dumps(results["chatgpt_export"], indent=1), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS / 'ingest.json'}")


if __name__ == "__main__":
    main()
