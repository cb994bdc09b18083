"""EtherNet/IP and CIP payloads for the scenario generators: a scanner setting up class-1 I/O.

Explicit messaging (TCP 44818): RegisterSession, then a Forward Open to the adapter's Connection
Manager carried in SendRRData, and a Forward Close at the end. Implicit messaging (UDP 2222): class-1
datagrams, a sequenced address item (connection id, 32-bit sequence number) and a connected data item
(16-bit CIP sequence count, a run/idle header on O->T, the I/O data). Layouts follow the EtherNet/IP
adaptation of CIP (CIP Networks Library Vol. 2) and the Connection Manager of Vol. 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

REGISTER_SESSION = 0x0065
SEND_RR_DATA = 0x006F
FORWARD_OPEN = 0x54
FORWARD_CLOSE = 0x4E
CONNECTION_MANAGER_PATH = bytes([0x20, 0x06, 0x24, 0x01])  # class 6, instance 1

_ENCAP = struct.Struct("<HHII8sI")  # command, length, session handle, status, sender context, options
_FWD_OPEN = struct.Struct("<BBIIHHIB3xIHIHB")
_FWD_OPEN_REPLY = struct.Struct("<IIHHIIIBx")
_FWD_CLOSE = struct.Struct("<BBHHIBx")
POINT_TO_POINT = 2 << 13  # network connection parameters: connection type (16-bit form)
HIGH_PRIORITY = 1 << 10


@dataclass(frozen=True)
class Connection:
    """One class-1 connection as the scanner asks for it and the adapter grants it."""

    serial: int
    vendor: int
    originator_serial: int
    ot_id: int  # chosen by the adapter (the target receives on it)
    to_id: int  # chosen by the scanner (point to point: the originator receives on it)
    rpi_us: int  # requested, both directions
    api_us: int  # granted, both directions
    ot_size: int  # bytes of the O->T connected data: sequence count, run/idle header, outputs
    to_size: int  # T->O: sequence count, inputs
    path: bytes  # connection path: the adapter's assembly connection points


def encap(command: int, session: int, context: bytes, body: bytes = b"") -> bytes:
    return _ENCAP.pack(command, len(body), session, 0, context, 0) + body


def register_session() -> bytes:
    return struct.pack("<HH", 1, 0)


def _rr_data(cip: bytes) -> bytes:
    """SendRRData body: interface handle, timeout, a null address item and the unconnected data item."""
    return struct.pack("<IHHHHHH", 0, 10, 2, 0x0000, 0, 0x00B2, len(cip)) + cip


def forward_open_request(c: Connection) -> bytes:
    body = _FWD_OPEN.pack(
        0x0A, 0x0E, 0, c.to_id, c.serial, c.vendor, c.originator_serial, 2,  # timeout multiplier x16
        c.rpi_us, POINT_TO_POINT | HIGH_PRIORITY | c.ot_size,
        c.rpi_us, POINT_TO_POINT | HIGH_PRIORITY | c.to_size,
        0x01,  # transport: client, cyclic trigger, class 1
    )  # fmt: skip
    request = bytes([FORWARD_OPEN, len(CONNECTION_MANAGER_PATH) // 2]) + CONNECTION_MANAGER_PATH
    return _rr_data(request + body + bytes([len(c.path) // 2]) + c.path)


def forward_open_reply(c: Connection) -> bytes:
    granted = _FWD_OPEN_REPLY.pack(c.ot_id, c.to_id, c.serial, c.vendor, c.originator_serial, c.api_us,
                                   c.api_us, 0)  # fmt: skip
    return _rr_data(bytes([FORWARD_OPEN | 0x80, 0, 0, 0]) + granted)


def forward_close_request(c: Connection) -> bytes:
    body = _FWD_CLOSE.pack(0x0A, 0x0E, c.serial, c.vendor, c.originator_serial, len(c.path) // 2)
    request = bytes([FORWARD_CLOSE, len(CONNECTION_MANAGER_PATH) // 2]) + CONNECTION_MANAGER_PATH
    return _rr_data(request + body + c.path)


def forward_close_reply(c: Connection) -> bytes:
    return _rr_data(bytes([FORWARD_CLOSE | 0x80, 0, 0, 0]) + struct.pack("<HHIBx", c.serial, c.vendor,
                                                                         c.originator_serial, 0))  # fmt: skip


def io_datagram(connection_id: int, sequence: int, count: int, data: bytes, run_idle: bool) -> bytes:
    """A class-1 datagram; ``run_idle``: O->T carries the 32-bit run/idle header before its data."""
    connected = struct.pack("<H", count & 0xFFFF) + (struct.pack("<I", 1) if run_idle else b"") + data
    return (
        struct.pack("<HHHII", 2, 0x8002, 8, connection_id, sequence & 0xFFFFFFFF)
        + struct.pack("<HH", 0x00B1, len(connected))
        + connected
    )
