"""A local chat with the base model plus adapters: everything loaded once per session, replies streamed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memory_pipeline.adapters.base_model import load_base_model
from memory_pipeline.adapters.combine import combine_adapters, load_adapters
from memory_pipeline.adapters.generation import generate_reply, with_system_prompt
from memory_pipeline.config import Config


class ChatSession:
    """The base with ``adapters`` combined (none: the plain base), and the conversation so far.

    Without a system message, the first adapter's configured system prompt is used, as in its training data.
    Unknown adapter names raise ConfigError before anything is loaded.
    """

    def __init__(self, config: Config, adapters: Sequence[str], *, root: Path | None = None, device: str | None = None):
        for name in adapters:
            config.adapter(name)
        self.config = config
        self.adapters = list(adapters)
        if adapters:
            self.model, self.tokenizer, loaded = load_adapters(config, adapters, root=root, device=device)
            if len(loaded) > 1:
                combine_adapters(self.model, loaded)
            self.system_prompt = config.adapter(adapters[0]).system_prompt
        else:
            cache_dir = config.base_models_dir
            base = load_base_model(config.training, device=device or config.training.device, cache_dir=cache_dir)
            self.model, self.tokenizer, self.system_prompt = base.model, base.tokenizer, ""
        self.history: list[dict[str, str]] = []

    def reply(
        self, text: str, *, on_text: Callable[[str], None] | None = None, max_new_tokens: int | None = None
    ) -> str:
        """Answer ``text`` in the conversation; ``on_text`` receives the reply piece by piece as it is generated."""
        streamer = _callback_streamer(self.tokenizer, on_text) if on_text is not None else None
        self.history.append({"role": "user", "content": text})
        messages = with_system_prompt(self.history, self.system_prompt)
        answer = generate_reply(
            self.model,
            self.tokenizer,
            messages,
            self.config.generation,
            max_new_tokens=max_new_tokens,
            streamer=streamer,
        )
        self.history.append({"role": "assistant", "content": answer})
        return answer


def generate_chat(
    config: Config,
    adapters: Sequence[str],
    messages: Sequence[Mapping[str, str]],
    max_new_tokens: int | None = None,
    *,
    root: Path | None = None,
) -> str:
    """One reply to ``messages`` (the last one the user's), for a single call from code or a test."""
    session = ChatSession(config, adapters, root=root)
    session.history = [dict(m) for m in messages[:-1]]
    return session.reply(messages[-1]["content"], max_new_tokens=max_new_tokens)


def _callback_streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """A transformers TextStreamer that hands each decoded piece to ``on_text`` instead of printing it."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
