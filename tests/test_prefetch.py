"""The prefetch thread: same order, errors at the right item, nothing left running."""

from __future__ import annotations

import itertools
import threading

import pytest

from vaebench.run.prefetch import Prefetcher


def test_yields_every_item_in_order_with_its_staged_value():
    with Prefetcher(range(100), lambda i: i * i, depth=3) as feed:
        assert list(feed) == [(i, i * i) for i in range(100)]


def test_an_error_in_the_stage_function_is_raised_at_its_item():
    def stage(i: int) -> int:
        if i == 5:
            raise ValueError("bad batch 5")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad batch 5"), Prefetcher(range(10), stage) as feed:
        for item, _ in feed:
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_an_error_in_the_source_is_raised_too():
    def source():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"), Prefetcher(source(), lambda i: i) as feed:
        list(feed)


def test_closing_early_stops_the_producer_of_an_endless_source():
    produced = itertools.count()
    feed = Prefetcher(produced, lambda i: i, depth=2)
    assert next(feed) == (0, 0)
    feed.close()
    assert not any(t.name == "vaebench-prefetch" and t.is_alive() for t in threading.enumerate())
    assert next(produced) <= 5  # the producer ran at most a queue's depth (+ the item in hand) ahead
    with pytest.raises(StopIteration):
        next(feed)


def test_the_stage_function_runs_off_the_consumers_thread():
    with Prefetcher(range(3), lambda i: threading.current_thread().name) as feed:
        assert {name for _, name in feed} == {"vaebench-prefetch"}
