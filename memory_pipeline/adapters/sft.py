"""The optimisation itself, on TRL's SFTTrainer: LoRA config, loss mask, schedule, checkpoints and resume are theirs.

What is ours is small: examples arrive already encoded (``data.encode_example``, the encoding evaluation uses too),
with an ``assistant_masks`` column, so the loss covers the assistant's tokens only whatever the chat template;
a wall-clock budget and progress lines (ETA, tokens/s) are callbacks; a checkpoint counts as written only once
``meter.json`` (train seconds and supervised tokens, carried across a resume) sits beside the trainer's files.

Imports torch, transformers and trl at module level: train.py imports this module only when it trains.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from memory_pipeline.adapters.data import IGNORE_INDEX, Encoded
from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import TrainingConfig

PROGRESS_EVERY_SECONDS = 30.0  # a progress line in the log (Dagster's too), besides the terminal's bar
METER_FILE = "meter.json"


@dataclass(frozen=True)
class TrainStats:
    steps: int
    total_steps: int
    tokens_trained: int  # tokens the loss was computed on
    tokens_seen: int  # all input tokens (padding excluded)
    seconds: float
    tokens_per_second: float
    stopped: str  # "completed" or "time budget"
    resumed_from_step: int
    final_loss: float | None


class TimeBudget(TrainerCallback):
    """Stop after the step that crosses the budget (this run's wall clock); the trainer then ends as after max_steps."""

    def __init__(self, minutes: float, log: Callable[[str], None]) -> None:
        self.seconds = minutes * 60
        self.log = log
        self.started = time.monotonic()
        self.stopped = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if time.monotonic() - self.started > self.seconds and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped = True
            step = f"{state.global_step}/{state.max_steps}"
            self.log(f"time budget of {self.seconds / 60:g} min reached at step {step}; stopping")


class Meter(TrainerCallback):
    """Train seconds and supervised tokens: restored from a checkpoint's ``meter.json``, written into each new one."""

    def __init__(self, seconds: float = 0.0, tokens_trained: int = 0) -> None:
        self.before = seconds
        self.tokens_trained = tokens_trained
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return self.before + time.monotonic() - self.started

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        payload = {"seconds": self.seconds, "tokens_trained": self.tokens_trained}
        atomic_write_text(folder / METER_FILE, json.dumps(payload))  # whole or absent: it marks the checkpoint whole


class Progress(TrainerCallback):
    """A bar on the terminal, and every ``every_seconds`` a line (loss, tokens/s, ETA) through ``log``: the CLI's
    stderr or the Dagster run's logger, whichever the caller passes."""

    def __init__(
        self,
        log: Callable[[str], None],
        *,
        budget_minutes: float,
        bar: bool,
        every_seconds: float = PROGRESS_EVERY_SECONDS,
    ) -> None:
        self.log = log
        self.budget = budget_minutes * 60
        self.show_bar = bar
        self.every = every_seconds
        self.loss: float | None = None
        self.bar: Any = None
        self.started = self.last_line = time.monotonic()
        self.first_step = 0
        self.tokens_at_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = self.last_line = time.monotonic()
        self.first_step, self.tokens_at_start = state.global_step, state.num_input_tokens_seen
        self.bar = tqdm(
            total=state.max_steps, initial=state.global_step, desc="lora", unit="step", disable=not self.show_bar
        )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.loss = float(logs["loss"])
        step, total = state.global_step, state.max_steps
        elapsed = time.monotonic() - self.started
        rate = (state.num_input_tokens_seen - self.tokens_at_start) / elapsed if elapsed > 0 else 0.0
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{self.loss:.4f}", tok_s=f"{rate:.0f}")
        if time.monotonic() - self.last_line >= self.every or step in (self.first_step + 1, total):
            self.last_line = time.monotonic()
            eta = elapsed / max(1, step - self.first_step) * (total - step)
            self.log(
                f"step {step}/{total} loss {self.loss:.4f} · {rate:.0f} tokens/s · elapsed {elapsed:.0f}s · "
                f"ETA {eta:.0f}s (budget left {max(0.0, self.budget - elapsed):.0f}s)"
            )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step < state.max_steps:
            self.log(f"checkpoint saved at step {state.global_step}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class _Trainer(SFTTrainer):
    """SFTTrainer that counts the tokens the loss is computed on, and on a CPU takes the model's own loss.

    TRL's loss runs a fused LM head (no full logits: what a 150k-vocabulary base on a GPU needs) and computes
    entropy and token accuracy every step; on a CPU that costs ~14% of a step (59 against 68 tokens per
    CPU-second on SmolLM2-135M, one thread) for the same loss value, so there the plain Trainer loss is used.
    """

    meter: Meter

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.meter.tokens_trained += int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
        return super().training_step(model, inputs, *args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not self.args.use_cpu:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def resumable_checkpoint(work_dir: Path) -> Path | None:
    """The newest whole checkpoint; one a kill cut short (no ``meter.json``, written last) is removed."""
    if not work_dir.is_dir():
        return None
    whole = []
    for folder in work_dir.glob("checkpoint-*"):
        if (folder / METER_FILE).is_file() and (folder / "trainer_state.json").is_file():
            whole.append(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return max(whole, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def lora_config(training: TrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=training.r,
        lora_alpha=training.alpha,
        lora_dropout=training.dropout,
        target_modules=training.target_modules,
        task_type="CAUSAL_LM",
    )


def sft_config(training: TrainingConfig, *, total_steps: int, work_dir: Path, device: str) -> SFTConfig:
    """Our training settings as SFTConfig, with TRL's GPU-minded defaults overridden where they cost on a CPU.

    TRL turns on bf16 autocast and gradient checkpointing by default; on a CPU bf16 matmuls are several
    times slower than fp32, and checkpointing recomputes every activation, so both follow the config and device.
    """
    import torch

    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return SFTConfig(
        output_dir=str(work_dir),
        max_steps=total_steps,
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation,
        learning_rate=training.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, total_steps // 20),
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        seed=training.seed,
        data_seed=training.seed,
        max_length=training.max_seq_length,
        packing=training.packing,
        assistant_only_loss=False,  # the assistant_masks column already says which tokens to learn
        gradient_checkpointing=training.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=device == "cpu",
        save_strategy="steps",
        save_steps=training.checkpoint_every_steps,
        save_total_limit=2,  # the previous one stays until the next is whole
        logging_strategy="steps",
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def to_dataset(data: Sequence[Encoded]) -> Any:
    """Encoded examples as the tokenized dataset SFTTrainer takes: ids plus a 0/1 mask of the tokens to learn."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"input_ids": e.input_ids, "assistant_masks": [int(lab != IGNORE_INDEX) for lab in e.labels]} for e in data]
    )


def fit(
    model: Any,
    tokenizer: Any,
    data: Sequence[Encoded],
    training: TrainingConfig,
    *,
    total_steps: int,
    work_dir: Path,
    device: str,
    progress: bool = True,
    log: Callable[[str], None],
) -> tuple[Any, TrainStats]:
    """Train a LoRA on ``data``: a fresh one on a plain base, or the given PeftModel's (continue mode).

    Returns the trained PeftModel (adapter 'default') in eval mode and the run's figures.
    """
    from peft import PeftModel

    checkpoint = resumable_checkpoint(work_dir)
    meter = Meter()
    resumed_from = 0
    if checkpoint is not None:
        saved = json.loads((checkpoint / METER_FILE).read_text(encoding="utf-8"))
        meter = Meter(saved["seconds"], saved["tokens_trained"])
        resumed_from = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
        log(f"resuming from checkpoint at step {resumed_from}/{total_steps}")
    budget = TimeBudget(training.time_budget_minutes, log)
    bar = Progress(log, budget_minutes=training.time_budget_minutes, bar=progress)
    trainer = _Trainer(
        model=model,
        args=sft_config(training, total_steps=total_steps, work_dir=work_dir, device=device),
        train_dataset=to_dataset(data),
        processing_class=tokenizer,
        peft_config=None if isinstance(model, PeftModel) else lora_config(training),
        callbacks=[meter, budget, bar],
    )
    trainer.meter = meter
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    trained = trainer.model
    trained.eval()
    state = trainer.state
    seconds = meter.seconds
    return trained, TrainStats(
        steps=state.global_step,
        total_steps=total_steps,
        tokens_trained=meter.tokens_trained,
        tokens_seen=int(state.num_input_tokens_seen),
        seconds=round(seconds, 3),
        tokens_per_second=round(state.num_input_tokens_seen / seconds, 2) if seconds > 0 else 0.0,
        stopped="time budget" if budget.stopped else "completed",
        resumed_from_step=resumed_from,
        final_loss=bar.loss,
    )
