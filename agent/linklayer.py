"""Link-layer ("L2") flows: the vocabulary shared by the dissector, the flow table and the outputs.

Frames that carry no IP (GOOSE, Sampled Values, PROFINET, LLDP, STP, PTP over Ethernet) become
flows keyed by (source MAC, destination MAC, EtherType, VLAN ids) in the same table as IP flows.
They reuse the IP flow key's shape, ``(src, dst, sport, dport, proto, vlan)``, with 6-byte MAC
addresses in ``src``/``dst`` (never confused with 4- or 16-byte IP addresses), ports 0 and the
EtherType in ``proto``; ``Flow.ip_version`` is 0.

802.3 frames with a length field instead of an EtherType carry an LLC header; they are keyed by
``LLC_KEY | DSAP`` (above the 16-bit EtherType space), except SNAP with a zero OUI, whose protocol
id is an EtherType. STP is ``llc_key(0x42)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.dissect import Packet

ETH_GOOSE = 0x88B8
ETH_GSE_MGMT = 0x88B9
ETH_SV = 0x88BA
ETH_PROFINET = 0x8892
ETH_LLDP = 0x88CC
ETH_PTP = 0x88F7

LLC_KEY = 0x10000  # flow-key "EtherType" of an 802.3/LLC frame: LLC_KEY | DSAP
LLC_STP = 0x42
LLC_BACNET = 0x82  # BACnet/Ethernet (ASHRAE 135 clause 7)


def llc_key(dsap: int) -> int:
    """The flow-key protocol of 802.3/LLC frames addressed to ``dsap``."""
    return LLC_KEY | dsap


# First guess of an L2 flow's app_proto from its EtherType (decoders keep or refine it); the
# L2 counterpart of agent.ports' port table.
ETHERTYPE_NAMES: dict[int, str] = {
    ETH_GOOSE: "goose",
    ETH_GSE_MGMT: "gse-mgmt",
    ETH_SV: "sv",
    ETH_PROFINET: "profinet",
    ETH_LLDP: "lldp",
    ETH_PTP: "ptp",
    0x0806: "arp",
    0x8809: "lacp",  # slow protocols (LACP, OAM)
    0x88E3: "mrp",  # media redundancy protocol (IEC 62439-2)
    0x88FB: "prp",  # parallel redundancy supervision (IEC 62439-3)
    0x892F: "hsr",
    0x88A4: "ethercat",
    0x88AB: "powerlink",
    0x22F0: "avtp",
    llc_key(LLC_STP): "stp",
    llc_key(LLC_BACNET): "bacnet",
}


def guess_l2_proto(key_proto: int) -> str:
    """app_proto for an L2 flow before decoding ("" when the EtherType is not a known one)."""
    return ETHERTYPE_NAMES.get(key_proto, "")


def format_mac(raw: bytes) -> str:
    """aa:bb:cc:dd:ee:ff (per flow or event, never per packet)."""
    return raw.hex(":")


def endpoint_macs(pkt: Packet, flow_src: bytes) -> tuple[str, str]:
    """(MAC of the flow's source, MAC of its destination) from an Ethernet frame of an IP flow
    (``pkt.l2_off >= 0``), whichever way the frame travels."""
    data, off = pkt.data, pkt.l2_off
    dst, src = format_mac(data[off : off + 6]), format_mac(data[off + 6 : off + 12])
    return (src, dst) if pkt.src == flow_src else (dst, src)


def is_group_mac(raw: bytes) -> bool:
    """Multicast or broadcast destination: the I/G bit of the first octet."""
    return bool(raw) and bool(raw[0] & 0x01)
