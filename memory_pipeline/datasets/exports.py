"""Views of a dataset version for other trainers: LLaMA-Factory and axolotl.

A version's ``train.jsonl`` may mix chat and text lines (our trainer and TRL's SFTTrainer read it
as is). LLaMA-Factory and axolotl want one format per file, so an export writes the lines split
by format into a folder of its own, with the config that names them; the version stays untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.datasets.versions import read_card
from memory_pipeline.errors import ParseError

SPLITS = ("train", "eval")
SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def split_by_format(version_dir: Path, out_dir: Path) -> dict[tuple[str, str], Path]:
    """Write ``<split>_chat.jsonl`` and ``<split>_text.jsonl`` (only those with lines) into ``out_dir``."""
    written: dict[tuple[str, str], Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        source = version_dir / f"{split}.jsonl"
        lines: dict[str, list[str]] = {"chat": [], "text": []}
        with open(source, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ParseError(source, f"line {number}: not valid JSON: {exc}") from None
                lines["chat" if "messages" in record else "text"].append(line if line.endswith("\n") else line + "\n")
        for fmt, rows in lines.items():
            if rows:
                path = out_dir / f"{split}_{fmt}.jsonl"
                atomic_write_text(path, "".join(rows))
                written[(split, fmt)] = path
    return written


def llamafactory_dataset_info(files: dict[tuple[str, str], Path], *, prefix: str) -> dict[str, Any]:
    """``dataset_info.json`` entries: chat files as sharegpt (role/content tags), text files as ``prompt: text``."""
    info: dict[str, Any] = {}
    for (split, fmt), path in sorted(files.items()):
        if fmt == "chat":
            info[f"{prefix}_{split}"] = {
                "file_name": path.name,
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": dict(SHAREGPT_TAGS),
            }
        else:
            info[f"{prefix}_{split}_text"] = {"file_name": path.name, "columns": {"prompt": "text"}}
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


def axolotl_datasets(files: dict[tuple[str, str], Path]) -> dict[str, Any]:
    """The ``datasets:`` / ``test_datasets:`` part of an axolotl config (absolute paths)."""
    section: dict[str, Any] = {"datasets": [], "test_datasets": []}
    for (split, fmt), path in sorted(files.items()):
        entry = _axolotl_entry(path.resolve(), fmt)
        if split == "train":
            section["datasets"].append(entry)
        else:
            section["test_datasets"].append({**entry, "split": "train"})
    return {k: v for k, v in section.items() if v}


def export_version(version_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Write the split files, LLaMA-Factory's ``dataset_info.json`` and ``axolotl.yaml`` into ``out_dir``."""
    version_dir, out_dir = Path(version_dir), Path(out_dir)
    card = read_card(version_dir)
    files = split_by_format(version_dir, out_dir)
    prefix = f"memory_{card['adapter']}"
    info_path = out_dir / "dataset_info.json"
    atomic_write_text(info_path, json.dumps(llamafactory_dataset_info(files, prefix=prefix), indent=2) + "\n")
    axolotl_path = out_dir / "axolotl.yaml"
    header = f"# axolotl datasets for {card['adapter']} {card['version']}; merge into your training config\n"
    atomic_write_text(axolotl_path, header + yaml.safe_dump(axolotl_datasets(files), sort_keys=False, allow_unicode=True))
    return {"dataset_info": info_path, "axolotl": axolotl_path, **{f"{s}_{f}": p for (s, f), p in files.items()}}
