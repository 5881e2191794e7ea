"""The local Dagster instance folder (DAGSTER_HOME) under the storage root.

Dagster keeps run history, event logs and schedules in DAGSTER_HOME; keeping it under the
storage root puts everything the pipeline owns in one folder the user can back up or move.
The file names no storage folder: Dagster's default, SQLite in the folder holding dagster.yaml, goes
with the folder, so a moved or restored one keeps writing run history into itself, not into the place
it was copied from.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from memory_pipeline.atomic import atomic_write_text
from memory_pipeline.config import Config

DAGSTER_YAML = """\
# Local Dagster instance for memory_pipeline: SQLite run/event/schedule storage in this folder (Dagster's
# default, no path written here, so the folder can be moved). For PostgreSQL see docs/operations.md ("Scaling out").
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
    """Create DAGSTER_HOME with a dagster.yaml if missing; return its path.

    One this module wrote earlier with an absolute base_dir is rewritten; a user's own file never is.
    """
    home = config.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() or _generated_with_absolute_base_dir(target):
        atomic_write_text(target, DAGSTER_YAML)
    return home


def _generated_with_absolute_base_dir(path: Path) -> bool:
    """An instance file this module wrote with an absolute SQLite base_dir, which pins the folder it was made in."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("# Local Dagster instance for memory_pipeline"):
        return False
    base_dir = ((yaml.safe_load(text) or {}).get("storage") or {}).get("sqlite", {}).get("base_dir")
    return isinstance(base_dir, str)


def dagster_env(config: Config) -> dict[str, str]:
    """Environment for a dagster subprocess: DAGSTER_HOME and the config/storage the CLI resolved."""
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(ensure_dagster_home(config))
    if config.config_path:
        env["MEMORY_PIPELINE_CONFIG"] = str(config.config_path)
    env["MEMORY_PIPELINE_STORAGE"] = str(config.storage_root)
    return env
