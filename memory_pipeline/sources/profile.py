"""What the user wrote about himself, kept as memory: ChatGPT custom instructions, Claude project instructions.

ChatGPT stores the "About me" profile and the "how should ChatGPT respond" instructions as a
hidden message at the start of every conversation since the feature existed; for this user they
are the most concentrated statement of his worldview. Each becomes one document of kind
``profile`` (a section per field), not one per conversation: the export repeats it in thousands
of conversations, and the newest text wins (an edited profile replaces the old one; its date is
the conversation's it was last seen in). Claude exports carry no "About me": a project's custom
instructions (``prompt_template`` in ``projects.json``) become a profile under the project's name,
and Claude's own memory of the user (``memories.json``: an account-wide summary and one per
project) becomes a profile marked as written by Claude, not by the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from memory_pipeline.ingest.text_repair import repair_many
from memory_pipeline.records import Document, Kind, Section, stable_id

GLOBAL_SCOPE = "global"
_FENCED = re.compile(r"```(?:\w+)?\n?(.*?)```", re.S)
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ProfileText:
    """One sighting of a profile: its texts and the conversation (or project) it was seen in."""

    provider: str
    scope: str
    about_user: str
    about_model: str
    created_at: datetime | None
    updated_at: datetime | None
    seen_in: str | None
    source_hash: str
    title: str = ""
    written_by: str = "user"


class ProfileCollector:
    """Keeps the newest sighting of each (provider, scope) profile while an export streams by."""

    def __init__(self) -> None:
        self._newest: dict[tuple[str, str], ProfileText] = {}

    def offer(self, sighting: ProfileText) -> None:
        if not (sighting.about_user.strip() or sighting.about_model.strip()):
            return
        key = (sighting.provider, sighting.scope)
        current = self._newest.get(key)
        if current is None or _when(sighting) >= _when(current):
            self._newest[key] = sighting

    def documents(self, path: Path) -> list[Document]:
        return [profile_document(s, path) for _, s in sorted(self._newest.items())]


def _when(sighting: ProfileText) -> datetime:
    stamp = sighting.updated_at or sighting.created_at
    if stamp is None:
        return _NEVER
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def profile_document(sighting: ProfileText, path: Path) -> Document:
    """The profile as a document of kind ``profile``: a section per field, in the user's voice
    (or Claude's, for its memory); one stable id per provider and scope, so a newer export's
    profile replaces the older one."""
    (about_user, about_model, title), report = repair_many(
        [sighting.about_user.strip(), sighting.about_model.strip(), sighting.title.strip()]
    )
    if not (about_user or about_model):
        raise ValueError(f"{sighting.provider} profile {sighting.scope!r}: no text")
    global_scope = sighting.scope == GLOBAL_SCOPE
    user_heading = "About me" if sighting.written_by == "user" else "What Claude remembers about me"
    model_heading = "How I want answers" if global_scope else "Instructions"
    sections = [
        Section(heading_path=[heading], text=text)
        for heading, text in ((user_heading, about_user), (model_heading, about_model))
        if text
    ]
    metadata = {"provider": sighting.provider, "scope": sighting.scope, "written_by": sighting.written_by}
    metadata |= {k: v for k, v in (("about_user", about_user), ("about_model", about_model)) if v}
    if sighting.seen_in:
        metadata["seen_in"] = sighting.seen_in
    fmt = f"{sighting.provider}_profile"
    return Document(
        doc_id=stable_id(fmt, sighting.scope),
        kind=Kind.PROFILE,
        format=fmt,
        title=f"{title or user_heading} ({sighting.provider})",
        source_path=str(path),
        source_hash=sighting.source_hash,
        external_id=f"{sighting.provider}:{sighting.scope}",
        created_at=sighting.created_at,
        updated_at=sighting.updated_at,
        sections=sections,
        repair=report,
        metadata=metadata,
    ).finalize()


def instruction_text(value: object) -> str:
    """A profile field's text: ChatGPT wraps it in boilerplate with the user's words in a fence."""
    if not isinstance(value, str):
        return ""
    fenced = _FENCED.findall(value)
    return (fenced[-1] if fenced else value).strip()
