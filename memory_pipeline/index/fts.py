"""Russian + English full-text preparation: both languages stemmed before LanceDB indexes the text.

LanceDB's full-text index stems one language per index; the user's text mixes Russian and
English (often within one message), so words are stemmed here by script: Cyrillic words with
the Russian Snowball stemmer, Latin words with the English one. Queries go through the same
function, so "бегал" finds "бегать" and "running" finds "runs".
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*", re.UNICODE)
_CYRILLIC = re.compile(r"[а-я]")
STOPWORDS = frozenset(
    """
    и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее мне было вот от меня
    еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был него до вас нибудь опять уж вам ведь там
    потом себя ничего ей может они тут где есть надо ней для мы тебя их чем была сам чтоб без будто чего раз тоже
    себе под будет ж тогда кто этот того потому этого какой совсем ним здесь этом один почти мой тем чтобы нее
    сейчас были куда зачем всех никогда можно при наконец два об другой хоть после над больше тот через эти нас про
    всего них какая много разве три эту моя впрочем хорошо свою этой перед иногда лучше чуть том нельзя такой им
    более всегда конечно всю между это
    the a an and or of to in on for is are was were be been it its this that with as at by from not but if then so
    do does did have has had i you he she we they me my your our their them his her what which who whom how
    """.split()
)


@lru_cache(maxsize=1)
def _stemmers():
    import Stemmer

    return Stemmer.Stemmer("russian"), Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Lowercased words (ё folded to е), hyphenated and apostrophe words kept whole, numbers kept."""
    return _WORD.findall(text.lower().replace("ё", "е"))


def stem_for_fts(text: str) -> str:
    """The text as space-separated stems, stopwords dropped: what the full-text index sees."""
    return " ".join(filter(None, map(_stem, tokenize(text))))


@lru_cache(maxsize=1 << 17)
def _stem(word: str) -> str:
    """One word's stem ('' for a stopword). Cached: words repeat (Zipf), and indexing stems every chunk."""
    if word in STOPWORDS:
        return ""
    russian, english = _stemmers()
    if _CYRILLIC.search(word):
        return russian.stemWord(word)
    if word.isascii() and word.isalpha():
        return english.stemWord(word)
    return word
