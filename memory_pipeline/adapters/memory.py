"""Will LoRA training fit the device? An estimate from the model's config, made before any weight is loaded.

A 30B base that does not fit should fail in a second with the figures, not after minutes of loading and an
out-of-memory kill. The figures are deliberately simple upper-bound estimates (not a profiler):
weights at the load dtype (or 4/8-bit), the LoRA weights, their gradients and AdamW's two moments in fp32,
activations per the usual transformer count (Korthikanti et al. 2022: ~34·s·b·h bytes per layer at 16-bit
plus the attention scores), or only each layer's input with gradient checkpointing, and the logits in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memory_pipeline.config import TrainingConfig

_GIB = 1024**3
_QUANT_BYTES = {"4bit": 0.55, "8bit": 1.05}  # per weight, with the quantisation constants
_OVERHEAD = 1.15  # allocator fragmentation, CUDA context, buffers


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    lora_params: int
    weights_gib: float
    adapter_gib: float  # LoRA weights + their gradients
    optimizer_gib: float
    activations_gib: float
    total_gib: float
    device: str
    available_gib: float | None  # None: unknown for this device (not checked)

    @property
    def fits(self) -> bool:
        return self.available_gib is None or self.total_gib <= self.available_gib

    def describe(self) -> str:
        room = f"{self.available_gib:.1f} GiB available" if self.available_gib is not None else "capacity unknown"
        return (
            f"memory estimate on {self.device}: weights {self.weights_gib:.2f} GiB ({self.params / 1e6:.0f}M params), "
            f"adapter {self.adapter_gib:.3f} GiB ({self.lora_params / 1e6:.2f}M params), "
            f"optimizer {self.optimizer_gib:.3f} GiB, "
            f"activations {self.activations_gib:.2f} GiB; total ~{self.total_gib:.2f} GiB ({room})"
        )


def estimate_training_memory(
    model_config: Any, training: TrainingConfig, *, device: str, weight_bytes: float, available_gib: float | None
) -> MemoryEstimate:
    """Figures for training ``training``'s LoRA on a model described by a transformers config."""
    params, lora = count_parameters(model_config, training)
    hidden = model_config.hidden_size
    layers = model_config.num_hidden_layers
    heads = model_config.num_attention_heads
    vocab = model_config.vocab_size
    seq, batch = training.max_seq_length, training.batch_size
    act_bytes = 2 if weight_bytes < 4 or training.quantization != "none" else 4
    if training.gradient_checkpointing:
        per_layer = seq * batch * hidden * act_bytes  # only each layer's input is kept
        recompute = seq * batch * hidden * (34 + 5 * heads * seq / hidden) * act_bytes / 2
        activations = per_layer * layers + recompute
    else:
        activations = seq * batch * hidden * (34 + 5 * heads * seq / hidden) * act_bytes / 2 * layers
    activations += 2 * seq * batch * vocab * 4  # logits and their gradient in fp32 for the loss
    weights = params * _QUANT_BYTES.get(training.quantization, weight_bytes)
    adapter = lora * 4 * 2
    optimizer = lora * 4 * 2
    total = (weights + adapter + optimizer + activations) * _OVERHEAD
    return MemoryEstimate(
        params=params,
        lora_params=lora,
        weights_gib=round(weights / _GIB, 3),
        adapter_gib=round(adapter / _GIB, 4),
        optimizer_gib=round(optimizer / _GIB, 4),
        activations_gib=round(activations / _GIB, 3),
        total_gib=round(total / _GIB, 3),
        device=device,
        available_gib=round(available_gib, 2) if available_gib is not None else None,
    )


def count_parameters(model_config: Any, training: TrainingConfig) -> tuple[int, int]:
    """(all parameters, LoRA parameters) from a model built on the meta device: no memory, exact shapes."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    params = sum(p.numel() for p in model.parameters())
    output_layer = model.get_output_embeddings()
    targets = training.target_modules
    lora = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is output_layer:
            continue
        if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets:
            lora += training.r * (module.in_features + module.out_features)
    return params, lora


def available_memory_gib(device: str) -> float | None:
    """Free memory where training runs: the GPU's free memory, or the machine's available RAM on CPU."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free / _GIB
    if device == "cpu":
        import psutil

        return psutil.virtual_memory().available / _GIB
    return None
