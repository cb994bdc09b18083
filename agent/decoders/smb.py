"""SMB 1/2/3 over TCP 445 (direct) and 139 (NetBIOS session): identification and a command count.

Each message is a 4-byte NetBIOS session header (type 0, 24-bit length) and an SMB header with its
magic: 0xFF "SMB" (SMB1), 0xFE "SMB" (SMB2/3), 0xFD "SMB" (SMB3 encrypted transform), 0xFC "SMB"
(SMB3 compressed). The identifier counts requests by command (read, write, create, ...) and the
bytes the READ responses and WRITE requests carry, which is what tells a file copy from browsing;
after ``max_packets`` segments it stops and says the counts are partial (``flow`` bytes give the
totals). Field offsets follow MS-SMB2 2.2 and MS-CIFS 2.2.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import INVALID, NEED_MORE, FramedIdentifier

if TYPE_CHECKING:
    pass

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_MAX_MESSAGE = 1 << 24  # the NetBIOS header's 24-bit length

SMB2_COMMANDS = ("negotiate", "session_setup", "logoff", "tree_connect", "tree_disconnect", "create",
                 "close", "flush", "read", "write", "lock", "ioctl", "cancel", "echo", "query_directory",
                 "change_notify", "query_info", "set_info", "oplock_break")  # fmt: skip
SMB2_READ, SMB2_WRITE, SMB2_NEGOTIATE = 8, 9, 0
SMB1_COMMANDS = {0x72: "negotiate", 0x73: "session_setup", 0x74: "logoff", 0x75: "tree_connect",
                 0x71: "tree_disconnect", 0xA2: "create", 0x2D: "create", 0x04: "close", 0x05: "flush",
                 0x0A: "read", 0x2E: "read", 0x0B: "write", 0x2F: "write", 0x24: "lock", 0x25: "trans",
                 0x32: "trans2", 0xA0: "nt_trans", 0x2B: "echo", 0xA4: "cancel"}  # fmt: skip
SMB1_READ_ANDX, SMB1_WRITE_ANDX = 0x2E, 0x2F
DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0222: "2.2.2", 0x0224: "2.2.4", 0x0300: "3.0", 0x0302: "3.0.2",
            0x0310: "3.1.0", 0x0311: "3.1.1", 0x02FF: "2.???"}  # fmt: skip


def _magic_at(buf: bytes, off: int) -> int:
    """The SMB magic's first byte (0xFF, 0xFE, 0xFD, 0xFC) if ``buf[off:]`` starts an SMB header."""
    if buf[off + 1 : off + 4] == b"SMB" and buf[off] in (0xFF, 0xFE, 0xFD, 0xFC):
        return buf[off]
    return 0


def probe(payload: bytes, to_server: bool) -> bool:
    """An SMB header behind a NetBIOS session message header.

    On 139 the NetBIOS session request and response come first: they are not SMB yet (a flow that
    shows nothing else stays ``netbios-ssn``); the probe looks past them, and the identifier is
    replayed all of them once SMB shows.
    """
    off = 0
    while len(payload) - off >= 4 and payload[off] in (0x81, 0x82, 0x85):
        off += 4 + ((payload[off + 1] & 1) << 16 | payload[off + 2] << 8 | payload[off + 3])
    return len(payload) - off >= 8 and payload[off] == 0 and bool(_magic_at(payload, off + 4))


class SmbIdentifier(FramedIdentifier):
    protocol = "smb"
    max_packets = 4096  # a few dozen 64 KiB transfers: enough to see what the session does

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        self.walk(from_client, seq, payload, self._message)
        if self.budget <= 1:
            self.fields["partial"] = True
        return False

    def _message(self, buf: bytes, off: int, avail: int, from_client: bool) -> int:
        if avail < 4:
            return NEED_MORE
        kind = buf[off]
        length = (buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3]) + 4
        if kind != 0:
            # Other NetBIOS session packets (request, response, keep-alive) carry no SMB.
            return length if kind in (0x81, 0x82, 0x83, 0x84, 0x85) and length <= 1024 else INVALID
        if avail < 8:
            return NEED_MORE
        magic = _magic_at(buf, off + 4)
        if not magic:
            return INVALID
        if magic == 0xFE:
            return self._smb2(buf, off + 4, avail - 4, from_client, length)
        if magic == 0xFF:
            return self._smb1(buf, off + 4, avail - 4, length)
        self.fields["version"] = 3  # transform/compression headers exist only in SMB 3.x
        if magic == 0xFD:
            self.fields["encrypted"] = True
        return length

    def _smb2(self, buf: bytes, h: int, avail: int, from_client: bool, length: int) -> int:
        if avail < min(length - 4, 72):
            return NEED_MORE  # the header and the body fields read below are split across segments
        # Compounded requests follow each other inside one NetBIOS message (NextCommand offsets).
        end = h + min(avail, length - 4)
        while True:
            if end - h < 64:
                return length
            command = _U16.unpack_from(buf, h + 12)[0]
            response = buf[h + 16] & 1
            body = h + 64
            if "version" not in self.fields:
                self.fields["version"] = 2
            if not response:
                name = SMB2_COMMANDS[command] if command < len(SMB2_COMMANDS) else "other"
                self.count("commands", name)
                if command == SMB2_WRITE and end - body >= 8:
                    self.count_bytes("bytes_written", _U32.unpack_from(buf, body + 4)[0])
            elif command == SMB2_READ and end - body >= 8 and _U16.unpack_from(buf, body)[0] == 17:
                self.count_bytes("bytes_read", _U32.unpack_from(buf, body + 4)[0])
            elif command == SMB2_NEGOTIATE and end - body >= 6 and _U16.unpack_from(buf, body)[0] == 65:
                dialect = _U16.unpack_from(buf, body + 4)[0]
                self.fields["dialect"] = DIALECTS.get(dialect, f"0x{dialect:04x}")
                self.fields["version"] = 3 if 0x0300 <= dialect < 0x0400 else 2
            next_command = _U32.unpack_from(buf, h + 20)[0]
            if not next_command or next_command < 64 or next_command % 8 or next_command >= length:
                return length
            h += next_command
            if h + 64 > end:
                return length

    def _smb1(self, buf: bytes, h: int, avail: int, length: int) -> int:
        if avail < min(length - 4, 64):
            return NEED_MORE
        if avail < 33:
            return length
        self.fields.setdefault("version", 1)
        command = buf[h + 4]
        response = buf[h + 9] & 0x80
        if not response:
            self.count("commands", SMB1_COMMANDS.get(command, "other"))
            # WRITE_ANDX words: DataLength (low 16 bits) is word 10, DataLengthHigh word 9.
            if command == SMB1_WRITE_ANDX and avail >= 33 + 24 and buf[h + 32] >= 12:
                low = _U16.unpack_from(buf, h + 33 + 20)[0]
                high = _U16.unpack_from(buf, h + 33 + 18)[0] if buf[h + 32] == 14 else 0
                self.count_bytes("bytes_written", high << 16 | low)
        elif command == SMB1_READ_ANDX and avail >= 33 + 12 and buf[h + 32] == 12:
            # READ_ANDX response words: DataLength is word 5 (low 16 bits).
            self.count_bytes("bytes_read", _U16.unpack_from(buf, h + 33 + 10)[0])
        return length

    def count_bytes(self, key: str, n: int) -> None:
        fields = self.fields
        fields[key] = fields.get(key, 0) + n


SPEC = ProtocolSpec("smb", frozenset({445, 139}), frozenset(), probe, SmbIdentifier)
