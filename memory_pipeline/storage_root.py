"""Whether a storage root holds a memory, and the marker that says so.

Only the commands that build a memory (``ingest``, ``demo``, ``restore``) may create one; every other
command pointed at a folder without a memory fails at once. Otherwise a typo in ``--storage`` (or running
outside the repository) silently creates an empty store and answers "No hits" as if the memory were empty.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import Config
from memory_pipeline.errors import StoreError

MARKER = "memory_pipeline.json"


class NoMemoryError(StoreError):
    """The storage root holds no memory: nothing was ingested there."""

    def __init__(self, root: Path):
        self.root = root
        super().__init__(f"no memory at {root} (run `memory-pipeline ingest` first, or pass --storage)")


def holds_memory(root: Path) -> bool:
    """The marker is there, or (a store from before the marker) documents were stored or adapters trained."""
    layout = Config(storage_root=Path(root))
    stored = (layout.documents_dir, layout.adapters_dir)
    return (Path(root) / MARKER).is_file() or any(folder.is_dir() and any(folder.iterdir()) for folder in stored)


def require_memory(root: Path) -> None:
    if not holds_memory(root):
        raise NoMemoryError(Path(root))


def mark_memory(root: Path) -> None:
    """Record that ``root`` holds a memory (first ingest); kept as is afterwards. No paths inside: it can move."""
    marker = Path(root) / MARKER
    if marker.is_file():
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_text(marker, json.dumps({"memory_pipeline": 1, "created": created}) + "\n")
