"""Exceptions raised by memory_pipeline; each subclasses a built-in so callers can catch broadly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ConfigError(ValueError):
    """The config file is missing, malformed, or has an unknown key or a bad value."""


class ParseError(ValueError):
    """A source file cannot be parsed; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NothingToStoreError(ParseError):
    """A source that reads fine but holds nothing to store (e.g. only messages without text)."""


class UnsupportedFormatError(ParseError):
    """No parser handles this file (unknown extension or unrecognised content)."""


class SearchError(ValueError):
    """A search request is invalid (empty query, query too long, unknown mode or kind)."""


class StoreError(RuntimeError):
    """A store on disk is missing or inconsistent in a way the caller must act on."""


def validation_problems(exc: ValidationError, whole: str, limit: int = 3) -> str:
    """The first few problems of a pydantic validation as ``field.path: message``, for one-line errors
    about a file (``whole`` names a problem with the file as a whole)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in exc.errors()[:limit])
