"""Devices announcing themselves: Modbus MEI device identification and EtherNet/IP ListIdentity."""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from tests.factory import tcp_session

PLC = "10.1.1.10"
HMI = "10.1.2.20"
ADAPTER = "10.1.1.30"
PLC_MAC = "00:80:f4:01:01:0a"  # Telemechanique's block in the IEEE registry
HMI_MAC = "00:14:22:01:02:14"  # Dell
ADAPTER_MAC = "00:00:bc:01:01:1e"  # Rockwell Automation
MACS = {PLC: PLC_MAC, HMI: HMI_MAC, ADAPTER: ADAPTER_MAC}


def with_macs(packets: list[Packet]) -> list[Packet]:
    for p in packets:
        p[Ether].src = MACS.get(p[IP].src, "02:00:00:00:00:99")
        p[Ether].dst = MACS.get(p[IP].dst, "ff:ff:ff:ff:ff:ff")
    return packets


def mei_response(tid: int, objects: dict[int, bytes]) -> bytes:
    body = b"".join(bytes([oid, len(v)]) + v for oid, v in objects.items())
    pdu = bytes([0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, len(objects)]) + body
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu


def mei_request(tid: int) -> bytes:
    return struct.pack(">HHHB", tid, 0, 5, 1) + bytes([0x2B, 0x0E, 0x01, 0x00])


def modbus_identification(revision: bytes = b"V2.70", sport: int = 40001) -> list[Packet]:
    objects = {0: b"Schneider Electric", 1: b"BMX P34 2020", 2: revision}
    read = (
        struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 2),
        struct.pack(">HHHBBB", 1, 0, 7, 1, 3, 4) + b"\x00\x2a\x00\x07",
    )
    write = (struct.pack(">HHHBBHH", 2, 0, 6, 1, 6, 10, 99), struct.pack(">HHHBBHH", 2, 0, 6, 1, 6, 10, 99))
    return with_macs(
        tcp_session(HMI, PLC, sport, 502, [read, write, (mei_request(3), mei_response(3, objects))])
    )


def enip_header(command: int, body: bytes) -> bytes:
    return struct.pack("<HHII8sI", command, len(body), 0, 0, b"ctx00001", 0) + body


def list_identity(
    device_ip: str = ADAPTER,
    name: bytes = b"1769-L33ER/A LOGIX5333ER",
    serial: int = 0x60A1B2C3,
    revision: tuple[int, int] = (30, 11),
) -> list[Packet]:
    ident = (
        struct.pack("<HHHBBHIB", 1, 0x0E, 0x96, revision[0], revision[1], 0x0030, serial, len(name))
        + name
        + b"\x03"
    )
    sockaddr = struct.pack(">HH4s8x", 2, 44818, bytes(int(x) for x in device_ip.split(".")))
    item = struct.pack("<H", 1) + sockaddr + ident
    body = struct.pack("<HHH", 1, 0x0C, len(item)) + item
    request = (
        Ether() / IP(src=HMI, dst=device_ip) / UDP(sport=50000, dport=44818) / Raw(enip_header(0x63, b""))
    )
    reply = (
        Ether() / IP(src=device_ip, dst=HMI) / UDP(sport=44818, dport=50000) / Raw(enip_header(0x63, body))
    )
    return with_macs([request, reply])


# -- BACnet devices behind a router: I-Am relayed from an MS/TP trunk -------------------------------

ROUTER = "10.1.3.40"  # a BACnet/IP-to-MS/TP router
ROUTER_MAC = "00:80:f4:01:03:28"
BBMD = "10.1.3.1"
MACS[ROUTER] = ROUTER_MAC
MSTP_NETWORK = 5


def bacnet_i_am(instance: int, vendor_id: int, snet: tuple[int, bytes] | None = None) -> bytes:
    """A broadcast I-Am (Original-Broadcast-NPDU), with the NPDU source specifier a router adds."""
    apdu = (
        bytes([0x10, 0x00, 0xC4])
        + struct.pack("!I", 8 << 22 | instance)
        + bytes([0x22, 0x01, 0xE0, 0x91, 0x03, 0x21, vendor_id])
    )
    control = 0x08 if snet else 0x00
    specifier = struct.pack("!HB", snet[0], len(snet[1])) + snet[1] if snet else b""
    npdu = bytes([0x01, control]) + specifier + apdu
    return bytes([0x81, 0x0B]) + struct.pack("!H", 4 + len(npdu)) + npdu


def bacnet_forwarded(original: str, npdu_datagram: bytes) -> bytes:
    """The BBMD's Forwarded-NPDU of a datagram ``original`` broadcast on its own subnet."""
    body = bytes(int(x) for x in original.split(".")) + struct.pack("!H", 47808) + npdu_datagram[4:]
    return bytes([0x81, 0x04]) + struct.pack("!H", 4 + len(body)) + body


def routed_i_am(vendor_of_second: int = 42) -> list[Packet]:
    """The router relays the I-Am of two MS/TP controllers (MACs 0x17 and 0x18 on network 5) and
    announces itself; a BBMD forwards one of them again from another subnet."""
    datagrams = [
        (ROUTER, bacnet_i_am(1001, 42)),  # the router itself, on the IP network
        (ROUTER, bacnet_i_am(517, 42, (MSTP_NETWORK, b"\x17"))),
        (ROUTER, bacnet_i_am(518, vendor_of_second, (MSTP_NETWORK, b"\x18"))),
        (BBMD, bacnet_forwarded(ROUTER, bacnet_i_am(517, 42, (MSTP_NETWORK, b"\x17")))),
    ]
    packets = [
        Ether() / IP(src=src, dst="10.1.3.255") / UDP(sport=47808, dport=47808) / Raw(data)
        for src, data in datagrams
    ]
    return with_macs(packets)
