"""Telnet (TCP 23): option negotiation (IAC WILL/WONT/DO/DONT/SB) or a plain text login prompt.

Telnet has no magic: on its own port, an IAC command or printable text is accepted; elsewhere only
a run of option negotiations, which other protocols do not start with. The identifier notes whether
options were negotiated and stops.
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

IAC = 0xFF
_NEGOTIATION = frozenset({0xFA, 0xFB, 0xFC, 0xFD, 0xFE})  # SB, WILL, WONT, DO, DONT


def _negotiates(payload: bytes) -> bool:
    return len(payload) >= 3 and payload[0] == IAC and payload[1] in _NEGOTIATION


def probe(payload: bytes, to_server: bool) -> bool:
    if _negotiates(payload):
        return True
    sample = payload[:64]
    return bool(sample) and all(0x20 <= b < 0x7F or b in (0x09, 0x0A, 0x0D, 0x00) for b in sample)


def probe_any_port(payload: bytes, to_server: bool) -> bool:
    # Two or more whole 3-byte negotiations in a row.
    return len(payload) >= 6 and payload[0] == IAC and payload[1] in _NEGOTIATION and payload[3] == IAC


class TelnetIdentifier(Identifier):
    protocol = "telnet"
    max_packets = 4

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        if IAC in payload:
            self.fields["negotiation"] = True
            return True
        return False


SPEC = ProtocolSpec("telnet", frozenset({23}), frozenset(), probe, TelnetIdentifier, probe_any_port=False)
SPEC_ANY_PORT = ProtocolSpec("telnet", frozenset(), frozenset(), probe_any_port, TelnetIdentifier)
