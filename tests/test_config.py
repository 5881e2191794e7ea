"""Config loading: documented defaults, key-naming errors, env and path resolution."""

from pathlib import Path

import pytest

from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV, load_config
from memory_pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_config_is_valid_and_resolves_paths_against_its_folder():
    config = load_config(REPO / "memory_pipeline.yaml")
    assert config.storage_root == REPO / "storage"
    assert config.sources.dialogues == [REPO / "demo" / "dialogues"]
    assert {a.name for a in config.adapters} >= {"core", "sport"}


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("embedding:\n  batchsize: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "embedding.batchsize" in message and "batch_size" in message and str(path) in message


def test_bad_value_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("chunking:\n  max_tokens: 5\nschedule:\n  timezone: Mars/Olympus\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "chunking.max_tokens" in str(info.value)
    assert "schedule.timezone" in str(info.value) and "IANA" in str(info.value)


def test_core_adapter_is_required(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("adapters:\n  - name: sport\n    description: sport\n")
    with pytest.raises(ConfigError, match="core"):
        load_config(path)


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_env_vars_pick_config_and_storage(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("storage_root: data\nsources:\n  articles: [notes]\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    config = load_config()
    assert config.storage_root == tmp_path / "data"
    assert config.sources.articles == [tmp_path / "notes"]
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "elsewhere"))
    assert load_config().storage_root == tmp_path / "elsewhere"
