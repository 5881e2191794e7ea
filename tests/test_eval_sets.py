"""The bundled evaluation sets: they load, have what the issue asks, and every accepted answer exists in demo/."""

from pathlib import Path

import pytest

from memory_pipeline.config import AdapterConfig, Config
from memory_pipeline.errors import ConfigError
from memory_pipeline.index.evaluation import AcceptedAnswer, first_match, load_questions, metrics
from memory_pipeline.records import Kind
from memory_pipeline.scoring.promotion_eval import ScoredUnit, evaluate_promotion, promoted
from memory_pipeline.scoring.routing_eval import PHRASINGS_SET, RoutingUnit, load_routing_set, precision_recall
from memory_pipeline.sources import parse_file

DEMO = Path(__file__).resolve().parents[1] / "demo"


@pytest.fixture(scope="module")
def demo_rows():
    """Rows like the chunk store's, one per dialogue turn, article section and lecture segment of demo/."""
    rows = []
    for path in sorted(p for p in DEMO.rglob("*") if p.is_file()):
        for doc in parse_file(path):
            base = {"source_path": str(path), "title": doc.title, "kind": doc.kind.value, "doc_id": doc.doc_id}
            rows += [{**base, "turn_index": i, "text": t.text} for i, t in enumerate(doc.turns)]
            rows += [{**base, "turn_index": None, "text": s.text} for s in (*doc.sections, *doc.segments)]
    return rows


def test_question_set_has_enough_questions_both_splits_and_cross_lingual_ones():
    questions = load_questions()
    assert len(questions) >= 60
    assert sum(q.cross_lingual for q in questions) >= 10
    assert {q.split for q in questions} == {"tune", "report"}
    assert len({q.id for q in questions}) == len(questions)


def test_every_question_has_an_accepted_answer_in_the_demo_corpus(demo_rows):
    missing = [q.id for q in load_questions() if not any(a.matches(row) for a in q.answers for row in demo_rows)]
    assert missing == []


def test_answers_match_by_file_title_turn_and_substring():
    row = {
        "source_path": "/x/claude_conversations.json",
        "title": "Zone 2",
        "turn_index": 1,
        "text": "Run  EASY by feel",
    }
    assert AcceptedAnswer(source="claude_conversations.json", title="Zone 2", turns=[0, 1]).matches(row)
    assert not AcceptedAnswer(source="claude_conversations.json", title="Other", turns=[0, 1]).matches(row)
    assert not AcceptedAnswer(source="claude_conversations.json", turns=[2, 3]).matches(row)
    assert AcceptedAnswer(source="claude_conversations.json", contains=["run easy by"]).matches(row)
    exchange_file = {**row, "source_path": "/x/claude_conversations/03_run_easy.md"}
    assert AcceptedAnswer(source="claude_conversations.json", contains=["easy"]).matches(exchange_file)
    with pytest.raises(ValueError, match="turns"):
        AcceptedAnswer(source="a.md")


def test_ranks_count_each_exchange_once():
    answer = [AcceptedAnswer(source="b.json", turns=[0])]
    chunk = {"kind": "dialogue", "source_path": "a.json", "doc_id": "a", "turn_index": 0, "text": ""}
    target = {"kind": "dialogue", "source_path": "b.json", "doc_id": "b", "turn_index": 0, "text": ""}
    assert first_match([chunk, chunk, chunk, target], answer, k=10) == 2
    assert first_match([chunk, {**chunk, "turn_index": 2}, target], answer, k=2) is None
    # an exchange ranks where its first chunk came, whichever of its chunks holds the accepted text
    by_text = [AcceptedAnswer(source="b.json", contains=["the answer"])]
    other_part = {**target, "text": "an earlier part of the exchange"}
    assert first_match([other_part, chunk, {**target, "text": "... the answer ..."}], by_text, k=10) == 1
    assert first_match([chunk, other_part], by_text, k=10) is None
    assert metrics([1, 2, None, 6]) == {"recall@1": 0.25, "recall@5": 0.5, "recall@10": 0.75, "mrr": 0.4167}


def test_a_bad_question_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "q.jsonl"
    line = (
        '{"id": "a", "split": "tune", "lang": "ru", "source_lang": "ru", "question": "?", "answers": [{"source": "x"}]}'
    )
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"q\.jsonl:1"):
        load_questions(path)


def test_routing_set_is_labelled_with_every_class_and_both_voices():
    units = load_routing_set()
    assert len(units) >= 150
    assert {label for u in units for label in u.labels} == {"core", "sport"}
    assert any(not u.labels for u in units)
    assert {u.unit for u in units} >= {"exchange", "user_sentence", "answer_paragraph", "section", "segment"}
    assert {u.split for u in units} == {"tune", "report"}


def test_phrasings_set_has_every_class_in_both_languages():
    units = load_routing_set(PHRASINGS_SET)
    assert len(units) >= 60
    assert {label for u in units for label in u.labels} == {"core", "sport"}
    assert sum(not u.labels for u in units) >= 15
    assert any(u.text.isascii() for u in units) and any(not u.text.isascii() for u in units)


def test_precision_and_recall():
    figures = precision_recall([True, True, False, False], [True, False, True, False])
    assert figures == {"positives": 2, "routed": 2, "precision": 0.5, "recall": 0.5}


def _scored(unit_id: str, labels: list[str], *, stance: float, sport: float, split: str) -> ScoredUnit:
    """A unit with the signals of a typical demo exchange (score ~0.41 without importance)."""
    signals = {"novelty": 0.5, "redundancy": 1.0, "recurrence": 0.0, "density": 0.95, "quality": 1.0, "usage": 0.0}
    unit = RoutingUnit(
        id=unit_id,
        source="x.json",
        title="x",
        unit="exchange",
        kind=Kind.DIALOGUE,
        labels=labels,
        user_text="u" * 60,
        text="t" * 200,
        split=split,
    )
    routes = {"core": {"score": stance}, "sport": {"score": sport}}
    return ScoredUnit(
        unit=unit,
        item_id=unit_id,
        keeper=unit_id,
        exact_duplicate=False,
        signals={**signals, "recency": 0.1},
        markers_importance=0.0,
        stance=stance,
        routes=routes,
        age_days=400.0,
        decay=1.0,
        own_chars=60,
    )


def test_promotion_eval_counts_units_in_each_training_set_before_and_after_stance_importance():
    config = Config(adapters=[Config().adapters[0], AdapterConfig(name="sport", description="Sport and running.")])
    config.promote.lora_threshold = 0.45
    scored = [
        _scored(f"{split}-{i}", labels, stance=stance, sport=sport, split=split)
        for split in ("tune", "report")
        for i, (labels, stance, sport) in enumerate(
            [(["core"], 1.0, 0.0), (["core", "sport"], 1.0, 0.6), ([], 0.0, 0.1), (["sport"], 0.0, 0.5)]
        )
    ]
    names = ["core", "sport"]
    assert promoted(scored[:4], config.promote.model_copy(update={"stance_importance": 0.0}), names) == [[], [], [], []]
    assert promoted(scored[:4], config.promote, names) == [["core"], ["core", "sport"], [], []]
    result = evaluate_promotion(config, scored)
    assert result["before"]["report"]["core"]["recall"] == 0.0
    assert result["configured"]["report"]["core"] == {"positives": 2, "routed": 2, "precision": 1.0, "recall": 1.0}
    assert result["configured"]["report"]["sport"]["recall"] == 0.5 and result["meets_targets"]["report"]
    assert result["tuning"]["best"]["lora_threshold"] == 0.45 and result["tuning"]["best"]["stance_importance"] > 0
    assert [w["id"] for w in result["wrong"]] == ["tune-3", "report-3"]
