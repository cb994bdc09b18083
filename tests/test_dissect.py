import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from agent import dissect as d
from agent.linklayer import llc_key
from agent.records import SUPPORTED_LINKTYPES
from tests import factory


def run(frame: bytes, linktype: int = 1) -> tuple[int, d.Packet, d.Dissector]:
    dissector = d.Dissector()
    pkt = d.Packet()
    return dissector.dissect(pkt, frame, linktype), pkt, dissector


def test_ethernet_ipv4_tcp_fields() -> None:
    tcp = TCP(sport=1234, dport=502, flags="PA", seq=7, ack=9, window=4096)
    frame = bytes(factory.eth() / IP(src="192.0.2.1", dst="192.0.2.2", ttl=33) / tcp / Raw(b"abcdef"))
    status, pkt, _ = run(frame)
    assert status == d.IP
    assert (pkt.src, pkt.dst) == (bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
    assert (pkt.sport, pkt.dport, pkt.proto, pkt.tcp_flags) == (1234, 502, 6, 0x18)
    assert pkt.tcp_header() == (7, 9, 4096)
    assert pkt.payload == b"abcdef"
    assert pkt.vlan == ()


def test_ethernet_padding_is_not_payload() -> None:
    # A 60-byte minimum frame pads a bare ACK; the padding must not count as TCP payload.
    frame = bytes(factory.eth() / IP() / TCP(flags="A")) + b"\x00" * 6
    status, pkt, _ = run(frame)
    assert status == d.IP
    assert pkt.payload_len == 0


def test_vlan_and_qinq_ids_kept_outermost_first() -> None:
    status, pkt, _ = run(bytes(factory.eth() / Dot1Q(vlan=10) / IP() / UDP(sport=1, dport=2)))
    assert status == d.IP and pkt.vlan == (10,)
    status, pkt, dissector = run(
        bytes(factory.eth() / Dot1AD(vlan=100) / Dot1Q(vlan=20) / IP() / UDP(sport=1, dport=2))
    )
    assert status == d.IP and pkt.vlan == (100, 20) and (pkt.sport, pkt.dport) == (1, 2)
    assert dissector.counts["vlan"] == 1


def test_ipv6_extension_headers_walked_to_udp() -> None:
    ip6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
    frame = bytes(factory.eth() / ip6 / UDP(sport=5353, dport=53) / Raw(b"q"))
    status, pkt, _ = run(frame)
    assert status == d.IP
    assert (pkt.ip_version, pkt.proto, pkt.sport, pkt.dport) == (6, 17, 5353, 53)
    assert d.format_ip(pkt.src) == "2001:db8::1"
    assert pkt.payload == b"q"


def test_ipv6_fragments_first_has_ports_later_counted() -> None:
    first = bytes(
        factory.eth()
        / IPv6()
        / IPv6ExtHdrFragment(offset=0, m=1, nh=17)
        / UDP(sport=7, dport=8)
        / Raw(b"x" * 16)
    )
    later = bytes(factory.eth() / IPv6() / IPv6ExtHdrFragment(offset=3, m=0, nh=17) / Raw(b"y" * 8))
    assert run(first)[0] == d.IP
    status, _, dissector = run(later)
    assert status == d.FRAGMENT
    assert dissector.counts["ipv6.fragment"] == 1


def test_ipv4_fragments() -> None:
    first = bytes(factory.eth() / IP(flags="MF", frag=0, proto=17) / UDP(sport=7, dport=8) / Raw(b"x" * 16))
    later = bytes(factory.eth() / IP(flags=0, frag=3, proto=17) / Raw(b"y" * 8))
    status, pkt, dissector = run(first)
    assert status == d.IP and pkt.dport == 8 and dissector.counts["ipv4.fragment"] == 1
    assert run(later)[0] == d.FRAGMENT


def test_arp_is_l2_and_parsed() -> None:
    frame = bytes(factory.eth() / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="192.0.2.1", pdst="192.0.2.2"))
    status, pkt, dissector = run(frame)
    assert status == d.L2 and pkt.ethertype == d.ETH_ARP and dissector.counts["arp"] == 1
    op, sha, spa, _tha, tpa = d.parse_arp(pkt.data, pkt.l3_off) or (0, b"", b"", b"", b"")
    assert op == 1 and sha == bytes.fromhex("020000000001") and spa == bytes([192, 0, 2, 1]) and tpa[-1] == 2


def test_non_ip_ethertypes_are_l2_flows_keyed_by_macs_and_ethertype() -> None:
    goose = bytes(Ether(src="02:00:00:00:00:01", dst="01:0c:cd:01:00:01", type=0x88B8)
                  / Raw(b"\x00\x01\x00\x10" + bytes(12)))  # fmt: skip
    status, pkt, _ = run(goose)
    assert status == d.L2_FLOW and pkt.ethertype == 0x88B8 and pkt.l3_off == 14 and pkt.ip_version == 0
    assert (pkt.src, pkt.dst, pkt.proto) == (
        bytes.fromhex("020000000001"),
        bytes.fromhex("010ccd010001"),
        0x88B8,
    )
    assert (pkt.payload_off, pkt.payload_len) == (14, 16)
    tagged = bytes(Ether(src="02:00:00:00:00:01", dst="01:0c:cd:04:00:01") / Dot1Q(vlan=7, type=0x88BA)
                   / Raw(bytes(20)))  # fmt: skip
    status, pkt, _ = run(tagged)
    assert status == d.L2_FLOW and pkt.vlan == (7,) and pkt.proto == 0x88BA and pkt.payload_off == 18


def test_8023_llc_frames_are_keyed_by_dsap_and_payload_follows_llc() -> None:
    bpdu = bytes(35)
    llc = bytes(Ether(src="02:00:00:00:00:09", dst="01:80:c2:00:00:00", type=3 + len(bpdu))
                / Raw(b"\x42\x42\x03" + bpdu + bytes(7)))  # STP, with Ethernet padding  # fmt: skip
    status, pkt, dissector = run(llc)
    assert status == d.L2_FLOW and pkt.proto == llc_key(0x42) and dissector.counts["llc"] == 1
    assert (pkt.payload_off, pkt.payload_len) == (17, 35)  # padding excluded by the length field
    snap = bytes(
        Ether(dst="01:00:0c:cc:cc:cc", type=8 + 4) / Raw(b"\xaa\xaa\x03\x00\x00\x00\x88\xcc" + bytes(4))
    )
    status, pkt, _ = run(snap)
    assert status == d.L2_FLOW and pkt.proto == 0x88CC and pkt.payload_off == 22
    assert run(bytes(Ether(type=2) / Raw(b"\x42")))[0] == d.MALFORMED  # no room for the LLC header


@pytest.mark.parametrize(
    ("linktype", "prefix"),
    [
        (113, bytes(CookedLinux(pkttype=0, proto=0x0800))),
        (276, struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8))),
        (101, b""),
        (228, b""),
        (0, struct.pack("<I", 2)),  # DLT_NULL written on a little-endian host
        (0, struct.pack(">I", 2)),  # ... and on a big-endian one
        (108, struct.pack(">I", 2)),
    ],
)
def test_link_types(linktype: int, prefix: bytes) -> None:
    frame = prefix + bytes(
        IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=9, dport=47808) / Raw(b"bv")
    )
    status, pkt, _ = run(frame, linktype)
    assert status == d.IP
    assert (pkt.sport, pkt.dport, pkt.payload) == (9, 47808, b"bv")


def test_null_link_ipv6() -> None:
    frame = struct.pack("<I", 30) + bytes(IPv6() / UDP(sport=1, dport=2))
    assert run(frame, 0)[0] == d.IP


def test_unsupported_link_type() -> None:
    assert run(b"\x00" * 40, 147)[0] == d.UNSUPPORTED_LINK


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (bytes(factory.eth() / IP())[:24], "ipv4.truncated"),
        (bytes(factory.eth() / IP(proto=6))[:34] + b"\x00" * 10, "tcp.truncated"),
        (bytes(Ether())[:10], "eth.truncated"),
        (bytes(factory.eth() / Dot1Q())[:16], "vlan.truncated"),
        (bytes(factory.eth() / IP(ihl=3) / UDP()), "ipv4.bad_header"),
        (bytes(factory.eth() / IP() / UDP(len=4)), "udp.bad_length"),
    ],
)
def test_malformed_headers_counted_not_raised(frame: bytes, kind: str) -> None:
    status, _, dissector = run(frame)
    assert status == d.MALFORMED
    assert dissector.anomalies == {kind: 1}


def test_icmp_type_and_code() -> None:
    status, pkt, _ = run(bytes(factory.icmp_echo()))
    assert status == d.IP and (pkt.proto, pkt.sport, pkt.dport) == (1, 8, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(sorted(SUPPORTED_LINKTYPES)))
def test_random_bytes_never_raise(data: bytes, linktype: int) -> None:
    status, _, _ = run(data, linktype)
    assert status in (d.IP, d.FRAGMENT, d.L2, d.L2_FLOW, d.MALFORMED)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise(data: st.DataObject) -> None:
    base = bytearray(
        bytes(factory.eth() / Dot1Q(vlan=5) / IPv6() / IPv6ExtHdrHopByHop() / TCP() / Raw(b"x" * 8))
    )
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    run(bytes(base[:cut]))
