"""Request/response pairing: a bounded table of outstanding requests per flow."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

from agent.decoders.base import DecoderStats


class PendingRequest(NamedTuple):
    ts: float
    cnt: int
    operation: str
    function: int


class PendingRequests:
    """Outstanding requests keyed by the protocol's pairing key (transaction id, PDU reference, ...).

    Insertion order is age order, so expiry and eviction look only at the front. A request that
    times out or is evicted counts as unanswered; a repeated key replaces the older request (the
    older one counts as unanswered: the client gave up on it).
    """

    __slots__ = ("_adds", "_items", "_limit", "_stats", "_timeout")

    def __init__(self, stats: DecoderStats, timeout: float, limit: int) -> None:
        self._items: dict[Hashable, PendingRequest] = {}
        self._stats = stats
        self._timeout = timeout
        self._limit = limit
        self._adds = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: Hashable, ts: float, cnt: int, operation: str, function: int) -> None:
        items = self._items
        if key in items:
            del items[key]
            self._stats.unanswered += 1
        elif len(items) >= self._limit:
            del items[next(iter(items))]
            self._stats.pending_evicted += 1
            self._stats.unanswered += 1
        items[key] = PendingRequest(ts, cnt, operation, function)
        self._adds += 1
        if not self._adds & 0x3F:  # expiry looks at the oldest entries only; every 64 adds is plenty
            self.expire(ts)

    def match(self, key: Hashable) -> PendingRequest | None:
        """The request answered by a response with ``key`` (removed from the table), if any."""
        request = self._items.pop(key, None)
        if request is None:
            self._stats.unmatched_responses += 1
        else:
            self._stats.matched += 1
        return request

    def peek(self, key: Hashable) -> PendingRequest | None:
        """The request for ``key`` without consuming it (multi-part responses)."""
        return self._items.get(key)

    def expire(self, now: float) -> None:
        items = self._items
        horizon = now - self._timeout
        while items:
            key = next(iter(items))
            if items[key].ts > horizon:
                break
            del items[key]
            self._stats.unanswered += 1

    def close(self) -> None:
        """The flow ended: whatever is still outstanding was never answered."""
        self._stats.unanswered += len(self._items)
        self._items.clear()
