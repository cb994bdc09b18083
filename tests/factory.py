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


def tcp_stream(
    segments: Iterable[tuple[bool, bytes]],
    client: str = CLIENT,
    server: str = SERVER,
    sport: int = 40000,
    dport: int = 502,
    handshake: bool = True,
) -> list[Packet]:
    """A TCP connection carrying ``segments``: (from_client, payload) in order, with correct seq/ack."""
    seq = {True: 1000, False: 5000}

    def seg(from_client: bool, flags: str, data: bytes = b"") -> Packet:
        src, dst, sp, dp = (client, server, sport, dport) if from_client else (server, client, dport, sport)
        p = eth() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq[from_client],
                                              ack=seq[not from_client])  # fmt: skip
        return p / Raw(data) if data else p

    pkts: list[Packet] = []
    if handshake:
        pkts.append(seg(True, "S"))
        seq[True] += 1
        pkts.append(seg(False, "SA"))
        seq[False] += 1
        pkts.append(seg(True, "A"))
    for from_client, data in segments:
        pkts.append(seg(from_client, "PA", data))
        seq[from_client] += len(data)
    return pkts


class Collector:
    """A pipeline consumer keeping every application message and finished flow."""

    def __init__(self) -> None:
        self.messages: list = []
        self.flows: list = []

    def on_flow_end(self, flow: object, reason: str) -> None:
        self.flows.append(flow)

    def on_message(self, msg: object) -> None:
        self.messages.append(msg)


def decode(packets: list[Packet], ports: dict[str, tuple[int, ...]] | None = None, step: float = 0.01):
    """Run packets through a full pipeline; return (messages, anomaly events, pipeline)."""
    from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig

    collector = Collector()

    class _AnomalySink:
        name = "anomalies"

        def __init__(self) -> None:
            self.events: list = []

        def emit(self, event: object) -> None:
            if getattr(event, "event_type", "") == "anomaly":
                self.events.append(event)

        def flush(self) -> None:
            return None

        def close(self) -> None:
            return None

    sink = _AnomalySink()
    pipeline = Pipeline(
        PipelineConfig(events=EVENTS_ALL, ports=ports or {}), sinks=[sink], consumers=[collector]
    )
    pipeline.run(ListSource(packets, step=step))
    return collector.messages, sink.events, pipeline
