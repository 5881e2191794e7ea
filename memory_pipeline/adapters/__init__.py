"""LoRA adapters: train a version on a dataset version, evaluate and gate it, keep versions, combine them, chat.

Submodules import torch/transformers/peft only inside functions, so importing this package is cheap.
Imports run one way: data, generation, judge <- evaluate <- train; combine <- chat, export.
"""

from memory_pipeline.adapters.base_model import LoadedBase, load_base_model, packaged_gguf_path, resolve_base_model
from memory_pipeline.adapters.chat import ChatSession, generate_chat
from memory_pipeline.adapters.combine import combine_adapters, export_combined, load_adapters
from memory_pipeline.adapters.data import encode_example, read_examples
from memory_pipeline.adapters.evaluate import EvalMetrics, evaluate_adapter, judge_generation, perplexity
from memory_pipeline.adapters.export import export_for_serving
from memory_pipeline.adapters.manifest import AdapterManifest, AdapterMetrics, CurrentPointer
from memory_pipeline.adapters.registry import (
    AdapterVersion,
    GateResult,
    TrainingRun,
    activate,
    current_version,
    gate,
    list_versions,
    plan_training,
    read_pointer,
    rollback,
)
from memory_pipeline.adapters.train import train_adapter

__all__ = [
    "AdapterManifest",
    "AdapterMetrics",
    "AdapterVersion",
    "ChatSession",
    "CurrentPointer",
    "EvalMetrics",
    "GateResult",
    "LoadedBase",
    "TrainingRun",
    "activate",
    "combine_adapters",
    "current_version",
    "encode_example",
    "evaluate_adapter",
    "export_combined",
    "export_for_serving",
    "gate",
    "generate_chat",
    "judge_generation",
    "list_versions",
    "load_adapters",
    "load_base_model",
    "packaged_gguf_path",
    "perplexity",
    "plan_training",
    "read_examples",
    "read_pointer",
    "resolve_base_model",
    "rollback",
    "train_adapter",
]
