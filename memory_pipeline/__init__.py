"""memory_pipeline: a local, private memory for one person's AI.

The core library is Dagster-free: parsers, text repair, chunking, embedding, stores, scoring,
training sets and adapters are plain functions and small classes. The Dagster layer lives in
``assets/`` and ``sensors/`` and only calls into this package.
"""

__version__ = "0.1.0"
