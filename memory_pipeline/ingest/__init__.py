"""Ingest: source files to repaired, deduplicated documents in the docstore (the Dagster ``ingest`` group).

``pipeline`` runs an ingest over paths, ``docstore`` keeps the documents and their lineage, ``watch``
finds what changed in the source folders, ``text_repair`` undoes mojibake, ``limits`` bounds hostile input.
The format parsers live in ``memory_pipeline.sources``.
"""
