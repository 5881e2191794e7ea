"""Train group: per-adapter training set versions and LoRA adapters (one partition per adapter)."""

import json

import dagster as dg

from assets.metadata import markdown_table
from assets.partitions import adapter_partitions
from assets.resources import MemoryPipelineResource

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
    context.log.info(f"{adapter}: version {result.version} ({'new' if result.created else 'unchanged, no new version'}) at {result.path}")
    card_md = (result.path / "card.md").read_text(encoding="utf-8") if (result.path / "card.md").is_file() else ""
    return dg.MaterializeResult(
        metadata={
            "version": result.version,
            "new_version": result.created,
            "path": dg.MetadataValue.path(str(result.path)),
            "train_examples": dg.MetadataValue.int(int(card.get("counts", {}).get("train", 0))),
            "eval_examples": dg.MetadataValue.int(int(card.get("counts", {}).get("eval", 0))),
            "content_hash": str(card.get("content_hash", "")),
            "card": dg.MetadataValue.md(card_md),
        }
    )


@dg.asset(
    group_name=TRAIN_GROUP,
    partitions_def=adapter_partitions,
    deps=[training_sets],
    description="A PEFT LoRA trained on the latest training set version, evaluated before/after (perplexity on "
    "its eval split and on general held-out text) and gated: `current` moves only when it is better and does not forget.",
    kinds={"pytorch"},
)
def lora_adapters(context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource) -> dg.MaterializeResult:
    from memory_pipeline.adapters import list_versions, train_adapter
    from memory_pipeline.datasets.versions import latest_version_dir

    config = pipeline.config
    adapter = context.partition_key
    dataset_dir = latest_version_dir(config, adapter)
    if dataset_dir is None:
        reason = f"no training set version for {adapter} yet: nothing to train"
        context.log.info(reason)
        return dg.MaterializeResult(metadata={"status": "skipped", "reason": reason})
    trained_on = {v.manifest.get("dataset", {}).get("version") for v in list_versions(config, adapter)}
    if dataset_dir.name in trained_on:
        reason = f"dataset version {dataset_dir.name} already has an adapter; no new dataset version since"
        context.log.info(reason)
        return dg.MaterializeResult(metadata={"status": "skipped", "reason": reason})
    version = train_adapter(config, adapter, dataset_dir, log=context.log.info)
    return dg.MaterializeResult(metadata=adapter_metadata(version))


def adapter_metadata(version) -> dict:
    metrics = version.metrics
    figures = {k: metrics.get(k) for k in ("eval_ppl_base", "eval_ppl_adapter", "eval_ppl_previous", "heldout_ppl_base", "heldout_ppl_adapter", "heldout_ppl_previous")}
    samples_file = version.path / "samples.json"
    samples = json.loads(samples_file.read_text(encoding="utf-8")) if samples_file.is_file() else []
    return {
        "status": "trained",
        "version": version.version,
        "path": dg.MetadataValue.path(str(version.path)),
        "gate_passed": bool(metrics.get("gate_passed")),
        "gate_reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in metrics.get("gate_reasons", []))),
        "perplexity": dg.MetadataValue.json({k: v for k, v in figures.items() if v is not None}),
        "tokens_per_second": dg.MetadataValue.float(float(metrics.get("tokens_per_second") or 0.0)),
        "dataset_version": version.manifest.get("dataset", {}).get("version", ""),
        "samples": markdown_table(
            [{"prompt": s["prompt"][-1]["content"] if s["prompt"] else "", "base": s["base"], "adapter": s["adapter"]} for s in samples]
        ),
    }


@dg.asset_check(asset=lora_adapters, description="The newest adapter version passed the gate; otherwise shows why `current` did not move.")
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
                "verdict": "; ".join(newest.metrics.get("gate_reasons", [])),
            }
        )
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata={"adapters": markdown_table(rows)})


defs = dg.Definitions(assets=[training_sets, lora_adapters], asset_checks=[lora_adapters_gate_passed])
