"""The cyclic garbage collector tuned for batch runs: ingest, indexing and their range steps.

They make tens of short-lived, acyclic objects per document (parsed documents, chunks, rows). At
CPython's default first threshold (700 allocations) the collector walked them again and again:
1,366 collections and 1.65 s of an 18 s ingest of 10k dialogues, 358 collections and 0.4 s of a
first index of them, serial work or work holding the GIL the encoder's workers wait on. With the
threshold raised for the run, 2 collections each (bench runs of mine); cycles are still collected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_OBJECTS = 50_000
"""Allocations between two collections of the youngest generation during a batch run."""


@contextmanager
def rare_young_collections(young: int = YOUNG_OBJECTS) -> Iterator[None]:
    """The GC's first threshold raised to at least ``young`` inside, restored after (process-wide)."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(young, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
