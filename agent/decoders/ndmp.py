"""NDMP (TCP 10000): the Network Data Management Protocol that backup software uses to drive NAS.

Messages are XDR with RPC-style record marking (4-byte mark: last-fragment bit + length) and a
24-byte header: sequence, time stamp, message type (0 request, 1 reply), message code, reply
sequence, error. The server speaks first (NOTIFY_CONNECTED). The identifier counts requests by
message class (connect, config, scsi, tape, data, notify, log, fh, mover) from the code's high byte,
notes the protocol version from CONNECT_OPEN, and stops after ``max_packets``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import INVALID, NEED_MORE, FramedIdentifier

if TYPE_CHECKING:
    pass

_HEADER = struct.Struct("!IIIIIII")  # record mark, sequence, time, type, code, reply sequence, error
_MAX_RECORD = 1 << 20
# Message code high bytes (NDMP v2-v4: 0x1xx config ... 0x9xx connect, 0xAxx mover).
CLASSES = {0x1: "config", 0x2: "scsi", 0x3: "tape", 0x4: "data", 0x5: "notify", 0x6: "log", 0x7: "fh",
           0x9: "connect", 0xA: "mover"}  # fmt: skip
CONNECT_OPEN = 0x900


def _header(buf: bytes, off: int, strict: bool = True) -> tuple[int, int, int] | None:
    """(record length, type, code) of an NDMP message at ``off``; ``strict``: a standard code."""
    if len(buf) - off < 28:
        return None
    mark, _seq, _time, kind, code, _reply, error = _HEADER.unpack_from(buf, off)
    length = mark & 0x7FFFFFFF
    if length < 24 or length > _MAX_RECORD or kind > 1:
        return None
    if strict and (code >> 8 not in CLASSES or code & 0xFF > 0x20 or error > 30):
        return None
    return length, kind, code


def probe(payload: bytes, to_server: bool) -> bool:
    return _header(payload, 0) is not None


class NdmpIdentifier(FramedIdentifier):
    protocol = "ndmp"
    max_packets = 256

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        self.walk(from_client, seq, payload, self._message)
        return False

    def _message(self, buf: bytes, off: int, avail: int, from_client: bool) -> int:
        if avail < 28:
            return NEED_MORE
        header = _header(buf, off, strict=False)  # vendor extensions (0xF000-) are messages too
        if header is None:
            return INVALID
        length, kind, code = header
        if kind == 0:
            self.count("requests", CLASSES.get(code >> 8, "vendor" if code >= 0xF000 else "other"))
            if code == CONNECT_OPEN and avail >= 32:
                self.fields["version"] = struct.unpack_from("!I", buf, off + 28)[0]
        return length + 4


SPEC = ProtocolSpec("ndmp", frozenset({10000}), frozenset(), probe, NdmpIdentifier, probe_any_port=False)
