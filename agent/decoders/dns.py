"""DNS (UDP/TCP 53): header checks for identification; queries, responses and failures counted.

The 12-byte header (RFC 1035 4.1.1) is all that is read: flags (response bit, opcode, rcode) and
the section counts. Over TCP each message has a 2-byte length in front.
"""

from __future__ import annotations

import struct

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

_HEADER = struct.Struct("!HHHHHH")
OPCODES = frozenset({0, 1, 2, 4, 5})  # query, inverse query, status, notify, update
RCODES = {0: "noerror", 1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp", 5: "refused"}


def _header(payload: bytes, off: int) -> tuple[bool, int] | None:
    """(is a response, rcode) of a plausible DNS header at ``off``."""
    if len(payload) - off < 12:
        return None
    _id, flags, qd, an, ns, ar = _HEADER.unpack_from(payload, off)
    if (flags >> 11) & 0xF not in OPCODES or flags & 0x0040 or qd > 8 or an > 512 or ns > 512 or ar > 512:
        return None
    response = bool(flags & 0x8000)
    if not response and (qd == 0 or an > 8):
        return None
    return response, flags & 0xF


def _message_offset(payload: bytes) -> int:
    """0 for a datagram; 2 when a TCP length prefix matches the rest of the segment."""
    if len(payload) >= 14 and struct.unpack_from("!H", payload)[0] == len(payload) - 2:
        return 2
    return 0


def probe(payload: bytes, to_server: bool) -> bool:
    return _header(payload, _message_offset(payload)) is not None


class DnsIdentifier(Identifier):
    protocol = "dns"
    max_packets = 32

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        header = _header(payload, _message_offset(payload))
        if header is not None:
            response, rcode = header
            if response:
                self.count("rcodes", RCODES.get(rcode, str(rcode)))
            self.fields["responses" if response else "queries"] = (
                self.fields.get("responses" if response else "queries", 0) + 1
            )
        return False


SPEC = ProtocolSpec("dns", frozenset({53}), frozenset({53}), probe, DnsIdentifier, probe_any_port=False)
