"""Schedules: the nightly memory loop. Training follows it (see nightly_training_sensor)."""

import dagster as dg

from assets.jobs import memory_job
from memory_pipeline.config import load_config


def build_nightly_schedule() -> dg.ScheduleDefinition:
    """Cron and timezone come from the config file, read when the definitions load."""
    schedule = load_config().schedule
    return dg.ScheduleDefinition(
        name="nightly_schedule",
        job=memory_job,
        cron_schedule=schedule.nightly_cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every night: full scan of the sources, index, score and tier every item. "
        "When it succeeds, nightly_training_sensor builds datasets and trains adapters.",
    )


nightly_schedule = build_nightly_schedule()
