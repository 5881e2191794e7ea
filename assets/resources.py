"""Dagster resources: the one config file, the embedder and the stores it names.

``embedder`` and ``stores`` take their settings from ``pipeline``, so one config file drives all
three. The core stays Dagster-free: these resources only open its objects.
"""

from functools import cached_property

import dagster as dg

from memory_pipeline.config import Config, load_config
from memory_pipeline.index.embedding import Embedder, embedder_model_id, load_embedder
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.ingest.docstore import DocumentStore


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


class EmbedderResource(dg.ConfigurableResource):
    """The embedding model named in the config, loaded on first use; its weights are loaded once per process."""

    pipeline: MemoryPipelineResource

    @cached_property
    def embedder(self) -> Embedder:
        return load_embedder(self.pipeline.config.embedding)


class StoresResource(dg.ConfigurableResource):
    """The document store and the LanceDB chunk table of the model named in the config.

    Opening them loads no model: the table is named by the model id the config gives.
    """

    pipeline: MemoryPipelineResource

    @cached_property
    def documents(self) -> DocumentStore:
        return DocumentStore(self.pipeline.config.documents_dir)

    @property
    def model_id(self) -> str:
        return embedder_model_id(self.pipeline.config.embedding)

    def chunks(self) -> ChunkStore:
        return ChunkStore(self.pipeline.config.lancedb_uri, self.model_id)
