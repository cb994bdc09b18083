"""The packet intervals of CIP class 0/1 connections, learned from the Forward Opens that set them up.

A Forward Open (TCP 44818, explicit messaging) asks the target for a connection in each direction
with a requested packet interval (RPI); the target's successful reply names the connection ids it
granted and the *actual* packet intervals (APIs) it will use, which may differ from what was asked
(a target rounds an RPI to its own timer). The I/O itself then runs over UDP 2222, where every
datagram carries its connection id in the sequenced address item. So the expected interval of an
I/O stream is the reply's API for that id, else the RPI of a request whose reply was not seen.

Ids: the O->T id is chosen by the target (it only appears for certain in the reply), the T->O id by
the originator for a point-to-point connection (in the request already). Connection ids are unique
per device that receives on them, so the table is keyed by (target address, id), and an I/O
datagram is looked up under either of its two addresses.

Only a cyclic trigger makes the RPI a period: a change-of-state or application-triggered connection
sends when data changes, the RPI being only its heartbeat, so its T->O direction is left to the
observed intervals.

Both tables are bounded and count what they drop. Nothing here runs per packet: a Forward Open is a
rare message, and a stream looks its period up only when the table changed (``generation``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

MAX_CONNECTIONS = 4096  # (target, connection id) -> interval
MAX_PENDING = 1024  # Forward Open requests waiting for their reply


class CipConnections:
    __slots__ = ("evicted", "generation", "intervals", "pending", "pending_dropped")

    def __init__(self) -> None:
        self.intervals: dict[tuple[bytes, int], float] = {}
        # (originator, target, connection serial, originator vendor, originator serial) ->
        # (O->T RPI s, T->O RPI s, T->O is cyclic)
        self.pending: dict[Hashable, tuple[float, float, bool]] = {}
        self.generation = 0
        self.evicted = 0
        self.pending_dropped = 0

    def on_request(self, originator: bytes, target: bytes, params: dict[str, Any]) -> None:
        """A Forward Open request: remember its RPIs until the reply; the T->O id is already known."""
        ot_rpi = _seconds(params.get("ot_rpi_us"))
        to_rpi = _seconds(params.get("to_rpi_us"))
        cyclic = params.get("trigger") == "cyclic"
        key = _triad(originator, target, params)
        if key not in self.pending and len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
            self.pending_dropped += 1
        self.pending.pop(key, None)
        self.pending[key] = (ot_rpi, to_rpi, cyclic)
        to_id = params.get("to_connection_id")
        point_to_point = params.get("to_connection_type") == "point_to_point"
        if cyclic and to_rpi and point_to_point and isinstance(to_id, int):
            self._set(target, to_id, to_rpi)

    def on_reply(self, originator: bytes, target: bytes, granted: dict[str, Any]) -> None:
        """A successful Forward Open reply: the granted ids and their actual packet intervals."""
        ot_rpi, to_rpi, cyclic = self.pending.pop(_triad(originator, target, granted), (0.0, 0.0, True))
        ot_id, to_id = granted.get("ot_connection_id"), granted.get("to_connection_id")
        ot = _seconds(granted.get("ot_api_us")) or ot_rpi
        to = _seconds(granted.get("to_api_us")) or to_rpi
        if isinstance(ot_id, int) and ot:
            self._set(target, ot_id, ot)
        if isinstance(to_id, int) and to and cyclic:
            self._set(target, to_id, to)

    def interval(self, a: bytes, b: bytes, connection_id: int) -> float | None:
        """The interval of connection ``connection_id`` between addresses ``a`` and ``b`` (either
        may be the target), None when no Forward Open for it was seen."""
        found = self.intervals.get((a, connection_id))
        if found is None:
            found = self.intervals.get((b, connection_id))
        return found

    def _set(self, target: bytes, connection_id: int, seconds: float) -> None:
        key = (target, connection_id)
        if key not in self.intervals and len(self.intervals) >= MAX_CONNECTIONS:
            del self.intervals[next(iter(self.intervals))]  # the oldest connection set up
            self.evicted += 1
        self.intervals.pop(key, None)
        self.intervals[key] = seconds
        self.generation += 1


def _seconds(microseconds: Any) -> float:
    return microseconds / 1e6 if isinstance(microseconds, int) and microseconds > 0 else 0.0


def _triad(originator: bytes, target: bytes, fields: dict[str, Any]) -> Hashable:
    """The connection triad (serial, originator vendor and serial) that ties a reply to its request."""
    return (
        originator,
        target,
        fields.get("connection_serial"),
        fields.get("originator_vendor_id"),
        fields.get("originator_serial"),
    )
