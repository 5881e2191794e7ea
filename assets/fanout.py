"""Fanned-out steps: ``parsed_sources`` parses and ``chunk_embeddings`` embeds in hash ranges before the commits.

With ``scaleout.ingest_partitions: N`` (N > 1), ``parsed_sources`` is a graph of N ``parse_range_<i>`` steps
(each parses the changed sources whose path is in its range and stages their documents) and one step that
adds their figures; the three kind assets then commit, taking the staged documents instead of parsing. With
``scaleout.embed_partitions: N``, ``chunk_embeddings`` is N ``embed_range_<i>`` steps by document-hash range
and a totals step; ``chunks`` then commits with every vector a cache hit. The run's executor (multiprocess,
dask, celery, k8s) spreads the ranges over its workers; the embed ranges of a run share their batches through
claims, so however it places them no worker idles while another has ranges queued. The steps are fixed when
the code location loads (N comes from the config file): dagster-dask does not run dynamically mapped steps.
With the default of 1 the one step does nothing and the next asset does the work as it always did. The cores
are memory_pipeline/ingest/fanout.py and memory_pipeline/index/fanout.py.
"""

import dagster as dg

from assets.ingest import article_documents, dialogue_documents, lecture_documents
from assets.metadata import table
from assets.resources import EmbedderResource, MemoryPipelineResource, StoresResource

_AFTER_INGEST = {"dialogues": dg.In(dg.Nothing), "articles": dg.In(dg.Nothing), "lectures": dg.In(dg.Nothing)}


def _embed_range(partition: int, partitions: int) -> dg.OpDefinition:
    @dg.op(
        name=f"embed_range_{partition}",
        ins=_AFTER_INGEST,
        description=f"Chunk and embed the documents to index in hash range {partition + 1} of {partitions}, then "
        "help with the other ranges' unclaimed batches; the vectors go to the embedding cache.",
    )
    def embed_range(
        context: dg.OpExecutionContext,
        pipeline: MemoryPipelineResource,
        embedder: EmbedderResource,
        stores: StoresResource,
    ) -> dict:
        from memory_pipeline.index.fanout import PartitionReport, claims_dir, embed_partition

        if partitions == 1:
            context.log.info("scaleout.embed_partitions is 1: the chunks step embeds, nothing fans out")
            return PartitionReport(partition=0, partitions=1).model_dump()
        report = embed_partition(
            pipeline.config,
            stores.documents,
            embedder.embedder,
            partition,
            partitions,
            claims=claims_dir(pipeline.config, context.run_id),  # the run's range steps share the batches
            log=context.log.info,
        )
        context.add_output_metadata(report.model_dump(exclude={"partition", "partitions", "cache_hits"}))
        return report.model_dump()

    return embed_range


def _range_totals(
    name: str, description: str, partitions: int, counts: tuple[str, ...], shown: tuple[str, ...]
) -> dg.OpDefinition:
    """An op adding up the range steps' figures for the asset's metadata. One named input per range rather
    than a fan-in list: dagster-dask hands a fan-in input an empty list."""

    @dg.op(name=name, ins={f"range_{p}": dg.In(dict) for p in range(partitions)}, description=description)
    def range_totals(context: dg.OpExecutionContext, **ranges: dict) -> dict:
        reports = [ranges[f"range_{p}"] for p in range(partitions)]
        totals = {key: sum(r[key] for r in reports) for key in counts}
        context.add_output_metadata(
            {
                "partitions": partitions,
                **{key: dg.MetadataValue.int(value) for key, value in totals.items()},
                "slowest_partition_seconds": dg.MetadataValue.float(max(r["seconds"] for r in reports)),
                "per_partition": table(reports, ["partition", *shown], limit=partitions),
            }
        )
        return totals

    return range_totals


def _embedding_totals(partitions: int) -> dg.OpDefinition:
    counts = ("documents", "chunks", "embedded", "cache_hits")
    shown = ("documents", "chunks", "embedded", "seconds")
    return _range_totals(
        "embedding_totals", "The ranges' figures, for the asset's metadata.", partitions, counts, shown
    )


def _parse_range(partition: int, partitions: int) -> dg.OpDefinition:
    @dg.op(
        name=f"parse_range_{partition}",
        description=f"Parse the changed sources in source-path hash range {partition + 1} of {partitions} and stage "
        "their documents for the kinds' ingest steps.",
    )
    def parse_range(context: dg.OpExecutionContext, pipeline: MemoryPipelineResource) -> dict:
        from memory_pipeline.ingest.fanout import ParseReport, parse_partition

        if partitions == 1:
            context.log.info("scaleout.ingest_partitions is 1: each kind's ingest parses, nothing fans out")
            return ParseReport(partition=0, partitions=1).model_dump()
        report = parse_partition(pipeline.config, partition, partitions, log=context.log.info)
        context.add_output_metadata(report.model_dump(exclude={"partition", "partitions"}))
        return report.model_dump()

    return parse_range


def _parse_totals(partitions: int) -> dg.OpDefinition:
    counts = ("sources", "staged", "documents", "unchanged", "left_to_commit")
    shown = ("sources", "staged", "documents", "seconds", "cpu_seconds")
    return _range_totals("parse_totals", "The ranges' figures.", partitions, counts, shown)


def fanout_defs(partitions: int, ingest_partitions: int = 1) -> dg.Definitions:
    """``parsed_sources`` with one parsing step per source-path hash range, ``chunk_embeddings`` with one
    embedding step per document-hash range."""
    ranges = [_embed_range(p, partitions) for p in range(partitions)]
    totals = _embedding_totals(partitions)
    parse_ranges = [_parse_range(p, ingest_partitions) for p in range(ingest_partitions)]
    parse_totals = _parse_totals(ingest_partitions)

    @dg.graph_asset(
        name="parsed_sources",
        group_name="ingest",
        description="The changed sources parsed in scaleout.ingest_partitions parallel steps by source-path hash "
        "range, their documents staged for the kinds' ingest steps, which commit them. One partition: no fan-out.",
        kinds={"python"},
    )
    def parsed_sources():
        return parse_totals(**{f"range_{p}": parse() for p, parse in enumerate(parse_ranges)})

    @dg.graph_asset(
        name="chunk_embeddings",
        group_name="index",
        ins={
            "dialogues": dg.AssetIn(dialogue_documents.key, dagster_type=dg.Nothing),
            "articles": dg.AssetIn(article_documents.key, dagster_type=dg.Nothing),
            "lectures": dg.AssetIn(lecture_documents.key, dagster_type=dg.Nothing),
        },
        description="Vectors of the chunks to (re)index, embedded in scaleout.embed_partitions parallel steps by "
        "document-hash range into the embedding cache, so `chunks` only commits. One partition: no fan-out.",
        kinds={"python"},
    )
    def chunk_embeddings(dialogues, articles, lectures):
        return totals(
            **{
                f"range_{p}": embed(dialogues=dialogues, articles=articles, lectures=lectures)
                for p, embed in enumerate(ranges)
            }
        )

    return dg.Definitions(assets=[parsed_sources, chunk_embeddings])
