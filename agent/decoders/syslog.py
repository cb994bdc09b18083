"""Syslog (UDP 514): a message starting with a priority "<0>".."<191>" (RFC 5424 / RFC 3164)."""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier


def _priority(payload: bytes) -> int:
    end = payload.find(b">", 1, 5)
    if not payload.startswith(b"<") or end < 2 or not payload[1:end].isdigit():
        return -1
    value = int(payload[1:end])
    return value if value <= 191 else -1


def probe(payload: bytes, to_server: bool) -> bool:
    return _priority(payload) >= 0


class SyslogIdentifier(Identifier):
    protocol = "syslog"
    max_packets = 1

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        priority = _priority(payload)
        if priority >= 0:
            self.fields["facility"] = priority >> 3
            self.fields["severity"] = priority & 7
        return True


SPEC = ProtocolSpec("syslog", frozenset(), frozenset({514}), probe, SyslogIdentifier, probe_any_port=False)
