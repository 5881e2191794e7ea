"""The search fast path: service_search against the real service on loopback, and the CLI using it."""

import pytest
import yaml
from test_service import _free_port, running
from typer.testing import CliRunner

from memory_pipeline import cli
from memory_pipeline.config import Config
from memory_pipeline.errors import SearchError
from memory_pipeline.index.search import search
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.service.app import create_app
from memory_pipeline.service.client import service_search

pytestmark = pytest.mark.slow
QUERIES = ("бегать марафон", "pressing game", "как сохранить урожай томатов")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Config:
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index

    root = tmp_path_factory.mktemp("client")
    notes = root / "articles"
    notes.mkdir()
    (notes / "running.md").write_text(
        "# Бег\n\nЛёгкий бег в разговорном темпе развивает аэробную базу марафонца.\n\n"
        "# Football\n\nA pressing game needs compact lines and fast recovery runs.\n",
        encoding="utf-8",
    )
    (notes / "garden.md").write_text(
        "# Огород\n\nТоматы любят солнце, мульча сохраняет влагу в жару.\n\n"
        "# Harvest\n\nPick tomatoes when they blush and let them ripen indoors.\n",
        encoding="utf-8",
    )
    config = Config(storage_root=root / "storage", sources={"articles": [notes]})
    ingest_all(config)
    sync_index(config, DocumentStore(config.documents_dir), load_embedder(config.embedding), progress=False)
    return config


def _pointed_at(config: Config, base: str, *, token: str | None = None) -> Config:
    """The same config with service.port (and token) set to reach the server ``running`` started."""
    client_config = config.model_copy(deep=True)
    client_config.service.port = int(base.rsplit(":", 1)[1])
    client_config.service.token = token
    return client_config


def _ids(hits) -> list[str]:
    return [h.chunk_id for h in hits]


def test_service_answers_like_in_process_search(config):
    with running(create_app(config)) as base:
        client_config = _pointed_at(config, base)
        for query in QUERIES:
            for mode in ("vector", "fts", "hybrid"):
                remote = service_search(client_config, query, k=3, mode=mode)
                assert remote is not None
                assert _ids(remote) == _ids(search(config, query, k=3, mode=mode)), (query, mode)
        assert _ids(service_search(client_config, "томаты", kind="article")) == _ids(
            search(config, "томаты", kind="article")
        )


def test_nothing_listening_means_none(config):
    idle = config.model_copy(deep=True)
    idle.service.port = _free_port()
    assert service_search(idle, "бег", k=3) is None


def test_bad_query_raises_the_search_error_not_a_fallback(config):
    with running(create_app(config)) as base:
        client_config = _pointed_at(config, base)
        too_long = "бег " * config.search.max_query_chars
        with pytest.raises(SearchError) as in_process:
            search(config, too_long)
        with pytest.raises(SearchError) as remote:
            service_search(client_config, too_long)
        assert str(remote.value) == str(in_process.value)
        with pytest.raises(SearchError, match="kind"):
            service_search(client_config, "бег", kind="podcast")
        with pytest.raises(SearchError, match="query"):
            service_search(client_config, "")


def test_bearer_token_from_config_or_environment(config, monkeypatch):
    guarded = config.model_copy(deep=True)
    guarded.service.token = "s3cret"
    with running(create_app(guarded)) as base:
        assert service_search(_pointed_at(config, base, token="s3cret"), "бег", k=2)
        assert service_search(_pointed_at(config, base, token="wrong"), "бег", k=2) is None
        monkeypatch.setenv("MEMORY_PIPELINE_TOKEN", "s3cret")
        assert service_search(_pointed_at(config, base), "бег", k=2)


def _run_cli(config: Config, tmp_path, monkeypatch, *args: str):
    """The CLI with a fresh state and a config file that names this storage and service port."""
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(
        yaml.safe_dump({"storage_root": str(config.storage_root), "service": {"port": config.service.port}}),
        encoding="utf-8",
    )
    monkeypatch.setattr(cli, "state", cli._State())
    return CliRunner().invoke(cli.app, ["--config", str(config_file), "search", *args])


def test_cli_search_uses_the_service_when_up(config, tmp_path, monkeypatch):
    with running(create_app(config)) as base:
        client_config = _pointed_at(config, base)
        result = _run_cli(client_config, tmp_path, monkeypatch, "бегать марафон", "-k", "2")
        assert result.exit_code == 0, result.output
        assert f"via service at {base}" in result.output and "running.md" in result.output
        forced = _run_cli(client_config, tmp_path, monkeypatch, "бегать марафон", "-k", "2", "--no-service")
        assert forced.exit_code == 0, forced.output
        assert "in-process" in forced.output and "via service" not in forced.output
        bad = _run_cli(client_config, tmp_path, monkeypatch, "бег", "--kind", "podcast")
        assert bad.exit_code == 2 and "kind" in bad.output


def test_cli_search_falls_back_when_no_service(config, tmp_path, monkeypatch):
    idle = config.model_copy(deep=True)
    idle.service.port = _free_port()
    result = _run_cli(idle, tmp_path, monkeypatch, "бегать марафон", "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    assert "running.md" in result.output and "in-process" not in result.output
