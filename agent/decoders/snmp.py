"""SNMP (UDP 161/162): version, whether a community string is present, PDU types.

v1 and v2c messages are SEQUENCE { version INTEGER, community OCTET STRING, PDU }; v3 carries a
security header instead and its PDU may be encrypted. The community is a password: only whether
one was sent is recorded, never its value. SET requests (writes to a device) are counted apart.
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

VERSIONS = {0: "1", 1: "2c", 3: "3"}
PDUS = {0xA0: "get", 0xA1: "get_next", 0xA2: "response", 0xA3: "set", 0xA4: "trap", 0xA5: "get_bulk",
        0xA6: "inform", 0xA7: "trap_v2", 0xA8: "report"}  # fmt: skip


def _length(buf: bytes, off: int) -> tuple[int, int] | None:
    """(length, offset of the value) of the BER length at ``off``; None when malformed."""
    if off >= len(buf):
        return None
    first = buf[off]
    if first < 0x80:
        return first, off + 1
    count = first & 0x7F
    if count == 0 or count > 3 or off + 1 + count > len(buf):
        return None
    return int.from_bytes(buf[off + 1 : off + 1 + count], "big"), off + 1 + count


def _parse(payload: bytes) -> tuple[int, int, int] | None:
    """(version, community length or -1 for v3, PDU tag or 0) of an SNMP message."""
    n = len(payload)
    if n < 8 or payload[0] != 0x30:
        return None
    outer = _length(payload, 1)
    if outer is None or outer[1] + 3 > n:
        return None
    at = outer[1]
    if payload[at] != 0x02 or payload[at + 1] != 1:  # INTEGER of one byte
        return None
    version = payload[at + 2]
    if version not in VERSIONS:
        return None
    at += 3
    if version == 3:
        return version, -1, 0
    if at >= len(payload) or payload[at] != 0x04:
        return None
    community = _length(payload, at + 1)
    if community is None:
        return None
    pdu_at = community[1] + community[0]
    tag = payload[pdu_at] if pdu_at < len(payload) else 0
    return (version, community[0], tag) if tag in PDUS else None


def probe(payload: bytes, to_server: bool) -> bool:
    return _parse(payload) is not None


class SnmpIdentifier(Identifier):
    protocol = "snmp"
    max_packets = 64

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        parsed = _parse(payload)
        if parsed is None:
            return False
        version, community, tag = parsed
        self.fields["version"] = VERSIONS[version]
        if community >= 0:
            self.fields["community_present"] = community > 0
        if tag:
            self.count("pdus", PDUS[tag])
        return False


SPEC = ProtocolSpec("snmp", frozenset(), frozenset({161, 162}), probe, SnmpIdentifier)
