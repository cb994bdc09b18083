"""iSCSI (RFC 7143, TCP 3260): login, SCSI commands and the data moving in each direction.

Every PDU starts with a 48-byte Basic Header Segment: opcode (low 6 bits of byte 0), flags, the
additional header length in 4-byte words (byte 4) and the 24-bit data segment length (bytes 5-7),
padded to 4 bytes; CRC32C digests follow the header and the data once the login negotiated them
(``HeaderDigest``/``DataDigest`` in the target's login response). The identifier counts PDUs by
opcode, SCSI commands by direction (READ/WRITE CDBs), the bytes of Data-In (read) and Data-Out plus
immediate data (written), and keeps the initiator and target names from the login.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.identify import INVALID, NEED_MORE, FramedIdentifier
from agent.decoders.text import printable

if TYPE_CHECKING:
    from agent.flows import Flow

BHS = 48
_MAX_DATA = 1 << 24
OPCODES = {0x00: "nop_out", 0x01: "scsi_command", 0x02: "task_mgmt", 0x03: "login", 0x04: "text",
           0x05: "data_out", 0x06: "logout", 0x10: "snack", 0x20: "nop_in", 0x21: "scsi_response",
           0x22: "task_mgmt_response", 0x23: "login_response", 0x24: "text_response", 0x25: "data_in",
           0x26: "logout_response", 0x31: "r2t", 0x32: "async_message", 0x3F: "reject"}  # fmt: skip
LOGIN, LOGIN_RESPONSE, SCSI_COMMAND, DATA_OUT, DATA_IN = 0x03, 0x23, 0x01, 0x05, 0x25
SCSI_READ = frozenset({0x08, 0x28, 0xA8, 0x88})
SCSI_WRITE = frozenset({0x0A, 0x2A, 0xAA, 0x8A})
LOGIN_KEYS = {b"InitiatorName": "initiator", b"TargetName": "target", b"SessionType": "session_type"}


def _bhs_length(buf: bytes, off: int) -> int:
    """Header + data length of the PDU at ``off`` (without digests), or INVALID."""
    opcode = buf[off] & 0x3F
    if opcode not in OPCODES or buf[off + 4] > 64:
        return INVALID
    data = buf[off + 5] << 16 | buf[off + 6] << 8 | buf[off + 7]
    if data > _MAX_DATA:
        return INVALID
    return BHS + buf[off + 4] * 4 + ((data + 3) & ~3)


def probe(payload: bytes, to_server: bool) -> bool:
    """A login request or response with iSCSI's version bytes, or (mid-session) any sane PDU."""
    if len(payload) < BHS or _bhs_length(payload, 0) < 0:
        return False
    opcode = payload[0] & 0x3F
    if opcode == LOGIN:
        return payload[2] == 0 and payload[3] == 0 and payload[1] & 0x30 != 0x30  # CSG 3 is reserved
    if opcode == LOGIN_RESPONSE:
        return payload[2] == 0 and payload[3] == 0
    # Mid-session: a whole PDU (or the start of one) whose reserved bytes are zero.
    return opcode in (SCSI_COMMAND, DATA_OUT, DATA_IN, 0x21) and payload[2:4] != b"\xff\xff"


class IscsiIdentifier(FramedIdentifier):
    protocol = "iscsi"
    max_packets = 4096

    __slots__ = ("data_digest", "header_digest")

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.header_digest = 0
        self.data_digest = 0

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        self.walk(from_client, seq, payload, self._pdu)
        if self.budget <= 1:
            self.fields["partial"] = True
        return False

    def _pdu(self, buf: bytes, off: int, avail: int, from_client: bool) -> int:
        if avail < BHS:
            return NEED_MORE
        length = _bhs_length(buf, off)
        if length < 0:
            return INVALID
        opcode = buf[off] & 0x3F
        data = buf[off + 5] << 16 | buf[off + 6] << 8 | buf[off + 7]
        self.count("opcodes", OPCODES[opcode])
        if opcode == SCSI_COMMAND:
            cdb = buf[off + 32]
            self.count("scsi", "read" if cdb in SCSI_READ else "write" if cdb in SCSI_WRITE else "other")
            self._add("bytes_written", data)  # immediate data
        elif opcode == DATA_OUT:
            self._add("bytes_written", data)
        elif opcode == DATA_IN:
            self._add("bytes_read", data)
        elif opcode == LOGIN or opcode == LOGIN_RESPONSE:
            start = off + BHS + buf[off + 4] * 4
            self._login_text(buf[start : min(start + data, off + avail)], opcode == LOGIN_RESPONSE)
            return length  # login PDUs never carry digests
        return length + self.header_digest + (self.data_digest if data else 0)

    def _login_text(self, text: bytes, from_target: bool) -> None:
        for pair in text.split(b"\0"):
            key, _, value = pair.partition(b"=")
            name = LOGIN_KEYS.get(key)
            if name is not None and value:
                self.fields[name] = printable(value)
            elif from_target and key == b"HeaderDigest":
                self.header_digest = 4 if value == b"CRC32C" else 0
            elif from_target and key == b"DataDigest":
                self.data_digest = 4 if value == b"CRC32C" else 0

    def _add(self, key: str, n: int) -> None:
        self.fields[key] = self.fields.get(key, 0) + n


SPEC = ProtocolSpec("iscsi", frozenset({3260}), frozenset(), probe, IscsiIdentifier, probe_any_port=False)
