"""The executor every job runs on, chosen by ``scaleout.executor`` in the config file.

The integration libraries are imported only when chosen, so the embedded default needs none of them
(`pip install -e '.[dask]'`, `'.[celery]'` or `'.[k8s]'` for the others). ``scaleout.executor_config`` is
the executor's own config, checked against the library's schema when the code location loads (not when
a run starts) and bound with ``configured``.
"""

import dagster as dg

from memory_pipeline.config import Config
from memory_pipeline.errors import ConfigError

_EXTRA = {"dask": "dask", "celery": "celery", "k8s": "k8s"}


def executor_for(config: Config) -> dg.ExecutorDefinition:
    """The configured executor, with its config bound when one is given."""
    name = config.scaleout.executor
    try:
        if name == "multiprocess":
            executor = dg.multi_or_in_process_executor  # Dagster's default: run config may still pick in_process
        elif name == "in_process":
            executor = dg.in_process_executor
        elif name == "dask":
            from dagster_dask import dask_executor as executor
        elif name == "celery":
            from dagster_celery import celery_executor as executor
        else:
            from dagster_k8s import k8s_job_executor as executor
    except ImportError:
        raise ConfigError(f"scaleout.executor: {name} needs `pip install -e '.[{_EXTRA[name]}]'`") from None
    if not config.scaleout.executor_config:
        return executor
    from dagster._config import process_config, resolve_to_config_type

    checked = process_config(
        resolve_to_config_type(executor.config_schema.config_type), config.scaleout.executor_config
    )
    if not checked.success:
        problems = "; ".join(error.message for error in checked.errors)
        raise ConfigError(f"scaleout.executor_config is not a valid {executor.name} config: {problems}")
    return executor.configured(config.scaleout.executor_config, name=f"{executor.name}_from_memory_pipeline_yaml")
