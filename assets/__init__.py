"""Dagster assets, asset checks and jobs: a thin layer over the memory_pipeline core.

One module per concept (ingest, index, promote, train); each exports a ``defs`` that
``definitions.py`` at the repository root merges with the sensors and schedules.
"""
