"""Jobs: what a run materializes. Sensors and schedules in sensors/ launch them."""

import dagster as dg

from assets.partitions import adapter_partitions

MEMORY_GROUPS = ("ingest", "index", "promote")

reindex_job = dg.define_asset_job(
    "reindex_job",
    selection=dg.AssetSelection.groups(*MEMORY_GROUPS),
    description="Ingest what changed, re-chunk/re-embed only changed documents, rescore. Launched by the file sensor.",
)

memory_job = dg.define_asset_job(
    "memory_job",
    selection=dg.AssetSelection.groups(*MEMORY_GROUPS),
    description="The nightly memory loop: full scan of every source, index, score and tier every item.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("train"),
    partitions_def=adapter_partitions,
    description="For one adapter: build a new training set version, then train, evaluate and gate a LoRA on it.",
)
