"""Train group: per-adapter training set versions and LoRA adapters (one partition per adapter)."""

import json

import dagster as dg

from assets.metadata import table
from assets.partitions import adapter_partitions
from assets.resources import MemoryPipelineResource
from memory_pipeline.datasets.card import DatasetCard, key_values

TRAIN_GROUP = "train"


@dg.asset(
    group_name=TRAIN_GROUP,
    partitions_def=adapter_partitions,
    deps=["item_tiers"],
    description="A new version of this adapter's LoRA training set (train/eval/held-out JSONL + dataset card), "
    "built from the items promoted to it; never overwrites an earlier version.",
    kinds={"python", "json"},
)
def training_sets(context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource) -> dg.MaterializeResult:
    from memory_pipeline.datasets.build import build_dataset_for_adapter

    adapter = context.partition_key
    result = build_dataset_for_adapter(pipeline.config, adapter)
    card = result.card
    context.log.info(
        f"{adapter}: version {result.version} "
        f"({'new' if result.created else 'unchanged, no new version'}) at {result.path}"
    )
    card_md = (result.path / "card.md").read_text(encoding="utf-8") if (result.path / "card.md").is_file() else ""
    return dg.MaterializeResult(
        metadata={
            "version": result.version,
            "new_version": result.created,
            "path": dg.MetadataValue.path(str(result.path)),
            "train_examples": dg.MetadataValue.int(card.counts.train if card else 0),
            "eval_examples": dg.MetadataValue.int(card.counts.eval if card else 0),
            "content_hash": card.content_hash if card else "",
            **(card_tables(card) if card else {}),
            "card": dg.MetadataValue.md(card_md),
        }
    )


def card_tables(card: DatasetCard) -> dict[str, dg.MetadataValue]:
    """The dataset card's figures as tables the UI shows in place (the whole card stays one click away)."""
    counts, tokens, sources, scores = card.counts, card.tokens, card.sources, card.scores
    splits = [
        {"split": split, "examples": getattr(counts, split), **stats.model_dump()}
        for split, stats in (("train", tokens.train), ("eval", tokens.eval))
    ]
    splits.append({"split": "heldout (general)", "examples": counts.heldout, "total": tokens.heldout_total})
    figures = {
        "promoted items": counts.promoted_items,
        "lines built": counts.examples_built,
        "documents (train / eval)": f"{sources.documents.train} / {sources.documents.eval}",
        "kinds": key_values(sources.kinds),
        "document formats": key_values(sources.document_formats),
        "scores (min / mean / max)": f"{scores.min} / {scores.mean} / {scores.max}",
        "thresholds (rag / lora)": f"{scores.rag_threshold} / {scores.lora_threshold}",
        "parent version": card.parent or "(none)",
    }
    curation = [{"step": s.step, "removed": s.removed, "details": key_values(s.details)} for s in card.filters]
    return {
        "splits": table(splits, ["split", "examples", "total", "mean", "p50", "p95", "max"]),
        "card_figures": table([{"figure": k, "value": str(v)} for k, v in figures.items()], ["figure", "value"]),
        "curation": table(curation, ["step", "removed", "details"], cell_chars=200),
    }


@dg.asset(
    group_name=TRAIN_GROUP,
    partitions_def=adapter_partitions,
    deps=[training_sets],
    description="A PEFT LoRA trained on the latest training set version, evaluated before/after (perplexity on "
    "its eval split and on general held-out text) and on its answers to the gate prompts (repetition, echo, "
    "language, length, closeness to the user's own answers); `current` moves only when it is better, does not "
    "forget and answers sensibly.",
    kinds={"pytorch"},
)
def lora_adapters(context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource) -> dg.MaterializeResult:
    from memory_pipeline.adapters import plan_training, train_adapter

    config = pipeline.config
    adapter = context.partition_key
    run = plan_training(config, adapter)
    if run.skipped:
        context.log.info(run.skipped)
        return dg.MaterializeResult(metadata={"status": "skipped", "reason": run.skipped})
    version = train_adapter(config, adapter, run.dataset_dir, log=context.log.info)
    return dg.MaterializeResult(metadata=adapter_metadata(version))


_PPL_SPLITS = (("eval", "its eval split"), ("heldout", "general held-out text"))
_MODELS = ("base", "adapter", "previous")


def adapter_metadata(version) -> dict:
    """Every figure the gate read (base → adapter), its reasons, the gate prompts' answers and the card."""
    from memory_pipeline.adapters.card import demo_note, figures

    metrics = version.metrics
    samples_file = version.path / "samples.json"
    samples = json.loads(samples_file.read_text(encoding="utf-8")) if samples_file.is_file() else {}
    card_file = version.path / "card.md"
    metadata = {
        "status": "trained",
        "version": version.version,
        "path": dg.MetadataValue.path(str(version.path)),
        "gate_passed": metrics.gate_passed,
        "gate_reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in metrics.gate_reasons)),
        "perplexity": table(
            [
                {"text": text, **{who: _rounded(getattr(metrics, f"{split}_ppl_{who}")) for who in _MODELS}}
                for split, text in _PPL_SPLITS
            ],
            ["text", "base", "adapter", "previous"],
        ),
        "figures": table(
            [{"figure": k, "base → adapter": v} for k, v in figures(metrics).items()],
            ["figure", "base → adapter"],
            limit=40,
        ),
        "generation": dg.MetadataValue.json(metrics.generation.model_dump(mode="json") if metrics.generation else {}),
        "tokens_per_second": dg.MetadataValue.float(metrics.tokens_per_second or 0.0),
        "dataset_version": version.manifest.dataset.version if version.manifest.dataset else "",
        "gate_answers": table(
            [
                {"prompt": s["prompt"], "base": s["base"]["answer"], "adapter": s["adapter"]["answer"]}
                for s in samples.get("gate_prompts", [])
            ],
            ["prompt", "base", "adapter"],
            cell_chars=200,
        ),
        "samples": table(
            [
                {
                    "prompt": s["prompt"][-1]["content"] if s["prompt"] else "",
                    "user": s["reference"],
                    "base": s["base"],
                    "adapter": s["adapter"],
                }
                for s in samples.get("eval_prompts", [])
            ],
            ["prompt", "user", "base", "adapter"],
            cell_chars=200,
        ),
        "card": dg.MetadataValue.md(card_file.read_text(encoding="utf-8") if card_file.is_file() else ""),
    }
    for key in ("similarity_base", "similarity_adapter"):
        if getattr(metrics, key) is not None:
            metadata[key] = dg.MetadataValue.float(getattr(metrics, key))
    note = demo_note(version.manifest.base.id)
    if note:
        metadata["note"] = note
    return metadata


def _rounded(value) -> float | None:
    return round(float(value), 3) if value is not None else None


@dg.asset_check(
    asset=lora_adapters,
    description="The newest adapter version passed the gate; otherwise shows why `current` did not move.",
)
def lora_adapters_gate_passed(pipeline: MemoryPipelineResource) -> dg.AssetCheckResult:
    from memory_pipeline.adapters import current_version, list_versions

    config = pipeline.config
    rows, passed = [], True
    for adapter in config.adapters:
        versions = list_versions(config, adapter.name)
        if not versions:
            rows.append({"adapter": adapter.name, "newest": "-", "current": "-", "verdict": "not trained yet"})
            continue
        newest = versions[-1]
        current = current_version(config, adapter.name)
        passed = passed and newest.passed
        rows.append(
            {
                "adapter": adapter.name,
                "newest": newest.version,
                "current": current.version if current else "-",
                "verdict": "; ".join(newest.metrics.gate_reasons),
            }
        )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"adapters": table(rows, ["adapter", "newest", "current", "verdict"], cell_chars=300)},
    )


defs = dg.Definitions(assets=[training_sets, lora_adapters], asset_checks=[lora_adapters_gate_passed])
