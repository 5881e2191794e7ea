"""The user's self-description (ChatGPT custom instructions, Claude project instructions) as the
pipeline uses it: always taught to the ``core`` adapter, and the proxy's default system prompt.

Ingestion stores each profile as a one-turn dialogue of format ``profile`` (see
``sources/profile.py``). Scoring would judge it like any exchange and might leave it out, yet it
is the most concentrated statement of the user's worldview there is, so the ``core`` training
set takes every profile whatever its score, and :func:`latest_profile` hands the newest
account-wide one to whoever builds a global system prompt.
"""

from __future__ import annotations

from datetime import datetime

from memory_pipeline.config import Config
from memory_pipeline.records import Document, Kind, stable_id
from memory_pipeline.sources.profile import FORMAT, GLOBAL_SCOPE


def profile_documents(config: Config) -> list[Document]:
    """Every stored profile document, newest first."""
    from memory_pipeline.ingest.docstore import DocumentStore

    store = DocumentStore(config.documents_dir)
    ids = [row["doc_id"] for row in store.summary_rows(Kind.DIALOGUE) if row["format"] == FORMAT]
    documents = list(store.get_many(ids)) if ids else []
    return sorted(documents, key=_updated, reverse=True)


def latest_profile(config: Config) -> str | None:
    """The newest account-wide profile as a system prompt, or None when no export carried one.

    For the proxy's default global system prompt: what the user says about himself and how he
    wants to be answered, in his own words, introduced for the model.
    """
    profiles = [d for d in profile_documents(config) if d.metadata.get("scope") == GLOBAL_SCOPE]
    if not profiles:
        return None
    newest = profiles[0].metadata
    parts = [
        f"About the user, in their own words:\n{newest['about_user']}" if newest.get("about_user") else "",
        f"How the user wants you to answer:\n{newest['about_model']}" if newest.get("about_model") else "",
    ]
    return "\n\n".join(p for p in parts if p) or None


def profile_assignments(config: Config, known: set[str]) -> list:
    """Every stored profile as an item promoted to ``core`` (those not among ``known`` item ids).

    The item id is the one scoring gives the profile's only exchange, so a profile that scoring
    already promoted is not taken twice.
    """
    from memory_pipeline.scoring.items import ItemUnit
    from memory_pipeline.scoring.assignments import ItemAssignment

    unit = ItemUnit(turn_index=0)
    assignments = []
    for doc in profile_documents(config):
        item_id = stable_id(doc.doc_id, unit.key())
        if item_id in known:
            continue
        text = doc.turns[0].text
        assignments.append(
            ItemAssignment(
                item_id=item_id,
                doc_id=doc.doc_id,
                kind=Kind.DIALOGUE.value,
                title=doc.title,
                source_path=doc.source_path,
                unit=unit,
                score=1.0,
                tier="lora:core",
                adapters=["core"],
                created_at=doc.updated_at or doc.created_at,
                text=text,
                user_text=text,
            )
        )
    return assignments


def _updated(doc: Document) -> datetime:
    stamp = doc.updated_at or doc.created_at
    return stamp.replace(tzinfo=None) if stamp else datetime.min
