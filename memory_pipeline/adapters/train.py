"""Train one LoRA adapter version on a dataset version, evaluate it, gate it and register it.

A plain torch loop rather than a trainer framework: the few things that matter here (loss on the
assistant's tokens only, a wall-clock budget, checkpoints that survive a killed run, offline by
construction) are each a handful of lines, and nothing hidden reaches for the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memory_pipeline.adapters import registry
from memory_pipeline.adapters.base_model import load_base_model
from memory_pipeline.adapters.card import card_markdown, demo_note
from memory_pipeline.adapters.data import (
    IGNORE_INDEX,
    Encoded,
    Example,
    collate,
    encode_example,
    read_card,
    read_examples,
    read_split,
)
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
from memory_pipeline.errors import ParseError

logger = logging.getLogger(__name__)

_PROGRESS_EVERY_SECONDS = 30.0  # a progress line in the log (Dagster's too), besides the terminal's bar

# Config fields that do not change what is learned, so a resumed run may differ in them.
_RUN_KEY_EXCLUDE = {
    "time_budget_minutes", "device", "checkpoint_every_steps", "eval_max_examples", "sample_prompts", "sample_max_new_tokens",
    "gradient_checkpointing", "check_memory",
}


@dataclass(frozen=True)
class TrainStats:
    steps: int
    total_steps: int
    tokens_trained: int  # tokens the loss was computed on
    tokens_seen: int  # all input tokens
    seconds: float
    tokens_per_second: float
    stopped: str  # "completed" or "time budget"
    resumed_from_step: int
    final_loss: float | None


def training_examples(dataset_dir: Path, *, mode: str, replay_fraction: float, seed: int) -> tuple[list[Example], dict[str, int]]:
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


def build_lora_model(model: Any, training: TrainingConfig, *, init_from: Path | None = None) -> Any:
    """Wrap the base in a trainable LoRA named 'default': fresh from the config, or from a saved adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if training.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if init_from is not None:
        return PeftModel.from_pretrained(model, init_from, is_trainable=True)
    lora = LoraConfig(
        r=training.r,
        lora_alpha=training.alpha,
        lora_dropout=training.dropout,
        target_modules=training.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def total_steps_for(n_examples: int, training: TrainingConfig, max_steps: int | None) -> int:
    steps = max_steps if max_steps is not None else training.max_steps
    if steps > 0:
        return steps
    batches = math.ceil(n_examples / training.batch_size)
    return max(1, math.ceil(batches * training.epochs / training.gradient_accumulation))


def fit(
    model: Any,
    data: Sequence[Encoded],
    training: TrainingConfig,
    *,
    total_steps: int,
    pad_id: int,
    work_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = logger.info,
) -> TrainStats:
    """Optimise the trainable (LoRA) parameters; checkpoint to ``work_dir`` and resume from it when present."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=0.0)
    warmup = max(1, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / total_steps)
    )
    state = {"step": 0, "tokens_trained": 0, "tokens_seen": 0, "seconds": 0.0, "loss": None}
    if work_dir is not None and _latest_checkpoint(work_dir) is not None:
        state = _load_checkpoint(_latest_checkpoint(work_dir), model, optimizer, scheduler)
        log(f"resuming from checkpoint at step {state['step']}/{total_steps}")
    resumed_from = state["step"]
    n_batches = math.ceil(len(data) / training.batch_size)
    orders: dict[int, list[int]] = {}

    def micro_batch(index: int) -> list[Encoded]:
        epoch, position = divmod(index, n_batches)
        if epoch not in orders:
            generator = torch.Generator().manual_seed(training.seed + epoch)
            orders[epoch] = torch.randperm(len(data), generator=generator).tolist()
        chosen = orders[epoch][position * training.batch_size : (position + 1) * training.batch_size]
        return [data[i] for i in chosen]

    model.train()
    budget = training.time_budget_minutes * 60
    started = last_report = time.monotonic()
    seen_at_start = state["tokens_seen"]
    stopped = "completed"
    bar = tqdm(total=total_steps, initial=state["step"], desc="lora", unit="step", disable=not progress)
    while state["step"] < total_steps:
        group = [micro_batch(state["step"] * training.gradient_accumulation + k) for k in range(training.gradient_accumulation)]
        group_tokens = sum(e.supervised for batch in group for e in batch)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for batch in group:
            tensors = {k: v.to(device) for k, v in collate(batch, pad_id=pad_id).items()}
            n_tokens = int((tensors["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n_tokens == 0:
                continue
            loss = model(**tensors).loss.float() * n_tokens
            (loss / group_tokens).backward()
            loss_sum += float(loss.detach())
            state["tokens_seen"] += int(tensors["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        state["tokens_trained"] += group_tokens
        state["loss"] = loss_sum / max(1, group_tokens)
        elapsed = time.monotonic() - started
        rate = (state["tokens_seen"] - seen_at_start) / elapsed if elapsed > 0 else 0.0
        bar.update(1)
        bar.set_postfix(loss=f"{state['loss']:.4f}", tok_s=f"{rate:.0f}")
        if time.monotonic() - last_report >= _PROGRESS_EVERY_SECONDS or state["step"] in (resumed_from + 1, total_steps):
            last_report = time.monotonic()
            eta = elapsed / (state["step"] - resumed_from) * (total_steps - state["step"])
            log(
                f"step {state['step']}/{total_steps} loss {state['loss']:.4f} · {rate:.0f} tokens/s · "
                f"elapsed {elapsed:.0f}s · ETA {eta:.0f}s (budget left {max(0.0, budget - elapsed):.0f}s)"
            )
        if work_dir is not None and state["step"] % training.checkpoint_every_steps == 0 and state["step"] < total_steps:
            _save_checkpoint(work_dir, model, optimizer, scheduler, {**state, "seconds": state["seconds"] + elapsed})
            log(f"checkpoint saved at step {state['step']}")
        if elapsed > budget and state["step"] < total_steps:
            stopped = "time budget"
            log(f"time budget of {training.time_budget_minutes} min reached at step {state['step']}/{total_steps}; stopping")
            break
    bar.close()
    model.eval()
    seconds = state["seconds"] + (time.monotonic() - started)
    return TrainStats(
        steps=state["step"],
        total_steps=total_steps,
        tokens_trained=state["tokens_trained"],
        tokens_seen=state["tokens_seen"],
        seconds=round(seconds, 3),
        tokens_per_second=round(state["tokens_seen"] / seconds, 2) if seconds > 0 else 0.0,
        stopped=stopped,
        resumed_from_step=resumed_from,
        final_loss=state["loss"],
    )


def _latest_checkpoint(work_dir: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):
        if (work_dir / name / "state.pt").is_file():
            return work_dir / name
    return None


def _save_checkpoint(work_dir: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
    """Write beside the last checkpoint, then swap, so a kill at any moment leaves one whole checkpoint."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    work_dir.mkdir(parents=True, exist_ok=True)
    tmp, final, old = work_dir / "checkpoint.tmp", work_dir / "checkpoint", work_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, tmp / "adapter.safetensors")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state,
            "rng": torch.get_rng_state(),
        },
        tmp / "state.pt",
    )
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    set_peft_model_state_dict(model, load_file(folder / "adapter.safetensors", device=str(device)))
    saved = torch.load(folder / "state.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"].cpu())
    return dict(saved["state"])


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

    from memory_pipeline.adapters.evaluate import evaluate_adapter, judge_generation

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
    base = load_base_model(training, device=training.device, cache_dir=config.base_models_dir, for_training=True, log=log)
    previous = registry.current_version(config, adapter_name, root=root)
    if previous is not None and previous.manifest.base.hash != base.base_hash:
        log(f"current {adapter_name} {previous.version} was trained on another base model; not compared or continued")
        previous = None
    mode = training.mode
    if mode == "continue" and previous is None:
        log("mode 'continue' but no current adapter on this base: retraining from the base")
        mode = "retrain"

    examples, mix = training_examples(dataset_dir, mode=mode, replay_fraction=training.replay_fraction, seed=training.seed)
    encoded = [encode_example(base.tokenizer, e, max_seq_length=training.max_seq_length) for e in examples]
    data = [e for e in encoded if e.supervised > 0]
    if not data:
        raise ParseError(dataset_dir / "train.jsonl", f"no trainable examples ({len(examples)} read, none with tokens to learn)")
    total_steps = total_steps_for(len(data), training, max_steps)
    parent = previous.version if mode == "continue" and previous is not None else None
    run_key = _run_key(adapter_name, card, base.base_hash, training, mode=mode, parent=parent, steps=total_steps)
    work_dir = root / adapter_name / ".work" / run_key
    log(f"training {adapter_name} on {dataset_dir} ({mode}, {len(data)} examples, {total_steps} steps)")

    model = build_lora_model(base.model, training, init_from=previous.path if parent else None)
    stats = fit(
        model, data, training, total_steps=total_steps, pad_id=base.tokenizer.pad_token_id, work_dir=work_dir, progress=progress, log=log
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
