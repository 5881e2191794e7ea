"""One partition per adapter in the config (core + topics); adding a topic adapter adds a partition."""

import dagster as dg

from memory_pipeline.config import load_config

adapter_partitions = dg.StaticPartitionsDefinition([adapter.name for adapter in load_config().adapters])
