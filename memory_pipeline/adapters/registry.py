"""Adapter versions on disk, the gate that decides which becomes current, and the per-adapter ``current`` pointer.

Layout: ``<adapters_dir>/<name>/<version>/`` (adapter weights, adapter_config.json, metrics.json,
config.json, version.json, samples.json, card.md) and ``<adapters_dir>/<name>/current.json``. A version folder
is filled under a temporary name and renamed into place, so a reader never sees half of one; the
pointer is a small JSON file replaced atomically (portable, unlike symlinks).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from memory_pipeline.adapters.judge import generation_checks
from memory_pipeline.adapters.manifest import (
    CURRENT_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    AdapterManifest,
    AdapterMetrics,
    CurrentPointer,
    PointerMove,
    TrainingManifest,
    read_record,
    write_record,
)
from memory_pipeline.config import Config, GateConfig
from memory_pipeline.datasets.versions import latest_version_dir
from memory_pipeline.errors import StoreError

VERSION_PATTERN = re.compile(r"^v(\d{4,})-(\d{8}T\d{4})$")
_HISTORY_KEEP = 50


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]  # one line per check, each starting with "pass:" or "fail:"


class AdapterVersion(BaseModel):
    """One version on disk: its folder, its manifest and its figures (``--json`` prints this model)."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    path: Path
    created: str
    manifest: AdapterManifest
    metrics: AdapterMetrics

    @computed_field
    @property
    def passed(self) -> bool:
        return self.metrics.gate_passed


def gate(metrics: Any, margin: float, limits: GateConfig | None = None) -> GateResult:
    """Make current only an adapter that learnt the eval set, did not forget general text and answers like a model.

    Eval perplexity must fall below the base's and the previous current adapter's (when there is one);
    held-out general perplexity may rise at most ``margin`` (relative) over the base's and the previous's.
    With ``limits``, the adapter's answers to the gate prompts must not loop, echo the prompt, switch language
    or be near-empty, and where the user's own answers are known the adapter's must be closer to them than the
    base's. A missing figure fails its check: an adapter that cannot be judged does not become current.
    """
    if isinstance(metrics, AdapterMetrics):
        m = metrics
    else:
        m = AdapterMetrics.model_validate(asdict(metrics) if is_dataclass(metrics) else dict(metrics))
    reasons: list[str] = []

    def check(ok: bool, text: str) -> None:
        reasons.append(("pass: " if ok else "fail: ") + text)

    adapter_eval, base_eval = m.eval_ppl_adapter, m.eval_ppl_base
    if adapter_eval is None or base_eval is None:
        check(False, "no eval perplexity (empty eval set?): the adapter cannot be judged")
    else:
        check(adapter_eval < base_eval, f"eval perplexity {adapter_eval:.4g} vs base {base_eval:.4g} (must fall)")
        if m.eval_ppl_previous is not None:
            prev = m.eval_ppl_previous
            check(adapter_eval < prev, f"eval perplexity {adapter_eval:.4g} vs previous adapter {prev:.4g} (must fall)")
    held = m.heldout_ppl_adapter
    if held is None or m.heldout_ppl_base is None:
        check(False, "no held-out perplexity (empty heldout set?): forgetting cannot be checked")
    else:
        for label, reference in (("base", m.heldout_ppl_base), ("previous adapter", m.heldout_ppl_previous)):
            if reference is None:
                continue
            limit = reference * (1 + margin)
            check(
                held <= limit,
                f"held-out perplexity {held:.4g} vs {label} {reference:.4g} (at most {limit:.4g} allowed)",
            )
    if limits is not None:
        answers = m.generation.adapter if m.generation is not None else None
        if not answers:
            check(False, "no answers to the gate prompts: the adapter's output cannot be judged")
        else:
            for ok, text in generation_checks(answers, limits):
                check(ok, text)
        adapter_sim, base_sim = m.similarity_adapter, m.similarity_base
        if adapter_sim is not None and base_sim is not None:
            check(
                adapter_sim > base_sim,
                f"similarity to the user's own answers {adapter_sim:.3f} vs base {base_sim:.3f} "
                f"over {m.similarity_examples} eval prompts (must rise)",
            )
    return GateResult(passed=all(r.startswith("pass:") for r in reasons), reasons=reasons)


class TrainingRun(BaseModel):
    """What ``adapters train`` and the ``lora_adapters`` asset do for one adapter: train on ``dataset_dir``, or skip
    and say why (``skipped``); ``version`` is the version trained, once it is."""

    adapter: str
    dataset_dir: Path | None = None  # the latest training set version; None before the first
    skipped: str = ""
    version: AdapterVersion | None = None


def plan_training(config: Config, name: str, *, force: bool = False, root: Path | None = None) -> TrainingRun:
    """Train on the adapter's latest training set version unless a version of the adapter already learnt it.

    The rule lives here so the Dagster asset and the CLI behave the same: a re-run with no new training set
    version trains nothing. ``force`` trains on it again (after changing the training settings, say).
    """
    dataset_dir = latest_version_dir(config, name)
    if dataset_dir is None:
        return TrainingRun(adapter=name, skipped=f"no training set version for {name} yet: nothing to train")
    trained_on = {v.manifest.dataset.version for v in list_versions(config, name, root=root) if v.manifest.dataset}
    if dataset_dir.name in trained_on and not force:
        reason = f"dataset version {dataset_dir.name} already has an adapter; no new dataset version since"
        return TrainingRun(adapter=name, dataset_dir=dataset_dir, skipped=reason)
    return TrainingRun(adapter=name, dataset_dir=dataset_dir)


def next_version_name(existing: list[str], now: datetime) -> str:
    """``v<NNNN>-<UTC minute>``: the number keeps names sortable, the time says when at a glance."""
    numbers = [int(match.group(1)) for name in existing if (match := VERSION_PATTERN.match(name))]
    return f"v{max(numbers, default=0) + 1:04d}-{now.astimezone(UTC):%Y%m%dT%H%M}"


def version_number(version: str) -> int:
    match = VERSION_PATTERN.match(version)
    if match is None:
        raise StoreError(f"{version!r} is not a version name (v<NNNN>-<YYYYMMDDTHHMM>)")
    return int(match.group(1))


def _root(config: Config, root: Path | None) -> Path:
    return Path(root) if root is not None else config.adapters_dir


def load_version(path: Path) -> AdapterVersion:
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        raise StoreError(f"{path}: not an adapter version (no {MANIFEST_FILE})")
    manifest = read_record(path / MANIFEST_FILE, AdapterManifest)
    metrics = read_record(path / METRICS_FILE, AdapterMetrics) if (path / METRICS_FILE).is_file() else AdapterMetrics()
    return AdapterVersion(
        name=manifest.name,
        version=manifest.version,
        path=path,
        created=manifest.created,
        manifest=manifest,
        metrics=metrics,
    )


def list_versions(config: Config, name: str, *, root: Path | None = None) -> list[AdapterVersion]:
    """All complete versions of an adapter, oldest first."""
    folder = _root(config, root) / name
    if not folder.is_dir():
        return []
    versions = [p for p in folder.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name)]
    return [load_version(p) for p in sorted(versions, key=lambda p: version_number(p.name))]


def read_pointer(config: Config, name: str, *, root: Path | None = None) -> CurrentPointer | None:
    """The adapter's ``current.json`` (version, who moved it, why, and its history), or None before any."""
    return _read_pointer(_root(config, root) / name)


def _read_pointer(folder: Path) -> CurrentPointer | None:
    path = folder / CURRENT_FILE
    return read_record(path, CurrentPointer) if path.is_file() else None


def current_version(config: Config, name: str, *, root: Path | None = None) -> AdapterVersion | None:
    """The version the ``current`` pointer names, or None before any version passed."""
    folder = _root(config, root) / name
    pointer = _read_pointer(folder)
    if pointer is None:
        return None
    path = folder / pointer.version
    if not path.is_dir():
        raise StoreError(f"{folder / CURRENT_FILE}: points at {pointer.version}, which does not exist")
    return load_version(path)


def set_current(root: Path, name: str, version: str, *, by: str, reason: str) -> None:
    """Move the pointer (atomic replace), keeping a short history of where it pointed before and why."""
    folder = Path(root) / name
    if not (folder / version / MANIFEST_FILE).is_file():
        raise StoreError(f"{folder}: no version {version!r}")
    old = _read_pointer(folder)
    history = [PointerMove.model_validate(old.model_dump(exclude={"history"})), *old.history] if old else []
    moved_at = datetime.now(UTC).isoformat(timespec="seconds")
    pointer = CurrentPointer(version=version, moved_at=moved_at, by=by, reason=reason, history=history[:_HISTORY_KEEP])
    write_record(folder / CURRENT_FILE, pointer)


def commit_version(
    root: Path, name: str, *, manifest: TrainingManifest, fill: Callable[[Path], None], now: datetime | None = None
) -> AdapterVersion:
    """Let ``fill`` write a version into a temp folder, then rename it to the next version name."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        fill(tmp)
        now = now or datetime.now(UTC)
        for _ in range(100):
            version = next_version_name([p.name for p in folder.iterdir()], now)
            created = now.isoformat(timespec="seconds")
            record = AdapterManifest(name=name, version=version, created=created, **manifest.model_dump())
            write_record(tmp / MANIFEST_FILE, record)
            try:
                os.rename(tmp, folder / version)
            except OSError:
                if (folder / version).exists():
                    continue
                raise
            return load_version(folder / version)
        raise StoreError(f"{folder}: could not allocate a version name")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def activate(
    config: Config,
    name: str,
    version: str,
    *,
    by: str | None = None,
    reason: str = "manual activation",
    root: Path | None = None,
) -> AdapterVersion:
    """Make ``version`` current regardless of the gate; who and why are kept in the pointer's history."""
    base = _root(config, root)
    set_current(base, name, version, by=by or getpass.getuser(), reason=reason)
    return load_version(base / name / version)


def rollback(
    config: Config, name: str, *, by: str | None = None, reason: str = "rollback", root: Path | None = None
) -> AdapterVersion:
    """Point ``current`` at the newest gate-passing version older than the current one."""
    current = current_version(config, name, root=root)
    if current is None:
        raise StoreError(f"adapter {name!r} has no current version to roll back from")
    older = [
        v for v in list_versions(config, name, root=root) if version_number(v.version) < version_number(current.version)
    ]
    earlier = [v for v in older if v.passed]
    if not earlier:
        raise StoreError(f"adapter {name!r}: no passing version older than {current.version} to roll back to")
    return activate(config, name, earlier[-1].version, by=by, reason=f"{reason} from {current.version}", root=root)
