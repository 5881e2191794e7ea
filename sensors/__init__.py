"""Dagster sensors and schedules: what starts runs, and when."""
