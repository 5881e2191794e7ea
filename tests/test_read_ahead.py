"""read_ahead: the indexer's reader thread hands over items in order, its errors, and stops when left."""

from __future__ import annotations

import threading
import time

import pytest

from memory_pipeline.read_ahead import read_ahead


def test_items_arrive_in_order_and_the_producer_stays_at_most_depth_ahead():
    produced: list[int] = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(items(), depth=2):
        time.sleep(0.01)
        # the one handed over, up to two waiting, and the one being put
        assert len(produced) <= item + 4
        seen.append(item)
    assert seen == list(range(20))


def test_an_error_in_the_producer_is_raised_at_the_item_it_failed_on():
    def items():
        yield 1
        yield 2
        raise ValueError("bad document")

    seen = []
    with pytest.raises(ValueError, match="bad document"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_leaves_no_thread_running():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    with pytest.raises(RuntimeError):
        for item in read_ahead(endless(), name="test-reader"):
            if item == 3:
                raise RuntimeError("consumer failed")
    assert threading.active_count() == before
    assert not any(t.name == "test-reader" for t in threading.enumerate())
