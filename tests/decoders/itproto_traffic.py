"""Traffic for the IT/backup identification tests, built from the protocols' specifications.

Each builder returns payload bytes laid out as the cited specification says; the tests wrap them in
TCP/UDP with scapy (tests/factory.py) and run them through the real pipeline.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.flows import Flow
from agent.pipeline import Pipeline, PipelineConfig
from tests import factory


def run(packets: list[Any]) -> tuple[list[Flow], list[dict[str, Any]], Pipeline]:
    """Replay ``packets`` through a pipeline; the finished flows and the flow events (as dicts)."""
    collector = factory.Collector()
    events: list[dict[str, Any]] = []

    class Sink:
        name = "memory"

        def emit(self, event: Any) -> None:
            if event.event_type == "flow":
                events.append({"event_type": "flow", **event.fields})

        def flush(self) -> None: ...
        def close(self) -> None: ...

    pipeline = Pipeline(PipelineConfig(), sinks=[Sink()], consumers=[collector])
    pipeline.run(factory.ListSource(packets))
    return collector.flows, events, pipeline


def chunks(data: bytes, size: int = 1460) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- SMB2 (MS-SMB2 2.2.1.2 sync header, 2.2.4 NEGOTIATE response, 2.2.13 CREATE, 2.2.19-2.2.22) ----


def nbss(message: bytes) -> bytes:
    """Direct TCP transport: a zero byte and a 24-bit length (MS-SMB2 2.1)."""
    return struct.pack("!I", len(message)) + message


def smb2(command: int, message_id: int, body: bytes, response: bool = False, next_command: int = 0) -> bytes:
    header = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, command, 1, 1 if response else 0,
                         next_command, message_id, 0, 1, 0x1234, bytes(16))  # fmt: skip
    return header + body


def smb2_negotiate_response(dialect: int) -> bytes:
    # StructureSize 65, SecurityMode, DialectRevision, then the rest of the fixed part (zeros).
    return smb2(0, 0, struct.pack("<HHH", 65, 1, dialect) + bytes(58), response=True)


def smb2_write(message_id: int, data: bytes) -> bytes:
    # StructureSize 49, DataOffset (header + 48), Length, Offset, FileId, Channel, Remaining, ...
    body = struct.pack("<HHIQ16sIIHHI", 49, 64 + 48, len(data), 0, bytes(16), 0, 0, 0, 0, 0)
    return smb2(9, message_id, body + data)


def smb2_read_request(message_id: int, length: int) -> bytes:
    body = struct.pack("<HBBIQ16sIIIHHB", 49, 0, 0, length, 0, bytes(16), 0, 0, 0, 0, 0, 0)
    return smb2(8, message_id, body)


def smb2_read_response(message_id: int, data: bytes) -> bytes:
    # StructureSize 17, DataOffset, Reserved, DataLength, DataRemaining, Reserved2.
    return smb2(8, message_id, struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0) + data, response=True)


def smb2_create(message_id: int, name: str) -> bytes:
    encoded = name.encode("utf-16-le")
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x80000000, 0x80, 1, 1, 0, 64 + 56,
                       len(encoded), 0, 0)  # fmt: skip
    return smb2(5, message_id, body + encoded)


# -- SMB1 (MS-CIFS 2.2.3.1 header, 2.2.4.43 WRITE_ANDX) -------------------------------------------


def smb1(command: int, words: bytes, data: bytes = b"", response: bool = False) -> bytes:
    header = struct.pack("<4sBIBH12sHHHH", b"\xffSMB", command, 0, 0x80 if response else 0x18, 0xC807,
                         bytes(12), 0, 0xFEFF, 0, 1)  # fmt: skip
    return header + bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data


def smb1_write_andx(data: bytes) -> bytes:
    # AndX (4), FID, Offset, Timeout, WriteMode, Remaining, DataLengthHigh, DataLength, DataOffset, OffsetHigh
    words = struct.pack("<BBHHIIHHHHHI", 0xFF, 0, 0, 0x4000, 0, 0, 0, 0, 0, len(data), 64, 0)
    return smb1(0x2F, words, data)


# -- ONC-RPC (RFC 5531 9) and NFSv3 (RFC 1813 3.3.6/3.3.7) ----------------------------------------


def rpc_call(xid: int, program: int, version: int, procedure: int, args: bytes) -> bytes:
    cred = struct.pack("!II", 1, 20) + struct.pack("!IIIII", 0, 0, 0, 0, 0)  # AUTH_SYS, empty machine
    verf = struct.pack("!II", 0, 0)
    return struct.pack("!IIIIII", xid, 0, 2, program, version, procedure) + cred + verf + args


def rpc_reply(xid: int, results: bytes) -> bytes:
    return struct.pack("!IIIIII", xid, 1, 0, 0, 0, 0) + results  # accepted, null verifier, SUCCESS


def record(message: bytes) -> bytes:
    """TCP record marking: last fragment bit and length."""
    return struct.pack("!I", 0x80000000 | len(message)) + message


NFS_HANDLE = struct.pack("!I", 8) + b"\x01" * 8


def nfs3_write(xid: int, data: bytes) -> bytes:
    args = NFS_HANDLE + struct.pack("!QII", 0, len(data), 2) + struct.pack("!I", len(data)) + data
    return rpc_call(xid, 100003, 3, 7, args)


def nfs3_read(xid: int, count: int) -> bytes:
    return rpc_call(xid, 100003, 3, 6, NFS_HANDLE + struct.pack("!QI", 0, count))


def nfs3_read_reply(xid: int, data: bytes) -> bytes:
    # NFS3_OK, post_op_attr (present: 84 bytes of fattr3), count, eof, data
    results = struct.pack("!II", 0, 1) + bytes(84) + struct.pack("!III", len(data), 1, len(data)) + data
    return rpc_reply(xid, results)


# -- rsync daemon protocol (rsync's clientserver.c exchange, as in rsyncd.conf(5)) ----------------

RSYNC_SERVER_GREETING = b"@RSYNCD: 31.0 sha512 sha256 sha1 md5 md4\n"
RSYNC_CLIENT_GREETING = b"@RSYNCD: 31.0 sha512 sha256 sha1 md5 md4\n"


# -- iSCSI (RFC 7143 11.2 BHS, 11.12 Login, 11.3 SCSI Command, 11.7 Data-Out/In) -------------------


def bhs(opcode: int, flags: int, data: bytes = b"", specific: bytes = b"", immediate: bool = False) -> bytes:
    """A PDU: 48-byte BHS (opcode, flags, 24-bit data length, the opcode-specific bytes 8-47), data padded."""
    head = bytes([opcode | (0x40 if immediate else 0), flags, 0, 0, 0]) + len(data).to_bytes(3, "big")
    rest = specific.ljust(40, b"\0")[:40]
    return head + rest + data + bytes(-len(data) % 4)


def iscsi_login_request(keys: dict[str, str]) -> bytes:
    text = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())
    # Transit to full feature phase: T=1, CSG=1 (operational), NSG=3; version max/min 0.
    pdu = bytearray(bhs(0x03, 0x87, text, immediate=True))
    pdu[2] = pdu[3] = 0
    return bytes(pdu)


def iscsi_login_response(keys: dict[str, str]) -> bytes:
    text = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())
    return bhs(0x23, 0x87, text)


def scsi_command(cdb_opcode: int, write: bool, immediate: bytes = b"", expected: int = 0) -> bytes:
    # bytes 8-47: LUN, ITT, expected data transfer length, CmdSN, ExpStatSN, CDB (16)
    cdb = bytes([cdb_opcode]) + bytes(15)
    specific = bytes(8) + struct.pack("!IIII", 1, expected, 1, 1) + cdb
    return bhs(0x01, 0x80 | (0x20 if write else 0x40), immediate, specific)


def data_out(data: bytes) -> bytes:
    return bhs(0x05, 0x80, data)


def data_in(data: bytes) -> bytes:
    return bhs(0x25, 0x80, data)


# -- NDMP (NDMP v4 spec: header = sequence, time, type, code, reply sequence, error) ---------------


def ndmp(sequence: int, kind: int, code: int, body: bytes = b"") -> bytes:
    return record(struct.pack("!IIIIII", sequence, 1_700_000_000, kind, code, 0, 0) + body)
