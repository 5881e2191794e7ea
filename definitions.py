"""The Dagster entry point: merges each concept's definitions and the shared resources once.

``dagster dev -w workspace.yaml`` and ``dagster asset materialize -f definitions.py`` load this.
"""

import dagster as dg

from assets import fanout, index, ingest, promote, train
from assets.executors import executor_for
from assets.jobs import memory_job, reindex_job, training_job
from assets.resources import EmbedderResource, MemoryPipelineResource, StoresResource
from sensors.schedules import nightly_schedule
from sensors.sensors import (
    automation_sensor,
    new_examples_sensor,
    nightly_training_sensor,
    run_failure_record_sensor,
    source_files_sensor,
)

pipeline = MemoryPipelineResource()

defs = dg.Definitions.merge(
    ingest.defs,
    index.defs,
    fanout.fanout_defs(pipeline.config.scaleout.embed_partitions, pipeline.config.scaleout.ingest_partitions),
    promote.defs,
    train.defs,
    dg.Definitions(
        jobs=[reindex_job, memory_job, training_job],
        schedules=[nightly_schedule],
        sensors=[
            source_files_sensor,
            new_examples_sensor,
            nightly_training_sensor,
            run_failure_record_sensor,
            automation_sensor,
        ],
        resources={
            "pipeline": pipeline,
            "embedder": EmbedderResource(pipeline=pipeline),
            "stores": StoresResource(pipeline=pipeline),
        },
        executor=executor_for(pipeline.config),  # scaleout.executor in the config file
    ),
)
