"""The `memory-pipeline` command line through typer's CliRunner, over a small corpus of fixture files.

One module-scoped storage root is ingested, indexed and promoted once (through the CLI itself); the
config file's own storage root stays empty, so every command that finds the corpus found it through
the global ``--storage`` option.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memory_pipeline import cli
from memory_pipeline.config import CONFIG_ENV, STORAGE_ENV

pytestmark = pytest.mark.slow  # real ingest and the default embeddings, once per module

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SOURCES = {
    "dialogues": [
        FIXTURES / "dialogues" / "chatgpt_single.json",
        FIXTURES / "dialogues" / "claude_export.json",
        FIXTURES / "dialogues" / "chat_conversations.jsonl",
    ],
    "lectures": [FIXTURES / "lectures" / "coach_talk.srt"],
}


def invoke(*args):
    """Run the CLI in-process; the caller's MEMORY_PIPELINE_* variables do not leak in."""
    return CliRunner().invoke(cli.app, [str(a) for a in args], env={CONFIG_ENV: None, STORAGE_ENV: None})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(config file, storage root given with --storage, the first `promote --json` report)."""
    root = tmp_path_factory.mktemp("cli")
    config_file = root / "memory_pipeline.yaml"
    adapters = yaml.safe_load((REPO / "memory_pipeline.yaml").read_text(encoding="utf-8"))["adapters"]
    sources = {kind: [str(p) for p in paths] for kind, paths in SOURCES.items()}
    thresholds = {"lora_threshold": 0.35}  # low enough that this small corpus promotes some items to `sport`
    raw = {"storage_root": "config_storage", "sources": sources, "adapters": adapters, "promote": thresholds}
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    storage = root / "storage"
    ingest = invoke("--config", config_file, "--storage", storage, "ingest", "--json")
    assert ingest.exit_code == 0, ingest.output
    reports = json.loads(ingest.stdout)
    assert reports["dialogue"]["documents_total"] >= 4 and reports["index"]["chunks_total"] > 0
    promote = invoke("--config", config_file, "--storage", storage, "promote", "--json")
    assert promote.exit_code == 0, promote.output
    return config_file, storage, json.loads(promote.stdout)


def on_corpus(corpus, *args):
    config_file, storage, _ = corpus
    return invoke("--config", config_file, "--storage", storage, *args)


def test_promote_scores_every_item_once_then_nothing_is_new(corpus):
    _, _, first = corpus
    assert first["items_total"] == first["items_new"] > 0 and sum(first["tiers"].values()) == first["items_total"]
    again = on_corpus(corpus, "promote")
    assert again.exit_code == 0, again.output
    text = " ".join(again.stdout.split())
    assert f"scored {first['items_total']} items: 0 new, 0 changed, 0 rescored" in text
    assert "tiers: cache=" in text and "adapters: core=" in text


def test_tiers_json_counts_every_item_with_samples(corpus):
    _, _, report = corpus
    result = on_corpus(corpus, "tiers", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["items"] == report["items_total"] and summary["tiers"] == report["tiers"]
    for tier, count in summary["tiers"].items():
        assert len(summary["samples"][tier]) == min(count, 5)
        assert [e["item_id"] for e in summary["examples"][tier]] == summary["samples"][tier]
    assert summary["adapters"] == report["adapters"] and summary["adapters"]["sport"] > 0


def test_tiers_shows_each_sample_by_title_date_and_position(corpus):
    summary = json.loads(on_corpus(corpus, "tiers", "--json").stdout)
    example = summary["examples"]["lora:sport"][0]
    assert example["title"] and example["date"] and example["position"].startswith(("turn ", "00:"))
    result = on_corpus(corpus, "tiers")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert f"{example['date']} · {example['position']} · score {example['score']:.3f} · {example['item_id']}" in text
    assert " ".join(example["title"].split())[:20] in text


def test_explain_prints_each_signal_and_the_tier_rule(corpus):
    summary = json.loads(on_corpus(corpus, "tiers", "--json").stdout)
    item_id = summary["samples"]["lora:sport"][0]
    result = on_corpus(corpus, "explain", item_id)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "-> tier lora:sport" in text and ">= lora_threshold 0.35; routed (sport" in text
    for signal in ("novelty", "redundancy", "recurrence", "density", "importance", "quality", "usage", "recency"):
        assert signal in text
    explained = json.loads(on_corpus(corpus, "explain", item_id, "--json").stdout)
    assert explained["item_id"] == item_id and len(explained["signals"]) == 8
    position = summary["examples"]["lora:sport"][0]["position"]
    assert f"· {position} ·" in text and "{'" not in text  # where it is, not a Python dict
    for ref in explained["related"].values():  # items a reason names, by title as well as id
        assert f"{ref['item_id']}: {' '.join(ref['title'].split())[:20]}" in text


def test_explain_an_unknown_item_is_one_clear_error(corpus, monkeypatch, capsys):
    config_file, storage, _ = corpus
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.setattr(
        sys,
        "argv",
        ["memory-pipeline", "--config", str(config_file), "--storage", str(storage), "explain", "no-such-item"],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.run()
    assert exit_info.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert message.startswith("error:") and "no scored item 'no-such-item'" in message and "Traceback" not in message


def test_datasets_list_json_shows_the_built_versions(corpus):
    _, storage, _ = corpus
    assert json.loads(on_corpus(corpus, "datasets", "list", "--json").stdout) == []
    build = on_corpus(corpus, "datasets", "build", "--json")
    assert build.exit_code == 0, build.output
    built = {row["adapter"]: row for row in map(json.loads, build.stdout.splitlines())}
    assert built["sport"]["created"] and built["sport"]["card"]["counts"]["train"] > 0
    assert not built["core"]["version"] and built["core"]["card"] is None and built["core"]["message"]
    result = on_corpus(corpus, "datasets", "list", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)  # core has no promoted items here, so no version
    assert row["adapter"] == "sport" and row["latest"] and row["train"] > 0 and row["content_hash"]
    assert Path(row["path"]).is_dir() and Path(row["path"]).parent == storage / "datasets" / "sport"


def test_adapters_list_json_is_empty_before_any_training(corpus):
    result = on_corpus(corpus, "adapters", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_parse_json_names_the_file_that_failed(tmp_path):
    good = FIXTURES / "dialogues" / "chatgpt_single.json"
    bad = tmp_path / "conversations.json"
    bad.write_text('{"not": "a chat export"', encoding="utf-8")
    result = invoke("parse", good, bad, "--json")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    documents, errors = [x for x in lines if "error" not in x], [x for x in lines if "error" in x]
    assert documents and all(d["source_path"].endswith("chatgpt_single.json") for d in documents)
    assert len(errors) == 1 and errors[0]["path"] == str(bad) and errors[0]["error"]


def test_storage_option_chooses_the_storage_root(corpus):
    config_file, storage, report = corpus
    assert json.loads(on_corpus(corpus, "tiers", "--json").stdout)["items"] == report["items_total"]
    without = invoke("--config", config_file, "tiers", "--json")
    assert without.exit_code == 2 and "no memory at" in without.output  # the config's own root holds none
    assert not (config_file.parent / "config_storage").exists() and (storage / "scores").is_dir()


def test_help_shows_plain_flags_and_defaults():
    result = invoke("search", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "<bool>" not in text and "--json one JSON object per hit" in text
    assert "number of hits [default: (search.default_k in the config: 10)]" in text
