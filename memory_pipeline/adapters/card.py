"""How an adapter version's figures read: one summary shared by `adapters list`, the Dagster UI and the card.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memory_pipeline.adapters.base_model import PACKAGED_PREFIX

DEMO_NOTE = (
    "The base is the bundled 135M SmolLM2 (English-first, tiny): this run shows the plumbing works, "
    "not what an adapter on a real base model would say."
)

_GENERATION_FIGURES = ("distinct_2", "distinct_3", "longest_repeat", "echo", "language_match", "words")


def demo_note(base_id: str) -> str | None:
    """The one-line caveat for the bundled toy base, None for any other base."""
    return DEMO_NOTE if base_id.startswith(PACKAGED_PREFIX) else None


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def figures(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Every figure the gate looked at, as 'base → adapter' (previous too when there was one), in a fixed order."""
    rows: dict[str, str] = {}
    for kind in ("eval", "heldout"):
        base, adapter, previous = (metrics.get(f"{kind}_ppl_{who}") for who in ("base", "adapter", "previous"))
        text = f"{_num(base)} → {_num(adapter)}"
        rows[f"{kind} perplexity"] = text + (f" (previous {_num(previous)})" if previous is not None else "")
    generation = metrics.get("generation") or {}
    for name in _GENERATION_FIGURES:
        base, adapter = ((generation.get(who) or {}).get(name) for who in ("base", "adapter"))
        rows[f"answers {name.replace('_', '-')}"] = f"{_num(base)} → {_num(adapter)}"
    if metrics.get("similarity_adapter") is not None:
        rows["similarity to user's answers"] = (
            f"{_num(metrics.get('similarity_base'))} → {_num(metrics.get('similarity_adapter'))} "
            f"({metrics.get('similarity_examples')} prompts)"
        )
    for name in ("steps", "tokens_per_second", "seconds", "stopped"):
        if name in metrics:
            rows[name.replace("_", " ")] = _num(metrics[name])
    return rows


def card_markdown(name: str, manifest: Mapping[str, Any], metrics: Mapping[str, Any], samples: Mapping[str, Any]) -> str:
    """The version's card.md: verdict with reasons, every figure, and the gate prompts' answers side by side."""
    verdict = "passed the gate" if metrics.get("gate_passed") else "failed the gate"
    lines = [f"# {name}: {verdict}", ""]
    note = demo_note(manifest["base"]["id"])
    if note:
        lines += [f"> {note}", ""]
    lines += [
        f"Base `{manifest['base']['id']}`, dataset {manifest['dataset']['version']}, mode {manifest['mode']}.",
        "",
        *[f"- {reason}" for reason in metrics.get("gate_reasons", [])],
        "",
        "| figure | base → adapter |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in figures(metrics).items()],
        "",
        "## Answers to the gate prompts",
        "",
        "| prompt | base | adapter |",
        "|---|---|---|",
    ]
    for item in samples.get("gate_prompts", []):
        cells = [item["prompt"], item["base"]["answer"], item["adapter"]["answer"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
