"""The ``memory-pipeline`` command line: the same core functions the Dagster assets call."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV, Config, load_config
from memory_pipeline.errors import ConfigError, ParseError

app = typer.Typer(
    help="A local, private memory for your AI: ingest, index, search, score and distil into LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class _State:
    config_path: Optional[Path] = None
    storage: Optional[Path] = None
    _config: Optional[Config] = None

    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path, storage=self.storage)
            except ConfigError as exc:
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
        return self._config


state = _State()


@app.callback()
def main(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", envvar=CONFIG_ENV, help="config YAML file")] = None,
    storage: Annotated[Optional[Path], typer.Option("--storage", envvar=STORAGE_ENV, help="storage root folder")] = None,
) -> None:
    state.config_path = config
    state.storage = storage


@app.command()
def parse(
    files: Annotated[list[Path], typer.Argument(help="files or folders to parse (folders are walked recursively)")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line: a document or an error")] = False,
) -> None:
    """Show what files parse into, without storing anything (for debugging exports)."""
    from memory_pipeline.sources import discover_sources, parse_file

    failures = 0
    for root in files:
        if not root.exists():
            failures += 1
            _print_parse_error(ParseError(root, "does not exist"), as_json)
            continue
        for unit in discover_sources(root):
            try:
                for doc in parse_file(unit.path):
                    if as_json:
                        sys.stdout.write(doc.model_dump_json() + "\n")
                    else:
                        _print_document(doc)
            except ParseError as exc:
                failures += 1
                _print_parse_error(exc, as_json)
    if failures:
        raise typer.Exit(1)


def _print_parse_error(exc: ParseError, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"error": exc.reason, "path": exc.path}, ensure_ascii=False) + "\n")
    else:
        err_console.print(f"[red]error[/red] {exc.path}: {exc.reason}")


def _print_document(doc) -> None:
    repair = f"repaired ({doc.repair.codec}, {doc.repair.lines_repaired} lines)" if doc.repair.repaired else "no repair"
    console.print(f"[bold]{doc.title}[/bold]  [dim]{doc.kind.value}/{doc.format} id={doc.doc_id} lang={doc.language} {repair}[/dim]")
    console.print(f"  [dim]{doc.source_path}[/dim]")
    for turn in doc.turns[:6]:
        when = turn.timestamp.isoformat(sep=" ") if turn.timestamp else ""
        model = f" · {turn.model}" if turn.model else ""
        console.print(f"  [cyan]{turn.role}{model}[/cyan] [dim]{when}[/dim]: {_preview(turn.text)}")
    for section in doc.sections[:6]:
        page = f"p.{section.page} " if section.page else ""
        console.print(f"  [cyan]{page}{' > '.join(section.heading_path)}[/cyan]: {_preview(section.text)}")
    for segment in doc.segments[:6]:
        console.print(f"  [cyan]{_clock(segment.start)}-{_clock(segment.end)} {segment.speaker or ''}[/cyan]: {_preview(segment.text)}")
    units = len(doc.turns) + len(doc.sections) + len(doc.segments)
    if units > 6:
        console.print(f"  [dim]... {units - 6} more[/dim]")


def _preview(text: str, width: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@app.command()
def ingest(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="files/folders to ingest; default: the configured sources")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as JSON")] = False,
) -> None:
    """Ingest sources into the document store (incremental: unchanged files are skipped)."""
    from memory_pipeline.ingest import ingest_all

    config = state.config()
    reports = ingest_all(config, paths=paths or None)
    if as_json:
        sys.stdout.write(json.dumps({k.value: r.model_dump(mode="json") for k, r in reports.items()}, ensure_ascii=False) + "\n")
    else:
        _print_ingest_reports(reports)
    if any(r.errors for r in reports.values()):
        raise typer.Exit(1)


def _print_ingest_reports(reports) -> None:
    table = Table(title="ingest")
    for column in ("kind", "seen", "parsed", "unchanged", "failed", "written", "removed", "total", "repaired", "seconds"):
        table.add_column(column, justify="right" if column != "kind" else "left")
    for kind, r in reports.items():
        table.add_row(kind.value, *map(str, (r.files_seen, r.files_parsed, r.files_unchanged, r.files_failed, r.documents_written, r.documents_removed, r.documents_total, r.repaired_documents, r.seconds)))
    console.print(table)
    for r in reports.values():
        for error in r.errors:
            err_console.print(f"[red]error[/red] {error.path}: {error.reason}")


if __name__ == "__main__":
    app()
