"""Link, network and transport dissection on bytes.

One ``Dissector.dissect`` call per packet fills a reusable ``Packet`` (no allocation on the common
path) and returns a status telling the pipeline what the packet is. The common case (Ethernet,
optional VLAN tags, IPv4, TCP or UDP) is one straight function with ``struct`` at fixed offsets:
every extra Python call costs 0.1-0.2 us and the budget for the whole pipeline is ~4 us a packet.

Malformed headers are never exceptions: they are counted per kind in ``Dissector.anomalies``
(reported as decoder anomalies) and the packet gets status ``MALFORMED``.
"""

from __future__ import annotations

import ipaddress
from struct import Struct

from agent.linklayer import LLC_KEY, format_mac
from agent.records import (
    LINKTYPE_DLT_RAW_12,
    LINKTYPE_DLT_RAW_14,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)

# Dissection results.
IP = 0  # IPv4/IPv6 with a transport header parsed (TCP, UDP, ICMP) or another IP protocol: flowable
FRAGMENT = 1  # a non-first IPv4/IPv6 fragment: counted, not reassembled, not attributed to a flow
L2 = 2  # not IP and no L2 flow (ARP; non-IP frames on links without an Ethernet header)
MALFORMED = 3  # a header was cut short or inconsistent; ``Dissector.anomalies`` says which
UNSUPPORTED_LINK = 4  # a link type we do not dissect
L2_FLOW = 5  # a non-IP Ethernet frame (not ARP) with the L2 flow fields filled (agent.linklayer)

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_QINQ_OLD = 0x9100  # pre-standard QinQ outer tag still seen on older switches
ETH_IPV6 = 0x86DD

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

# IPv6 extension headers that carry a "next header" and length in the common format.
_IPV6_EXT_GENERIC = frozenset({0, 43, 60, 135, 139, 140})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

_VLAN_TYPES = frozenset({ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD})

_H = Struct("!H")
U16X2 = Struct("!HH")
U16X3 = Struct("!HHH")
IPV4_HEADER = Struct(
    "!BxH2xHxB2x4s4s"
)  # version+IHL, total length, flags+fragment offset, protocol, src, dst
_TCP_HDR = Struct("!HH8xBB")  # sport, dport, (seq, ack), data offset, flags
_TCP_SEQ_ACK_WIN = Struct("!IIxxH")
_NULL_LE = Struct("<I")
_NULL_BE = Struct("!I")

_NO_VLAN: tuple[int, ...] = ()

# BSD loopback address families for IPv6 differ by OS (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})


class Packet:
    """The dissection of one frame; owned by the pipeline and overwritten for every packet.

    Stages must copy what they keep (a flow copies addresses and ports when it is created); a
    reference to the Packet itself is valid only until the next packet is dissected.
    """

    __slots__ = (
        "data",  # the frame bytes
        "dport",  # destination port; ICMP code
        "dst",  # destination address, 4 or 16 raw bytes; the destination MAC of an L2 flow
        "ethertype",  # innermost EtherType (0x0800/0x86DD for IP whatever the link type; < 0x600: 802.3)
        "ip_version",  # 4 or 6; 0 for non-IP
        "l2_off",  # offset of the Ethernet header, -1 when the link has none
        "l3_off",  # offset of the network header (IP, ARP, GOOSE PDU, ...)
        "l4_off",  # offset of the transport header (TCP sequence numbers etc. are read from here)
        "payload_len",  # transport payload bytes present in the frame (excludes Ethernet padding)
        "payload_off",  # offset of the transport payload
        "proto",  # IP protocol of the transport (after IPv6 extension headers); L2 flow: key EtherType
        "sport",  # source port; ICMP type
        "src",  # source address, 4 or 16 raw bytes; the source MAC of an L2 flow
        "tcp_flags",  # TCP flags byte (FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20)
        "vlan",  # VLAN ids, outermost first; () when untagged
    )

    def __init__(self) -> None:
        self.data = b""
        self.dport = 0
        self.dst = b""
        self.ethertype = 0
        self.ip_version = 0
        self.l2_off = -1
        self.l3_off = 0
        self.l4_off = 0
        self.payload_len = 0
        self.payload_off = 0
        self.proto = 0
        self.sport = 0
        self.src = b""
        self.tcp_flags = 0
        self.vlan = _NO_VLAN

    def tcp_header(self) -> tuple[int, int, int]:
        """(sequence, acknowledgement, window) of a TCP packet, read on demand (not per packet)."""
        return _TCP_SEQ_ACK_WIN.unpack_from(self.data, self.l4_off + 4)

    @property
    def payload(self) -> bytes:
        """The transport payload (a copy: use offsets on ``data`` on hot paths)."""
        return self.data[self.payload_off : self.payload_off + self.payload_len]


class Dissector:
    """Stateless apart from its counters; one per pipeline."""

    __slots__ = ("_rare", "anomalies", "last_anomaly", "n_ipv4", "n_ipv6", "n_vlan")

    def __init__(self) -> None:
        # Malformed-header counts by kind, e.g. "ipv4.truncated"; reported as decoder anomalies.
        self.anomalies: dict[str, int] = {}
        self.last_anomaly = ""  # kind of the most recent MALFORMED result, for its anomaly event
        # Common layers are counted in plain integer slots (a dict update per packet costs more).
        self.n_ipv4 = 0
        self.n_ipv6 = 0
        self.n_vlan = 0
        self._rare: dict[str, int] = {}

    @property
    def counts(self) -> dict[str, int]:
        """Packets per layer for the stats event: ipv4, ipv6, vlan, arp, fragments."""
        counts = dict(self._rare)
        for name, value in (("ipv4", self.n_ipv4), ("ipv6", self.n_ipv6), ("vlan", self.n_vlan)):
            if value:
                counts[name] = value
        return counts

    def _anomaly(self, kind: str) -> int:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1
        self.last_anomaly = kind
        return MALFORMED

    def _count(self, layer: str) -> None:
        self._rare[layer] = self._rare.get(layer, 0) + 1

    def dissect(self, pkt: Packet, data: bytes, linktype: int) -> int:
        """Fill ``pkt`` from ``data``; return IP, FRAGMENT, L2, L2_FLOW, MALFORMED or UNSUPPORTED_LINK.

        Numbers are literals on the common path (0x0800 IPv4, 0x8100/0x88A8/0x9100 VLAN, 6 TCP,
        0 for IP): a module-global lookup per packet is measurable.
        """
        pkt.data = data
        n = len(data)
        vlan = _NO_VLAN
        if linktype == 1:  # Ethernet
            if n < 14:
                return self._anomaly("eth.truncated")
            pkt.l2_off = 0
            ethertype = (data[12] << 8) | data[13]
            off = 14
            if ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100:
                if n < 18:
                    return self._anomaly("vlan.truncated")
                tci, ethertype = U16X2.unpack_from(data, 14)
                off = 18
                if ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100:
                    tags = [tci & 0x0FFF]
                    while ethertype in _VLAN_TYPES:  # QinQ and deeper
                        if n < off + 4:
                            return self._anomaly("vlan.truncated")
                        tci, ethertype = U16X2.unpack_from(data, off)
                        tags.append(tci & 0x0FFF)
                        off += 4
                    vlan = tuple(tags)
                else:
                    vlan = (tci & 0x0FFF,)
                self.n_vlan += 1
        elif linktype == LINKTYPE_LINUX_SLL:
            if n < 16:
                return self._anomaly("sll.truncated")
            pkt.l2_off = -1
            ethertype = (data[14] << 8) | data[15]
            off = 16
        elif linktype == LINKTYPE_LINUX_SLL2:
            if n < 20:
                return self._anomaly("sll2.truncated")
            pkt.l2_off = -1
            ethertype = (data[0] << 8) | data[1]
            off = 20
        elif linktype in (
            LINKTYPE_RAW,
            LINKTYPE_DLT_RAW_12,
            LINKTYPE_DLT_RAW_14,
            LINKTYPE_IPV4,
            LINKTYPE_IPV6,
        ):
            if n < 1:
                return self._anomaly("raw.truncated")
            pkt.l2_off = -1
            version = data[0] >> 4
            ethertype = ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0
            off = 0
        elif linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
            if n < 4:
                return self._anomaly("null.truncated")
            pkt.l2_off = -1
            # DLT_NULL stores the family in the capturing host's byte order; it is a small number,
            # so whichever reading is small is the right one. DLT_LOOP is always network order.
            family = _NULL_BE.unpack_from(data)[0]
            if linktype == LINKTYPE_NULL and family > 0xFFFF:
                family = _NULL_LE.unpack_from(data)[0]
            ethertype = ETH_IPV4 if family == _AF_INET else ETH_IPV6 if family in _AF_INET6 else 0
            off = 4
        else:
            return UNSUPPORTED_LINK

        pkt.vlan = vlan
        pkt.ethertype = ethertype
        pkt.l3_off = off

        if ethertype == 0x0800:
            self.n_ipv4 += 1
            if n < off + 20:
                return self._anomaly("ipv4.truncated")
            vihl, total_len, frag, proto, src, dst = IPV4_HEADER.unpack_from(data, off)
            ihl = (vihl & 0x0F) << 2
            if vihl >> 4 != 4 or ihl < 20:
                return self._anomaly("ipv4.bad_header")
            if n < off + ihl:
                return self._anomaly("ipv4.truncated")
            # total_len 0 happens with TCP segmentation offload on the capturing host.
            ip_end = off + total_len if total_len else n
            if total_len and total_len < ihl:
                return self._anomaly("ipv4.bad_length")
            pkt.ip_version = 4
            pkt.src = src
            pkt.dst = dst
            pkt.proto = proto
            if frag & 0x3FFF:
                self._count("ipv4.fragment")
                if frag & 0x1FFF:
                    return FRAGMENT
            off += ihl
        elif ethertype == ETH_IPV6:
            self.n_ipv6 += 1
            if n < off + 40:
                return self._anomaly("ipv6.truncated")
            if data[off] >> 4 != 6:
                return self._anomaly("ipv6.bad_header")
            payload_len = _H.unpack_from(data, off + 4)[0]
            pkt.ip_version = 6
            pkt.src = data[off + 8 : off + 24]
            pkt.dst = data[off + 24 : off + 40]
            ip_end = off + 40 + payload_len if payload_len else n  # 0: jumbogram or TSO
            proto = data[off + 6]
            off += 40
            if proto in _IPV6_EXT_GENERIC or proto == _IPV6_FRAGMENT or proto == _IPV6_AH:
                status, proto, off = self._ipv6_extensions(data, proto, off)
                if status != IP:
                    return status
            pkt.proto = proto
        else:
            pkt.ip_version = 0
            if ethertype == ETH_ARP:
                self._count("arp")
            elif pkt.l2_off >= 0:
                return self._link_flow(pkt, data, ethertype, off, n)
            return L2

        # Transport. ``off`` is the transport header; ``ip_end`` bounds it (excludes padding).
        end = ip_end if ip_end < n else n
        pkt.l4_off = off
        if proto == 6:  # TCP; literals rather than module globals on this path
            if end < off + 20:
                return self._anomaly("tcp.truncated")
            sport, dport, doff, flags = _TCP_HDR.unpack_from(data, off)
            thl = (doff >> 4) << 2
            if thl < 20:
                return self._anomaly("tcp.bad_header_length")
            off += thl
            if off > end:
                return self._anomaly("tcp.truncated")
            pkt.sport = sport
            pkt.dport = dport
            pkt.tcp_flags = flags
            pkt.payload_off = off
            pkt.payload_len = end - off
            return 0  # IP
        if proto == 17:  # UDP
            if end < off + 8:
                return self._anomaly("udp.truncated")
            sport, dport, ulen = U16X3.unpack_from(data, off)
            if ulen < 8:
                # 0 is legal only for IPv6 jumbograms; anything else below the header size is bad.
                if ulen or pkt.ip_version == 4:
                    return self._anomaly("udp.bad_length")
                ulen = end - off
            pkt.sport = sport
            pkt.dport = dport
            pkt.tcp_flags = 0
            pkt.payload_off = off + 8
            pkt.payload_len = min(ulen, end - off) - 8
            return IP
        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            if end < off + 4:
                return self._anomaly("icmp.truncated")
            pkt.sport = data[off]  # type
            pkt.dport = data[off + 1]  # code
            pkt.tcp_flags = 0
            pkt.payload_off = off + 4
            pkt.payload_len = end - off - 4
            return IP
        # Another IP protocol (GRE, ESP, OSPF, SCTP, ...): a flow without ports.
        pkt.sport = 0
        pkt.dport = 0
        pkt.tcp_flags = 0
        pkt.payload_off = off
        pkt.payload_len = end - off if end > off else 0
        return IP

    def _link_flow(self, pkt: Packet, data: bytes, ethertype: int, off: int, n: int) -> int:
        """Fill the L2 flow fields of a non-IP Ethernet frame (see agent.linklayer).

        ``src``/``dst`` become the MACs, ``proto`` the flow key's EtherType (``LLC_KEY | DSAP``
        for 802.3/LLC frames) and the payload the bytes after the EtherType (after the LLC/SNAP
        header for 802.3), so that decoders read it as they read a UDP payload.
        """
        pkt.src = data[6:12]
        pkt.dst = data[0:6]
        pkt.sport = 0
        pkt.dport = 0
        pkt.tcp_flags = 0
        pkt.l4_off = off
        end = n
        if ethertype < 0x0600:
            # 802.3: a length field, then LLC (DSAP, SSAP, control of 1 or 2 octets).
            self._count("llc")
            end = off + ethertype if off + ethertype < n else n
            if end < off + 3:
                return self._anomaly("llc.truncated")
            dsap = data[off]
            control_len = 1 if data[off + 2] & 0x03 == 0x03 else 2
            snap_type = (data[off + 6] << 8) | data[off + 7] if end >= off + 8 else 0
            if dsap == 0xAA and snap_type >= 0x0600 and data[off + 1 : off + 6] == b"\xaa\x03\0\0\0":
                # SNAP with a zero OUI: the protocol id is an EtherType (never an IP protocol number).
                pkt.proto = snap_type
                off += 8
            else:
                pkt.proto = LLC_KEY | dsap
                off += 2 + control_len
        else:
            pkt.proto = ethertype
        pkt.payload_off = off
        pkt.payload_len = end - off if end > off else 0
        return L2_FLOW

    def _ipv6_extensions(self, data: bytes, proto: int, off: int) -> tuple[int, int, int]:
        """Walk IPv6 extension headers; return (status, transport protocol, transport offset)."""
        n = len(data)
        for _ in range(8):  # bound the walk: a crafted chain must not loop for long
            if proto in _IPV6_EXT_GENERIC:
                if n < off + 2:
                    return self._anomaly("ipv6.ext_truncated"), proto, off
                proto, hlen = data[off], (data[off + 1] + 1) << 3
                off += hlen
            elif proto == _IPV6_FRAGMENT:
                if n < off + 8:
                    return self._anomaly("ipv6.ext_truncated"), proto, off
                self._count("ipv6.fragment")
                frag_off = _H.unpack_from(data, off + 2)[0] >> 3
                proto = data[off]
                off += 8
                if frag_off:
                    return FRAGMENT, proto, off
            elif proto == _IPV6_AH:
                if n < off + 2:
                    return self._anomaly("ipv6.ext_truncated"), proto, off
                proto, hlen = data[off], (data[off + 1] + 2) << 2
                off += hlen
            else:
                return IP, proto, off
        return self._anomaly("ipv6.ext_chain_too_long"), proto, off


def format_ip(addr: bytes) -> str:
    """Text form of a raw 4- or 16-byte address (called per flow or event, never per packet)."""
    if len(addr) == 4:
        return f"{addr[0]}.{addr[1]}.{addr[2]}.{addr[3]}"
    if len(addr) == 6:  # the MAC "address" of an L2 flow (agent.linklayer)
        return format_mac(addr)
    return str(ipaddress.IPv6Address(addr))


def parse_arp(data: bytes, off: int) -> tuple[int, bytes, bytes, bytes, bytes] | None:
    """(operation, sender MAC, sender IPv4, target MAC, target IPv4) of an Ethernet/IPv4 ARP packet."""
    if len(data) < off + 28 or data[off : off + 6] != b"\x00\x01\x08\x00\x06\x04":
        return None
    op = (data[off + 6] << 8) | data[off + 7]
    return (
        op,
        data[off + 8 : off + 14],
        data[off + 14 : off + 18],
        data[off + 18 : off + 24],
        data[off + 24 : off + 28],
    )
