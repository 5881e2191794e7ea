"""LoRA training speed and effect on the bundled SmolLM2-135M, on CPU, for a few steps.

    .venv/bin/python bench/bench_training.py [--steps 10] [--batch-size 4] [--max-seq-length 128] [--packing]
                                              [--workdir DIR] [--out FILE]

A generated "user voice" chat set (Russian and English) is trained with the real train_adapter (TRL's
SFTTrainer), so the figures include tokenisation, checkpoints, evaluation and registration; tokens/s counts the
training steps alone. Writes bench/results/training.json (or --out, for runs on a busy machine):
tokens/s, seconds, peak RSS, the machine's load average, eval and held-out perplexity before (base) and after
(adapter), and the gate's reading of the base's and the adapter's answers to the gate prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
TOPICS_RU = ["бег", "марафон", "сон", "чтение", "код", "планы", "память", "работа"]
TOPICS_EN = ["running", "sleep", "reading", "code", "plans", "memory", "work", "music"]
HELDOUT = [
    "The Amazon river carries more water than any other river in the world.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Москва стоит на реке Москве и основана в двенадцатом веке.",
    "A prime number has exactly two divisors: one and itself.",
    "Зимой день короче, потому что Земля наклонена к плоскости орбиты.",
    "The printing press spread across Europe in the fifteenth century.",
    "Water boils at a lower temperature high in the mountains.",
    "Шахматы пришли в Европу из Персии через арабский мир.",
]


def make_examples(rng: random.Random, count: int) -> list[dict]:
    """Chats where the assistant side speaks in one recognisable voice: the pattern an adapter should pick up."""
    rows = []
    for _ in range(count):
        if rng.random() < 0.7:
            topic = rng.choice(TOPICS_RU)
            user = f"Что ты думаешь про {topic}?"
            answer = (
                f"Коротко: {topic} — это про регулярность. Маленький шаг каждый день важнее рывка. "
                "Проверяй по итогам недели."
            )
        else:
            topic = rng.choice(TOPICS_EN)
            user = f"What do you think about {topic}?"
            answer = (
                f"In short: {topic} is about consistency. A small step every day beats a sprint. "
                "Check it at the end of the week."
            )
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    return rows


def write_dataset(folder: Path, seed: int) -> Path:
    rng = random.Random(seed)
    dataset = folder / "datasets" / "core" / "d0001"
    dataset.mkdir(parents=True)
    splits = {
        "train": make_examples(rng, 64),
        "eval": make_examples(rng, 12),
        "heldout": [{"text": t} for t in HELDOUT],
    }
    for name, rows in splits.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (dataset / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    (dataset / "card.json").write_text(
        json.dumps({"version": "d0001", "adapter": "core", "content_hash": f"bench-{seed}"})
    )
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--packing", action="store_true", help="pack short examples into full rows (training.packing)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the run (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json", help="where the figures go")
    args = parser.parse_args()

    import torch

    from memory_pipeline.adapters import train_adapter
    from memory_pipeline.config import Config, TrainingConfig

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-training-"))
    dataset = write_dataset(workdir / f"run-{int(time.time())}", seed=7)
    config = Config(
        storage_root=dataset.parents[2],
        training=TrainingConfig(
            base_model="packaged:SmolLM2-135M-Instruct",
            device="cpu",
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_seq_length=args.max_seq_length,
            packing=args.packing,
            learning_rate=5e-4,
            sample_prompts=2,
            sample_max_new_tokens=32,
        ),
    )
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    version = train_adapter(config, "core", dataset, progress=True, log=print)
    total = time.monotonic() - started
    m = version.metrics.model_dump()  # the figures as a plain dict, for the results file
    result = {
        "model": "packaged:SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)",
        "device": "cpu",
        "trainer": "trl.SFTTrainer",
        "packing": args.packing,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "steps": m["steps"],
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "lora": {
            "r": config.training.r,
            "alpha": config.training.alpha,
            "target_modules": config.training.target_modules,
        },
        "train_examples": m["examples"],
        "tokens_seen": m["tokens_seen"],
        "tokens_trained": m["tokens_trained"],
        "tokens_per_second": m["tokens_per_second"],
        "train_seconds": m["seconds"],
        "total_seconds_incl_load_eval_save": round(total, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "eval_ppl_before": m["eval_ppl_base"],
        "eval_ppl_after": m["eval_ppl_adapter"],
        "heldout_ppl_before": m["heldout_ppl_base"],
        "heldout_ppl_after": m["heldout_ppl_adapter"],
        "generation": m["generation"],
        "gate_passed": m["gate_passed"],
        "gate_reasons": m["gate_reasons"],
        "samples": json.loads((version.path / "samples.json").read_text(encoding="utf-8")),
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
