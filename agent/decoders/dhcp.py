"""DHCP (UDP 67/68): BOOTP header with the DHCP magic cookie; message types from option 53."""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

COOKIE = b"\x63\x82\x53\x63"
MESSAGE_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release",
                 8: "inform"}  # fmt: skip
OPTIONS_START = 240


def probe(payload: bytes, to_server: bool) -> bool:
    return len(payload) >= OPTIONS_START and payload[0] in (1, 2) and payload[236:240] == COOKIE


def _message_type(payload: bytes) -> int:
    off = OPTIONS_START
    end = len(payload)
    while off < end:
        code = payload[off]
        if code == 0:
            off += 1
            continue
        if code == 255 or off + 1 >= end:
            return 0
        size = payload[off + 1]
        if code == 53 and size == 1 and off + 2 < end:
            return payload[off + 2]
        off += 2 + size
    return 0


class DhcpIdentifier(Identifier):
    protocol = "dhcp"
    max_packets = 16

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        if probe(payload, from_client):
            kind = _message_type(payload)
            self.count("message_types", MESSAGE_TYPES.get(kind, str(kind)))
        return False


SPEC = ProtocolSpec("dhcp", frozenset(), frozenset({67, 68}), probe, DhcpIdentifier, probe_any_port=False)
