"""Train one LoRA adapter version on a dataset version, evaluate it, gate it and register it.

This module decides what to train (the cumulative set, or new examples plus replay), on which base and from
which parent, and what becomes of the result (gate, registry, card); the optimisation runs on TRL's SFTTrainer
in ``sft.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from memory_pipeline.adapters import registry
from memory_pipeline.adapters.base_model import load_base_model
from memory_pipeline.adapters.card import card_markdown, demo_note
from memory_pipeline.adapters.data import Example, encode_example, read_card, read_split
from memory_pipeline.adapters.manifest import (
    METRICS_FILE,
    AdapterMetrics,
    BaseRef,
    DatasetRef,
    TrainingManifest,
    write_record,
)
from memory_pipeline.config import Config, TrainingConfig
from memory_pipeline.datasets.card import DatasetCard
from memory_pipeline.devices import resolve_device
from memory_pipeline.errors import ParseError

logger = logging.getLogger(__name__)

# Config fields that do not change what is learned, so a resumed run may differ in them.
_RUN_KEY_EXCLUDE = {
    "time_budget_minutes",
    "device",
    "checkpoint_every_steps",
    "eval_max_examples",
    "sample_prompts",
    "sample_max_new_tokens",
    "gradient_checkpointing",
    "check_memory",
}


def training_examples(
    dataset_dir: Path, *, mode: str, replay_fraction: float, seed: int
) -> tuple[list[Example], dict[str, int]]:
    """Examples to train on: the whole (cumulative) train set, or for ``continue`` the new ones plus replay.

    Replay draws ``replay_fraction`` of the examples of earlier dataset versions (sibling folders whose
    names sort before this one), so continuing does not forget what the adapter learnt before.
    """
    current = read_split(dataset_dir, "train")
    if mode == "retrain":
        return current, {"examples": len(current), "new_examples": len(current), "replay_examples": 0}
    earlier: dict[str, Example] = {}
    for sibling in sorted(p for p in dataset_dir.parent.iterdir() if p.is_dir() and p.name < dataset_dir.name):
        for example in read_split(sibling, "train"):
            earlier.setdefault(example.key, example)
    new = [e for e in current if e.key not in earlier]
    pool = sorted(earlier.values(), key=lambda e: e.key)
    replay = random.Random(seed).sample(pool, round(replay_fraction * len(pool)))
    mixed = new + replay
    random.Random(seed + 1).shuffle(mixed)
    return mixed, {"examples": len(mixed), "new_examples": len(new), "replay_examples": len(replay)}


def total_steps_for(n_examples: int, training: TrainingConfig, max_steps: int | None) -> int:
    steps = max_steps if max_steps is not None else training.max_steps
    if steps > 0:
        return steps
    batches = math.ceil(n_examples / training.batch_size)
    return max(1, math.ceil(batches * training.epochs / training.gradient_accumulation))


def _run_key(adapter_name: str, card: DatasetCard, base_hash: str, training: TrainingConfig, **extra: Any) -> str:
    """Identity of a training run, so a restart resumes only a run that would learn the same thing."""
    settings = {k: v for k, v in training.model_dump(mode="json").items() if k not in _RUN_KEY_EXCLUDE}
    payload = {"adapter": adapter_name, "dataset": card.content_hash, "base": base_hash, "training": settings, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _portable(path: Path, storage_root: Path) -> str:
    """``path`` relative to the storage root when it lies inside it: the stored record survives moving the folder."""
    try:
        return Path(path).resolve().relative_to(Path(storage_root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _unpin_base_path(adapter_config: Path, storage_root: Path, base_id: str) -> None:
    """PEFT records the base model's folder; a GGUF converted into the storage cache is named by its config id instead.

    An absolute path into the storage folder would break when the folder is moved or restored elsewhere.
    """
    if not adapter_config.is_file():
        return
    data = json.loads(adapter_config.read_text(encoding="utf-8"))
    recorded = data.get("base_model_name_or_path")
    if recorded and _portable(Path(recorded), storage_root) != str(recorded):
        data["base_model_name_or_path"] = base_id
        adapter_config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def train_adapter(
    config: Config,
    adapter_name: str,
    dataset_dir: Path,
    *,
    max_steps: int | None = None,
    output_root: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> registry.AdapterVersion:
    """Train, evaluate and register a new version of ``adapter_name``; ``current`` moves only if the gate passes."""
    import torch
    from peft import PeftModel

    from memory_pipeline.adapters.evaluate import evaluate_adapter, judge_generation
    from memory_pipeline.adapters.sft import fit

    log = log or logger.info
    training = config.training
    root = Path(output_root) if output_root is not None else config.adapters_dir
    dataset_dir = Path(dataset_dir)
    card = read_card(dataset_dir)
    if card.adapter != adapter_name:
        raise ParseError(dataset_dir / "card.json", f"dataset is for adapter {card.adapter!r}, not {adapter_name!r}")

    random.seed(training.seed)
    torch.manual_seed(training.seed)
    log(f"loading base model {training.base_model}")
    device = resolve_device(training.device)
    cache = config.base_models_dir
    base = load_base_model(training, device=device, cache_dir=cache, for_training=True, log=log)
    previous = registry.current_version(config, adapter_name, root=root)
    if previous is not None and previous.manifest.base.hash != base.base_hash:
        log(f"current {adapter_name} {previous.version} was trained on another base model; not compared or continued")
        previous = None
    mode = training.mode
    if mode == "continue" and previous is None:
        log("mode 'continue' but no current adapter on this base: retraining from the base")
        mode = "retrain"

    examples, mix = training_examples(
        dataset_dir, mode=mode, replay_fraction=training.replay_fraction, seed=training.seed
    )
    encoded = [encode_example(base.tokenizer, e, max_seq_length=training.max_seq_length) for e in examples]
    data = [e for e in encoded if e.supervised > 0]
    if not data:
        raise ParseError(
            dataset_dir / "train.jsonl", f"no trainable examples ({len(examples)} read, none with tokens to learn)"
        )
    total_steps = total_steps_for(len(data), training, max_steps)
    parent = previous.version if mode == "continue" and previous is not None else None
    run_key = _run_key(adapter_name, card, base.base_hash, training, mode=mode, parent=parent, steps=total_steps)
    work_dir = root / adapter_name / ".work" / run_key
    log(f"training {adapter_name} on {dataset_dir} ({mode}, {len(data)} examples, {total_steps} steps)")

    model = base.model
    if parent is not None:
        model = PeftModel.from_pretrained(model, previous.path, is_trainable=True)
    model, stats = fit(
        model,
        base.tokenizer,
        data,
        training,
        total_steps=total_steps,
        work_dir=work_dir,
        device=device,
        progress=progress,
        log=log,
    )

    log("scoring perplexity on the eval and held-out sets (base, adapter, previous)")
    metrics = evaluate_adapter(
        model,
        base.tokenizer,
        dataset_dir,
        previous_path=previous.path if previous is not None else None,
        max_examples=training.eval_max_examples,
        max_seq_length=training.max_seq_length,
        batch_size=training.batch_size,
    )
    log("answering the gate prompts and eval prompts (base and adapter)")
    report = judge_generation(model, base.tokenizer, config, config.adapter(adapter_name), dataset_dir)
    figures = {**asdict(metrics), **report.metrics()}
    verdict = registry.gate(figures, training.forgetting_margin, config.gate)
    samples = {"gate_prompts": report.answers, "eval_prompts": report.samples}

    record = AdapterMetrics.model_validate(
        {
            **figures,
            "gate_passed": verdict.passed,
            "gate_reasons": verdict.reasons,
            "forgetting_margin": training.forgetting_margin,
            **asdict(stats),
            **mix,
            "dropped_examples": len(encoded) - len(data),
        }
    )
    manifest = TrainingManifest(
        dataset=DatasetRef(
            version=card.version,
            adapter=card.adapter,
            content_hash=card.content_hash,
            path=_portable(dataset_dir, config.storage_root),
        ),
        base=BaseRef(id=base.base_id, hash=base.base_hash),
        mode=mode,
        parent=parent,
        previous_current=previous.version if previous is not None else None,
    )
    used = {**training.model_dump(mode="json"), "mode": mode, "max_steps": total_steps}

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=["default"], save_embedding_layers=False)
        _unpin_base_path(folder / "adapter_config.json", config.storage_root, base.base_id)
        write_record(folder / METRICS_FILE, record)
        (folder / "config.json").write_text(json.dumps(used, indent=2), encoding="utf-8")
        (folder / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False), encoding="utf-8")
        (folder / "card.md").write_text(card_markdown(adapter_name, manifest, record, samples), encoding="utf-8")

    version = registry.commit_version(root, adapter_name, manifest=manifest, fill=fill)
    note = demo_note(base.base_id)
    if note:
        log(note)
    if verdict.passed:
        registry.set_current(root, adapter_name, version.version, by="gate", reason="passed the gate")
        log(f"{adapter_name} {version.version} passed the gate and is now current")
    else:
        log(f"{adapter_name} {version.version} failed the gate; current unchanged: " + "; ".join(verdict.reasons))
    shutil.rmtree(work_dir, ignore_errors=True)
    return version
