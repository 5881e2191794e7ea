"""Jobs: what a run materializes. Sensors and schedules in sensors/ launch them."""

import dagster as dg

from assets.partitions import adapter_partitions

MEMORY_GROUPS = ("ingest", "index", "promote")
# Runs that commit to the memory's stores carry this tag; instances that run several runs at once limit it to 1
# (tag_concurrency_limits in deploy/dagster.postgres.yaml), so each LanceDB table has one writer at a time.
WRITES_MEMORY = {"memory_pipeline/writes": "memory"}

reindex_job = dg.define_asset_job(
    "reindex_job",
    selection=dg.AssetSelection.groups(*MEMORY_GROUPS),
    tags=WRITES_MEMORY,
    description="Ingest what changed, re-chunk/re-embed only changed documents, rescore. Launched by the file sensor.",
)

memory_job = dg.define_asset_job(
    "memory_job",
    selection=dg.AssetSelection.groups(*MEMORY_GROUPS),
    tags=WRITES_MEMORY,
    description="The nightly memory loop: full scan of every source, index, score and tier every item.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("train"),
    partitions_def=adapter_partitions,
    description="For one adapter: build a new training set version, then train, evaluate and gate a LoRA on it.",
)
