"""What the user wrote about himself, kept as memory: ChatGPT custom instructions, Claude project instructions.

ChatGPT stores the "About me" profile and the "how should ChatGPT respond" instructions as a
hidden message at the start of every conversation since the feature existed; for this user they
are the most concentrated statement of his worldview. Each becomes one *profile* document (a
dialogue of one user turn, format ``profile``, ``metadata["item_kind"] == "profile"``), not one
per conversation: the export repeats it in thousands of conversations, and the newest text wins
(an edited profile replaces the old one; its date is the conversation's it was last seen in).
Claude exports carry no account-wide profile; a project's custom instructions
(``prompt_template``) are the nearest thing and become a profile scoped to that project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from memory_pipeline.records import Document, Turn
from memory_pipeline.sources._dialogue import build_dialogue
from memory_pipeline.ingest.text_repair import repair_many

FORMAT = "profile"
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
    """The profile as a one-turn dialogue in the user's voice; stable id per provider and scope."""
    (about_user, about_model), report = repair_many([sighting.about_user.strip(), sighting.about_model.strip()])
    model_label = "How I want answers" if sighting.scope == GLOBAL_SCOPE else "Instructions"
    parts = [f"About me:\n{about_user}" if about_user else "", f"{model_label}:\n{about_model}" if about_model else ""]
    text = "\n\n".join(p for p in parts if p)
    title = "About me" if sighting.scope == GLOBAL_SCOPE else f"Instructions for {sighting.scope}"
    metadata = {"item_kind": "profile", "provider": sighting.provider, "scope": sighting.scope}
    metadata |= {k: v for k, v in (("about_user", about_user), ("about_model", about_model)) if v}
    if sighting.seen_in:
        metadata["seen_in"] = sighting.seen_in
    return build_dialogue(
        fmt=FORMAT,
        turns=[Turn(role="user", text=text, author="profile", timestamp=sighting.updated_at or sighting.created_at)],
        title=f"{title} ({sighting.provider})",
        source_path=path,
        source_hash=sighting.source_hash,
        external_id=f"{sighting.provider}:{sighting.scope}",
        repair=report,
        created_at=sighting.created_at,
        updated_at=sighting.updated_at,
        metadata=metadata,
    )


def instruction_text(value: object) -> str:
    """A profile field's text: ChatGPT wraps it in boilerplate with the user's words in a fence."""
    if not isinstance(value, str):
        return ""
    fenced = _FENCED.findall(value)
    return (fenced[-1] if fenced else value).strip()


def is_profile(document: Document) -> bool:
    return document.format == FORMAT
