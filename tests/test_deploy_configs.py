"""The scale-out examples in deploy/ validate: our config loader and Dagster's instance schema."""

from pathlib import Path

import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config_schema

from memory_pipeline.config import load_config
from memory_pipeline.instance import DAGSTER_YAML

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_cluster_config_validates_with_object_store_and_shared_faiss():
    config = load_config(DEPLOY / "memory_pipeline.cluster.yaml")
    assert config.lancedb_uri == "s3://memory-bucket/lancedb"
    assert config.faiss_dir == Path("/srv/memory/faiss")
    assert config.service.host == "0.0.0.0" and config.service.token


def _assert_valid_instance(raw: dict) -> None:
    result = validate_config(dagster_instance_config_schema(), raw)
    assert result.success, [e.message for e in result.errors]


def test_postgres_instance_config_validates_against_dagsters_schema():
    _assert_valid_instance(yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text()))


def test_kubernetes_instance_config_validates_against_dagsters_schema():
    raw = yaml.safe_load((DEPLOY / "dagster.k8s.yaml").read_text())
    assert raw["run_launcher"]["module"] == "dagster_k8s"
    _assert_valid_instance(raw)


def test_default_local_instance_config_validates():
    _assert_valid_instance(yaml.safe_load(DAGSTER_YAML))
