"""The pending-request table: pairing, replacement, eviction of the oldest, expiry, close."""

from __future__ import annotations

from agent.decoders.base import DecoderStats
from agent.decoders.pending import PendingRequest, PendingRequests


def test_a_response_takes_its_request_once() -> None:
    stats = DecoderStats()
    table = PendingRequests(stats, timeout=5.0, limit=8)
    table.add(("tid", 1), 1.0, 10, "read", 3)
    assert table.peek(("tid", 1)) == PendingRequest(1.0, 10, "read", 3)
    request = table.match(("tid", 1))
    assert request is not None and (request.ts, request.cnt, request.operation, request.function) == (
        1.0,
        10,
        "read",
        3,
    )
    assert table.match(("tid", 1)) is None
    assert (stats.matched, stats.unmatched_responses, stats.unanswered) == (1, 1, 0)


def test_a_repeated_key_replaces_the_older_request_which_counts_unanswered() -> None:
    stats = DecoderStats()
    table = PendingRequests(stats, timeout=5.0, limit=8)
    table.add(7, 1.0, 1, "read", 3)
    table.add(7, 2.0, 2, "write", 6)
    request = table.match(7)
    assert request is not None and request.cnt == 2
    assert stats.unanswered == 1


def test_a_full_table_evicts_the_oldest_even_after_many_deletions_at_its_front() -> None:
    stats = DecoderStats()
    table = PendingRequests(stats, timeout=1e9, limit=100)
    # A device that stopped answering: the table stays full and every request evicts the oldest.
    for cnt in range(10_000):
        table.add(cnt, float(cnt), cnt, "read", 3)
    assert len(table) == 100
    assert stats.pending_evicted == 10_000 - 100 == stats.unanswered
    assert table.peek(9_899) is None and table.peek(9_900) is not None  # the newest 100 remain


def test_expiry_and_close_count_unanswered() -> None:
    stats = DecoderStats()
    table = PendingRequests(stats, timeout=5.0, limit=8)
    table.add(1, 0.0, 1, "read", 3)
    table.add(2, 4.0, 2, "read", 3)
    table.expire(6.0)  # the first is older than 5 s
    assert table.peek(1) is None and table.peek(2) is not None and stats.unanswered == 1
    table.close()
    assert len(table) == 0 and stats.unanswered == 2
