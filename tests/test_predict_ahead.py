"""components.serve.predict.ahead: the encoder runs one batch ahead of the scorer in a thread."""

from __future__ import annotations

import threading
import time

import pytest

from components.serve.predict import ahead


def test_items_come_in_order_and_at_most_two_are_produced_ahead_of_use():
    produced: list[int] = []

    def items():
        for i in range(6):
            produced.append(i)
            yield i

    seen = []
    with ahead(items()) as it:
        for x in it:
            time.sleep(0.05)  # the producer had time to run as far ahead as it can
            # x is in use, one more waits in the slot and the producer holds at most the next one
            assert len(produced) <= x + 3
            seen.append(x)
    assert seen == list(range(6))


def test_an_error_of_the_producer_reaches_the_consumer_at_its_position():
    def items():
        yield 1
        yield 2
        raise ValueError("bad line 3")

    got = []
    with pytest.raises(ValueError, match="bad line 3"), ahead(items()) as it:
        for x in it:
            got.append(x)
    assert got == [1, 2]


def test_leaving_early_stops_the_producer():
    stopped = threading.Event()

    def items():
        try:
            yield from range(10**9)
        finally:
            stopped.set()

    before = threading.active_count()
    with ahead(items()) as it:
        assert next(it) == 0
    assert threading.active_count() == before  # the worker thread is gone, not blocked on a full slot
    assert stopped.is_set()  # and the source was closed (its temporary files may go)
