"""Test traffic built with scapy (never used on the agent's own path)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from agent.records import Frame, SourceInfo

CLIENT = "192.0.2.10"
SERVER = "192.0.2.20"


def eth() -> Packet:
    """An Ethernet header with fixed MACs (a bare Ether() makes scapy ARP for the destination)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def tcp_session(
    client: str = CLIENT,
    server: str = SERVER,
    sport: int = 40000,
    dport: int = 502,
    requests: Iterable[tuple[bytes, bytes]] = (
        (
            b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01",
            b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x2a",
        ),
    ),
    vlan: int | None = None,
    close: bool = True,
) -> list[Packet]:
    """A complete TCP conversation: handshake, request/response pairs, FIN close."""

    def eth() -> Packet:
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        return frame / Dot1Q(vlan=vlan) if vlan else frame

    def c2s(flags: str, seq: int, ack: int, data: bytes = b"") -> Packet:
        p = eth() / IP(src=client, dst=server) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        return p / Raw(data) if data else p

    def s2c(flags: str, seq: int, ack: int, data: bytes = b"") -> Packet:
        p = eth() / IP(src=server, dst=client) / TCP(sport=dport, dport=sport, flags=flags, seq=seq, ack=ack)
        return p / Raw(data) if data else p

    cseq, sseq = 1000, 5000
    pkts = [c2s("S", cseq, 0), s2c("SA", sseq, cseq + 1), c2s("A", cseq + 1, sseq + 1)]
    cseq += 1
    sseq += 1
    for req, resp in requests:
        pkts.append(c2s("PA", cseq, sseq, req))
        cseq += len(req)
        pkts.append(s2c("PA", sseq, cseq, resp))
        sseq += len(resp)
    if close:
        pkts += [c2s("FA", cseq, sseq), s2c("FA", sseq, cseq + 1), c2s("A", cseq + 1, sseq + 1)]
    return pkts


def udp(
    src: str = CLIENT, dst: str = SERVER, sport: int = 40000, dport: int = 20000, data: bytes = b"x"
) -> Packet:
    return eth() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(data)


def udp6(src: str = "2001:db8::1", dst: str = "2001:db8::2", sport: int = 40000, dport: int = 53) -> Packet:
    return eth() / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"q")


def icmp_echo(src: str = CLIENT, dst: str = SERVER, reply: bool = False) -> Packet:
    return eth() / IP(src=dst if reply else src, dst=src if reply else dst) / ICMP(type=0 if reply else 8)


def write(path: Path, packets: list[Packet], start: float = 1_700_000_000.0, step: float = 0.01) -> Path:
    """Write ``packets`` to a classic pcap with evenly spaced timestamps."""
    for i, p in enumerate(packets):
        p.time = start + i * step
    wrpcap(str(path), packets)
    return path


class ListSource:
    """A pipeline source over in-memory scapy packets (Ethernet), for unit tests."""

    def __init__(self, packets: list[Packet], start: float = 1_700_000_000.0, step: float = 0.01,
                 times: list[float] | None = None) -> None:  # fmt: skip
        self.packets = packets
        self.times = times or [start + i * step for i in range(len(packets))]
        self.sources = [SourceInfo("test.pcap", "pcap")]
        self.problems: list[object] = []

    def __iter__(self) -> Iterator[Frame]:
        for i, (p, ts) in enumerate(zip(self.packets, self.times, strict=True)):
            data = bytes(p)
            yield (ts, data, len(data), 0, 1, i + 1, 0)
