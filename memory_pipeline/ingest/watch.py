"""What changed in the source folders since the last ingest, for the file sensor.

The ingest manifests already record each source's size and mtime, so the sensor needs no
snapshot of its own: a source whose signature differs from its manifest entry is new or
changed, a manifest entry whose file is gone is deleted. After the run ingests them the
manifests match again, so the same change is never picked up twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.ingest.pipeline import Manifest
from memory_pipeline.records import Kind
from memory_pipeline.sources import bytes_safe, discover_sources, resolved_path, source_key


class SourceChanges(BaseModel):
    """New/changed and deleted source paths per kind, with a digest that identifies this change set."""

    changed: dict[str, list[str]] = Field(default_factory=dict)
    deleted: dict[str, list[str]] = Field(default_factory=dict)
    digest: str = ""

    @property
    def empty(self) -> bool:
        return not any(self.changed.values()) and not any(self.deleted.values())

    def kinds(self) -> list[Kind]:
        return [k for k in Kind if self.changed.get(k.value) or self.deleted.get(k.value)]

    def paths(self, kind: Kind) -> list[str]:
        return sorted({*self.changed.get(kind.value, []), *self.deleted.get(kind.value, [])})

    def count(self) -> int:
        return sum(len(v) for v in self.changed.values()) + sum(len(v) for v in self.deleted.values())


def _nameable(path: Path) -> str:
    """The path, or for a name that is not UTF-8 (it cannot travel in a run's config) its nearest folder that is."""
    path = resolved_path(path)
    while bytes_safe(str(path)) != str(path):
        path = path.parent
    return str(path)


def pending_changes(config: Config) -> SourceChanges:
    """Compare the source folders (stat only, no reading) with the ingest manifests."""
    changes = SourceChanges()
    digest = hashlib.sha256()
    for kind in Kind:
        manifest = Manifest(config.documents_dir / f"manifest_{kind.value}.json")
        roots = [Path(r) for r, k in config.source_roots() if k is kind]
        seen: set[str] = set()
        changed: list[str] = []
        vanished: list[Path] = []  # missing or emptied: ingest keeps their documents, so no deletion to run for
        for root in roots:
            if not root.exists():
                vanished.append(resolved_path(root))
                continue
            empty = True
            for unit in discover_sources(root, kind):
                empty = False
                key = source_key(unit.path, resolve=not unit.skipped)
                seen.add(key)
                try:
                    size, mtime_ns = unit.signature()
                except OSError:
                    continue
                entry = manifest.entries.get(key)
                if entry is None or (entry.size, entry.mtime_ns) != (size, mtime_ns):
                    changed.append(_nameable(unit.path))
                    digest.update(f"{kind.value}|{key}|{size}|{mtime_ns}\n".encode())
            if empty:
                vanished.append(resolved_path(root))
        if config.ingest.prune_missing_sources:
            vanished.clear()
        resolved_roots = [resolved_path(r) for r in roots]
        deleted = [
            p
            for p in manifest.entries
            if p not in seen
            and any(Path(p) == r or r in Path(p).parents for r in resolved_roots)
            and not any(Path(p) == r or r in Path(p).parents for r in vanished)
            and not Path(p).exists()
        ]
        for path in deleted:
            digest.update(f"{kind.value}|{path}|deleted\n".encode())
        if changed:
            changes.changed[kind.value] = sorted(changed)
        if deleted:
            changes.deleted[kind.value] = sorted(deleted)
    changes.digest = digest.hexdigest()[:24]
    return changes
