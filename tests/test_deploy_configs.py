"""The scale-out examples in deploy/ validate: our config loader and Dagster's instance schema."""

from pathlib import Path

import pytest
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


# --- scale-out: the executors and run launcher as their own libraries' schemas see them ---


def _assert_valid(schema, raw: dict) -> None:
    from dagster._config import process_config, resolve_to_config_type

    result = process_config(resolve_to_config_type(schema), raw)
    assert result.success, [e.message for e in result.errors]


def test_cluster_config_k8s_executor_validates_against_dagster_k8s():
    from dagster_k8s import k8s_job_executor

    from assets.executors import executor_for

    config = load_config(DEPLOY / "memory_pipeline.cluster.yaml")
    assert config.scaleout.executor == "k8s"
    assert config.scaleout.embed_partitions == config.scaleout.ingest_partitions == 8
    _assert_valid(k8s_job_executor.config_schema.config_type, config.scaleout.executor_config)
    assert executor_for(config).name.startswith("k8s")


def test_kubernetes_run_launcher_config_validates_against_dagster_k8s():
    from dagster_k8s import K8sRunLauncher

    raw = yaml.safe_load((DEPLOY / "dagster.k8s.yaml").read_text())
    _assert_valid(K8sRunLauncher.config_type(), raw["run_launcher"]["config"])


def test_dask_executor_config_of_the_docs_validates_against_dagster_dask():
    from dagster_dask import dask_executor

    _assert_valid(
        dask_executor.config_schema.config_type, {"cluster": {"existing": {"address": "tcp://scheduler:8786"}}}
    )
    _assert_valid(
        dask_executor.config_schema.config_type, {"cluster": {"local": {"n_workers": 2, "threads_per_worker": 1}}}
    )


def test_a_bad_executor_config_is_refused_when_definitions_load(tmp_path):
    from assets.executors import executor_for
    from memory_pipeline.errors import ConfigError

    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(
        yaml.safe_dump({"scaleout": {"executor": "dask", "executor_config": {"cluster": {"nowhere": {}}}}})
    )
    with pytest.raises(ConfigError, match="scaleout.executor_config is not a valid dask config"):
        executor_for(load_config(config_file))
