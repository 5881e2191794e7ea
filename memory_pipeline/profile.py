"""The user's self-description (ChatGPT custom instructions, Claude project instructions and memory) as
the pipeline uses it: always taught to the ``core`` adapter, and the proxy's default system prompt.

Ingestion stores each profile as a document of kind ``profile`` (see ``sources/profile.py``), indexed
and searched like any other. Scoring would judge it like any section and might leave it out, yet it
is the most concentrated statement of the user's worldview there is, so the ``core`` training set
takes every profile whatever its score, and :func:`latest_profile` hands the newest account-wide one
to whoever builds a global system prompt.
"""

from __future__ import annotations

from datetime import datetime

from memory_pipeline.config import Config
from memory_pipeline.records import Document, Kind
from memory_pipeline.sources.profile import GLOBAL_SCOPE
from memory_pipeline.timeutil import naive_utc


def profile_documents(config: Config) -> list[Document]:
    """Every stored profile document, newest first (undated ones last)."""
    from memory_pipeline.ingest.docstore import DocumentStore

    return sorted(DocumentStore(config.documents_dir).iter_documents(Kind.PROFILE), key=_updated, reverse=True)


def latest_profile(config: Config) -> str | None:
    """The newest account-wide profile as a system prompt, or None when no export carried one.

    For the proxy's default global system prompt: what the user says about himself and how he
    wants to be answered, in his own words, introduced for the model. Claude's memory of him is
    used only where he wrote nothing himself, and introduced as such.
    """
    profiles = [d for d in profile_documents(config) if d.metadata.get("scope") == GLOBAL_SCOPE]
    if not profiles:
        return None
    newest = next((d for d in profiles if d.metadata.get("written_by") == "user"), profiles[0]).metadata
    about = "About the user, in their own words" if newest.get("written_by") == "user" else "About the user"
    parts = [
        f"{about}:\n{newest['about_user']}" if newest.get("about_user") else "",
        f"How the user wants you to answer:\n{newest['about_model']}" if newest.get("about_model") else "",
    ]
    return "\n\n".join(p for p in parts if p) or None


def profile_assignments(config: Config, known: set[str]) -> list:
    """Every item of every stored profile, promoted to ``core`` (those not among ``known`` item ids).

    The items are the ones scoring builds from the profile (a section each), so a profile item
    that scoring already promoted to ``core`` is not taken twice.
    """
    from memory_pipeline.scoring.assignments import ItemAssignment
    from memory_pipeline.scoring.items import build_items

    return [
        ItemAssignment(
            item_id=item.item_id,
            doc_id=item.doc_id,
            kind=Kind.PROFILE.value,
            title=item.title,
            source_path=item.source_path,
            unit=item.unit,
            score=1.0,
            tier="lora:core",
            adapters=["core"],
            created_at=item.created_at,
            text=item.text,
            user_text=item.text,
        )
        for doc in profile_documents(config)
        for item in build_items(doc, [])
        if item.item_id not in known
    ]


def _updated(doc: Document) -> datetime:
    stamp = doc.updated_at or doc.created_at
    return naive_utc(stamp) or datetime.min
