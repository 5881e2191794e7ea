"""Backup and restore of a storage root, consistent while the service and the pipeline keep writing.

A backup is a plain folder with the storage root's layout plus ``backup.json``; restoring copies it into
an empty storage root. Each store is copied the way its own commit protocol allows:

- LanceDB tables (documents, chunks with every kept version): data, deletion and index files are immutable
  once written and a version becomes visible only when its manifest appears. So the manifests present when
  the copy of a table starts are noted first, then the other files are copied, then only those manifests:
  the newest copied version refers to files that all existed before it and were copied. A table whose copy
  does not read back (an ``optimize`` removed an old file mid-copy) is copied again.
- SQLite databases (embedding cache, search log, scores, Dagster's run and event storage) through SQLite's
  online backup API, which gives a snapshot even while another process writes.
- Everything else (FAISS files, dataset and adapter versions, inbox files, JSON manifests) is written by
  temp + rename, so a plain copy sees a whole old or a whole new file.

Stores are copied in dependency order (document manifests, documents, chunks, FAISS); FAISS, the one
store derived from another, is then made to mirror the copied chunk table on restore, so a backup taken
between an indexing run's LanceDB commit and its FAISS save still restores consistent.
Chunk tables on object storage (``stores.lancedb_uri: s3://...``) are not copied: back the bucket up.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.errors import StoreError
from memory_pipeline.storage_root import holds_memory, require_memory

MANIFEST = "backup.json"
EXTERNAL = {"lancedb": "external_lancedb", "faiss": "external_faiss"}
"""Backup folder names for chunk stores configured outside the storage root (``stores.*``)."""
SQLITE_HEADER = b"SQLite format 3\x00"
LANCE_COPY_ATTEMPTS = 3


class BackupReport(BaseModel):
    """What a backup or restore copied; shown by the CLI, kept as ``backup.json`` in the backup."""

    source: str
    destination: str
    created: str = ""
    files: int = 0
    bytes: int = 0
    lance_tables: dict[str, int] = Field(default_factory=dict, description="table path -> version copied")
    sqlite_databases: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="stores left out, with the reason")
    faiss_rebuilt: bool = False
    seconds: float = 0.0


def backup(config: Config, destination: Path) -> BackupReport:
    """Copy the storage root (and local chunk stores kept outside it) into the new folder ``destination``."""
    started = time.perf_counter()
    root = config.storage_root
    require_memory(root)
    destination = Path(destination).absolute()
    _check_new_folder(destination)
    if root.resolve() in destination.resolve().parents:
        raise StoreError(f"{destination}: a backup cannot go inside the storage root {root}")
    report = BackupReport(source=str(root), destination=str(destination))
    report.created = datetime.now(UTC).isoformat(timespec="seconds")
    work = destination.with_name(f".{destination.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _copy_tree(root, work, report, prefix="")
        for name, store in _external_stores(config).items():
            if store is None:
                report.skipped.append(f"{name}: {config.lancedb_uri} is object storage; back the bucket up")
            elif store.exists():
                _copy_tree(store, work / EXTERNAL[name], report, prefix=EXTERNAL[name] + "/")
        report.seconds = round(time.perf_counter() - started, 3)
        (work / MANIFEST).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        _move_into_place(work, destination)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def restore(config: Config, source: Path) -> BackupReport:
    """Copy the backup ``source`` into the configured storage root, which must hold no memory yet."""
    from memory_pipeline.instance import ensure_dagster_home

    started = time.perf_counter()
    source = Path(source)
    if not (source / MANIFEST).is_file():
        raise StoreError(f"{source}: not a memory-pipeline backup (no {MANIFEST})")
    root = config.storage_root
    if holds_memory(root):
        raise StoreError(f"{root}: already holds a memory; restore into an empty folder (--storage NEW_FOLDER)")
    _check_new_folder(root)
    report = BackupReport(source=str(source), destination=str(root))
    report.created = json.loads((source / MANIFEST).read_text(encoding="utf-8")).get("created", "")
    work = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _copy_tree(source, work, report, prefix="", skip={MANIFEST, *EXTERNAL.values()})
        _move_into_place(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, store in _external_stores(config).items():
        if store is not None and (source / EXTERNAL[name]).is_dir():
            _check_new_folder(store)
            _copy_tree(source / EXTERNAL[name], store, report, prefix=EXTERNAL[name] + "/")
    ensure_dagster_home(config)
    report.faiss_rebuilt = _mirror_faiss(config)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _external_stores(config: Config) -> dict[str, Path | None]:
    """Chunk stores configured outside the storage root: a local folder, or None for object storage."""
    stores: dict[str, Path | None] = {}
    uri = config.lancedb_uri
    if "://" in uri and not uri.startswith("file://"):
        stores["lancedb"] = None
    else:
        path = Path(uri.removeprefix("file://"))
        if not _inside(path, config.storage_root):
            stores["lancedb"] = path
    if not _inside(config.faiss_dir, config.storage_root):
        stores["faiss"] = config.faiss_dir
    return stores


def _inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def _check_new_folder(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StoreError(f"{path}: exists and is not an empty folder")


def _move_into_place(work: Path, target: Path) -> None:
    """Rename the finished copy to its name: a reader never sees half a backup or half a restore."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        target.rmdir()  # empty, checked before
    os.rename(work, target)


def _copy_tree(src: Path, dst: Path, report: BackupReport, *, prefix: str, skip: set[str] = frozenset()) -> None:
    """Copy a folder: plain files first, then LanceDB tables, then subfolders, in name order; ``documents``
    (the source of truth for chunks) before ``lancedb`` before ``faiss`` at the top."""
    dst.mkdir(parents=True, exist_ok=True)
    order = {"documents": 0, "lancedb": 1, "faiss": 2}

    def rank(entry: os.DirEntry) -> tuple:
        if entry.is_file():
            return (0, 0, entry.name)
        if entry.name.endswith(".lance"):
            return (1, 0, entry.name)
        return (2, order.get(entry.name, 3) if not prefix else 3, entry.name)

    with os.scandir(src) as scan:
        entries = sorted(scan, key=rank)
    for entry in entries:
        if entry.name in skip or ".tmp" in entry.name or entry.name.endswith(("-wal", "-shm", "-journal")):
            continue
        target = dst / entry.name
        relative = prefix + entry.name
        if entry.is_dir() and entry.name.endswith(".lance"):
            report.lance_tables[relative] = _copy_lance_table(Path(entry.path), target, report)
        elif entry.is_dir():
            _copy_tree(Path(entry.path), target, report, prefix=relative + "/")
        elif entry.is_file():
            if _is_sqlite(Path(entry.path)):
                _copy_sqlite(Path(entry.path), target)
                report.sqlite_databases.append(relative)
            else:
                shutil.copy2(entry.path, target)
            report.files += 1
            report.bytes += target.stat().st_size


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _copy_sqlite(src: Path, dst: Path) -> None:
    """A snapshot through SQLite's online backup API: consistent while another process writes."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _copy_lance_table(src: Path, dst: Path, report: BackupReport) -> int:
    """Copy a LanceDB table up to the newest version committed when the copy started; returns that version."""
    for _attempt in range(LANCE_COPY_ATTEMPTS):
        shutil.rmtree(dst, ignore_errors=True)
        versions = src / "_versions"
        # Read first, kept in memory (a few KB each): the manifests (and version hint) as they are now.
        snapshot = {p.name: p.read_bytes() for p in versions.iterdir()} if versions.is_dir() else {}
        files, size = _copy_immutable_files(src, dst, exclude=versions)
        (dst / "_versions").mkdir(parents=True, exist_ok=True)
        for name, data in snapshot.items():
            (dst / "_versions" / name).write_bytes(data)
            files += 1
            size += len(data)
        version = _readable_version(dst)
        if version is not None:
            report.files += files
            report.bytes += size
            return version
    raise StoreError(f"{src}: the LanceDB table kept changing under the backup ({LANCE_COPY_ATTEMPTS} attempts)")


def _copy_immutable_files(src: Path, dst: Path, *, exclude: Path) -> tuple[int, int]:
    """Every file of the table but its manifests; one removed while copying (an old version's) is skipped."""
    files = size = 0
    for folder, subfolders, names in os.walk(src):
        folder_path = Path(folder)
        if folder_path == exclude:
            subfolders[:] = []
            continue
        target = dst / folder_path.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                shutil.copy2(folder_path / name, target / name)
            except FileNotFoundError:
                continue
            files += 1
            size += (target / name).stat().st_size
    return files, size


def _readable_version(table_dir: Path) -> int | None:
    """The copied table's newest version, after reading one column of every row (so every data file is
    there); None if it does not read."""
    import lancedb

    try:
        table = lancedb.connect(str(table_dir.parent)).open_table(table_dir.name.removesuffix(".lance"))
        table.search().select([table.schema.names[0]]).limit(None).to_arrow()
        return int(table.version)
    except (OSError, ValueError, RuntimeError):
        return None


def _mirror_faiss(config: Config) -> bool:
    """Make the restored FAISS index hold exactly the restored chunk table's ids (it may be a step behind)."""
    from memory_pipeline.index.embedding import embedder_model_id
    from memory_pipeline.index.faiss_store import FaissIndex
    from memory_pipeline.index.lancedb_store import ChunkStore
    from memory_pipeline.index.sync import sync_faiss

    model_id = embedder_model_id(config.embedding)
    store = ChunkStore(config.lancedb_uri, model_id)
    if not store.exists():
        return False
    dimension = store.table.schema.field("vector").type.list_size
    return sync_faiss(store, FaissIndex(config.faiss_dir, model_id, dimension, config.index))
