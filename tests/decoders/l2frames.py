"""Link-layer test traffic built from the specifications (BER TLVs, GOOSE/SV/PROFINET frames)."""

from __future__ import annotations

import struct

from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

PUBLISHER = "02:00:00:00:00:01"
GOOSE_GROUP = "01:0c:cd:01:00:01"
SV_GROUP = "01:0c:cd:04:00:01"


def tlv(tag: int, value: bytes) -> bytes:
    """One BER element with a definite length (short or long form)."""
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82]) + struct.pack("!H", n)
    return bytes([tag]) + length + value


def uint(value: int, size: int = 0) -> bytes:
    """An INTEGER's content octets (a leading zero keeps large unsigned values positive)."""
    size = size or max(1, (value.bit_length() + 8) // 8)
    return value.to_bytes(size, "big")


def goose_pdu(
    st_num: int = 1,
    sq_num: int = 0,
    tal: int = 2000,
    gocb: str = "IED1LD0/LLN0$GO$gcb1",
    entries: int = 2,
    simulation: bool = False,
    go_id: str | None = "IED1_GOOSE1",
    drop: tuple[int, ...] = (),
) -> bytes:
    parts = [
        (0x80, gocb.encode()),
        (0x81, uint(tal)),
        (0x82, b"IED1LD0/LLN0$DataSet1"),
        (0x83, go_id.encode() if go_id is not None else None),
        (0x84, struct.pack("!I", 1_700_000_000) + bytes([0x80, 0, 0, 0x0A])),
        (0x85, uint(st_num)),
        (0x86, uint(sq_num)),
        (0x87, bytes([1 if simulation else 0])),
        (0x88, uint(1)),
        (0x89, b"\x00"),
        (0x8A, uint(entries)),
        (0xAB, b"".join(tlv(0x83, b"\x01") for _ in range(entries))),
    ]
    body = b"".join(tlv(tag, value) for tag, value in parts if value is not None and tag not in drop)
    return tlv(0x61, body)


def apdu(appid: int, pdu: bytes, reserved1: int = 0) -> bytes:
    """The GOOSE/SV header (APPID, length from APPID on, reserved 1 and 2) and its PDU."""
    return struct.pack("!HHHH", appid, 8 + len(pdu), reserved1, 0) + pdu


def goose(
    appid: int = 0x0001, vlan: int | None = None, reserved1: int = 0, src: str = PUBLISHER, **pdu: object
) -> Packet:
    frame = Ether(src=src, dst=GOOSE_GROUP)
    payload = apdu(appid, goose_pdu(**pdu), reserved1)  # type: ignore[arg-type]
    if vlan is not None:
        return frame / Dot1Q(vlan=vlan, prio=4, type=0x88B8) / Raw(payload)
    frame.type = 0x88B8
    return frame / Raw(payload)


def sv_asdu(sv_id: str, smp_cnt: int, conf_rev: int = 1, synch: int = 2) -> bytes:
    body = (
        tlv(0x80, sv_id.encode())
        + tlv(0x82, struct.pack("!H", smp_cnt))
        + tlv(0x83, uint(conf_rev, 4))
        + tlv(0x85, bytes([synch]))
        + tlv(0x87, bytes(64))
    )
    return tlv(0x30, body)


def sv(
    smp_cnts: list[int], sv_id: str = "MU01", appid: int = 0x4000, vlan: int = 1, no_asdu: int | None = None
) -> Packet:
    asdus = b"".join(sv_asdu(sv_id, c) for c in smp_cnts)
    pdu = tlv(0x60, tlv(0x80, uint(len(smp_cnts) if no_asdu is None else no_asdu)) + tlv(0xA2, asdus))
    return Ether(src=PUBLISHER, dst=SV_GROUP) / Dot1Q(vlan=vlan, prio=4, type=0x88BA) / Raw(apdu(appid, pdu))
