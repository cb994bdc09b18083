"""Labelled captures of backup floods and control-loop health on the Riverside plant.

The plant and its policy are those of ``bench.scenarios`` (rules/purdue-plant.yaml).

``python -m bench.flood_scenarios --out pcaps/scenarios/floods`` writes, per scenario, ``NAME.pcap.gz``
(deterministic for a seed) and ``NAME.labels.json``: which incidents the flood detector must raise
(kind, link or loop, onset and end in packet time) and which it must never raise, plus the latency
the generator injected into every control loop (percentiles over all its requests).

The vantage point: a SPAN of the control-room access switch (VLAN 200) copying the hosts' ports and
the uplink's receive side. Requests from the HMIs and the SCADA server's backup data are seen *before*
they enter the uplink's egress queue; responses are seen as they come back. The uplink is modelled as
a drop-tail FIFO of ``QUEUE_SLOTS`` packets draining at 100 Mbit/s: a control request waits behind what is
queued, and when the buffer is full it is dropped and the HMI retransmits it after its RTO, so the
latency the agent measures (first request to response) is exactly the latency the generator injects.

Bulk frames are written with a 64-byte snap length (their wire length is kept), so a 100 Mbit/s
backup of several seconds stays a small file; control frames are written whole.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import random
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import enip_frames as enip
from bench.gen_plant import (
    ACK,
    MSS,
    PA,
    RST,
    Seg,
    Tcp,
    dirs,
    mb_read_req,
    mb_read_resp,
    pcap_global_header,
    smb2,
)
from bench.scenarios import (
    BACKUP_1,
    HMI_1,
    HMI_2,
    PLC_F1,
    PLC_F2,
    SCADA_1,
    TUESDAY,
    Node,
    _mac,
    iso_utc,
    local_us,
)

GENERATOR_VERSION = 1
POLICY = "rules/purdue-plant.yaml"
UPLINK_BPS = 100_000_000  # the control-room switch's uplink (rules/purdue-plant.yaml, zone supervisory)
QUEUE_SLOTS = 170  # packet buffers of the uplink port (about 256 KiB of full-size frames)
SNAP = 64  # bytes kept of bulk frames
SPAN = Seg(200)  # the control-room VLAN, where the sensor sees every flow of these scenarios
RTO_US = 210_000  # HMI retransmission timeout after a lost request (Windows/Linux minimum ~200 ms)
SMB2_READ = 8
SIS_EWS = Node("sis-ews", "10.31.50.60", _mac("00:0e:8c:32:0b:60"), 150, 128, "sis")
# The intake pump's variable-speed drive (Altivar with an EtherNet/IP adapter), scanned by plc-f1.
DRV_F1 = Node("drv-f1", "10.31.10.31", _mac("00:80:f4:1f:0a:31"), 110, 64, "cell-filtration")
CELL_SPAN = Seg(110)  # the filter gallery's access switch, where plc-f1 and drv-f1 are connected

_REC = struct.Struct("<IIII")


@dataclass
class Frame:
    ts: int  # µs
    order: int
    data: bytes
    snap: bool  # write only the first SNAP bytes


@dataclass
class Queue:
    """FIFO egress port with ``slots`` packet buffers: arrival time -> departure time, or None when full.

    Buffers are counted in packets (descriptors), as in most switch ASICs: a full queue drops a small
    control frame as surely as a full-size backup segment.
    """

    rate_bps: float
    slots: int
    free_at: float = 0.0  # µs when the port finishes sending what it holds
    departures: deque[float] = field(default_factory=deque)
    drops: int = 0

    def offer(self, t: int, size: int) -> int | None:
        departures = self.departures
        while departures and departures[0] <= t:
            departures.popleft()
        if len(departures) >= self.slots:
            self.drops += 1
            return None
        self.free_at = max(float(t), self.free_at) + size * 8e6 / self.rate_bps
        departures.append(self.free_at)
        return math.ceil(self.free_at)


@dataclass
class Sc:
    name: str
    seed: int
    title: str = ""
    description: str = ""
    frames: list[Frame] = field(default_factory=list)
    raises: list[dict[str, Any]] = field(default_factory=list)
    never: list[str] = field(default_factory=list)
    loops: list[dict[str, Any]] = field(default_factory=list)
    cyclic: list[dict[str, Any]] = field(default_factory=list)  # cyclic I/O streams and what they carry

    def rng(self, label: str) -> random.Random:
        return random.Random(f"conduitwatch-floods:{self.seed}:{self.name}:{label}")

    def add(self, t: int, frame: bytes | bytearray, snap: bool = False) -> None:
        self.frames.append(Frame(t, len(self.frames), bytes(frame), snap))

    def add_all(self, pkts: Iterable[tuple[int, bytes | bytearray]]) -> None:
        """A handshake's or a close's packets, in order."""
        for t, frame in pkts:
            self.add(t, frame)


# ------------------------------------------------------------------------------------------- bulk


def backup_bursts(
    sc: Sc,
    label: str,
    client: Node,
    server: Node,
    start: int,
    seconds: float,
    rate_bps: Callable[[int], float],
) -> list[tuple[int, int]]:
    """An SMB2 pull: ``client`` READs 64 KiB blocks that ``server`` sends at 1 Gbit/s line rate, at an
    average rate ``rate_bps(t)``. Returns the (arrival time, wire size) of every data frame, for the queue."""
    rng = sc.rng(label)
    c, s = dirs(SPAN, client, server, rng.randrange(49152, 65000), 445, "tcp", rng)
    tcp = Tcp(c, s, rng, cwin=0x0402, swin=0x0402)
    sc.add_all(tcp.handshake(start, 300, 120))
    t = start + 1000
    arrivals: list[tuple[int, int]] = []
    end = start + int(seconds * 1e6)
    msg_id = 3
    offset = 0
    while t < end:
        read = struct.pack("<HBBIQ16sIIIHHB", 49, 0x50, 0, 65536, offset, bytes(16), 0, 0, 0, 0, 0, 0)
        sc.add(t, tcp.cs(t, smb2(SMB2_READ, msg_id, read, tree=1, session=7))[1])
        body = smb2(
            SMB2_READ, msg_id, struct.pack("<HBBIII", 17, 0x50, 0, 65536, 0, 0) + bytes(65536), resp=True
        )
        ts = t + rng.randint(60, 120)
        chunks = [body[i : i + MSS] for i in range(0, len(body), MSS)]
        for i, chunk in enumerate(chunks):
            pkt_t, frame = tcp.sc(ts, chunk, PA if i == len(chunks) - 1 else ACK)
            sc.add(pkt_t, frame, snap=True)
            arrivals.append((pkt_t, len(frame) + 4))  # + FCS on the wire
            if i % 4 == 3:
                sc.add(ts + 400, tcp.cs(ts + 400, b"", ACK)[1])  # stretch ACK from the receiver, via the core
            ts += 12  # 1514-byte frames back to back at 1 Gbit/s
        msg_id += 1
        offset += 65536
        t += max(ts - t, int(len(body) * 8e6 / rate_bps(t)))
    sc.add_all(tcp.close(t + 500, 200, 100))
    return arrivals


# ---------------------------------------------------------------------------------------- control


@dataclass
class Poll:
    """One HMI polling one PLC over Modbus/TCP: a read every ``period_us``, one request outstanding."""

    client: Node
    server: Node
    period_us: int
    proc_us: tuple[int, int]  # PLC processing time
    degrade: Callable[[int], int] = lambda _t: 0  # extra processing at time t (a failing PLC)


def poll_connection(sc: Sc, poll: Poll, rng: random.Random, at: int) -> Tcp:
    """The HMI's Modbus/TCP connection to the PLC, from an ephemeral port, opened at ``at``."""
    c, s = dirs(SPAN, poll.client, poll.server, rng.randrange(49152, 65000), 502, "tcp", rng)
    tcp = Tcp(c, s, rng, cwin=0x0201, swin=0x0010)
    sc.add_all(tcp.handshake(at, 900, 150))
    return tcp


def answer_read(sc: Sc, tcp: Tcp, rng: random.Random, t: int, tid: int) -> None:
    """The PLC's answer to a poll's read of ten holding registers: random process values."""
    values = struct.pack(">10H", *(rng.randrange(0, 4000) for _ in range(10)))
    sc.add(t, tcp.sc(t, mb_read_resp(tid, 1, values))[1])


def control_traffic(
    sc: Sc,
    poll: Poll,
    start: int,
    end: int,
    queue: Queue | None,
    bulk: list[tuple[int, int]],
    flood: tuple[int, int] | None,
) -> None:
    """Polling through the uplink queue (requests) shared with ``bulk`` arrivals; responses come back
    uncongested. Records the injected latency of every request in the labels."""
    rng = sc.rng(f"poll:{poll.client.name}>{poll.server.name}")
    tcp = poll_connection(sc, poll, rng, start)
    tid = rng.randrange(1, 0x4000)
    latencies: list[float] = []
    during: list[float] = []
    retransmissions = 0
    bulk_i = 0
    t = start + 2000
    due = t
    while t < end:
        request = mb_read_req(tid, 1, 100, 10)
        sent = t
        attempt = t
        frame = tcp.cs(t, request)[1]
        while True:
            sc.add(attempt, frame)
            if queue is None:
                depart: int | None = attempt
            else:
                # Bulk frames that arrived before this request enter the queue first.
                while bulk_i < len(bulk) and bulk[bulk_i][0] <= attempt:
                    queue.offer(*bulk[bulk_i])
                    bulk_i += 1
                depart = queue.offer(attempt, len(frame) + 4)
            if depart is not None:
                break
            retransmissions += 1
            attempt += RTO_US
        response_t = depart + 100 + rng.randint(*poll.proc_us) + poll.degrade(sent) + 100
        answer_read(sc, tcp, rng, response_t, tid)
        latency = (response_t - sent) / 1e6
        latencies.append(latency)
        if flood is not None and flood[0] <= sent < flood[1]:
            during.append(latency)
        tid = (tid + 1) & 0xFFFF
        due += poll.period_us
        t = max(due + rng.randint(-300, 300), response_t + 200)
        if (t - start) // poll.period_us % 10 == 0:
            sc.add(t - 100, tcp.cs(t - 100, b"", ACK)[1])  # a delayed ACK now and then
    if queue is not None:
        for arrival in bulk[bulk_i:]:
            queue.offer(*arrival)
    sc.add_all(tcp.close(t + 500, 900, 150))
    sc.loops.append(
        {
            "client_ip": poll.client.ip,
            "server_ip": poll.server.ip,
            "protocol": "modbus",
            "requests": len(latencies),
            "retransmissions": retransmissions,
            "latency_s": _percentiles(latencies),
            "latency_during_flood_s": _percentiles(during) if flood is not None else None,
        }
    )


def _percentiles(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] if ordered else 0.0

    return {"samples": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99)}


def run_plant(
    sc: Sc,
    start: int,
    seconds: int,
    polls: list[Poll],
    bulk: list[tuple[int, int]],
    flood: tuple[int, int] | None = None,
    queued: bool = True,
) -> None:
    """Every poll shares one uplink queue with ``bulk`` (replayed per poll: the control frames are tiny,
    so each poll sees the queue the bulk traffic builds)."""
    end = start + seconds * 1_000_000
    for i, poll in enumerate(polls):
        queue = Queue(UPLINK_BPS, QUEUE_SLOTS) if queued else None
        control_traffic(sc, poll, start + i * 37_000, end, queue, bulk, flood)


def steady(bps: float) -> Callable[[int], float]:
    return lambda _t: bps


def sawtooth(low: float, high: float, period_us: int, start: int) -> Callable[[int], float]:
    """TCP's congestion-avoidance sawtooth: the offered rate climbs from low to high, then halves back."""
    return lambda t: low + (high - low) * (((t - start) % period_us) / period_us)


POLLS = [
    Poll(HMI_1, PLC_F1, 100_000, (1500, 4500)),
    Poll(HMI_1, PLC_F2, 100_000, (1800, 5200)),
    Poll(HMI_2, PLC_F1, 200_000, (1500, 4500)),
]


# ------------------------------------------------------------------------------------------ scenarios


def normal_day(sc: Sc) -> None:
    sc.title = "A normal night: the scheduled backup runs in its window, under budget"
    sc.description = (
        "Tuesday 02:00 local (backup window 01:00-04:00): backup-1 pulls scada-1's archives over SMB2 at "
        "about 20 Mbit/s (budget 30 Mbit/s of the 100 Mbit/s uplink) for 12 s, while hmi-1 and hmi-2 poll "
        "the filtration PLCs every 100-200 ms through the same uplink. Nothing may be raised."
    )
    start = local_us(TUESDAY, "02:00:00")
    bulk = backup_bursts(sc, "backup", BACKUP_1, SCADA_1, start + 10_000_000, 12, steady(20e6))
    run_plant(sc, start, 35, POLLS, bulk)
    sc.never = list(NEVER_ANY)


def uplink_saturation(sc: Sc) -> None:
    sc.title = "A daytime backup saturates the control room's 100 Mbit/s uplink"
    sc.description = (
        "Tuesday 10:00 local: 20 s of normal polling, then backup-1 pulls scada-1's archives for 5 s with a "
        "TCP sawtooth between 95 and 140 Mbit/s into the 100 Mbit/s uplink. The uplink's 170 packet "
        "buffers fill: the HMIs' Modbus requests queue behind the backup (about 20 ms), some are dropped and "
        "retransmitted after 210 ms. Expected: bulk over budget and outside the backup window on the "
        "supervisory uplink, degradation of the three polling loops, and backup interference naming them."
    )
    start = local_us(TUESDAY, "10:00:00")
    onset = start + 20_000_000
    seconds = 5
    bulk = backup_bursts(
        sc, "backup", BACKUP_1, SCADA_1, onset, seconds, sawtooth(95e6, 140e6, 1_200_000, onset)
    )
    end = bulk[-1][0]
    run_plant(sc, start, 40, POLLS, bulk, flood=(onset, end))
    window = {"onset": iso_utc(onset), "end": iso_utc(end), "onset_s": onset / 1e6, "end_s": end / 1e6}
    for kind in ("bulk_over_budget", "backup_outside_window", "backup_interference"):
        sc.raises.append({"kind": kind, "scope": "zone", "name": "supervisory", **window})
    for poll in POLLS:
        sc.raises.append(
            {
                "kind": "control_degradation",
                "client_ip": poll.client.ip,
                "server_ip": poll.server.ip,
                **window,
            }
        )
    sc.never = ["bulk_into_control_zone"]


def short_burst(sc: Sc) -> None:
    sc.title = "A short copy burst, under every threshold"
    sc.description = (
        "Tuesday 11:00 local: backup-1 copies one 2.5 MB file from scada-1 in about 0.3 s (about 70 Mbit/s "
        "while it lasts, 20 Mbit/s averaged over a second). Peak 100 ms bins are visible in the metrics, "
        "but nothing may be raised: no sustained transfer, no overload, no degradation."
    )
    start = local_us(TUESDAY, "11:00:00")
    bulk = backup_bursts(sc, "burst", BACKUP_1, SCADA_1, start + 15_000_000, 0.3, steady(70e6))
    run_plant(sc, start, 30, POLLS, bulk)
    sc.never = list(NEVER_ANY)


def plc_degrading(sc: Sc) -> None:
    sc.title = "A PLC degrades with no backup running"
    sc.description = (
        "Tuesday 14:00 local: plc-f2's scan overruns: from 20 s on its response time climbs by 4 ms a second "
        "to about 60 ms and stays there. No bulk traffic at all. Expected: control degradation of the "
        "hmi-1 -> plc-f2 loop, and never an interference or overload."
    )
    start = local_us(TUESDAY, "14:00:00")
    onset = start + 20_000_000

    def overrun(t: int) -> int:
        return 0 if t < onset else min(60_000, (t - onset) * 4 // 1000)

    polls = [POLLS[0], Poll(HMI_1, PLC_F2, 100_000, (1800, 5200), overrun), POLLS[2]]
    run_plant(sc, start, 45, polls, [])
    sc.raises.append(
        {
            "kind": "control_degradation",
            "client_ip": HMI_1.ip,
            "server_ip": PLC_F2.ip,
            "onset": iso_utc(onset),
            "onset_s": onset / 1e6,
            # A drift is a degradation once it leaves the baseline band: at +4 ms a second it passes
            # twice the baseline p95 (about 10 ms) after some 2 s, then the 1 s window must follow.
            "detect_within_s": 4.0,
            "end": None,
            "end_s": None,
        }
    )
    sc.never = ["bulk_into_control_zone", "bulk_over_budget", "backup_outside_window", "backup_interference"]


def safety_crossing(sc: Sc) -> None:
    sc.title = "A backup job reaches into the safety zone"
    sc.description = (
        "Tuesday 02:30 local, inside the site backup window: backup-1 pulls the SIS engineering "
        "workstation's "
        "project files over SMB2 at about 8 Mbit/s for 6 s. The SIS is a safety zone (SR 5.1): bulk traffic "
        "crossing into it is raised, whatever the window."
    )
    start = local_us(TUESDAY, "02:30:00")
    onset = start + 5_000_000
    bulk = backup_bursts(sc, "sis", BACKUP_1, SIS_EWS, onset, 6, steady(8e6))
    end = bulk[-1][0]
    run_plant(sc, start, 20, POLLS[:1], [], queued=False)
    sc.raises.append(
        {
            "kind": "bulk_into_control_zone",
            "scope": "zone",
            "name": "sis",
            "onset": iso_utc(onset),
            "onset_s": onset / 1e6,
            "end": iso_utc(end),
            "end_s": end / 1e6,
        }
    )
    sc.never = ["backup_interference", "control_degradation"]


# ------------------------------------------------------------------------------------ cyclic I/O

IO_DRIVE = enip.Connection(
    serial=0x4A17,
    vendor=0x00F3,  # the scanner's vendor id
    originator_serial=0x0A1F0B11,
    ot_id=0x6E3B0002,
    to_id=0x2F1C0001,
    rpi_us=15_000,  # asked for 15 ms; the drive's I/O task runs every 4 ms and grants 16 ms
    api_us=16_000,
    ot_size=2 + 4 + 4,  # sequence count, run/idle header, control word and speed reference
    to_size=2 + 8,  # sequence count, status word, output speed, motor current, thermal state
    path=bytes([0x20, 0x04, 0x24, 0x05, 0x2C, 0x64, 0x2C, 0x65]),  # configuration 5, output 100, input 101
)


def _nearest_rank(ordered: list[int], q: float) -> int:
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def io_stream(
    sc: Sc,
    label: str,
    way: Any,
    connection_id: int,
    period_us: int,
    first: int,
    end: int,
    jitter_us: Callable[[int], int],
    lost: set[int],
    data_len: int,
    run_idle: bool,
) -> dict[str, Any]:
    """A class-1 producer: a datagram every ``period_us`` (plus ``jitter_us``), sequence numbers counting
    every frame produced, the ``lost`` ones (by index) never reaching the sensor. Returns what the agent
    must measure: frames missing from the sequence, and the jitter it reports (p99 of |interval -
    period| over the intervals that end in the stream's last 10 s)."""
    rng = sc.rng(label)
    sent: list[int] = []
    k = 0
    while first + k * period_us <= end:
        t = first + k * period_us + jitter_us(first + k * period_us)
        if k not in lost:
            data = bytes(rng.randrange(256) for _ in range(data_len))
            sc.add(t, way.udp(enip.io_datagram(connection_id, k + 1, k + 1, data, run_idle)))
            sent.append(t)
        k += 1
    last = sent[-1]
    window = [b - a for a, b in itertools.pairwise(sent) if b >= last - 10_000_000]
    return {
        "connection_id": connection_id,
        "frames": len(sent),
        "missing": len(lost),
        "period_s": period_us / 1e6,
        "jitter_p99_s": _nearest_rank(sorted(abs(w - period_us) for w in window), 99) / 1e6,
    }


def cyclic_io(sc: Sc) -> None:
    sc.title = "Cyclic EtherNet/IP I/O between the filtration PLC and its intake pump drive"
    sc.description = (
        "Tuesday 10:30 local, filter gallery switch (VLAN 110): plc-f1 registers a session with drv-f1 "
        "on TCP 44818 and opens a class-1 connection (Forward Open, RPI 15 ms both ways; the drive grants "
        "16 ms, its I/O task running every 4 ms), then both produce over UDP 2222 for 30 s. The PLC sends "
        "within +-0.1 ms of its period; the drive within +-0.25 ms, and within +-2 ms for 4 s while it "
        "writes its fault log to flash. A marginal patch cable on the drive's port costs four of its "
        "frames and one of the PLC's (the switch discards them for CRC errors). Nothing may be raised; "
        "the agent must measure the labelled jitter against the granted 16 ms and the labelled losses."
    )
    start = local_us(TUESDAY, "10:30:00")
    conn = IO_DRIVE
    rng = sc.rng("explicit")
    c, s = dirs(CELL_SPAN, PLC_F1, DRV_F1, rng.randrange(49152, 65000), 44818, "tcp", rng)
    tcp = Tcp(c, s, rng, cwin=0x0400, swin=0x0400)
    t = start + 500_000
    sc.add_all(tcp.handshake(t, 250, 90))
    context = bytes(8)
    session = 0x00012A10
    t += 2_000
    sc.add(t, tcp.cs(t, enip.encap(enip.REGISTER_SESSION, 0, context, enip.register_session()))[1])
    t += 700
    sc.add(t, tcp.sc(t, enip.encap(enip.REGISTER_SESSION, session, context, enip.register_session()))[1])
    t += 1_500
    context = (1).to_bytes(8, "little")
    sc.add(t, tcp.cs(t, enip.encap(enip.SEND_RR_DATA, session, context, enip.forward_open_request(conn)))[1])
    t += 1_900
    sc.add(t, tcp.sc(t, enip.encap(enip.SEND_RR_DATA, session, context, enip.forward_open_reply(conn)))[1])
    sc.add(t + 40_000, tcp.cs(t + 40_000, b"", ACK)[1])
    io_start = t + 1_200
    io_end = io_start + 30_000_000
    busy = (io_start + 18_000_000, io_start + 22_000_000)
    ot_way, to_way = dirs(CELL_SPAN, PLC_F1, DRV_F1, 2222, 2222, "udp", rng)
    plc_rng, drive_rng = sc.rng("plc-timer"), sc.rng("drive-timer")

    def plc_jitter(_t: int) -> int:
        return plc_rng.randint(-100, 100)

    def drive_jitter(t: int) -> int:
        spread = 2_000 if busy[0] <= t < busy[1] else 250
        return 2_500 + drive_rng.randint(-spread, spread)  # the drive starts producing 2.5 ms after the PLC

    ot = io_stream(sc, "o2t", ot_way, conn.ot_id, conn.api_us, io_start, io_end, plc_jitter, {800}, 8, True)
    to = io_stream(
        sc, "t2o", to_way, conn.to_id, conn.api_us, io_start, io_end, drive_jitter, {420, 421, 1100, 1460}, 8,
        False,
    )  # fmt: skip
    for stream, src, dst, way in ((ot, PLC_F1, DRV_F1, "O->T"), (to, DRV_F1, PLC_F1, "T->O")):
        sc.cyclic.append({"protocol": "enip", "zone": "cell-filtration", "src_ip": src.ip, "dest_ip": dst.ip,
                          "direction": way, "requested_rpi_s": conn.rpi_us / 1e6, **stream})  # fmt: skip
    t = io_end + 30_000
    context = (2).to_bytes(8, "little")
    sc.add(t, tcp.cs(t, enip.encap(enip.SEND_RR_DATA, session, context, enip.forward_close_request(conn)))[1])
    t += 1_600
    sc.add(t, tcp.sc(t, enip.encap(enip.SEND_RR_DATA, session, context, enip.forward_close_reply(conn)))[1])
    sc.add_all(tcp.close(t + 5_000, 300, 90))
    sc.never = list(NEVER_ANY)


# ------------------------------------------------------------------------------ unresponsive PLC

RESPONSE_TIMEOUT_US = 500_000  # the HMI driver's response timeout
GIVE_UP_AFTER = 6  # timeouts in a row before the driver aborts the connection
RECONNECT_US = 1_000_000


def unresponsive_poll(sc: Sc, poll: Poll, start: int, end: int, outage: tuple[int, int]) -> tuple[int, int]:
    """``poll`` whose PLC leaves the requests that reach it in ``outage`` unanswered (its TCP stack
    still acknowledges them). The HMI times each out after 500 ms, asks again, and after six in a row
    aborts the connection with a reset and reconnects a second later. Returns (first unanswered request,
    first answered one after it)."""
    rng = sc.rng(f"poll:{poll.client.name}>{poll.server.name}")

    tcp = poll_connection(sc, poll, rng, start)
    tid = rng.randrange(1, 0x4000)
    latencies: list[float] = []
    unanswered = resets = misses = 0
    first_miss = recovered = 0
    t = due = start + 2000
    while t < end:
        sc.add(t, tcp.cs(t, mb_read_req(tid, 1, 100, 10))[1])
        tid = (tid + 1) & 0xFFFF
        if outage[0] <= t < outage[1]:
            sc.add(t + 300, tcp.sc(t + 300, b"", ACK)[1])
            unanswered += 1
            misses += 1
            first_miss = first_miss or t
            t = due = t + RESPONSE_TIMEOUT_US
            if misses == GIVE_UP_AFTER:
                sc.add(t, tcp.cs(t, b"", RST | ACK)[1])  # abortive close (SO_LINGER 0)
                resets += 1
                misses = 0
                tcp = poll_connection(sc, poll, rng, t + RECONNECT_US)
                t = due = t + RECONNECT_US + 2000
            continue
        response_t = t + 100 + rng.randint(*poll.proc_us) + 100
        answer_read(sc, tcp, rng, response_t, (tid - 1) & 0xFFFF)
        latencies.append((response_t - t) / 1e6)
        if first_miss and not recovered:
            recovered = t
        due += poll.period_us
        t = max(due + rng.randint(-300, 300), response_t + 200)
    sc.add_all(tcp.close(t + 500, 900, 150))
    sc.loops.append({
        "client_ip": poll.client.ip,
        "server_ip": poll.server.ip,
        "protocol": "modbus",
        "requests": len(latencies),  # answered ones: the latency samples
        "unanswered": unanswered,
        "resets": resets,
        "retransmissions": 0,
        "latency_s": _percentiles(latencies),
        "latency_during_flood_s": None,
    })  # fmt: skip
    return first_miss, recovered


def plc_unresponsive(sc: Sc) -> None:
    sc.title = "A PLC stops answering; its HMI keeps asking, then resets the connection"
    sc.description = (
        "Tuesday 15:00 local: plc-f2's Ethernet module loses its backplane link to the CPU for about 4 s "
        "(a module firmware fault). Its TCP stack still acknowledges hmi-1's Modbus requests but no answer "
        "comes; the HMI driver times each request out after 500 ms and asks again, and after six timeouts "
        "aborts the connection with a TCP reset and reconnects a second later, when the PLC answers again. "
        "hmi-1's polling of plc-f1 goes on undisturbed. No bulk traffic. Expected: control degradation of "
        "the hmi-1 -> plc-f2 loop (a request counts as unanswered only 1 s after it was sent), six "
        "unanswered requests, one reset control connection, and never an overload or interference."
    )
    start = local_us(TUESDAY, "15:00:00")
    outage = (start + 15_000_000, start + 18_900_000)
    run_plant(sc, start, 30, POLLS[:1], [], queued=False)
    poll = Poll(HMI_1, PLC_F2, 100_000, (1800, 5200))
    first_miss, recovered = unresponsive_poll(sc, poll, start + 37_000, start + 30_000_000, outage)
    sc.raises.append({
        "kind": "control_degradation",
        "client_ip": HMI_1.ip,
        "server_ip": PLC_F2.ip,
        "onset": iso_utc(first_miss),
        "onset_s": first_miss / 1e6,
        # Silence is only known once a request has waited 1 s, then two judgements confirm it.
        "detect_within_s": 3.0,
        "end": iso_utc(recovered),
        "end_s": recovered / 1e6,
    })  # fmt: skip
    sc.never = ["bulk_into_control_zone", "bulk_over_budget", "backup_outside_window", "backup_interference"]


NEVER_ANY = (
    "bulk_into_control_zone",
    "bulk_over_budget",
    "backup_outside_window",
    "control_degradation",
    "backup_interference",
)


SCENARIOS: dict[str, Callable[[Sc], None]] = {
    "floods-normal-day": normal_day,
    "floods-uplink-saturation": uplink_saturation,
    "floods-short-burst": short_burst,
    "floods-plc-degrading": plc_degrading,
    "floods-safety-crossing": safety_crossing,
    "floods-cyclic-io": cyclic_io,
    "floods-plc-unresponsive": plc_unresponsive,
}


def pcap_records(frames: list[Frame], snap: bool) -> bytes:
    """A classic pcap of ``frames`` (in order); bulk frames cut to SNAP bytes when ``snap``."""
    out = [pcap_global_header()]
    for f in frames:
        data = f.data[:SNAP] if snap and f.snap else f.data
        out.append(_REC.pack(f.ts // 1_000_000, f.ts % 1_000_000, len(data), len(f.data)))
        out.append(data)
    return b"".join(out)


def build(name: str, seed: int) -> tuple[bytes, dict[str, Any]]:
    sc = Sc(name, seed)
    SCENARIOS[name](sc)
    frames = sorted(sc.frames, key=lambda f: (f.ts, f.order))
    out = pcap_records(frames, snap=True)
    labels = {
        "capture": f"{name}.pcap.gz",
        "generator": "bench.flood_scenarios",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "policy": POLICY,
        "title": sc.title,
        "description": sc.description,
        "packets": len(frames),
        "first_timestamp": iso_utc(frames[0].ts),
        "last_timestamp": iso_utc(frames[-1].ts),
        "raises": sc.raises,
        "never": sc.never,
        "loops": sc.loops,
        **({"cyclic": sc.cyclic} if sc.cyclic else {}),
    }
    return gzip.compress(out, compresslevel=9, mtime=0), labels


def generate(out_dir: str | Path, seed: int = 1, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in only or list(SCENARIOS):
        pcap, labels = build(name, seed)
        (out / f"{name}.pcap.gz").write_bytes(pcap)
        (out / f"{name}.labels.json").write_text(json.dumps(labels, indent=2) + "\n")
        written[name] = labels
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flood_scenarios", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for NAME.pcap.gz and NAME.labels.json")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    args = ap.parse_args(argv)
    for name, labels in generate(args.out, args.seed, args.only).items():
        size = (Path(args.out) / f"{name}.pcap.gz").stat().st_size
        kinds = ", ".join(sorted({r["kind"] for r in labels["raises"]})) or "nothing raised"
        print(f"{name}.pcap.gz: {labels['packets']} packets, {size} bytes; {kinds}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
