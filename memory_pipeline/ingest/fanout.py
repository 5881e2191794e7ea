"""Parsing fanned out over partitions: the ingest work a cluster can share, with one writer per kind.

Ingest is parse (slow for big exports, pure computation) then commit (documents into the kind's LanceDB
table, then its manifest). Only parsing fans out: each partition looks at every configured source folder,
takes the changed sources whose path falls in its hash range, parses them and stages their documents under
``cache/parsed/<kind>/``, keyed by the source's path and the hash of its bytes. The kind's ingest
(:func:`memory_pipeline.ingest.pipeline.ingest_kind`) then takes a staged source's documents instead of
parsing it, and clears the staging folder when it is done. A source (a file, or a nexus note with its folder)
has one path, so it is in exactly one range and no source is parsed twice; its documents reach the store
through the one commit, which still decides moves, duplicates across exports and deletions. Staging is a
cache, never the truth: a source that failed to parse, or changed after it was staged, is parsed by the
commit as if there were no fan-out, and reported there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from memory_pipeline.batch_gc import rare_young_collections
from memory_pipeline.config import Config
from memory_pipeline.ingest.limits import applied_limits
from memory_pipeline.records import Document, Kind, partition_of, sha256_text
from memory_pipeline.sources import SourceUnit, discover_sources, parse_file, source_key


class ParseReport(BaseModel):
    """Figures of one partition's parsing."""

    partition: int
    partitions: int
    sources: int = 0
    staged: int = 0
    documents: int = 0
    unchanged: int = 0
    left_to_commit: int = 0  # failed here or over the size limit: the commit parses and reports them
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def staging_dir(config: Config, kind: Kind) -> Path:
    return config.parsed_dir / kind.value


def _staged_file(config: Config, kind: Kind, key: str) -> Path:
    return staging_dir(config, kind) / f"{sha256_text(key)[:32]}.jsonl"


def staged_documents(config: Config, kind: Kind, key: str, fingerprint: str) -> Iterator[Document] | None:
    """The documents a partition staged for this source at these bytes, read as they are used; None when
    it staged none."""
    path = _staged_file(config, kind, key)
    try:
        with path.open(encoding="utf-8") as handle:
            if json.loads(handle.readline()) != {"key": key, "fingerprint": fingerprint}:
                return None
    except (OSError, ValueError):
        return None
    return _read_staged(path)


def _read_staged(path: Path) -> Iterator[Document]:
    with path.open(encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            yield Document.model_validate_json(line)


def clear_staged(config: Config, kind: Kind) -> None:
    """Drop what the partitions staged for a kind: the commit has taken it (or it is stale)."""
    shutil.rmtree(staging_dir(config, kind), ignore_errors=True)


def parse_partition(
    config: Config, partition: int, partitions: int, *, log: Callable[[str], None] = print
) -> ParseReport:
    """Parse and stage this partition's changed sources of every kind; writes no store and no manifest."""
    from memory_pipeline.ingest.pipeline import Manifest, archive_limits

    started, cpu_started = time.perf_counter(), time.process_time()
    report = ParseReport(partition=partition, partitions=partitions)
    max_bytes = int(config.ingest.max_file_mb * 1_000_000)
    with applied_limits(config.limits), rare_young_collections():
        for kind in Kind:
            manifest = Manifest(config.documents_dir / f"manifest_{kind.value}.json")
            for unit, key in _units_in_range(config, kind, partition, partitions):
                report.sources += 1
                entry = manifest.entries.get(key)
                try:
                    signature = unit.signature()
                    if entry and entry.fingerprint and (entry.size, entry.mtime_ns) == signature:
                        report.unchanged += 1
                        continue
                    fingerprint = unit.fingerprint() if signature[0] <= max_bytes else ""
                except OSError:
                    fingerprint = ""
                if entry and fingerprint and entry.fingerprint == fingerprint:
                    report.unchanged += 1
                    continue
                staged = _stage(config, kind, unit, key, fingerprint, archive_limits(config)) if fingerprint else None
                if staged is None:
                    report.left_to_commit += 1
                    continue
                report.staged += 1
                report.documents += staged
            log(f"parse range {partition + 1}/{partitions}, {kind.value}s: {report.staged} sources staged so far")
    report.seconds = round(time.perf_counter() - started, 3)
    report.cpu_seconds = round(time.process_time() - cpu_started, 3)
    return report


def _units_in_range(config: Config, kind: Kind, partition: int, partitions: int) -> Iterator[tuple[SourceUnit, str]]:
    """This range's sources of a kind under its configured folders (each once, as ingest_kind finds them)."""
    seen: set[str] = set()
    for root, root_kind in config.source_roots():
        if root_kind is not kind or not root.exists():
            continue
        for unit in discover_sources(root, kind):
            if unit.skipped:
                continue
            key = source_key(unit.path)
            if key not in seen and partition_of(key, partitions) == partition:
                seen.add(key)
                yield unit, key


def _stage(config: Config, kind: Kind, unit: SourceUnit, key: str, fingerprint: str, limits) -> int | None:
    """Write the source's documents to its staging file (whole or not at all); the count, or None on failure.

    Any failure leaves the source to the commit, which parses it again and reports the error its own way.
    """
    path = _staged_file(config, kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "fingerprint": fingerprint}) + "\n")
            for doc in parse_file(unit.path, kind, limits=limits):
                handle.write(doc.model_dump_json() + "\n")
                count += 1
    except Exception:  # noqa: BLE001 - any parser error: the commit meets it again and reports it
        partial.unlink(missing_ok=True)
        return None
    if not count:
        partial.unlink(missing_ok=True)
        return None
    os.replace(partial, path)
    return count
