"""Syslog: a message starting with a priority "<0>".."<191>" (RFC 5424 / RFC 3164).

On UDP 514 the priority is enough. Anywhere else (syslog over TCP to a collector's own port) the
priority must be followed by an RFC 5424 version and date or an RFC 3164 timestamp, optionally after
RFC 6587 octet counting.
"""

from __future__ import annotations

import re

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier


def _priority(payload: bytes) -> int:
    end = payload.find(b">", 1, 5)
    if not payload.startswith(b"<") or end < 2 or not payload[1:end].isdigit():
        return -1
    value = int(payload[1:end])
    return value if value <= 191 else -1


_HEADER = re.compile(
    rb"(?:\d{1,5} )?<\d{1,3}>"  # octet count, priority
    rb"(?:1 \d{4}-\d\d-\d\dT|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:)"
)


def probe(payload: bytes, to_server: bool) -> bool:
    return _priority(payload) >= 0


def probe_any_port(payload: bytes, to_server: bool) -> bool:
    return _HEADER.match(payload) is not None


class SyslogIdentifier(Identifier):
    protocol = "syslog"
    max_packets = 1

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        space = payload.find(b" ", 0, 6)
        if space > 0 and payload[:space].isdigit():  # RFC 6587 octet counting
            payload = payload[space + 1 :]
        priority = _priority(payload)
        if priority >= 0:
            self.fields["facility"] = priority >> 3
            self.fields["severity"] = priority & 7
        return True


SPEC = ProtocolSpec("syslog", frozenset(), frozenset({514}), probe, SyslogIdentifier, probe_any_port=False)
SPEC_ANY_PORT = ProtocolSpec("syslog", frozenset(), frozenset(), probe_any_port, SyslogIdentifier)
