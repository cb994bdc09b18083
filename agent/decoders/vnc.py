"""VNC / RFB (RFC 6143; TCP 5900-5901 and any port): the 12-byte "RFB xxx.yyy\\n" version messages."""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier


def _version(payload: bytes) -> str | None:
    if len(payload) >= 12 and payload.startswith(b"RFB ") and payload[7] == 0x2E and payload[11] == 0x0A:
        digits = payload[4:7] + payload[8:11]
        if digits.isdigit():
            return payload[4:11].decode("ascii")
    return None


def probe(payload: bytes, to_server: bool) -> bool:
    return _version(payload) is not None


class VncIdentifier(Identifier):
    protocol = "vnc"
    max_packets = 6

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        version = _version(payload)
        if version is not None:
            self.fields["client_version" if from_client else "server_version"] = version
        return "client_version" in self.fields and "server_version" in self.fields


SPEC = ProtocolSpec("vnc", frozenset({5900, 5901}), frozenset(), probe, VncIdentifier)
