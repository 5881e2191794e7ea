"""The whole Dagster project loads: every asset, check, job, schedule and sensor resolves."""

import dagster as dg

import definitions


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(definitions.defs)


def test_groups_and_descriptions():
    graph = definitions.defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(groups.values()) == {"ingest", "index", "promote", "train"}
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key.to_user_string()} has no description"


def test_training_assets_are_partitioned_by_adapter():
    from memory_pipeline.config import load_config

    graph = definitions.defs.resolve_asset_graph()
    names = [a.name for a in load_config().adapters]
    for asset in ("training_sets", "lora_adapters"):
        partitions = graph.get(dg.AssetKey(asset)).partitions_def
        assert partitions.get_partition_keys() == names


def test_jobs_resolve_with_their_selection():
    defs = definitions.defs
    reindex = defs.resolve_job_def("reindex_job")
    selected = {key.to_user_string() for key in reindex.asset_layer.selected_asset_keys}
    assert {"dialogue_documents", "chunks", "item_tiers"} <= selected and "lora_adapters" not in selected
    training = defs.resolve_job_def("training_job")
    assert {key.to_user_string() for key in training.asset_layer.selected_asset_keys} == {"training_sets", "lora_adapters"}
