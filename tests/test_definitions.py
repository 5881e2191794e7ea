"""The whole Dagster project loads.

Every asset, check, job, schedule and sensor resolves; a run's metadata is complete.
"""

from pathlib import Path

import dagster as dg
import pytest
import yaml

import definitions
from assets import index, ingest, promote
from assets.resources import EmbedderResource, MemoryPipelineResource, StoresResource


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
    assert {key.to_user_string() for key in training.asset_layer.selected_asset_keys} == {
        "training_sets",
        "lora_adapters",
    }


# What the UI shows after a run: the ingest and index assets materialized over the fixture files

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def materialized(tmp_path_factory) -> dict[str, dict]:
    """Asset key -> the metadata of its materialization, from one in-process run in a temporary instance."""
    root = tmp_path_factory.mktemp("materialized")
    sources = {
        "dialogues": [str(FIXTURES / "dialogues"), str(FIXTURES / "nexus_obsidian" / "honest_self_assessment.md")],
        "articles": [str(FIXTURES / "articles")],
        "lectures": [str(FIXTURES / "lectures")],
    }
    config_file = root / "memory_pipeline.yaml"
    config_file.write_text(yaml.safe_dump({"storage_root": "storage", "sources": sources}), encoding="utf-8")
    pipeline = MemoryPipelineResource(config_path=str(config_file))
    resources = {
        "pipeline": pipeline,
        "embedder": EmbedderResource(pipeline=pipeline),
        "stores": StoresResource(pipeline=pipeline),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ingest.defs.assets, *index.defs.assets, *promote.defs.assets], instance=instance, resources=resources
        )
    assert result.success
    return {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }


def columns(entry) -> list[str]:
    """A table entry's column names: the UI draws table metadata in place, no click."""
    assert isinstance(entry, dg.TableMetadataValue), entry
    return [column.name for column in entry.schema.columns]


def rows(entry) -> list[dict]:
    assert isinstance(entry, dg.TableMetadataValue), entry
    return [record.data for record in entry.records]


@pytest.mark.slow
def test_each_kind_reports_counts_per_format_repairs_failures_and_a_preview(materialized):
    for name in ("dialogue_documents", "article_documents", "lecture_documents"):
        metadata = materialized[name]
        assert metadata["documents_total"].value > 0, name
        assert columns(metadata["documents_per_format"]) == ["format", "documents"], name
        assert columns(metadata["preview"]) == ["title", "format", "language", "n_units", "repaired", "source_path"], (
            name
        )
        assert rows(metadata["preview"]), name
        assert {"repaired_documents_this_run", "repaired_documents_total", "files_failed", "failures"} <= set(
            metadata
        ), name
    articles = materialized["article_documents"]
    assert articles["repaired_documents_total"].value >= 1 and articles["files_failed"].value >= 1
    assert any("binary.txt" in row["path"] for row in rows(articles["failures"]))
    assert materialized["dialogue_documents"]["repaired_documents_total"].value >= 1
    report = materialized["ingest_report"]
    assert report["failures"].value >= 1 and any("binary.txt" in row["path"] for row in rows(report["errors"]))
    assert {row["kind"] for row in rows(report["per_kind"])} == {"dialogue", "article", "lecture"}


@pytest.mark.slow
def test_chunks_and_faiss_index_report_counts_a_chunk_preview_and_the_index_shape(materialized):
    chunks, faiss_index = materialized["chunks"], materialized["faiss_index"]
    assert chunks["chunks_total"].value > 0 and chunks["embedded"].value + chunks["cache_hits"].value > 0
    per_kind = {row["kind"]: row["chunks"] for row in rows(chunks["chunks_per_kind"])}
    assert set(per_kind) == {"dialogue", "article", "lecture", "profile"}
    assert sum(per_kind.values()) == chunks["chunks_total"].value
    assert columns(chunks["preview"]) == ["title", "kind", "position", "text"]
    positions = [row["position"] for row in rows(chunks["preview"])]
    assert any("turn " in p for p in positions) and any(
        "0:0" in p for p in positions
    )  # dialogue exchanges, lecture times
    assert not any(
        isinstance(entry, dg.JsonMetadataValue) for entry in chunks.values()
    )  # the figures once, not again as JSON
    assert faiss_index["ntotal"].value == chunks["chunks_total"].value
    assert (faiss_index["index_type"].value, faiss_index["dimension"].value, faiss_index["rebuilt"].value) == (
        "flat",
        512,
        True,
    )


@pytest.mark.slow
def test_retrieval_eval_reports_figures_per_search_mode(materialized):
    metadata = materialized["retrieval_eval"]
    assert metadata["queries"].value > 0
    by_mode = {row["mode"]: row for row in rows(metadata["by_mode"])}
    assert set(by_mode) == {"vector", "fts", "hybrid"}
    assert set(by_mode["hybrid"]) == {"mode", "recall@1", "recall@5", "recall@10", "mrr"}
    assert not any(isinstance(entry, dg.JsonMetadataValue) for entry in metadata.values())


@pytest.mark.slow
def test_scores_show_a_histogram_image_with_the_thresholds_and_items_with_their_tier_rule(materialized):
    """The UI draws markdown under 1,000 characters in place: the histogram must fit to be seen without a click."""
    import base64
    import re

    scores, tiers = materialized["item_scores"], materialized["item_tiers"]
    histogram = scores["score_histogram"].value
    assert len(histogram) < 1000, len(histogram)
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", histogram).group(1))
    assert png.startswith(b"\x89PNG")
    assert "cache, below 0.35" in histogram and "lora (if routed), from 0.45" in histogram
    assert sum(int(n) for n in histogram.rsplit(":", 1)[1].split()) == scores["items_total"].value
    for name in ("top_items", "bottom_items"):
        assert columns(scores[name])[:5] == ["score", "tier", "tier_rule", "title", "position"], name
        assert all(row["tier_rule"] and row["title"] for row in rows(scores[name])), name
    assert sum(row["items"] for row in rows(tiers["per_tier"])) == scores["items_total"].value
    assert columns(tiers["per_adapter"]) == ["adapter", "items"]
    assert columns(scores["signals_computed"]) == ["signal", "items"]
