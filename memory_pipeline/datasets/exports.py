"""Configs for other trainers, written into every version beside its data: LLaMA-Factory and axolotl.

Each data file holds one line format (see ``versions``), so each config entry names one file and
its type: chat files as LLaMA-Factory sharegpt / axolotl ``chat_template``, text files as a
LLaMA-Factory ``prompt: text`` column / axolotl ``completion``. TRL needs no config: it reads each
file as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from memory_pipeline.datasets.versions import EXPORT_FILES

SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}

# (split, format) -> file name inside the version folder, for the files that have lines.
DataFiles = Mapping[tuple[str, str], str]


def llamafactory_dataset_info(files: DataFiles, *, prefix: str) -> dict[str, Any]:
    """``dataset_info.json`` entries (file names relative to it: point ``dataset_dir`` at the version folder)."""
    info: dict[str, Any] = {}
    for (split, fmt), name in files.items():
        if fmt == "chat":
            info[f"{prefix}_{split}"] = {
                "file_name": name,
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": dict(SHAREGPT_TAGS),
            }
        else:
            info[f"{prefix}_{split}_text"] = {"file_name": name, "columns": {"prompt": "text"}}
    return info


def _axolotl_entry(path: Path, fmt: str) -> dict[str, Any]:
    if fmt == "chat":
        return {
            "path": str(path),
            "ds_type": "json",
            "type": "chat_template",
            "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"},
            "roles_to_train": ["assistant"],
        }
    return {"path": str(path), "ds_type": "json", "type": "completion", "field": "text"}


def axolotl_datasets(files: DataFiles) -> dict[str, Any]:
    """The ``datasets:`` / ``test_datasets:`` part of an axolotl config, paths relative to the version folder.

    Relative, not absolute: the storage folder can be moved or restored elsewhere and its exports still hold.
    axolotl resolves them against its working directory, so it is run from the version folder.
    """
    section: dict[str, Any] = {"datasets": [], "test_datasets": []}
    for (split, fmt), name in files.items():
        entry = _axolotl_entry(Path(name), fmt)
        if split == "train":
            section["datasets"].append(entry)
        else:
            section["test_datasets"].append({**entry, "split": "train"})
    return {k: v for k, v in section.items() if v}


def export_configs(files: DataFiles, *, adapter: str, version: str) -> dict[str, bytes]:
    """The export files by name, for the version being written."""
    info = llamafactory_dataset_info(files, prefix=f"memory_{adapter}")
    header = (
        f"# axolotl datasets for {adapter} {version}; merge into your training config.\n"
        "# Paths are relative to this folder: run axolotl from here (or prefix them with this folder's path).\n"
    )
    axolotl = header + yaml.safe_dump(axolotl_datasets(files), sort_keys=False, allow_unicode=True)
    return {
        EXPORT_FILES["llamafactory"]: (json.dumps(info, indent=2) + "\n").encode("utf-8"),
        EXPORT_FILES["axolotl"]: axolotl.encode("utf-8"),
    }
