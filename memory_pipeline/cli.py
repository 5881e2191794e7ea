"""The ``memory-pipeline`` command line: the same core functions the Dagster assets call."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV, Config, load_config
from memory_pipeline.display import clock, hit_preview, one_line, position_of
from memory_pipeline.errors import ConfigError, ParseError

app = typer.Typer(
    help="A local, private memory for your AI: ingest, index, search, score and distil into LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # typer's rich help labels every flag (even --help) `<bool>`; click's plain help does not
)
console = Console()
err_console = Console(stderr=True)


# Commands that may create a memory in an empty storage root; every other one needs an existing memory.
# `ui` is among them: its sensors ingest the configured sources into a new storage root.
CREATES_MEMORY = {"ingest", "demo", "restore", "parse", "ui"}


class _State:
    config_path: Path | None = None
    storage: Path | None = None
    command: str | None = None
    _config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path, storage=self.storage)
            except ConfigError as exc:
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
            if self.command not in CREATES_MEMORY:
                from memory_pipeline.storage_root import NoMemoryError, require_memory

                try:
                    require_memory(self._config.storage_root)
                except NoMemoryError as exc:
                    self._config = None
                    err_console.print(f"[red]error:[/red] {exc}")
                    raise typer.Exit(2) from None
        return self._config


state = _State()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar=CONFIG_ENV, help="config YAML file")] = None,
    storage: Annotated[Path | None, typer.Option("--storage", envvar=STORAGE_ENV, help="storage root folder")] = None,
) -> None:
    state.config_path = config
    state.storage = storage
    state.command = ctx.invoked_subcommand
    state._config = None


@app.command()
def parse(
    files: Annotated[list[Path], typer.Argument(help="files or folders to parse (folders are walked recursively)")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line: a document or an error")] = False,
) -> None:
    """Show what files (and ZIP exports) parse into and which detector chose the parser, without storing anything."""
    from memory_pipeline.sources import bytes_safe, bytes_safe_document, discover_sources, parse_detected

    failures = 0
    for root in files:
        if not root.exists():
            failures += 1
            _print_parse_error(ParseError(root, "does not exist"), as_json)
            continue
        for unit in discover_sources(root):
            try:
                if unit.skipped:
                    raise ParseError(unit.path, unit.skipped)
                for doc, detection in parse_detected(unit.path):
                    doc = doc if bytes_safe(str(unit.path)) == str(unit.path) else bytes_safe_document(doc)
                    if as_json:
                        line = {**doc.model_dump(mode="json"), "detected_by": detection.detector}
                        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                    else:
                        _print_document(doc, detection.detector)
            except ParseError as exc:
                failures += 1
                _print_parse_error(exc, as_json)
            except (
                OSError,
                ValueError,
                RecursionError,
                ArithmeticError,
            ) as exc:  # as ingest does: one bad file, not a traceback
                failures += 1
                _print_parse_error(ParseError(unit.path, f"{type(exc).__name__}: {exc}"), as_json)
    if failures:
        raise typer.Exit(1)


def _print_parse_error(exc: ParseError, as_json: bool) -> None:
    from memory_pipeline.sources import bytes_safe

    path, reason = bytes_safe(exc.path), bytes_safe(exc.reason)
    if as_json:
        sys.stdout.write(json.dumps({"error": reason, "path": path}, ensure_ascii=False) + "\n")
    else:
        err_console.print(f"[red]error[/red] {path}: {reason}")


def _print_document(doc, detector: str) -> None:
    repair = f"repaired ({doc.repair.codec}, {doc.repair.lines_repaired} lines)" if doc.repair.repaired else "no repair"
    console.print(
        f"[bold]{doc.title}[/bold]  "
        f"[dim]{doc.kind.value}/{doc.format} id={doc.doc_id} lang={doc.language} {repair}[/dim]"
    )
    console.print(f"  {doc.source_path}  (format by {detector})", style="dim", markup=False, highlight=False)
    for turn in doc.turns[:6]:
        when = turn.timestamp.isoformat(sep=" ") if turn.timestamp else ""
        model = f" · {turn.model}" if turn.model else ""
        console.print(f"  [cyan]{turn.role}{model}[/cyan] [dim]{when}[/dim]: {escape(one_line(turn.text, 110))}")
    for section in doc.sections[:6]:
        page = f"p.{section.page} " if section.page else ""
        console.print(f"  [cyan]{page}{' > '.join(section.heading_path)}[/cyan]: {escape(one_line(section.text, 110))}")
    for segment in doc.segments[:6]:
        console.print(
            f"  [cyan]{clock(segment.start)}-{clock(segment.end)} {segment.speaker or ''}[/cyan]: "
            f"{escape(one_line(segment.text, 110))}"
        )
    units = doc.n_units()
    if units > 6:
        console.print(f"  [dim]... {units - 6} more[/dim]")


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="files/folders to ingest; default: the configured sources")
    ] = None,
    index: Annotated[bool, typer.Option("--index/--no-index", help="also chunk, embed and index what changed")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as JSON")] = False,
    prune_missing: Annotated[
        bool, typer.Option("--prune-missing", help="remove the documents of source folders that are missing or emptied")
    ] = False,
) -> None:
    """Ingest sources into the document store and index them (incremental: only changes cost work)."""
    from memory_pipeline.ingest.pipeline import ingest_all

    config = state.config()
    missing = [p for p in paths or [] if not p.exists()]
    for path in missing:
        err_console.print(f"[red]error[/red] {path}: does not exist")
    reports = ingest_all(config, paths=paths or None, prune_missing=prune_missing or None)
    index_report = _sync_index(config) if index else None
    if as_json:
        payload = {k.value: r.model_dump(mode="json") for k, r in reports.items()}
        if index_report is not None:
            payload["index"] = index_report.model_dump(mode="json")
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    else:
        _print_ingest_reports(reports)
        if index_report is not None:
            r = index_report
            console.print(
                f"index: {r.docs_indexed} documents (re)indexed, {r.docs_deleted} removed; chunks +{r.chunks_added} "
                f"-{r.chunks_removed} = {r.chunks_total}; embedded {r.embedded}, cache hits {r.cache_hits}; "
                f"{r.seconds:.1f}s"
            )
            if r.migrated_from:
                console.print(("[red]" if r.not_migrated else "[yellow]") + r.migration_line())
    if missing or any(r.errors for r in reports.values()) or (index_report is not None and index_report.not_migrated):
        raise typer.Exit(1)


def _sync_index(config: Config):
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore

    return sync_index(config, DocumentStore(config.documents_dir), load_embedder(config.embedding), progress=True)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for (any language)")],
    k: Annotated[
        int | None, typer.Option("-k", help="number of hits", show_default="search.default_k in the config: 10")
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="dialogue | article | lecture | profile")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="vector | fts | hybrid (default from config)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per hit")] = False,
    no_service: Annotated[
        bool, typer.Option("--no-service", help="search in-process even when a service is up")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="from this date: 2024-03-01, 'last month', 'два месяца назад'")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="up to this date (inclusive for a bare date)")] = None,
    include_discard: Annotated[
        bool, typer.Option("--include-discard", help="also recall items tiered discard")
    ] = False,
) -> None:
    """Search the memory. Uses a running service when one is up, else searches in-process."""
    from memory_pipeline.errors import SearchError

    config = state.config()
    try:
        hits, answered_by = _find_hits(
            config,
            query,
            k=k,
            kind=kind,
            mode=mode,
            use_service=not no_service,
            since=since,
            until=until,
            include_discard=include_discard,
        )
    except SearchError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _print_hits(hits, as_json)
    if not as_json:
        console.print(f"[dim]{answered_by}[/dim]")


def _find_hits(
    config: Config, query: str, *, k: int | None, kind: str | None, mode: str | None, use_service: bool, **recall
):
    """Hits and who answered: a warm service has the model loaded, so it is tried first."""
    if use_service:
        from memory_pipeline.service.client import service_search, service_url  # httpx: not imported for --no-service

        hits = service_search(config, query, k=k, kind=kind, mode=mode, **recall)
        if hits is not None:
            return hits, f"via service at {service_url(config)}"
    from memory_pipeline.index.search import search as run_search

    return run_search(config, query, k=k, kind=kind, mode=mode, **recall), "in-process"


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        for hit in hits:
            sys.stdout.write(hit.model_dump_json() + "\n")
        return
    if not hits:
        console.print("[dim]no hits[/dim]")
    for number, hit in enumerate(hits, start=1):
        date = f"{hit.created_at:%Y-%m-%d}" if hit.created_at else "undated"
        console.print(
            f"[bold]{number}. {escape(hit.title)}[/bold]  "
            f"[dim]{date} · {hit.kind} · {hit.tier} · score {hit.score:.3f} · {_position(hit)}[/dim]"
        )
        console.print(f"   [dim]{escape(hit.source_file or hit.source_path)}[/dim]")
        console.print(f"   {escape(hit_preview(hit.text, 300))}")


def _write_json(model) -> None:
    """A command's report as one JSON line: the contract model itself, so the output and the files agree."""
    sys.stdout.write(json.dumps(model.model_dump(mode="json"), ensure_ascii=False) + "\n")


def _position(hit) -> str:
    """The shared position of a hit, plus the lecture's speaker where known."""
    return " ".join(part for part in (position_of(hit), getattr(hit, "speaker", None)) if part)


def _route_reason(route: dict) -> str:
    """What decided an adapter's route score: stance phrases for core, the nearest example for a topic."""
    if "stance" in route:
        if not route.get("eligible"):
            return f"score {route['score']:.2f}: not the user's own text (or too short)"
        found = "; ".join(route["stance"]) or "no stance phrase or argument"
        return f"stance {route['score']:.2f} ({found}); similarity to the description {route['sim']:.2f}"
    if "nearest" in route:
        from memory_pipeline.scoring.routing import CONTRAST_MARGIN, on_topic

        keywords = f"; keywords seen (not deciding): {', '.join(route['keywords'])}" if route.get("keywords") else ""
        contrast = route.get("contrast")
        if contrast is None:
            return f"similarity {route['score']:.2f} to «{route['nearest']}»{keywords}"
        verdict = (
            "closer to the topic"
            if on_topic(route["sim"], contrast)
            else f"not routed: not {CONTRAST_MARGIN:.2f} closer to the topic than to the alternative"
        )
        return (
            f"similarity {route['sim']:.2f} to «{route['nearest']}», {contrast:.2f} to the nearest alternative "
            f"«{route['contrast_nearest']}» ({verdict}){keywords}"
        )
    return _readable(route)


@app.command("eval-retrieval")
def eval_retrieval(
    questions: Annotated[
        Path | None, typer.Option("--questions", help="question set JSONL (default: the bundled one)")
    ] = None,
    queries: Annotated[int, typer.Option("--queries", help="self-supervised queries as well (0: none)")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="the figures as one JSON object")] = False,
) -> None:
    """Recall@1/5/10 and MRR per search mode on hand-written (and self-supervised) questions; fusion weight tuned."""
    from memory_pipeline.index.evaluation import evaluate_questions, evaluate_retrieval, load_questions
    from memory_pipeline.index.search import Searcher

    config = state.config()
    searcher = Searcher(config)
    result = {"question_set": evaluate_questions(config, searcher=searcher, questions=load_questions(questions))}
    if queries > 0:
        result["self_supervised"] = evaluate_retrieval(config, searcher=searcher, n_queries=queries)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    qs = result["question_set"]
    console.print(
        f"question set: {qs['answerable']} of {qs['questions']} answerable in this memory; model {qs['model_id']}"
    )
    parts = (
        ("modes", "all questions"),
        ("tune", "tune split"),
        ("report", "report split"),
        ("cross_lingual", "cross-lingual"),
    )
    for part, title in parts:
        title = f"{title} ({qs[part]['questions']}; hybrid_fts_weight {qs['hybrid_fts_weight']})"
        _print_modes(title, {m: qs[part][m] for m in ("vector", "fts", "hybrid")})
    tuning = qs["fusion_tuning"]
    console.print(
        f"tuned on the tune split: hybrid_fts_weight {tuning['best_fts_weight']}; "
        f"report split: {tuning['report_at_best']}"
    )
    if "self_supervised" in result:
        ss = result["self_supervised"]
        _print_modes(f"self-supervised ({ss['queries']} sentences from answers)", ss["modes"])


def _print_modes(title: str, modes: dict[str, dict]) -> None:
    table = Table(title=title)
    columns = list(dict.fromkeys(c for figures in modes.values() for c in figures))
    table.add_column("mode")
    for column in columns:
        table.add_column(column, justify="right")
    for mode_name, figures in modes.items():
        table.add_row(
            mode_name,
            *(f"{figures[c]:.3f}" if isinstance(figures.get(c), float) else str(figures.get(c, "")) for c in columns),
        )
    console.print(table)


def _print_ingest_reports(reports) -> None:
    for kind, r in reports.items():
        console.print(
            f"[bold]{kind.value}[/bold]: {r.files_seen} files ({r.files_parsed} parsed, {r.files_unchanged} unchanged, "
            f"{r.files_moved} moved, {r.files_failed} failed, {r.files_removed} gone) -> "
            f"{r.documents_written} documents written, {r.documents_removed} removed; {r.documents_total} stored; "
            f"{r.repaired_documents} repaired; {r.seconds:.2f}s"
        )
    for r in reports.values():
        for error in r.errors:
            err_console.print(f"[red]error[/red] {error.path}: {error.reason}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="bind address (default from config: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="port (default from config)")] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="answer chats with the base model + current adapters in-process (slow on CPU)"),
    ] = False,
) -> None:
    """Serve search, dialogue capture and the OpenAI-compatible memory proxy over HTTP."""
    from memory_pipeline.service.app import serve as run_server

    run_server(state.config(), host=host, port=port, local=local)


@app.command()
def promote(
    as_json: Annotated[bool, typer.Option("--json", help="the scoring report as one JSON object")] = False,
) -> None:
    """Score every indexed item and tier it (cache / rag / lora:<adapter> / discard); incremental."""
    from memory_pipeline.scoring.engine import run_promotion

    report = run_promotion(state.config(), progress=True)
    if as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
        return
    console.print(
        f"scored {report.items_total} items: {report.items_new} new, {report.items_changed} changed, "
        f"{report.items_rescored} rescored, {report.items_removed} removed; {report.seconds:.1f}s"
    )
    console.print("tiers: " + ", ".join(f"{k}={v}" for k, v in sorted(report.tiers.items())))
    console.print("adapters: " + ", ".join(f"{k}={v}" for k, v in sorted(report.adapters.items())))


@app.command()
def explain(
    item_id: Annotated[str, typer.Argument(help="an item id (see `tiers` or the UI)")],
    as_json: Annotated[bool, typer.Option("--json", help="the explanation as one JSON object")] = False,
) -> None:
    """Each signal of an item with its weight and contribution, and why it got its tier."""
    from memory_pipeline.scoring.explain import explain_item

    e = explain_item(state.config(), item_id)
    if as_json:
        sys.stdout.write(e.model_dump_json() + "\n")
        return
    when = f" · {e.created_at:%Y-%m-%d}" if e.created_at else ""
    where = position_of(e.unit) or "whole document"
    console.print(f"[bold]{escape(e.title)}[/bold]  [dim]{e.kind} · {escape(where)}{when} · {e.doc_id}[/dim]")
    console.print(
        f"score [bold]{e.score:.3f}[/bold] (recall {e.recall_score:.3f}) -> tier [bold]{e.tier}[/bold]  ({e.tier_rule})"
    )
    table = Table()
    for column in ("signal", "value", "weight", "contribution", "why"):
        table.add_column(column)
    for s in e.signals:
        table.add_row(s.name, f"{s.value:.3f}", f"{s.weight:g}", f"{s.contribution:.3f}", escape(s.reason))
    console.print(table)
    for adapter, route in e.routes.items():
        console.print(f"route {adapter}: {escape(_route_reason(route))}")
    if e.superseded_by:
        console.print(f"restated later by {e.superseded_by} (preferred in recall)")
    if e.restated_from:
        console.print(f"restates {', '.join(e.restated_from)}")
    for change in e.history:
        moved = f"{change['from_tier'] or '(new)'} -> {change['to_tier']}"
        console.print(f"{change['at']:%Y-%m-%d %H:%M} {moved}: {escape(change['reason'])}")
    if e.related:
        console.print("items named above:")
    for ref in e.related.values():
        where = " · ".join(filter(None, [ref.date, ref.position]))
        console.print(f"  {ref.item_id}: {escape(one_line(ref.title, 60))}  [dim]{escape(where)}[/dim]")
    console.print(f"[dim]{escape(e.preview)}[/dim]")


def _readable(figures: dict) -> str:
    """A route's figures as a person reads them: 'score 0.441, sim 0.291, keywords: running', empty lists left out."""
    parts = []
    for name, value in figures.items():
        if isinstance(value, bool):
            parts.append(f"{name}: {'yes' if value else 'no'}")
        elif isinstance(value, float):
            parts.append(f"{name} {value:.3f}")
        elif isinstance(value, list):
            parts.extend([f"{name}: {', '.join(map(str, value))}"] if value else [])
        else:
            parts.append(f"{name} {value}")
    return ", ".join(parts)


@app.command()
def tiers(
    as_json: Annotated[bool, typer.Option("--json", help="counts and samples as one JSON object")] = False,
) -> None:
    """Counts per tier and per adapter, with the top items of each: title, date, position, item id."""
    from memory_pipeline.scoring.explain import tier_summary

    summary = tier_summary(state.config())
    if as_json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
        return
    console.print(f"{summary['items']} items")
    groups = [(tier, count) for tier, count in summary["tiers"].items()]
    groups += [(f"lora:{adapter}", count) for adapter, count in summary["adapters"].items()]
    for group, count in groups:
        console.print(f"[bold]{group:<12}[/bold] {count:>6}")
        for example in summary["examples"].get(group, [])[:3]:
            where = " · ".join(filter(None, [example["date"], example["position"]]))
            title = escape(one_line(example["title"], 60))
            figures = f"{escape(where)} · score {example['score']:.3f} · {example['item_id']}"
            console.print(f"    {title}  [dim]{figures}[/dim]")


datasets_app = typer.Typer(
    help="LoRA training sets: build and list versions.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("build")
def datasets_build(
    adapter: Annotated[str | None, typer.Option("--adapter", help="one adapter; default: all")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per adapter, with its card")] = False,
) -> None:
    """Build a new training set version per adapter from its promoted items (same code as the asset)."""
    from memory_pipeline.datasets.build import build_dataset_for_adapter

    config = state.config()
    for name in [adapter] if adapter else [a.name for a in config.adapters]:
        result = build_dataset_for_adapter(config, name)
        if as_json:
            _write_json(result)
            continue
        state_label = "new version" if result.created else (result.message or "unchanged")
        counts = f"train={result.card.counts.train} eval={result.card.counts.eval}" if result.card else "train=0 eval=0"
        console.print(f"{name}: {result.version or '-'} ({state_label}) {counts}  {result.path}")


@datasets_app.command("list")
def datasets_list(as_json: Annotated[bool, typer.Option("--json", help="the versions as a JSON list")] = False) -> None:
    """Versions of every adapter's training set with sizes and paths."""
    from memory_pipeline.datasets.versions import latest_version_name, list_versions

    config = state.config()
    rows = []
    for v in list_versions(config):
        card = v.card
        files = {f.name: f.stat().st_size for f in v.path.glob("*.jsonl")}
        counted = {name: entry.examples for name, entry in card.files.data.items()}
        rows.append(
            {
                "adapter": v.adapter,
                "version": v.version,
                "latest": latest_version_name(config, v.adapter) == v.version,
                "train": card.counts.train,
                "eval": card.counts.eval,
                "bytes": sum(files.values()),
                "content_hash": card.content_hash,
                "path": str(v.path),
                "files": {
                    f.name: {"examples": _examples(f, counted), "bytes": files[f.name], "path": str(f)}
                    for f in v.data_files
                },
                "exports": {name: str(path) for name, path in v.exports.items()},
            }
        )
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    if not rows:
        console.print("[dim]no training sets yet[/dim]")
    for r in rows:
        mark = "*" if r["latest"] else " "
        console.print(
            f"{mark} {r['adapter']:<10} {r['version']}  train={r['train']} eval={r['eval']}  "
            f"{r['bytes'] / 1e6:.2f} MB  {r['path']}"
        )
        counts = "  ".join(f"{name}={f['examples']}" for name, f in r["files"].items())
        exports = "  ".join(Path(p).name for p in r["exports"].values())
        console.print(f"    {counts}" + (f"  exports: {exports}" if exports else ""))


def _examples(path: Path, counted: dict[str, int]) -> int:
    """The card's count for this data file; lines counted only for cards older than that field."""
    if path.name in counted:
        return counted[path.name]
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


adapters_app = typer.Typer(
    help="LoRA adapters: train, list, activate, roll back, export.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(adapters_app, name="adapters")


@adapters_app.command("train")
def adapters_train(
    name: Annotated[str, typer.Argument(help="adapter name from the config, e.g. core")],
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="override training.max_steps")] = None,
    force: Annotated[bool, typer.Option("--force", help="train even if the training set has an adapter")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the version trained (verdict, metrics) or why none")] = False,
) -> None:
    """Train a new version on the adapter's latest training set unless it already has one (as the asset does);
    `current` moves only if the gate passes."""
    from memory_pipeline.adapters import plan_training, train_adapter

    config = state.config()
    config.adapter(name)
    run = plan_training(config, name, force=force)
    if run.dataset_dir is None:
        err_console.print(
            f"[red]no training set for {name!r} yet: run `memory-pipeline datasets build --adapter {name}`[/red]"
        )
        raise typer.Exit(1)
    if not run.skipped:
        log = partial(err_console.print, markup=False)  # the log goes to stderr, so --json output stays one line
        version = train_adapter(config, name, run.dataset_dir, max_steps=max_steps, log=log)
        run = run.model_copy(update={"version": version})
    if as_json:
        _write_json(run)
        return
    if run.version is None:
        console.print(f"{name}: nothing trained: {run.skipped} (--force trains on it again)")
        return
    version = run.version
    verdict = (
        "[green]passed the gate, now current[/green]"
        if version.passed
        else "[yellow]failed the gate; current unchanged[/yellow]"
    )
    console.print(f"{name} {version.version}: {verdict}")
    for reason in version.metrics.gate_reasons:
        console.print(f"  {reason}")
    console.print(f"  card: {version.path / 'card.md'}")


@adapters_app.command("list")
def adapters_list(as_json: Annotated[bool, typer.Option("--json", help="the versions as a JSON list")] = False) -> None:
    """Versions of every adapter with every figure the gate read, its verdict, and which one is current."""
    from memory_pipeline.adapters import current_version, list_versions
    from memory_pipeline.adapters.card import demo_note, figures

    config = state.config()
    versions = []
    for adapter in config.adapters:
        current = current_version(config, adapter.name)
        versions += [
            (v, current is not None and current.version == v.version) for v in list_versions(config, adapter.name)
        ]
    if as_json:
        rows = [
            {
                "adapter": v.name,
                "version": v.version,
                "current": is_current,
                "gate_passed": v.passed,
                "gate_reasons": v.metrics.gate_reasons,
                **v.metrics.model_dump(mode="json", include=set(_LIST_FIGURES)),
                "dataset_version": v.manifest.dataset.version if v.manifest.dataset else None,
                "path": str(v.path),
            }
            for v, is_current in versions
        ]
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    if not versions:
        console.print("[dim]no adapters trained yet[/dim]")
        return
    note = demo_note(versions[0][0].manifest.base.id)
    # One small table per version, figures down the side: 15 figures side by side do not fit a terminal.
    for v, is_current in versions:
        dataset = v.manifest.dataset.version if v.manifest.dataset else "-"
        title = (
            f"{v.name} {v.version} · {'current · ' if is_current else ''}gate {'pass' if v.passed else 'fail'}"
            f" · dataset {dataset}"
        )
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("figure", style="dim")
        table.add_column("base → adapter")
        for figure, value in figures(v.metrics).items():
            table.add_row(figure, value)
        console.print(table)
    for v, _ in versions:
        failed = v.metrics.failed_reasons
        if failed:
            console.print(f"{v.name} {v.version}: " + "; ".join(failed))
    if note:
        console.print(f"[dim]{note}[/dim]")


_LIST_FIGURES = (
    "eval_ppl_base",
    "eval_ppl_adapter",
    "eval_ppl_previous",
    "heldout_ppl_base",
    "heldout_ppl_adapter",
    "heldout_ppl_previous",
    "generation",
    "similarity_base",
    "similarity_adapter",
    "similarity_examples",
    "steps",
    "tokens_per_second",
    "stopped",
)


@adapters_app.command("activate")
def adapters_activate(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument(help="version to make current, e.g. v0002-20261124T2205")],
    reason: Annotated[str, typer.Option("--reason", help="recorded with the change")] = "manual activation",
    as_json: Annotated[bool, typer.Option("--json", help="the version now current as JSON")] = False,
) -> None:
    """Make a version current by hand (overrides the gate; recorded with the reason)."""
    from memory_pipeline.adapters import activate

    _print_current(activate(state.config(), name, version, by="cli", reason=reason), as_json)


@adapters_app.command("rollback")
def adapters_rollback(
    name: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json", help="the version now current as JSON")] = False,
) -> None:
    """Move `current` back to the previous version that passed the gate."""
    from memory_pipeline.adapters import rollback

    _print_current(rollback(state.config(), name, by="cli"), as_json)


def _print_current(version, as_json: bool) -> None:
    if as_json:
        _write_json(version)
        return
    console.print(f"{version.name}: current is now {version.version}")


@adapters_app.command("export")
def adapters_export(
    names: Annotated[str | None, typer.Argument(help="comma-separated adapters, e.g. core,sport; default: all")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="default: storage/adapters/export")] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="per adapter in core+topic, e.g. core=1,sport=0.5")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="what serving.json holds, as JSON")] = False,
) -> None:
    """Write the current adapters for serving: one folder each, core+topic combined, and the `vllm serve` command."""
    from memory_pipeline.adapters.export import export_for_serving

    config = state.config()
    parts = [n.strip() for n in names.split(",") if n.strip()] if names else None
    parsed: dict[str, float] = {}
    for item in (weights or "").split(","):
        if item.strip():
            name, _, value = item.partition("=")
            try:
                parsed[name.strip()] = float(value)
            except ValueError:
                err_console.print(f"[red]--weights: {item!r} is not NAME=NUMBER[/red]")
                raise typer.Exit(2) from None
    target = output or config.adapters_dir / "export"
    record = export_for_serving(config, target, names=parts, weights=parsed)
    if as_json:
        _write_json(record)
        return
    for module in record.modules.values():
        sources = " + ".join(f"{s.weight:g}×{s.name} {s.version}" for s in module.sources)
        console.print(f"{target / module.path}  (r={module.r}: {sources})")
    console.print(f"serve with vLLM ({target / 'vllm_serve.sh'}):")
    console.print(record.command, markup=False, highlight=False, soft_wrap=True)


@app.command()
def chat(
    adapters: Annotated[
        str, typer.Option("--adapters", help="comma-separated adapters to load, e.g. core,sport; '' = base")
    ] = "core",
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="one message; omit for an interactive chat")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="default: generation.max_new_tokens")
    ] = None,
) -> None:
    """Chat with the base model plus the current versions of the given adapters, locally (loaded once, streamed)."""
    from memory_pipeline.adapters import ChatSession

    config = state.config()
    names = [n.strip() for n in adapters.split(",") if n.strip()]
    session = ChatSession(config, names)
    label = "+".join(names) or "base"
    interactive = message is None
    if interactive:
        console.print(f"[dim]{label} loaded; an empty line or end of input (Ctrl-D) ends the chat[/dim]")
    while True:
        if interactive:
            try:
                text = input("you> ")
            except EOFError:
                console.print()
                return
        else:
            text = message
        if not text.strip():
            return
        console.print(f"[cyan]{label}[/cyan]: ", end="")
        session.reply(text, on_text=_write_now, max_new_tokens=max_new_tokens)
        console.print()
        if not interactive:
            return


def _write_now(text: str) -> None:
    """A streamed piece of a reply, shown at once (stdout may be a pipe, which would buffer it)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _repo_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "definitions.py").is_file():
        err_console.print("[red]this command needs a source checkout (definitions.py next to memory_pipeline/)[/red]")
        raise typer.Exit(2)
    return root


# `dagster dev`, `job execute` and `asset materialize` warn on every start that `dg` (dagster-dg-cli, not
# installed here) supersedes them: a notice about Dagster's own commands that no user of this project can act
# on. Only those warnings are filtered (PYTHONWARNINGS reaches the webserver, daemon and code servers too).
_DAGSTER_COMMAND_NOTICES = ",".join(
    f"ignore:Function `{command}` is superseded:FutureWarning"
    for command in ("dev_command", "job_execute_command", "asset_materialize_command")
)


def _dagster(*args: str, config: Config) -> None:
    import subprocess

    from memory_pipeline.instance import dagster_env

    root = _repo_root()
    command = [str(Path(sys.executable).with_name("dagster")), *args]
    console.print(f"[dim]$ {' '.join(command)}[/dim]")
    env = dagster_env(config)
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), _DAGSTER_COMMAND_NOTICES]))
    code = subprocess.call(command, cwd=root, env=env)
    if code != 0:
        err_console.print(f"[red]dagster exited with {code}; the run is in the UI with its logs[/red]")
        raise typer.Exit(code)


DEMO_QUERIES = ("как обучить маленькую LLM на своём железе", "marathon pacing")


@app.command()
def demo() -> None:
    """Run the main job end to end through the real Dagster instance, then show a search and where to look."""
    config = state.config()
    _dagster("job", "execute", "-f", "definitions.py", "-j", "memory_job", config=config)
    for adapter in config.adapters:
        _dagster(
            "asset",
            "materialize",
            "-f",
            "definitions.py",
            "--select",
            "training_sets,lora_adapters",
            "--partition",
            adapter.name,
            config=config,
        )
    _print_adapter_verdicts(config)
    from memory_pipeline.index.search import search as run_search

    for query in DEMO_QUERIES:
        console.rule(f"memory-pipeline search {query!r}")
        _print_hits(run_search(config, query, k=3), as_json=False)
    root = _repo_root()
    console.rule("where to look")
    console.print(
        f"UI:      DAGSTER_HOME={config.dagster_home} {Path(sys.executable).with_name('dagster')} "
        f"dev -w {root / 'workspace.yaml'}"
    )
    console.print("         (or: memory-pipeline ui) then open http://127.0.0.1:3000")
    console.print(f"files:   {config.storage_root}  (what lives where: storage/README.md)")
    console.print(f'search:  {Path(sys.executable).with_name("memory-pipeline")} search "ваш запрос"')


def _print_adapter_verdicts(config: Config) -> None:
    """Each adapter's newest version: passed or failed the gate and why, honestly, whatever the figures are."""
    from memory_pipeline.adapters import list_versions
    from memory_pipeline.adapters.card import demo_note

    console.rule("adapters")
    note = None
    for adapter in config.adapters:
        versions = list_versions(config, adapter.name)
        if not versions:
            console.print(f"{adapter.name}: not trained (no training set yet)")
            continue
        newest = versions[-1]
        note = note or demo_note(newest.manifest.base.id)
        failed = [r.removeprefix("fail: ") for r in newest.metrics.failed_reasons]
        verdict = "passed the gate" if newest.passed else "failed the gate: " + "; ".join(failed)
        console.print(f"{adapter.name} {newest.version}: {verdict} (card: {newest.path / 'card.md'})")
    if note:
        console.print(f"[dim]{note}[/dim]")


@app.command()
def ui(port: Annotated[int, typer.Option("--port", help="webserver port")] = 3000) -> None:
    """Start the Dagster UI and daemon (schedules, sensors) on this machine's instance."""
    config = state.config()
    _dagster("dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port), config=config)


# --- backup and restore (memory_pipeline/backup.py) ---


@app.command()
def backup(
    destination: Annotated[Path, typer.Argument(help="new folder for the backup (must not exist or be empty)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Copy the whole memory into DESTINATION, consistent while the service and the pipeline run."""
    from memory_pipeline.backup import backup as run_backup

    _print_backup(lambda: run_backup(state.config(), destination), as_json, "backup")


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="a folder written by `memory-pipeline backup`")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Restore a backup into the storage root (--storage), which must hold no memory yet."""
    from memory_pipeline.backup import restore as run_restore

    _print_backup(lambda: run_restore(state.config(), source), as_json, "restore")


def _print_backup(copy, as_json: bool, what: str) -> None:
    from memory_pipeline.errors import StoreError

    try:
        report = copy()
    except StoreError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
        return
    console.print(
        f"{what}: {report.source} -> {report.destination}: {report.files} files, {report.bytes / 1e6:.1f} MB, "
        f"{len(report.lance_tables)} LanceDB tables, {len(report.sqlite_databases)} SQLite databases; "
        f"{report.seconds:.1f}s"
    )
    for table, version in report.lance_tables.items():
        console.print(f"  [dim]{table} @ version {version}[/dim]")
    for reason in report.skipped:
        console.print(f"  [yellow]not copied:[/yellow] {reason}")


# --- end backup and restore ---


def run() -> None:
    """Console entry point: the project's own errors become one clear line and exit code 2, not a traceback."""
    from memory_pipeline.errors import SearchError, StoreError

    try:
        app()
    except (ConfigError, ParseError, SearchError, StoreError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    run()
