"""The user's own words train the adapters: targets by voice, no served model's answers, a content floor."""

from pathlib import Path

import pytest

from memory_pipeline.config import AdapterConfig, Config, PromoteConfig, load_config
from memory_pipeline.datasets import build_dataset
from memory_pipeline.datasets.build import make_examples
from memory_pipeline.records import Document, Kind, Turn
from memory_pipeline.scoring.tiers import decide_tier, own_content_chars

VIEW = "Я считаю, что длинная пробежка важнее интервалов: выносливость строится объёмом, а не героизмом на стадионе."
ANSWER = "Понимаю вашу позицию. Многие тренеры согласятся, что объём лёгкого бега — основа подготовки к марафону."
CANNED = "Я локальная модель и не могу давать медицинских советов, но вот общий план тренировок на неделю."


def dialogue(doc_id: str, source_path: str, turns: list[tuple[str, str]]) -> Document:
    return Document(
        doc_id=doc_id,
        kind=Kind.DIALOGUE,
        format="chat_jsonl",
        title="Бег",
        source_path=source_path,
        source_hash="0" * 64,
        turns=[Turn(role=role, text=text) for role, text in turns],
    ).finalize()


class Assignment:
    def __init__(self, doc: Document, adapters=("core",)):
        self.item_id, self.doc_id, self.kind, self.unit, self.score = (
            f"{doc.doc_id}:0",
            doc.doc_id,
            "dialogue",
            {"turn_index": 0},
            0.8,
        )
        self.adapters, self.tier, self.created_at, self.text = list(adapters), "lora:core", None, VIEW


def test_adapters_learn_the_users_words_by_default_and_the_project_config_says_so():
    assert AdapterConfig(name="topic", description="a topic").voice == "user"
    project = load_config(Path(__file__).resolve().parents[1] / "memory_pipeline.yaml")
    assert {a.voice for a in project.adapters} == {"user"}


def test_a_served_models_answer_is_never_a_target_even_for_an_assistant_voice(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    captured = dialogue("cap", str(config.inbox_dir / "proxy-1.jsonl"), [("user", VIEW), ("assistant", CANNED)])
    exported = dialogue("exp", "/exports/chat.json", [("user", VIEW), ("assistant", ANSWER)])
    docs = {d.doc_id: d for d in (captured, exported)}
    assistant_voice = AdapterConfig(name="topic", description="answers", voice="assistant")
    examples, skipped = make_examples(
        [Assignment(captured), Assignment(exported)], docs, assistant_voice, config.datasets, inbox_dir=config.inbox_dir
    )
    assert skipped == {"cap:0": "served_model_answer"}
    assert [(e.doc_id, e.target_source) for e in examples] == [("exp", "assistant")]
    user_voice = AdapterConfig(name="core", description="views", voice="user")
    examples, skipped = make_examples(
        [Assignment(captured), Assignment(exported)], docs, user_voice, config.datasets, inbox_dir=config.inbox_dir
    )
    assert not skipped and {e.target_source for e in examples} == {"user"}
    assert all(e.record["messages"][-1]["content"] == VIEW for e in examples)  # the user's turn is the target


def test_dataset_card_counts_targets_by_source(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    config.datasets.eval_fraction = 0.0
    config.datasets.min_tokens = 2
    views = [
        VIEW,
        "Футбол без прессинга скучен, и я готов мириться с ошибками ради темпа.",
        "Учить языки лучше через чтение книг, чем через карточки.",
    ]
    docs = [
        dialogue(f"d{i}", f"/exports/{i}.json", [("user", view), ("assistant", ANSWER)]) for i, view in enumerate(views)
    ]
    result = build_dataset(config, "core", [Assignment(d) for d in docs], docs)
    targets = {"user": 3, "assistant": 0, "article": 0, "lecture": 0, "profile": 0}
    assert result.card.sources.targets == targets
    assert "Targets from: user: 3, assistant: 0" in (result.path / "card.md").read_text(encoding="utf-8")


def test_chit_chat_cannot_reach_a_lora_tier():
    config = PromoteConfig(lora_threshold=0.4, rag_threshold=0.3)
    common = dict(
        n_chars=200,
        keeper="x",
        item_id="x",
        exact_duplicate=False,
        has_vector=True,
        score=0.9,
        config=config,
        adapter_names=["core"],
    )
    routes = {"core": {"score": 1.0, "eligible": True}}
    assert (
        own_content_chars("Привет ещё раз!")
        == own_content_chars("Спасибо, до встречи.")
        == own_content_chars("Hi again, thanks!")
        == 0
    )
    greeting = decide_tier(**common, routes=routes, own_chars=own_content_chars("Привет ещё раз"))
    assert greeting.tier.value == "rag" and "lora_min_own_chars" in greeting.rule
    view = decide_tier(**common, routes=routes, own_chars=own_content_chars(VIEW))
    assert view.label == "lora:core"
    fresh = decide_tier(**common, routes=routes, own_chars=own_content_chars("Привет ещё раз"), age_days=0.5)
    assert fresh.tier.value == "cache"


@pytest.mark.slow
def test_demo_cards_take_no_target_from_assistant_text(tmp_path):
    from memory_pipeline.datasets.build import build_dataset_for_adapter
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.ingest.pipeline import ingest_all
    from memory_pipeline.scoring import run_promotion

    config = load_config(Path(__file__).resolve().parents[1] / "memory_pipeline.yaml", storage=tmp_path / "storage")
    ingest_all(config)
    embedder = load_embedder(config.embedding)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    run_promotion(config, progress=False, embedder=embedder)
    for adapter in config.adapters:
        card = build_dataset_for_adapter(config, adapter.name).card
        targets = card.sources.targets
        assert targets["assistant"] == 0 and sum(targets.values()) > 0, (adapter.name, targets)
