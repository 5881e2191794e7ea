"""The memory loop's scoring engine: build items, update their signals incrementally, tier and route.

A run reads only what changed: documents whose content or chunks changed are rebuilt into
items; items whose text and chunks are unchanged keep their stored signals. Signals that
depend on other items are updated where new or removed items touch them: novelty of later
items, neighbour lists (recurrence), duplicate clusters, search hits. Recency, recurrence,
the combined score and the tier are recomputed for every item from stored values, which is
also all ``retier`` does when only the config changed.

Each signal stage reads the merged frame and returns its columns (``StageOutput``); ``update_scores``
alone writes them into the state, in order, since later stages read what earlier ones computed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.display import one_line
from memory_pipeline.errors import StoreError
from memory_pipeline.records import Kind, sha256_text
from memory_pipeline.scoring import signals as sg
from memory_pipeline.scoring.items import Item, ItemUnit, build_items, mean_vector
from memory_pipeline.scoring.routing import (
    AdapterProfile,
    PassageEmbedder,
    build_profiles,
    profiles_fingerprint,
    route_item,
    routing_texts,
)
from memory_pipeline.scoring.store import COLUMNS, LIST_COLUMNS, ScoreState, ScoreStore, scores_dir, stored_time
from memory_pipeline.scoring.tiers import Tier, combined_scores, decide_tier, own_content_chars
from memory_pipeline.timeutil import naive_utc

_EPOCH = datetime(1970, 1, 1)
_DAY = 86400.0
_HISTOGRAM_BINS = 10
_BRIEFS = 5
_RESTATE_OVERLAP = 1 / 3
_LOCAL_COLUMNS = (
    "density",
    "compress_ratio",
    "token_entropy",
    "n_chars",
    "importance",
    "markers",
    "tags",
    "quality",
    "quality_reasons",
    "code_fraction",
    "fingerprint",
)


class HistogramBin(BaseModel):
    lo: float
    hi: float
    count: int


class ItemBrief(BaseModel):
    """An item in a report: where it is, its tier and the rule that gave it, its score and each signal's value."""

    item_id: str
    doc_id: str
    kind: str
    title: str
    unit: ItemUnit
    created_at: datetime | None = Field(None, description="when it was said or written (first seen when unknown)")
    tier: str
    tier_rule: str
    score: float
    signals: dict[str, float]
    preview: str


class PromotionReport(BaseModel):
    """What a scoring run did: how much it had to compute, and where the items landed."""

    model_id: str = ""
    items_total: int = 0
    items_new: int = Field(0, description="never seen before: every signal computed")
    items_changed: int = Field(0, description="same unit, new text or chunks: every signal computed")
    items_removed: int = 0
    items_unchanged: int = 0
    items_rescored: int = Field(
        0,
        description="unchanged items whose dependent signals (novelty, neighbours, duplicates, usage, routes) changed",
    )
    documents_read: int = 0
    signals_computed: dict[str, int] = Field(
        default_factory=dict, description="items each signal was computed for (recency is live: all)"
    )
    texts_embedded: int = Field(
        0, description="adapter description/example texts embedded (items are never embedded here)"
    )
    tiers: dict[str, int] = Field(default_factory=dict)
    tier_changes: int = Field(0, description="items whose tier changed this run (recorded in the tier history)")
    adapters: dict[str, int] = Field(default_factory=dict)
    histogram: list[HistogramBin] = Field(default_factory=list)
    top: list[ItemBrief] = Field(default_factory=list)
    bottom: list[ItemBrief] = Field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ItemBatch:
    """The items of the documents read this run (vectors attached) and what is known of the rest."""

    items: list[Item]
    reread_docs: set[str]
    live_docs: set[str]
    doc_keys: dict[str, str] = field(default_factory=dict)
    doc_chunks: dict[str, str] = field(default_factory=dict)


def run_promotion(
    config: Config,
    *,
    now: datetime | None = None,
    progress: bool = True,
    embedder: PassageEmbedder | None = None,
    log: Callable[[str], None] | None = None,
) -> PromotionReport:
    """Score every item, update what changed, tier and route all of them; write the state atomically.

    ``now`` fixes the clock for recency (tests); ``embedder`` defaults to the configured model
    and is only used to embed adapter descriptions/examples (cached) and to name the chunk table.
    Progress lines go to ``log``, else to stderr: stdout is left to results (``promote --json``).
    """
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.ingest.docstore import DocumentStore

    started = time.perf_counter()
    say = log or (_print_progress if progress else (lambda _msg: None))
    store = ScoreStore(scores_dir(config))
    previous = store.load() or ScoreState.empty()
    embedder = embedder or load_embedder(config.embedding)
    model_id = embedder.model_id

    docstore = DocumentStore(config.documents_dir)
    chunk_source = _ChunkSource(config, model_id)
    doc_keys = docstore.content_hashes()
    doc_chunks = {doc: _chunks_key(ids) for doc, ids in chunk_source.chunk_ids_by_doc().items()}
    same_model = previous.model_id == model_id
    stored = previous.frame.drop_duplicates("doc_id").set_index("doc_id") if len(previous) else None
    reread = sorted(
        doc
        for doc, key in doc_keys.items()
        if not same_model
        or stored is None
        or doc not in stored.index
        or stored.at[doc, "doc_key"] != key
        or stored.at[doc, "doc_chunks"] != doc_chunks.get(doc, "")
    )
    say(f"scoring: {len(doc_keys)} documents, {len(reread)} to (re)read")
    items = _build(docstore, chunk_source, reread, progress=progress)
    profiles, profiles_key, embedded = _adapter_profiles(config, embedder, store)
    batch = ItemBatch(items, set(reread), set(doc_keys), doc_keys, doc_chunks)
    state, report = update_scores(
        previous,
        batch,
        config=config,
        now=now,
        model_id=model_id,
        hits_by_chunk=chunk_source.hit_counts(),
        profiles=profiles,
        profiles_key=profiles_key,
        last_hit_by_chunk=chunk_source.last_hits(),
    )
    report.documents_read = len(reread)
    report.texts_embedded = embedded
    store.save(state)
    report.tier_changes = store.record_tier_changes(
        _tiers_of(previous), state.frame, naive_utc(now) or datetime.now(UTC).replace(tzinfo=None)
    )
    report.seconds = round(time.perf_counter() - started, 3)
    store.save_report(report.model_dump(mode="json"))
    say(
        f"scoring: {report.items_total} items ({report.items_new} new, {report.items_rescored} rescored); "
        f"tiers {report.tiers}"
    )
    return report


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr)


def update_scores(
    previous: ScoreState,
    batch: ItemBatch,
    *,
    config: Config,
    now: datetime | None,
    model_id: str,
    hits_by_chunk: dict[str, int],
    profiles: Sequence[AdapterProfile],
    profiles_key: str,
    last_hit_by_chunk: dict[str, float] | None = None,
) -> tuple[ScoreState, PromotionReport]:
    """The scoring step itself, without I/O: previous state + rebuilt items -> new state and report.

    Items of documents not in ``batch.reread_docs`` keep their stored rows; rebuilt items reuse
    stored values when their text (local signals) or chunks (vector signals) are unchanged.
    """
    started = time.perf_counter()
    now = naive_utc(now) or datetime.now(UTC).replace(tzinfo=None)
    same_model = previous.model_id in ("", model_id)
    state, flags = _merge(previous, batch, same_model=same_model, now=now)
    state.model_id = model_id
    frame = state.frame
    fresh = flags.new | flags.changed
    computed: dict[str, int] = {}
    touched = np.zeros(len(state), dtype=bool)

    def apply(output: StageOutput) -> None:
        nonlocal touched
        _set_columns(frame, output.columns)
        for name, count in output.computed.items():
            computed[name] = computed.get(name, 0) + count
        if output.moved is not None:
            touched = touched | output.moved

    text_rows = np.flatnonzero(flags.text_fresh)
    local, signatures = _local_signals(frame, text_rows, config)
    apply(local)
    state.signatures[text_rows] = signatures
    markers_key = _markers_key(config)
    if state.markers_key not in ("", markers_key):
        apply(_importance(frame, np.flatnonzero(~flags.text_fresh), config))
    state.markers_key = markers_key
    apply(_vector_signals(frame, state.vectors, flags))
    apply(_redundancy(frame, state.signatures, fresh, config))
    apply(_usage(frame, flags.hits_before, hits_by_chunk))
    _set_columns(frame, _last_used(frame, last_hit_by_chunk or {}))
    routes_key = sha256_text(f"{profiles_key}\x1f{config.promote.core_min_user_chars}")[:32]
    apply(_routes(frame, state.vectors, flags, config, profiles, everything=routes_key != state.profiles_key))
    state.profiles_key = routes_key
    computed["recency"] = len(state)
    _set_columns(frame, _finish(frame, config, now))
    report = PromotionReport(
        model_id=model_id,
        items_total=len(state),
        items_new=int(flags.new.sum()),
        items_changed=int(flags.changed.sum()),
        items_removed=len(flags.removed_ids),
        items_unchanged=len(state) - int(fresh.sum()),
        items_rescored=int((touched & ~fresh).sum()),
        signals_computed=computed,
        **_summary(frame, config),
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return state, report


def retier(config: Config, *, now: datetime | None = None) -> PromotionReport:
    """Recompute recurrence, recency, scores and tiers from stored signals and the current config.

    Reads no document, chunk or vector and embeds nothing: what changing weights or thresholds costs.
    """
    started = time.perf_counter()
    store = ScoreStore(scores_dir(config))
    state = store.load()
    if state is None:
        raise StoreError(f"{store.items_path}: no item scores yet; run the promotion first")
    before = _tiers_of(state)
    at = naive_utc(now) or datetime.now(UTC).replace(tzinfo=None)
    _set_columns(state.frame, _finish(state.frame, config, at))
    store.save(state)
    report = PromotionReport(
        model_id=state.model_id,
        items_total=len(state),
        items_unchanged=len(state),
        signals_computed={"recency": len(state)},
        tier_changes=store.record_tier_changes(before, state.frame, at),
        **_summary(state.frame, config),
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


# Reading documents and chunks


class _ChunkSource:
    """The chunk rows and search hits scoring reads, from the chunk table of the configured model."""

    def __init__(self, config: Config, model_id: str):
        from memory_pipeline.index.lancedb_store import ChunkStore

        self.config = config
        self.store = ChunkStore(config.lancedb_uri, model_id)

    def chunk_ids_by_doc(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for row in self.store.rows(["chunk_id", "doc_id"]):
            found.setdefault(row["doc_id"], []).append(row["chunk_id"])
        return found

    def rows(self, doc_ids: Sequence[str]) -> list[dict]:
        columns = ["chunk_id", "doc_id", "text", "ordinal", "turn_index", "heading", "page", "start", "end", "vector"]
        return self.store.rows(columns, doc_ids=doc_ids)

    def hit_counts(self) -> dict[str, int]:
        from memory_pipeline.index.search_log import hit_counts

        return hit_counts(self.config)

    def last_hits(self) -> dict[str, float]:
        from memory_pipeline.index.search_log import last_hit_times

        return last_hit_times(self.config)


def _tiers_of(state: ScoreState) -> dict[str, str]:
    frame = state.frame
    return dict(zip(frame["item_id"], frame["tier"].fillna(""), strict=True)) if len(frame) else {}


def _chunks_key(chunk_ids: Iterable[str]) -> str:
    ids = sorted(chunk_ids)
    return sha256_text("\x1f".join(ids))[:32] if ids else ""


def _build(docstore, chunk_source: _ChunkSource, doc_ids: Sequence[str], *, progress: bool) -> list[Item]:
    """Items of the given documents, each with its vector (mean of its chunks' vectors)."""
    from tqdm import tqdm

    items: list[Item] = []
    batch = 200
    bar = tqdm(total=len(doc_ids), desc="scoring: items", unit="doc", disable=not progress)
    for start in range(0, len(doc_ids), batch):
        ids = doc_ids[start : start + batch]
        chunks_by_doc: dict[str, list[dict]] = {}
        for chunk in chunk_source.rows(ids):
            chunks_by_doc.setdefault(chunk["doc_id"], []).append(chunk)
        for doc in docstore.get_many(ids):
            chunks = chunks_by_doc.get(doc.doc_id, [])
            vector_of = {c["chunk_id"]: c["vector"] for c in chunks if c.get("vector") is not None}
            for item in build_items(doc, chunks):
                found = [vector_of[c] for c in item.chunk_ids if c in vector_of]
                item.vector = mean_vector(np.asarray(found, dtype=np.float32)) if found else None
                items.append(item)
            bar.update(1)
    bar.close()
    return items


def _adapter_profiles(
    config: Config, embedder: PassageEmbedder, store: ScoreStore
) -> tuple[list[AdapterProfile], str, int]:
    """Adapter profiles; their texts are embedded once per model and cached beside the scores."""
    cached = store.load_profile_vectors(embedder.model_id)
    texts = routing_texts(config.adapters)
    missing = [t for t in texts if sha256_text(t)[:32] not in cached]
    if missing:
        for text, vector in zip(missing, embedder.embed_passages(missing), strict=True):
            cached[sha256_text(text)[:32]] = np.asarray(vector, dtype=np.float32)
        store.save_profile_vectors(embedder.model_id, cached)
    profiles = build_profiles(config.adapters, {t: cached[sha256_text(t)[:32]] for t in texts})
    return profiles, profiles_fingerprint(config.adapters, embedder.model_id), len(missing)


def adapter_profiles(config: Config, embedder: PassageEmbedder, store: ScoreStore) -> list[AdapterProfile]:
    """The adapters' routing profiles, as scoring builds them: what the proxy's ``auto`` model routes with."""
    return _adapter_profiles(config, embedder, store)[0]


def _item_row(item: Item, doc_key: str, doc_chunks: str) -> dict:
    return {
        "item_id": item.item_id,
        "doc_id": item.doc_id,
        "kind": item.kind.value,
        "title": item.title,
        "source_path": item.source_path,
        "unit": item.unit.model_dump_json(),
        "text": item.text,
        "user_text": item.user_text,
        "answer_text": item.answer_text,
        "created_at": item.created_at,
        "chunk_ids": list(item.chunk_ids),
        "doc_key": doc_key,
        "doc_chunks": doc_chunks,
        "text_hash": item.text_hash,
        "vector_key": item.vector_key,
    }


# Merging the new items into the stored state


class _Flags:
    """Per row of the merged state: what is new and what must be recomputed."""

    def __init__(self, n: int):
        self.new = np.zeros(n, dtype=bool)
        self.changed = np.zeros(n, dtype=bool)
        self.text_fresh = np.zeros(n, dtype=bool)
        self.vector_fresh = np.zeros(n, dtype=bool)
        self.removed_ids: set[str] = set()
        self.invalidated_ids: set[str] = set()
        self.hits_before: np.ndarray = np.zeros(n, dtype=np.int64)


def _merge(previous: ScoreState, batch: ItemBatch, *, same_model: bool, now: datetime):
    """Stored rows of untouched documents plus rebuilt rows, reusing stored values where valid."""
    frame = previous.frame
    reread_docs, live_docs = batch.reread_docs, batch.live_docs
    built = [_item_row(i, batch.doc_keys.get(i.doc_id, ""), batch.doc_chunks.get(i.doc_id, "")) for i in batch.items]
    built_vectors = [i.vector for i in batch.items]
    keep_mask = frame["doc_id"].isin(live_docs - reread_docs).to_numpy() if len(frame) else np.zeros(0, dtype=bool)
    if not same_model:
        keep_mask[:] = False
    kept = frame[keep_mask]
    position = {item_id: i for i, item_id in enumerate(frame["item_id"])}
    dim = next((len(v) for v in built_vectors if v is not None), previous.vectors.shape[1] if same_model else 0)

    new_rows: list[dict] = []
    vectors: list[np.ndarray] = []
    signatures: list[np.ndarray] = []
    flags_new, flags_changed, text_fresh, vector_fresh = [], [], [], []
    olds = [position.get(row["item_id"]) for row in built]
    stored = iter(frame.iloc[[o for o in olds if o is not None]].to_dict("records"))
    for row, vector, old in zip(built, built_vectors, olds, strict=True):
        base = next(stored) if old is not None else _blank_row(now)
        text_same = old is not None and base["text_hash"] == row["text_hash"]
        vector_same = (
            old is not None
            and same_model
            and base["vector_key"] == row["vector_key"]
            and bool(base["has_vector"]) == (vector is not None)
        )
        base.update(row)
        base["has_vector"] = vector is not None
        new_rows.append(base)
        vectors.append(vector if vector is not None else np.zeros(dim, dtype=np.float32))
        signatures.append(previous.signatures[old] if text_same else np.zeros(sg.MINHASH_PERM, dtype=np.uint32))
        flags_new.append(old is None)
        flags_changed.append(old is not None and not (text_same and vector_same))
        text_fresh.append(not text_same)
        vector_fresh.append(vector is not None and not vector_same)

    built_frame = pd.DataFrame(new_rows, columns=list(COLUMNS)) if new_rows else frame.iloc[0:0]
    merged = pd.concat([kept, built_frame], ignore_index=True) if len(kept) else built_frame.reset_index(drop=True)
    kept_vectors = (
        previous.vectors[keep_mask]
        if previous.vectors.shape[1] == dim
        else np.zeros((int(keep_mask.sum()), dim), np.float32)
    )
    state = ScoreState(
        merged,
        np.vstack([kept_vectors, *(v[None, :] for v in vectors)]).astype(np.float32)
        if vectors
        else kept_vectors.astype(np.float32),
        np.vstack([previous.signatures[keep_mask], *(s[None, :] for s in signatures)]).astype(np.uint32),
        previous.model_id,
        previous.profiles_key,
        previous.markers_key,
    )
    flags = _Flags(len(merged))
    offset = len(kept)
    flags.new[offset:] = flags_new
    flags.changed[offset:] = flags_changed
    flags.text_fresh[offset:] = text_fresh
    flags.vector_fresh[offset:] = vector_fresh
    flags.removed_ids = set(frame["item_id"]) - set(merged["item_id"])
    changed_vector_ids = {r["item_id"] for r, f, n in zip(built, vector_fresh, flags_new, strict=True) if f and not n}
    lost_vector_ids = {r["item_id"] for r, v in zip(built, built_vectors, strict=True) if v is None}
    flags.invalidated_ids = flags.removed_ids | changed_vector_ids | lost_vector_ids
    flags.hits_before = merged["hits"].fillna(-1).astype(np.int64).to_numpy()
    return state, flags


def _blank_row(now: datetime) -> dict:
    row: dict = {c: None for c in COLUMNS}
    row.update({name: 0.0 for name in sg.SIGNALS})
    row.update(
        first_seen=now,
        novelty_sim=0.0,
        novelty_neighbour="",
        neighbours=[],
        neighbour_sims=[],
        cluster_keeper="",
        cluster_size=1,
        exact_duplicate=False,
        hits=-1,
        routes="{}",
        adapters=[],
        markers=[],
        tags=[],
        quality_reasons=[],
        recurrence_docs=0,
        recurrence_span_days=0.0,
        score=0.0,
        tier="",
        tier_base="",
        tier_rule="",
        superseded_by="",
        recall_score=0.0,
    )
    return row


# Signals


@dataclass
class StageOutput:
    """What one signal stage computed: whole columns for the frame, items per signal, rows whose values moved."""

    columns: dict[str, Any]
    computed: dict[str, int] = field(default_factory=dict)
    moved: np.ndarray | None = None


def _set_columns(frame: pd.DataFrame, columns: dict[str, Any]) -> None:
    """Write a stage's columns into the state's frame (list columns as object columns, one list per row)."""
    for column, values in columns.items():
        frame[column] = pd.Series(values, index=frame.index, dtype=object) if column in LIST_COLUMNS else values


def _with_rows(column: pd.Series, rows: np.ndarray, values: list) -> list:
    """The column as a list with ``rows`` replaced by ``values``."""
    merged = column.to_list()
    for row, value in zip(rows, values, strict=True):
        merged[row] = value
    return merged


def _own_texts(frame: pd.DataFrame) -> np.ndarray:
    """Each item's own words: the user's turns of an exchange, the whole text otherwise."""
    dialogue = frame["kind"].to_numpy(dtype=object) == Kind.DIALOGUE.value
    return np.where(
        dialogue, frame["user_text"].fillna("").to_numpy(dtype=object), frame["text"].to_numpy(dtype=object)
    )


def _local_signals(frame: pd.DataFrame, rows: np.ndarray, config: Config) -> tuple[StageOutput, np.ndarray]:
    """Density, importance and quality of the item's own text and its fingerprint, for ``rows``; and their MinHash."""
    computed = dict.fromkeys(("density", "importance", "quality"), len(rows))
    if not len(rows):
        return StageOutput({}, computed), np.zeros((0, sg.MINHASH_PERM), dtype=np.uint32)
    values: dict[str, list] = {c: [] for c in _LOCAL_COLUMNS}
    texts = frame["text"].to_numpy(dtype=object)[rows]
    kinds = frame["kind"].to_numpy(dtype=object)[rows]
    user_texts = frame["user_text"].fillna("").to_numpy(dtype=object)[rows]
    answer_texts = frame["answer_text"].fillna("").to_numpy(dtype=object)[rows]
    for text, kind, user_text, answer_text in zip(texts, kinds, user_texts, answer_texts, strict=True):
        density = sg.information_density(text)
        importance = sg.own_importance(kind, text, user_text, config.promote)
        quality = sg.answer_quality(text, answer_text=answer_text)
        values["density"].append(density.value)
        values["compress_ratio"].append(density.compress_ratio)
        values["token_entropy"].append(density.token_entropy)
        values["n_chars"].append(density.n_chars)
        values["importance"].append(importance.value)
        values["markers"].append(list(importance.markers))
        values["tags"].append(list(importance.tags))
        values["quality"].append(quality.value)
        values["quality_reasons"].append(list(quality.reasons))
        values["code_fraction"].append(quality.code_fraction)
        values["fingerprint"].append(sg.text_fingerprint(text))
    columns = {column: _with_rows(frame[column], rows, found) for column, found in values.items()}
    return StageOutput(columns, computed), sg.minhash_signatures(list(texts))


def _markers_key(config: Config) -> str:
    """Changes with the markers and the stance rules, so stored importance is recomputed when either changes."""
    promote = config.promote
    rules = (sg.IMPORTANCE_RULES, f"{promote.stance_importance:g}", str(promote.core_min_user_chars))
    return sha256_text("\x1f".join((*promote.importance_markers, *rules)))[:32]


def _importance(frame: pd.DataFrame, rows: np.ndarray, config: Config) -> StageOutput:
    """Importance of ``rows`` again: what the other items need when the markers or stance rules changed."""
    texts = frame["text"].to_numpy(dtype=object)
    user_texts = frame["user_text"].fillna("").to_numpy(dtype=object)
    kinds = frame["kind"].to_numpy(dtype=object)
    found = [sg.own_importance(kinds[i], texts[i], user_texts[i], config.promote) for i in rows]
    moved = np.zeros(len(frame), dtype=bool)
    moved[rows] = True
    columns = {
        "importance": _with_rows(frame["importance"], rows, [f.value for f in found]),
        "markers": _with_rows(frame["markers"], rows, [list(f.markers) for f in found]),
    }
    return StageOutput(columns, {"importance": len(rows)}, moved)


def _times(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(effective time, first seen) in days: effective = created_at, else when first seen."""
    created = pd.to_datetime(frame["created_at"])
    first = pd.to_datetime(frame["first_seen"])
    effective = created.fillna(first)
    to_days = lambda s: (s - pd.Timestamp(_EPOCH)).dt.total_seconds().to_numpy(dtype=np.float64) / _DAY  # noqa: E731
    return to_days(effective), to_days(first)


def _vector_signals(frame: pd.DataFrame, vectors: np.ndarray, flags: _Flags) -> StageOutput:
    """Novelty and neighbour lists: full for fresh and invalidated rows, merged updates for the rest.

    A row is invalidated when its nearest predecessor or one of its neighbours was removed or
    changed its vector; other stored rows only gain what the fresh items bring.
    """
    n = len(frame)
    if n == 0:
        return StageOutput({}, {"novelty": 0, "recurrence": 0})
    has_vector = frame["has_vector"].to_numpy(dtype=bool)
    ids = frame["item_id"].to_numpy(dtype=object)
    times, first_seen = _times(frame)
    learned = frame["tier_base"].fillna("").to_numpy(dtype=object) == Tier.LORA.value
    predecessors = sg.Predecessors(sg.rank_order(times, ids), learned, first_seen)
    neighbours = frame["neighbours"].to_list()
    sims = frame["neighbour_sims"].to_list()
    novelty_sim = frame["novelty_sim"].fillna(0.0).to_numpy(dtype=np.float64).copy()
    nearest = frame["novelty_neighbour"].fillna("").to_numpy(dtype=object).copy()
    invalid = flags.invalidated_ids
    stale = np.zeros(n, dtype=bool)
    if invalid:
        candidates = np.flatnonzero(has_vector & ~flags.vector_fresh)
        stale[candidates] = [nearest[i] in invalid or not invalid.isdisjoint(neighbours[i]) for i in candidates]
    full = np.flatnonzero(flags.vector_fresh | stale)
    if len(full):
        result = sg.similarities(full, vectors, predecessors)
        for j, row in enumerate(full):
            novelty_sim[row] = float(result.max_sim[j])
            nearest[row] = ids[result.argmax[j]] if result.argmax[j] >= 0 else ""
            neighbours[row] = list(ids[result.neighbour_idx[j]])
            sims[row] = result.neighbour_sim[j].tolist()
    moved = stale.copy()
    fresh = np.flatnonzero(flags.vector_fresh)
    others = np.flatnonzero(has_vector & ~flags.vector_fresh & ~stale)
    updated_novelty = updated_lists = 0
    if len(fresh) and len(others):
        result = sg.similarities(others, vectors, predecessors, columns=fresh)
        for j, row in enumerate(others):
            if result.argmax[j] >= 0 and result.max_sim[j] > novelty_sim[row]:
                novelty_sim[row] = float(result.max_sim[j])
                nearest[row] = ids[result.argmax[j]]
                updated_novelty += 1
                moved[row] = True
            if len(result.neighbour_idx[j]):
                merged = dict(zip(neighbours[row], sims[row], strict=True))
                merged.update(zip(ids[result.neighbour_idx[j]], result.neighbour_sim[j].tolist(), strict=True))
                top = sorted(merged.items(), key=lambda kv: -kv[1])[: sg.NEIGHBOURS_K]
                neighbours[row], sims[row] = [k for k, _ in top], [v for _, v in top]
                updated_lists += 1
                moved[row] = True
    for row in np.flatnonzero(~has_vector):
        novelty_sim[row], nearest[row], neighbours[row], sims[row] = 0.0, "", [], []
    columns = {
        "novelty_sim": novelty_sim,
        "novelty_neighbour": nearest,
        "novelty": np.where(has_vector, sg.novelty(novelty_sim), 0.0),
        "neighbours": neighbours,
        "neighbour_sims": sims,
    }
    return StageOutput(
        columns, {"novelty": len(full) + updated_novelty, "recurrence": len(full) + updated_lists}, moved
    )


def _redundancy(frame: pd.DataFrame, signatures: np.ndarray, fresh: np.ndarray, config: Config) -> StageOutput:
    """Duplicate clusters over all items (cheap: stored signatures); counts fresh items and those whose value moved."""
    if not len(frame):
        return StageOutput({}, {"redundancy": 0})
    times, _ = _times(frame)
    ids = frame["item_id"].to_numpy(dtype=object)
    order = sg.rank_order(times, ids)
    result = sg.redundancy(
        frame["fingerprint"].fillna("").tolist(), signatures, order, threshold=config.promote.near_duplicate_threshold
    )
    keeper = ids[result.keeper]
    before_keeper = frame["cluster_keeper"].fillna("").to_numpy(dtype=object)
    before_size = frame["cluster_size"].fillna(0).to_numpy(dtype=np.int64)
    moved = (keeper != before_keeper) | (result.cluster_size != before_size)
    columns = {
        "redundancy": result.value,
        "cluster_keeper": keeper,
        "cluster_size": result.cluster_size,
        "exact_duplicate": result.exact,
    }
    return StageOutput(columns, {"redundancy": int((moved | fresh).sum())}, moved)


def _usage(frame: pd.DataFrame, hits_before: np.ndarray, hits_by_chunk: dict[str, int]) -> StageOutput:
    """Search hits on each item's chunks, and the usage signal they give."""
    hits = np.array([sum(hits_by_chunk.get(c, 0) for c in ids) for ids in frame["chunk_ids"]], dtype=np.int64)
    moved = hits != hits_before
    return StageOutput({"hits": hits, "usage": [sg.usage(int(h)) for h in hits]}, {"usage": int(moved.sum())}, moved)


def _last_used(frame: pd.DataFrame, last_hit_by_chunk: dict[str, float]) -> dict[str, Any]:
    """When a search last returned one of the item's chunks (unix seconds in the log): disuse decays recall."""
    if not len(frame):
        return {}
    latest = [max((last_hit_by_chunk.get(c, 0.0) for c in ids), default=0.0) for ids in frame["chunk_ids"]]
    used = pd.to_datetime(pd.Series(latest, dtype="float64").where(lambda v: v > 0), unit="s")
    return {"last_used": used.fillna(pd.to_datetime(frame["last_used"])).astype("datetime64[us]").to_numpy()}


def _routes(
    frame: pd.DataFrame,
    vectors: np.ndarray,
    flags: _Flags,
    config: Config,
    profiles: Sequence[AdapterProfile],
    *,
    everything: bool,
) -> StageOutput:
    """Route scores for items whose text or vector changed, or for all when the adapters changed."""
    n = len(frame)
    rows = np.flatnonzero(np.ones(n, dtype=bool) if everything else (flags.text_fresh | flags.vector_fresh))
    routes = frame["routes"].to_numpy(dtype=object).copy()
    has_vector = frame["has_vector"].to_numpy(dtype=bool)
    kinds = frame["kind"].to_numpy(dtype=object)
    texts = frame["text"].to_numpy(dtype=object)
    user_texts = frame["user_text"].fillna("").to_numpy(dtype=object)
    for row in rows:
        routes[row] = json.dumps(
            route_item(
                kind=Kind(kinds[row]),
                text=texts[row],
                user_text=user_texts[row],
                vector=vectors[row] if has_vector[row] else None,
                profiles=profiles,
                config=config.promote,
            ),
            ensure_ascii=False,
        )
    return StageOutput({"routes": routes}, {"routes": len(rows)}, np.full(n, everything))


def _finish(frame: pd.DataFrame, config: Config, now: datetime) -> dict[str, Any]:
    """Live signals (recurrence, recency), combined score and tier of every item, from stored values."""
    if not len(frame):
        return {}
    promote = config.promote
    times, first_seen = _times(frame)
    ids = frame["item_id"].to_list()
    doc_of = dict(zip(ids, frame["doc_id"].to_list(), strict=True))
    time_of = dict(zip(ids, times.tolist(), strict=True))
    keeper_of = dict(zip(ids, frame["cluster_keeper"].to_list(), strict=True))
    neighbours, sims = frame["neighbours"].to_list(), frame["neighbour_sims"].to_list()
    radius = promote.recurrence_radius
    recurrence = []
    for item_id, near, near_sims, own_time in zip(ids, neighbours, sims, times.tolist(), strict=True):
        # Only neighbours within the radius count, and a copy of the same text elsewhere is a
        # duplicate, not the topic coming back.
        close = [
            (n, s)
            for n, s in zip(near, near_sims, strict=True)
            if s >= radius and n in doc_of and keeper_of[n] != keeper_of[item_id]
        ]
        recurrence.append(
            sg.recurrence(
                doc_of[item_id],
                own_time,
                [s for _, s in close],
                [doc_of[n] for n, _ in close],
                [time_of[n] for n, _ in close],
                radius=radius,
            )
        )
    now_days = (now - _EPOCH).total_seconds() / _DAY
    columns: dict[str, Any] = {
        "recurrence": [r.value for r in recurrence],
        "recurrence_docs": [r.other_documents for r in recurrence],
        "recurrence_span_days": [r.span_days for r in recurrence],
        "recency": sg.recency(now_days - times, promote.recency_half_life_days),
    }
    signals = {name: (columns[name] if name in columns else frame[name].fillna(0.0)) for name in sg.SIGNALS}
    scores = combined_scores(
        {name: np.asarray(values, dtype=np.float64) for name, values in signals.items()}, promote.weights
    )
    last_used = pd.to_datetime(frame["last_used"])
    used_days = ((last_used - pd.Timestamp(_EPOCH)).dt.total_seconds() / _DAY).to_numpy(dtype=np.float64)
    since_use = now_days - np.fmax(first_seen, np.nan_to_num(used_days, nan=-np.inf))
    age_decay = 0.5 ** (np.maximum(now_days - first_seen, 0.0) / promote.age_half_life_days)
    recall = scores * age_decay * 0.5 ** (np.maximum(since_use, 0.0) / promote.unused_half_life_days)
    ages = now_days - times
    own_texts = _own_texts(frame)
    own_of = dict(zip(ids, own_texts.tolist(), strict=True))
    names = [a.name for a in config.adapters]
    decisions = [
        decide_tier(
            n_chars=int(n_chars),
            keeper=keeper,
            item_id=item_id,
            exact_duplicate=bool(exact),
            has_vector=bool(has_vector),
            score=float(score),
            routes=json.loads(routes or "{}") if score >= promote.lora_threshold else {},
            config=promote,
            adapter_names=names,
            age_days=float(age),
            recall_score=float(recalled),
            own_chars=own_content_chars(own) if score >= promote.lora_threshold else None,
        )
        for n_chars, keeper, item_id, exact, has_vector, score, routes, age, recalled, own in zip(
            frame["n_chars"],
            frame["cluster_keeper"],
            frame["item_id"],
            frame["exact_duplicate"],
            frame["has_vector"],
            scores,
            frame["routes"],
            ages,
            recall,
            own_texts,
            strict=True,
        )
    ]
    return {
        **columns,
        "score": scores,
        "recall_score": recall,
        "superseded_by": _superseded_by(ids, neighbours, sims, time_of, keeper_of, own_of, promote),
        "tier": [d.label for d in decisions],
        "tier_base": [d.tier.value for d in decisions],
        "adapters": [list(d.adapters) for d in decisions],
        "tier_rule": [d.rule for d in decisions],
    }


def _superseded_by(ids, neighbours, sims, time_of: dict, keeper_of: dict, own_of: dict, promote) -> list[str]:
    """For each item, the latest later item restating its view, or ''.

    A restatement is a later neighbour at cosine >= ``restate_similarity`` whose own text (the
    user's turns, or the section) shares at least a third of the smaller one's word stems: the
    vectors say "same topic", the words say "same point" (an English-only embedder puts most
    Russian texts close together, so cosine alone links unrelated ones). Both stay in memory;
    recall prefers the restatement, so the user's current view wins. Copies of one text are
    duplicates (discard), not restatements; chit-chat restates nothing.
    """
    from memory_pipeline.index.fts import stem_for_fts

    stems: dict[str, set[str]] = {}

    def stems_of(item_id: str) -> set[str]:
        if item_id not in stems:
            text = own_of.get(item_id) or ""
            stems[item_id] = (
                set(stem_for_fts(text).split()) if own_content_chars(text) >= promote.lora_min_own_chars else set()
            )
        return stems[item_id]

    def same_point(a: str, b: str) -> bool:
        first, second = stems_of(a), stems_of(b)
        return bool(first and second) and len(first & second) >= _RESTATE_OVERLAP * min(len(first), len(second))

    result = []
    for item_id, near, near_sims in zip(ids, neighbours, sims, strict=True):
        later = [
            n
            for n, sim in zip(near, near_sims, strict=True)
            if sim >= promote.restate_similarity
            and n in time_of
            and time_of[n] > time_of[item_id]
            and keeper_of[n] != keeper_of[item_id]
            and same_point(item_id, n)
        ]
        result.append(max(later, key=lambda n: (time_of[n], n)) if later else "")
    return result


# Reports


def _brief(row: pd.Series) -> ItemBrief:
    return ItemBrief(
        item_id=row["item_id"],
        doc_id=row["doc_id"],
        kind=row["kind"],
        title=row["title"],
        unit=ItemUnit.model_validate_json(row["unit"]),
        created_at=stored_time(row["created_at"]) or stored_time(row["first_seen"]),
        tier=row["tier"],
        tier_rule=row["tier_rule"],
        score=round(float(row["score"]), 4),
        signals={name: round(float(row[name]), 4) for name in sg.SIGNALS},
        preview=one_line(row["text"], 160),
    )


def _summary(frame: pd.DataFrame, config: Config) -> dict[str, Any]:
    """Where the items landed: counts per tier and adapter, the score histogram, the top and bottom items."""
    counts, edges = np.histogram(frame["score"].to_numpy(dtype=np.float64), bins=_HISTOGRAM_BINS, range=(0.0, 1.0))
    ranked = frame[frame["tier_base"] != Tier.DISCARD.value].sort_values(["score", "item_id"], ascending=[False, True])
    return {
        "tiers": {t.value: int((frame["tier_base"] == t.value).sum()) for t in Tier},
        "adapters": {a.name: int(sum(a.name in adapters for adapters in frame["adapters"])) for a in config.adapters},
        "histogram": [
            HistogramBin(lo=round(float(edges[i]), 3), hi=round(float(edges[i + 1]), 3), count=int(c))
            for i, c in enumerate(counts)
        ],
        "top": [_brief(row) for _, row in ranked.head(_BRIEFS).iterrows()],
        "bottom": [_brief(row) for _, row in ranked.tail(_BRIEFS).iloc[::-1].iterrows()],
    }
