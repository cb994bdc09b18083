"""Labelled captures of the Purdue plant in rules/purdue-plant.yaml: one compliant day, one per violation.

``python -m bench.scenarios --out pcaps/scenarios [--seed S] [--only NAME ...]`` writes, per scenario,
``NAME.pcap`` (classic pcap, Ethernet, microsecond timestamps, byte-identical for a seed) and
``NAME.labels.json``: the findings the policy engine must raise on it (rule, signature id, zones,
conduit, flow rule, endpoints, operation, and the exact ``pcap_cnt`` of the packets that carry the
violation), the audit events it must write for allowed program/upload/mode/config/firmware operations,
and every flow with the operations our decoders must find in it.

The building blocks come from ``bench.gen_plant``: header templates patched per flow direction
(``dirs``), TCP sequence bookkeeping (``Tcp``), the Modbus FC 3/16 and SMB2 encoders and the pcap file
header. On top of them this module adds what the scenarios need: Modbus with UMAS (function 90),
S7comm over TPKT/COTP (connect, setup, read/write var, SZL, block upload and download, PI services),
RDP (X.224 connection request/confirm, then TLS), TLS handshakes, HTTP, Telnet, DNS, NTP and an SMB2
backup *pull* (READs). Every packet is recorded with its flow and the application message it
completes, so the labels are computed from the packets actually written, never typed in by hand.

Time: Tuesday 2024-06-11 (and Saturday 2024-06-15 for the out-of-hours scenario) in the plant's time
zone, Europe/Berlin, which is CEST (UTC+2) on those dates. Timestamps are chosen so that allowed
operations fall inside the policy's windows *in local time* while several of them are outside the same
windows read as UTC (the backup at 01:30 local is 23:30 UTC the day before): an engine that ignores the
time zone fails the compliant capture.

How the sensor sees the plant: an rx SPAN of the OT core switch with VLAN tags kept (VLANs 110-300; a
routed flow appears once, on the responder's VLAN, with the router's MAC for the far end) and an
untagged tap on the IDMZ firewall (flows to IDMZ hosts). Short frames are padded to 60 bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gen_plant import (
    ACK,
    MSS,
    PA,
    ROUTER_MAC,
    SMB2_CLOSE,
    SMB2_CREATE,
    SMB2_NEGOTIATE,
    SMB2_SESSION_SETUP,
    SMB2_TREE_CONNECT,
    Host,
    Pkt,
    Seg,
    Tcp,
    dirs,
    mb_read_req,
    mb_read_resp,
    mb_write_req,
    mb_write_resp,
    pcap_global_header,
    smb2,
)

GENERATOR_VERSION = 1
POLICY = "rules/purdue-plant.yaml"
TIMEZONE = "Europe/Berlin"
# Europe/Berlin on the scenario dates (summer time). A fixed offset, so that the files never depend on
# the host's time zone database; tests/bench/test_scenarios.py checks it against zoneinfo.
LOCAL = dt.timezone(dt.timedelta(hours=2), "CEST")
TUESDAY = dt.date(2024, 6, 11)
SATURDAY = dt.date(2024, 6, 15)

SIGNATURES = {
    "no_conduit": 9100001,
    "protocol_not_allowed": 9100002,
    "operation_not_allowed": 9100003,
    "responder_initiated": 9100004,
    "outside_schedule": 9100005,
    "unknown_host": 9100006,
    "intra_zone_not_allowed": 9100007,
    "rate_exceeded": 9100008,
}

_REC = struct.Struct("<IIII")  # pcap record header: seconds, microseconds, captured and wire length


def local_us(day: dt.date, hms: str) -> int:
    """Microseconds since the epoch of local plant time ``hms`` ("HH:MM:SS") on ``day``."""
    h, m, s = (int(x) for x in hms.split(":"))
    stamp = dt.datetime(day.year, day.month, day.day, h, m, s, tzinfo=LOCAL)
    return int(stamp.timestamp()) * 1_000_000


def iso_utc(us: int) -> str:
    """EVE's timestamp format."""
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat(timespec="microseconds")


def iso_local(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, LOCAL).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------ the plant


@dataclass(frozen=True)
class Node(Host):
    """A host of the plant and the zone rules/purdue-plant.yaml puts it in (None: in no zone)."""

    zone: str | None = None


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# L1. OUIs: 00:80:f4 Schneider Electric, 00:1b:1b Siemens; Siemens PLCs send with TTL 30.
PLC_F1 = Node("plc-f1", "10.31.10.11", _mac("00:80:f4:1f:0a:11"), 110, 64, "cell-filtration")
PLC_F2 = Node("plc-f2", "10.31.10.12", _mac("00:80:f4:1f:0a:12"), 110, 64, "cell-filtration")
PLC_P1 = Node("plc-p1", "10.31.20.11", _mac("00:1b:1b:2e:14:11"), 120, 30, "cell-pumping")
SIS_1 = Node("sis-1", "10.31.50.11", _mac("00:0e:8c:32:0b:11"), 150, 64, "sis")
# L2
SCADA_1 = Node("scada-1", "10.31.100.10", _mac("00:15:5d:64:0a:10"), 200, 128, "supervisory")
HMI_1 = Node("hmi-1", "10.31.100.21", _mac("00:15:5d:64:15:21"), 200, 128, "supervisory")
HMI_2 = Node("hmi-2", "10.31.100.22", _mac("00:15:5d:64:16:22"), 200, 128, "supervisory")
EWS_1 = Node("ews-1", "10.31.110.11", _mac("3c:52:82:6e:0b:11"), 210, 128, "engineering")
EWS_2 = Node("ews-2", "10.31.110.12", _mac("3c:52:82:6e:0c:12"), 210, 128, "engineering")
# L3
DC_1 = Node("dc-1", "10.31.200.10", _mac("00:15:5d:c8:0a:10"), 300, 128, "site-ops")
NTP_1 = Node("ntp-1", "10.31.200.11", _mac("00:b0:ae:c8:0b:11"), 300, 64, "site-ops")
HISTORIAN = Node("historian", "10.31.200.20", _mac("00:15:5d:c8:14:20"), 300, 128, "site-ops")
BACKUP_1 = Node("backup-1", "10.31.200.30", _mac("00:15:5d:c8:1e:30"), 300, 128, "site-ops")
WSUS_1 = Node("wsus-1", "10.31.200.40", _mac("00:15:5d:c8:28:40"), 300, 128, "site-ops")
# L3.5, seen on the untagged tap of the IDMZ firewall (VLAN id 350 only decides whose MAC is shown)
IDMZ_VID = 350
HIST_REPLICA = Node("hist-replica", "172.20.35.10", _mac("00:50:56:a3:23:10"), IDMZ_VID, 128, "idmz")
JUMP_1 = Node("jump-1", "172.20.35.20", _mac("00:50:56:a3:23:20"), IDMZ_VID, 128, "idmz")
PATCH_RELAY = Node("patch-relay", "172.20.35.30", _mac("00:50:56:a3:23:30"), IDMZ_VID, 128, "idmz")
# L4: only ever seen behind a router or firewall
LAPTOP = Node("lt-0457", "10.100.14.57", ROUTER_MAC, 0, 128, "enterprise")
# In no zone: a Raspberry Pi (OUI b8:27:eb) someone plugged into the filtration cell's access switch.
ROGUE = Node("rogue", "10.31.10.200", _mac("b8:27:eb:5c:a1:07"), 110, 64, None)

DOMAIN = "ot.riverside.example"


def segment_for(client: Node, server: Node) -> Seg:
    """Where the sensor sees a flow: the IDMZ tap for IDMZ servers, else the server's VLAN on the SPAN."""
    if server.zone == "idmz":
        return Seg(IDMZ_VID, "eth")
    return Seg(server.vid)


# ------------------------------------------------------------------------------ recording and labels


@dataclass(frozen=True, slots=True)
class Msg:
    """The application message a packet completes, as our decoders must report it."""

    direction: str  # "request" or "response"
    operation: str
    function: int


@dataclass(eq=False)
class FlowRec:
    client: Node
    server: Node
    sport: int
    dport: int
    proto: str  # "TCP" or "UDP"
    app_proto: str  # what the flow must be called (port guess, confirmed by a decoder for OT)
    seg: Seg


@dataclass(slots=True)
class Rec:
    ts: int  # µs since the epoch
    order: int  # tie-breaker: emission order
    frame: bytes
    flow: FlowRec
    msg: Msg | None


@dataclass
class Expect:
    """A finding (or, with rule "audit", an audit event) the policy engine must produce."""

    rule: str
    flow: FlowRec
    conduit: str | None
    flow_rule: str | None
    operation: str | None  # None: the flow as a whole is the violation
    why: str


@dataclass
class Scenario:
    name: str
    seed: int
    title: str = ""
    description: str = ""
    recs: list[Rec] = field(default_factory=list)
    expects: list[Expect] = field(default_factory=list)

    def rng(self, label: str) -> random.Random:
        return random.Random(f"conduitwatch-scenarios:{self.seed}:{self.name}:{label}")

    def emit(self, flow: FlowRec, pkt: Pkt, msg: Msg | None = None) -> None:
        ts, frame = pkt
        assert frame is not None
        self.recs.append(Rec(ts, len(self.recs), bytes(frame), flow, msg))

    def expect(
        self,
        rule: str,
        flow: FlowRec,
        conduit: str | None,
        flow_rule: str | None,
        operation: str | None,
        why: str,
    ) -> None:
        self.expects.append(Expect(rule, flow, conduit, flow_rule, operation, why))


# ------------------------------------------------------------------------------------- TCP and UDP


class TcpConv:
    """One TCP connection of a scenario: handshake, payloads split at the MSS, ACKs, FIN close."""

    def __init__(
        self,
        sc: Scenario,
        label: str,
        client: Node,
        server: Node,
        dport: int,
        t: int,
        app_proto: str,
        *,
        sport: int | None = None,
        cwin: int = 0x0201,
        swin: int = 0x0100,
        rtt: tuple[int, int] = (150, 900),
    ) -> None:
        self.sc = sc
        self.rng = rng = sc.rng(label)
        if sport is None:
            sport = rng.randrange(49152, 65535)
        seg = segment_for(client, server)
        self.flow = FlowRec(client, server, sport, dport, "TCP", app_proto, seg)
        c, s = dirs(seg, client, server, sport, dport, "tcp", rng)
        self.tcp = Tcp(c, s, rng, cwin=cwin, swin=swin)
        self.t = t
        self.rtt = rtt

    def open(self) -> None:
        rng = self.rng
        hs = self.tcp.handshake(self.t, rng.randint(*self.rtt), rng.randint(60, 300))
        for pkt in hs:
            self.sc.emit(self.flow, pkt)
        self.t = hs[-1][0]

    def send(
        self, from_client: bool, payload: bytes, msg: Msg | None = None, gap: tuple[int, int] = (200, 2000)
    ) -> None:
        """``payload`` after ``gap`` µs, in MSS-sized segments; the receiver ACKs every second one.

        The message tag goes on the last segment: that is the packet whose ``pcap_cnt`` a decoder gives
        the message.
        """
        rng = self.rng
        t = self.t + rng.randint(*gap)
        tcp = self.tcp
        send = tcp.cs if from_client else tcp.sc
        back = tcp.sc if from_client else tcp.cs
        n = max(1, -(-len(payload) // MSS))
        for i in range(n):
            chunk = payload[i * MSS : (i + 1) * MSS]
            last = i == n - 1
            self.sc.emit(self.flow, send(t, chunk, PA if last else ACK), msg if last else None)
            if not last:
                if i % 2 == 1:
                    self.sc.emit(self.flow, back(t + rng.randint(20, 80), b"", ACK))
                t += rng.randint(110, 160)  # ~1 Gbit/s plus host jitter
        self.t = t

    def c(self, payload: bytes, msg: Msg | None = None, gap: tuple[int, int] = (200, 2000)) -> None:
        self.send(True, payload, msg, gap)

    def s(self, payload: bytes, msg: Msg | None = None, gap: tuple[int, int] = (200, 2000)) -> None:
        self.send(False, payload, msg, gap)

    def ack(self, from_client: bool, gap: tuple[int, int] = (20_000, 45_000)) -> None:
        """A pure (delayed) ACK."""
        self.t += self.rng.randint(*gap)
        send = self.tcp.cs if from_client else self.tcp.sc
        self.sc.emit(self.flow, send(self.t, b"", ACK))

    def close(self, client_first: bool = True, gap: tuple[int, int] = (500, 5000)) -> None:
        rng = self.rng
        pkts = self.tcp.close(
            self.t + rng.randint(*gap), rng.randint(*self.rtt), rng.randint(60, 300), client_first
        )
        for pkt in pkts:
            self.sc.emit(self.flow, pkt)
        self.t = pkts[-1][0]


def udp_exchange(
    sc: Scenario,
    label: str,
    client: Node,
    server: Node,
    dport: int,
    t: int,
    request: bytes,
    response: bytes,
    app_proto: str,
    *,
    sport: int | None = None,
) -> FlowRec:
    """One request datagram and its answer."""
    rng = sc.rng(label)
    if sport is None:
        sport = rng.randrange(49152, 65535)
    seg = segment_for(client, server)
    flow = FlowRec(client, server, sport, dport, "UDP", app_proto, seg)
    q, r = dirs(seg, client, server, sport, dport, "udp", rng)
    sc.emit(flow, (t, q.udp(request)))
    sc.emit(flow, (t + rng.randint(200, 1500), r.udp(response)))
    return flow


# --------------------------------------------------------------------------------------- DNS and NTP


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"


def dns_query(
    sc: Scenario, label: str, client: Node, server: Node, t: int, name: str, answer: str
) -> FlowRec:
    rng = sc.rng(label + ":id")
    txid = rng.getrandbits(16)
    question = dns_name(name) + struct.pack(">HH", 1, 1)  # A, IN
    query = struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + question
    rr = struct.pack(">HHHIH", 0xC00C, 1, 1, 1200, 4) + socket.inet_aton(answer)
    resp = struct.pack(">HHHHHH", txid, 0x8580, 1, 1, 0, 0) + question + rr
    return udp_exchange(sc, label, client, server, 53, t, query, resp, "dns")


NTP_EPOCH_OFFSET = 2_208_988_800


def _ntp_ts(us: int) -> bytes:
    sec, frac = divmod(us, 1_000_000)
    return struct.pack(">II", sec + NTP_EPOCH_OFFSET, (frac << 32) // 1_000_000)


def ntp_query(sc: Scenario, label: str, client: Node, server: Node, t: int) -> FlowRec:
    """NTPv4 client request (mode 3) and a stratum-1 GPS server's answer (mode 4)."""
    req = bytes([0x23, 0, 6, 0xEC]) + bytes(36) + _ntp_ts(t)
    resp = bytes([0x24, 1, 6, 0xEC]) + struct.pack(">II", 0, 0x10) + b"GPS\x00"
    resp += _ntp_ts(t - 16_000_000) + req[40:48] + _ntp_ts(t + 200) + _ntp_ts(t + 260)
    return udp_exchange(sc, label, client, server, 123, t, req, resp, "ntp", sport=123)


# ---------------------------------------------------------------------------------------- Modbus/TCP


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


UMAS = 90
UMAS_OK = 0xFE
# UMAS sub-functions (DOMAIN.md section 5) and the operation class the decoder gives each.
UMAS_CLASS = {0x10: "session", 0x11: "session", 0x22: "read", 0x30: "program", 0x31: "program",
              0x32: "program", 0x40: "mode", 0x41: "mode", 0x58: "diagnostic"}  # fmt: skip


class ModbusConv(TcpConv):
    """A Modbus/TCP client connection; the client is whoever opened it (a PLC, in one scenario)."""

    def __init__(
        self, sc: Scenario, label: str, client: Node, server: Node, t: int, unit: int = 255, **kw: Any
    ) -> None:
        super().__init__(sc, label, client, server, 502, t, "modbus", swin=0x0010, **kw)
        self.unit = unit
        self.tid = self.rng.randrange(1, 0x4000)
        self.umas_key = 0

    def _next_tid(self) -> int:
        tid = self.tid
        self.tid = (tid + 1) & 0xFFFF
        return tid

    def call(
        self,
        request: bytes,
        response: bytes,
        operation: str,
        function: int,
        think: tuple[int, int] = (300, 3000),
        latency: tuple[int, int] = (1500, 8000),
    ) -> None:
        """A request (whole MBAP frame) and its response."""
        self.c(request, Msg("request", operation, function), think)
        self.s(response, Msg("response", operation, function), latency)

    def pdu_call(self, req_pdu: bytes, resp_pdu: bytes, operation: str, **kw: Any) -> None:
        tid = self._next_tid()
        self.call(mbap(tid, self.unit, req_pdu), mbap(tid, self.unit, resp_pdu), operation, req_pdu[0], **kw)

    def read_holding(self, addr: int, qty: int, **kw: Any) -> None:
        tid = self._next_tid()
        values = struct.pack(f">{qty}H", *(self.rng.randrange(0, 4000) for _ in range(qty)))
        req, resp = mb_read_req(tid, self.unit, addr, qty), mb_read_resp(tid, self.unit, values)
        self.call(req, resp, "read", 3, **kw)

    def read_input(self, addr: int, qty: int, **kw: Any) -> None:
        values = struct.pack(f">{qty}H", *(self.rng.randrange(0, 4000) for _ in range(qty)))
        self.pdu_call(struct.pack(">BHH", 4, addr, qty), bytes([4, 2 * qty]) + values, "read", **kw)

    def write_registers(self, addr: int, values: list[int], **kw: Any) -> None:
        tid = self._next_tid()
        data = struct.pack(f">{len(values)}H", *values)
        req, resp = mb_write_req(tid, self.unit, addr, data), mb_write_resp(tid, self.unit, addr, len(values))
        self.call(req, resp, "write", 16, **kw)

    def write_register(self, addr: int, value: int, **kw: Any) -> None:
        pdu = struct.pack(">BHH", 6, addr, value)
        self.pdu_call(pdu, pdu, "write", **kw)  # the response echoes the request

    def write_coil(self, addr: int, on: bool, **kw: Any) -> None:
        pdu = struct.pack(">BHH", 5, addr, 0xFF00 if on else 0)
        self.pdu_call(pdu, pdu, "write", **kw)

    def device_id(self, vendor: str, product: str, revision: str, **kw: Any) -> None:
        """FC 43 / MEI 14, basic device identification (objects 0-2)."""
        objects = b"".join(bytes([i, len(v)]) + v.encode() for i, v in enumerate((vendor, product, revision)))
        resp = bytes([43, 14, 1, 0x81, 0, 0, 3]) + objects
        self.pdu_call(bytes([43, 14, 1, 0]), resp, "diagnostic", **kw)

    def umas(self, func: int, data: bytes = b"", reply: bytes = b"", **kw: Any) -> None:
        """A UMAS request (function 90, session key, sub-function) and its OK reply."""
        key = self.umas_key
        self.pdu_call(
            bytes([UMAS, key, func]) + data, bytes([UMAS, key, UMAS_OK]) + reply, UMAS_CLASS[func], **kw
        )

    def umas_reserve(self, station: str) -> None:
        """0x10 take the PLC reservation; the PLC answers with the session key used from then on."""
        key = self.rng.randrange(0x10, 0xF0)
        self.umas(0x10, bytes(4) + bytes([len(station)]) + station.encode(), bytes([key]))
        self.umas_key = key

    def umas_download(self, blocks: int) -> None:
        """Stop, download the application (0x30 init, 0x31 blocks, 0x32 end), start: a logic change."""
        rng = self.rng
        self.umas(0x41, b"\xff\x00")  # stop
        self.umas(0x30, b"\x01\x00", b"\xf4\x00", latency=(20_000, 60_000))  # init download; max frame 244
        for n in range(blocks):
            # Compiled logic: little-endian instruction words (random bytes trip Wireshark's openSAFETY
            # heuristic now and then).
            words = rng.randint(90, 118)
            chunk = struct.pack(f"<{words}H", *(rng.randrange(0, 0x0400) for _ in range(words)))
            self.umas(
                0x31,
                b"\x01\x00" + struct.pack("<HH", n + 1, len(chunk)) + chunk,
                think=(400, 1500),
                latency=(3000, 12_000),
            )
        self.umas(0x32, b"\x01\x00" + struct.pack("<H", blocks), latency=(50_000, 250_000))
        self.umas(0x40, b"\xff\x00", think=(300_000, 900_000), latency=(80_000, 300_000))  # start


def modbus_polling(
    sc: Scenario,
    label: str,
    client: Node,
    plc: Node,
    t: int,
    seconds: int,
    *,
    period_ms: int = 1000,
    writes: int = 1,
) -> ModbusConv:
    """An HMI's poll of one PLC: two holding-register reads per cycle, a few setpoint writes."""
    conv = ModbusConv(sc, label, client, plc, t)
    conv.open()
    rng = conv.rng
    cycles = seconds * 1000 // period_ms
    write_at = set(rng.sample(range(2, cycles), min(writes, max(0, cycles - 2))))
    blocks = [(rng.randrange(0, 40) * 100, rng.choice((10, 16, 20, 32))) for _ in range(2)]
    start = conv.t
    for cycle in range(cycles):
        conv.t = max(conv.t, start + cycle * period_ms * 1000 + rng.randint(-2000, 2000))
        for addr, qty in blocks:
            conv.read_holding(addr, qty)
        if cycle in write_at:
            conv.write_registers(1000 + rng.randrange(0, 40) * 10, [rng.randrange(0, 1000) for _ in range(2)])
        conv.ack(True)  # Windows delayed ACK of the last response before the next cycle
    conv.close()
    return conv


# ------------------------------------------------------------------------------------------- S7comm


def tpkt(tpdu: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, 4 + len(tpdu)) + tpdu


def cotp_connect(code: int, dst_ref: int, src_ref: int, src_tsap: bytes, dst_tsap: bytes) -> bytes:
    """COTP CR (0xE0) or CC (0xD0), class 0, TPDU size 1024, calling and called TSAP."""
    params = b"\xc0\x01\x0a" + b"\xc1\x02" + src_tsap + b"\xc2\x02" + dst_tsap
    body = struct.pack(">BHHB", code, dst_ref, src_ref, 0) + params
    return tpkt(bytes([len(body)]) + body)


def cotp_dt(pdu: bytes) -> bytes:
    return tpkt(b"\x02\xf0\x80" + pdu)  # DT, last data unit


def s7_job(ref: int, param: bytes, data: bytes = b"") -> bytes:
    return cotp_dt(struct.pack(">BBHHHH", 0x32, 1, 0, ref, len(param), len(data)) + param + data)


def s7_ack_data(ref: int, param: bytes, data: bytes = b"") -> bytes:
    return cotp_dt(struct.pack(">BBHHHHBB", 0x32, 3, 0, ref, len(param), len(data), 0, 0) + param + data)


def s7_userdata(ref: int, param: bytes, data: bytes) -> bytes:
    return cotp_dt(struct.pack(">BBHHHH", 0x32, 7, 0, ref, len(param), len(data)) + param + data)


def s7_any(area: int, db: int, byte: int, length: int) -> bytes:
    """An S7ANY item: syntax 0x10, transport size BYTE, length, DB, area, bit address."""
    return b"\x12\x0a\x10\x02" + struct.pack(">HHB", length, db, area) + (byte * 8).to_bytes(3, "big")


AREA_DB = 0x84
COTP_CR, COTP_CC = 0xE0, 0xD0
S7_SETUP, S7_READ, S7_WRITE, S7_PI = 0xF0, 0x04, 0x05, 0x28
S7_DL_REQ, S7_DL_BLOCK, S7_DL_END, S7_UL_START, S7_UL, S7_UL_END = 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F
USERDATA_SZL = 0x10000 | 0x04 << 8 | 0x01  # the decoder's function for userdata CPU functions / read SZL


def _block_file(block: str) -> bytes:
    """Block-control file name: "_", block type (0C FC, 08 OB, 0A DB), 5-digit number, filesystem."""
    return bytes([9]) + block.encode()


class S7Conv(TcpConv):
    """An S7comm connection over ISO-on-TCP (TCP 102)."""

    def __init__(self, sc: Scenario, label: str, client: Node, plc: Node, t: int, **kw: Any) -> None:
        super().__init__(sc, label, client, plc, 102, t, "s7comm", swin=0x0800, **kw)
        self.ref_c = self.rng.randrange(0x100, 0x4000)  # PDU references of the client's jobs
        self.ref_s = self.rng.randrange(0x100, 0x4000)  # ... and of the PLC's (download blocks)

    def connect(self, conn_type: int, slot: int, pdu_size: int = 480) -> None:
        """COTP CR/CC with the S7 TSAPs (connection type PG 1 / OP 2 / basic 3, rack 0), then setup."""
        rng = self.rng
        src_ref, dst_ref = rng.randrange(1, 0xFFFF), rng.randrange(1, 0xFFFF)
        src_tsap, dst_tsap = bytes([conn_type, 0]), bytes([conn_type, slot])
        self.c(
            cotp_connect(COTP_CR, 0, src_ref, src_tsap, dst_tsap), Msg("request", "session", 0x100 | COTP_CR)
        )
        self.s(
            cotp_connect(COTP_CC, src_ref, dst_ref, src_tsap, dst_tsap),
            Msg("response", "session", 0x100 | COTP_CC),
            gap=(800, 3000),
        )
        param = b"\xf0\x00" + struct.pack(">HHH", 1, 1, pdu_size)
        self.job(param, b"", b"\xf0\x00" + struct.pack(">HHH", 1, 1, min(pdu_size, 480)), b"", "session")

    def job(
        self,
        param: bytes,
        data: bytes,
        resp_param: bytes,
        resp_data: bytes,
        operation: str,
        think: tuple[int, int] = (300, 3000),
        latency: tuple[int, int] = (2000, 12_000),
    ) -> None:
        """A job of the client and the PLC's Ack_Data."""
        ref = self.ref_c
        self.ref_c = (ref + 1) & 0xFFFF
        self.c(s7_job(ref, param, data), Msg("request", operation, param[0]), think)
        self.s(s7_ack_data(ref, resp_param, resp_data), Msg("response", operation, resp_param[0]), latency)

    def plc_job(self, param: bytes, resp_param: bytes, resp_data: bytes, operation: str) -> None:
        """A job sent by the PLC (download block / download ended) and the client's Ack_Data."""
        ref = self.ref_s
        self.ref_s = (ref + 1) & 0xFFFF
        self.s(s7_job(ref, param), Msg("request", operation, param[0]), (1000, 6000))
        self.c(
            s7_ack_data(ref, resp_param, resp_data), Msg("response", operation, resp_param[0]), (300, 2000)
        )

    def read_db(self, items: list[tuple[int, int, int]], **kw: Any) -> None:
        """Read Var of several DB areas (db, byte offset, length)."""
        param = bytes([S7_READ, len(items)]) + b"".join(s7_any(AREA_DB, db, off, n) for db, off, n in items)
        data = b""
        for i, (_, _, n) in enumerate(items):
            data += b"\xff\x04" + struct.pack(">H", n * 8) + self.rng.randbytes(n)
            if n % 2 and i < len(items) - 1:
                data += b"\x00"  # fill byte between items
        self.job(param, b"", bytes([S7_READ, len(items)]), data, "read", **kw)

    def write_db(self, db: int, off: int, value: bytes, **kw: Any) -> None:
        param = bytes([S7_WRITE, 1]) + s7_any(AREA_DB, db, off, len(value))
        data = b"\x00\x04" + struct.pack(">H", len(value) * 8) + value
        self.job(param, data, bytes([S7_WRITE, 1]), b"\xff", "write", **kw)

    def read_szl(self, szl_id: int, index: int) -> None:
        """Userdata CPU functions / read SZL (diagnostic): an HMI's or EWS's status query."""
        ref = self.ref_c
        self.ref_c = (ref + 1) & 0xFFFF
        req_param = b"\x00\x01\x12\x04\x11\x44\x01\x00"  # request (type 1), group 4 CPU, read SZL
        self.c(
            s7_userdata(ref, req_param, b"\xff\x09\x00\x04" + struct.pack(">HH", szl_id, index)),
            Msg("request", "diagnostic", USERDATA_SZL),
        )
        records = self.rng.randbytes(28)
        body = struct.pack(">HHHH", szl_id, index, 28, 1) + records
        resp_param = b"\x00\x01\x12\x08\x12\x84\x01\x00\x00\x00\x00\x00"  # response (type 2), last unit
        self.s(
            s7_userdata(ref, resp_param, b"\xff\x09" + struct.pack(">H", len(body)) + body),
            Msg("response", "diagnostic", USERDATA_SZL),
            gap=(3000, 15_000),
        )

    def upload(self, block: str, size: int) -> None:
        """Block upload PLC -> PG (1D start, 1E data, 1F end): the EWS reads the logic out."""
        upload_id = self.rng.randrange(1, 0xFFFF)
        uid = struct.pack(">I", upload_id)
        self.job(
            bytes([S7_UL_START]) + bytes(7) + _block_file(block),
            b"",
            bytes([S7_UL_START, 0, 1, 0]) + uid + b"\x07" + f"{size:07d}".encode(),
            b"",
            "upload",
        )
        sent = 0
        while sent < size:
            n = min(200, size - sent)
            sent += n
            more = 1 if sent < size else 0
            self.job(
                bytes([S7_UL, 0, 0, 0]) + uid,
                b"",
                bytes([S7_UL, more]),
                struct.pack(">H", n) + b"\x00\xfb" + self.rng.randbytes(n),
                "upload",
            )
        self.job(bytes([S7_UL_END, 0, 0, 0]) + uid, b"", bytes([S7_UL_END]), b"", "upload")

    def download(self, block: str, size: int) -> None:
        """Block download PG -> PLC: request (PG), download block and ended (jobs of the PLC), then
        the PI service _INSE that activates the block. Every step is ``program``."""
        name = _block_file(block)
        lengths = b"\x0d1" + f"{size:06d}".encode() + f"{max(0, size - 36):06d}".encode()
        self.job(
            bytes([S7_DL_REQ, 0, 1, 0, 0, 0, 0, 0]) + name + lengths, b"", bytes([S7_DL_REQ]), b"", "program"
        )
        sent = 0
        while sent < size:
            n = min(200, size - sent)
            sent += n
            more = 1 if sent < size else 0
            self.plc_job(
                bytes([S7_DL_BLOCK, 0, 1, 0, 0, 0, 0, 0]) + name,
                bytes([S7_DL_BLOCK, more]),
                struct.pack(">H", n) + b"\x00\xfb" + self.rng.randbytes(n),
                "program",
            )
        # Download ended: function, status, error code 0 (success), 4 unknown bytes, file name.
        self.plc_job(bytes([S7_DL_END, 0, 0, 0, 0, 0, 0, 0]) + name, bytes([S7_DL_END]), b"", "program")
        blocks = b"\x01\x00" + block[1:].encode()  # one block, then type, number, filesystem
        pi = bytes([S7_PI]) + bytes(6) + b"\xfd" + struct.pack(">H", len(blocks)) + blocks + b"\x05_INSE"
        self.job(pi, b"", bytes([S7_PI]), b"", "program", latency=(20_000, 80_000))


def s7_hmi_polling(
    sc: Scenario,
    label: str,
    client: Node,
    plc: Node,
    t: int,
    seconds: int,
    *,
    conn_type: int = 2,
    writes: int = 1,
) -> S7Conv:
    """An OP connection: connect, a status query, then a read of three DB areas every second."""
    conv = S7Conv(sc, label, client, plc, t)
    conv.open()
    conv.connect(conn_type, 3)
    conv.read_szl(0x0424, 0)  # current mode
    rng = conv.rng
    items = [(10, 0, 40), (11, 0, 24), (20, 100, 8)]
    write_at = set(rng.sample(range(2, seconds), min(writes, max(0, seconds - 2))))
    start = conv.t
    for cycle in range(seconds):
        conv.t = max(conv.t, start + cycle * 1_000_000 + rng.randint(-2000, 2000))
        conv.read_db(items)
        if cycle in write_at:
            conv.write_db(20, 100, struct.pack(">f", rng.uniform(2.0, 4.5)))  # pump pressure setpoint, bar
        conv.ack(True)
    conv.close()
    return conv


# -------------------------------------------------------------------------------------- TLS and RDP


def tls_record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack(">BHH", ctype, version, len(body)) + body


def _hs(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def _ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack(">HH", ext_type, len(body)) + body


def tls_handshake(conv: TcpConv, sni: str | None) -> None:
    """A TLS 1.2 ECDHE handshake: well-formed messages, random key material, an empty certificate list
    (synthetic traffic carries no real certificate), encrypted Finished messages."""
    rng = conv.rng
    suites = struct.pack(">7H", 0xC02F, 0xC030, 0xC02B, 0xC02C, 0x009E, 0x009F, 0x00FF)
    exts = b""
    if sni:
        name = sni.encode()
        exts += _ext(0, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    exts += _ext(0x000A, b"\x00\x04\x00\x1d\x00\x17")  # supported groups: x25519, secp256r1
    exts += _ext(0x000B, b"\x01\x00")  # EC point formats: uncompressed
    exts += _ext(0x000D, b"\x00\x06\x08\x04\x04\x01\x04\x03")  # signature algorithms
    exts += _ext(0x0017, b"")  # extended master secret
    hello = b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
    hello += struct.pack(">H", len(suites)) + suites + b"\x01\x00" + struct.pack(">H", len(exts)) + exts
    conv.c(tls_record(0x16, _hs(1, hello), 0x0301))
    server_hello = b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\xc0\x30\x00"
    server_hello += struct.pack(">H", 9) + _ext(0xFF01, b"\x00") + _ext(0x0017, b"")
    ske = b"\x03\x00\x1d\x20" + rng.randbytes(32) + b"\x08\x04" + struct.pack(">H", 256) + rng.randbytes(256)
    flight = _hs(2, server_hello) + _hs(11, b"\x00\x00\x00") + _hs(12, ske) + _hs(14, b"")
    conv.s(tls_record(0x16, flight), gap=(1000, 6000))
    finished_c = tls_record(0x16, _hs(16, b"\x20" + rng.randbytes(32))) + tls_record(0x14, b"\x01")
    conv.c(finished_c + tls_record(0x16, rng.randbytes(40)))
    conv.s(tls_record(0x14, b"\x01") + tls_record(0x16, rng.randbytes(40)), gap=(500, 3000))


def tls_data(conv: TcpConv, from_client: bool, size: int, gap: tuple[int, int] = (200, 2000)) -> None:
    conv.send(from_client, tls_record(0x17, conv.rng.randbytes(size)), None, gap)


def rdp_session(
    sc: Scenario, label: str, client: Node, server: Node, t: int, user: str, seconds: int
) -> TcpConv:
    """X.224 connection request (mstshash cookie, asks for TLS/CredSSP), confirm (CredSSP), TLS, then
    NLA and a session of screen updates and input, all inside TLS."""
    conv = TcpConv(sc, label, client, server, 3389, t, "rdp", cwin=0x0402, swin=0x0402)
    conv.open()
    cookie = f"Cookie: mstshash={user}\r\n".encode()
    neg_req = struct.pack("<BBHI", 1, 0, 8, 0x0000000B)  # TLS | CredSSP | CredSSP early user auth
    cr = struct.pack(">BHHB", 0xE0, 0, 0, 0) + cookie + neg_req
    conv.c(tpkt(bytes([len(cr)]) + cr))
    neg_rsp = struct.pack("<BBHI", 2, 0x1F, 8, 0x00000002)  # selected: CredSSP
    cc = struct.pack(">BHHB", 0xD0, 0, conv.rng.randrange(1, 0xFFFF), 0) + neg_rsp
    conv.s(tpkt(bytes([len(cc)]) + cc), gap=(500, 3000))
    tls_handshake(conv, None)
    rng = conv.rng
    for size_c, size_s in ((330, 310), (620, 90), (120, 0)):  # CredSSP (NLA) tokens
        tls_data(conv, True, size_c)
        if size_s:
            tls_data(conv, False, size_s, (2000, 20_000))
    end = conv.t + seconds * 1_000_000
    while conv.t < end:
        tls_data(conv, True, rng.randint(30, 90), (200_000, 1_200_000))  # keyboard and mouse
        tls_data(conv, False, rng.randint(120, 1400), (4000, 20_000))  # bitmap updates
    conv.close()
    return conv


def https_session(
    sc: Scenario, label: str, client: Node, server: Node, t: int, sni: str, requests: int
) -> TcpConv:
    conv = TcpConv(sc, label, client, server, 443, t, "tls", cwin=0x0402, swin=0x0402)
    conv.open()
    tls_handshake(conv, sni)
    for _ in range(requests):
        tls_data(conv, True, conv.rng.randint(300, 700), (5000, 400_000))
        tls_data(conv, False, conv.rng.randint(800, 5000), (3000, 60_000))
    conv.close()
    return conv


# -------------------------------------------------------------------------------------- HTTP, Telnet


def http_get(sc: Scenario, label: str, client: Node, server: Node, t: int, path: str, title: str) -> TcpConv:
    conv = TcpConv(sc, label, client, server, 80, t, "http")
    conv.open()
    conv.c(
        (
            f"GET {path} HTTP/1.1\r\nHost: {server.ip}\r\n"
            "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\n"
            "Accept: text/html\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>".encode()
    body += b"<p>Rack 0, slot 0: RUN</p>" * 24 + b"</body></html>"
    head = f"HTTP/1.1 200 OK\r\nServer: WEB-PLC\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
    conv.s(head.encode() + b"Connection: close\r\n\r\n" + body, gap=(5000, 30_000))
    conv.close(client_first=False)
    return conv


def telnet_login(sc: Scenario, label: str, client: Node, server: Node, t: int) -> TcpConv:
    """Option negotiation, the login prompt of an Ethernet module's embedded OS, a failed login."""
    conv = TcpConv(sc, label, client, server, 23, t, "telnet")
    conv.open()
    conv.s(b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27", gap=(2000, 8000))  # DO TTYPE, TSPEED, ...
    conv.c(b"\xff\xfc\x18\xff\xfc\x20\xff\xfc\x23\xff\xfc\x27")
    conv.s(b"\xff\xfb\x03\xff\xfb\x01\r\n\r\nlogin: ", gap=(1000, 5000))  # WILL SGA, WILL ECHO
    conv.c(b"\xff\xfd\x03\xff\xfd\x01")
    conv.c(b"admin\r\n", gap=(1_500_000, 3_000_000))
    conv.s(b"admin\r\nPassword: ", gap=(1000, 5000))
    conv.c(b"admin\r\n", gap=(1_500_000, 3_000_000))
    conv.s(b"\r\nLogin incorrect\r\n\r\nlogin: ", gap=(900_000, 1_100_000))
    conv.close()
    return conv


# --------------------------------------------------------------------------------------------- SMB2

SMB2_READ = 8


def smb_backup(
    sc: Scenario,
    label: str,
    server: Node,
    t: int,
    share: str,
    files: list[tuple[str, int]],
    client: Node = BACKUP_1,
) -> TcpConv:
    """The backup server pulls files: NEGOTIATE, SESSION_SETUP, TREE_CONNECT, per file CREATE, 64 KiB
    READs (responses in MSS segments), CLOSE."""
    conv = TcpConv(sc, label, client, server, 445, t, "smb", cwin=0x0402, swin=0x0402, rtt=(100, 400))
    conv.open()
    rng = conv.rng
    session = rng.getrandbits(64) | 1
    tree = rng.randrange(1, 16)
    guid_c, guid_s = rng.randbytes(16), rng.randbytes(16)
    neg = struct.pack("<HHHHI16sQHH", 36, 2, 1, 0, 0x7, guid_c, 0, 0x0202, 0x0210)
    neg_resp = struct.pack("<HHHH16s", 65, 1, 0x0210, 0, guid_s)
    neg_resp += struct.pack("<IIIIQQHHI", 0x7, 1 << 20, 1 << 20, 1 << 20, 0, 0, 0x80, 0, 0)
    conv.c(smb2(SMB2_NEGOTIATE, 0, neg, charge=0))
    conv.s(smb2(SMB2_NEGOTIATE, 0, neg_resp, resp=True, charge=0))
    conv.c(smb2(SMB2_SESSION_SETUP, 1, struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 0x58, 0, 0)))
    conv.s(
        smb2(
            SMB2_SESSION_SETUP, 1, struct.pack("<HHHH", 9, 0, 0x48, 0), resp=True, session=session, credits=32
        )
    )
    path = share.encode("utf-16-le")
    conv.c(smb2(SMB2_TREE_CONNECT, 2, struct.pack("<HHHH", 9, 0, 0x48, len(path)) + path, session=session))
    tree_resp = struct.pack("<HBBIII", 16, 1, 0, 0, 0, 0x001F01FF)
    conv.s(smb2(SMB2_TREE_CONNECT, 2, tree_resp, resp=True, tree=tree, session=session, credits=64))
    msg_id = 3
    for fname, size in files:
        name = fname.encode("utf-16-le")
        file_id = rng.randbytes(16)
        create = struct.pack(
            "<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x00120089, 0, 0x7, 1, 0x40, 0x78, len(name), 0, 0
        )
        conv.c(smb2(SMB2_CREATE, msg_id, create + name, tree=tree, session=session))
        create_resp = struct.pack(
            "<HBBIQQQQQQII16sII", 89, 0, 0, 1, 0, 0, 0, 0, size, size, 0x80, 0, file_id, 0, 0
        )
        conv.s(smb2(SMB2_CREATE, msg_id, create_resp, resp=True, tree=tree, session=session, credits=64))
        msg_id += 1
        offset = 0
        while offset < size:
            n = min(65536, size - offset)
            read = struct.pack("<HBBIQ16sIIIHHB", 49, 0x50, 0, n, offset, file_id, 0, 0, 0, 0, 0, 0)
            conv.c(smb2(SMB2_READ, msg_id, read, tree=tree, session=session), gap=(100, 600))
            body = struct.pack("<HBBIII", 17, 0x50, 0, n, 0, 0) + rng.randbytes(n)
            conv.s(
                smb2(SMB2_READ, msg_id, body, resp=True, tree=tree, session=session, credits=64),
                gap=(300, 2000),
            )
            msg_id += 1
            offset += n
        conv.c(
            smb2(SMB2_CLOSE, msg_id, struct.pack("<HHI16s", 24, 0, 0, file_id), tree=tree, session=session)
        )
        close_resp = struct.pack("<HHIQQQQQQI", 60, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        conv.s(smb2(SMB2_CLOSE, msg_id, close_resp, resp=True, tree=tree, session=session))
        msg_id += 1
    conv.close()
    return conv


# ------------------------------------------------------------------------------------------ scenarios


def background_polling(sc: Scenario, t: int, seconds: int = 20) -> None:
    """The control room keeps polling the filtration cell: allowed traffic around every violation."""
    modbus_polling(sc, "bg:hmi-1>plc-f1", HMI_1, PLC_F1, t, seconds, writes=0)


def compliant(sc: Scenario) -> None:
    sc.title = "A compliant plant day"
    sc.description = (
        "Tuesday 2024-06-11, local time: nightly SMB backups pulled by backup-1 from the historian, the "
        "SCADA server and an EWS (01:30-01:52, inside 01:00-04:00); NTP and DNS to site operations; a remote "
        "engineer through the jump host (07:30, inside 07:00-19:00); HMIs polling the filtration PLCs "
        "(Modbus) and the pumping PLC (S7comm), SCADA reading the SIS (FC 3/4), the historian collecting "
        "(08:00); a UMAS logic download from ews-1 (10:15) and an S7 block upload and download from ews-2 "
        "(10:40), both inside the Tuesday 09:00-15:00 change window; enterprise dashboards on the historian "
        "replica, historian replication and a patch pull into the IDMZ. No finding; the program, upload "
        "and mode operations are audited."
    )
    day = TUESDAY
    # Nightly backups (01:00-04:00 local = 23:00-02:00 UTC).
    dns_query(
        sc, "dns:backup", BACKUP_1, DC_1, local_us(day, "01:29:58"), f"historian.{DOMAIN}", HISTORIAN.ip
    )
    smb_backup(
        sc,
        "smb:historian",
        HISTORIAN,
        local_us(day, "01:30:00"),
        r"\\historian\archive$",
        [(r"2024\06\10\pi_archive_1.arc", 24_000), (r"2024\06\10\events.dat", 6_000)],
    )
    smb_backup(
        sc,
        "smb:scada",
        SCADA_1,
        local_us(day, "01:42:00"),
        r"\\scada-1\projects$",
        [(r"scada\riverside.prj", 16_000)],
    )
    smb_backup(
        sc, "smb:ews", EWS_1, local_us(day, "01:51:00"), r"\\ews-1\plc$", [(r"filtration\plc-f1.stu", 12_000)]
    )
    # Time and names.
    t = local_us(day, "06:00:00")
    for i, host in enumerate((HMI_1, HMI_2, SCADA_1, EWS_1)):
        ntp_query(sc, f"ntp:{host.name}", host, NTP_1, t + i * 3_100_000)
    dns_query(sc, "dns:hmi-1", HMI_1, DC_1, local_us(day, "07:58:10"), f"plc-f1.{DOMAIN}", PLC_F1.ip)
    dns_query(sc, "dns:ews-1", EWS_1, DC_1, local_us(day, "10:14:30"), f"plc-f1.{DOMAIN}", PLC_F1.ip)
    # Remote engineer: enterprise -> jump host -> EWS.
    rdp_session(sc, "rdp:laptop>jump-1", LAPTOP, JUMP_1, local_us(day, "07:30:00"), "a.berger", 35)
    rdp_session(sc, "rdp:jump-1>ews-1", JUMP_1, EWS_1, local_us(day, "07:30:20"), "a.berger", 20)
    # Operations: HMIs, SCADA -> SIS, historian collection.
    t = local_us(day, "08:00:00")
    modbus_polling(sc, "mb:hmi-1>plc-f1", HMI_1, PLC_F1, t, 40, writes=2)
    modbus_polling(sc, "mb:hmi-1>plc-f2", HMI_1, PLC_F2, t + 120_000, 40, writes=1)
    s7_hmi_polling(sc, "s7:hmi-2>plc-p1", HMI_2, PLC_P1, t + 250_000, 20)
    sis = ModbusConv(sc, "mb:scada-1>sis-1", SCADA_1, SIS_1, t + 400_000, unit=1)
    sis.open()
    for i in range(8):
        sis.t = max(sis.t, t + 400_000 + i * 2_000_000)
        sis.read_holding(0, 24)  # trip status, gas detector states
        sis.read_input(100, 16)  # detector readings
    sis.close()
    hist = ModbusConv(sc, "mb:historian>plc-f1", HISTORIAN, PLC_F1, t + 10_000_000)
    hist.open()
    for i in range(10):
        hist.t = max(hist.t, t + 10_000_000 + i * 2_000_000)
        hist.read_holding(3000, 64)
        hist.read_input(0, 32)
    hist.close()
    hs7 = S7Conv(sc, "s7:historian>plc-p1", HISTORIAN, PLC_P1, t + 12_000_000)
    hs7.open()
    hs7.connect(3, 3)
    for i in range(8):
        hs7.t = max(hs7.t, t + 12_500_000 + i * 2_000_000)
        hs7.read_db([(10, 0, 40), (30, 0, 96)])
    hs7.close()
    # Change window (Tuesday 09:00-15:00 local = 07:00-13:00 UTC): ews-1 downloads the filtration logic.
    ews = ModbusConv(sc, "umas:ews-1>plc-f1", EWS_1, PLC_F1, local_us(day, "10:15:00"), unit=0)
    ews.open()
    ews.umas_reserve("EWS-1")
    ews.umas(0x58, b"\x01\x00")  # check PLC
    ews.umas(0x22, b"\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x00\x00", b"\x00\x00")  # read a variable
    ews.umas_download(6)
    ews.umas(0x58, b"\x01\x00", think=(500_000, 1_500_000))
    ews.umas(0x11)  # release the reservation
    ews.close()
    sc.expect(
        "audit",
        ews.flow,
        "engineering-filtration",
        "ews-changes",
        "mode",
        "stop (0x41) and start (0x40) in the change window",
    )
    sc.expect(
        "audit",
        ews.flow,
        "engineering-filtration",
        "ews-changes",
        "program",
        "UMAS download (0x30-0x32) in the change window",
    )
    # ... and ews-2 reads OB1 out of the pumping PLC, then downloads a changed FC.
    s7 = S7Conv(sc, "s7:ews-2>plc-p1", EWS_2, PLC_P1, local_us(day, "10:40:00"))
    s7.open()
    s7.connect(1, 3)
    s7.read_szl(0x0111, 1)
    s7.upload("_0800001A", 620)
    s7.download("_0C00010P", 700)
    s7.close()
    sc.expect(
        "audit",
        s7.flow,
        "engineering-pumping",
        "ews-changes-s7",
        "upload",
        "block upload of OB1 (0x1D-0x1F) in the change window",
    )
    sc.expect(
        "audit",
        s7.flow,
        "engineering-pumping",
        "ews-changes-s7",
        "program",
        "download of FC10 (0x1A, 0x1B and 0x1C from the PLC, PI _INSE) in the change window",
    )
    # IDMZ: dashboards, replication, patches.
    https_session(
        sc, "tls:laptop>replica", LAPTOP, HIST_REPLICA, local_us(day, "11:00:00"), f"trends.{DOMAIN}", 4
    )
    https_session(
        sc,
        "tls:historian>replica",
        HISTORIAN,
        HIST_REPLICA,
        local_us(day, "11:05:00"),
        f"hist-replica.{DOMAIN}",
        3,
    )
    https_session(
        sc, "tls:wsus>relay", WSUS_1, PATCH_RELAY, local_us(day, "12:00:00"), f"patch-relay.{DOMAIN}", 2
    )


def historian_write(sc: Scenario) -> None:
    sc.title = "The historian writes to a PLC"
    sc.description = (
        "The historian's collection connection to plc-f1 reads (allowed: historian-collect is read only), "
        "then sends one Modbus function 16 write of two holding registers: operation_not_allowed."
    )
    t = local_us(TUESDAY, "13:20:00")
    background_polling(sc, t - 5_000_000)
    conv = ModbusConv(sc, "mb:historian>plc-f1", HISTORIAN, PLC_F1, t)
    conv.open()
    for _ in range(4):
        conv.read_holding(3000, 64, think=(900_000, 1_100_000))
    conv.write_registers(1200, [450, 455], think=(900_000, 1_100_000))
    for _ in range(2):
        conv.read_holding(3000, 64, think=(900_000, 1_100_000))
    conv.close()
    sc.expect(
        "operation_not_allowed",
        conv.flow,
        "siteops-filtration",
        "historian-collect",
        "write",
        "historian-collect allows read only; function 16 (write multiple registers) is write",
    )


def hmi_program_download(sc: Scenario) -> None:
    sc.title = "A program download from an HMI"
    sc.description = (
        "hmi-2 opens an S7 connection to plc-p1 (session, read: allowed by hmi-control-s7) and downloads "
        "block FC10: request download, the PLC's download-block and download-ended jobs, PI service "
        "_INSE. All of it is program, which no rule on scada-pumping allows. It happens inside the "
        "engineering change window, so the schedule is not the reason: the HMI never may."
    )
    t = local_us(TUESDAY, "14:05:00")
    background_polling(sc, t - 5_000_000)
    conv = S7Conv(sc, "s7:hmi-2>plc-p1", HMI_2, PLC_P1, t)
    conv.open()
    conv.connect(2, 3)
    conv.read_db([(10, 0, 40)])
    conv.download("_0C00010P", 560)
    conv.close()
    sc.expect(
        "operation_not_allowed",
        conv.flow,
        "scada-pumping",
        "hmi-control-s7",
        "program",
        "hmi-control-s7 allows session, read, write, operate, diagnostic, subscribe: not program",
    )


def engineering_outside_window(sc: Scenario) -> None:
    sc.title = "Engineering access outside the windows"
    sc.description = (
        "Saturday 2024-06-15 22:40 local: an enterprise user reaches the jump host (allowed at any time), "
        "the jump host opens RDP to ews-1 (jump-to-ews: Mon-Fri 07:00-19:00, so outside_schedule), and "
        "ews-1 stops plc-f1, downloads logic over UMAS and starts it again: mode and program are only "
        "allowed in the Tue/Thu 09:00-15:00 change window (outside_schedule); the UMAS reservation, "
        "check and read stay allowed by ews-online."
    )
    t = local_us(SATURDAY, "22:40:00")
    background_polling(sc, t - 5_000_000, 30)
    rdp_session(sc, "rdp:laptop>jump-1", LAPTOP, JUMP_1, t, "ext.svc-integrator", 60)
    rdp = rdp_session(sc, "rdp:jump-1>ews-1", JUMP_1, EWS_1, t + 20_000_000, "ext.svc-integrator", 35)
    sc.expect(
        "outside_schedule",
        rdp.flow,
        "idmz-engineering",
        "jump-to-ews",
        None,
        "jump-to-ews is Mon-Fri 07:00-19:00 Europe/Berlin; this is Saturday 22:40",
    )
    ews = ModbusConv(sc, "umas:ews-1>plc-f1", EWS_1, PLC_F1, t + 30_000_000, unit=0)
    ews.open()
    ews.umas_reserve("EWS-1")
    ews.umas(0x58, b"\x01\x00")
    ews.umas_download(4)
    ews.umas(0x11)
    ews.close()
    sc.expect(
        "outside_schedule",
        ews.flow,
        "engineering-filtration",
        "ews-changes",
        "mode",
        "stop/start (0x41/0x40) are only allowed Tue/Thu 09:00-15:00",
    )
    sc.expect(
        "outside_schedule",
        ews.flow,
        "engineering-filtration",
        "ews-changes",
        "program",
        "UMAS download (0x30-0x32) is only allowed Tue/Thu 09:00-15:00",
    )


def enterprise_modbus(sc: Scenario) -> None:
    sc.title = "An enterprise laptop talks Modbus to a PLC"
    sc.description = (
        "lt-0457 in the enterprise network identifies and reads plc-f1 over Modbus/TCP. No conduit joins "
        "the enterprise and the filtration cell (DOMAIN.md section 4: L4 -> L1 is forbidden): no_conduit."
    )
    t = local_us(TUESDAY, "15:10:00")
    background_polling(sc, t - 5_000_000)
    conv = ModbusConv(sc, "mb:laptop>plc-f1", LAPTOP, PLC_F1, t, unit=0)
    conv.open()
    conv.device_id("Schneider Electric", "BME P58 2040", "v3.20")
    for addr in (0, 100, 1000, 3000):
        conv.read_holding(addr, 125, think=(50_000, 200_000))
    conv.close()
    sc.expect("no_conduit", conv.flow, None, None, None, "no conduit joins enterprise and cell-filtration")


def rogue_device(sc: Scenario) -> None:
    sc.title = "A rogue device in the filtration cell"
    sc.description = (
        "At 03:12 a device with an address in no zone (10.31.10.200, a Raspberry Pi MAC; the cell zone "
        "lists its assets, not its subnet) identifies plc-f1, reads it and forces a coil: unknown_host."
    )
    t = local_us(TUESDAY, "03:12:00")
    background_polling(sc, t - 5_000_000)
    conv = ModbusConv(sc, "mb:rogue>plc-f1", ROGUE, PLC_F1, t, unit=0)
    conv.open()
    conv.device_id("Schneider Electric", "BME P58 2040", "v3.20")
    conv.read_holding(0, 100, think=(100_000, 300_000))
    conv.read_holding(100, 100, think=(100_000, 300_000))
    conv.write_coil(12, True, think=(2_000_000, 4_000_000))
    conv.close()
    sc.expect(
        "unknown_host", conv.flow, None, None, None, "10.31.10.200 is no asset and in no zone's network"
    )


def enterprise_rdp_l2(sc: Scenario) -> None:
    sc.title = "RDP from the enterprise straight to level 2"
    sc.description = (
        "lt-0457 first uses the allowed path (RDP to jump-1), then opens RDP directly to ews-1. No conduit "
        "joins the enterprise and the engineering zone (only the IDMZ jump host may reach it): no_conduit."
    )
    t = local_us(TUESDAY, "16:30:00")
    background_polling(sc, t - 5_000_000, 30)
    rdp_session(sc, "rdp:laptop>jump-1", LAPTOP, JUMP_1, t, "a.berger", 15)
    rdp = rdp_session(sc, "rdp:laptop>ews-1", LAPTOP, EWS_1, t + 20_000_000, "a.berger", 20)
    sc.expect("no_conduit", rdp.flow, None, None, None, "no conduit joins enterprise and engineering")


def responder_initiated(sc: Scenario) -> None:
    sc.title = "A PLC opens a connection to an HMI"
    sc.description = (
        "plc-f1 connects to hmi-1 on TCP 502 and pushes values with function 16. The only rule for Modbus "
        "between these zones (hmi-control) has the supervisory zone as initiator: responder_initiated."
    )
    t = local_us(TUESDAY, "09:45:00")
    background_polling(sc, t - 5_000_000)
    conv = ModbusConv(sc, "mb:plc-f1>hmi-1", PLC_F1, HMI_1, t, unit=1)
    conv.open()
    for _ in range(3):
        conv.write_registers(
            0,
            [conv.rng.randrange(0, 1000) for _ in range(8)],
            think=(400_000, 600_000),
            latency=(3000, 15_000),
        )
    conv.close()
    sc.expect(
        "responder_initiated",
        conv.flow,
        "scada-filtration",
        "hmi-control",
        None,
        "hmi-control: initiator supervisory, responder cell-filtration; this flow was opened by the PLC",
    )


def protocol_not_allowed(sc: Scenario) -> None:
    sc.title = "Protocols the conduit does not carry"
    sc.description = (
        "hmi-1 opens the web diagnostics of plc-f1 (HTTP, TCP 80) and tries to log in to the Ethernet "
        "module of plc-f2 over Telnet (TCP 23). scada-filtration carries Modbus on 502 only: "
        "protocol_not_allowed, twice."
    )
    t = local_us(TUESDAY, "11:20:00")
    background_polling(sc, t - 5_000_000)
    web = http_get(
        sc, "http:hmi-1>plc-f1", HMI_1, PLC_F1, t, "/html/english/home/index.htm", "plc-f1 diagnostics"
    )
    sc.expect(
        "protocol_not_allowed",
        web.flow,
        "scada-filtration",
        None,
        None,
        "scada-filtration allows modbus/502 only; this is http/80",
    )
    tel = telnet_login(sc, "telnet:hmi-1>plc-f2", HMI_1, PLC_F2, t + 8_000_000)
    sc.expect(
        "protocol_not_allowed",
        tel.flow,
        "scada-filtration",
        None,
        None,
        "scada-filtration allows modbus/502 only; this is telnet/23",
    )


SCENARIOS: dict[str, Callable[[Scenario], None]] = {
    "compliant": compliant,
    "historian-write": historian_write,
    "hmi-program-download": hmi_program_download,
    "engineering-outside-window": engineering_outside_window,
    "enterprise-modbus": enterprise_modbus,
    "rogue-device": rogue_device,
    "enterprise-rdp-l2": enterprise_rdp_l2,
    "responder-initiated": responder_initiated,
    "protocol-not-allowed": protocol_not_allowed,
}


# ----------------------------------------------------------------------------------------- writing


def _flow_key(flow: FlowRec) -> dict[str, Any]:
    return {
        "src_ip": flow.client.ip,
        "src_port": flow.sport,
        "dest_ip": flow.server.ip,
        "dest_port": flow.dport,
        "proto": flow.proto,
        "app_proto": flow.app_proto,
    }


def build(name: str, seed: int) -> tuple[bytes, dict[str, Any]]:
    """The capture's bytes and its labels."""
    sc = Scenario(name, seed)
    SCENARIOS[name](sc)
    recs = sorted(sc.recs, key=lambda r: (r.ts, r.order))
    out = [pcap_global_header()]
    for rec in recs:
        n = len(rec.frame)
        out.append(_REC.pack(rec.ts // 1_000_000, rec.ts % 1_000_000, n, n))
        out.append(rec.frame)
    cnt = {id(rec): i + 1 for i, rec in enumerate(recs)}

    def entry(e: Expect) -> dict[str, Any]:
        flow = e.flow
        mine = [r for r in recs if r.flow is flow]
        if e.operation is None:
            carriers = mine
            responses: list[Rec] = []
        else:
            ops = [r for r in mine if r.msg is not None and r.msg.operation == e.operation]
            carriers = [r for r in ops if r.msg is not None and r.msg.direction == "request"]
            responses = [r for r in ops if r.msg is not None and r.msg.direction == "response"]
        if not carriers:
            raise AssertionError(f"{name}: nothing carries {e.rule} {e.operation}")
        first = carriers[0]
        item: dict[str, Any] = {"rule": e.rule}
        if e.rule != "audit":
            item["signature_id"] = SIGNATURES[e.rule]
        item |= {
            "level": "flow" if e.operation is None else "operation",
            "src_zone": flow.client.zone,
            "dest_zone": flow.server.zone,
            "conduit": e.conduit,
            "flow_rule": e.flow_rule,
            **_flow_key(flow),
            "operation": e.operation,
            "functions": sorted({r.msg.function for r in carriers if r.msg is not None}),
            "first_pcap_cnt": cnt[id(first)],
            "first_timestamp": iso_utc(first.ts),
            "local_time": iso_local(first.ts),
            "pcap_cnts": [cnt[id(r)] for r in carriers],
        }
        if e.operation is not None:
            item["response_pcap_cnts"] = [cnt[id(r)] for r in responses]
        item["why"] = e.why
        return item

    flows: list[dict[str, Any]] = []
    seen: dict[int, dict[str, Any]] = {}
    for rec in recs:
        entry_f = seen.get(id(rec.flow))
        if entry_f is None:
            f = rec.flow
            entry_f = seen[id(f)] = {
                **_flow_key(f),
                "vlan": [f.seg.vid] if f.seg.mode == "vlan" else [],
                "src_zone": f.client.zone,
                "dest_zone": f.server.zone,
                "first_pcap_cnt": cnt[id(rec)],
                "local_time": iso_local(rec.ts),
                "packets": 0,
                "operations": {},
            }
            flows.append(entry_f)
        entry_f["packets"] += 1
        if rec.msg is not None and rec.msg.direction == "request":
            ops = entry_f["operations"]
            ops[rec.msg.operation] = ops.get(rec.msg.operation, 0) + 1
    for entry_f in flows:
        entry_f["operations"] = dict(sorted(entry_f["operations"].items()))
    labels = {
        "capture": f"{name}.pcap",
        "generator": "bench.scenarios",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "policy": POLICY,
        "timezone": TIMEZONE,
        "title": sc.title,
        "description": sc.description,
        "packets": len(recs),
        "first_timestamp": iso_utc(recs[0].ts),
        "last_timestamp": iso_utc(recs[-1].ts),
        "findings": [entry(e) for e in sc.expects if e.rule != "audit"],
        "audits": [entry(e) for e in sc.expects if e.rule == "audit"],
        "flows": flows,
    }
    return b"".join(out), labels


def dump_json(obj: Any, indent: int = 0) -> str:
    """JSON with two-space indentation, but lists of numbers on one line (pcap_cnts stay readable)."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dump_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list):
        if all(isinstance(x, int | float | str) and not isinstance(x, bool) for x in obj):
            return json.dumps(obj)
        return "[\n" + ",\n".join(pad + dump_json(x, indent + 1) for x in obj) + "\n" + "  " * indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def generate(out_dir: str | Path, seed: int = 1, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Write NAME.pcap and NAME.labels.json for every scenario (or those in ``only``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Any]] = {}
    for name in only or list(SCENARIOS):
        pcap, labels = build(name, seed)
        (out / f"{name}.pcap").write_bytes(pcap)
        (out / f"{name}.labels.json").write_text(dump_json(labels) + "\n")
        written[name] = labels
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scenarios", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for NAME.pcap and NAME.labels.json")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="one scenario (repeatable)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    written = generate(args.out, args.seed, args.only)
    if not args.quiet:
        for name, labels in written.items():
            size = (Path(args.out) / f"{name}.pcap").stat().st_size
            kinds = ", ".join(f["rule"] for f in labels["findings"]) or "no findings"
            print(
                f"{name}.pcap: {labels['packets']} packets, {size} bytes; {kinds}; "
                f"{len(labels['audits'])} audits",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
