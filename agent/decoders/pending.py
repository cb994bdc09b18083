"""Request/response pairing: a bounded table of outstanding requests per flow."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import NamedTuple

from agent.decoders.base import DecoderStats


class PendingRequest(NamedTuple):
    ts: float
    cnt: int
    operation: str
    function: int


# What the table holds: a PendingRequest's fields as a plain tuple. A tuple is built from the free
# list; a NamedTuple instance costs a type allocation as well, for every request (1.5k instructions).
# ``peek`` and ``match`` hand out PendingRequest records.
Entry = tuple[float, int, str, int]
_new = tuple.__new__


class PendingRequests:
    """Outstanding requests keyed by the protocol's pairing key (transaction id, PDU reference, ...).

    Insertion order is age order, so expiry and eviction look only at the front. A request that
    times out or is evicted counts as unanswered; a repeated key replaces the older request (the
    older one counts as unanswered: the client gave up on it).
    """

    # ``items``, ``limit`` and ``adds`` are read and written by MessageDecoder: request inlines the
    # usual add (a new key in a table with room), response takes its request out of ``items`` itself.
    __slots__ = ("_stats", "_timeout", "adds", "items", "limit")

    def __init__(self, stats: DecoderStats, timeout: float, limit: int) -> None:
        # An OrderedDict, not a dict: taking the oldest entry of a dict whose front has been deleted
        # scans the deleted slots (O(n) per eviction once a table fills: a PLC that stopped answering).
        self.items: OrderedDict[Hashable, Entry] = OrderedDict()
        self._stats = stats
        self._timeout = timeout
        self.limit = limit
        self.adds = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, key: Hashable, ts: float, cnt: int, operation: str, function: int) -> None:
        items = self.items
        if key in items:
            del items[key]
            self._stats.unanswered += 1
        elif len(items) >= self.limit:
            items.popitem(last=False)
            self._stats.pending_evicted += 1
            self._stats.unanswered += 1
        items[key] = (ts, cnt, operation, function)
        self.adds += 1
        if not self.adds & 0x3F:  # expiry looks at the oldest entries only; every 64 adds is plenty
            self.expire(ts)

    def match(self, key: Hashable) -> PendingRequest | None:
        """The request answered by a response with ``key`` (removed from the table), if any.

        MessageDecoder.response does the same inline, for every response."""
        entry = self.items.pop(key, None)
        if entry is None:
            self._stats.unmatched_responses += 1
            return None
        self._stats.matched += 1
        return _new(PendingRequest, entry)

    def peek(self, key: Hashable) -> PendingRequest | None:
        """The request for ``key`` without consuming it (multi-part responses)."""
        entry = self.items.get(key)
        return None if entry is None else _new(PendingRequest, entry)

    def expire(self, now: float) -> None:
        items = self.items
        horizon = now - self._timeout
        while items:
            key = next(iter(items))
            if items[key][0] > horizon:
                break
            del items[key]
            self._stats.unanswered += 1

    def close(self) -> None:
        """The flow ended: whatever is still outstanding was never answered."""
        self._stats.unanswered += len(self.items)
        self.items.clear()
