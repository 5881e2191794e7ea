"""The memory loop: signals on crafted items, tiers, routing, incremental rescoring, the stored state."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from memory_pipeline.config import AdapterConfig, Config
from memory_pipeline.errors import ConfigError
from memory_pipeline.records import Document, Kind, Section, Turn
from memory_pipeline.scoring import explain_item, load_assignments, retier, tier_summary
from memory_pipeline.scoring import signals as sg
from memory_pipeline.scoring.checks import check_tiers
from memory_pipeline.scoring.engine import ItemBatch, update_scores
from memory_pipeline.scoring.items import Item, ItemUnit, build_items, mean_vector
from memory_pipeline.scoring.routing import (
    CONTRAST_MARGIN,
    build_profiles,
    choose_adapters,
    keyword_hits,
    keyword_stems,
    route_item,
)
from memory_pipeline.scoring.store import ScoreState, ScoreStore, scores_dir
from memory_pipeline.scoring.tiers import combined_scores, validate_weights

NOW = datetime(2025, 1, 1)
DIM = 32
SPORT = AdapterConfig(
    name="sport",
    description="Sport and training: running, marathons, workouts.",
    keywords=["марафон", "тренировка", "marathon", "training plan"],
)


def basis(i: int) -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[i]


def unit_vector(seed: int, *, near: np.ndarray, noise: float) -> np.ndarray:
    """A unit vector around ``near``; ``noise`` is the norm of the added random direction."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DIM)
    v = near + noise * direction / np.linalg.norm(direction)
    return (v / np.linalg.norm(v)).astype(np.float32)


TOPIC_RUN, TOPIC_CODE, TOPIC_OPINION, TOPIC_SWIM, TOPIC_OTHER = (basis(i) for i in range(5))


def exchange(doc: str, user: str, answer: str, *, when: datetime, vector: np.ndarray | None, turn: int = 0) -> Item:
    return Item(
        item_id=f"{doc}-{turn}",
        doc_id=doc,
        kind=Kind.DIALOGUE,
        title=f"conversation {doc}",
        source_path=f"/exports/{doc}.json",
        unit=ItemUnit(turn_index=turn),
        text=f"{user}\n\n{answer}",
        user_text=user,
        answer_text=answer,
        created_at=when,
        chunk_ids=[f"{doc}-chunk-{turn}"],
        vector=vector,
    )


def config_for(tmp_path) -> Config:
    return Config(storage_root=tmp_path / "storage", adapters=[Config().adapters[0], SPORT])


def profiles_for(config: Config):
    vectors = {config.adapters[0].description: TOPIC_OPINION, SPORT.description: TOPIC_RUN}
    return build_profiles(config.adapters, vectors)


def score(
    config: Config, items: list[Item], previous: ScoreState | None = None, *, live: set[str] | None = None, hits=None
):
    docs = {i.doc_id for i in items}
    live_docs = live if live is not None else docs | (set(previous.frame["doc_id"]) if previous else set())
    return update_scores(
        previous or ScoreState.empty(),
        ItemBatch(items, docs, live_docs),
        config=config,
        now=NOW,
        model_id="test-model",
        hits_by_chunk=hits or {},
        profiles=profiles_for(config),
        profiles_key="profiles-v1",
    )


def row(state: ScoreState, item_id: str):
    return state.frame.set_index("item_id").loc[item_id]


RUN_Q = "Как пробежать первый марафон и не сдохнуть на тридцатом километре? Сколько нужно тренироваться?"
RUN_A = (
    "Начните с базы: 3-4 лёгких пробежки в неделю, одна длинная. За 16 недель доведите длинную до 32 км. "
    "Темп держите разговорный."
)


@pytest.fixture()
def corpus() -> list[Item]:
    return [
        exchange("a", RUN_Q, RUN_A, when=datetime(2024, 1, 10), vector=unit_vector(10, near=TOPIC_RUN, noise=0.3)),
        exchange("b", RUN_Q, RUN_A, when=datetime(2024, 3, 1), vector=unit_vector(10, near=TOPIC_RUN, noise=0.3)),
        exchange(
            "c",
            "Запомни: мой пульс в зоне 2 — 128-142 удара, а максимальный 186. Это важно для всех планов.",
            "Запомнил: зона 2 — 128–142 уд/мин, максимум 186. Буду учитывать это при составлении планов тренировок.",
            when=datetime(2024, 2, 1),
            vector=unit_vector(11, near=TOPIC_RUN, noise=0.6),
        ),
        exchange(
            "d",
            "Напиши, пожалуйста, подробный план подготовки к соревнованиям по плаванию на открытой воде.",
            "I'm sorry, but I can't help with that request.",
            when=datetime(2024, 6, 1),
            vector=TOPIC_SWIM,
        ),
    ]


# Signals on their own


def test_recency_halves_every_half_life():
    values = sg.recency(np.array([0.0, 180.0, 360.0, -5.0]), 180.0)
    assert values == pytest.approx([1.0, 0.5, 0.25, 1.0])


def test_refusal_apology_and_truncation_lower_quality():
    good = sg.answer_quality("q\n\nКороткий ясный ответ.", answer_text="Короткий ясный ответ.")
    refusal = sg.answer_quality("q", answer_text="Как ИИ, я не могу давать такие советы.")
    sorry = sg.answer_quality("q", answer_text="I'm sorry, but I can't help with that.")
    truncated = sg.answer_quality(
        "q",
        answer_text="Вот подробное объяснение того, как работает гликогеновое окно после длинной тренировки, и почему",
    )
    network = sg.answer_quality("q", answer_text="Сначала разогрев.\n\nnetwork error")
    assert good.value == 1.0 and good.reasons == ()
    assert refusal.value < 0.5 and "refusal" in refusal.reasons
    assert sorry.value < 0.5 and "refusal" in sorry.reasons
    assert "truncated" in truncated.reasons and "truncated" in network.reasons


def test_code_dump_scores_low_but_code_with_explanation_does_not():
    code = "\n".join(f"x{i} = compute(x{i - 1}, {i});" for i in range(40))
    dump = sg.answer_quality(f"fix\n\n```python\n{code}\n```", answer_text=f"```python\n{code}\n```")
    prose = "Объяснение. " * 80
    explained = sg.answer_quality(f"{prose}\n```python\nprint(1)\n```", answer_text="")
    assert dump.value <= 0.5 and any(r.startswith("code dump") for r in dump.reasons)
    assert explained.value == 1.0


def test_importance_markers_are_whole_words_case_insensitive_and_tags_count():
    markers = Config().promote.importance_markers
    assert sg.explicit_importance("ЗАПОМНИ: ключ от гаража у соседа", markers).value == pytest.approx(0.8)
    assert sg.explicit_importance("Remember this, it is important", markers).value == 1.0
    assert sg.explicit_importance("это неважно, просто мысли", markers).value == 0.0
    tagged = sg.explicit_importance("идея для статьи #бег #идеи", markers)
    assert tagged.value == 0.5 and tagged.tags == ("бег", "идеи")


def test_density_scores_repetition_and_bad_lengths_down():
    prose = sg.information_density(RUN_A * 2)
    spam = sg.information_density("ха " * 400)
    short = sg.information_density("ок")
    huge = sg.information_density(RUN_A * 300)
    assert prose.value > 0.6
    assert spam.value < 0.3 and short.value < 0.3
    assert huge.value < prose.value


def test_recurrence_grows_with_documents_and_time_span():
    one_off = sg.recurrence("a", 0.0, [], [], [], radius=0.6)
    three_convs = sg.recurrence("a", 0.0, [0.8, 0.75], ["b", "c"], [30.0, 90.0], radius=0.6)
    same_day = sg.recurrence("a", 0.0, [0.8, 0.75], ["b", "c"], [0.0, 0.0], radius=0.6)
    own_doc_or_far = sg.recurrence("a", 0.0, [0.9, 0.4], ["a", "b"], [50.0, 50.0], radius=0.6)
    assert one_off.value == 0.0 and own_doc_or_far.value == 0.0
    assert three_convs.value > same_day.value > 0.0
    assert (three_convs.other_documents, three_convs.span_days) == (2, 90.0)


def test_novelty_only_counts_items_earlier_in_time_or_already_learned():
    vectors = np.eye(DIM, dtype=np.float32)[[0, 0, 1]]
    times = np.array([10.0, 20.0, 5.0])
    ids = ["x", "y", "z"]
    plain = sg.Predecessors(sg.rank_order(times, ids), np.zeros(3, dtype=bool), np.zeros(3))
    result = sg.similarities(np.arange(3), vectors, plain)
    assert sg.novelty(result.max_sim) == pytest.approx([1.0, 0.0, 1.0], abs=1e-6)
    assert result.argmax[1] == 0
    learned = sg.Predecessors(sg.rank_order(times, ids), np.array([False, True, False]), np.array([1.0, 0.0, 1.0]))
    assert sg.novelty(sg.similarities(np.array([0]), vectors, learned).max_sim)[0] == pytest.approx(0.0, abs=1e-6)


def test_redundancy_keeps_the_earliest_copy():
    texts = [
        "один и тот же длинный текст про бег и темп",
        "Один и тот же длинный текст про бег и темп!",
        "совсем другое",
    ]
    result = sg.redundancy(
        [sg.text_fingerprint(t) for t in texts], sg.minhash_signatures(texts), np.array([1, 0, 2]), threshold=0.8
    )
    assert list(result.keeper) == [1, 1, 2]
    assert list(result.value) == [0.0, 1.0, 1.0] and result.exact[0]


def test_weights_validated_and_missing_weight_is_zero():
    with pytest.raises(ConfigError, match="novelity"):
        validate_weights({"novelity": 1.0})
    with pytest.raises(ValueError, match="unknown signal"):
        Config(promote={"weights": {"novelity": 1.0}})
    assert validate_weights({"importance": 2.0})["usage"] == 0.0
    signals = {name: np.array([1.0 if name == "importance" else 0.0]) for name in sg.SIGNALS}
    assert combined_scores(signals, {"importance": 1.0, "novelty": 1.0})[0] == pytest.approx(0.5)


# Routing


def test_routing_sends_sport_to_sport_and_an_opinion_to_core(tmp_path):
    config = config_for(tmp_path)
    profiles = profiles_for(config)
    sport = route_item(
        kind=Kind.DIALOGUE,
        text=RUN_Q + RUN_A,
        user_text=RUN_Q,
        vector=unit_vector(5, near=TOPIC_RUN, noise=0.3),
        profiles=profiles,
        config=config.promote,
    )
    opinion_text = (
        "Я думаю, что учить маленькие модели полезнее, чем арендовать большие: во-первых, всё остаётся у меня, "
        "во-вторых, я понимаю, что происходит внутри, поэтому могу это чинить сам."
    )
    opinion = route_item(
        kind=Kind.DIALOGUE,
        text=opinion_text,
        user_text=opinion_text,
        vector=TOPIC_OTHER,
        profiles=profiles,
        config=config.promote,
    )
    assert choose_adapters(sport, config.promote.route_threshold, ["core", "sport"]) == ["sport"]
    assert choose_adapters(opinion, config.promote.route_threshold, ["core", "sport"]) == ["core"]
    assert "view: «я думаю»" in opinion["core"]["stance"] and "argument: «поэтому»" in opinion["core"]["stance"]


def test_a_sport_keyword_in_passing_routes_nothing(tmp_path):
    config = config_for(tmp_path)
    text = "Если перенести на аналогию со спортом: тренировка модели похожа на марафон, но я говорю о своём ИИ."
    profiles = profiles_for(config)
    routes = route_item(
        kind=Kind.DIALOGUE, text=text, user_text=text, vector=TOPIC_CODE, profiles=profiles, config=config.promote
    )
    assert routes["sport"]["keywords"] and routes["sport"]["score"] == 0.0
    assert choose_adapters(routes, config.promote.route_threshold, ["core", "sport"]) == ["core"]


def test_an_item_closer_to_a_contrast_text_than_to_the_topic_is_not_routed_there(tmp_path):
    """A focus-training note with a running analogy lies near the sport examples; the contrast text lies nearer."""
    analogy = "Концентрация тренируется, как мышца: похоже на бег, базу строят лёгкие длинные пробежки."
    sport = SPORT.model_copy(update={"contrast": ["Концентрация тренируется, как мышца - сравнение со спортом."]})
    config = Config(storage_root=tmp_path / "storage", adapters=[Config().adapters[0], sport])
    core = config.adapters[0].description
    profiles = build_profiles(
        config.adapters, {core: TOPIC_OPINION, sport.description: TOPIC_RUN, sport.contrast[0]: TOPIC_CODE}
    )
    item = unit_vector(3, near=0.6 * TOPIC_RUN + 0.8 * TOPIC_CODE, noise=0.05)
    routes = route_item(
        kind=Kind.ARTICLE, text=analogy, user_text="", vector=item, profiles=profiles, config=config.promote
    )
    assert routes["sport"]["sim"] >= config.promote.route_threshold and routes["sport"]["score"] == 0.0
    assert routes["sport"]["contrast"] > routes["sport"]["sim"]
    assert routes["sport"]["contrast_nearest"].startswith("Концентрация")
    assert choose_adapters(routes, config.promote.route_threshold, ["core", "sport"]) == []
    run = unit_vector(4, near=TOPIC_RUN, noise=0.3)
    routes = route_item(
        kind=Kind.DIALOGUE, text=RUN_Q, user_text=RUN_Q, vector=run, profiles=profiles, config=config.promote
    )
    assert routes["sport"]["score"] == routes["sport"]["sim"] > routes["sport"]["contrast"]
    assert choose_adapters(routes, config.promote.route_threshold, ["core", "sport"]) == ["sport"]


def test_an_item_about_as_close_to_a_contrast_text_as_to_the_topic_is_not_routed_there(tmp_path):
    """A tie is no evidence: "продолжим прошлые чаты, там было и про спорт" meets sport and its contrast alike."""
    sport = SPORT.model_copy(update={"contrast": ["Продолжим наши прошлые разговоры."]})
    config = Config(storage_root=tmp_path / "storage", adapters=[Config().adapters[0], sport])
    profiles = build_profiles(
        config.adapters,
        {config.adapters[0].description: TOPIC_OPINION, sport.description: TOPIC_RUN, sport.contrast[0]: TOPIC_CODE},
    )

    def sport_route(run_share: float) -> dict:
        vector = run_share * TOPIC_RUN + 0.7 * TOPIC_CODE
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        return route_item(
            kind=Kind.ARTICLE, text="", user_text="", vector=vector, profiles=profiles, config=config.promote
        )["sport"]

    tie = sport_route(0.72)
    assert 0 < tie["sim"] - tie["contrast"] < CONTRAST_MARGIN and tie["score"] == 0.0
    clear = sport_route(0.8)
    assert clear["sim"] - clear["contrast"] > CONTRAST_MARGIN and clear["score"] == clear["sim"]


def test_another_adapters_texts_are_alternatives_too(tmp_path):
    """An item nearer the core description than the sport description is not a sport item."""
    config = config_for(tmp_path)
    profiles = profiles_for(config)
    item = unit_vector(5, near=0.55 * TOPIC_RUN + 0.83 * TOPIC_OPINION, noise=0.05)
    routes = route_item(kind=Kind.ARTICLE, text="", user_text="", vector=item, profiles=profiles, config=config.promote)
    assert routes["sport"]["score"] == 0.0 and routes["sport"]["contrast_nearest"].startswith("core: ")


def test_keywords_match_russian_inflections_by_stem():
    keywords = [(k, keyword_stems(k)) for k in SPORT.keywords]
    assert keyword_hits("После марафона две тренировки отменил", keywords) == ["марафон", "тренировка"]
    assert keyword_hits("My training plan for May", keywords) == ["training plan"]
    assert keyword_hits("Plan a training session", keywords) == ["training plan"]
    assert keyword_hits("Погода хорошая", keywords) == []


# Items


def test_dialogue_items_are_exchanges_with_stable_ids_and_their_chunks():
    turns = [
        Turn(role="user", text="Первый вопрос про бег"),
        Turn(role="assistant", text="Первый ответ"),
        Turn(role="user", text="Уточнение"),
        Turn(role="user", text="И ещё одно"),
        Turn(role="assistant", text="Второй ответ"),
    ]
    doc = Document(
        doc_id="d1", kind=Kind.DIALOGUE, format="jsonl", title="t", source_path="/x", source_hash="h", turns=turns
    )
    chunks = [
        {"chunk_id": "c0", "turn_index": 0, "ordinal": 0},
        {"chunk_id": "c1", "turn_index": 2, "ordinal": 1},
        {"chunk_id": "c2", "turn_index": 3, "ordinal": 2},
    ]
    items = build_items(doc, chunks)
    assert [i.unit.turn_index for i in items] == [0, 2]
    assert items[1].user_text == "Уточнение\n\nИ ещё одно" and items[1].answer_text == "Второй ответ"
    assert [i.chunk_ids for i in items] == [["c0"], ["c1", "c2"]]
    grown = doc.model_copy(update={"turns": [*turns, Turn(role="user", text="Новый вопрос")]})
    assert [i.item_id for i in build_items(grown, chunks)[:2]] == [i.item_id for i in items]


def test_article_sections_find_their_chunks_by_text():
    sections = [
        Section(
            heading_path=["Бег"], text="Лёгкий бег развивает аэробную базу и учит сердце работать экономно долгие часы."
        ),
        Section(
            heading_path=["Бег", "Темп"],
            text="Держи разговорный темп на длинных пробежках, ускоряйся только в конце недели.",
        ),
    ]
    doc = Document(
        doc_id="a1",
        kind=Kind.ARTICLE,
        format="markdown",
        title="t",
        source_path="/a.md",
        source_hash="h",
        sections=sections,
    )
    chunks = [
        {
            "chunk_id": "k0",
            "ordinal": 0,
            "text": "Бег\n\nЛёгкий бег развивает аэробную базу и учит сердце работать экономно долгие часы.",
        },
        {
            "chunk_id": "k1",
            "ordinal": 1,
            "text": "Бег > Темп\n\nДержи разговорный темп на длинных пробежках, ускоряйся только в конце недели.",
        },
    ]
    items = build_items(doc, chunks)
    assert [(i.unit.heading, i.chunk_ids) for i in items] == [("Бег", ["k0"]), ("Бег > Темп", ["k1"])]
    assert mean_vector(np.array([[1.0, 0.0], [0.0, 1.0]]))[0] == pytest.approx(2**-0.5)


def test_lecture_items_are_indexed_windows_with_distinct_ids_for_split_pieces():
    doc = Document(doc_id="l1", kind=Kind.LECTURE, format="srt", title="t", source_path="/l.srt", source_hash="h")
    chunks = [
        {"chunk_id": "w0", "ordinal": 0, "start": 0.0, "end": 90.0, "text": "first half of a long window"},
        {"chunk_id": "w1", "ordinal": 1, "start": 0.0, "end": 90.0, "text": "second half of a long window"},
        {"chunk_id": "w2", "ordinal": 2, "start": 90.0, "end": 170.0, "text": "next window"},
    ]
    items = build_items(doc, chunks)
    assert len({i.item_id for i in items}) == 3 and [i.chunk_ids for i in items] == [["w0"], ["w1"], ["w2"]]
    assert build_items(doc, []) == []


# Scoring runs


def test_duplicate_is_discarded_marked_item_scores_high_refusal_scores_low(tmp_path, corpus):
    config = config_for(tmp_path)
    state, report = score(config, corpus)
    duplicate, original, marked, refusal = row(state, "b-0"), row(state, "a-0"), row(state, "c-0"), row(state, "d-0")
    assert duplicate["tier"] == "discard" and duplicate["redundancy"] == 0.0 and duplicate["cluster_keeper"] == "a-0"
    assert duplicate["score"] < original["score"]
    assert marked["importance"] >= 0.8 and marked["score"] == state.frame["score"].max()
    assert refusal["quality"] < 0.5
    assert report.tiers["discard"] == 1 and report.items_new == 4


def test_recurring_topic_scores_higher_recurrence_than_a_one_off(tmp_path):
    config = config_for(tmp_path)
    items = [
        exchange(
            doc,
            f"Вопрос {n} про интервальные тренировки и пульс, вариант {doc}",
            f"Ответ {n}: интервалы по 400 м, отдых 90 секунд, вариант {doc}.",
            when=datetime(2024, 1, 1) + timedelta(days=60 * n),
            vector=unit_vector(20 + n, near=TOPIC_RUN, noise=0.2),
        )
        for n, doc in enumerate(["r1", "r2", "r3"])
    ]
    items.append(
        exchange(
            "once",
            "Как настроить резервное копирование базы?",
            "Используйте снапшоты и проверяйте восстановление.",
            when=datetime(2024, 2, 1),
            vector=TOPIC_CODE,
        )
    )
    state, _ = score(config, items)
    assert row(state, "r1-0")["recurrence"] > 0.3 and row(state, "r1-0")["recurrence_docs"] == 2
    assert row(state, "once-0")["recurrence"] == 0.0


def test_item_without_vector_is_cache_and_junk_is_discard(tmp_path):
    config = config_for(tmp_path)
    items = [
        exchange(
            "n",
            "Новый разговор, который ещё не проиндексирован, про планы на отпуск в горах.",
            "Ответ про горы и снаряжение.",
            when=NOW,
            vector=None,
        ),
        exchange("j", "ок", "да", when=NOW, vector=TOPIC_CODE),
    ]
    state, _ = score(config, items)
    assert row(state, "n-0")["tier"] == "cache" and "not indexed" in row(state, "n-0")["tier_rule"]
    assert row(state, "j-0")["tier"] == "discard" and "junk" in row(state, "j-0")["tier_rule"]


def test_adding_items_computes_every_signal_only_for_the_new_ones(tmp_path, corpus):
    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    later = exchange(
        "e",
        RUN_Q.replace("первый", "второй"),
        "Снова: база, длинная пробежка, разговорный темп.",
        when=datetime(2024, 12, 1),
        vector=unit_vector(13, near=TOPIC_RUN, noise=0.3),
    )
    state2, report = score(config, [later], store.load())
    assert (report.items_total, report.items_new, report.items_changed, report.items_unchanged) == (5, 1, 0, 4)
    assert {report.signals_computed[name] for name in ("density", "importance", "quality", "routes")} == {1}
    assert report.signals_computed["recency"] == 5
    # The new, later item is a neighbour of the running items: their neighbour lists (recurrence) were updated.
    assert 1 <= report.items_rescored <= 4
    for column in ("density", "importance", "quality", "fingerprint"):
        assert list(state2.frame[column][:4]) == list(state.frame[column])
    store.save(state2)
    _, unchanged = score(config, [], store.load(), live={"a", "b", "c", "d", "e"})
    assert (unchanged.items_new, unchanged.items_rescored, unchanged.signals_computed["novelty"]) == (0, 0, 0)


def test_earlier_item_added_later_lowers_novelty_of_later_items(tmp_path, corpus):
    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    before = row(state, "c-0")["novelty"]
    early = exchange(
        "z",
        "Как тренироваться к марафону, если до старта полгода и бегаю я редко?",
        "Постепенно: +10% объёма в неделю, длинная раз в неделю.",
        when=datetime(2023, 6, 1),
        vector=unit_vector(11, near=TOPIC_RUN, noise=0.6),
    )
    state2, report = score(config, [early], store.load())
    assert row(state2, "c-0")["novelty"] < before and row(state2, "c-0")["novelty_neighbour"] == "z-0"
    assert report.signals_computed["novelty"] >= 2


def test_removed_document_frees_its_duplicate_and_counts_removed(tmp_path, corpus):
    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    state2, report = score(config, [], store.load(), live={"b", "c", "d"})
    assert report.items_removed == 1 and report.items_total == 3
    assert row(state2, "b-0")["tier"] != "discard" and row(state2, "b-0")["redundancy"] == 1.0


def test_usage_from_search_hits_is_log_squashed(tmp_path, corpus):
    config = config_for(tmp_path)
    state, _ = score(config, corpus, hits={"a-chunk-0": 3, "c-chunk-0": 200})
    assert 0.0 < row(state, "a-0")["usage"] < row(state, "c-0")["usage"] == 1.0


def test_changed_weights_retier_from_stored_signals(tmp_path, corpus):
    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    before = tier_summary(config)
    stored_vectors = store.load().vectors.copy()
    config.promote.weights = {"importance": 1.0}
    config.promote.lora_threshold = 0.7
    report = retier(config, now=NOW)
    assert report.items_new == 0 and report.texts_embedded == 0 and report.signals_computed == {"recency": 4}
    after = tier_summary(config)
    assert after["tiers"] != before["tiers"]
    assert after["tiers"]["lora"] == 1 and after["samples"]["lora"] == ["c-0"]
    assert np.array_equal(store.load().vectors, stored_vectors)


def test_explanation_assignments_and_summary_read_the_stored_state(tmp_path, corpus):
    config = config_for(tmp_path)
    assert load_assignments(config, adapter="sport") == [] and tier_summary(config)["items"] == 0
    config.promote.lora_threshold = 0.5
    state, _ = score(config, corpus)
    ScoreStore(scores_dir(config)).save(state)
    explanation = explain_item(config, "c-0")
    assert [s.name for s in explanation.signals] == list(sg.SIGNALS)
    assert sum(s.contribution for s in explanation.signals) == pytest.approx(explanation.score, abs=1e-3)
    importance = next(s for s in explanation.signals if s.name == "importance")
    assert "запомни" in importance.reason and explanation.tier == "lora:sport"
    assert "lora_threshold" in explanation.tier_rule
    duplicate = explain_item(config, "b-0")
    assert "exact duplicate of a-0" in duplicate.tier_rule
    keeper = duplicate.related["a-0"]  # the ids a reason names come with what a person finds them by
    assert (keeper.title, keeper.date, keeper.position) == ("conversation a", "2024-01-10", "turn 0")
    assignments = load_assignments(config, adapter="sport")
    assert [a.item_id for a in assignments] == ["a-0", "c-0"] and assignments[1].adapters == ["sport"]
    assert assignments[1].user_text.startswith("Запомни") and assignments[1].unit.turn_index == 0
    everything = load_assignments(config)
    assert [a.item_id for a in everything] == ["a-0", "c-0", "b-0", "d-0"]
    summary = tier_summary(config)
    assert summary["items"] == 4 and summary["adapters"]["sport"] == 2
    with pytest.raises(ConfigError):
        load_assignments(config, adapter="cooking")


def test_report_top_and_bottom_items_say_which_rule_gave_their_tier(tmp_path, corpus):
    config = config_for(tmp_path)
    state, report = score(config, corpus)
    ScoreStore(scores_dir(config)).save(state)
    assert report.top and report.bottom
    for brief in [*report.top, *report.bottom]:
        assert brief.tier_rule and brief.tier_rule == explain_item(config, brief.item_id).tier_rule
    assert "rag_threshold" in report.bottom[0].tier_rule


def test_tier_check_passes_on_a_scored_store_and_fails_on_an_item_without_tier(tmp_path, corpus):
    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    good = check_tiers(config, {"a", "b", "c", "d"})
    assert good.ok and good.items == 4 and good.problems == []
    unscored = check_tiers(config, {"a", "b", "c", "d", "e"})
    assert not unscored.ok and unscored.documents_without_items == 1
    state.frame.loc[state.frame["item_id"] == "c-0", "tier"] = ""
    store.save(state)
    broken = check_tiers(config, {"a", "b", "c", "d"})
    assert not broken.ok and broken.items_without_tier == 1 and broken.problems == ["1 items have no tier"]


def test_item_tiers_asset_check_reports_the_tier_check(tmp_path, corpus):
    from assets.promote import item_tiers_complete_and_exclusive
    from assets.resources import MemoryPipelineResource

    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    pipeline = MemoryPipelineResource(storage=str(config.storage_root))
    passed = item_tiers_complete_and_exclusive(pipeline=pipeline)
    assert passed.passed and passed.metadata["items"].value == 4
    state.frame.loc[state.frame["item_id"] == "a-0", "tier"] = ""
    store.save(state)
    failed = item_tiers_complete_and_exclusive(pipeline=pipeline)
    assert not failed.passed and failed.metadata["items_without_tier"].value == 1


def test_new_importance_marker_rescores_stored_items_on_the_next_run(tmp_path, corpus):
    config = config_for(tmp_path)
    store = ScoreStore(scores_dir(config))
    state, _ = score(config, corpus)
    store.save(state)
    assert row(state, "a-0")["importance"] == 0.0
    config.promote.importance_markers = [*config.promote.importance_markers, "первый марафон"]
    state2, report = score(config, [], store.load(), live={"a", "b", "c", "d"})
    assert report.signals_computed["importance"] == 4 and report.items_rescored == 4
    assert row(state2, "a-0")["importance"] == pytest.approx(0.8)


def test_the_users_stated_view_reaches_the_core_set_and_explain_says_why(tmp_path):
    config = config_for(tmp_path)
    # Between this view's score without its stance's importance (~0.49) and with it (~0.69).
    config.promote.lora_threshold = 0.55
    view = (
        "Мне кажется, поиск по памяти важнее, чем сама модель. Лучше маленькая модель с хорошей памятью, "
        "чем большая без неё."
    )
    question = "Какие модели сейчас можно запустить локально на ноутбуке с 16 ГБ памяти, и как их сравнить?"
    answer = "Подойдут модели до 8B в 4-битной квантизации; сравнивайте их на своих задачах, а не на бенчмарках."
    items = [
        exchange("v", view, answer, when=datetime(2024, 5, 1), vector=unit_vector(20, near=TOPIC_OTHER, noise=0.4)),
        exchange("q", question, answer, when=datetime(2024, 5, 2), vector=unit_vector(21, near=TOPIC_CODE, noise=0.4)),
    ]
    state, _ = score(config, items)
    assert row(state, "v-0")["tier"] == "lora:core" and row(state, "q-0")["tier"] == "rag"
    assert row(state, "v-0")["importance"] == pytest.approx(config.promote.stance_importance)
    ScoreStore(scores_dir(config)).save(state)
    importance = next(s for s in explain_item(config, "v-0").signals if s.name == "importance")
    assert "own stance 1" in importance.reason and "«мне кажется»" in importance.reason
    config.promote.stance_importance = 0.0
    store = ScoreStore(scores_dir(config))
    state2, report = score(config, [], store.load(), live={"v", "q"})
    assert report.signals_computed["importance"] == 2 and row(state2, "v-0")["tier"] == "rag"


# The whole promotion over a tiny indexed corpus (real ingest, chunking, the default model's vectors, LanceDB)


def _conversation(cid: str, day: str, *exchanges: tuple[str, str]) -> str:
    import json

    messages = [
        m
        for user, answer in exchanges
        for m in ({"role": "user", "content": user}, {"role": "assistant", "content": answer})
    ]
    return json.dumps(
        {"conversation_id": cid, "title": cid, "created_at": f"{day}T09:00:00Z", "messages": messages},
        ensure_ascii=False,
    )


MARATHON = (
    "How should I pace my first marathon so I do not hit the wall at kilometre thirty?",
    "Start slower than goal pace for the first ten kilometres, take carbohydrates every thirty minutes "
    "and save effort for the last ten.",
)
OPINION = (
    "I think small local models are underrated. I believe owning the weights matters more than raw benchmark scores, "
    "because you can fix and retrain them yourself, therefore you learn how they actually work.",
    "That is a fair position: control and understanding are real advantages of local models.",
)
REMEMBER = (
    "Remember this: my resting heart rate is 48 and my easy runs should stay below 140 beats per minute.",
    "Noted: resting heart rate 48, easy runs under 140 bpm.",
)


def _indexed_corpus(tmp_path: Path):
    """Three conversations and a lecture, ingested and indexed for real: (config, embedder, chats folder)."""
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.ingest.pipeline import ingest_all

    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "history.jsonl").write_text(
        "\n".join(
            [
                _conversation("c1", "2024-01-05", MARATHON, REMEMBER),
                _conversation("c2", "2024-04-05", OPINION),
                _conversation("c3", "2024-06-05", MARATHON),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    lectures = tmp_path / "lectures"
    lectures.mkdir()
    (lectures / "coach_talk.srt").write_bytes(
        (Path(__file__).parent / "fixtures" / "lectures" / "coach_talk.srt").read_bytes()
    )
    config = Config(
        storage_root=tmp_path / "storage",
        sources={"dialogues": [chats], "lectures": [lectures]},
        adapters=[Config().adapters[0], SPORT],
    )
    ingest_all(config)
    embedder = load_embedder(config.embedding)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    return config, embedder, chats


@pytest.mark.slow
def test_promotion_over_an_indexed_corpus_is_incremental(tmp_path):
    from memory_pipeline.index.search_log import log_search
    from memory_pipeline.index.sync import sync_index
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.ingest.pipeline import ingest_all
    from memory_pipeline.scoring import run_promotion

    config, embedder, chats = _indexed_corpus(tmp_path)
    first = run_promotion(config, now=NOW, progress=False, embedder=embedder)
    assert first.items_new == first.items_total >= 5 and first.texts_embedded == 2
    assignments = load_assignments(config)
    assert {a.kind for a in assignments} == {"dialogue", "lecture"}
    marathon = [a for a in assignments if a.text.startswith(MARATHON[0])]
    assert [a.tier == "discard" for a in marathon] == [False, True]
    remembered = next(a for a in assignments if a.text.startswith("Remember this"))
    assert signal(config, remembered.item_id, "importance") >= 0.8
    opinion = next(a for a in assignments if a.text.startswith("I think"))
    stance = explain_item(config, opinion.item_id).routes["core"]["stance"]
    assert {"view: «i think»", "view: «i believe»"} <= set(stance)

    again = run_promotion(config, now=NOW, progress=False, embedder=embedder)
    assert (again.items_new, again.items_rescored, again.documents_read, again.texts_embedded) == (0, 0, 0, 0)

    (chats / "later.jsonl").write_text(
        _conversation(
            "c4",
            "2024-09-01",
            ("Which shoes for a marathon on asphalt?", "Cushioned road shoes you have already run long in."),
        )
        + "\n",
        encoding="utf-8",
    )
    ingest_all(config)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    log_search(
        config,
        query="marathon pacing",
        mode="vector",
        kind=None,
        k=1,
        hit_ids=remembered_chunks(config, remembered.item_id),
        latency_ms=1.0,
    )
    added = run_promotion(config, now=NOW, progress=False, embedder=embedder)
    assert (added.items_new, added.items_changed, added.documents_read) == (1, 0, 1)
    assert added.signals_computed["density"] == 1 and added.signals_computed["usage"] >= 2
    assert signal(config, remembered.item_id, "usage") > 0


class CountingEmbedder:
    """The real embedder, counting every text it is asked to embed."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.model_id = embedder.model_id
        self.texts = 0

    def embed_passages(self, texts):
        self.texts += len(texts)
        return self.embedder.embed_passages(texts)


@pytest.mark.slow
def test_changed_thresholds_retier_on_the_next_promotion_without_embedding(tmp_path):
    from memory_pipeline.scoring import run_promotion

    config, embedder, _ = _indexed_corpus(tmp_path)
    config.promote.lora_threshold = 0.9  # nothing promoted at first, so that lowering it re-tiers
    first = run_promotion(config, now=NOW, progress=False, embedder=embedder)
    vectors = ScoreStore(scores_dir(config)).load().vectors.copy()
    config.promote.rag_threshold, config.promote.lora_threshold = 0.0, 0.0
    counting = CountingEmbedder(embedder)
    second = run_promotion(config, now=NOW, progress=False, embedder=counting)
    assert counting.texts == 0 and second.texts_embedded == 0
    assert (second.items_new, second.items_changed, second.documents_read) == (0, 0, 0)
    assert second.tiers != first.tiers and second.tiers["discard"] == first.tiers["discard"]
    # Thresholds do not move fresh items (the undated lecture entered the memory just now): they wait in the cache.
    assert second.tiers["lora"] > 0 and second.tiers["cache"] == first.tiers["cache"] == 1
    assert {second.signals_computed[name] for name in ("density", "importance", "quality", "routes")} == {0}
    assert np.array_equal(ScoreStore(scores_dir(config)).load().vectors, vectors)
    promoted = next(a for a in load_assignments(config) if a.tier.startswith("lora:"))
    assert ">= lora_threshold 0.0" in explain_item(config, promoted.item_id).tier_rule


def signal(config: Config, item_id: str, name: str) -> float:
    return next(s.value for s in explain_item(config, item_id).signals if s.name == name)


def remembered_chunks(config: Config, item_id: str) -> list[str]:
    frame = ScoreStore(scores_dir(config)).load_frame(["item_id", "chunk_ids"])
    return list(frame.set_index("item_id").loc[item_id, "chunk_ids"])
