"""LoRA adapters: train a version on a dataset version, evaluate and gate it, keep versions, combine them.

Submodules import torch/transformers/peft only inside functions, so importing this package is cheap.
"""

from memory_pipeline.adapters.base_model import LoadedBase, load_base_model, packaged_gguf_path, resolve_base_model
from memory_pipeline.adapters.combine import combine_adapters, export_combined, generate_chat, load_adapters
from memory_pipeline.adapters.evaluate import EvalMetrics, evaluate_adapter, perplexity, sample_generations
from memory_pipeline.adapters.registry import (
    AdapterVersion,
    GateResult,
    current_version,
    gate,
    list_versions,
    promote,
    rollback,
)
from memory_pipeline.adapters.train import encode_example, read_examples, train_adapter

__all__ = [
    "AdapterVersion",
    "EvalMetrics",
    "GateResult",
    "LoadedBase",
    "combine_adapters",
    "current_version",
    "encode_example",
    "evaluate_adapter",
    "export_combined",
    "gate",
    "generate_chat",
    "list_versions",
    "load_adapters",
    "load_base_model",
    "packaged_gguf_path",
    "perplexity",
    "promote",
    "read_examples",
    "resolve_base_model",
    "rollback",
    "sample_generations",
    "train_adapter",
]
