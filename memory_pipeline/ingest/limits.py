"""The input limits in force for parsers, which take only a path: ingestion sets them from the config.

A context variable rather than a parameter of every parser: limits are policy, not part of a
format, and the thread or task that runs an ingest sees its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from memory_pipeline.config import LimitsConfig

_DEFAULT = LimitsConfig()
_CURRENT: ContextVar[LimitsConfig] = ContextVar("memory_pipeline_limits")


def current_limits() -> LimitsConfig:
    return _CURRENT.get(_DEFAULT)


@contextmanager
def applied_limits(limits: LimitsConfig) -> Iterator[None]:
    token = _CURRENT.set(limits)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class NestingTooDeep(ValueError):
    pass


_JSON_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STEPS = np.zeros(256, dtype=np.int64)
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1


class JsonNestingGauge:
    """Tracks the nesting depth of JSON fed to it in blocks; raises NestingTooDeep past the limit.

    Parsers' time and memory can grow with the square of the depth (ijson carries each event's
    path) and recursive ones overflow the stack, so the depth is checked on the bytes first, at C
    speed per block: escaped backslashes and quotes are dropped, everything but brackets and quotes
    is deleted, strings are cut out with a regular expression, and the running depth is a numpy
    cumulative sum. Exact for valid JSON, whatever the block boundaries.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self.carry = b""  # backslashes ending the last block: they may escape the next block's first byte

    def feed(self, block: bytes) -> None:
        block = self.carry + block
        kept = block.rstrip(b"\\")
        self.carry = block[len(kept) :]
        structure = kept.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
        if self.in_string:
            structure = b'"' + structure
        structure = _JSON_STRING.sub(b"", structure)
        quote = structure.find(b'"')
        self.in_string = quote >= 0
        if self.in_string:
            structure = structure[:quote]
        if not structure:
            return
        running = self.depth + np.cumsum(_STEPS[np.frombuffer(structure, dtype=np.uint8)])
        if running.max() > self.limit:
            raise NestingTooDeep(f"JSON nested deeper than {self.limit} levels (limits.max_nesting_depth)")
        self.depth = int(running[-1])
