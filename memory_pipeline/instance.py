"""The local Dagster instance folder (DAGSTER_HOME) under the storage root.

Dagster keeps run history, event logs and schedules in DAGSTER_HOME; keeping it under the
storage root puts everything the pipeline owns in one folder the user can back up or move.
"""

from __future__ import annotations

import os
from pathlib import Path

from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import Config

DAGSTER_YAML = """\
# Local Dagster instance for memory_pipeline: SQLite run/event/schedule storage in this folder.
# To use PostgreSQL instead, see docs/operations.md ("Scaling out").
storage:
  sqlite:
    base_dir: {base_dir}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
telemetry:
  enabled: false
auto_materialize:
  use_sensors: true  # automation conditions run in definitions.py's default_automation_condition_sensor (on by default)
nux:
  enabled: false  # no "Join the Dagster community" sign-up dialog over the first page: this instance runs offline
"""


def ensure_dagster_home(config: Config) -> Path:
    """Create DAGSTER_HOME with a dagster.yaml if missing; return its path. Never overwrites a user's file."""
    home = config.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        atomic_write_text(target, DAGSTER_YAML.format(base_dir=str(home.resolve())))
    return home


def dagster_env(config: Config) -> dict[str, str]:
    """Environment for a dagster subprocess: DAGSTER_HOME and the config/storage the CLI resolved."""
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(ensure_dagster_home(config))
    if config.config_path:
        env["MEMORY_PIPELINE_CONFIG"] = str(config.config_path)
    env["MEMORY_PIPELINE_STORAGE"] = str(config.storage_root)
    return env
