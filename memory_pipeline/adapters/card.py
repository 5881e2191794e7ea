"""How an adapter version's figures read: one summary shared by `adapters list`, the Dagster UI and the card.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memory_pipeline.adapters.base_model import PACKAGED_PREFIX
from memory_pipeline.adapters.manifest import AdapterMetrics, TrainingManifest

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


def figures(metrics: AdapterMetrics) -> dict[str, str]:
    """Every figure the gate looked at, as 'base → adapter' (previous too when there was one), in a fixed order."""
    rows: dict[str, str] = {}
    for kind in ("eval", "heldout"):
        base, adapter, previous = (getattr(metrics, f"{kind}_ppl_{who}") for who in ("base", "adapter", "previous"))
        text = f"{_num(base)} → {_num(adapter)}"
        rows[f"{kind} perplexity"] = text + (f" (previous {_num(previous)})" if previous is not None else "")
    answers = metrics.generation
    for name in _GENERATION_FIGURES:
        base, adapter = (answers.base.get(name), answers.adapter.get(name)) if answers is not None else (None, None)
        rows[f"answers {name.replace('_', '-')}"] = f"{_num(base)} → {_num(adapter)}"
    if metrics.similarity_adapter is not None:
        base, adapter = _num(metrics.similarity_base), _num(metrics.similarity_adapter)
        rows["similarity to user's answers"] = f"{base} → {adapter} ({metrics.similarity_examples} prompts)"
    for name in ("steps", "tokens_per_second", "seconds", "stopped"):
        if getattr(metrics, name) is not None:
            rows[name.replace("_", " ")] = _num(getattr(metrics, name))
    return rows


def card_markdown(name: str, manifest: TrainingManifest, metrics: AdapterMetrics, samples: Mapping[str, Any]) -> str:
    """The version's card.md: verdict with reasons, every figure, and the gate prompts' answers side by side."""
    verdict = "passed the gate" if metrics.gate_passed else "failed the gate"
    lines = [f"# {name}: {verdict}", ""]
    note = demo_note(manifest.base.id)
    if note:
        lines += [f"> {note}", ""]
    dataset = manifest.dataset.version if manifest.dataset is not None else "(unknown)"
    lines += [
        f"Base `{manifest.base.id}`, dataset {dataset}, mode {manifest.mode}.",
        "",
        *[f"- {reason}" for reason in metrics.gate_reasons],
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
