"""Incremental ingestion: source folders -> normalized documents in the document store.

Change detection is by content, per *source unit* (a file, or a nexus note with its folder of
exchanges): a file whose size and mtime are unchanged is skipped without reading; a touched
file whose bytes are unchanged is not re-parsed, nor is a moved one (its bytes at a new path,
its old path gone): it keeps its documents, and only their stored path changes. A file over
the size limit is refused from its size alone, without reading it. A file that fails to parse
is reported with its reason and keeps the documents it produced before, so nothing stored is
lost because a source went bad; it is not parsed again until its bytes change, but stays
reported on every run. The manifest is written atomically after the documents, so a crash at
any point makes the next run redo at most the unfinished files, idempotently.

A configured source folder that is missing, or empty while documents came from it, is far more
likely an unmounted drive or a mistyped path than a deliberate deletion: it is reported as an
error and its documents stay, until the user confirms with ``prune_missing`` (``ingest
--prune-missing`` or ``ingest.prune_missing_sources``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from memory_pipeline.atomic import atomic_write_text, exclusive_lock
from memory_pipeline.batch_gc import rare_young_collections
from memory_pipeline.config import Config
from memory_pipeline.errors import NothingToStoreError, ParseError
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.fanout import clear_staged, staged_documents
from memory_pipeline.ingest.limits import applied_limits
from memory_pipeline.records import SOURCE_KINDS, Document, Kind
from memory_pipeline.sources import (
    SourceUnit,
    bytes_safe,
    bytes_safe_document,
    check_size,
    discover_sources,
    guess_kind,
    parse_file,
    resolved_path,
    source_key,
    titles_from_name,
)
from memory_pipeline.sources.archive import ArchiveLimits, source_file
from memory_pipeline.storage_root import mark_memory
from memory_pipeline.timeutil import naive_utc

logger = logging.getLogger(__name__)
_FLUSH_DOCS = 500
_FLUSH_FILES = 200


class ManifestEntry(BaseModel):
    """What ingestion remembers about one source unit between runs.

    A failed unit keeps its size and mtime too, so neither ingestion nor the file sensor treats
    it as changed until it is; its fingerprint is empty when its bytes were never read (over the
    size limit, unreadable), which makes the next run look at it again.
    """

    fingerprint: str
    size: int
    mtime_ns: int
    doc_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    format: str | None = None


class IngestError(BaseModel):
    path: str
    kind: str
    reason: str


class IngestReport(BaseModel):
    """Figures of one ingest run of one kind, shown in the UI and the CLI."""

    kind: str
    files_seen: int = 0
    files_parsed: int = 0
    files_unchanged: int = 0
    files_failed: int = 0
    files_moved: int = 0
    files_removed: int = 0
    files_staged: int = 0  # parsed beforehand by a parse partition (scaleout.ingest_partitions)
    bytes_parsed: int = 0
    documents_written: int = 0
    documents_removed: int = 0
    documents_total: int = 0
    repaired_documents: int = 0
    by_format: dict[str, int] = Field(default_factory=dict)
    errors: list[IngestError] = Field(default_factory=list)
    seconds: float = 0.0
    finished_at: datetime | None = None

    @property
    def changed(self) -> bool:
        return bool(self.documents_written or self.documents_removed)


class Manifest:
    """Per-kind JSON map of source path -> ManifestEntry, replaced atomically on save."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, ManifestEntry] = {}
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            self.entries = {k: ManifestEntry.model_validate(v) for k, v in raw.items()}

    def save(self) -> None:
        data = {k: v.model_dump() for k, v in sorted(self.entries.items())}
        atomic_write_text(self.path, json.dumps(data, ensure_ascii=False, indent=1))

    def referenced_elsewhere(self, doc_id: str, path: str) -> bool:
        return any(doc_id in e.doc_ids for p, e in self.entries.items() if p != path)


ProgressCallback = Callable[[int, int, str], None]


def ingest_kind(
    config: Config,
    kind: Kind,
    *,
    paths: Sequence[Path] | None = None,
    store: DocumentStore | None = None,
    on_progress: ProgressCallback | None = None,
    prune_missing: bool | None = None,
) -> IngestReport:
    """Bring the stored documents of one kind up to date with its source folders.

    With ``paths``, only those files/folders are looked at (the file sensor passes what changed);
    a listed path that no longer exists has its documents removed, unless its source folder is
    missing or emptied (see the module docstring; ``prune_missing`` defaults to the config flag).
    The report returned covers this run; the one saved for the UI still lists the earlier failures
    of files it did not look at. One ingest of a kind runs at a time per storage; a second raises
    StoreError at once rather than redo the same work beside it.
    """
    lock = exclusive_lock(config.documents_dir / f"ingest_{kind.value}.lock", f"an ingest of {kind.value}s")
    with lock, rare_young_collections():
        return _ingest_kind(
            config, kind, paths=paths, store=store, on_progress=on_progress, prune_missing=prune_missing
        )


def _ingest_kind(
    config: Config,
    kind: Kind,
    *,
    paths: Sequence[Path] | None,
    store: DocumentStore | None,
    on_progress: ProgressCallback | None,
    prune_missing: bool | None,
) -> IngestReport:
    started = time.perf_counter()
    mark_memory(config.storage_root)
    store = store or DocumentStore(config.documents_dir)
    manifest = Manifest(config.documents_dir / f"manifest_{kind.value}.json")
    report = IngestReport(kind=kind.value)
    if kind is Kind.DIALOGUE:
        _requeue_legacy_profiles(store, manifest)
    roots = [Path(p) for p in paths] if paths is not None else [r for r, k in config.source_roots() if k is kind]
    units = _discover(roots, kind)
    report.files_seen = len(units)
    max_bytes = int(config.ingest.max_file_mb * 1_000_000)

    inbox = resolved_path(config.inbox_dir)
    run = _IngestRun(store, manifest, report, kind, archive_limits(config), inbox=inbox, config=config)
    seen_paths: set[str] = set()
    with applied_limits(config.limits):
        for number, unit in enumerate(units, start=1):
            key = source_key(unit.path, resolve=not unit.skipped)
            seen_paths.add(key)
            if on_progress:
                on_progress(number, len(units), key)
            run.ingest_unit(unit, key, max_bytes)
    run.flush()
    prune = config.ingest.prune_missing_sources if prune_missing is None else prune_missing
    held = [] if prune else _vanished_roots(config, kind, manifest, report, limited_to=None if paths is None else roots)
    report.documents_removed += _remove_vanished(manifest, store, kind, roots, seen_paths, report, held=held)
    manifest.save()
    clear_staged(config, kind)
    if report.changed:
        store.compact(kind)
        if kind is Kind.DIALOGUE:  # the profiles come with the dialogue exports
            store.compact(Kind.PROFILE)
    report.by_format = dict(run.formats)
    report.documents_total = store.count(kind)
    report.seconds = round(time.perf_counter() - started, 3)
    report.finished_at = datetime.now(UTC)
    _save_report(config, report, limited_to=None if paths is None else roots, seen=seen_paths)
    return report


def _requeue_legacy_profiles(store: DocumentStore, manifest: Manifest) -> None:
    """Profiles used to be stored as dialogues of format ``profile``: have the exports that hold them parsed
    again, so each comes back as its own kind, and only then drop the old rows. A profile whose export is
    gone stays as it is: nothing would bring it back."""
    legacy = store.dialogue_ids_of_format("profile")
    requeued: set[str] = set()
    for key, entry in manifest.entries.items():
        found = legacy.intersection(entry.doc_ids)
        if found and Path(key).exists():
            entry.fingerprint, entry.size, entry.mtime_ns = "", -1, -1
            requeued |= found
    if requeued:
        manifest.save()  # first: a crash before the delete leaves the rows, and the next run requeues them again
        store.delete(requeued, Kind.DIALOGUE)


class _IngestRun:
    """State of one ingest run: documents waiting to be written, and the figures so far."""

    def __init__(
        self,
        store: DocumentStore,
        manifest: Manifest,
        report: IngestReport,
        kind: Kind,
        limits: ArchiveLimits,
        *,
        inbox: Path,
        config: Config,
    ):
        self.store, self.manifest, self.report, self.kind, self.limits = store, manifest, report, kind, limits
        self.inbox, self.config = inbox, config
        self.pending: list[Document] = []
        self.formats: Counter[str] = Counter()
        self.dirty_files = 0
        self._versions: dict[str, dict] | None = None
        self._by_content: dict[tuple[int, str], list[str]] | None = None

    def known_versions(self) -> dict[str, dict]:
        """doc_id -> light fields of what is stored, read once per run and kept current as we write.

        Dialogue exports also carry the user's profiles, which a newer export supersedes as it does
        their conversations, so a dialogue run knows the stored profiles too.
        """
        if self._versions is None:
            self._versions = self.store.versions(self.kind)
            if self.kind is Kind.DIALOGUE:
                self._versions |= self.store.versions(Kind.PROFILE)
        return self._versions

    def flush(self) -> None:
        """Write pending documents, then the manifest: a crash in between only means re-parsing."""
        self.report.documents_written += self.store.upsert(self.pending)
        self.pending.clear()
        self.manifest.save()
        self.dirty_files = 0

    def ingest_unit(self, unit: SourceUnit, key: str, max_bytes: int) -> None:
        entry = self.manifest.entries.get(key)
        written: list[str] = []
        signature, fingerprint = (-1, -1), ""
        try:
            if unit.skipped:  # its size and mtime (when it has them) keep the file sensor from firing again
                with contextlib.suppress(OSError):
                    signature = unit.signature()
                raise ParseError(unit.path, unit.skipped)
            signature = unit.signature()
            if entry and entry.fingerprint and (entry.size, entry.mtime_ns) == signature:
                self._unchanged(key, entry)
                return
            check_size(unit.path, signature[0], max_bytes)
            fingerprint = unit.fingerprint()
            if entry and entry.fingerprint == fingerprint:
                entry.size, entry.mtime_ns = signature
                self.dirty_files += 1
                self._unchanged(key, entry)
                return
            if entry is None and self._take_over_moved(unit, key, signature, fingerprint):
                return
            self._parse(unit, written, staged_documents(self.config, self.kind, key, fingerprint))
        except ParseError as exc:
            reason = exc.reason
        except OSError as exc:
            reason, fingerprint = f"{type(exc).__name__}: {exc}", ""  # unreadable: looked at again next run
        except (ValueError, KeyError, TypeError, UnicodeError, RecursionError, ArithmeticError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            self._record_parsed(key, entry, written, signature, fingerprint)
            return
        self._record_error(key, reason, entry, written, signature, fingerprint)

    def _parse(self, unit: SourceUnit, written: list[str], staged: Iterator[Document] | None) -> None:
        """Queue a source's documents for writing; ``written`` gets their ids as they come, for errors midway.
        ``staged``: the documents a parse partition already made of these bytes (then nothing is parsed here).

        A conversation that another export holds in a newer version is not written, but its id is
        still the source's: should the newer export go, the conversation is not lost with it.
        """
        safe_name = bytes_safe(str(unit.path)) == str(unit.path)
        in_inbox = _within(resolved_path(unit.path), {self.inbox})
        try:
            self.report.files_staged += staged is not None
            documents = parse_file(unit.path, self.kind, limits=self.limits) if staged is None else staged
            for batch in _batched(documents, _FLUSH_DOCS):
                batch = batch if safe_name else [bytes_safe_document(doc) for doc in batch]
                written.extend(d.doc_id for d in batch)
                batch = _keep_newest(batch, self.known_versions(), self.manifest)
                self.pending.extend(batch)
                for doc in batch:
                    self.formats[doc.format] += 1
                    self.report.repaired_documents += int(doc.repair.repaired)
                if len(self.pending) >= _FLUSH_DOCS:
                    self.flush()
        except NothingToStoreError:
            if not in_inbox:
                raise
        # a conversation the service recorded without text (content null) is no error: it may go on later
        if not written and not in_inbox:
            raise ParseError(unit.path, "no documents found in file")

    def _unchanged(self, key: str, entry: ManifestEntry) -> None:
        """Bytes as last seen: nothing to parse, and a file that failed stays reported until it changes."""
        if entry.error is None:
            self.report.files_unchanged += 1
            return
        self.report.files_failed += 1
        self.report.errors.append(IngestError(path=key, kind=self.kind.value, reason=entry.error))

    def _take_over_moved(self, unit: SourceUnit, key: str, signature: tuple[int, int], fingerprint: str) -> bool:
        """Give a new path the documents of a source that is gone and had the same bytes: it moved.

        Nothing is parsed; only the stored path changes. A file also renamed whose documents are
        titled after its old name is parsed instead, so it gets the title its new name gives.
        """
        old_key = self._vanished_twin(unit, signature[0], fingerprint)
        if old_key is None:
            return False
        old = self.manifest.entries[old_key]
        docs = [d for d in self.store.get_many(old.doc_ids) if str(source_file(d.source_path).resolve()) == old_key]
        old_titles = titles_from_name(Path(old_key))
        if old_titles != titles_from_name(unit.path) and any(d.title in old_titles for d in docs):
            return False
        moved = [d.model_copy(update={"source_path": _moved_path(d.source_path, unit.path)}) for d in docs]
        known = self.known_versions()
        for doc in moved:
            if doc.doc_id in known:
                known[doc.doc_id] = {**known[doc.doc_id], "source_path": doc.source_path}
        self.pending.extend(moved)
        del self.manifest.entries[old_key]
        self.manifest.entries[key] = ManifestEntry(
            fingerprint=fingerprint, size=signature[0], mtime_ns=signature[1], doc_ids=old.doc_ids
        )
        self.report.files_moved += 1
        self.dirty_files += 1
        if len(self.pending) >= _FLUSH_DOCS or self.dirty_files >= _FLUSH_FILES:
            self.flush()
        return True

    def _vanished_twin(self, unit: SourceUnit, size: int, fingerprint: str) -> str | None:
        """Manifest key of a stored source with these bytes and this extension whose path is gone.

        The extension must match because it picks the parser: the same bytes as ``.md`` and as
        ``.txt`` are different documents.
        """
        if self._by_content is None:
            self._by_content = {}
            for path, entry in self.manifest.entries.items():
                if entry.error is None:
                    self._by_content.setdefault((entry.size, entry.fingerprint), []).append(path)
        suffix = unit.path.suffix.lower()
        candidates = self._by_content.get((size, fingerprint), [])
        return next(
            (
                p
                for p in candidates
                if p in self.manifest.entries and Path(p).suffix.lower() == suffix and not Path(p).exists()
            ),
            None,
        )

    def _record_parsed(
        self, key: str, entry: ManifestEntry | None, written: list[str], signature: tuple[int, int], fingerprint: str
    ) -> None:
        """Remember what a source produced and delete what it no longer produces (unless another source does)."""
        size, mtime_ns = signature
        self.report.files_parsed += 1
        self.report.bytes_parsed += size
        new_ids = set(written)
        stale = [d for d in (entry.doc_ids if entry else []) if d not in new_ids]
        self.manifest.entries[key] = ManifestEntry(
            fingerprint=fingerprint, size=size, mtime_ns=mtime_ns, doc_ids=sorted(new_ids)
        )
        orphaned = [d for d in stale if not self.manifest.referenced_elsewhere(d, key)]
        self.dirty_files += 1
        if orphaned or self.dirty_files >= _FLUSH_FILES:
            self.flush()
            self.report.documents_removed += self.store.delete(orphaned)

    def _record_error(
        self,
        key: str,
        reason: str,
        entry: ManifestEntry | None,
        written: list[str],
        signature: tuple[int, int],
        fingerprint: str,
    ) -> None:
        """Report the file; keep every document it produced before (and any written before the error)."""
        logger.error("%s: %s", key, reason)
        self.report.files_failed += 1
        self.report.errors.append(IngestError(path=key, kind=self.kind.value, reason=reason))
        kept = sorted({*(entry.doc_ids if entry else []), *written})
        size, mtime_ns = signature
        self.manifest.entries[key] = ManifestEntry(
            fingerprint=fingerprint, size=size, mtime_ns=mtime_ns, doc_ids=kept, error=reason
        )


def _batched(items: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """Documents in batches; on an error the documents before it still come out, then the error
    (an archive with one refused member keeps the others' documents)."""
    batch: list[Document] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    except (ParseError, OSError, ValueError, KeyError, TypeError, UnicodeError, RecursionError, ArithmeticError):
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def ingest_all(
    config: Config,
    *,
    paths: Sequence[Path] | None = None,
    on_progress: ProgressCallback | None = None,
    prune_missing: bool | None = None,
) -> dict[Kind, IngestReport]:
    """Ingest every kind with source folders (profiles come with the dialogues); with ``paths``, each
    source goes to its kind as :func:`assign_kinds` says."""
    store = DocumentStore(config.documents_dir)
    options = {"store": store, "on_progress": on_progress, "prune_missing": prune_missing}
    if paths is None:
        return {kind: ingest_kind(config, kind, **options) for kind in SOURCE_KINDS}
    by_kind = assign_kinds(config, paths)
    return {kind: ingest_kind(config, kind, paths=ps, **options) for kind, ps in by_kind.items()}


def assign_kinds(config: Config, paths: Iterable[Path]) -> dict[Kind, list[Path]]:
    """Group paths by the kind of the configured source root that contains them.

    A path under no configured root is walked, and each source in it goes to the kind its format
    says, so `memory-pipeline ingest ~/exports` takes a folder of mixed exports without editing
    the config. Such a path that does not exist holds nothing and is left out; the caller says so.
    """
    roots = [(resolved_path(r), k) for r, k in config.source_roots()]

    def configured_kind(path: Path) -> Kind | None:
        resolved = resolved_path(path)
        return next((k for r, k in roots if resolved == r or r in resolved.parents), None)

    grouped: dict[Kind, list[Path]] = {}
    for path in map(Path, paths):
        if (kind := configured_kind(path)) is not None:
            grouped.setdefault(kind, []).append(path)
            continue
        for unit in discover_sources(path):
            grouped.setdefault(configured_kind(unit.path) or guess_kind(unit), []).append(unit.path)
    return grouped


def _discover(roots: Sequence[Path], kind: Kind) -> list[SourceUnit]:
    units: dict[str, SourceUnit] = {}
    for root in roots:
        if root.exists():
            for unit in discover_sources(root, kind):
                units.setdefault(source_key(unit.path, resolve=not unit.skipped), unit)
    return list(units.values())


def archive_limits(config: Config) -> ArchiveLimits:
    """The archive safety limits the config sets (a member is held to the file size limit too)."""
    settings = config.ingest
    return ArchiveLimits(
        max_members=settings.archive_max_members,
        max_total_bytes=int(settings.archive_max_total_mb * 1_000_000),
        max_member_bytes=int(settings.max_file_mb * 1_000_000),
        max_ratio=settings.archive_max_ratio,
    )


def _moved_path(source_path: str, new_file: Path) -> str:
    """A document's source path after its file moved; an archive member keeps its ``!member`` part."""
    archive = source_file(source_path)
    if archive == Path(source_path):
        return str(new_file)
    return f"{new_file}!{source_path[len(str(archive)) + 1 :]}"


def _keep_newest(docs: list[Document], known: dict[str, dict], manifest: Manifest) -> list[Document]:
    """Two exports can hold the same conversation (a monthly re-export beside the old one): keep
    the newer version, the fuller on a tie, whichever file comes last."""
    kept = []
    for doc in docs:
        old = known.get(doc.doc_id)
        units = doc.n_units()
        updated = naive_utc(doc.updated_at) or datetime.min
        elsewhere = old and old["source_path"] != doc.source_path
        if elsewhere and str(source_file(old["source_path"]).resolve()) in manifest.entries:
            if (old["updated_at"] or datetime.min, old["n_units"] or 0) > (updated, units):
                continue
        known[doc.doc_id] = {
            "doc_id": doc.doc_id,
            "source_path": doc.source_path,
            "n_units": units,
            "updated_at": updated,
        }
        kept.append(doc)
    return kept


def _within(path: Path, roots: set[Path]) -> bool:
    """Whether a path is one of the (resolved) roots or under one.

    A set lookup per parent rather than a scan of the roots: a run over a walked folder lists
    every file in it as a root.
    """
    return path in roots or not roots.isdisjoint(path.parents)


def _vanished_roots(
    config: Config, kind: Kind, manifest: Manifest, report: IngestReport, *, limited_to: Sequence[Path] | None
) -> list[Path]:
    """Configured roots of this kind that are missing, or hold no source while documents came from them.

    Each is an error in the report; the caller keeps their documents. A missing service inbox
    that never held anything is normal (the service has not run yet). A run limited to some
    paths looks only at the roots holding them.
    """
    held = []
    limits = None if limited_to is None else [resolved_path(p) for p in limited_to]
    for root, root_kind in config.source_roots():
        resolved = resolved_path(root)
        if root_kind is not kind or (
            limits is not None and not any(p == resolved or resolved in p.parents for p in limits)
        ):
            continue
        stored = any(_within(Path(p), {resolved}) for p in manifest.entries)
        if not root.exists() and (stored or root != config.inbox_dir):
            reason = "source folder is missing (unmounted drive or mistyped path?)"
        elif stored and root.is_dir() and next(discover_sources(root, kind), None) is None:
            reason = "source folder is empty but documents came from it (unmounted drive?)"
        else:
            continue
        if stored:
            held.append(resolved)
            reason += "; its documents are kept until you confirm with `ingest --prune-missing`"
        logger.error("%s: %s", root, reason)
        report.files_failed += 1
        report.errors.append(IngestError(path=str(root), kind=kind.value, reason=reason))
    return held


def _remove_vanished(
    manifest: Manifest,
    store: DocumentStore,
    kind: Kind,
    roots: Sequence[Path],
    seen: set[str],
    report: IngestReport,
    *,
    held: Sequence[Path],
) -> int:
    """Forget sources gone from under the roots looked at, except under a vanished root (``held``)."""
    resolved_roots = {r.resolve() for r in roots}
    held_roots = set(held)
    vanished = [
        p
        for p in manifest.entries
        if p not in seen
        and _within(Path(p), resolved_roots)
        and not _within(Path(p), held_roots)
        and not Path(p).exists()
    ]
    doomed: set[str] = set()
    for path in vanished:
        doomed.update(manifest.entries.pop(path).doc_ids)
        report.files_removed += 1
    doomed = {d for d in doomed if not any(d in e.doc_ids for e in manifest.entries.values())}
    return store.delete(doomed)


def _save_report(config: Config, report: IngestReport, *, limited_to: Sequence[Path] | None, seen: set[str]) -> None:
    """Write the kind's report for the UI.

    A run limited to some paths keeps the earlier failures of files it did not look at, while they
    exist, so the ingest report lists every file that needs fixing, not only those of the last run.
    """
    path = config.reports_dir / f"ingest_{report.kind}.json"
    if limited_to is not None and path.is_file():
        roots = {r.resolve() for r in limited_to}
        earlier = IngestReport.model_validate_json(path.read_text(encoding="utf-8"))
        kept = [
            e
            for e in earlier.errors
            if e.path not in seen and not _within(Path(e.path), roots) and Path(e.path).exists()
        ]
        report = report.model_copy(
            update={"errors": [*kept, *report.errors], "files_failed": report.files_failed + len(kept)}
        )
    atomic_write_text(path, report.model_dump_json(indent=2))


def load_reports(config: Config) -> dict[str, IngestReport]:
    """The latest ingest report of each kind: the last run's figures and every failure still standing."""
    reports = {}
    for kind in Kind:
        path = config.reports_dir / f"ingest_{kind.value}.json"
        if path.is_file():
            reports[kind.value] = IngestReport.model_validate_json(path.read_text(encoding="utf-8"))
    return reports
