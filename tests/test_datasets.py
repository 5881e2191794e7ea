"""Training set versions: chat formats and voices, curation steps, versions on disk, loading with real tools."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from test_adapters import base_dir  # noqa: F401  (a fixture: the tiny random Llama with a chat tokenizer, for TRL)

from memory_pipeline.config import AdapterConfig, Config, DatasetsConfig
from memory_pipeline.datasets import (
    build_dataset,
    chat_example,
    general_heldout,
    latest_version_dir,
    latest_version_name,
    list_versions,
    new_examples_since_latest,
    normalize_messages,
)
from memory_pipeline.datasets.curation import (
    Example,
    apply_token_budget,
    decontaminate,
    dedup_exact,
    dedup_near,
    filter_languages,
    filter_token_bounds,
    scrub_examples,
    scrub_text,
    split_by_document,
    with_token_counts,
)
from memory_pipeline.datasets.formats import text_example
from memory_pipeline.datasets.versions import commit_version, data_files
from memory_pipeline.errors import StoreError
from memory_pipeline.records import Document, Kind, Section, Turn, sha256_bytes

SYSTEM = "Ты думаешь и отвечаешь так, как думает пользователь."
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "память модель разговор идея вопрос ответ город река книга время работа дом свет путь мысль "
    "memory model thought river garden window planet answer question history music number reason"
).split()


@dataclass
class Assignment:
    """What the promote stage hands over, duck-typed as build_dataset expects."""

    item_id: str
    doc_id: str
    kind: str
    unit: dict[str, Any]
    score: float
    adapters: list[str] = field(default_factory=lambda: ["core"])
    tier: str = "lora:core"
    created_at: datetime | None = None
    text: str = ""


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def dialogue(doc_id: str, turns: list[tuple[str, str]], title: str = "Разговор о памяти") -> Document:
    return Document(
        doc_id=doc_id,
        kind=Kind.DIALOGUE,
        format="chatgpt_json",
        title=title,
        source_path=f"/exports/{doc_id}.json",
        source_hash="0" * 64,
        turns=[Turn(role=role, text=text) for role, text in turns],
    ).finalize()


def exchanges(doc: Document, *, adapters: tuple[str, ...] = ("core",), score: float = 0.7) -> list[Assignment]:
    """One assignment per exchange (a run of user turns and the answers to it), as the promote stage scores them."""
    starts = [
        i for i, t in enumerate(doc.turns) if i == 0 or (t.role == "user" and doc.turns[i - 1].role == "assistant")
    ]
    return [
        Assignment(
            f"{doc.doc_id}:{s}",
            doc.doc_id,
            "dialogue",
            {"turn_index": s},
            score,
            list(adapters),
            text=doc.turns[s].text,
        )
        for s in starts
    ]


def corpus(n_docs: int, *, seed: int = 1, exchanges_per_doc: int = 3) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        turns: list[tuple[str, str]] = []
        for _ in range(exchanges_per_doc):
            turns += [("user", words(rng, 25)), ("assistant", words(rng, 30))]
        docs.append(dialogue(f"doc{d:03d}", turns, title=f"Тема {d}"))
    return docs


def article(doc_id: str, heading: str, seed: int) -> Document:
    return Document(
        doc_id=doc_id,
        kind=Kind.ARTICLE,
        format="markdown",
        title="Notes",
        source_path=f"/{doc_id}.md",
        source_hash="0" * 64,
        sections=[Section(heading_path=[heading], text=words(random.Random(1000 + seed), 40))],
    ).finalize()


def chats_and_articles(n_docs: int, adapters: tuple[str, ...]) -> tuple[list[Assignment], list[Document]]:
    """The exchanges of ``n_docs`` dialogues promoted to ``adapters`` and eight article sections promoted to topic."""
    docs, articles = corpus(n_docs), [article(f"art{i}", f"Rivers {i}", seed=i) for i in range(8)]
    assignments = [a for d in docs for a in exchanges(d, adapters=adapters)]
    assignments += [
        Assignment(
            f"{a.doc_id}:0",
            a.doc_id,
            "article",
            {"heading": a.sections[0].heading_path[-1]},
            0.8,
            ["topic"],
            text=a.sections[0].text,
        )
        for a in articles
    ]
    return assignments, [*docs, *articles]


def make_config(tmp_path: Path, **datasets: Any) -> Config:
    options = {"eval_fraction": 0.25, "min_tokens": 2, "max_tokens": 4096, **datasets}
    return Config(
        storage_root=tmp_path / "storage",
        adapters=[
            AdapterConfig(name="core", description="the user's worldview", voice="user", system_prompt=SYSTEM),
            AdapterConfig(name="topic", description="answers on a topic", voice="assistant"),
        ],
        datasets=DatasetsConfig(**options),
    )


def example(item_id: str, text: str, *, doc_id: str = "d", score: float = 0.5, system: str | None = None) -> Example:
    if system is None:
        record: dict[str, Any] = {"text": text}
    else:
        record = {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": text},
            ]
        }
    return with_token_counts([Example(item_id, doc_id, "article", score, record, text)])[0]


def count(text: str) -> int:
    return len(text.split())


# --- formats ---------------------------------------------------------------------------------------


def test_normalize_merges_same_role_puts_system_first_and_ends_on_assistant():
    messages = [
        {"role": "assistant", "content": "greeting before the user spoke"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "system", "content": "from the export"},
        {"role": "assistant", "content": "answer one"},
        {"role": "assistant", "content": "  "},
        {"role": "assistant", "content": "answer two"},
        {"role": "user", "content": "a question left unanswered"},
    ]
    assert normalize_messages(messages, system="config prompt") == [
        {"role": "system", "content": "config prompt\n\nfrom the export"},
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "answer one\n\nanswer two"},
    ]
    assert normalize_messages([{"role": "user", "content": "only a question"}]) == []


def test_assistant_voice_keeps_answers_as_targets_with_context():
    doc = dialogue(
        "a",
        [("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("user", "u2 more"), ("assistant", "a2"), ("user", "u3")],
    )
    full = chat_example(doc, 2, voice="assistant", system_prompt="sys", context_tokens=100, count_tokens=count)
    assert full.messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2\n\nu2 more"},
        {"role": "assistant", "content": "a2"},
    ]
    bare = chat_example(doc, 2, voice="assistant", system_prompt="", context_tokens=0, count_tokens=count)
    assert bare.messages == [{"role": "user", "content": "u2\n\nu2 more"}, {"role": "assistant", "content": "a2"}]
    assert chat_example(doc, 5, voice="assistant", system_prompt="", context_tokens=100, count_tokens=count) is None


def test_user_voice_swaps_roles_and_uses_previous_answer_or_title_as_prompt():
    doc = dialogue(
        "u",
        [
            ("user", "моя мысль"),
            ("assistant", "ответ модели"),
            ("user", "я думаю иначе"),
            ("user", "и вот почему"),
            ("assistant", "понятно"),
        ],
    )
    first = chat_example(doc, 0, voice="user", system_prompt=SYSTEM, context_tokens=100, count_tokens=count)
    assert first.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Продолжи разговор на тему: Разговор о памяти"},
        {"role": "assistant", "content": "моя мысль"},
    ]
    second = chat_example(doc, 2, voice="user", system_prompt="", context_tokens=0, count_tokens=count)
    assert second.messages == [
        {"role": "user", "content": "ответ модели"},
        {"role": "assistant", "content": "я думаю иначе\n\nи вот почему"},
    ]
    with_context = chat_example(doc, 2, voice="user", system_prompt="", context_tokens=100, count_tokens=count)
    assert [m["role"] for m in with_context.messages] == ["user", "assistant", "user", "assistant"]
    assert with_context.messages[1]["content"] == "моя мысль"
    english = dialogue("e", [("user", "my idea"), ("assistant", "ok")], title="Gardening plans")
    opener = chat_example(english, 0, voice="user", system_prompt="", context_tokens=0, count_tokens=count)
    assert opener.messages[0] == {"role": "user", "content": "Continue the conversation about: Gardening plans"}


def test_context_stops_at_the_token_budget():
    doc = dialogue(
        "c", [("user", "one two three"), ("assistant", "four five"), ("user", "six"), ("assistant", "seven")]
    )
    # Each earlier run costs its words plus 4 tokens of template overhead:
    # "four five" fits in 6, "one two three" does not.
    result = chat_example(doc, 2, voice="assistant", system_prompt="", context_tokens=6, count_tokens=count)
    assert result.messages[0] == {"role": "user", "content": "Продолжи разговор на тему: Разговор о памяти"}
    assert [m["content"] for m in result.messages[1:]] == ["four five", "six", "seven"]


def test_article_lines_carry_their_heading():
    assert text_example("Body text.", heading="Intro > Why") == {"text": "Intro > Why\n\nBody text."}
    assert text_example("   ") is None


# --- curation --------------------------------------------------------------------------------------


def test_pii_scrub_replaces_emails_phones_and_secrets():
    text = (
        "пиши на ivan.petrov@mail.ru, звони +7 (916) 123-45-67 или 8-916-123-45-67 или +44 20 7946 0958; "
        "ключ sk-proj-abcdefghijklmnopqrstuvwx123, ghp_abcdefghijklmnopqrstuvwxyz0123456789, AKIAIOSFODNN7EXAMPLE, "
        "хэш d41d8cd98f00b204e9800998ecf8427e, токен dGhpc2lzYXNlY3JldHRva2VuMTIzNDU2Nzg5MGFiY2RlZg=="
    )
    scrubbed, found = scrub_text(text)
    assert found == {"EMAIL": 1, "PHONE": 3, "API_KEY": 3, "SECRET": 2}
    for secret in ("ivan.petrov", "916", "7946", "sk-proj", "ghp_", "AKIA", "d41d8", "dGhpc2"):
        assert secret not in scrubbed
    kept = "в 2023 году 15 000 человек, версия 1.2.3, путь /home/user/Projects/MyApplication2/src/main.py"
    assert scrub_text(kept) == (kept, {})
    line = example("x", "mail me: a.b@example.org", system="keep a.b@example.org here")
    [clean], report = scrub_examples([line])
    assert clean.record["messages"][0]["content"] == "keep a.b@example.org here"
    assert clean.record["messages"][2]["content"] == "mail me: <EMAIL>"
    assert report.detail == {"examples_changed": 1, "replaced": {"EMAIL": 1}}


def test_token_bounds_drop_short_targets_and_long_lines():
    lines = [example("short", "ok"), example("fine", "a reasonable answer with words"), example("long", "word " * 300)]
    result = filter_token_bounds(lines, min_tokens=3, max_tokens=100)
    assert [e.item_id for e in result.kept] == ["fine"]
    assert result.report.detail["too_short"] == 1 and result.report.detail["too_long"] == 1


def test_exact_and_near_duplicates_keep_the_higher_score():
    rng = random.Random(3)
    base = words(rng, 80)
    near = base.replace(base.split()[40], "уникальное", 1)
    lines = [
        example("orig", base, score=0.6),
        example("exact", "  " + base.upper() + " ", score=0.9),
        example("near", near, score=0.5),
        example("other", words(rng, 80), score=0.4),
    ]
    exact = dedup_exact(lines)
    assert {e.item_id for e in exact.removed} == {"orig"}
    near_result = dedup_near(exact.kept, threshold=0.8)
    assert {e.item_id for e in near_result.removed} == {"near"}
    assert {e.item_id for e in near_result.kept} == {"exact", "other"}


def test_language_filter_and_token_budget_by_score():
    lines = [example("ru", "это русский текст о памяти", score=0.9), example("en", "this is english text", score=0.8)]
    assert [e.item_id for e in filter_languages(lines, ["ru"]).kept] == ["ru"]
    assert len(filter_languages(lines, []).kept) == 2
    ranked = [example(str(i), words(random.Random(i), 50), score=i / 10) for i in range(5)]
    budget = apply_token_budget(ranked, budget=ranked[3].tokens + ranked[4].tokens)
    assert sorted(e.item_id for e in budget.kept) == ["3", "4"]
    assert budget.report.removed == 3


def test_split_by_document_never_puts_one_conversation_on_both_sides():
    lines = [example(f"{d}:{i}", f"text {d} {i}", doc_id=f"doc{d}") for d in range(40) for i in range(3)]
    train, eval_, report = split_by_document(lines, eval_fraction=0.2, seed=7)
    assert train and eval_ and len(train) + len(eval_) == len(lines)
    assert not {e.doc_id for e in train} & {e.doc_id for e in eval_}
    again_train, _, _ = split_by_document(lines[::-1], eval_fraction=0.2, seed=7)
    assert {e.doc_id for e in again_train} == {e.doc_id for e in train}
    _, forced, report = split_by_document(lines[:6], eval_fraction=0.01, seed=7)
    assert forced and report.detail["eval_document_forced"]


def test_decontamination_drops_eval_lines_sharing_a_13_gram_with_train():
    rng = random.Random(5)
    shared = " ".join(f"w{i}" for i in range(13))
    system = " ".join(f"s{i}" for i in range(30))  # one system prompt everywhere must not count as overlap
    train = [example("t", f"{words(rng, 10)} {shared} {words(rng, 10)}", system=system)]
    eval_ = [
        example("leak", f"{words(rng, 5)} {shared}", system=system),
        example("twelve", f"{' '.join(shared.split()[:12])} {words(rng, 5)}", system=system),
        example("clean", words(rng, 30), system=system),
    ]
    result = decontaminate(train, eval_, n=13)
    assert [e.item_id for e in result.removed] == ["leak"]
    assert {e.item_id for e in result.kept} == {"twelve", "clean"}


def test_general_heldout_is_bilingual_general_text():
    lines = general_heldout()
    assert 50 <= len(lines) <= 80
    assert any("Ответ" in line["text"] for line in lines) and any("Answer" in line["text"] for line in lines)


# --- builds and versions ---------------------------------------------------------------------------


def test_build_writes_a_complete_version_with_card(tmp_path):
    config = make_config(tmp_path)
    docs = corpus(24)
    assignments = [a for d in docs for a in exchanges(d)]
    assignments.append(Assignment("elsewhere", "doc000", "dialogue", {"turn_index": 0}, 0.9, ["topic"]))
    result = build_dataset(config, "core", assignments, docs, now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert result.created and result.version == "v0001-20250102T030405"
    folder = result.path
    assert sorted(p.name for p in folder.iterdir()) == [
        "axolotl.yaml",
        "card.json",
        "card.md",
        "dataset_info.json",
        "eval.jsonl",
        "heldout.jsonl",
        "items.jsonl",
        "train.jsonl",
    ]
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    assert card["counts"]["promoted_items"] == len(assignments) - 1
    assert card["counts"]["train"] + card["counts"]["eval"] == len(assignments) - 1
    assert card["counts"]["heldout"] == len(general_heldout())
    assert card["adapter_config"] == {"voice": "user", "system_prompt": SYSTEM, "description": "the user's worldview"}
    assert {f["step"] for f in card["filters"]} >= {
        "language",
        "pii_scrub",
        "token_bounds",
        "exact_duplicates",
        "near_duplicates",
        "token_budget",
        "split_by_document",
        "decontamination",
    }
    assert card["tokens"]["train"]["total"] > 0 and card["tokens"]["train"]["p95"] <= card["tokens"]["train"]["max"]
    assert card["sources"]["document_formats"] == {"chatgpt_json": 24}
    assert card["files"]["data"] == {
        "train.jsonl": {"split": "train", "format": "chat", "examples": card["counts"]["train"]},
        "eval.jsonl": {"split": "eval", "format": "chat", "examples": card["counts"]["eval"]},
    }
    chat_lines = (folder / "train.jsonl").read_bytes() + b"\x00" + (folder / "eval.jsonl").read_bytes()
    assert card["content_hash"] == sha256_bytes(
        chat_lines
    )  # a chat-only set hashes as before text files were split out
    card_md = (folder / "card.md").read_text(encoding="utf-8")
    assert "| train |" in card_md and "| `eval.jsonl` | eval | chat |" in card_md and "dataset_info.json" in card_md
    train_docs = {
        json.loads(line)["doc_id"] for line in (folder / "items.jsonl").open() if json.loads(line)["outcome"] == "train"
    }
    eval_docs = {
        json.loads(line)["doc_id"] for line in (folder / "items.jsonl").open() if json.loads(line)["outcome"] == "eval"
    }
    assert train_docs and eval_docs and not train_docs & eval_docs
    for line in (folder / "train.jsonl").open(encoding="utf-8"):
        messages = json.loads(line)["messages"]
        assert messages[0] == {"role": "system", "content": SYSTEM} and messages[-1]["role"] == "assistant"


def test_versions_never_overwrite_rerun_is_idempotent_and_latest_moves(tmp_path):
    config = make_config(tmp_path)
    docs = corpus(12)
    assignments = [a for d in docs for a in exchanges(d)]
    first = build_dataset(config, "core", assignments, docs)
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}
    again = build_dataset(config, "core", assignments, docs)
    assert not again.created and again.version == first.version and "unchanged" in again.message
    assert len(list_versions(config, "core")) == 1

    more = corpus(16, seed=2)[12:]
    second = build_dataset(config, "core", assignments + [a for d in more for a in exchanges(d)], docs + more)
    assert second.created and second.version.startswith("v0002-") and second.version > first.version
    assert second.card.parent == first.version
    assert latest_version_name(config, "core") == second.version and latest_version_dir(config, "core") == second.path
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before
    assert [v.version for v in list_versions(config)] == [first.version, second.version]
    with pytest.raises(StoreError, match="never overwritten"):
        commit_version(config, "core", first.version, {"train.jsonl": b""})
    assert not any((config.datasets_dir / ".staging").iterdir())


def test_nothing_to_build_creates_no_version(tmp_path):
    config = make_config(tmp_path)
    result = build_dataset(config, "topic", [], [])
    assert not result.created and result.version == "" and "no training examples" in result.message
    assert list_versions(config, "topic") == [] and latest_version_dir(config, "topic") is None


def test_new_examples_since_latest_counts_items_the_latest_did_not_consider(tmp_path):
    config = make_config(tmp_path)
    docs = corpus(8)
    assignments = [a for d in docs for a in exchanges(d)]
    duplicate = Assignment("dup", "doc000", "dialogue", {"turn_index": 0}, 0.1)  # same line as doc000:0, curated away
    assert new_examples_since_latest(config, "core", assignments=assignments + [duplicate]) == len(assignments) + 1
    build_dataset(config, "core", assignments + [duplicate], docs)
    assert new_examples_since_latest(config, "core", assignments=assignments + [duplicate]) == 0
    fresh = corpus(10, seed=9)[8:]
    extra = [a for d in fresh for a in exchanges(d)]
    assert new_examples_since_latest(config, "core", assignments=assignments + extra) == len(extra)
    assert new_examples_since_latest(config, "topic", assignments=assignments) == 0


def test_mixed_set_keeps_one_line_format_per_file(tmp_path):
    from memory_pipeline.adapters.data import read_split

    config = make_config(tmp_path)
    assignments, documents = chats_and_articles(6, ("topic",))
    result = build_dataset(config, "topic", assignments, documents)
    card = result.card
    assert card.sources.line_formats == {"chat": len(assignments) - 8, "text": 8}
    files = card.files.data
    assert set(files) == {"train.jsonl", "eval.jsonl", "train_text.jsonl", "eval_text.jsonl"}
    for name, entry in files.items():
        lines = [json.loads(line) for line in (result.path / name).open(encoding="utf-8")]
        assert len(lines) == entry.examples > 0
        assert all(list(line) == (["messages"] if entry.format == "chat" else ["text"]) for line in lines)
    assert {f"Rivers 0\n\n{documents[-8].sections[0].text}"} <= {
        line["text"]
        for name in ("train_text.jsonl", "eval_text.jsonl")
        for line in map(json.loads, (result.path / name).open(encoding="utf-8"))
    }
    assert sum(f.examples for f in files.values() if f.split == "train") == card.counts.train
    train = read_split(result.path, "train")
    assert len(train) == card.counts.train and {e.text is None for e in train} == {True, False}

    # A version from before text lines had files of their own: one train.jsonl holding both formats.
    old = result.path.parent / "v0000-20240101T000000"
    old.mkdir()
    (old / "train.jsonl").write_text(
        (result.path / "train.jsonl").read_text() + (result.path / "train_text.jsonl").read_text()
    )
    assert sorted(e.key for e in read_split(old, "train")) == sorted(e.key for e in train)


def test_exports_name_each_data_file_with_its_type(tmp_path):
    import yaml

    config = make_config(tmp_path)
    assignments, documents = chats_and_articles(6, ("topic",))
    folder = build_dataset(config, "topic", assignments, documents).path
    info = json.loads((folder / "dataset_info.json").read_text())
    assert {name: entry["file_name"] for name, entry in info.items()} == {
        "memory_topic_train": "train.jsonl",
        "memory_topic_eval": "eval.jsonl",
        "memory_topic_train_text": "train_text.jsonl",
        "memory_topic_eval_text": "eval_text.jsonl",
    }
    assert info["memory_topic_train"]["formatting"] == "sharegpt"
    assert info["memory_topic_train"]["tags"] == {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    assert info["memory_topic_train_text"]["columns"] == {"prompt": "text"}
    axolotl = yaml.safe_load((folder / "axolotl.yaml").read_text())
    assert [(Path(d["path"]).name, d["type"]) for d in axolotl["datasets"]] == [
        ("train.jsonl", "chat_template"),
        ("train_text.jsonl", "completion"),
    ]
    assert [(Path(d["path"]).name, d["type"], d["split"]) for d in axolotl["test_datasets"]] == [
        ("eval.jsonl", "chat_template", "train"),
        ("eval_text.jsonl", "completion", "train"),
    ]
    assert all(
        not Path(d["path"]).is_absolute() and (folder / d["path"]).is_file()
        for d in axolotl["datasets"] + axolotl["test_datasets"]
    )
    assert axolotl["datasets"][0]["field_messages"] == "messages" and axolotl["datasets"][1]["field"] == "text"

    chat_only = build_dataset(config, "core", [a for d in corpus(6) for a in exchanges(d)], corpus(6)).path
    assert list(json.loads((chat_only / "dataset_info.json").read_text())) == ["memory_core_train", "memory_core_eval"]


def test_datasets_list_json_shows_files_and_exports(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from memory_pipeline import cli
    from memory_pipeline.storage_root import mark_memory

    config = make_config(tmp_path)
    assignments, documents = chats_and_articles(6, ("topic",))
    folder = build_dataset(config, "topic", assignments, documents).path
    mark_memory(config.storage_root)  # built here without an ingest, which is what marks a memory
    monkeypatch.setattr(cli, "state", cli._State())
    result = CliRunner().invoke(cli.app, ["--storage", str(config.storage_root), "datasets", "list", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["latest"] and row["path"] == str(folder)
    assert row["exports"] == {
        "llamafactory": str(folder / "dataset_info.json"),
        "axolotl": str(folder / "axolotl.yaml"),
    }
    card_files = json.loads((folder / "card.json").read_text())["files"]["data"]
    assert {name: f["examples"] for name, f in row["files"].items()} == {
        name: f["examples"] for name, f in card_files.items()
    }
    assert all(Path(f["path"]).is_file() for f in row["files"].values())


# --- real tools read what we write -----------------------------------------------------------------


def _chat_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for text in texts:
        for token in text.split():
            vocab.setdefault(token, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.add_special_tokens(specials[2:])
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>", chat_template=CHATML
    )


def core_and_topic_sets(tmp_path: Path) -> list[Path]:
    """A core set (chat only) and a topic set with chat and text lines in both splits, as the demo builds them."""
    config = make_config(tmp_path)
    assignments, documents = chats_and_articles(10, ("core", "topic"))
    return [build_dataset(config, name, assignments, documents).path for name in ("core", "topic")]


def test_sets_load_with_datasets_and_render_with_a_chat_template(tmp_path):
    from datasets import load_dataset

    from memory_pipeline.adapters.data import encode_example, parse_example, read_card

    folders = core_and_topic_sets(tmp_path)
    files = [
        path for folder in folders for path in [*data_files(folder), folder / "heldout.jsonl"] if path.stat().st_size
    ]
    all_text = [line for path in files for line in path.read_text(encoding="utf-8").split("\n") if line]
    tokenizer = _chat_tokenizer(
        [m["content"] for line in all_text for m in json.loads(line).get("messages", [])]
        + [json.loads(line).get("text", "") for line in all_text]
    )
    for folder in folders:
        assert read_card(folder).adapter == folder.parent.name
    rendered = 0
    for path in files:
        data = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert len(data) == len(path.read_text(encoding="utf-8").splitlines())
        for row in data:
            if row.get("messages"):
                text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
                assert text.startswith("<|im_start|>") and text.rstrip().endswith("<|im_end|>")
                encoded = encode_example(tokenizer, parse_example({"messages": row["messages"]}), max_seq_length=4096)
                assert encoded.supervised > 0
                rendered += 1
            else:
                assert tokenizer(row["text"])["input_ids"]
    assert rendered > 0


@pytest.mark.slow
def test_every_data_file_trains_one_step_with_trl(tmp_path, base_dir):  # noqa: F811  (the imported fixture)
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    folders = core_and_topic_sets(tmp_path)
    files = [path for folder in folders for path in data_files(folder)]
    assert [(p.parent.parent.name, p.name) for p in files] == [
        ("core", "train.jsonl"),
        ("core", "eval.jsonl"),
        ("topic", "train.jsonl"),
        ("topic", "eval.jsonl"),
        ("topic", "train_text.jsonl"),
        ("topic", "eval_text.jsonl"),
    ]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    for path in files:
        data = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert data.column_names == (["text"] if path.stem.endswith("_text") else ["messages"])
        args = SFTConfig(
            output_dir=str(tmp_path / "trl" / path.parent.parent.name / path.stem),
            max_steps=1,
            per_device_train_batch_size=2,
            max_length=64,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(base_dir),
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
        )
        assert trainer.train().global_step == 1, path


def test_promote_stage_assignments_and_an_empty_score_store(tmp_path):
    from memory_pipeline.datasets import build_dataset_for_adapter
    from memory_pipeline.scoring.assignments import ItemAssignment
    from memory_pipeline.scoring.items import ItemUnit

    config = make_config(tmp_path)
    nothing = build_dataset_for_adapter(config, "core")
    assert not nothing.created and nothing.version == ""
    assert new_examples_since_latest(config, "core") == 0

    docs = corpus(6)
    real = [
        ItemAssignment(
            item_id=a.item_id,
            doc_id=a.doc_id,
            kind="dialogue",
            title="t",
            source_path="/p",
            unit=ItemUnit(turn_index=a.unit["turn_index"]),
            score=0.7,
            tier="lora:core",
            adapters=["core"],
            created_at=None,
            text=a.text,
        )
        for d in docs
        for a in exchanges(d)
    ]
    result = build_dataset(config, "core", real, docs)
    assert result.created and result.card.counts.train + result.card.counts.eval == len(real)
    assert new_examples_since_latest(config, "core", assignments=real) == 0


def test_items_whose_document_changed_or_vanished_are_counted_not_guessed(tmp_path):
    config = make_config(tmp_path)
    docs = corpus(6)
    assignments = [a for d in docs for a in exchanges(d)]
    stale = Assignment(
        "stale", "doc001", "dialogue", {"turn_index": 1}, 0.9
    )  # an assistant turn: not an exchange start
    gone = Assignment("gone", "deleted", "dialogue", {"turn_index": 0}, 0.9)
    result = build_dataset(config, "core", [*assignments, stale, gone], docs)
    step = result.card.filters[0].model_dump()
    assert step == {"step": "lines_from_items", "removed": 2, "reasons": {"missing_document": 1, "stale_position": 1}}
    outcomes = {
        json.loads(line)["item_id"]: json.loads(line)["outcome"] for line in (result.path / "items.jsonl").open()
    }
    assert outcomes["stale"] == "stale_position" and outcomes["gone"] == "missing_document"
