"""Ingest group: source folders -> normalized documents, one asset per kind, plus the report."""

from collections import Counter

import dagster as dg

from assets.metadata import counts_table, table
from assets.resources import MemoryPipelineResource
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import IngestReport, ingest_kind, load_reports
from memory_pipeline.records import Kind

INGEST_GROUP = "ingest"


class IngestRunConfig(dg.Config):
    """Restrict a run to some paths (the file sensor sets this to what changed)."""

    paths: list[str] = []
    prune_missing: bool = False  # remove the documents of a missing or emptied source folder (else kept, reported)


def _materialize_kind(
    context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource, kind: Kind, run_config: IngestRunConfig
) -> dg.MaterializeResult:
    config = pipeline.config
    store = DocumentStore(config.documents_dir)

    def progress(done: int, total: int, path: str) -> None:
        if done == total or done % 500 == 0:
            context.log.info(f"{kind.value}: {done}/{total} files ({path})")

    paths = [p for p in run_config.paths] or None
    report = ingest_kind(
        config, kind, paths=paths, store=store, on_progress=progress, prune_missing=run_config.prune_missing or None
    )
    for error in report.errors:
        context.log.error(f"{error.path}: {error.reason}")
    summary = store.summary_rows(kind)
    return dg.MaterializeResult(metadata=_report_metadata(report, summary))


def _report_metadata(report: IngestReport, summary: list[dict]) -> dict:
    return {
        "documents_total": dg.MetadataValue.int(report.documents_total),
        "documents_written": dg.MetadataValue.int(report.documents_written),
        "documents_removed": dg.MetadataValue.int(report.documents_removed),
        "files_seen": dg.MetadataValue.int(report.files_seen),
        "files_parsed": dg.MetadataValue.int(report.files_parsed),
        "files_unchanged": dg.MetadataValue.int(report.files_unchanged),
        "files_failed": dg.MetadataValue.int(report.files_failed),
        "repaired_documents_this_run": dg.MetadataValue.int(report.repaired_documents),
        "repaired_documents_total": dg.MetadataValue.int(sum(1 for r in summary if r["repaired"])),
        "mb_parsed": dg.MetadataValue.float(round(report.bytes_parsed / 1e6, 3)),
        "seconds": dg.MetadataValue.float(report.seconds),
        "documents_per_format": counts_table(Counter(r["format"] for r in summary), "format", "documents"),
        "failures": table([e.model_dump() for e in report.errors], ["path", "reason"]),
        "preview": table(summary, ["title", "format", "language", "n_units", "repaired", "source_path"]),
    }


def _kind_asset(kind: Kind, name: str, description: str) -> dg.AssetsDefinition:
    # parsed_sources (assets/fanout.py) parses ahead in hash ranges when scaleout.ingest_partitions > 1
    @dg.asset(
        name=name,
        group_name=INGEST_GROUP,
        description=description,
        kinds={"python", "lancedb"},
        deps=["parsed_sources"],
    )
    def _asset(
        context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource, config: IngestRunConfig
    ) -> dg.MaterializeResult:
        return _materialize_kind(context, pipeline, kind, config)

    return _asset


dialogue_documents = _kind_asset(
    Kind.DIALOGUE,
    "dialogue_documents",
    "Chat exports (ChatGPT conversations.json, Claude JSON, nexus Obsidian markdown, JSONL) as normalized dialogues.",
)
article_documents = _kind_asset(
    Kind.ARTICLE, "article_documents", "Articles (PDF, Markdown, plain text, HTML) as normalized sections."
)
lecture_documents = _kind_asset(
    Kind.LECTURE, "lecture_documents", "Lectures (SRT, WebVTT, transcripts) as timed segments."
)


@dg.asset(
    group_name=INGEST_GROUP,
    deps=[dialogue_documents, article_documents, lecture_documents],
    description="Every source file that failed to ingest, with the reason; fix or remove them and re-run.",
    kinds={"python"},
)
def ingest_report(pipeline: MemoryPipelineResource) -> dg.MaterializeResult:
    reports = load_reports(pipeline.config)
    errors = [e.model_dump() for r in reports.values() for e in r.errors]
    return dg.MaterializeResult(
        metadata={
            "failures": dg.MetadataValue.int(len(errors)),
            "documents_total": dg.MetadataValue.int(sum(r.documents_total for r in reports.values())),
            "errors": table(errors, ["kind", "path", "reason"], limit=100),
            "per_kind": table(
                [
                    {"kind": k, "documents": r.documents_total, "failed": r.files_failed, "finished_at": r.finished_at}
                    for k, r in reports.items()
                ],
                ["kind", "documents", "failed", "finished_at"],
            ),
        }
    )


@dg.asset_check(
    asset=ingest_report,
    description="Warns when any source file failed to ingest, or a source folder is missing or emptied.",
)
def ingest_report_no_failures(pipeline: MemoryPipelineResource) -> dg.AssetCheckResult:
    errors = [e for r in load_reports(pipeline.config).values() for e in r.errors]
    return dg.AssetCheckResult(
        passed=not errors,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed_files": len(errors), "first": errors[0].path if errors else ""},
    )


defs = dg.Definitions(
    assets=[dialogue_documents, article_documents, lecture_documents, ingest_report],
    asset_checks=[ingest_report_no_failures],
)
