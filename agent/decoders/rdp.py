"""RDP (TCP 3389 and any port): the X.224 connection request and confirm that open every session.

The client's TPKT + X.224 Connection Request carries an optional "Cookie: mstshash=" line and an
RDP Negotiation Request (type 1, length 8, the security protocols it offers); the server's
Connection Confirm carries the Negotiation Response (type 2, the protocol chosen) or Failure (type 3).
Everything after (TLS, CredSSP) is encrypted. The cookie names a user: it is not kept. Layout from
MS-RDPBCGR 2.2.1.1 and 2.2.1.2.
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

CONNECTION_REQUEST, CONNECTION_CONFIRM = 0xE0, 0xD0
NEG_REQUEST, NEG_RESPONSE, NEG_FAILURE = 1, 2, 3
PROTOCOLS = ((1, "tls"), (2, "hybrid"), (4, "rdstls"), (8, "hybrid_ex"))
COOKIE = b"Cookie: mstshash="


def _x224(payload: bytes) -> int:
    """The X.224 TPDU code of a whole TPKT frame holding one, else 0."""
    if len(payload) < 11 or payload[0] != 3 or payload[1] != 0:
        return 0
    if (payload[2] << 8 | payload[3]) != len(payload) or payload[4] != len(payload) - 5:
        return 0
    return payload[5] & 0xF0


def _negotiation(payload: bytes) -> tuple[int, int] | None:
    """(type, protocols) of the 8-byte RDP negotiation structure that ends the TPDU, if any."""
    if len(payload) < 19:
        return None
    tail = payload[-8:]
    if tail[0] not in (NEG_REQUEST, NEG_RESPONSE, NEG_FAILURE) or tail[2] != 8 or tail[3] != 0:
        return None
    return tail[0], int.from_bytes(tail[4:8], "little")


def probe(payload: bytes, to_server: bool) -> bool:
    code = _x224(payload)
    if code == CONNECTION_REQUEST:
        return payload[11:].startswith(COOKIE) or _negotiation(payload) is not None or len(payload) == 11
    return code == CONNECTION_CONFIRM and (_negotiation(payload) is not None or len(payload) == 11)


def probe_any_port(payload: bytes, to_server: bool) -> bool:
    """Elsewhere the request must carry the cookie or a negotiation request (S7/MMS carry TSAPs)."""
    if _x224(payload) != CONNECTION_REQUEST:
        return False
    negotiation = _negotiation(payload)
    return payload[11:].startswith(COOKIE) or (negotiation is not None and negotiation[0] == NEG_REQUEST)


def _names(flags: int) -> list[str]:
    return [name for bit, name in PROTOCOLS if flags & bit] or ["rdp"]


class RdpIdentifier(Identifier):
    protocol = "rdp"
    max_packets = 6

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        code = _x224(payload)
        negotiation = _negotiation(payload) if code else None
        if code == CONNECTION_REQUEST:
            self.fields["cookie"] = payload[11:].startswith(COOKIE)
            if negotiation is not None and negotiation[0] == NEG_REQUEST:
                self.fields["requested_protocols"] = _names(negotiation[1])
        elif code == CONNECTION_CONFIRM:
            if negotiation is not None and negotiation[0] == NEG_RESPONSE:
                self.fields["selected_protocol"] = _names(negotiation[1])[-1]
            elif negotiation is not None and negotiation[0] == NEG_FAILURE:
                self.fields["negotiation_failure"] = negotiation[1]
            return True
        return False


SPEC = ProtocolSpec("rdp", frozenset({3389}), frozenset(), probe, RdpIdentifier, probe_any_port=False)
SPEC_ANY_PORT = ProtocolSpec("rdp", frozenset(), frozenset(), probe_any_port, RdpIdentifier)
