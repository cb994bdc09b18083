"""LLDP, STP/RSTP and PTP identification on L2 flows (and PTP over UDP)."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agent.decoders import ptp
from tests import factory

SWITCH = "02:00:00:00:00:21"


def lldp_tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack("!H", tlv_type << 9 | len(value)) + value


def lldpdu(*extra: bytes) -> bytes:
    mac = bytes.fromhex("020000000021")
    return (
        lldp_tlv(1, b"\x04" + mac)
        + lldp_tlv(2, b"\x07port-3")
        + lldp_tlv(3, b"\x00\x78")
        + b"".join(extra)
        + lldp_tlv(0, b"")
    )


def test_lldp_chassis_port_name_capabilities_and_identity() -> None:
    body = lldpdu(lldp_tlv(5, b"sw-cell-1"), lldp_tlv(6, b"SCALANCE X208"), lldp_tlv(7, b"\x00\x84\x00\x04"))
    frame = Ether(src=SWITCH, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(body)
    messages, anomalies, _ = factory.decode([frame])
    (msg,) = messages
    assert not anomalies and (msg.protocol, msg.operation) == ("lldp", "discovery")
    f = msg.fields
    assert (f["chassis_id"], f["port_id"], f["ttl"], f["system_name"]) == (
        "02:00:00:00:00:21",
        "port-3",
        120,
        "sw-cell-1",
    )
    assert f["capabilities"] == ["bridge"] and f["identity"] == {"name": "sw-cell-1", "role_hint": "switch"}


def test_lldp_tlv_past_the_frame_is_an_anomaly() -> None:
    body = lldp_tlv(1, b"\x04" + bytes(6)) + struct.pack("!H", 5 << 9 | 100) + b"short"  # name: 100 claimed
    frame = Ether(src=SWITCH, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(body)
    messages, anomalies, _ = factory.decode([frame])
    assert not messages and anomalies[0].fields["anomaly"]["event"] == "bad_length"


def bpdu(flags: int = 0, version: int = 2, bpdu_type: int = 2) -> bytes:
    root = struct.pack("!H", 0x8001) + bytes.fromhex("001ef6735980")
    bridge = struct.pack("!H", 0x8001) + bytes.fromhex("020000000021")
    return (
        struct.pack(
            "!HBBB8sI8sHHHHH",
            0,
            version,
            bpdu_type,
            flags,
            root,
            4,
            bridge,
            0x8002,
            0,
            20 << 8,
            2 << 8,
            15 << 8,
        )
        + b"\x00"
    )


def stp_frame(body: bytes) -> Ether:
    return Ether(src=SWITCH, dst="01:80:c2:00:00:00", type=3 + len(body)) / Raw(b"\x42\x42\x03" + body)


def test_rstp_bpdu_root_bridge_and_topology_change() -> None:
    messages, anomalies, _ = factory.decode([stp_frame(bpdu(flags=0x01)), stp_frame(bytes(3) + b"\x80")])
    rst, tcn = messages
    assert not anomalies and rst.flow.app_proto == "stp" and rst.flow.proto == 0x10042
    assert (rst.fields["protocol"], rst.fields["type"], rst.fields["topology_change"]) == (
        "rstp",
        "rst",
        True,
    )
    assert rst.fields["root_bridge_id"] == "32769/00:1e:f6:73:59:80" and rst.fields["root_path_cost"] == 4
    assert (tcn.function, tcn.fields["type"], tcn.fields["topology_change"]) == (0x80, "tcn", True)


def ptp_message(message_type: int, domain: int = 0, action: int | None = None) -> bytes:
    body = bytearray(48 if action is not None else 44)
    body[0] = message_type
    body[1] = 2
    body[2:4] = struct.pack("!H", len(body))
    body[4] = domain
    body[30:32] = struct.pack("!H", 77)
    if action is not None:
        body[46] = action
    return bytes(body)


def test_ptp_over_ethernet_and_udp() -> None:
    frames = [
        Ether(src=SWITCH, dst="01:1b:19:00:00:00", type=0x88F7) / Raw(ptp_message(0xB, domain=4)),
        Ether(src=SWITCH, dst="01:1b:19:00:00:00", type=0x88F7) / Raw(ptp_message(0xD, action=1)),
        factory.eth()
        / IP(src="192.0.2.1", dst="224.0.1.129")
        / UDP(sport=319, dport=319)
        / Raw(ptp_message(0x0)),
    ]
    messages, _, _ = factory.decode(frames)
    announce, management, sync = messages
    assert (announce.fields["message"], announce.fields["domain"], announce.operation) == (
        "announce",
        4,
        "time",
    )
    assert (management.fields["action"], management.operation) == ("set", "config")
    assert (sync.fields["message"], sync.fields["sequence_id"], sync.flow.app_proto) == ("sync", 77, "ptp")
    assert not ptp.probe(b"\x00\x01" + bytes(40), True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0x88CC, 0x88F7, 0x26]), st.binary(max_size=100))
def test_random_bodies_never_raise(ethertype: int, body: bytes) -> None:
    if ethertype < 0x600:
        frame = Ether(src=SWITCH, dst="01:80:c2:00:00:00", type=3 + len(body)) / Raw(b"\x42\x42\x03" + body)
    else:
        frame = Ether(src=SWITCH, dst="01:80:c2:00:00:0e", type=ethertype) / Raw(body)
    factory.decode([frame])
