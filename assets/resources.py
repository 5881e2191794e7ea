"""Dagster resources: the one config file, loaded once per run and shared by every asset."""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from memory_pipeline.config import Config, load_config


class MemoryPipelineResource(dg.ConfigurableResource):
    """Where the config file and storage root are; everything else comes from the config file.

    Empty values fall back to $MEMORY_PIPELINE_CONFIG / $MEMORY_PIPELINE_STORAGE, then to
    ./memory_pipeline.yaml, exactly like the CLI, so a run from the UI and one from the
    command line see the same config.
    """

    config_path: str = ""
    storage: str = ""

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path or None, storage=self.storage or None)
