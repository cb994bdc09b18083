"""PROFINET IO-CM over DCE/RPC: header in both byte orders, PNIO operations and classes, pairing."""

import struct
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.packet import Packet, Raw

from agent.decoders import pn_cm
from tests import factory

CONTROLLER, DEVICE = "192.0.2.1", "192.0.2.2"
DEVICE_IF = uuid.UUID("dea00001-6c97-11d1-8271-00a02442df7d")
EPM_IF = uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")
PNIO_OBJECT = uuid.UUID("dea00000-6c97-11d1-8271-000100030159")  # instance 1, device 3, vendor 0x159
ACTIVITY = uuid.UUID("13142f90-0000-1000-a994-d2106890ca5a")


def rpc(
    ptype: int,
    opnum: int,
    stub: bytes,
    seq: int = 0,
    little: bool = False,
    interface: uuid.UUID = DEVICE_IF,
    frag_num: int = 0,
    flags1: int = 0x20,
    obj: uuid.UUID = PNIO_OBJECT,
) -> bytes:
    order = "<" if little else ">"
    as_bytes = (lambda u: u.bytes_le) if little else (lambda u: u.bytes)
    header = struct.pack("!BBBB3sB", 4, ptype, flags1, 0, b"\x10\0\0" if little else b"\0\0\0", 0)
    header += as_bytes(obj) + as_bytes(interface) + as_bytes(ACTIVITY)
    header += struct.pack(order + "IIIHHHHHBB", 0, 1, seq, opnum, 0xFFFF, 0xFFFF, len(stub), frag_num, 0, 0)
    assert len(header) == 80
    return header + stub


def ndr_request(blocks: bytes) -> bytes:
    return struct.pack("!IIIII", 4096, len(blocks), 4096, 0, len(blocks)) + blocks


def record_header(block_type: int, index: int, slot: int = 1, subslot: int = 1) -> bytes:
    body = struct.pack("!H16sIHHHHI", 1, ACTIVITY.bytes, 0, slot, subslot, 0, index, 0) + bytes(24)
    return struct.pack("!HHBB", block_type, len(body) + 2, 1, 0) + body


def control(command: int) -> bytes:
    body = struct.pack("!H16sHHHH", 0, ACTIVITY.bytes, 1, 0, command, 0)
    return struct.pack("!HHBB", 0x0110, len(body) + 2, 1, 0) + body


def connect(station: bytes) -> bytes:
    body = (
        struct.pack(
            "!H16sH6s16sIHHH", 1, ACTIVITY.bytes, 1, b"\x02" * 6, bytes(16), 0x11, 600, 0x8892, len(station)
        )
        + station
    )
    return struct.pack("!HHBB", 0x0101, len(body) + 2, 1, 0) + body


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> Packet:
    return factory.eth() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)


def test_connect_write_control_read_release_with_pairing_across_port_pairs() -> None:
    ok = b"\0\0\0\0" + bytes(16)
    frames = [
        udp(CONTROLLER, DEVICE, 50000, 34964, rpc(0, 0, ndr_request(connect(b"plc-1")), seq=0)),
        udp(DEVICE, CONTROLLER, 49152, 50000, rpc(2, 0, ok, seq=0, little=True)),  # from another port
        udp(CONTROLLER, DEVICE, 50000, 49152, rpc(0, 3, ndr_request(record_header(8, 0x8071)), seq=1)),
        udp(DEVICE, CONTROLLER, 49152, 50000, rpc(2, 3, ok, seq=1, little=True)),
        udp(CONTROLLER, DEVICE, 50000, 49152, rpc(0, 3, ndr_request(record_header(8, 0x0010)), seq=2)),
        udp(CONTROLLER, DEVICE, 50000, 49152, rpc(0, 4, ndr_request(control(0x0001)), seq=3)),
        udp(CONTROLLER, DEVICE, 50000, 49152, rpc(0, 2, ndr_request(record_header(9, 0xAFF0)), seq=4)),
        udp(
            DEVICE,
            CONTROLLER,
            49152,
            50000,
            rpc(2, 2, bytes.fromhex("de810000") + bytes(16), seq=4, little=True),
        ),
        udp(CONTROLLER, DEVICE, 50000, 34964, rpc(0, 1, ndr_request(b""), seq=5)),
    ]
    messages, anomalies, _ = factory.decode(frames)
    assert not anomalies
    ops = [(m.direction[:3], m.fields["operation_name"], m.operation) for m in messages]
    assert ops == [
        ("req", "connect", "session"),
        ("res", "connect", "session"),
        ("req", "write", "config"),
        ("res", "write", "config"),
        ("req", "write", "write"),
        ("req", "control", "session"),
        ("req", "read", "read"),
        ("res", "read", "read"),
        ("req", "release", "session"),
    ]
    connect_req, connect_resp = messages[0], messages[1]
    assert connect_resp.request_cnt == 1 and connect_resp.flow is not connect_req.flow
    assert connect_req.fields["identity"] == {"name": "plc-1", "role_hint": "io-controller"}
    assert connect_resp.fields["little_endian"] and connect_resp.fields["interface"] == "pnio_device"
    assert connect_resp.fields["activity_uuid"] == str(ACTIVITY)
    assert messages[2].fields["index"] == 0x8071 and messages[5].fields["control"] == ["prm_end"]
    assert messages[7].exception and messages[7].fields["pnio_status"] == "de810000"
    assert all(m.flow.app_proto == "pn-cm" for m in messages)


def test_epm_lookup_is_discovery_and_fault_is_an_exception() -> None:
    frames = [
        udp(CONTROLLER, DEVICE, 50001, 34964, rpc(0, 2, bytes(40), seq=9, interface=EPM_IF)),
        udp(
            DEVICE,
            CONTROLLER,
            34964,
            50001,
            rpc(3, 2, struct.pack(">I", 0x1C010003), seq=9, interface=EPM_IF),
        ),
    ]
    messages, _, _ = factory.decode(frames)
    lookup, fault = messages
    assert (lookup.operation, lookup.fields["operation_name"]) == ("discovery", "lookup")
    assert fault.exception and fault.request_cnt == 1 and fault.fields["fault_status"] == 0x1C010003


def test_later_fragments_and_housekeeping_packets_are_not_messages() -> None:
    frames = [
        udp(CONTROLLER, DEVICE, 50002, 34964, rpc(0, 3, bytes(100), seq=1, flags1=0x24)),
        udp(CONTROLLER, DEVICE, 50002, 34964, rpc(0, 3, bytes(100), seq=1, flags1=0x26, frag_num=1)),
        udp(DEVICE, CONTROLLER, 34964, 50002, rpc(9, 3, bytes(8), seq=1)),
    ]
    messages, _, _ = factory.decode(frames)
    assert len(messages) == 1 and messages[0].fields["fragmented"]


def test_probe_needs_a_pnio_or_epm_interface() -> None:
    assert pn_cm.probe(rpc(0, 0, b""), True) and pn_cm.probe(rpc(2, 0, b"", little=True), False)
    assert not pn_cm.probe(rpc(0, 0, b"", interface=uuid.UUID(int=5)), True)
    assert not pn_cm.probe(b"\x05" + rpc(0, 0, b"")[1:], True)
    assert pn_cm.probe(rpc(0, 2, b"", interface=EPM_IF), True)
    windows = uuid.UUID(int=0)  # a Windows endpoint-mapper lookup names no PNIO object
    assert not pn_cm.probe(rpc(0, 2, b"", interface=EPM_IF, obj=windows), True)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_datagrams_never_raise(data: st.DataObject) -> None:
    good = bytearray(rpc(0, 3, ndr_request(record_header(8, 0x8071))))
    for _ in range(data.draw(st.integers(1, 6))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    factory.decode(
        [udp(CONTROLLER, DEVICE, 50003, 34964, bytes(good[: data.draw(st.integers(1, len(good)))]))]
    )
