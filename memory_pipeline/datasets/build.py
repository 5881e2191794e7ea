"""Build one adapter's training set version from its promoted items and their documents.

Order of steps: lines from items, language filter, PII scrub, token bounds, exact and near
duplicates, token budget (highest scores first), split by document, eval decontamination. Each
step's removals are counted in the card and each item's fate is listed in ``items.jsonl``, so a
person can see why something they expected is not there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from memory_pipeline.config import AdapterConfig, Config, DatasetsConfig
from memory_pipeline.datasets import curation
from memory_pipeline.datasets.card import DatasetCard, card_bytes, key_values, read_card
from memory_pipeline.datasets.curation import Example, StepReport
from memory_pipeline.datasets.exports import export_configs
from memory_pipeline.datasets.formats import chat_example, text_example
from memory_pipeline.datasets.heldout import general_heldout
from memory_pipeline.datasets.versions import (
    DATA_FILES,
    EXPORT_FILES,
    ITEMS_FILE,
    adapter_dir,
    commit_version,
    latest_version_dir,
    next_version_name,
)
from memory_pipeline.records import Document, Kind, sha256_bytes
from memory_pipeline.tokens import ENCODING_NAME

# Whose text a target is: the user's turns, an assistant's answers (voice 'assistant' only), the
# user's articles and lectures. A served model's own answers are never targets (see make_examples).
TARGET_SOURCES = ("user", "assistant", "article", "lecture", "profile")


class DatasetBuildResult(BaseModel):
    """The version a build produced or found unchanged; ``version`` is empty and ``card`` None before the first."""

    adapter: str
    version: str
    path: Path
    card: DatasetCard | None
    created: bool
    message: str


@dataclass(frozen=True)
class Curated:
    train: list[Example]
    eval: list[Example]
    steps: list[StepReport]
    outcomes: dict[str, str]  # item_id -> "train", "eval" or the step that removed it
    examples_built: int

    def by_file(self) -> dict[tuple[str, str], list[Example]]:
        """Examples per data file (split, format).

        The chat files always, possibly empty; text files when they have lines.
        """
        files: dict[tuple[str, str], list[Example]] = {}
        for split, fmt in DATA_FILES:
            examples = [e for e in (self.train if split == "train" else self.eval) if e.format == fmt]
            if examples or fmt == "chat":
                files[(split, fmt)] = examples
        return files


def _unit_field(unit: Any, name: str) -> Any:
    """A field of an item's unit, whether it is an object, a mapping or its JSON text."""
    if isinstance(unit, str):
        unit = json.loads(unit) if unit.strip().startswith("{") else {}
    if isinstance(unit, Mapping):
        return unit.get(name)
    return getattr(unit, name, None)


def _starts_exchange(doc: Document, turn_index: int) -> bool:
    """Whether an exchange starts here; not so when the document changed since the item was scored."""
    if not 0 <= turn_index < len(doc.turns):
        return False
    return turn_index == 0 or (doc.turns[turn_index].role == "user" and doc.turns[turn_index - 1].role == "assistant")


def is_captured(doc: Document, inbox_dir: Path | None) -> bool:
    """Recorded by the service (proxy or /dialogues): its assistant turns are a served model's own answers."""
    if inbox_dir is None:
        return False
    try:
        return Path(doc.source_path).resolve().is_relative_to(inbox_dir.resolve())
    except (OSError, ValueError):
        return False


def make_examples(
    assignments: Sequence[Any],
    documents: Mapping[str, Document],
    adapter: AdapterConfig,
    options: DatasetsConfig,
    *,
    inbox_dir: Path | None = None,
) -> tuple[list[Example], dict[str, str]]:
    """One candidate line per promoted item, and the reason for each item that gives none.

    The target is the user's own text unless the adapter's voice is ``assistant``; even then a
    captured exchange's answer (a model the proxy served, maybe this very adapter) never is:
    a model must not be trained on its own outputs. Each example says whose text its target is.
    """
    examples: list[Example] = []
    skipped: dict[str, str] = {}
    for a in assignments:
        kind = Kind(str(a.kind))
        doc = documents.get(a.doc_id)
        if kind is Kind.DIALOGUE:
            turn_index = _unit_field(a.unit, "turn_index")
            if doc is None:
                skipped[a.item_id] = "missing_document"
                continue
            if turn_index is None or not _starts_exchange(doc, int(turn_index)):
                skipped[a.item_id] = "stale_position"
                continue
            chat = chat_example(
                doc,
                int(turn_index),
                voice=adapter.voice,
                system_prompt=adapter.system_prompt,
                context_tokens=options.context_tokens,
                count_tokens=curation.count_tokens,
            )
            if chat is None:
                skipped[a.item_id] = "no_target"
                continue
            if chat.target_role == "assistant" and is_captured(doc, inbox_dir):
                skipped[a.item_id] = "served_model_answer"
                continue
            record: dict[str, Any] = {"messages": chat.messages}
            key_text, source = chat.key_text, chat.target_role
        else:
            heading = _unit_field(a.unit, "heading") if kind in (Kind.ARTICLE, Kind.PROFILE) else None
            line = text_example(a.text or "", heading=heading)
            if line is None:
                skipped[a.item_id] = "empty_text"
                continue
            record, key_text, source = line, line["text"], kind.value
        examples.append(
            Example(
                item_id=a.item_id,
                doc_id=a.doc_id,
                kind=kind.value,
                score=float(a.score),
                record=record,
                key_text=key_text,
                target_source=source,
            )
        )
    return curation.with_token_counts(examples), skipped


def curate(
    assignments: Sequence[Any],
    documents: Mapping[str, Document],
    adapter: AdapterConfig,
    options: DatasetsConfig,
    *,
    inbox_dir: Path | None = None,
) -> Curated:
    """Every curation step in order, with what each removed."""
    examples, skipped = make_examples(assignments, documents, adapter, options, inbox_dir=inbox_dir)
    outcomes = dict(skipped)
    steps = [StepReport("lines_from_items", len(skipped), {"reasons": dict(sorted(Counter(skipped.values()).items()))})]

    def apply(result: curation.Filtered) -> list[Example]:
        steps.append(result.report)
        outcomes.update((e.item_id, result.report.step) for e in result.removed)
        return result.kept

    built = len(examples)
    examples = apply(curation.filter_languages(examples, options.languages))
    if options.scrub_pii:
        examples, report = curation.scrub_examples(examples)
        steps.append(report)
    examples = apply(
        curation.filter_token_bounds(examples, min_tokens=options.min_tokens, max_tokens=options.max_tokens)
    )
    examples = apply(curation.dedup_exact(examples))
    examples = apply(curation.dedup_near(examples, threshold=options.near_duplicate_threshold))
    examples = apply(curation.apply_token_budget(examples, budget=options.token_budget))
    train, eval_, report = curation.split_by_document(examples, eval_fraction=options.eval_fraction, seed=options.seed)
    steps.append(report)
    eval_ = apply(curation.decontaminate(train, eval_, n=options.decontamination_ngram))
    train.sort(key=lambda e: e.item_id)
    eval_.sort(key=lambda e: e.item_id)
    outcomes.update((e.item_id, "train") for e in train)
    outcomes.update((e.item_id, "eval") for e in eval_)
    return Curated(train, eval_, steps, outcomes, built)


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def content_hash(data: Mapping[str, bytes]) -> str:
    """What tells two versions apart: the data files' lines (not the card, the build time or the exports).

    Text lines count only when there are any, so a chat-only set keeps the hash it had when every
    line was in ``train.jsonl`` / ``eval.jsonl`` and is not rebuilt for the layout alone.
    """
    chat = [data[DATA_FILES[(split, "chat")]] for split in ("train", "eval")]
    text = [data.get(DATA_FILES[(split, "text")], b"") for split in ("train", "eval")]
    return sha256_bytes(b"\x00".join(chat + text if any(text) else chat))


def build_dataset(
    config: Config,
    adapter_name: str,
    assignments: Sequence[Any],
    documents: Iterable[Document],
    *,
    now: datetime | None = None,
) -> DatasetBuildResult:
    """Build a new version of ``adapter_name``'s training set, or say why there is none.

    ``assignments`` are the promote stage's item assignments (item_id, doc_id, kind, unit, score,
    adapters, text); only those promoted to this adapter are used. ``documents`` must include the
    dialogues they come from (the lines carry earlier turns as context). A build whose train and
    eval lines equal the latest version's creates nothing and returns that version.
    """
    adapter = config.adapter(adapter_name)
    options = config.datasets
    promoted = [a for a in assignments if adapter_name in (a.adapters or ())]
    docs = {d.doc_id: d for d in documents}
    curated = curate(promoted, docs, adapter, options, inbox_dir=config.inbox_dir)
    by_file = curated.by_file()
    data = {DATA_FILES[key]: _jsonl(e.record for e in examples) for key, examples in by_file.items()}
    digest = content_hash(data)
    latest = latest_version_dir(config, adapter_name)
    latest_card = read_card(latest) if latest is not None else None
    if not curated.train:
        reason = f"no training examples for {adapter_name!r} ({len(promoted)} promoted items, none left after curation)"
        return _unchanged(config, adapter_name, latest, latest_card, reason)
    if latest_card is not None and latest_card.content_hash == digest:
        return _unchanged(
            config, adapter_name, latest, latest_card, f"unchanged: same train and eval lines as {latest.name}"
        )
    now = now or datetime.now(UTC)
    version = next_version_name(config, adapter_name, now)
    heldout = general_heldout()
    card = make_card(
        version=version,
        adapter=adapter,
        options=options,
        config=config,
        curated=curated,
        heldout=heldout,
        promoted=len(promoted),
        digest=digest,
        parent=latest.name if latest is not None else None,
        documents=docs,
        created_at=now,
    )
    items = [
        {"item_id": a.item_id, "doc_id": a.doc_id, "score": float(a.score), "outcome": curated.outcomes[a.item_id]}
        for a in sorted(promoted, key=lambda a: a.item_id)
    ]
    with_lines = {key: DATA_FILES[key] for key, examples in by_file.items() if examples}
    files = {
        **data,
        "heldout.jsonl": _jsonl(heldout),
        "card.json": card_bytes(card),
        "card.md": render_card(card).encode("utf-8"),
        ITEMS_FILE: _jsonl(items),
        **export_configs(with_lines, adapter=adapter_name, version=version),
    }
    path = commit_version(config, adapter_name, version, files)
    message = f"new version {version}: {len(curated.train)} train, {len(curated.eval)} eval examples"
    return DatasetBuildResult(
        adapter=adapter_name, version=version, path=path, card=card, created=True, message=message
    )


def _unchanged(
    config: Config, adapter_name: str, latest: Path | None, card: DatasetCard | None, reason: str
) -> DatasetBuildResult:
    version, path = (latest.name, latest) if latest is not None else ("", adapter_dir(config, adapter_name))
    return DatasetBuildResult(
        adapter=adapter_name, version=version, path=path, card=card, created=False, message=reason
    )


def build_dataset_for_adapter(config: Config, adapter_name: str) -> DatasetBuildResult:
    """Build from the promote stage's current assignments and the document store.

    ``core`` also takes every profile document (the user's own description of himself), promoted
    or not: it is what that adapter exists to learn.
    """
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.scoring.assignments import load_assignments

    config.adapter(adapter_name)
    assignments = load_assignments(config, adapter=adapter_name)
    if adapter_name == "core":
        from memory_pipeline.profile import profile_assignments

        assignments += profile_assignments(config, {a.item_id for a in assignments})
    doc_ids = {a.doc_id for a in assignments if adapter_name in (a.adapters or ())}
    documents = DocumentStore(config.documents_dir).get_many(doc_ids) if doc_ids else []
    return build_dataset(config, adapter_name, assignments, documents)


def make_card(
    *,
    version: str,
    adapter: AdapterConfig,
    options: DatasetsConfig,
    config: Config,
    curated: Curated,
    heldout: list[dict[str, str]],
    promoted: int,
    digest: str,
    parent: str | None,
    documents: Mapping[str, Document],
    created_at: datetime,
) -> DatasetCard:
    """The dataset card: what is in the version, where it came from, and what curation removed."""
    kept = curated.train + curated.eval
    scores = [e.score for e in kept]
    doc_formats = Counter(documents[d].format for d in {e.doc_id for e in kept} if d in documents)
    heldout_tokens = sum(curation.count_tokens(h["text"]) for h in heldout)
    return DatasetCard.model_validate(
        {
            "version": version,
            "adapter": adapter.name,
            "created_at": created_at.astimezone(UTC).isoformat(timespec="seconds"),
            "parent": parent,
            "content_hash": digest,
            "counts": {
                "train": len(curated.train),
                "eval": len(curated.eval),
                "heldout": len(heldout),
                "promoted_items": promoted,
                "examples_built": curated.examples_built,
            },
            "tokens": {
                "encoding": ENCODING_NAME,
                "train": curation.token_stats(curated.train),
                "eval": curation.token_stats(curated.eval),
                "heldout_total": heldout_tokens,
            },
            "sources": {
                "documents": {
                    "train": len({e.doc_id for e in curated.train}),
                    "eval": len({e.doc_id for e in curated.eval}),
                },
                "kinds": dict(sorted(Counter(e.kind for e in kept).items())),
                "targets": {source: sum(e.target_source == source for e in kept) for source in TARGET_SOURCES},
                "line_formats": dict(sorted(Counter(e.format for e in kept).items())),
                "document_formats": dict(sorted(doc_formats.items())),
            },
            "scores": {
                "rag_threshold": config.promote.rag_threshold,
                "lora_threshold": config.promote.lora_threshold,
                "min": round(min(scores), 4),
                "mean": round(sum(scores) / len(scores), 4),
                "max": round(max(scores), 4),
            },
            "filters": [s.as_dict() for s in curated.steps],
            "adapter_config": {
                "voice": adapter.voice,
                "system_prompt": adapter.system_prompt,
                "description": adapter.description,
            },
            "datasets_config": options.model_dump(mode="json"),
            "files": {
                "data": {
                    DATA_FILES[(split, fmt)]: {"split": split, "format": fmt, "examples": len(examples)}
                    for (split, fmt), examples in curated.by_file().items()
                },
                "heldout": "heldout.jsonl",
                "items": ITEMS_FILE,
                "exports": dict(EXPORT_FILES),
            },
        }
    )


def render_card(card: DatasetCard) -> str:
    """The card as Markdown, for a person (and the Dagster UI)."""
    counts, tokens, sources, scores, files = card.counts, card.tokens, card.sources, card.scores, card.files
    lines = [
        f"# Training set {card.adapter} {card.version}",
        "",
        f"Created {card.created_at}; parent {card.parent or '(none)'}; content hash `{card.content_hash[:16]}`.",
        f"Voice: {card.adapter_config.voice}; system prompt: {card.adapter_config.system_prompt or '(none)'}",
        "",
        "| split | examples | tokens | mean | p50 | p95 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split, s in (("train", tokens.train), ("eval", tokens.eval)):
        lines.append(f"| {split} | {getattr(counts, split)} | {s.total} | {s.mean} | {s.p50} | {s.p95} | {s.max} |")
    lines.append(f"| heldout (general) | {counts.heldout} | {tokens.heldout_total} |  |  |  |  |")
    lines += [
        "",
        f"Tokens: {tokens.encoding}. Promoted items: {counts.promoted_items}; lines built: {counts.examples_built}.",
        f"Documents: {sources.documents.train} train, {sources.documents.eval} eval. "
        f"Kinds: {key_values(sources.kinds)}. Line formats: {key_values(sources.line_formats)}. "
        f"Document formats: {key_values(sources.document_formats)}. "
        f"Targets from: {key_values(sources.targets)}.",
        f"Scores: min {scores.min}, mean {scores.mean}, max {scores.max} "
        f"(thresholds: rag {scores.rag_threshold}, lora {scores.lora_threshold}).",
        "",
        "| step | removed | details |",
        "|---|---:|---|",
    ]
    lines += [f"| {step.step} | {step.removed} | {key_values(step.details)} |" for step in card.filters]
    lines += ["", "| file | split | format | examples |", "|---|---|---|---:|"]
    lines += [f"| `{name}` | {f.split} | {f.format} | {f.examples} |" for name, f in files.data.items()]
    lines += [
        "",
        'One line format per file: TRL\'s SFTTrainer reads each as is (`load_dataset("json", data_files=...)`). '
        f"LLaMA-Factory: `{files.exports['llamafactory']}` (set `dataset_dir` to this folder). "
        f"axolotl: `{files.exports['axolotl']}` (merge its `datasets:` / `test_datasets:` into your config).",
    ]
    return "\n".join(lines) + "\n"
