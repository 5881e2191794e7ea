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
from memory_pipeline.config import Config, TrainingConfig
from memory_pipeline.datasets.versions import data_files
from memory_pipeline.errors import ParseError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
DATASET_FILES = ("train.jsonl", "eval.jsonl", "heldout.jsonl", "card.json")
_ROLES = ("system", "user", "assistant")
# Config fields that do not change what is learned, so a resumed run may differ in them.
_RUN_KEY_EXCLUDE = {
    "time_budget_minutes", "device", "checkpoint_every_steps", "eval_max_examples", "sample_prompts", "sample_max_new_tokens"
}


@dataclass(frozen=True)
class Example:
    """One training line: a chat (``messages``) or a plain completion (``text``)."""

    messages: tuple[dict[str, str], ...] | None = None
    text: str | None = None

    @property
    def key(self) -> str:
        """Content hash, to tell new examples from ones an earlier dataset version already had."""
        payload = {"messages": list(self.messages)} if self.messages is not None else {"text": self.text}
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


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


def parse_example(obj: Any) -> Example:
    """Validate one decoded JSONL line; raises ValueError with the reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if ("messages" in obj) == ("text" in obj):
        raise ValueError("needs exactly one of 'messages' (chat) or 'text' (completion)")
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"].strip():
            raise ValueError("'text' must be a non-empty string")
        return Example(text=obj["text"])
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} needs 'role' in {_ROLES} and string 'content'")
    roles = [m["role"] for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(turns) // 2)
    if not turns or turns != expected:
        raise ValueError(f"roles must be [system,] user, assistant, user, ... ending with assistant; got {roles}")
    return Example(messages=tuple({"role": m["role"], "content": m["content"]} for m in messages))


def read_examples(path: Path, *, limit: int | None = None) -> list[Example]:
    """Read a JSONL file of examples (first ``limit``); a bad line raises ParseError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ParseError(path, "file does not exist")
    examples: list[Example] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                examples.append(parse_example(json.loads(line)))
            except ValueError as exc:
                raise ParseError(path, f"line {number}: {exc}") from None
    return examples


def read_split(dataset_dir: Path, split: str) -> list[Example]:
    """A version's whole split: its chat file, then its text file when it has one."""
    return [example for path in data_files(dataset_dir, split) for example in read_examples(path)]


def read_card(dataset_dir: Path) -> dict[str, Any]:
    """The dataset version's card, after checking the folder holds every file training needs."""
    for name in DATASET_FILES:
        if not (dataset_dir / name).is_file():
            raise ParseError(dataset_dir / name, "missing from the dataset version folder")
    card_path = dataset_dir / "card.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ParseError(card_path, f"not valid JSON: {exc}") from None
    missing = [key for key in ("version", "adapter", "content_hash") if key not in card]
    if missing:
        raise ParseError(card_path, f"missing key(s) {missing}")
    return card


def encode_example(tokenizer: Any, example: Example, *, max_seq_length: int) -> Encoded:
    """Token ids and labels: chat examples learn only the assistant turns (end token included), text learns all."""
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"][:max_seq_length]
        return Encoded(ids, list(ids))
    messages = list(example.messages or ())
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (rendered.startswith(through) and through.startswith(prompt)):
            raise ValueError("the chat template does not render conversations prefix-stably; cannot locate assistant turns")
        spans.append((len(prompt), len(through.rstrip())))
    tokens = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids = tokens["input_ids"][:max_seq_length]
    labels = [
        token if any(end > lo and start < hi for lo, hi in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, tokens["offset_mapping"])
    ]
    return Encoded(list(ids), labels)


def collate(batch: Sequence[Encoded], *, pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


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
    started = time.monotonic()
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
        bar.update(1)
        bar.set_postfix(loss=f"{state['loss']:.4f}")
        elapsed = time.monotonic() - started
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


def _run_key(adapter_name: str, card: dict[str, Any], base_hash: str, training: TrainingConfig, **extra: Any) -> str:
    """Identity of a training run, so a restart resumes only a run that would learn the same thing."""
    settings = {k: v for k, v in training.model_dump(mode="json").items() if k not in _RUN_KEY_EXCLUDE}
    payload = {"adapter": adapter_name, "dataset": card["content_hash"], "base": base_hash, "training": settings, **extra}
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

    from memory_pipeline.adapters.evaluate import evaluate_adapter, sample_generations

    log = log or logger.info
    training = config.training
    root = Path(output_root) if output_root is not None else config.adapters_dir
    dataset_dir = Path(dataset_dir)
    card = read_card(dataset_dir)
    if card["adapter"] != adapter_name:
        raise ParseError(dataset_dir / "card.json", f"dataset is for adapter {card['adapter']!r}, not {adapter_name!r}")

    random.seed(training.seed)
    torch.manual_seed(training.seed)
    base = load_base_model(training, device=training.device, cache_dir=config.cache_dir / "base_models")
    previous = registry.current_version(config, adapter_name, root=root)
    if previous is not None and previous.manifest["base"]["hash"] != base.base_hash:
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

    metrics = evaluate_adapter(
        model,
        base.tokenizer,
        dataset_dir,
        previous_path=previous.path if previous is not None else None,
        max_examples=training.eval_max_examples,
        max_seq_length=training.max_seq_length,
        batch_size=training.batch_size,
    )
    verdict = registry.gate(metrics, training.forgetting_margin)
    sample_set = read_examples(dataset_dir / "eval.jsonl", limit=training.sample_prompts)
    prompts = [list(e.messages[:-1]) for e in sample_set if e.messages]
    samples = []
    if prompts:
        with model.disable_adapter():
            before = sample_generations(model, base.tokenizer, prompts, max_new_tokens=training.sample_max_new_tokens)
        after = sample_generations(model, base.tokenizer, prompts, max_new_tokens=training.sample_max_new_tokens)
        samples = [{"prompt": p, "base": b, "adapter": a} for p, b, a in zip(prompts, before, after)]

    record = {
        **asdict(metrics),
        "gate_passed": verdict.passed,
        "gate_reasons": verdict.reasons,
        "forgetting_margin": training.forgetting_margin,
        **asdict(stats),
        **mix,
        "dropped_examples": len(encoded) - len(data),
    }
    manifest = {
        "dataset": {**{k: card[k] for k in ("version", "adapter", "content_hash")}, "path": _portable(dataset_dir, config.storage_root)},
        "base": {"id": base.base_id, "hash": base.base_hash},
        "mode": mode,
        "parent": parent,
        "previous_current": previous.version if previous is not None else None,
    }
    used = {**training.model_dump(mode="json"), "mode": mode, "max_steps": total_steps}

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=["default"], save_embedding_layers=False)
        _unpin_base_path(folder / "adapter_config.json", config.storage_root, base.base_id)
        (folder / "metrics.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        (folder / "config.json").write_text(json.dumps(used, indent=2), encoding="utf-8")
        (folder / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False), encoding="utf-8")

    version = registry.commit_version(root, adapter_name, manifest=manifest, fill=fill)
    if verdict.passed:
        registry.set_current(root, adapter_name, version.version, by="gate", reason="passed the gate")
        log(f"{adapter_name} {version.version} passed the gate and is now current")
    else:
        log(f"{adapter_name} {version.version} failed the gate; current unchanged: " + "; ".join(verdict.reasons))
    shutil.rmtree(work_dir, ignore_errors=True)
    return version
