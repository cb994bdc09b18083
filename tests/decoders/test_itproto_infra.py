"""Infrastructure protocols (SNMP, DNS, NTP, PTP, DHCP, syslog) built with scapy's own layers."""

from __future__ import annotations

import struct

from scapy.asn1.asn1 import ASN1_OID
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, UDP
from scapy.layers.ntp import NTPHeader
from scapy.layers.snmp import SNMP, SNMPget, SNMPset, SNMPvarbind
from scapy.packet import Packet, Raw

from tests import factory
from tests.decoders import itproto_traffic as t


def udp(sport: int, dport: int, payload: Packet | bytes, reply: bool = False) -> Packet:
    src, dst = (factory.SERVER, factory.CLIENT) if reply else (factory.CLIENT, factory.SERVER)
    return factory.eth() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def test_snmp_version_community_presence_and_set_without_the_community() -> None:
    varbind = [SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.5.0"))]
    packets = [
        udp(40000, 161, SNMP(version=1, community="plant-rw", PDU=SNMPget(varbindlist=varbind))),
        udp(40000, 161, SNMP(version=1, community="plant-rw", PDU=SNMPset(varbindlist=varbind))),
        udp(40001, 161, SNMP(version=0, community="", PDU=SNMPget(varbindlist=varbind))),
    ]
    flows, events, _ = t.run(packets)
    by_port = {e["src_port"]: e for e in events}
    assert by_port[40000]["snmp"] == {
        "version": "2c",
        "community_present": True,
        "pdus": {"get": 1, "set": 1},
    }
    assert by_port[40001]["snmp"] == {"version": "1", "community_present": False, "pdus": {"get": 1}}
    assert "plant-rw" not in str(events)
    assert {f.app_proto for f in flows} == {"snmp"} and by_port[40000]["flow"]["category"] == "infrastructure"


def test_dns_ntp_dhcp_syslog_ptp() -> None:
    ptp_sync = bytes([0x00, 0x02]) + struct.pack("!H", 44) + bytes([0]) + bytes(39)
    packets = [
        udp(40000, 53, DNS(id=1, rd=1, qd=DNSQR(qname="plc1.plant."))),
        udp(53, 40000, DNS(id=1, qr=1, rcode=3, qd=DNSQR(qname="plc1.plant.")), reply=True),
        udp(123, 123, NTPHeader(version=4, mode=3)),
        udp(68, 67, BOOTP(op=1, chaddr=b"\x02" * 6) / DHCP(options=[("message-type", "discover"), "end"])),
        udp(40002, 514, Raw(b"<134>Nov 28 09:00:00 plc1 cycle overrun")),
        udp(319, 319, Raw(ptp_sync)),
    ]
    flows, events, _ = t.run(packets)
    by_port = {e["dest_port"]: e for e in events}
    assert by_port[53]["dns"] == {"queries": 1, "responses": 1, "rcodes": {"nxdomain": 1}}
    assert by_port[123]["ntp"] == {"version": 4, "modes": {"client": 1}}
    assert by_port[67]["dhcp"] == {"message_types": {"discover": 1}}
    assert by_port[514]["syslog"] == {"facility": 16, "severity": 6}
    assert "ptp" not in by_port[319]  # PTP is decoded into messages (agent/decoders/ptp.py), not identified
    assert {e["flow"]["category"] for e in events} == {"infrastructure"}
    assert sorted(f.app_proto for f in flows) == ["dhcp", "dns", "ntp", "ptp", "syslog"]


def test_infrastructure_ports_with_other_payload_are_not_named_after_the_port() -> None:
    flows, _, _ = t.run([udp(40000, 161, Raw(b"\x00" * 30)), udp(40001, 123, Raw(b"\xff" * 7))])
    assert {f.app_proto for f in flows} == {"unknown"}
