"""A failing destination is counted and retried from a bounded backlog, never raised."""

from __future__ import annotations

import errno

import pytest

from agent.outputs import backlog as backlog_module
from agent.outputs.backlog import Backlog


class Destination:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.error: int | None = None
        self.chunk: int | None = None  # accept at most this many bytes per write (a slow socket)

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise OSError(self.error, "boom")
        n = len(data) if self.chunk is None else min(self.chunk, len(data))
        self.received.append(data[:n])
        return n


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(backlog_module.time, "monotonic", lambda: now[0])
    return now


def test_records_wait_while_failing_and_go_out_in_order_after(clock: list[float]) -> None:
    dest = Destination()
    b = Backlog("test", dest.write)
    dest.error = errno.ENOSPC
    b.put(b"one")
    b.put(b"two")  # within the retry interval: queued without trying
    assert b.failures == 1 and len(b) == 2 and dest.received == []
    dest.error = None
    b.put(b"three")  # not yet time to retry
    assert dest.received == []
    clock[0] += backlog_module.RETRY_INTERVAL
    b.put(b"four")
    assert dest.received == [b"one", b"two", b"three", b"four"] and b.sent == 4 and len(b) == 0


def test_backlog_is_bounded_and_counts_what_it_drops(clock: list[float]) -> None:
    dest = Destination()
    dest.error = errno.ECONNREFUSED
    b = Backlog("test", dest.write, limit=10)
    for i in range(10):
        b.put(b"%04d" % i)
    assert b.queued_bytes <= 10 and b.dropped == 8 and len(b) == 2
    dest.error = None
    clock[0] += 5
    assert b.drain()
    assert dest.received == [b"0008", b"0009"]  # the newest survive


def test_partial_writes_keep_the_rest_first_in_line() -> None:
    dest = Destination()
    dest.chunk = 3
    b = Backlog("test", dest.write)
    b.put(b"abcdefg")
    assert b"".join(dest.received) == b"abc" and len(b) == 1
    dest.chunk = None
    b.put(b"hi")
    assert b"".join(dest.received) == b"abcdefghi" and b.sent == 2 and b.queued_bytes == 0


def test_a_slow_receiver_is_not_a_failure() -> None:
    def would_block(_data: bytes) -> int:
        raise BlockingIOError(errno.EAGAIN, "later")

    b = Backlog("test", would_block)
    b.put(b"x")
    assert b.failures == 0 and len(b) == 1


def test_counters_count_events_of_multi_event_records(clock: list[float]) -> None:
    dest = Destination()
    dest.error = errno.ENOSPC
    b = Backlog("test", dest.write, limit=10)
    b.put(b"aaaa", 3)  # a batch of three lines
    b.put(b"bbbb", 2)
    assert b.stats()["queued"] == 5 and b.dropped == 0
    b.put(b"cccc", 4)  # over the limit: the oldest batch goes, with its three events
    assert b.dropped == 3 and b.stats()["queued"] == 6
    dest.error = None
    clock[0] += backlog_module.RETRY_INTERVAL
    assert b.drain()
    assert b.sent == 6 and b.stats()["queued"] == 0
