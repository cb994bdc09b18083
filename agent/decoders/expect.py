"""Expected connections: a control flow announces a data flow on a port nothing else would name.

FTP's PASV/EPSV replies and PORT/EPRT commands say which TCP connection will carry the file; the
FTP identifier records it here and the registry names that connection ``ftp-data`` when it starts,
whatever its port. The table is per pipeline (one per ``DecoderContext``), bounded, and entries
expire in packet time.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.decoders.base import DecoderContext
    from agent.flows import Flow

MAX_EXPECTED = 1024
EXPECT_SECONDS = 120.0  # a data connection normally follows its announcement within seconds

# (IP protocol, initiator address, responder address, responder port); the initiator's port is
# chosen by its OS and is not announced.
ExpectKey = tuple[int, bytes, bytes, int]


class Expectations:
    """Announced connections waiting to start, oldest first."""

    __slots__ = ("claimed", "entries", "evicted", "expired")

    def __init__(self) -> None:
        self.entries: OrderedDict[ExpectKey, tuple[str, float]] = OrderedDict()
        self.claimed = 0
        self.expired = 0
        self.evicted = 0  # dropped because the table was full

    def expect(self, proto: int, client: bytes, server: bytes, port: int, name: str, ts: float) -> bool:
        """Record an announced connection; True when the table was full and dropped its oldest."""
        key = (proto, client, server, port)
        self.entries.pop(key, None)
        evicted = len(self.entries) >= MAX_EXPECTED
        if evicted:
            self.entries.popitem(last=False)
            self.evicted += 1
        self.entries[key] = (name, ts + EXPECT_SECONDS)
        return evicted

    def claim(self, flow: Flow) -> str | None:
        """The name announced for this new flow, if any (each announcement is used once)."""
        entry = self.entries.pop((flow.proto, flow.src, flow.dst, flow.dport), None)
        if entry is None:
            return None
        name, deadline = entry
        if flow.first_ts > deadline:
            self.expired += 1
            return None
        self.claimed += 1
        return name


_TABLES: weakref.WeakKeyDictionary[DecoderContext, Expectations] = weakref.WeakKeyDictionary()


def expectations_for(ctx: DecoderContext) -> Expectations:
    """The table of the pipeline that owns ``ctx`` (created on first use)."""
    table = _TABLES.get(ctx)
    if table is None:
        table = _TABLES[ctx] = Expectations()
    return table
