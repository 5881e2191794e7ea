"""First-person stance detection on the user's own phrasing, Russian and English (no model needed)."""

import pytest

from memory_pipeline.config import PromoteConfig
from memory_pipeline.records import Kind
from memory_pipeline.scoring.signals import own_importance
from memory_pipeline.scoring.stance import detect_stance, own_stance, statements


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Хочу свои убеждения, мировоззрения и способы мышления описать отдельно.", "belief"),
        ("Гипотеза: память важнее размера модели.", "hypothesis"),
        ("Понимаю, что я могу ошибаться в оценке сроков.", "view"),
        ("Насколько я понимаю, LoRA меняет только малую часть весов.", "view"),
        ("Я себя оцениваю как новичка в инфраструктуре.", "self_assessment"),
        ("Но по знаниям ИИ стэка я отстаю сильно, всё для меня ново.", "self_assessment"),
        ("Мне кажется, правило 10% — это перестраховка.", "view"),
        ("По-моему, это переоценённая метрика.", "view"),
        ("Я планирую пробежать марафон весной.", "plan"),
        ("Хочу пробежать первый марафон в апреле.", "plan"),
        ("Я принципиально не хочу отдавать свои переписки в облако.", "value"),
        ("Вот с этим согласен, проблема в подаче.", "agreement"),
        ("Цель: не обучить язык, а обучить мышление.", "plan"),
        ("I honestly think it's overhyped for people who run 4 hours a week.", "view"),
        ("In my view memory matters more than the model.", "view"),
        ("I want my assistant to argue the way I do.", "ai_design"),
        # the pronoun dropped, and positions named rather than argued
        ("Убеждён, что без своей памяти ассистент останется чужим.", "view"),
        ("Склоняюсь к тому, что теория без практики не держится.", "view"),
        ("Пришёл к выводу, что без оценки качества дообучение — лотерея.", "view"),
        ("Планирую раз в месяц дообучать ядро.", "plan"),
        ("Решил бегать длинную по воскресеньям.", "plan"),
        ("Моя позиция простая: лучше своё, чем облачное.", "belief"),
        ("Мне не хватает опыта с докером.", "self_assessment"),
        ("Honestly, I rate my coding as average.", "self_assessment"),
        ("I prefer small local models I fully control.", "view"),
        ("I've decided to log every conversation.", "plan"),
        ("Я бы хотел, чтобы модель спорила со мной.", "plan"),
    ],
)
def test_stance_phrases_in_the_users_own_phrasing(text, category):
    stance = detect_stance(text)
    assert category in {c for c, _ in stance.phrases}, stance.describe()
    assert stance.score == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "Объясни, почему 4-3-3 так часто мучается против трёх центральных защитников.",
        "После длинной на 28 км два дня ноги как деревянные. Это нормально?",
        "Какие области ты думаешь мне стоит изучить?",
        "Считаю часы глубокой работы в неделю простым скриптом.",
        "Хочу, чтобы ты составил план.",
        "What is the difference between HNSW and IVF?",
        "Решил задачу, запусти тесты.",
        "Он уверен, что выиграет.",
        "Скажи, ты уверен, что это правильно?",
        "Хочу узнать, как работает LoRA.",
        "Я бы хотел, чтобы ты объяснил кванты.",
    ],
)
def test_questions_requests_and_facts_state_no_view(text):
    assert detect_stance(text).score == 0.0, detect_stance(text).describe()


def test_argument_moves_count_only_in_statements_and_two_make_a_stance():
    one = detect_stance("Лучше маленькая модель с хорошей памятью, чем большая без неё.")
    assert one.score == 0.5 and one.arguments
    two = detect_stance("Проблема не в метрике, а в том, как её подают. То есть дело в телевизоре.")
    assert two.score == 1.0 and len(two.arguments) >= 2
    assert detect_stance("Почему проблема не в метрике, а в подаче?").score == 0.0
    assert statements("Объясни это. Я так думаю. Правда?") == ["Я так думаю."]


def test_reasons_name_the_phrases_found():
    reasons = detect_stance("Мне кажется, поиск важнее, чем модель.").describe()
    assert reasons == ["view: «мне кажется»", "argument: «важнее, чем»"]


def test_own_stance_reads_the_users_turns_his_notes_and_never_a_lecture():
    view = "Мне кажется, поиск по памяти важнее, чем сама модель."
    dialogue = own_stance(Kind.DIALOGUE, f"{view}\n\nОтвет ассистента.", view, min_user_chars=40)
    assert dialogue.eligible and dialogue.score == 1.0
    assert own_stance(Kind.DIALOGUE, "Я думаю, да.", "Я думаю, да.", min_user_chars=40).eligible is False
    assistant_only = own_stance(Kind.DIALOGUE, "Я считаю, что вы правы.", "", min_user_chars=40)
    assert assistant_only.score == 0.0
    assert own_stance(Kind.ARTICLE, view, "", min_user_chars=40).score == 1.0
    assert own_stance(Kind.LECTURE, view, "", min_user_chars=40).score == 0.0


def test_a_stated_view_counts_as_importance_below_an_explicit_marker():
    config = PromoteConfig()
    view = "Мне кажется, правило 10% — это перестраховка, я поднимал объём быстрее."
    importance = own_importance("dialogue", f"{view}\n\nОтвет.", view, config)
    assert importance.value == pytest.approx(config.stance_importance) and importance.stance == 1.0
    assert any("«мне кажется»" in reason for reason in importance.stance_reasons)
    marked = own_importance("dialogue", "Запомни: " + view, "Запомни: " + view, config)
    assert marked.value == pytest.approx(0.8) and marked.markers == ("запомни",)
    question = "После длинной на 28 км два дня ноги как деревянные. Это нормально?"
    assert own_importance("dialogue", question, question, config).value == 0.0
    assert own_importance("lecture", view, "", config).value == 0.0
    assert own_importance("dialogue", view, view, PromoteConfig(stance_importance=0.0)).value == 0.0
