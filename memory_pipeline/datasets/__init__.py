"""Versioned LoRA training sets: promoted items become chat or text lines, curated, split and carded.

Only light modules are imported here; ``datasketch`` and ``tiktoken`` load when a build needs them.
"""

from memory_pipeline.datasets.build import DatasetBuildResult, build_dataset, build_dataset_for_adapter
from memory_pipeline.datasets.exports import export_configs
from memory_pipeline.datasets.formats import chat_example, normalize_messages, text_example
from memory_pipeline.datasets.heldout import general_heldout
from memory_pipeline.datasets.versions import (
    DatasetVersion,
    latest_version_dir,
    latest_version_name,
    list_versions,
    new_examples_since_latest,
)

__all__ = [
    "DatasetBuildResult",
    "DatasetVersion",
    "build_dataset",
    "build_dataset_for_adapter",
    "chat_example",
    "export_configs",
    "general_heldout",
    "latest_version_dir",
    "latest_version_name",
    "list_versions",
    "new_examples_since_latest",
    "normalize_messages",
    "text_example",
]
