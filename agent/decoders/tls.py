"""TLS (TCP 443 and any port; also the TLS ports of industrial protocols): SNI, version, ALPN.

Only the hellos are read: the ClientHello's server_name (RFC 6066), ALPN (RFC 7301) and offered
versions, and the ServerHello's chosen version (the supported_versions extension for TLS 1.3,
RFC 8446 4.2.1). A hello split over records or segments is collected (bounded) before parsing. On
8883, 802 and 4843 the flow keeps its industrial name (``mqtt-tls``, ``modbus-tls``, ``opcua-tls``)
with the same ``tls`` fields.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.identify import Identifier
from agent.decoders.text import printable

if TYPE_CHECKING:
    from agent.flows import Flow

HANDSHAKE = 0x16
CLIENT_HELLO, SERVER_HELLO = 1, 2
EXT_SERVER_NAME, EXT_ALPN, EXT_SUPPORTED_VERSIONS = 0, 16, 43
VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
_MAX_HELLO = 1 << 14
_U16 = struct.Struct("!H")


def probe(payload: bytes, to_server: bool) -> bool:
    """A handshake record holding a ClientHello or ServerHello."""
    if len(payload) < 9 or payload[0] != HANDSHAKE or payload[1] != 3 or payload[2] > 4:
        return False
    length = _U16.unpack_from(payload, 3)[0]
    return 4 <= length <= _MAX_HELLO + 2048 and payload[5] in (CLIENT_HELLO, SERVER_HELLO)


def _is_grease(version: int) -> bool:
    return version & 0x0F0F == 0x0A0A


class TlsIdentifier(Identifier):
    protocol = "tls"
    max_packets = 12

    __slots__ = ("hello",)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.hello: list[bytes | None] = [b"", b""]  # per direction: bytes until its hello is whole

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        side = 0 if from_client else 1
        held = self.hello[side]
        if held is None:  # this side's hello is done
            return False
        data = held + payload
        message = _handshake_message(data)
        if message is None:
            self.hello[side] = data if len(data) < _MAX_HELLO + 4096 else None
            return False
        self.hello[side] = None
        if message and message[0] == CLIENT_HELLO:
            self._client_hello(message)
        elif message and message[0] == SERVER_HELLO:
            self._server_hello(message)
            return True
        return False

    def _client_hello(self, msg: bytes) -> None:
        if len(msg) < 6:
            return
        fields = self.fields
        legacy = _U16.unpack_from(msg, 4)[0]
        offered = legacy
        for ext, body in _extensions(msg, client=True):
            if ext == EXT_SERVER_NAME and len(body) >= 5 and body[2] == 0:
                size = _U16.unpack_from(body, 3)[0]
                fields["sni"] = printable(body[5 : 5 + size], 255)
            elif ext == EXT_ALPN and len(body) >= 2:
                fields["alpn"] = _alpn(body)
            elif ext == EXT_SUPPORTED_VERSIONS and body:
                end = min(len(body), 1 + body[0])
                versions = [_U16.unpack_from(body, i)[0] for i in range(1, end - 1, 2)]
                real = [v for v in versions if not _is_grease(v)]
                if real:
                    offered = max(real)
        fields["client_version"] = VERSIONS.get(offered, f"0x{offered:04x}")

    def _server_hello(self, msg: bytes) -> None:
        if len(msg) < 6:
            return
        version = _U16.unpack_from(msg, 4)[0]
        for ext, body in _extensions(msg, client=False):
            if ext == EXT_SUPPORTED_VERSIONS and len(body) >= 2:
                version = _U16.unpack_from(body, 0)[0]
        self.fields["version"] = VERSIONS.get(version, f"0x{version:04x}")


def _handshake_message(data: bytes) -> bytes | None:
    """The first handshake message carried by the records at the start of ``data``.

    None while it is incomplete; b"" when the bytes are not TLS handshake records.
    """
    hs = b""
    off = 0
    while len(data) - off >= 5:
        if data[off] != HANDSHAKE:
            return b""
        length = _U16.unpack_from(data, off + 3)[0]
        if len(data) - off - 5 < length:
            break
        hs += data[off + 5 : off + 5 + length]
        off += 5 + length
        if len(hs) >= 4:
            size = 4 + (hs[1] << 16 | hs[2] << 8 | hs[3])
            if len(hs) >= size:
                return hs[:size]
            if size > _MAX_HELLO:
                return b""
    return None


def _extensions(msg: bytes, client: bool) -> list[tuple[int, bytes]]:
    """(type, body) of a hello's extensions; empty when the hello has none or is cut short."""
    n = len(msg)
    off = 4 + 2 + 32
    if off >= n:
        return []
    off += 1 + msg[off]  # session id
    if client:
        if off + 2 > n:
            return []
        off += 2 + _U16.unpack_from(msg, off)[0]  # cipher suites
        if off >= n:
            return []
        off += 1 + msg[off]  # compression methods
    else:
        off += 3  # chosen cipher suite and compression method
    if off + 2 > n:
        return []
    end = min(len(msg), off + 2 + _U16.unpack_from(msg, off)[0])
    off += 2
    result = []
    while off + 4 <= end:
        ext, size = struct.unpack_from("!HH", msg, off)
        result.append((ext, msg[off + 4 : off + 4 + size]))
        off += 4 + size
    return result


def _alpn(body: bytes) -> list[str]:
    names: list[str] = []
    off = 2
    while off < len(body) and len(names) < 8:
        size = body[off]
        names.append(printable(body[off + 1 : off + 1 + size], 32))
        off += 1 + size
    return names


SPEC = ProtocolSpec("tls", frozenset({443, 8443}), frozenset(), probe, TlsIdentifier)
# Industrial protocols over TLS keep their own name: the policy allows "mqtt-tls", not "tls".
SPEC_MQTT = ProtocolSpec("mqtt-tls", frozenset({8883}), frozenset(), probe, TlsIdentifier, False)
SPEC_MODBUS = ProtocolSpec("modbus-tls", frozenset({802}), frozenset(), probe, TlsIdentifier, False)
SPEC_OPCUA = ProtocolSpec("opcua-tls", frozenset({4843}), frozenset(), probe, TlsIdentifier, False)
