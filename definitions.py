"""The Dagster entry point: merges each concept's definitions and the shared resource once.

``dagster dev -w workspace.yaml`` and ``dagster asset materialize -f definitions.py`` load this.
"""

from __future__ import annotations

import dagster as dg

from assets import ingest
from assets.resources import MemoryPipelineResource

defs = dg.Definitions.merge(
    ingest.defs,
    dg.Definitions(resources={"pipeline": MemoryPipelineResource()}),
)
