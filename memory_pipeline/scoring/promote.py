"""The memory loop's scoring run: build items, update their signals incrementally, tier and route.

A run reads only what changed: documents whose content or chunks changed are rebuilt into
items; items whose text and chunks are unchanged keep their stored signals. Signals that
depend on other items are updated where new or removed items touch them: novelty of later
items, neighbour lists (recurrence), duplicate clusters, search hits. Recency, recurrence,
the combined score and the tier are recomputed for every item from stored values, which is
also all ``retier`` does when only the config changed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.display import one_line, position_of
from memory_pipeline.errors import StoreError
from memory_pipeline.records import Kind, sha256_text
from memory_pipeline.scoring import signals as sg
from memory_pipeline.scoring.items import Item, ItemUnit, build_items, mean_vector, naive_utc
from memory_pipeline.scoring.routing import AdapterProfile, PassageEmbedder, build_profiles, profile_texts, profiles_fingerprint, route_item
from memory_pipeline.scoring.store import COLUMNS, ScoreState, ScoreStore, scores_dir
from memory_pipeline.scoring.tiers import Tier, contributions, combined_scores, decide_tier, own_content_chars, validate_weights

_EPOCH = datetime(1970, 1, 1)
_DAY = 86400.0
_HISTOGRAM_BINS = 10
_BRIEFS = 5
_SAMPLES = 5
_LIST_SIGNAL_COLUMNS = ("markers", "tags", "quality_reasons")
_RESTATE_OVERLAP = 1 / 3


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
    items_rescored: int = Field(0, description="unchanged items whose dependent signals (novelty, neighbours, duplicates, usage, routes) changed")
    documents_read: int = 0
    signals_computed: dict[str, int] = Field(default_factory=dict, description="items each signal was computed for (recency is live: all)")
    texts_embedded: int = Field(0, description="adapter description/example texts embedded (items are never embedded here)")
    tiers: dict[str, int] = Field(default_factory=dict)
    tier_changes: int = Field(0, description="items whose tier changed this run (recorded in the tier history)")
    adapters: dict[str, int] = Field(default_factory=dict)
    histogram: list[HistogramBin] = Field(default_factory=list)
    top: list[ItemBrief] = Field(default_factory=list)
    bottom: list[ItemBrief] = Field(default_factory=list)
    seconds: float = 0.0


class SignalExplanation(BaseModel):
    name: str
    value: float
    weight: float
    contribution: float
    reason: str


class Explanation(BaseModel):
    """Why an item has its score and tier, signal by signal."""

    item_id: str
    doc_id: str
    kind: str
    title: str
    unit: ItemUnit
    created_at: datetime | None
    score: float
    tier: str
    adapters: list[str]
    tier_rule: str
    signals: list[SignalExplanation]
    routes: dict[str, dict]
    preview: str
    recall_score: float = Field(0.0, description="the score decayed by age in the memory and time since last use: recall's prior")
    superseded_by: str = Field("", description="a later item restating this view on the same topic: preferred in recall")
    restated_from: list[str] = Field(default_factory=list, description="earlier items this one restates")
    history: list[dict] = Field(default_factory=list, description="tier changes, oldest first: at, from_tier, to_tier, reason")


class ItemAssignment(BaseModel):
    """An item as the dataset stage sees it: where it is from, its tier and adapters, its texts."""

    item_id: str
    doc_id: str
    kind: str
    title: str
    source_path: str
    unit: ItemUnit
    score: float
    tier: str
    adapters: list[str]
    created_at: datetime | None
    text: str
    user_text: str = ""
    answer_text: str = ""


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
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.index.embedding import load_embedder

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
    report.tier_changes = store.record_tier_changes(_tiers_of(previous), state.frame, naive_utc(now) or datetime.now(UTC).replace(tzinfo=None))
    report.seconds = round(time.perf_counter() - started, 3)
    store.save_report(report.model_dump(mode="json"))
    say(f"scoring: {report.items_total} items ({report.items_new} new, {report.items_rescored} rescored); tiers {report.tiers}")
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
    report = PromotionReport(model_id=model_id)
    state, flags = _merge(previous, batch, same_model=same_model, now=now)
    state.model_id = model_id
    report.items_total = len(state)
    report.items_new = int(flags.new.sum())
    report.items_changed = int(flags.changed.sum())
    report.items_removed = len(flags.removed_ids)
    report.items_unchanged = report.items_total - report.items_new - report.items_changed

    computed: dict[str, int] = {}
    text_fresh = np.flatnonzero(flags.text_fresh)
    _local_signals(state, text_fresh, config)
    for name in ("density", "importance", "quality"):
        computed[name] = len(text_fresh)
    touched = np.zeros(len(state), dtype=bool)
    computed["importance"] += _importance_if_markers_changed(state, flags, touched, config)
    computed["novelty"], computed["recurrence"] = _vector_signals(state, flags, touched)
    computed["redundancy"] = _redundancy(state, flags, touched, config)
    computed["usage"] = _usage(state, flags, touched, hits_by_chunk)
    _last_used(state, last_hit_by_chunk or {})
    computed["routes"] = _routes(state, flags, touched, config, profiles, profiles_key)
    computed["recency"] = len(state)
    report.signals_computed = computed
    report.items_rescored = int((touched & ~(flags.new | flags.changed)).sum())
    _finish(state, config, now)
    _summarize(report, state, config)
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
    _finish(state, config, at)
    store.save(state)
    report = PromotionReport(model_id=state.model_id, items_total=len(state), items_unchanged=len(state))
    report.tier_changes = store.record_tier_changes(before, state.frame, at)
    report.signals_computed = {"recency": len(state)}
    _summarize(report, state, config)
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


def _adapter_profiles(config: Config, embedder: PassageEmbedder, store: ScoreStore) -> tuple[list[AdapterProfile], str, int]:
    """Adapter profiles; their texts are embedded once per model and cached beside the scores."""
    cached = store.load_profile_vectors(embedder.model_id)
    texts = sorted({t for a in config.adapters for t in profile_texts(a)})
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
        vector_same = old is not None and same_model and base["vector_key"] == row["vector_key"] and bool(base["has_vector"]) == (vector is not None)
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
    kept_vectors = previous.vectors[keep_mask] if previous.vectors.shape[1] == dim else np.zeros((int(keep_mask.sum()), dim), np.float32)
    state = ScoreState(
        merged,
        np.vstack([kept_vectors, *(v[None, :] for v in vectors)]).astype(np.float32) if vectors else kept_vectors.astype(np.float32),
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


def _local_signals(state: ScoreState, rows: np.ndarray, config: Config) -> None:
    """Signals of the item's own text: density, importance, quality; fingerprint and MinHash."""
    if not len(rows):
        return
    frame = state.frame
    updates: dict[str, list] = {c: [] for c in ("density", "compress_ratio", "token_entropy", "n_chars", "importance", "markers", "tags", "quality", "quality_reasons", "code_fraction", "fingerprint")}
    texts = frame["text"].to_numpy(dtype=object)[rows]
    kinds = frame["kind"].to_numpy(dtype=object)[rows]
    user_texts = frame["user_text"].fillna("").to_numpy(dtype=object)[rows]
    answer_texts = frame["answer_text"].fillna("").to_numpy(dtype=object)[rows]
    for text, kind, user_text, answer_text in zip(texts, kinds, user_texts, answer_texts, strict=True):
        density = sg.information_density(text)
        importance = sg.explicit_importance(user_text if kind == Kind.DIALOGUE.value else text, config.promote.importance_markers)
        quality = sg.answer_quality(text, answer_text=answer_text)
        updates["density"].append(density.value)
        updates["compress_ratio"].append(density.compress_ratio)
        updates["token_entropy"].append(density.token_entropy)
        updates["n_chars"].append(density.n_chars)
        updates["importance"].append(importance.value)
        updates["markers"].append(list(importance.markers))
        updates["tags"].append(list(importance.tags))
        updates["quality"].append(quality.value)
        updates["quality_reasons"].append(list(quality.reasons))
        updates["code_fraction"].append(quality.code_fraction)
        updates["fingerprint"].append(sg.text_fingerprint(text))
    for column, values in updates.items():
        merged = frame[column].to_list()
        for row, value in zip(rows, values, strict=True):
            merged[row] = value
        frame[column] = pd.Series(merged, dtype=object) if column in _LIST_SIGNAL_COLUMNS else merged
    state.signatures[rows] = sg.minhash_signatures(list(texts))


def _importance_if_markers_changed(state: ScoreState, flags: _Flags, touched: np.ndarray, config: Config) -> int:
    """When the configured markers change, importance is recomputed for the items not just scored."""
    markers = tuple(config.promote.importance_markers)
    key = sha256_text("\x1f".join(markers))[:32]
    previous_key, state.markers_key = state.markers_key, key
    rows = np.flatnonzero(~flags.text_fresh)
    if previous_key in ("", key) or not len(rows):
        return 0
    frame = state.frame
    texts = frame["text"].to_numpy(dtype=object)
    user_texts = frame["user_text"].fillna("").to_numpy(dtype=object)
    kinds = frame["kind"].to_numpy(dtype=object)
    found = [sg.explicit_importance(user_texts[i] if kinds[i] == Kind.DIALOGUE.value else texts[i], markers) for i in rows]
    values, hits = frame["importance"].to_list(), frame["markers"].to_list()
    for i, importance in zip(rows, found, strict=True):
        values[i], hits[i] = importance.value, list(importance.markers)
    frame["importance"] = values
    frame["markers"] = pd.Series(hits, dtype=object)
    touched[rows] = True
    return len(rows)


def _times(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(effective time, first seen) in days: effective = created_at, else when first seen."""
    created = pd.to_datetime(frame["created_at"])
    first = pd.to_datetime(frame["first_seen"])
    effective = created.fillna(first)
    to_days = lambda s: (s - pd.Timestamp(_EPOCH)).dt.total_seconds().to_numpy(dtype=np.float64) / _DAY  # noqa: E731
    return to_days(effective), to_days(first)


def _vector_signals(state: ScoreState, flags: _Flags, touched: np.ndarray) -> tuple[int, int]:
    """Novelty and neighbour lists: full for fresh and invalidated rows, merged updates for the rest.

    A row is invalidated when its nearest predecessor or one of its neighbours was removed or
    changed its vector; other stored rows only gain what the fresh items bring.
    """
    frame = state.frame
    n = len(frame)
    if n == 0:
        return 0, 0
    has_vector = frame["has_vector"].to_numpy(dtype=bool)
    ids = frame["item_id"].to_numpy(dtype=object)
    times, first_seen = _times(frame)
    learned = frame["tier_base"].fillna("").to_numpy(dtype=object) == Tier.LORA.value
    predecessors = sg.Predecessors(sg.rank_order(times, ids), learned, first_seen)
    neighbours = [_ids(v) for v in frame["neighbours"].to_list()]
    sims = [_ids(v) for v in frame["neighbour_sims"].to_list()]
    novelty_sim = frame["novelty_sim"].fillna(0.0).to_numpy(dtype=np.float64).copy()
    nearest = frame["novelty_neighbour"].fillna("").to_numpy(dtype=object).copy()
    invalid = flags.invalidated_ids
    stale = np.zeros(n, dtype=bool)
    if invalid:
        candidates = np.flatnonzero(has_vector & ~flags.vector_fresh)
        stale[candidates] = [nearest[i] in invalid or not invalid.isdisjoint(neighbours[i]) for i in candidates]
    full = np.flatnonzero(flags.vector_fresh | stale)
    if len(full):
        result = sg.similarities(full, state.vectors, predecessors)
        for j, row in enumerate(full):
            novelty_sim[row] = float(result.max_sim[j])
            nearest[row] = ids[result.argmax[j]] if result.argmax[j] >= 0 else ""
            neighbours[row] = list(ids[result.neighbour_idx[j]])
            sims[row] = result.neighbour_sim[j].tolist()
    touched |= stale
    fresh = np.flatnonzero(flags.vector_fresh)
    others = np.flatnonzero(has_vector & ~flags.vector_fresh & ~stale)
    updated_novelty = updated_lists = 0
    if len(fresh) and len(others):
        result = sg.similarities(others, state.vectors, predecessors, columns=fresh)
        for j, row in enumerate(others):
            if result.argmax[j] >= 0 and result.max_sim[j] > novelty_sim[row]:
                novelty_sim[row] = float(result.max_sim[j])
                nearest[row] = ids[result.argmax[j]]
                updated_novelty += 1
                touched[row] = True
            if len(result.neighbour_idx[j]):
                merged = dict(zip(neighbours[row], sims[row], strict=True))
                merged.update(zip(ids[result.neighbour_idx[j]], result.neighbour_sim[j].tolist(), strict=True))
                top = sorted(merged.items(), key=lambda kv: -kv[1])[: sg.NEIGHBOURS_K]
                neighbours[row], sims[row] = [k for k, _ in top], [v for _, v in top]
                updated_lists += 1
                touched[row] = True
    for row in np.flatnonzero(~has_vector):
        novelty_sim[row], nearest[row], neighbours[row], sims[row] = 0.0, "", [], []
    frame["novelty_sim"] = novelty_sim
    frame["novelty_neighbour"] = nearest
    frame["novelty"] = np.where(has_vector, sg.novelty(novelty_sim), 0.0)
    frame["neighbours"] = pd.Series(neighbours, dtype=object)
    frame["neighbour_sims"] = pd.Series(sims, dtype=object)
    return len(full) + updated_novelty, len(full) + updated_lists


def _ids(values) -> list:
    """A stored list column's value as a Python list (Parquet gives arrays, new rows lists or None)."""
    return [] if values is None else list(values)


def _redundancy(state: ScoreState, flags: _Flags, touched: np.ndarray, config: Config) -> int:
    """Duplicate clusters over all items (cheap: stored signatures); counts items whose value moved."""
    frame = state.frame
    if not len(frame):
        return 0
    times, _ = _times(frame)
    ids = frame["item_id"].to_numpy(dtype=object)
    result = sg.redundancy(frame["fingerprint"].fillna("").tolist(), state.signatures, sg.rank_order(times, ids), threshold=config.promote.near_duplicate_threshold)
    keeper = ids[result.keeper]
    before_keeper = frame["cluster_keeper"].fillna("").to_numpy(dtype=object)
    before_size = frame["cluster_size"].fillna(0).to_numpy(dtype=np.int64)
    moved = (keeper != before_keeper) | (result.cluster_size != before_size)
    fresh = flags.new | flags.changed
    touched |= moved & ~fresh
    frame["redundancy"] = result.value
    frame["cluster_keeper"] = keeper
    frame["cluster_size"] = result.cluster_size
    frame["exact_duplicate"] = result.exact
    return int((moved | fresh).sum())


def _usage(state: ScoreState, flags: _Flags, touched: np.ndarray, hits_by_chunk: dict[str, int]) -> int:
    frame = state.frame
    hits = np.array([sum(hits_by_chunk.get(c, 0) for c in (ids if ids is not None else ())) for ids in frame["chunk_ids"]], dtype=np.int64)
    moved = hits != flags.hits_before
    touched |= moved & ~(flags.new | flags.changed)
    frame["hits"] = hits
    frame["usage"] = [sg.usage(int(h)) for h in hits]
    return int(moved.sum())


def _last_used(state: ScoreState, last_hit_by_chunk: dict[str, float]) -> None:
    """When a search last returned one of the item's chunks (unix seconds in the log): disuse decays recall."""
    frame = state.frame
    if not len(frame):
        return
    latest = [max((last_hit_by_chunk.get(c, 0.0) for c in (ids if ids is not None else ())), default=0.0) for ids in frame["chunk_ids"]]
    used = pd.to_datetime(pd.Series(latest, dtype="float64").where(lambda v: v > 0), unit="s")
    frame["last_used"] = used.fillna(pd.to_datetime(frame["last_used"])).astype("datetime64[us]").to_numpy()


def _routes(state: ScoreState, flags: _Flags, touched: np.ndarray, config: Config, profiles: Sequence[AdapterProfile], key: str) -> int:
    """Route scores for items whose text or vector changed, or for all when the adapters changed."""
    frame = state.frame
    key = sha256_text(f"{key}\x1f{config.promote.core_min_user_chars}")[:32]
    everything = key != state.profiles_key
    rows = np.flatnonzero(np.ones(len(frame), dtype=bool) if everything else (flags.text_fresh | flags.vector_fresh))
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
                vector=state.vectors[row] if has_vector[row] else None,
                profiles=profiles,
                config=config.promote,
            ),
            ensure_ascii=False,
        )
    if everything:
        touched |= ~(flags.new | flags.changed)
    frame["routes"] = routes
    state.profiles_key = key
    return len(rows)


def _finish(state: ScoreState, config: Config, now: datetime) -> None:
    """Live signals (recurrence, recency), combined score and tier of every item, from stored values."""
    frame = state.frame
    if not len(frame):
        return
    promote = config.promote
    times, _ = _times(frame)
    ids = frame["item_id"].to_list()
    doc_of = dict(zip(ids, frame["doc_id"].to_list(), strict=True))
    time_of = dict(zip(ids, times.tolist(), strict=True))
    keeper_of = dict(zip(ids, frame["cluster_keeper"].to_list(), strict=True))
    radius = promote.recurrence_radius
    recurrence = []
    rows = zip(ids, frame["neighbours"].to_list(), frame["neighbour_sims"].to_list(), times.tolist(), strict=True)
    for item_id, neighbours, sims, own_time in rows:
        # Only neighbours within the radius count, and a copy of the same text elsewhere is a
        # duplicate, not the topic coming back.
        close = [(n, s) for n, s in zip(_ids(neighbours), _ids(sims), strict=True) if s >= radius and n in doc_of and keeper_of[n] != keeper_of[item_id]]
        recurrence.append(
            sg.recurrence(doc_of[item_id], own_time, [s for _, s in close], [doc_of[n] for n, _ in close], [time_of[n] for n, _ in close], radius=radius)
        )
    frame["recurrence"] = [r.value for r in recurrence]
    frame["recurrence_docs"] = [r.other_documents for r in recurrence]
    frame["recurrence_span_days"] = [r.span_days for r in recurrence]
    now_days = (now - _EPOCH).total_seconds() / _DAY
    frame["recency"] = sg.recency(now_days - times, promote.recency_half_life_days)
    scores = combined_scores({name: frame[name].fillna(0.0).to_numpy() for name in sg.SIGNALS}, promote.weights)
    frame["score"] = scores
    _, first_seen = _times(frame)
    last_used = pd.to_datetime(frame["last_used"])
    used_days = ((last_used - pd.Timestamp(_EPOCH)).dt.total_seconds() / _DAY).to_numpy(dtype=np.float64)
    since_use = now_days - np.fmax(first_seen, np.nan_to_num(used_days, nan=-np.inf))
    age_decay = 0.5 ** (np.maximum(now_days - first_seen, 0.0) / promote.age_half_life_days)
    recall = scores * age_decay * 0.5 ** (np.maximum(since_use, 0.0) / promote.unused_half_life_days)
    frame["recall_score"] = recall
    ages = now_days - times
    dialogue = frame["kind"].to_numpy(dtype=object) == Kind.DIALOGUE.value
    own_texts = np.where(dialogue, frame["user_text"].fillna("").to_numpy(dtype=object), frame["text"].to_numpy(dtype=object))
    own_of = dict(zip(ids, own_texts.tolist(), strict=True))
    neighbours, sims = frame["neighbours"].to_list(), frame["neighbour_sims"].to_list()
    frame["superseded_by"] = _superseded_by(ids, neighbours, sims, time_of, keeper_of, own_of, promote)
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
    frame["tier"] = [d.label for d in decisions]
    frame["tier_base"] = [d.tier.value for d in decisions]
    frame["adapters"] = pd.Series([list(d.adapters) for d in decisions], dtype=object)
    frame["tier_rule"] = [d.rule for d in decisions]


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
            stems[item_id] = set(stem_for_fts(text).split()) if own_content_chars(text) >= promote.lora_min_own_chars else set()
        return stems[item_id]

    def same_point(a: str, b: str) -> bool:
        first, second = stems_of(a), stems_of(b)
        return bool(first and second) and len(first & second) >= _RESTATE_OVERLAP * min(len(first), len(second))

    result = []
    for item_id, near, near_sims in zip(ids, neighbours, sims, strict=True):
        later = [
            n
            for n, sim in zip(_ids(near), _ids(near_sims), strict=True)
            if sim >= promote.restate_similarity
            and n in time_of
            and time_of[n] > time_of[item_id]
            and keeper_of[n] != keeper_of[item_id]
            and same_point(item_id, n)
        ]
        result.append(max(later, key=lambda n: (time_of[n], n)) if later else "")
    return result


# Reports and readers


def _brief(row: pd.Series) -> ItemBrief:
    return ItemBrief(
        item_id=row["item_id"],
        doc_id=row["doc_id"],
        kind=row["kind"],
        title=row["title"],
        unit=ItemUnit.model_validate_json(row["unit"]),
        created_at=_timestamp(row["created_at"]) or _timestamp(row["first_seen"]),
        tier=row["tier"],
        tier_rule=row["tier_rule"],
        score=round(float(row["score"]), 4),
        signals={name: round(float(row[name]), 4) for name in sg.SIGNALS},
        preview=one_line(row["text"], 160),
    )


def _summarize(report: PromotionReport, state: ScoreState, config: Config) -> None:
    frame = state.frame
    report.tiers = {t.value: int((frame["tier_base"] == t.value).sum()) for t in Tier}
    report.adapters = {a.name: int(sum(a.name in (x if x is not None else ()) for x in frame["adapters"])) for a in config.adapters}
    counts, edges = np.histogram(frame["score"].to_numpy(dtype=np.float64), bins=_HISTOGRAM_BINS, range=(0.0, 1.0))
    report.histogram = [HistogramBin(lo=round(float(edges[i]), 3), hi=round(float(edges[i + 1]), 3), count=int(c)) for i, c in enumerate(counts)]
    ranked = frame[frame["tier_base"] != Tier.DISCARD.value].sort_values(["score", "item_id"], ascending=[False, True])
    report.top = [_brief(row) for _, row in ranked.head(_BRIEFS).iterrows()]
    report.bottom = [_brief(row) for _, row in ranked.tail(_BRIEFS).iloc[::-1].iterrows()]


def _frame(config: Config, columns: list[str]) -> pd.DataFrame:
    return ScoreStore(scores_dir(config)).load_frame(columns)


def explain_item(config: Config, item_id: str) -> Explanation:
    """Each signal's value, weight and contribution with a one-line reason, and the tier rule that decided."""
    match = ScoreStore(scores_dir(config)).load_frame(item_ids=[item_id])
    if match.empty:
        raise StoreError(f"{scores_dir(config)}: no scored item {item_id!r}")
    row = match.iloc[0]
    weights = validate_weights(config.promote.weights)
    values = {name: float(row[name]) for name in sg.SIGNALS}
    parts = contributions(values, weights)
    return Explanation(
        item_id=item_id,
        doc_id=row["doc_id"],
        kind=row["kind"],
        title=row["title"],
        unit=ItemUnit.model_validate_json(row["unit"]),
        created_at=_timestamp(row["created_at"]),
        score=float(row["score"]),
        tier=row["tier"],
        adapters=list(row["adapters"] if row["adapters"] is not None else []),
        tier_rule=row["tier_rule"],
        signals=[
            SignalExplanation(name=name, value=round(values[name], 4), weight=weights[name], contribution=round(parts[name], 4), reason=_reason(name, row, config))
            for name in sg.SIGNALS
        ],
        routes=json.loads(row["routes"] or "{}"),
        preview=one_line(row["text"], 400),
        recall_score=float(row["recall_score"]) if pd.notna(row["recall_score"]) else 0.0,
        superseded_by=row["superseded_by"] or "",
        restated_from=_restated_from(config, item_id),
        history=[
            {"at": _timestamp(h["at"]), "from_tier": h["from_tier"], "to_tier": h["to_tier"], "reason": h["reason"]}
            for h in ScoreStore(scores_dir(config)).load_history(item_id).to_dict("records")
        ],
    )


def _restated_from(config: Config, item_id: str) -> list[str]:
    frame = _frame(config, ["item_id", "superseded_by"])
    return sorted(frame.loc[frame["superseded_by"] == item_id, "item_id"].tolist())


def _reason(name: str, row: pd.Series, config: Config) -> str:
    """One line a person can check against the item."""
    promote = config.promote
    if name == "novelty":
        if not row["has_vector"]:
            return "not indexed yet: unknown"
        if row["novelty_neighbour"]:
            return f"closest earlier (or already learned) item {row['novelty_neighbour']} at cosine {row['novelty_sim']:.2f}"
        return "nothing earlier is similar"
    if name == "redundancy":
        if row["cluster_keeper"] != row["item_id"]:
            what = "exact" if row["exact_duplicate"] else "near"
            return f"{what} duplicate of {row['cluster_keeper']} (cluster of {row['cluster_size']})"
        return f"keeper of a cluster of {row['cluster_size']}" if row["cluster_size"] > 1 else "no duplicates"
    if name == "recurrence":
        if not row["recurrence_docs"]:
            return f"a one-off: no other document within cosine {promote.recurrence_radius}"
        return f"topic returns in {row['recurrence_docs']} other documents over {row['recurrence_span_days']:.0f} days"
    if name == "density":
        return f"{row['n_chars']} chars, compression ratio {row['compress_ratio']:.2f}, word entropy {row['token_entropy']:.2f}"
    if name == "importance":
        markers = list(row["markers"] if row["markers"] is not None else [])
        tags = list(row["tags"] if row["tags"] is not None else [])
        if not markers and not tags:
            return "no importance markers or tags"
        return "; ".join(p for p in (f"markers: {', '.join(markers)}" if markers else "", f"tags: {', '.join('#' + t for t in tags)}" if tags else "") if p)
    if name == "quality":
        reasons = list(row["quality_reasons"] if row["quality_reasons"] is not None else [])
        return ", ".join(reasons) if reasons else "no refusal, truncation or code dump"
    if name == "usage":
        return f"{max(int(row['hits']), 0)} search hits on its chunks"
    created = _timestamp(row["created_at"]) or _timestamp(row["first_seen"])
    return f"from {created:%Y-%m-%d} (half-life {promote.recency_half_life_days:g} days)" if created else "date unknown"


def _timestamp(value) -> datetime | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime()


def tier_summary(config: Config) -> dict:
    """Counts per tier, per tier label and per adapter, with a few sample item ids of each (zeros before the first run).

    ``examples`` describes the same samples for a person: title, date and position in the document.
    """
    if not ScoreStore(scores_dir(config)).exists():
        return {
            "items": 0, "tiers": {t.value: 0 for t in Tier}, "labels": {}, "adapters": {a.name: 0 for a in config.adapters},
            "samples": {}, "examples": {},
        }
    frame = _frame(config, ["item_id", "tier", "tier_base", "adapters", "score", "title", "unit", "created_at", "first_seen"])
    ordered = frame.sort_values(["score", "item_id"], ascending=[False, True])
    per_adapter: dict[str, list[str]] = {a.name: [] for a in config.adapters}
    for item_id, adapters in zip(ordered["item_id"], ordered["adapters"], strict=True):
        for name in adapters if adapters is not None else ():
            per_adapter.setdefault(name, []).append(item_id)
    samples = {
        **{t.value: ordered.loc[ordered["tier_base"] == t.value, "item_id"].head(_SAMPLES).tolist() for t in Tier},
        **{f"lora:{name}": ids[:_SAMPLES] for name, ids in per_adapter.items()},
    }
    rows = ordered.set_index("item_id", drop=False)
    return {
        "items": len(frame),
        "tiers": {t.value: int((frame["tier_base"] == t.value).sum()) for t in Tier},
        "labels": {str(k): int(v) for k, v in frame["tier"].value_counts().items()},
        "adapters": {name: len(ids) for name, ids in per_adapter.items()},
        "samples": samples,
        "examples": {group: [_example(rows.loc[item_id]) for item_id in ids] for group, ids in samples.items()},
    }


def _example(row: pd.Series) -> dict:
    """A sampled item as a person finds it again: title, date, position in its document, score."""
    when = _timestamp(row["created_at"]) or _timestamp(row["first_seen"])
    return {
        "item_id": row["item_id"],
        "title": row["title"],
        "date": when.date().isoformat() if when else None,
        "position": position_of(ItemUnit.model_validate_json(row["unit"])),
        "score": round(float(row["score"]), 4),
    }


def load_assignments(config: Config, *, adapter: str | None = None) -> list[ItemAssignment]:
    """Every scored item (or only those promoted to ``adapter``), oldest first: the dataset stage's input.

    Empty before the first scoring run (nothing is promoted yet); an unknown adapter is a ConfigError.
    """
    if adapter is not None:
        config.adapter(adapter)
    if not ScoreStore(scores_dir(config)).exists():
        return []
    columns = ["item_id", "doc_id", "kind", "title", "source_path", "unit", "score", "tier", "adapters", "created_at", "first_seen", "text", "user_text", "answer_text"]
    frame = _frame(config, columns)
    if adapter is not None:
        frame = frame[[adapter in (a if a is not None else ()) for a in frame["adapters"]]]
    frame = frame.assign(_when=frame["created_at"].fillna(frame["first_seen"])).sort_values(["_when", "item_id"])
    return [
        ItemAssignment(
            item_id=row.item_id,
            doc_id=row.doc_id,
            kind=row.kind,
            title=row.title,
            source_path=row.source_path,
            unit=ItemUnit.model_validate_json(row.unit),
            score=float(row.score),
            tier=row.tier,
            adapters=list(row.adapters if row.adapters is not None else []),
            created_at=_timestamp(row.created_at),
            text=row.text,
            user_text=row.user_text or "",
            answer_text=row.answer_text or "",
        )
        for row in frame.itertuples(index=False)
    ]
