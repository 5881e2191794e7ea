"""A long Russian conversation in the nexus per-exchange layout, built from the demo's real notes.

The four nexus notes in demo/dialogues (the shared samples: real Russian ChatGPT exchanges, in
their double-encoded mojibake) give the questions and answer lines; exchange ``i`` takes note
``i % 4``'s question (tagged ``#i`` so no two exchanges are the same text) and a window of its
answer lines, so the whole conversation has the size and shape of a real one (84 exchanges,
~0.45 MB) without committing one.
"""

from __future__ import annotations

import re
from pathlib import Path

DEMO_NOTES = sorted((Path(__file__).resolve().parents[1] / "demo" / "dialogues").glob("*.md"))
_HEADER = re.compile(r"^>\[!nexus_(user|agent)\]")
_UID = re.compile(r"^<!-- UID: (\S+) -->")


def _blocks(text: str) -> tuple[list[str], str, list[str], str]:
    """(user lines, assistant header, assistant quoted lines, assistant UID) of a one-exchange note."""
    user: list[str] = []
    header, answer, uid = "", [], ""
    current = None
    for line in text.split("\n"):
        if match := _HEADER.match(line):
            current = match.group(1)
            if current == "agent":
                header = line
                continue
        if current == "user":
            user.append(line)
        elif current == "agent" and (found := _UID.match(line)):
            uid = found.group(1)
            current = None
        elif current == "agent" and line.startswith(">"):
            answer.append(line)
    return user, header, answer, uid


def make_conversation(folder: Path, exchanges: int = 84, target_bytes: int = 450_000) -> Path:
    """Write ``folder/russian_conversation.md`` (front matter + links) and its exchange folder; returns the note."""
    notes = [_blocks(p.read_text(encoding="utf-8")) for p in DEMO_NOTES]
    per_exchange = target_bytes // exchanges
    members = folder / "russian_conversation"
    members.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(exchanges):
        user, header, answer, uid = notes[i % len(notes)]
        user_lines = [re.sub(r"(<!-- UID: \S+)( -->)", rf"\1-{i}\2", line) for line in user]
        user_lines[1] = f"{user_lines[1]} (#{i + 1})"
        lines = [*user_lines, header]
        start = (i // len(notes)) * 7 % len(answer)
        size = sum(len(line.encode()) + 1 for line in lines)
        k = 0
        while size < per_exchange and k < len(answer):
            line = answer[(start + k) % len(answer)]
            lines.append(line)
            size += len(line.encode()) + 1
            k += 1
        lines += [f"<!-- UID: {uid}-{i} -->", ""]
        name = f"{i + 1:02d}_exchange"
        (members / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
        links.append(f"[[russian_conversation/{name}]]")
    note = folder / "russian_conversation.md"
    front = "---\nconversation_id: bench-russian-84\ntitle: Russian conversation (benchmark)\n---\n"
    note.write_text(front + "\n".join(links) + "\n", encoding="utf-8")
    return note


def source_bytes(note: Path) -> int:
    return note.stat().st_size + sum(p.stat().st_size for p in note.with_suffix("").iterdir())
