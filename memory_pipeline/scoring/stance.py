"""First-person stance: does a text state the writer's own view, belief, hypothesis, plan or self-assessment?

The core adapter learns how the user thinks, so it needs the passages where he says what he
thinks, in Russian or English, in his own phrasing ("Гипотеза: …", "Понимаю, что я могу…",
"Насколько я понимаю…", "Я себя оцениваю как…", "по-моему", "I believe", "my view"), not a
fixed list of two verbs. Patterns are regular expressions over word stems, grouped by what they
signal; a match is a reason a person can check (``explain`` shows it).

Two kinds of evidence:

- **stance phrases** (view, belief, hypothesis, plan, value, self-assessment, agreement, design of
  his AI): one is enough;
- **argument moves** ("допустим", "то есть", "проблема не в … а в …", "the real X is"): a line of
  reasoning in the user's own words; two of them count as a stance, one only adds weight.

Questions and requests addressed to the assistant ("…?", "объясни", "explain") make no argument
by themselves: argument moves count only in statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memory_pipeline.records import Kind

_ASKING = r"(?:узнать|спросить|уточнить|уточниться)\b"
"""«Хочу узнать / спросить…» asks for something; it states no plan of the user's."""
_CLAUSE_START = r"(?:^|[.!?…]\s+|,\s+)"
"""Where a clause whose pronoun is dropped begins: «Убеждён, что…», «…, планирую…»."""
# (category, pattern): Russian and English, lower-case; \b-like edges are added around each.
_STANCE: tuple[tuple[str, str], ...] = (
    ("view", r"я\s+(?:так\s+)?(?:думаю|считаю|полагаю|уверен[а]?|убежд[её]н[а]?|верю)"),
    ("view", r"(?:вс[её]\s+равно\s+|по-прежнему\s+)?считаю,?\s+(?:что|это|так|нужно|надо|важно|правильн|проще|лучше)"),
    ("view", r"думаю,\s+(?:что|это|так)"),
    ("view", r"по[-\s]моему"),
    ("view", r"(?:как\s+)?мне\s+(?:кажется|думается|видится|представляется)"),
    ("view", r"на\s+мой\s+взгляд|с\s+моей\s+точки\s+зрения|мо[её]\s+мнение|по\s+моему\s+мнению"),
    ("view", r"я\s+бы\s+(?:тут\s+|здесь\s+|так\s+)?сказал[а]?"),
    ("view", r"насколько\s+я\s+понимаю|как\s+я\s+понимаю|(?:я\s+)?понимаю,?\s+что\s+я"),
    ("view", r"меня\s+(?:бесит|раздражает|злит|радует|удивляет)"),
    # the pronoun dropped, as Russian often does: "Убеждён, что …", "Склоняюсь к тому, что …"
    ("view", _CLAUSE_START + r"(?:убежд[её]н[а]?|уверен[а]?|полагаю|подозреваю|сомневаюсь),?\s+(?:что|в\s+том)"),
    ("view", r"(?:я\s+)?склоняюсь\s+к|мне\s+ближе|как\s+я\s+(?:это\s+)?вижу|я\s+(?:это\s+)?вижу\s+так"),
    ("view", r"у\s+меня\s+(?:ощущение|чувство|впечатление),?\s+что|(?:я\s+)?приш[её]л[а]?\s+к\s+выводу"),
    ("view", r"(?:это|она|он|оно|они)\s+(?:—\s+|-\s+)?переоцен|это\s+перебор|это\s+перестраховка"),
    ("belief", r"мо[иея]\s+(?:убеждени|мировоззрени|ценност|принцип|взгляд)"),
    ("belief", r"свои\s+(?:убеждени|взгляд|ценност)|способы\s+мышления"),
    ("belief", r"мо(?:я|ей|ю)\s+(?:позици|философи|точк\w*\s+зрения)|мо[йё]\s+(?:подход|принцип|правило)"),
    ("hypothesis", r"гипотеза\s*:|моя\s+гипотеза|я\s+предполагаю|предполагаю,\s+что|если\s+я\s+прав"),
    ("plan", r"я\s+(?:планирую|собираюсь|намерен[а]?|решил[а]?|буду)\b"),
    ("plan", r"я\s+бы\s+хотел[а]?(?:,?\s+чтобы\s+(?!ты\b)|\s+(?!" + _ASKING + r")\w+)"),
    ("plan", _CLAUSE_START + r"(?:(?:планирую|собираюсь)\s+\w+|решил[а]?\s+\w+(?:ть|ться)\b)"),
    ("plan", r"(?:^|[.!?]\s+|,\s+|я\s+)хочу\s+(?!,?\s*чтобы\s+ты|" + _ASKING + r")(?:\w+ть|\w+ться)\b"),
    ("plan", r"мо[яй]\s+(?:цель|план|задача)|цель\s*:"),
    ("value", r"я\s+принципиально|для\s+меня\s+(?:важно|главное|ценно)|мне\s+важно|я\s+ценю|я\s+предпочитаю"),
    ("value", r"мне\s+(?:хватает|достаточно)\s+\w+|(?:слишком|чересчур)\s+\w+\s+для\s+(?:меня|моей|моего|моих)"),
    ("self_assessment", r"я\s+себя\s+оцениваю|оцениваю\s+себя|я\s+(?:сильно\s+|пока\s+)?(?:отста[юё]|отстпю)"),
    ("self_assessment", r"для\s+меня\s+(?:вс[её]\s+)?ново|мой\s+уровень|я\s+новичок|вытяну\s+ли\s+я"),
    ("self_assessment", r"(?:я\s+)?(?:хорошо|плохо|слабо|сильно)\s+(?:разбираюсь|понимаю|знаю)"),
    ("self_assessment", r"я\s+(?:пока\s+)?не\s+умею|мне\s+(?:пока\s+)?не\s+хватает\s+(?:знаний|опыта|практики|теории)"),
    ("agreement", r"(?:вот\s+с\s+этим\s+|с\s+этим\s+)?(?:не\s+)?согласен|убедил[аи]?\b|я\s+против\b|я\s+за\s+то"),
    ("ai_design", r"(?:мо|сво)(?:й|я|е|ё|ю|его|ей|ем|ём|их)\s+(?:ии|ai|llm|ллм|модел\w*|ассистент\w*|агент\w*)"),
    ("ai_design", r"(?:мо|сво)(?:й|я|е|ё|ю|его|ей|ем|ём|их)\s+архитектур\w*"),
    ("ai_design", r"не\s+обучить\s+\w+,\s+а\s+обучить"),
    ("ai_design", r"чтобы\s+(?:мой\s+|моя\s+)?(?:ии|модель|ассистент)\s+(?:думал|мыслил|отвечал|рассуждал)"),
    ("view", r"i\s+(?:honestly\s+|really\s+|still\s+)?(?:think|believe|feel\s+that|suspect|reckon|doubt)"),
    ("view", r"in\s+my\s+(?:view|opinion|experience)|my\s+(?:view|opinion|take)\s+is|imo\b"),
    ("view", r"i'?m\s+convinced|i\s+am\s+convinced|i'?d\s+say"),
    ("belief", r"my\s+(?:beliefs|values|worldview|principles)|i\s+value\b"),
    ("hypothesis", r"my\s+hypothesis|hypothesis\s*:|i\s+assume\s+that"),
    ("plan", r"i\s+(?:plan|intend|am\s+going|'m\s+going|want)\s+to\b|my\s+(?:goal|plan)\s+is"),
    ("self_assessment", r"i'?d?\s+rate\s+my(?:self)?\b|i(?:'m|\s+am)\s+(?:not\s+)?(?:bad|good|weak|strong|new)\s+at"),
    ("view", r"i(?:'m|\s+am)\s+(?:sure|certain|leaning\s+towards?)|i\s+prefer\b|my\s+(?:approach|position|rule)\s+is"),
    ("plan", r"i(?:'ve|\s+have)?\s+decided\s+to\b"),
    ("agreement", r"i\s+(?:dis)?agree|that\s+i\s+can\s+live\s+with|fair\.|you\s+convinced\s+me"),
    ("ai_design", r"my\s+(?:ai|assistant|model)\s+should|i\s+want\s+my\s+(?:ai|assistant|model)"),
)

_ARGUMENT: tuple[str, ...] = (
    r"допустим",
    r"аналогично",
    r"то\s+есть",
    r"по\s+сути",
    r"если\s+же",
    r"проблема\s+не\s+в",
    r"не\s+\w+,\s+а\s+\w+",
    r"лучше\s+\w+(?:\s+\w+){0,4},\s+чем",
    r"важнее,?\s+чем",
    r"сколько\s+(?:\w+\s+){1,4}ни\s",
    r"тут\s+уже",
    r"гораздо\s+(?:больше|меньше|важнее)",
    r"потому\s+что|поэтому|следовательно|значит,",
    r"но\s+тогда",
    r"the\s+real\s+\w+\s+is",
    r"waste\s+of\s+time",
    r"\bnot\s+(?:for|the)\s+\w+",
    r"because|therefore|which\s+means",
)

_EDGE_BEFORE = r"(?<![\w-])"
_REQUEST_START = re.compile(
    r"^\s*(?:объясни|расскажи|подскажи|помоги|покажи|дай|сделай|напиши|explain|(?:tell|show|give|convince)\s+me)",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")


@dataclass(frozen=True)
class Stance:
    """What the stance detector found: phrases by category, argument moves, and the score they give."""

    phrases: tuple[tuple[str, str], ...]
    arguments: tuple[str, ...]
    statements: int

    @property
    def score(self) -> float:
        """1.0 with a stance phrase or two argument moves in a statement, 0.5 with one move, else 0."""
        if not self.statements:
            return 0.0
        if self.phrases or len(self.arguments) >= 2:
            return 1.0
        return 0.5 if self.arguments else 0.0

    def describe(self) -> list[str]:
        """Reasons a person can check: ``category: «phrase»`` and ``argument: «move»``."""
        phrases = [f"{category}: «{phrase}»" for category, phrase in self.phrases]
        return phrases + [f"argument: «{move}»" for move in self.arguments]


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_EDGE_BEFORE + "(?:" + pattern + ")", re.IGNORECASE)


_STANCE_RE = tuple((category, _compile(pattern)) for category, pattern in _STANCE)
_ARGUMENT_RE = tuple(_compile(pattern) for pattern in _ARGUMENT)


def statements(text: str) -> list[str]:
    """Sentences of ``text`` that are not questions or requests to the assistant."""
    sentences = (p.strip() for p in _SENTENCE.split(text))
    return [s for s in sentences if s and not s.endswith("?") and not _REQUEST_START.match(s)]


def detect_stance(text: str) -> Stance:
    """Stance phrases and argument moves in the writer's own text (the user's turns, or his own notes).

    Stance phrases count in any sentence (a view can come inside a question: "я думаю, … Какие
    области мне изучить?"); argument moves count only in statements.
    """
    folded = text.casefold()
    phrases: list[tuple[str, str]] = []
    for category, pattern in _STANCE_RE:
        for match in pattern.finditer(folded):
            phrase = " ".join(match.group(0).split())
            if (category, phrase) not in phrases:
                phrases.append((category, phrase))
    said = statements(folded)
    arguments: list[str] = []
    for sentence in said:
        for pattern in _ARGUMENT_RE:
            for match in pattern.finditer(sentence):
                move = " ".join(match.group(0).split())
                if move not in arguments:
                    arguments.append(move)
    return Stance(phrases=tuple(phrases), arguments=tuple(arguments), statements=len(said) or (1 if phrases else 0))


@dataclass(frozen=True)
class OwnStance:
    """The stance of the user's own words in an item, and whether the item has enough of them to judge."""

    eligible: bool
    stance: Stance | None
    score: float


def own_stance(kind: Kind, text: str, user_text: str, *, min_user_chars: int) -> OwnStance:
    """Stance of the user's own words: a dialogue's user turns, an article section (his note), never a lecture.

    Dialogue: ``Stance.score`` of his turns when they have at least ``min_user_chars``. Article:
    1.0 with a stance phrase only, since an article's argument may be anyone's. Profile: always 1.0,
    it is his own statement of himself. Routing sends an item to ``core`` on this score, and
    importance counts it: a view of his own is what the user would keep, as much as a #tag.
    """
    own = user_text if kind is Kind.DIALOGUE else text if kind in (Kind.ARTICLE, Kind.PROFILE) else ""
    eligible = len(own.strip()) >= min_user_chars if kind is Kind.DIALOGUE else bool(own.strip())
    if not eligible:
        return OwnStance(False, None, 0.0)
    stance = detect_stance(own)
    if kind is Kind.PROFILE:
        return OwnStance(True, stance, 1.0)
    score = stance.score if kind is Kind.DIALOGUE else 1.0 if stance.phrases else 0.0
    return OwnStance(True, stance, score)
