"""HTTP/1.x (TCP 80, 8080 and any port): the first request's method and Host, the first status.

Enough to name the flow and say where it went; URIs and bodies are not kept. HTTP/2 in clear text
and everything over TLS are ``tls`` flows (see agent.decoders.tls).
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier
from agent.decoders.text import first_line, printable

METHODS = frozenset({b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
                     b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK"})  # fmt: skip


def _request_method(payload: bytes) -> bytes | None:
    space = payload.find(b" ", 0, 10)
    if space < 3 or payload[:space] not in METHODS:
        return None
    line = first_line(payload, 8192)
    if line is not None and not line.endswith((b" HTTP/1.0", b" HTTP/1.1")):
        return None
    return payload[:space]


def _status(payload: bytes) -> int | None:
    if payload.startswith((b"HTTP/1.0 ", b"HTTP/1.1 ")) and payload[9:12].isdigit():
        return int(payload[9:12])
    return None


def probe(payload: bytes, to_server: bool) -> bool:
    return _request_method(payload) is not None or _status(payload) is not None


class HttpIdentifier(Identifier):
    protocol = "http"
    max_packets = 8

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        fields = self.fields
        if from_client and "method" not in fields:
            method = _request_method(payload)
            if method is not None:
                fields["method"] = method.decode("ascii")
                headers = payload[:8192]
                at = headers.lower().find(b"\r\nhost:")
                if at >= 0:
                    end = headers.find(b"\r\n", at + 2)
                    fields["host"] = printable(headers[at + 7 : end if end >= 0 else None].strip(), 255)
        elif not from_client and "status" not in fields:
            status = _status(payload)
            if status is not None:
                fields["status"] = status
        return "method" in fields and "status" in fields


SPEC = ProtocolSpec("http", frozenset({80, 8080}), frozenset(), probe, HttpIdentifier)
