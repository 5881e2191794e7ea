"""QLoRA on a CUDA machine: a 0.5-1.5B base in 4 bit, a few steps, the gate, the serving export; figures to JSON.

    .venv/bin/pip install -e '.[gpu]'          # bitsandbytes
    hf download Qwen/Qwen2.5-0.5B-Instruct     # once; nothing is downloaded at run time
    .venv/bin/python bench/bench_gpu_qlora.py [--base Qwen/Qwen2.5-0.5B-Instruct] [--steps 20] [--quantization 4bit]

Exercises the big-model path the user's real setup needs (a Qwen3-30B-class base on one GPU) at a size that
runs in minutes: weights loaded straight into 4 bit on the GPU (no fp32 copy), the memory estimate printed
before loading, gradient checkpointing, training through the real train_adapter (TRL's SFTTrainer, bf16
autocast), the generation gate, and `export_for_serving`. Writes bench/results/gpu_qlora.json: the estimate
against the measured peak GPU memory, tokens/s, perplexities, the gate's figures and verdict, and the
`vllm serve` command. Refuses to run without CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import write_dataset  # noqa: E402  (the same generated Russian/English chat set)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", default="Qwen/Qwen2.5-0.5B-Instruct", help="hub id in the local HF cache, or a folder"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--quantization", choices=["4bit", "8bit", "none"], default="4bit")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the run (default: a new temp dir)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_gpu_qlora needs a CUDA GPU (this machine has none); bench_training.py is the CPU benchmark")

    from memory_pipeline.adapters import export_for_serving, train_adapter
    from memory_pipeline.config import Config, TrainingConfig

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gpu-qlora-"))
    dataset = write_dataset(workdir / f"run-{int(time.time())}", seed=7)
    config = Config(
        storage_root=dataset.parents[2],
        training=TrainingConfig(
            base_model=args.base,
            device="cuda",
            quantization=args.quantization,
            gradient_checkpointing=True,
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_seq_length=args.max_seq_length,
            learning_rate=2e-4,
            r=16,
            alpha=32,
            sample_prompts=2,
            sample_max_new_tokens=48,
        ),
    )
    log: list[str] = []

    def record(line: str) -> None:
        print(line, flush=True)
        log.append(line)

    torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    version = train_adapter(config, "core", dataset, progress=True, log=record)
    total = time.monotonic() - started
    peak_gpu = torch.cuda.max_memory_allocated() / 1024**3
    if not version.passed:
        from memory_pipeline.adapters import activate

        activate(config, "core", version.version, by="bench", reason="export is benchmarked whatever the gate said")
    export_started = time.monotonic()
    serving = export_for_serving(config, workdir / "export")
    m = version.metrics.model_dump()  # the figures as a plain dict, for the results file
    result = {
        "base": args.base,
        "trainer": "trl.SFTTrainer",
        "quantization": args.quantization,
        "gpu": torch.cuda.get_device_name(0),
        "gpu_total_gib": round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1),
        "steps": m["steps"],
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "memory_estimate": next((line for line in log if line.startswith("memory estimate")), None),
        "peak_gpu_allocated_gib": round(peak_gpu, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tokens_per_second": m["tokens_per_second"],
        "train_seconds": m["seconds"],
        "total_seconds_incl_load_eval_save": round(total, 1),
        "export_seconds": round(time.monotonic() - export_started, 1),
        "eval_ppl": {"base": m["eval_ppl_base"], "adapter": m["eval_ppl_adapter"]},
        "heldout_ppl": {"base": m["heldout_ppl_base"], "adapter": m["heldout_ppl_adapter"]},
        "generation": m["generation"],
        "gate_passed": m["gate_passed"],
        "gate_reasons": m["gate_reasons"],
        "vllm_command": serving.command,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "gpu_qlora.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
