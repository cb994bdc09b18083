"""Realistic, deterministic plant traffic for the benchmark and the README demo.

``python -m bench.gen_plant --packets N --out FILE [--seed S]`` writes a classic pcap (microsecond
timestamps, Ethernet link type) with exactly N packets, byte-identical for a given seed, plus a sidecar
``FILE.meta.json`` describing what is in it (packet count, mix, span).  ``--demo`` selects the small
profile used for ``pcaps/demo.pcap``.

How it is fast: scapy builds one header template per message *shape* (Ethernet, 802.1Q, 802.1ad QinQ;
IPv4/IPv6; TCP/TCP-SYN/UDP).  Each flow direction patches addresses, ports, MACs and VLAN ids into a copy
of its shape once; per packet only the varying fields (IP length and id, TCP seq/ack/flags/window) are
packed with ``struct`` and the IPv4 and TCP/UDP checksums are recomputed with one big-integer reduction
(the ones'-complement sum of 16-bit words is the value modulo 0xFFFF).  The application layers
(Modbus/TCP, DNP3 with its CRC-16/DNP blocks, SMB2, HTTP, DNS, NTP, syslog) are assembled with
``struct`` as well.

The plant (all addresses are private and only ever written to a file):

* control zone VLAN 10, PLCs 10.10.10.11..; supervisory VLAN 20 (HMIs 10.10.20.21.., DNS 10.10.20.2,
  NTP 10.10.20.3, SCADA front end 10.10.20.60); field VLAN 40 (DNP3 RTUs 10.10.40.11..); remote
  RTUs 10.10.41.x behind a carrier QinQ service (S-tag 300, C-tag 40); management VLAN 99 on IPv6
  (switches fd00:99::11.. send syslog to fd00:99::10).
* The sensor sees the OT VLANs on an rx SPAN of the core trunk with tags kept: a flow between VLANs shows
  on one VLAN, with the router's MAC for the far end.  The backup link (historian 10.10.10.50 to the
  backup server 10.10.30.10, SMB2) and the DMZ link (IT clients 10.20.1.x to the historian web server
  10.10.50.10, HTTP) come from untagged taps.  Short frames are padded to 60 bytes as a SPAN port does.
* Modbus/TCP: every HMI polls every PLC on one long connection (handshake first, FIN at the end), two
  function-3 reads per 100 ms cycle, an occasional function-16 write, rare exception responses.
* DNP3/TCP 20000: the front end polls each RTU for class 1/2/3 events and does a periodic class 0
  integrity poll; event responses ask for confirmation and get it.
* SMB2 on TCP 445: NEGOTIATE, SESSION_SETUP, TREE_CONNECT, then per backup file CREATE, 64 KiB WRITEs
  (each a NetBIOS header, an SMB2 header and a WRITE request, then the data in 1460-byte segments),
  CLOSE; bursts at 300-600 Mbit/s with stretch ACKs every 8 segments from the receiver.
* Background: short HTTP/1.1 connections, DNS A/AAAA queries (one flow per query), NTP, ARP, IPv6 syslog.

Exact packet count: every source reserves its packets from a shared budget before it emits them (a
whole Modbus cycle, a whole SMB WRITE with its ACKs, a whole HTTP connection), and reserves the teardown
of a long connection when it opens it.  When a unit no longer fits, the source closes its connection and
stops; single-packet syslog messages fill the last few slots, so the file ends with clean FIN exchanges
and exactly N packets.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2
EPOCH_US = 1_709_532_000 * 1_000_000  # 2024-03-04 06:00:00 UTC, so the files never depend on "now"
SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
MSS = 1460
MIN_FRAME = 60  # minimum Ethernet frame without FCS; shorter frames are padded as a SPAN port shows them

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PA = PSH | ACK
FA = FIN | ACK
M32 = 0xFFFFFFFF

# A source yields (timestamp in µs from the start of the capture, frame).  A frame of None is a wake-up:
# the source asks to be resumed at that time (so it decides about its budget at the right moment) and
# nothing is written.
Pkt = tuple[int, "bytes | bytearray | None"]
Source = Iterator[Pkt]
Timed = Generator[Pkt, None, int]  # a sub-generator that returns the time it reached
Buf = bytes | bytearray | memoryview

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_TCPF = struct.Struct("!IIBBH")
_REC = struct.Struct("<IIII")

# --------------------------------------------------------------------------------------------- CRCs


def _dnp_crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA6BC if c & 1 else c >> 1  # 0xA6BC is 0x3D65 bit-reversed
        table.append(c)
    return tuple(table)


_DNP_TABLE = _dnp_crc_table()


def crc16_dnp(data: bytes | bytearray) -> int:
    """CRC-16/DNP (poly 0x3D65 reflected, init 0, final xor 0xFFFF); check value 0xEA82 for b"123456789"."""
    crc = 0
    table = _DNP_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return ~crc & 0xFFFF


def ones_sum(data: bytes | bytearray) -> int:
    """Ones'-complement sum of big-endian 16-bit words, reduced modulo 0xFFFF (0 stands for 0xFFFF)."""
    x = int.from_bytes(data, "big")
    if len(data) & 1:
        x <<= 8
    return x % 0xFFFF


# ------------------------------------------------------------------------------ templates and flows


@dataclass(frozen=True)
class Seg:
    """Where a flow is seen: VLAN id and encapsulation ("eth" untagged, "vlan" 802.1Q, "qinq")."""

    vid: int
    mode: str = "vlan"
    outer: int = 0


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    mac: bytes
    vid: int
    ttl: int = 64


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


ROUTER_MAC = _mac("00:1e:bd:4a:00:01")
BROADCAST = b"\xff" * 6

_SHAPES: dict[tuple[str, bool, str], tuple[bytes, int, int]] = {}


def shape_template(mode: str, v6: bool, kind: str) -> tuple[bytes, int, int]:
    """Header bytes (Ethernet through TCP/UDP) of one message shape built with scapy, and L3/L4 offsets."""
    key = (mode, v6, kind)
    hit = _SHAPES.get(key)
    if hit is not None:
        return hit
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if mode == "vlan":
        pkt = pkt / Dot1Q(vlan=1)
    elif mode == "qinq":
        pkt = pkt / Dot1AD(vlan=1) / Dot1Q(vlan=1)
    elif mode != "eth":
        raise ValueError(f"unknown L2 mode {mode!r}")
    pkt = pkt / (
        IPv6(src="fd00::1", dst="fd00::2", hlim=64) if v6 else IP(src="10.0.0.1", dst="10.0.0.2", flags="DF")
    )
    if kind == "tcp":
        pkt = pkt / TCP(sport=1, dport=2, flags="A", window=1024)
    elif kind == "syn":
        opts = [("MSS", MSS), ("NOP", None), ("WScale", 8), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
        pkt = pkt / TCP(sport=1, dport=2, flags="S", window=64240, options=opts)
    elif kind == "udp":
        pkt = pkt / UDP(sport=1, dport=2)
    else:
        raise ValueError(f"unknown L4 kind {kind!r}")
    raw = bytes(pkt)
    l3 = 14 + 4 * {"eth": 0, "vlan": 1, "qinq": 2}[mode]
    l4 = l3 + (40 if v6 else 20)
    expect = {"tcp": 20, "syn": 32, "udp": 8}[kind]
    if len(raw) != l4 + expect:  # pragma: no cover - guards against a scapy layout change
        raise RuntimeError(f"unexpected template length {len(raw)} for {key}")
    _SHAPES[key] = (raw, l3, l4)
    return _SHAPES[key]


class Dir:
    """One direction of a flow: a patched header template and per-packet frame builders."""

    __slots__ = ("hdr", "ipid", "ipsum", "l3", "l4", "pseudo", "syn_hdr", "v6")

    def __init__(
        self,
        seg: Seg,
        smac: bytes,
        dmac: bytes,
        sip: str,
        dip: str,
        sport: int,
        dport: int,
        ttl: int,
        proto: str,
        ipid: int = 0,
    ) -> None:
        self.v6 = ":" in sip
        kinds = ("tcp", "syn") if proto == "tcp" else ("udp",)
        hdrs = [self._patch(seg, smac, dmac, sip, dip, sport, dport, ttl, kind) for kind in kinds]
        self.hdr = hdrs[0]
        self.syn_hdr = hdrs[-1]
        _, self.l3, self.l4 = shape_template(seg.mode, self.v6, kinds[0])
        fam = socket.AF_INET6 if self.v6 else socket.AF_INET
        addrs = socket.inet_pton(fam, sip) + socket.inet_pton(fam, dip)
        self.pseudo = ones_sum(addrs) + (6 if proto == "tcp" else 17)
        self.ipsum = 0 if self.v6 else ones_sum(self.hdr[self.l3 : self.l3 + 20])
        self.ipid = ipid & 0xFFFF

    def _patch(
        self,
        seg: Seg,
        smac: bytes,
        dmac: bytes,
        sip: str,
        dip: str,
        sport: int,
        dport: int,
        ttl: int,
        kind: str,
    ) -> bytes:
        raw, l3, l4 = shape_template(seg.mode, self.v6, kind)
        b = bytearray(raw)
        b[0:6] = dmac
        b[6:12] = smac
        if seg.mode == "vlan":
            _H.pack_into(b, 14, seg.vid)
        elif seg.mode == "qinq":
            _H.pack_into(b, 14, seg.outer)
            _H.pack_into(b, 18, seg.vid)
        if self.v6:
            _H.pack_into(b, l3 + 4, 0)
            b[l3 + 7] = ttl
            b[l3 + 8 : l3 + 24] = socket.inet_pton(socket.AF_INET6, sip)
            b[l3 + 24 : l3 + 40] = socket.inet_pton(socket.AF_INET6, dip)
        else:
            b[l3 + 2 : l3 + 6] = bytes(4)  # total length and id: set per packet
            b[l3 + 8] = ttl
            b[l3 + 10 : l3 + 12] = bytes(2)
            b[l3 + 12 : l3 + 16] = socket.inet_aton(sip)
            b[l3 + 16 : l3 + 20] = socket.inet_aton(dip)
        _HH.pack_into(b, l4, sport, dport)
        if kind == "udp":
            b[l4 + 4 : l4 + 8] = bytes(4)
        else:
            b[l4 + 16 : l4 + 18] = bytes(2)
        return bytes(b)

    def _ip(self, f: bytearray, l4len: int) -> None:
        l3 = self.l3
        if self.v6:
            _H.pack_into(f, l3 + 4, l4len)
            return
        ipid = self.ipid = (self.ipid + 1) & 0xFFFF
        tl = l4len + 20
        s = (self.ipsum + tl + ipid) % 0xFFFF
        _HH.pack_into(f, l3 + 2, tl, ipid)
        _H.pack_into(f, l3 + 10, 0xFFFF - s if s else 0)

    def tcp(
        self, seq: int, ack: int, flags: int, win: int, payload: Buf = b"", syn: bool = False
    ) -> bytearray:
        f = bytearray(self.syn_hdr if syn else self.hdr)
        if payload:
            f += payload
        l4 = self.l4
        n = len(f) - l4
        self._ip(f, n)
        _TCPF.pack_into(f, l4 + 4, seq, ack, f[l4 + 12], flags, win)
        x = int.from_bytes(f[l4:], "big")
        if n & 1:
            x <<= 8
        s = (self.pseudo + n + x) % 0xFFFF
        _H.pack_into(f, l4 + 16, 0xFFFF - s if s else 0)
        if len(f) < MIN_FRAME:
            f += bytes(MIN_FRAME - len(f))
        return f

    def udp(self, payload: Buf) -> bytearray:
        f = bytearray(self.hdr)
        f += payload
        l4 = self.l4
        n = len(f) - l4
        self._ip(f, n)
        _H.pack_into(f, l4 + 4, n)
        x = int.from_bytes(f[l4:], "big")
        if n & 1:
            x <<= 8
        s = (self.pseudo + n + x) % 0xFFFF
        _H.pack_into(f, l4 + 6, 0xFFFF - s if s else 0xFFFF)
        if len(f) < MIN_FRAME:
            f += bytes(MIN_FRAME - len(f))
        return f


def mac_on(host: Host, seg: Seg) -> bytes:
    return host.mac if host.vid == seg.vid else ROUTER_MAC


def ttl_on(host: Host, seg: Seg) -> int:
    return host.ttl if host.vid == seg.vid else host.ttl - 1


def dirs(
    seg: Seg, a: Host, b: Host, aport: int, bport: int, proto: str, rng: random.Random
) -> tuple[Dir, Dir]:
    """Both directions of a flow between a and b as seen on segment seg."""
    amac, bmac = mac_on(a, seg), mac_on(b, seg)
    ab = Dir(seg, amac, bmac, a.ip, b.ip, aport, bport, ttl_on(a, seg), proto, rng.getrandbits(16))
    ba = Dir(seg, bmac, amac, b.ip, a.ip, bport, aport, ttl_on(b, seg), proto, rng.getrandbits(16))
    return ab, ba


class Tcp:
    """Sequence/ack bookkeeping of one TCP connection for request/response traffic."""

    __slots__ = ("c", "cseq", "cwin", "s", "sseq", "swin")

    def __init__(self, c: Dir, s: Dir, rng: random.Random, cwin: int = 0x0201, swin: int = 0x0100) -> None:
        self.c, self.s = c, s
        self.cseq = rng.getrandbits(32)
        self.sseq = rng.getrandbits(32)
        self.cwin, self.swin = cwin, swin

    def handshake(self, t: int, d1: int, d2: int) -> list[Pkt]:
        c, s = self.c, self.s
        out: list[Pkt] = [(t, c.tcp(self.cseq, 0, SYN, 64240, syn=True))]
        self.cseq = (self.cseq + 1) & M32
        out.append((t + d1, s.tcp(self.sseq, self.cseq, SYN | ACK, 65535, syn=True)))
        self.sseq = (self.sseq + 1) & M32
        out.append((t + d1 + d2, c.tcp(self.cseq, self.sseq, ACK, self.cwin)))
        return out

    def cs(self, t: int, payload: Buf = b"", flags: int = PA) -> Pkt:
        frame = self.c.tcp(self.cseq, self.sseq, flags, self.cwin, payload)
        self.cseq = (self.cseq + len(payload) + (flags & FIN)) & M32
        return (t, frame)

    def sc(self, t: int, payload: Buf = b"", flags: int = PA) -> Pkt:
        frame = self.s.tcp(self.sseq, self.cseq, flags, self.swin, payload)
        self.sseq = (self.sseq + len(payload) + (flags & FIN)) & M32
        return (t, frame)

    def close(self, t: int, d1: int, d2: int, client_first: bool = True) -> list[Pkt]:
        """FIN/ACK, FIN/ACK, ACK: three packets."""
        if client_first:
            return [self.cs(t, b"", FA), self.sc(t + d1, b"", FA), self.cs(t + d1 + d2, b"", ACK)]
        return [self.sc(t, b"", FA), self.cs(t + d1, b"", FA), self.sc(t + d1 + d2, b"", ACK)]


class Ctx:
    """The packet budget shared by all sources, and a few counters for the metadata."""

    __slots__ = ("bulk_full_segments", "committed", "flows", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.committed = 0  # packets written or promised
        self.flows = 0
        self.bulk_full_segments = 0

    def take(self, k: int) -> bool:
        if self.committed + k > self.limit:
            return False
        self.committed += k
        return True

    @property
    def exhausted(self) -> bool:
        return self.committed >= self.limit


def _sleep(ctx: Ctx, t: int, until: int, step: int = 200_000) -> Timed:
    """Wake up every `step` µs until `until`, or until the budget is spent; returns the time reached."""
    while t < until:
        t = min(until, t + step)
        yield (t, None)
        if ctx.exhausted:
            break
    return t


# ------------------------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profile:
    name: str
    default_packets: int
    hmis: int
    plcs: int
    poll_ms: int
    write_prob: float  # per cycle and pair: the second request is a function-16 write
    dnp3_local: int
    dnp3_remote: int
    dnp3_poll_ms: int
    dnp3_integrity_every: int  # cycles
    bulk_start_s: float
    bulk_file_mib: tuple[int, int]
    bulk_pause_s: tuple[float, float]
    bulk_mbit: tuple[int, int]
    bulk_max_files: int  # 0: unlimited
    http_clients: int
    http_interval_s: float  # mean time between connections of one client
    dns_per_s: float
    ntp_interval_s: float
    arp_interval_s: float  # per VLAN
    syslog_per_s: float


PROFILES = {
    # ~10,300 packets/s: 1M packets (seed 1) span ~97 s, 58.5% full 1460-byte SMB2 segments, 31% tagged,
    # ~950 B average frame, ~3,250 flows.
    "bench": Profile(
        name="bench",
        default_packets=1_000_000,
        hmis=5,
        plcs=12,
        poll_ms=100,
        write_prob=0.01,
        dnp3_local=10,
        dnp3_remote=2,
        dnp3_poll_ms=250,
        dnp3_integrity_every=40,
        bulk_start_s=1.0,
        bulk_file_mib=(32, 96),
        bulk_pause_s=(4.5, 8.0),
        bulk_mbit=(300, 600),
        bulk_max_files=0,
        http_clients=8,
        http_interval_s=0.6,
        dns_per_s=20.0,
        ntp_interval_s=32.0,
        arp_interval_s=0.5,
        syslog_per_s=3.0,
    ),
    # README demo: ~15 s of a small cell, one 1 MiB backup file, < 2 MB on disk.
    "demo": Profile(
        name="demo",
        default_packets=6000,
        hmis=2,
        plcs=4,
        poll_ms=100,
        write_prob=0.02,
        dnp3_local=3,
        dnp3_remote=1,
        dnp3_poll_ms=500,
        dnp3_integrity_every=20,
        bulk_start_s=4.0,
        bulk_file_mib=(1, 1),
        bulk_pause_s=(30.0, 30.0),
        bulk_mbit=(400, 500),
        bulk_max_files=1,
        http_clients=2,
        http_interval_s=2.0,
        dns_per_s=2.0,
        ntp_interval_s=16.0,
        arp_interval_s=1.0,
        syslog_per_s=1.0,
    ),
}


# ------------------------------------------------------------------------------------------- the plant

SEG_CONTROL = Seg(10)
SEG_SUPERVISORY = Seg(20)
SEG_BACKUP = Seg(30, "eth")
SEG_FIELD = Seg(40)
SEG_REMOTE = Seg(40, "qinq", 300)
SEG_DMZ = Seg(50, "eth")
SEG_MGMT = Seg(99)


@dataclass(frozen=True)
class Plant:
    plcs: list[Host]
    hmis: list[Host]
    workstations: list[Host]
    fep: Host
    rtus: list[Host]
    remote_rtus: list[Host]
    dns: Host
    ntp: Host
    historian: Host
    backup: Host
    web: Host
    it_clients: list[Host]
    switches: list[Host]
    syslog: Host


def build_plant(p: Profile) -> Plant:
    plc_oui = ["00:1b:1b", "00:00:bc", "00:80:f4"]  # Siemens, Rockwell, Schneider
    plcs = [
        Host(f"plc{i + 1:02d}", f"10.10.10.{11 + i}", _mac(f"{plc_oui[i % 3]}:10:0a:{11 + i:02x}"), 10, 64)
        for i in range(p.plcs)
    ]
    hmis = [
        Host(f"hmi{i + 1:02d}", f"10.10.20.{21 + i}", _mac(f"00:14:22:20:14:{21 + i:02x}"), 20, 128)
        for i in range(p.hmis)
    ]
    workstations = [
        Host(f"ews{i + 1:02d}", f"10.10.20.{101 + i}", _mac(f"00:14:22:20:65:{101 + i:02x}"), 20, 128)
        for i in range(4)
    ]
    fep = Host("scada-fep", "10.10.20.60", _mac("00:14:22:20:3c:3c"), 20, 64)
    rtus = [
        Host(f"rtu{i + 1:02d}", f"10.10.40.{11 + i}", _mac(f"00:50:c2:40:0b:{11 + i:02x}"), 40, 64)
        for i in range(p.dnp3_local)
    ]
    remote = [
        Host(f"rtu-r{i + 1:02d}", f"10.10.41.{11 + i}", _mac(f"00:50:c2:41:0b:{11 + i:02x}"), 40, 64)
        for i in range(p.dnp3_remote)
    ]
    return Plant(
        plcs=plcs,
        hmis=hmis,
        workstations=workstations,
        fep=fep,
        rtus=rtus,
        remote_rtus=remote,
        dns=Host("dns01", "10.10.20.2", _mac("00:14:22:20:02:02"), 20, 128),
        ntp=Host("ntp01", "10.10.20.3", _mac("00:14:22:20:03:03"), 20, 64),
        historian=Host("historian", "10.10.10.50", _mac("00:14:22:10:32:32"), 10, 128),
        backup=Host("backup01", "10.10.30.10", _mac("00:14:22:30:0a:0a"), 30, 64),
        web=Host("hist-web", "10.10.50.10", _mac("00:14:22:50:0a:0a"), 50, 64),
        it_clients=[
            Host(f"it{i + 1:02d}", f"10.20.1.{31 + i}", ROUTER_MAC, 0, 128) for i in range(p.http_clients)
        ],
        switches=[
            Host(f"sw{i + 1:02d}", f"fd00:99::{11 + i:x}", _mac(f"00:1e:bd:99:00:{11 + i:02x}"), 99, 64)
            for i in range(6)
        ],
        syslog=Host("syslog", "fd00:99::10", _mac("00:14:22:99:00:10"), 99, 64),
    )


# ------------------------------------------------------------------------------------- Modbus/TCP


def mb_read_req(tid: int, unit: int, addr: int, qty: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, addr, qty)


def mb_read_resp(tid: int, unit: int, values: bytes) -> bytes:
    return struct.pack(">HHHBBB", tid, 0, 3 + len(values), unit, 3, len(values)) + values


def mb_write_req(tid: int, unit: int, addr: int, values: bytes) -> bytes:
    n = len(values)
    return struct.pack(">HHHBBHHB", tid, 0, 7 + n, unit, 16, addr, n // 2, n) + values


def mb_write_resp(tid: int, unit: int, addr: int, qty: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 16, addr, qty)


def mb_exception(tid: int, unit: int, fc: int, code: int) -> bytes:
    return struct.pack(">HHHBBB", tid, 0, 3, unit, fc | 0x80, code)


def _register_variants(rng: random.Random, qty: int, n: int = 6) -> list[bytes]:
    base = [rng.randrange(0, 4000) for _ in range(qty)]
    out = []
    for _ in range(n):
        vals = [(v + rng.randrange(-3, 4)) & 0xFFFF if rng.random() < 0.4 else v for v in base]
        out.append(struct.pack(f">{qty}H", *vals))
    return out


def modbus_pair(
    ctx: Ctx, rng: random.Random, p: Profile, hmi: Host, plc: Host, unit: int, start: int
) -> Source:
    yield (start, None)
    if not ctx.take(6):  # handshake + teardown
        return
    ctx.flows += 1
    c, s = dirs(SEG_CONTROL, hmi, plc, rng.randrange(49152, 65000), 502, "tcp", rng)
    conn = Tcp(c, s, rng, cwin=0x0201, swin=0x0010)  # small PLC window: 4 KiB (scale 8)
    hs = conn.handshake(start, rng.randint(300, 900), rng.randint(150, 400))
    yield from hs
    qtys = (10, 16, 20, 32, 40, 50, 64, 100, 125)
    blocks = []
    for _ in range(2):
        qty = rng.choice(qtys)
        blocks.append((rng.randrange(0, 40) * 100, qty, _register_variants(rng, qty)))
    write_addr = rng.randrange(0, 40) * 100 + 1000
    tid = rng.randrange(1, 0x4000)
    period = p.poll_ms * 1000
    t = hs[-1][0] + rng.randrange(period)
    while True:
        yield (t, None)
        if not ctx.take(5):
            break
        # request 1 / response 1
        addr, qty, variants = blocks[0]
        out = [conn.cs(t, mb_read_req(tid, unit, addr, qty))]
        t1 = t + rng.randint(1500, 6000)
        if rng.random() < 0.0005:
            out.append(conn.sc(t1, mb_exception(tid, unit, 3, 2)))
        else:
            out.append(conn.sc(t1, mb_read_resp(tid, unit, variants[rng.randrange(len(variants))])))
        tid = (tid + 1) & 0xFFFF
        # request 2 / response 2: usually the second read, sometimes a setpoint write
        t2 = t1 + rng.randint(150, 600)
        t3 = t2 + rng.randint(1500, 6000)
        if rng.random() < p.write_prob:
            nreg = rng.randint(1, 4)
            vals = struct.pack(f">{nreg}H", *(rng.randrange(0, 1000) for _ in range(nreg)))
            out.append(conn.cs(t2, mb_write_req(tid, unit, write_addr, vals)))
            out.append(conn.sc(t3, mb_write_resp(tid, unit, write_addr, nreg)))
        else:
            addr, qty, variants = blocks[1]
            out.append(conn.cs(t2, mb_read_req(tid, unit, addr, qty)))
            out.append(conn.sc(t3, mb_read_resp(tid, unit, variants[rng.randrange(len(variants))])))
        tid = (tid + 1) & 0xFFFF
        out.append(conn.cs(t3 + rng.randint(35000, 42000), b"", ACK))  # delayed ACK
        yield from out
        t += period + rng.randint(-800, 800)
    yield from conn.close(t, rng.randint(300, 900), rng.randint(150, 400))


# ------------------------------------------------------------------------------------------- DNP3

DNP3_CLASS123 = bytes.fromhex("3c0206 3c0306 3c0406")
DNP3_CLASS0 = bytes.fromhex("3c0106")


def dnp3_link(ctrl: int, dst: int, src: int, tpdu: bytes) -> bytes:
    """A DNP3 link frame: 0x0564 header with CRC, then the user data in 16-byte blocks each with its CRC."""
    if len(tpdu) > 250:
        raise ValueError("DNP3 link user data is at most 250 bytes")
    hdr = struct.pack("<BBBBHH", 0x05, 0x64, 5 + len(tpdu), ctrl, dst, src)
    parts = [hdr, struct.pack("<H", crc16_dnp(hdr))]
    for i in range(0, len(tpdu), 16):
        blk = tpdu[i : i + 16]
        parts.append(blk)
        parts.append(struct.pack("<H", crc16_dnp(blk)))
    return b"".join(parts)


def _dnp3_time(t_us: int) -> bytes:
    return ((EPOCH_US + t_us) // 1000).to_bytes(6, "little")


def dnp3_outstation(
    ctx: Ctx, rng: random.Random, p: Profile, master: Host, rtu: Host, seg: Seg, addr: int, start: int
) -> Source:
    yield (start, None)
    if not ctx.take(6):
        return
    ctx.flows += 1
    c, s = dirs(seg, master, rtu, rng.randrange(49152, 65000), 20000, "tcp", rng)
    conn = Tcp(c, s, rng, cwin=0x0100, swin=0x0008)
    hs = conn.handshake(start, rng.randint(800, 4000), rng.randint(200, 600))
    yield from hs
    master_addr = 1
    app_seq = rng.randrange(16)
    tseq_m = rng.randrange(64)
    tseq_o = rng.randrange(64)
    n_bi, n_ai = 16, 12
    bi_state = [rng.random() < 0.5 for _ in range(n_bi)]
    ai = [rng.randrange(-20000, 200000) for _ in range(n_ai)]
    period = p.dnp3_poll_ms * 1000
    t = hs[-1][0] + rng.randrange(period)
    cycle = 0
    while True:
        yield (t, None)
        integrity = cycle % p.dnp3_integrity_every == 0
        events = not integrity and rng.random() < 0.25
        if not ctx.take(4 if events else 3):
            break
        req_app = bytes([0xC0 | app_seq, 0x01]) + DNP3_CLASS123 + (DNP3_CLASS0 if integrity else b"")
        out = [conn.cs(t, dnp3_link(0xC4, addr, master_addr, bytes([0xC0 | tseq_m]) + req_app))]
        tseq_m = (tseq_m + 1) & 0x3F
        t1 = t + rng.randint(4000, 25000)
        if integrity:
            objs = bytearray(b"\x01\x02\x00\x00") + bytes([n_bi - 1])
            objs += bytes(0x81 if v else 0x01 for v in bi_state)
            objs += b"\x1e\x01\x00\x00" + bytes([n_ai - 1])
            for v in ai:
                objs += struct.pack("<Bi", 0x01, v)
            resp = bytes([0xC0 | app_seq, 0x81, 0x00, 0x00]) + objs
        elif events:
            objs = bytearray()
            nb = rng.randint(1, 3)
            objs += bytes([0x02, 0x02, 0x17, nb])
            for _ in range(nb):
                i = rng.randrange(n_bi)
                bi_state[i] = not bi_state[i]
                objs += bytes([i, 0x81 if bi_state[i] else 0x01]) + _dnp3_time(t1 - rng.randint(1000, 200000))
            na = rng.randint(1, 4)
            objs += bytes([0x20, 0x01, 0x17, na])
            for _ in range(na):
                i = rng.randrange(n_ai)
                ai[i] += rng.randint(-500, 500)
                objs += struct.pack("<BBi", i, 0x01, ai[i])
            resp = bytes([0xE0 | app_seq, 0x81, 0x02, 0x00]) + objs  # CON set; IIN1: class 1 events
        else:
            resp = bytes([0xC0 | app_seq, 0x81, 0x00, 0x00])
        out.append(conn.sc(t1, dnp3_link(0x44, master_addr, addr, bytes([0xC0 | tseq_o]) + resp)))
        tseq_o = (tseq_o + 1) & 0x3F
        if events:
            t2 = t1 + rng.randint(300, 1500)
            confirm = bytes([0xC0 | tseq_m, 0xC0 | app_seq, 0x00])
            out.append(conn.cs(t2, dnp3_link(0xC4, addr, master_addr, confirm)))
            tseq_m = (tseq_m + 1) & 0x3F
            out.append(conn.sc(t2 + rng.randint(500, 3000), b"", ACK))
        else:
            out.append(conn.cs(t1 + rng.randint(35000, 42000), b"", ACK))
        yield from out
        app_seq = (app_seq + 1) & 0x0F
        cycle += 1
        t += period + rng.randint(-2000, 2000)
    yield from conn.close(t, rng.randint(800, 4000), rng.randint(200, 600))


# ------------------------------------------------------------------------------------------- SMB2

SMB2_NEGOTIATE, SMB2_SESSION_SETUP, SMB2_TREE_CONNECT, SMB2_CREATE, SMB2_CLOSE, SMB2_WRITE = 0, 1, 3, 5, 6, 9
SMB2_WRITE_HDR = 4 + 64 + 48  # NetBIOS + SMB2 header + WRITE request fixed part
WRITE_SIZE = 65536
_FILETIME_EPOCH = 116444736000000000  # 1601 -> 1970 in 100 ns


def _filetime(t_us: int) -> int:
    return _FILETIME_EPOCH + (EPOCH_US + t_us) * 10


_SMB2_HDR = struct.Struct("<4sHHIHHIIQIIQ16s")


def smb2(
    cmd: int,
    msg_id: int,
    body: bytes | bytearray,
    resp: bool = False,
    tree: int = 0,
    session: int = 0,
    *,
    credits: int = 1,
    charge: int = 1,
) -> bytes:
    """NetBIOS session header + 64-byte SMB2 sync header (status 0, no signature) + body."""
    flags, pid = (1, 0) if resp else (0, 0xFEFF)
    hdr = _SMB2_HDR.pack(
        b"\xfeSMB", 64, charge, 0, cmd, credits, flags, 0, msg_id, pid, tree, session, bytes(16)
    )
    n = len(hdr) + len(body)
    return struct.pack(">I", n) + hdr + body


def smb_bulk(ctx: Ctx, rng: random.Random, p: Profile, plant: Plant, start: int) -> Source:
    yield (start, None)
    if not ctx.take(6):
        return
    ctx.flows += 1
    c, s = dirs(SEG_BACKUP, plant.historian, plant.backup, rng.randrange(49152, 65000), 445, "tcp", rng)
    cwin, swin = 0x0402, 0x2000  # scaled by 256: 262 KB and 2 MB
    conn = Tcp(c, s, rng, cwin=cwin, swin=swin)
    hs = conn.handshake(start, rng.randint(60, 120), rng.randint(80, 200))
    yield from hs
    t = hs[-1][0] + rng.randint(50, 200)
    session = rng.getrandbits(64) | 1
    tree = rng.randrange(1, 16)
    if ctx.take(6):
        guid_c, guid_s = rng.randbytes(16), rng.randbytes(16)
        # NEGOTIATE offering SMB 2.0.2 and 2.1; the server picks 2.1 (large MTU: 64 KiB writes cost 1 credit)
        neg = struct.pack("<HHHHI16sQHH", 36, 2, 1, 0, 0x7, guid_c, 0, 0x0202, 0x0210)
        max_io = 8 << 20
        neg_resp = struct.pack("<HHHH16s", 65, 1, 0x0210, 0, guid_s)
        neg_resp += struct.pack("<IIIIQQHHI", 0x7, max_io, max_io, max_io, _filetime(t), 0, 0x80, 0, 0)
        share = "\\\\backup01\\plant$".encode("utf-16-le")
        tree_req = struct.pack("<HHHH", 9, 0, 0x48, len(share)) + share
        setup_resp = struct.pack("<HHHH", 9, 0, 0x48, 0)
        tree_resp = struct.pack("<HBBIII", 16, 1, 0, 0, 0, 0x001F01FF)
        steps = [
            (smb2(SMB2_NEGOTIATE, 0, neg, charge=0), smb2(SMB2_NEGOTIATE, 0, neg_resp, resp=True, charge=0)),
            (
                smb2(SMB2_SESSION_SETUP, 1, struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 0x58, 0, 0)),
                smb2(SMB2_SESSION_SETUP, 1, setup_resp, resp=True, session=session, credits=32),
            ),
            (
                smb2(SMB2_TREE_CONNECT, 2, tree_req, session=session),
                smb2(SMB2_TREE_CONNECT, 2, tree_resp, resp=True, tree=tree, session=session, credits=64),
            ),
        ]
        for req, rsp in steps:
            yield conn.cs(t, req)
            t += rng.randint(150, 900)
            yield conn.sc(t, rsp)
            t += rng.randint(100, 400)
        t = yield from _smb_files(ctx, rng, p, conn, t, session, tree)
    yield from conn.close(t, rng.randint(60, 120), rng.randint(80, 200))


def _smb_files(ctx: Ctx, rng: random.Random, p: Profile, conn: Tcp, t: int, session: int, tree: int) -> Timed:
    """Backup files one after another; returns the time at which the connection may close."""
    pool = rng.randbytes(1 << 20)  # backup data looks random (compressed archives)
    msg_id = 3
    files = 0
    c, s = conn.c, conn.s
    acked = conn.cseq  # highest client sequence number the server has acknowledged

    def server_packet(ack_v: int, write_id: int, count: int) -> bytearray:
        """A stretch ACK (write_id 0) or the WRITE response of message write_id, acking all seen data."""
        nonlocal acked
        if (ack_v - acked) & M32 < 0x80000000:  # newer, modulo 2**32 (the bulk stream wraps)
            acked = ack_v
        if not write_id:
            return s.tcp(conn.sseq, acked, ACK, conn.swin)
        body = struct.pack("<HHIIHH", 17, 0, count, 0, 0, 0)
        rsp = smb2(SMB2_WRITE, write_id, body, resp=True, credits=64, tree=tree, session=session)
        frame = s.tcp(conn.sseq, acked, PA, conn.swin, rsp)
        conn.sseq = (conn.sseq + len(rsp)) & M32
        return frame

    while True:
        if p.bulk_max_files and files >= p.bulk_max_files:
            t = yield from _sleep(ctx, t, 1 << 62)
            return t
        if not ctx.take(5):  # CREATE req/resp + CLOSE req/resp/ACK
            return t
        files += 1
        size = rng.randint(*p.bulk_file_mib) << 20
        name = f"hist\\{files:04d}\\archive_{rng.randrange(10**6):06d}.dat".encode("utf-16-le")
        file_id = rng.randbytes(16)
        create = struct.pack(
            "<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x0012019F, 0x80, 0x7, 5, 0x44, 0x78, len(name), 0, 0
        )
        yield conn.cs(t, smb2(SMB2_CREATE, msg_id, create + name, tree=tree, session=session))
        t += rng.randint(300, 1500)
        ft = _filetime(t)
        create_resp = struct.pack(
            "<HBBIQQQQQQII16sII", 89, 0, 0, 2, ft, ft, ft, ft, 0, 0, 0x80, 0, file_id, 0, 0
        )
        yield conn.sc(
            t, smb2(SMB2_CREATE, msg_id, create_resp, resp=True, credits=64, tree=tree, session=session)
        )
        msg_id += 1
        t += rng.randint(100, 300)

        gap = (MSS + 54) * 8 / rng.randint(*p.bulk_mbit)  # µs per full-size frame at this file's rate
        tf = float(t)
        # server packets not yet emitted: (time, order, ack value, WRITE message id or 0 for an ACK, count)
        pend: list[tuple[int, int, int, int, int]] = []
        order = 0
        base = rng.randrange(16) * WRITE_SIZE
        offset = 0
        while offset < size:
            length = min(WRITE_SIZE, size - offset)
            nseg = -(-(SMB2_WRITE_HDR + length) // MSS)
            if not ctx.take(nseg + (nseg - 1) // 8 + 1):
                break
            po = (base + offset) % len(pool)
            body = struct.pack("<HHIQ16sIIHHI", 49, 0x70, length, offset, file_id, 0, 0, 0, 0, 0)
            msg = smb2(
                SMB2_WRITE, msg_id, body + pool[po : po + length], credits=64, tree=tree, session=session
            )
            mv = memoryview(msg)
            for i in range(nseg):
                ts = int(tf)
                while pend and pend[0][0] <= ts:
                    pt, _, ack_v, wid, count = heapq.heappop(pend)
                    yield (pt, server_packet(ack_v, wid, count))
                chunk = mv[i * MSS : (i + 1) * MSS]
                last = i == nseg - 1
                yield (ts, c.tcp(conn.cseq, conn.sseq, PA if last else ACK, conn.cwin, chunk))
                conn.cseq = (conn.cseq + len(chunk)) & M32
                if len(chunk) == MSS:
                    ctx.bulk_full_segments += 1
                if last:
                    heapq.heappush(pend, (ts + rng.randint(100, 400), order, conn.cseq, msg_id, length))
                    order += 1
                elif (i + 1) % 8 == 0:
                    heapq.heappush(pend, (ts + rng.randint(20, 60), order, conn.cseq, 0, 0))
                    order += 1
                tf += gap * (len(chunk) + 54) / (MSS + 54)
            msg_id += 1
            tf += rng.uniform(2, 15)
            offset += length
        t = int(tf)
        while pend:
            pt, _, ack_v, wid, count = heapq.heappop(pend)
            yield (pt, server_packet(ack_v, wid, count))
            t = max(t, pt)
        t += rng.randint(200, 800)
        close = struct.pack("<HHI16s", 24, 0, 0, file_id)
        yield conn.cs(t, smb2(SMB2_CLOSE, msg_id, close, tree=tree, session=session))
        t += rng.randint(200, 900)
        close_resp = struct.pack("<HHIQQQQQQI", 60, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        yield conn.sc(t, smb2(SMB2_CLOSE, msg_id, close_resp, resp=True, tree=tree, session=session))
        msg_id += 1
        t += rng.randint(35000, 42000)
        yield conn.cs(t, b"", ACK)
        t = yield from _sleep(ctx, t, t + int(rng.uniform(*p.bulk_pause_s) * 1e6))
        if ctx.exhausted:
            return t


# -------------------------------------------------------------------------------------- background

HTTP_PATHS = (
    "/api/v1/tags?area=boiler",
    "/api/v1/tags?area=turbine",
    "/api/v1/trend?tag=FT-101&span=3600",
    "/api/v1/trend?tag=PT-204&span=600",
    "/api/v1/alarms?state=active",
    "/dashboard/overview",
    "/static/app.js",
)


def http_client(ctx: Ctx, rng: random.Random, p: Profile, client: Host, server: Host, start: int) -> Source:
    t = start
    sport = rng.randrange(49152, 60000)
    while True:
        t += int(rng.expovariate(1.0 / p.http_interval_s) * 1e6) + 1000
        yield (t, None)
        path = rng.choice(HTTP_PATHS)
        body_len = rng.randint(300, 6000)
        body = (('{"ok":true,"data":[' + ",".join(["0.000"] * (body_len // 6)) + "]}").encode())[:body_len]
        head = (
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        response = head + body
        nseg = -(-len(response) // MSS)
        if not ctx.take(3 + 1 + nseg + 3):
            return
        ctx.flows += 1
        sport = sport + 1 if sport < 65000 else 49152
        c, s = dirs(SEG_DMZ, client, server, sport, 80, "tcp", rng)
        conn = Tcp(c, s, rng, cwin=0x0201, swin=0x01F5)
        hs = conn.handshake(t, rng.randint(200, 600), rng.randint(300, 1500))
        yield from hs
        tt = hs[-1][0] + rng.randint(20, 200)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: historian.plant.example\r\n"
            "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\n"
            "Accept: application/json\r\nConnection: close\r\n\r\n"
        ).encode()
        yield conn.cs(tt, request)
        tt += rng.randint(2000, 20000)
        for i in range(nseg):
            seg = response[i * MSS : (i + 1) * MSS]
            yield conn.sc(tt, seg, PA if i == nseg - 1 else ACK)
            tt += rng.randint(10, 40)
        fin = conn.close(
            tt + rng.randint(50, 200), rng.randint(300, 1500), rng.randint(200, 600), client_first=False
        )
        yield from fin
        t = fin[-1][0]


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"


DNS_NAMES = (
    "historian.plant.example",
    "scada-fep.plant.example",
    "dc01.plant.example",
    "ntp01.plant.example",
    "wsus.plant.example",
    "license.vendor.example",
    "hmi01.plant.example",
    "backup01.plant.example",
)


def dns_clients(
    ctx: Ctx, rng: random.Random, p: Profile, clients: list[Host], server: Host, start: int
) -> Source:
    t = start
    addrs = {name: bytes([10, 10, 20 + i % 3, 10 + i]) for i, name in enumerate(DNS_NAMES)}
    while True:
        t += int(rng.expovariate(p.dns_per_s) * 1e6) + 100
        yield (t, None)
        if not ctx.take(2):
            return
        ctx.flows += 1
        client = rng.choice(clients)
        name = rng.choice(DNS_NAMES)
        qtype = 28 if rng.random() < 0.3 else 1
        txid = rng.getrandbits(16)
        q, r = dirs(SEG_SUPERVISORY, client, server, rng.randrange(49152, 65535), 53, "udp", rng)
        question = _dns_name(name) + struct.pack(">HH", qtype, 1)
        yield (t, q.udp(struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + question))
        if qtype == 1:
            answer = struct.pack(">HHHIH", 0xC00C, 1, 1, 3600, 4) + addrs[name]
            resp = struct.pack(">HHHHHH", txid, 0x8580, 1, 1, 0, 0) + question + answer
        else:
            resp = (
                struct.pack(">HHHHHH", txid, 0x8580, 1, 0, 0, 0) + question
            )  # no AAAA record: NOERROR, empty
        t += rng.randint(150, 900)
        yield (t, r.udp(resp))


NTP_EPOCH_OFFSET = 2_208_988_800


def _ntp_ts(t_us: int) -> bytes:
    us = EPOCH_US + t_us
    sec, frac = divmod(us, 1_000_000)
    return struct.pack(">II", sec + NTP_EPOCH_OFFSET, (frac << 32) // 1_000_000)


def ntp_client(ctx: Ctx, rng: random.Random, p: Profile, client: Host, server: Host, start: int) -> Source:
    seg = Seg(client.vid) if client.vid in (10, 20) else SEG_SUPERVISORY
    q, r = dirs(seg, client, server, 123, 123, "udp", rng)
    first = True
    t = start
    while True:
        yield (t, None)
        if not ctx.take(2):
            return
        if first:
            ctx.flows += 1
            first = False
        req = bytes([0x23, 0, 6, 0xEC]) + bytes(36) + _ntp_ts(t)
        yield (t, q.udp(req))
        t1 = t + rng.randint(300, 1200)
        rx = _ntp_ts(t + (t1 - t) // 2)
        resp = (
            bytes([0x24, 2, 6, 0xE9]) + struct.pack(">II", 0x0000_0120, 0x0000_0300) + bytes([10, 10, 0, 1])
        )
        resp += _ntp_ts(t - 30_000_000) + req[40:48] + rx + _ntp_ts(t1)
        yield (t1, r.udp(resp))
        t += int(p.ntp_interval_s * 1e6) + rng.randint(-200_000, 200_000)


def arp_frame(seg: Seg, op: int, smac: bytes, sip: str, tmac: bytes, tip: str, dst: bytes) -> bytes:
    tags = b""
    if seg.mode == "vlan":
        tags = struct.pack("!HH", 0x8100, seg.vid)
    elif seg.mode == "qinq":
        tags = struct.pack("!HHHH", 0x88A8, seg.outer, 0x8100, seg.vid)
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, smac, socket.inet_aton(sip), tmac, socket.inet_aton(tip)
    )
    frame = dst + smac + tags + b"\x08\x06" + body
    return frame + bytes(max(0, MIN_FRAME - len(frame)))


def arp_vlan(
    ctx: Ctx, rng: random.Random, p: Profile, seg: Seg, gateway_ip: str, hosts: list[Host], start: int
) -> Source:
    t = start
    gw = Host("gw", gateway_ip, ROUTER_MAC, seg.vid)
    while True:
        t += int(rng.expovariate(1.0 / p.arp_interval_s) * 1e6) + 1000
        yield (t, None)
        if not ctx.take(2):
            return
        host = rng.choice(hosts)
        a, b = (gw, host) if rng.random() < 0.6 else (host, gw)
        yield (t, arp_frame(seg, 1, a.mac, a.ip, bytes(6), b.ip, BROADCAST))
        yield (t + rng.randint(50, 900), arp_frame(seg, 2, b.mac, b.ip, a.mac, a.ip, a.mac))


SYSLOG_MESSAGES = (
    "%LINK-3-UPDOWN: Interface GigabitEthernet1/0/{n}, changed state to up",
    "%LINEPROTO-5-UPDOWN: Line protocol on Interface GigabitEthernet1/0/{n}, changed state to up",
    "%SYS-6-LOGGINGHOST_STARTSTOP: Logging to host fd00:99::10 port 514 started",
    "%PM-4-ERR_DISABLE: bpduguard error detected on Gi1/0/{n}",
    "%SW_MATM-4-MACFLAP_NOTIF: Host 0014.2220.14{n:02d} in vlan 20 is flapping",
    "%ILPOWER-5-POWER_GRANTED: Interface Gi1/0/{n}: Power granted",
)


def syslog_filler(
    ctx: Ctx, rng: random.Random, p: Profile, switches: list[Host], collector: Host, start: int
) -> Source:
    """Single-packet IPv6 syslog: the background source that also tops the budget off exactly."""
    seq = 0
    used: set[int] = set()
    out = [dirs(SEG_MGMT, sw, collector, 514, 514, "udp", rng)[0] for sw in switches]
    t = start
    while True:
        t += int(rng.expovariate(p.syslog_per_s) * 1e6) + 1000
        yield (t, None)
        if not ctx.take(1):
            return
        i = rng.randrange(len(switches))
        if i not in used:
            used.add(i)
            ctx.flows += 1
        seq += 1
        stamp = time.strftime("%b %d %H:%M:%S", time.gmtime((EPOCH_US + t) // 1_000_000))
        msg = rng.choice(SYSLOG_MESSAGES).format(n=rng.randint(1, 48))
        yield (t, out[i].udp(f"<189>{seq}: {switches[i].name}: {stamp}: {msg}".encode()))


# ------------------------------------------------------------------------------------------ writer


def build_sources(ctx: Ctx, p: Profile, seed: int) -> list[tuple[str, Source]]:
    plant = build_plant(p)

    def rng_for(name: str) -> random.Random:
        return random.Random(f"conduitwatch-plant:{seed}:{name}")

    rs = rng_for("schedule")
    sources: list[tuple[str, Source]] = []
    for hi, hmi in enumerate(plant.hmis):
        for pi, plc in enumerate(plant.plcs):
            unit = 1 if pi % 4 else 255
            start = rs.randrange(0, 200_000)
            sources.append(("modbus", modbus_pair(ctx, rng_for(f"mb{hi}.{pi}"), p, hmi, plc, unit, start)))
    for i, rtu in enumerate(plant.rtus):
        start = rs.randrange(0, 300_000)
        sources.append(
            ("dnp3", dnp3_outstation(ctx, rng_for(f"dnp{i}"), p, plant.fep, rtu, SEG_FIELD, 10 + i, start))
        )
    for i, rtu in enumerate(plant.remote_rtus):
        start = rs.randrange(0, 300_000)
        src = dnp3_outstation(ctx, rng_for(f"dnpr{i}"), p, plant.fep, rtu, SEG_REMOTE, 100 + i, start)
        sources.append(("dnp3_qinq", src))
    sources.append(("smb2_bulk", smb_bulk(ctx, rng_for("smb"), p, plant, int(p.bulk_start_s * 1e6))))
    for i, client in enumerate(plant.it_clients):
        src = http_client(ctx, rng_for(f"http{i}"), p, client, plant.web, rs.randrange(0, 500_000))
        sources.append(("http", src))
    dns_cl = [*plant.hmis, *plant.workstations, plant.fep]
    sources.append(("dns", dns_clients(ctx, rng_for("dns"), p, dns_cl, plant.dns, 0)))
    for i, host in enumerate([*plant.plcs, *plant.hmis, *plant.workstations, plant.fep]):
        start = rs.randrange(0, int(p.ntp_interval_s * 1e6))
        sources.append(("ntp", ntp_client(ctx, rng_for(f"ntp{i}"), p, host, plant.ntp, start)))
    arp_sets = [
        (SEG_CONTROL, "10.10.10.1", [*plant.plcs, plant.historian]),
        (SEG_SUPERVISORY, "10.10.20.1", [*plant.hmis, *plant.workstations, plant.fep, plant.dns, plant.ntp]),
        (SEG_FIELD, "10.10.40.1", plant.rtus or plant.remote_rtus),
    ]
    for seg, gw, hosts in arp_sets:
        sources.append(("arp", arp_vlan(ctx, rng_for(f"arp{seg.vid}"), p, seg, gw, hosts, 0)))
    sources.append(("syslog_ipv6", syslog_filler(ctx, rng_for("syslog"), p, plant.switches, plant.syslog, 0)))
    return sources


def pcap_global_header() -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


def generate(out: str | Path, packets: int, seed: int = 1, profile: str = "bench") -> dict[str, Any]:
    """Write the capture and return its metadata (also written to the sidecar by main())."""
    if packets < 1:
        raise ValueError("packets must be positive")
    prof = PROFILES[profile]
    t_start = time.perf_counter()
    ctx = Ctx(packets)
    sources = build_sources(ctx, prof, seed)
    labels = [label for label, _ in sources]
    gens = [gen for _, gen in sources]
    counts = [0] * len(sources)
    sizes = [0] * len(sources)
    heap: list[tuple[int, int, bytes | bytearray | None]] = []
    for idx, gen in enumerate(gens):
        first = next(gen, None)
        if first is not None:
            heap.append((first[0], idx, first[1]))
    heapq.heapify(heap)
    rec = _REC.pack
    written = 0
    tagged = 0
    qinq = 0
    last = 0
    first_ts = -1
    buf: list[bytes | bytearray] = []
    with open(out, "wb") as f:
        f.write(pcap_global_header())
        while heap:
            ts, idx, frame = heap[0]
            if frame is not None:
                if ts < last:
                    raise AssertionError(f"source {labels[idx]} went back in time: {ts} < {last}")
                last = ts
                if first_ts < 0:
                    first_ts = ts
                n = len(frame)
                sec, usec = divmod(EPOCH_US + ts, 1_000_000)
                buf.append(rec(sec, usec, n, n))
                buf.append(frame)
                counts[idx] += 1
                sizes[idx] += n
                et = frame[12]
                if et == 0x81:
                    tagged += 1
                elif et == 0x88:
                    tagged += 1
                    qinq += 1
                written += 1
                if len(buf) >= 8192:
                    f.write(b"".join(buf))
                    buf.clear()
            nxt = next(gens[idx], None)
            if nxt is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (nxt[0], idx, nxt[1]))
        f.write(b"".join(buf))
    if written != packets:
        raise RuntimeError(f"wrote {written} packets, asked for {packets} (budget bookkeeping bug)")
    elapsed = time.perf_counter() - t_start
    by_label: dict[str, dict[str, int]] = {}
    for label, n, b in zip(labels, counts, sizes, strict=True):
        entry = by_label.setdefault(label, {"packets": 0, "bytes": 0})
        entry["packets"] += n
        entry["bytes"] += b
    total_bytes = sum(sizes)
    return {
        "generator": "bench.gen_plant",
        "generator_version": GENERATOR_VERSION,
        "profile": profile,
        "seed": seed,
        "packets": written,
        "frame_bytes": total_bytes,
        "file_bytes": Path(out).stat().st_size,
        "avg_frame_bytes": round(total_bytes / written, 1),
        "span_seconds": round((last - first_ts) / 1e6, 3),
        "first_timestamp": (EPOCH_US + first_ts) / 1e6,
        "vlan_tagged_share": round(tagged / written, 4),
        "qinq_packets": qinq,
        "bulk_full_segments": ctx.bulk_full_segments,
        "bulk_full_segment_share": round(ctx.bulk_full_segments / written, 4),
        "flows": ctx.flows,
        "mix": {k: {**v, "share": round(v["packets"] / written, 4)} for k, v in sorted(by_label.items())},
        "generation_seconds": round(elapsed, 2),
        "profile_parameters": asdict(PROFILES[profile]),
    }


def meta_path(out: str | Path) -> Path:
    return Path(f"{out}.meta.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gen_plant", description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, help="exact number of packets (default: the profile's)")
    ap.add_argument("--out", required=True, help="pcap file to write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="bench")
    ap.add_argument("--demo", action="store_true", help="small README demo capture (same as --profile demo)")
    ap.add_argument("--no-meta", action="store_true", help="do not write FILE.meta.json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    profile = "demo" if args.demo else args.profile
    packets = args.packets or PROFILES[profile].default_packets
    meta = generate(args.out, packets, args.seed, profile)
    if not args.no_meta:
        meta_path(args.out).write_text(json.dumps(meta, indent=2) + "\n")
    if not args.quiet:
        mix = ", ".join(f"{k} {v['share']:.1%}" for k, v in meta["mix"].items())
        print(
            f"{args.out}: {meta['packets']} packets, {meta['file_bytes']} bytes, "
            f"avg frame {meta['avg_frame_bytes']} B, span {meta['span_seconds']} s, "
            f"VLAN-tagged {meta['vlan_tagged_share']:.1%}, flows {meta['flows']}, "
            f"generated in {meta['generation_seconds']} s\n  mix: {mix}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
