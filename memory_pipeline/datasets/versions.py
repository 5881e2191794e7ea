"""Dataset versions on disk: ``storage/datasets/<adapter>/<version>/``, never overwritten.

A version is written whole in a staging folder and renamed into place, so a reader (the trainer,
a person) sees a complete version or none. Names sort in build order (``v0001-20250101T030000``).
``latest.json`` per adapter names the newest version and is replaced atomically after the rename.
The staging folder sits outside the adapter folders, so a crashed build never looks like a version.

Each data file holds one line format, because TRL's SFTTrainer picks chat or plain-text mode from a
file's first row: chat lines in ``train.jsonl`` / ``eval.jsonl`` (always written, possibly empty),
completion lines in ``train_text.jsonl`` / ``eval_text.jsonl`` (only when there are any). Versions
built before that split have only the first two, holding both formats; our trainer still reads them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memory_pipeline.atomic import atomic_write_text, fsync_dir
from memory_pipeline.config import Config
from memory_pipeline.datasets.card import DatasetCard, read_card
from memory_pipeline.errors import ParseError, StoreError

VERSION_PATTERN = re.compile(r"^v(\d{4})-(\d{8}T\d{6})$")
LATEST_FILE = "latest.json"
ITEMS_FILE = "items.jsonl"
STAGING_DIR = ".staging"
DATA_FILES = {
    ("train", "chat"): "train.jsonl",
    ("eval", "chat"): "eval.jsonl",
    ("train", "text"): "train_text.jsonl",
    ("eval", "text"): "eval_text.jsonl",
}
EXPORT_FILES = {"llamafactory": "dataset_info.json", "axolotl": "axolotl.yaml"}


@dataclass(frozen=True)
class DatasetVersion:
    adapter: str
    version: str
    path: Path

    @property
    def card(self) -> DatasetCard:
        return read_card(self.path)

    @property
    def data_files(self) -> list[Path]:
        return data_files(self.path)

    @property
    def exports(self) -> dict[str, Path]:
        """The other trainers' configs written beside the data (none in versions built before they were)."""
        return {name: self.path / file for name, file in EXPORT_FILES.items() if (self.path / file).is_file()}


def adapter_dir(config: Config, adapter: str) -> Path:
    return config.datasets_dir / adapter


def data_files(version_dir: Path, split: str | None = None) -> list[Path]:
    """The version's train and eval files that exist (of one split if given), chat before text."""
    names = [name for (s, _), name in DATA_FILES.items() if split in (None, s)]
    return [Path(version_dir) / name for name in names if (Path(version_dir) / name).is_file()]


def _version_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name))


def list_versions(config: Config, adapter: str | None = None) -> list[DatasetVersion]:
    """Versions of one adapter (or of all adapters, by adapter then version), oldest first."""
    root = config.datasets_dir
    if adapter is not None:
        adapters = [adapter]
    else:
        adapters = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        )
    return [
        DatasetVersion(a, name, adapter_dir(config, a) / name)
        for a in adapters
        for name in _version_names(adapter_dir(config, a))
    ]


def latest_version_name(config: Config, adapter: str) -> str | None:
    """The version ``latest.json`` names; None before the first build."""
    pointer = adapter_dir(config, adapter) / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["version"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ParseError(pointer, f'expected {{"version": ...}}: {exc}') from None
    if not (adapter_dir(config, adapter) / name).is_dir():
        raise StoreError(f"{pointer} names version {name!r}, which does not exist")
    return name


def latest_version_dir(config: Config, adapter: str) -> Path | None:
    name = latest_version_name(config, adapter)
    return adapter_dir(config, adapter) / name if name else None


def next_version_name(config: Config, adapter: str, now: datetime | None = None) -> str:
    """One past the highest existing number, stamped with the UTC build time."""
    names = _version_names(adapter_dir(config, adapter))
    number = int(VERSION_PATTERN.match(names[-1]).group(1)) + 1 if names else 1
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    return f"v{number:04d}-{stamp}"


def commit_version(config: Config, adapter: str, version: str, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` as a new version folder (staged, fsynced, renamed) and point ``latest.json`` at it."""
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"version name {version!r} does not match {VERSION_PATTERN.pattern}")
    target = adapter_dir(config, adapter) / version
    if target.exists():
        raise StoreError(f"dataset version {target} already exists; versions are never overwritten")
    staging_root = config.datasets_dir / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{adapter}-{version}-", dir=staging_root))
    try:
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        fsync_dir(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise StoreError(f"cannot create dataset version {target}: {exc}") from None
        fsync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    set_latest(config, adapter, version)
    return target


def set_latest(config: Config, adapter: str, version: str) -> None:
    folder = adapter_dir(config, adapter)
    if not (folder / version).is_dir():
        raise StoreError(f"cannot point {folder / LATEST_FILE} at {version!r}: no such version")
    payload = {"version": version, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write_text(folder / LATEST_FILE, json.dumps(payload) + "\n")


def version_item_ids(version_dir: Path) -> set[str]:
    """Ids of every promoted item a version considered (kept or curated away)."""
    path = Path(version_dir) / ITEMS_FILE
    if not path.is_file():
        raise ParseError(path, "the version's item list is missing")
    ids: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                ids.add(json.loads(line)["item_id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ParseError(path, f"line {number}: {exc}") from None
    return ids


def promoted_item_ids(assignments: Iterable[Any], adapter: str) -> set[str]:
    """Ids of the items promoted to ``adapter`` (its name in an assignment's ``adapters``)."""
    return {a.item_id for a in assignments if adapter in (a.adapters or ())}


def new_examples_since_latest(config: Config, adapter: str, *, assignments: Iterable[Any] | None = None) -> int:
    """Items promoted to ``adapter`` that its latest version did not consider (all of them before the first).

    Items the latest version curated away (duplicates, too long) count as used, so they do not
    keep the new-examples sensor firing. ``assignments`` default to the promote stage's current ones.
    """
    if assignments is None:
        from memory_pipeline.scoring.assignments import load_assignments

        assignments = load_assignments(config, adapter=adapter)
    promoted = promoted_item_ids(assignments, adapter)
    latest = latest_version_dir(config, adapter)
    if latest is None:
        return len(promoted)
    return len(promoted - version_item_ids(latest))
