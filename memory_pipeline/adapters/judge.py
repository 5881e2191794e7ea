"""Read an adapter's answers the way a person would glance at them: repeated, echoed, wrong language, too short.

Perplexity alone passes an adapter whose answer is «Вот: Вот: Вот: …» (it can still predict the eval text
well), so the gate also judges generated text. Everything here is plain string arithmetic over words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from memory_pipeline.config import GateConfig
from memory_pipeline.records import guess_language

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Share of the answer's n-grams that are distinct (1.0: nothing repeats); an answer shorter than n scores 1.0."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_repeated_ngram(tokens: Sequence[str]) -> int:
    """Length of the longest word n-gram occurring at least twice (overlaps count: 'a a a' repeats 'a a')."""
    low, high = 0, max(0, len(tokens) - 1)
    while low < high:  # if an n-gram repeats, so does each of its (n-1)-grams: binary search on n
        mid = (low + high + 1) // 2
        grams = [tuple(tokens[i : i + mid]) for i in range(len(tokens) - mid + 1)]
        if len(set(grams)) < len(grams):
            low = mid
        else:
            high = mid - 1
    return low


def echo_ratio(prompt: str, answer: str) -> float:
    """Share of the prompt's words the answer copies in one unbroken run (1.0: the whole prompt echoed)."""
    asked, said = words(prompt), words(answer)
    if not asked or not said:
        return 0.0
    best = 0
    previous = [0] * (len(said) + 1)
    for a in asked:  # longest common substring over words, one row at a time
        row = [0] * (len(said) + 1)
        for j, s in enumerate(said, 1):
            if a == s:
                row[j] = previous[j - 1] + 1
                best = max(best, row[j])
        previous = row
    return best / len(asked)


def language_matches(prompt: str, answer: str) -> bool:
    """The answer is in the prompt's script (Cyrillic / Latin); prompts of no clear language accept anything."""
    asked = guess_language(prompt)
    return asked not in ("ru", "en") or guess_language(answer) == asked


@dataclass(frozen=True)
class AnswerFigures:
    prompt: str
    answer: str
    words: int
    distinct_2: float
    distinct_3: float
    longest_repeat: int
    echo: float
    language_match: bool


def figure_answer(prompt: str, answer: str) -> AnswerFigures:
    tokens = words(answer)
    return AnswerFigures(
        prompt=prompt,
        answer=answer,
        words=len(tokens),
        distinct_2=round(distinct_n(tokens, 2), 4),
        distinct_3=round(distinct_n(tokens, 3), 4),
        longest_repeat=longest_repeated_ngram(tokens),
        echo=round(echo_ratio(prompt, answer), 4),
        language_match=language_matches(prompt, answer),
    )


def summarise(answers: Sequence[AnswerFigures]) -> dict[str, float | int]:
    """The figures the gate checks over all answers of one model: the worst answer where one bad answer is enough
    to fail (a loop, an echo), the share or mean for language and length."""
    n = len(answers)
    return {
        "answers": n,
        "distinct_2": min(a.distinct_2 for a in answers),
        "distinct_3": min(a.distinct_3 for a in answers),
        "longest_repeat": max(a.longest_repeat for a in answers),
        "echo": max(a.echo for a in answers),
        "language_match": round(sum(a.language_match for a in answers) / n, 4),
        "words": round(sum(a.words for a in answers) / n, 2),
    }


def generation_checks(summary: dict[str, float | int], limits: GateConfig) -> list[tuple[bool, str]]:
    """(passed, reason) per check on one model's answers to the gate prompts."""
    s = summary
    return [
        (
            s["distinct_2"] >= limits.min_distinct_2,
            f"answers' distinct-2 {s['distinct_2']:.2f} in the worst answer (at least {limits.min_distinct_2})",
        ),
        (
            s["distinct_3"] >= limits.min_distinct_3,
            f"answers' distinct-3 {s['distinct_3']:.2f} in the worst answer (at least {limits.min_distinct_3})",
        ),
        (
            s["longest_repeat"] <= limits.max_repeated_ngram,
            f"longest repeated word n-gram {s['longest_repeat']} (at most {limits.max_repeated_ngram})",
        ),
        (
            s["echo"] <= limits.max_echo,
            f"prompt echoed: {s['echo']:.0%} of a prompt copied (at most {limits.max_echo:.0%})",
        ),
        (
            s["language_match"] >= limits.min_language_match,
            f"answers in the prompt's language {s['language_match']:.0%} (at least {limits.min_language_match:.0%})",
        ),
        (
            s["words"] >= limits.min_words,
            f"answer length {s['words']:.1f} words on average (at least {limits.min_words})",
        ),
    ]
