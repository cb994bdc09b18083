"""Bidirectional flow table: direction, TCP state, timeouts, bounded size, community_id.

The table is an ``OrderedDict`` kept in least-recently-seen order (``move_to_end`` is a C call; the
fast path reorders a flow at most once a second), so idle expiry only looks at the front and
eviction under pressure drops the flow idle longest.
Flows are kept under their initiator-to-responder key, and a second dictionary maps both
directions' keys to the flow, so every packet costs one lookup with the key as it comes off the
wire (cheaper than building a canonical key for every packet).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.community_id import community_id
from agent.dissect import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_HEADER,
    U16X2,
    U16X3,
    Packet,
)
from agent.linklayer import guess_l2_proto
from agent.ports import guess_app_proto

# The fast path also needs the TCP sequence number, which the dissector reads only on demand.
_TCP = struct.Struct("!HHI4xBB")  # ports, sequence number, data offset, flags
_TCP_ACK_WIN = struct.Struct("!I2xH")  # acknowledgement number, window: read for watched flows only

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

# TCP states, ordered so that "< ESTABLISHED" means the handshake is not complete.
TCP_NONE = 0  # not TCP
TCP_SYN_SENT = 1
TCP_SYN_RECV = 2
TCP_ESTABLISHED = 3
TCP_CLOSING = 4  # FIN seen in one direction
TCP_CLOSED = 5  # FIN seen in both directions
TCP_RESET = 6
TCP_STATE_NAMES = ("none", "syn_sent", "syn_recv", "established", "closing", "closed", "reset")

FlowKey = tuple[bytes, bytes, int, int, int, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Timeouts in seconds of packet time; ``max_flows`` bounds memory."""

    max_flows: int = 100_000
    tcp_new_timeout: float = 30.0  # handshake never completed
    tcp_timeout: float = 600.0
    tcp_closed_timeout: float = 10.0  # after FIN both ways or RST: late ACKs still belong to the flow
    udp_timeout: float = 120.0
    other_timeout: float = 60.0
    active_timeout: float = 3600.0  # a long flow is reported and continued as a new record
    sweep_interval: float = 1.0


class Flow:
    """One bidirectional conversation; "src" is the initiator (from the SYN, else the first packet)."""

    __slots__ = (
        "app",  # per-flow application-layer decoder state (set by decoders)
        "app_proto",
        "bytes_toclient",
        "bytes_toserver",
        "client_isn",  # initial sequence number of the client's SYN, -1 when not seen
        "community_id",
        "deadline",  # first_ts + active timeout
        "dport",
        "dst",
        "first_cnt",
        "first_ts",
        "flow_id",
        "icmp_code",  # of the flow's first ICMP message (ICMP flows are keyed without ports)
        "icmp_type",
        "ip_version",
        "key",
        "last_cnt",
        "last_source",
        "last_ts",
        "lru_ts",  # packet time of the flow's last move to the back of the table's LRU order
        "pkts_toclient",
        "pkts_toserver",
        "proto",
        "sport",
        "src",
        "tcp",  # TCP health state of a watched control flow (agent.detectors.tcp_health), else None
        "tcp_flags_tc",
        "tcp_flags_ts",
        "tcp_state",
        "timeout",
        "verdict",  # cached per-flow policy verdict (set by the policy engine)
        "vlan",
    )

    def __init__(
        self,
        key: FlowKey,
        flow_id: int,
        ip_version: int,
        ts: float,
        cnt: int,
        source: int,
        timeout: float,
    ) -> None:
        self.key = key
        self.src, self.dst, self.sport, self.dport, self.proto, self.vlan = key
        self.flow_id = flow_id
        self.ip_version = ip_version
        self.first_ts = ts
        self.last_ts = ts
        self.lru_ts = ts
        self.first_cnt = cnt
        self.last_cnt = cnt
        self.last_source = source
        self.pkts_toserver = 0
        self.pkts_toclient = 0
        self.bytes_toserver = 0
        self.bytes_toclient = 0
        self.tcp_flags_ts = 0
        self.tcp_flags_tc = 0
        self.tcp_state = TCP_NONE
        self.timeout = timeout
        self.deadline = ts
        self.client_isn = -1
        self.icmp_type = 0
        self.icmp_code = 0
        self.community_id = ""
        self.app_proto = ""
        self.app: Any = None
        self.verdict: Any = None
        self.tcp: Any = None

    @property
    def state(self) -> str:
        """Suricata-style flow state: new (one-sided), established, closed."""
        if self.tcp_state >= TCP_CLOSED:
            return "closed"
        if self.tcp_state == TCP_NONE:
            return "established" if self.pkts_toclient else "new"
        return "established" if self.tcp_state >= TCP_ESTABLISHED else "new"


FlowEndHandler = Callable[[Flow, str], None]
FlowNewHandler = Callable[[Flow, Packet], None]  # called with the packet that created the flow
FlowContinueHandler = Callable[[Flow, Flow], None]  # (the record an active timeout cut, its continuation)


class FlowTable:
    """Flows keyed by 5-tuple plus VLAN ids (L2 flows: MACs, EtherType, VLAN ids).

    ``update`` (IP) and ``update_l2`` (non-IP Ethernet) are the per-packet entry points.
    """

    __slots__ = (
        "_end",
        "_flows",
        "_lookup",
        "_min_timeout",
        "_on_new",
        "active",
        "config",
        "created",
        "ended",
        "evicted",
        "fast_packets",
        "fast_vlan",
        "next_sweep",
        "on_continue",
        "timed_out",
    )

    def __init__(
        self, config: FlowConfig, on_end: FlowEndHandler, on_new: FlowNewHandler | None = None
    ) -> None:
        self.config = config
        self._end = on_end
        self._on_new = on_new
        # Told when an active timeout cuts a long flow and its continuation starts (no flow-start
        # hook runs for it): stages that follow a flow carry their state over (the pipeline sets it).
        self.on_continue: FlowContinueHandler | None = None
        # By initiator key, least recently seen first; ``_lookup`` finds a flow from either direction
        # with one probe (two entries a flow: memory is bounded by max_flows anyway).
        self._flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        self._lookup: dict[FlowKey, Flow] = {}
        self._min_timeout = min(
            config.tcp_new_timeout,
            config.tcp_timeout,
            config.tcp_closed_timeout,
            config.udp_timeout,
            config.other_timeout,
        )
        self.created = 0
        self.ended = 0
        self.evicted = 0  # ended early because the table was full
        self.timed_out = 0
        self.next_sweep = 0.0
        # Frames accounted by fast_path (IPv4; the pipeline counts them), and of those VLAN-tagged.
        self.fast_packets = 0
        self.fast_vlan = 0

    def __len__(self) -> int:
        return len(self._flows)

    def flows(self) -> list[Flow]:
        """The live flows, least recently seen first (a copy: safe to iterate while updating)."""
        return list(self._flows.values())

    def fast_path(self, data: bytes, ts: float, wirelen: int, cnt: int, source: int) -> bool:
        """Account an Ethernet frame of an established flow without building a Packet.

        Taken when the frame is IPv4 TCP/UDP (untagged or one VLAN tag, not a fragment) of a known
        flow that is not due for a timeout and (TCP) is established with no SYN/FIN/RST in this
        segment: in a plant that is nearly every packet (bulk transfers, cyclic polling). Payload
        goes straight to the flow's decoder, if it has one. Anything else returns False untouched
        and takes the full path, which also reports malformed headers: every check here only
        decides *whether* this path applies.
        """
        n = len(data)
        if n < 54 or ts >= self.next_sweep:
            return False
        ethertype = (data[12] << 8) | data[13]
        off = 14
        vlan: tuple[int, ...] = ()
        if ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100:
            tci, ethertype = U16X2.unpack_from(data, 14)
            off = 18
            vlan = (tci & 0x0FFF,)
        if ethertype != 0x0800:
            return False
        vihl, total_len, frag, proto, src, dst = IPV4_HEADER.unpack_from(data, off)
        ihl = (vihl & 0x0F) << 2
        if vihl >> 4 != 4 or ihl < 20 or frag & 0x3FFF or (total_len and total_len < ihl):
            return False
        end = off + total_len if total_len and off + total_len < n else n
        off += ihl
        if proto == 6:
            if end < off + 20:
                return False
            sp, dp, seq, doff, flags = _TCP.unpack_from(data, off)
            off += (doff >> 4) << 2
            if doff < 0x50 or off > end or flags & 0x07:
                return False
        elif proto == 17:
            if end < off + 8:
                return False
            sp, dp, ulen = U16X3.unpack_from(data, off)
            if ulen < 8:
                return False
            off += 8
            end = min(end, off + ulen - 8)
            seq = flags = 0
        else:
            return False
        flow = self._lookup.get((src, dst, sp, dp, proto, vlan))
        if flow is None or ts > flow.deadline or (proto == 6 and flow.tcp_state != 3):
            return False
        if ts - flow.lru_ts >= 1.0:
            # Keeping the LRU order to within a second is enough for expiry and eviction, and
            # saves a reordering on nearly every packet of a busy flow.
            self._flows.move_to_end(flow.key)
            flow.lru_ts = ts
        if sp == flow.sport and src == flow.src:
            to_server = True
            flow.tcp_flags_ts |= flags
            flow.pkts_toserver += 1
            flow.bytes_toserver += wirelen
        else:
            to_server = False
            flow.tcp_flags_tc |= flags
            flow.pkts_toclient += 1
            flow.bytes_toclient += wirelen
        flow.last_ts = ts
        flow.last_cnt = cnt
        flow.last_source = source
        if vlan:
            self.fast_vlan += 1
        tcp = flow.tcp
        if tcp is not None:
            # A watched control flow: every segment counts, pure ACKs too. A frame cut by the snap
            # length carried the payload its IP header declares.
            thl = (doff >> 4) << 2
            ack, win = _TCP_ACK_WIN.unpack_from(data, off - thl + 8)
            length = total_len - ihl - thl if total_len and n < wirelen else end - off
            tcp.segment(to_server, flags, seq, ack, win, length)
        app = flow.app
        if app is not None and end > off:
            app.feed_segment(to_server, seq, data[off:end], ts, cnt, source)
        return True

    def update(self, pkt: Packet, ts: float, wirelen: int, cnt: int, source: int) -> tuple[Flow, bool]:
        """Account one dissected IP packet; return its flow and whether it travels to the server.

        Protocol numbers are literals here (6 TCP, 1/58 ICMP): module-global lookups cost per packet.
        """
        proto = pkt.proto
        if proto == 1 or proto == 58:
            # sport/dport hold ICMP type/code: one flow per host pair, as for other portless protocols.
            sp = dp = 0
        else:
            sp = pkt.sport
            dp = pkt.dport
        src = pkt.src
        key = (src, pkt.dst, sp, dp, proto, pkt.vlan)
        flow = self._lookup.get(key)
        if flow is None:
            flow = self._create(pkt, key, ts, cnt, source)
        elif ts > flow.deadline:
            # Long flow: report it and continue in a new record.
            flow = self._restart(flow, pkt, ts, cnt, source, "active_timeout")
        else:
            self._flows.move_to_end(flow.key)
            flow.lru_ts = ts
        to_server = sp == flow.sport and src == flow.src

        if proto == 6:
            flags = pkt.tcp_flags
            if flags & 0x07 or flow.tcp_state != 3:  # FIN/SYN/RST, or not yet ESTABLISHED
                flow = self._tcp_transition(flow, flags, to_server, pkt, ts, cnt, source)
                to_server = sp == flow.sport and src == flow.src
            if to_server:
                flow.tcp_flags_ts |= flags
                flow.pkts_toserver += 1
                flow.bytes_toserver += wirelen
            else:
                flow.tcp_flags_tc |= flags
                flow.pkts_toclient += 1
                flow.bytes_toclient += wirelen
            tcp = flow.tcp
            if tcp is not None:
                tcp.packet(pkt, to_server, wirelen)
        elif to_server:
            flow.pkts_toserver += 1
            flow.bytes_toserver += wirelen
        else:
            flow.pkts_toclient += 1
            flow.bytes_toclient += wirelen
        flow.last_ts = ts
        flow.last_cnt = cnt
        flow.last_source = source
        return flow, to_server

    def update_l2(self, pkt: Packet, ts: float, wirelen: int, cnt: int, source: int) -> tuple[Flow, bool]:
        """Account one non-IP Ethernet frame to its L2 flow (see agent.linklayer).

        The key has the IP key's shape, with MACs for addresses, ports 0 and the EtherType as
        protocol; a frame to a group (multicast/broadcast) MAC is keyed by that group address, so
        a publisher's GOOSE or RT stream is one flow. A separate method keeps the IP path as it was.
        """
        src = pkt.src
        key = (src, pkt.dst, 0, 0, pkt.proto, pkt.vlan)
        flow = self._lookup.get(key)
        if flow is None:
            flow = self._create(pkt, key, ts, cnt, source)
        elif ts > flow.deadline:
            flow = self._restart(flow, pkt, ts, cnt, source, "active_timeout")
        else:
            self._flows.move_to_end(flow.key)
            flow.lru_ts = ts
        if src == flow.src:
            flow.pkts_toserver += 1
            flow.bytes_toserver += wirelen
            to_server = True
        else:
            flow.pkts_toclient += 1
            flow.bytes_toclient += wirelen
            to_server = False
        flow.last_ts = ts
        flow.last_cnt = cnt
        flow.last_source = source
        return flow, to_server

    def _tcp_transition(
        self, flow: Flow, flags: int, to_server: bool, pkt: Packet, ts: float, cnt: int, source: int
    ) -> Flow:
        """Rare path: handshake, FIN and RST handling; a SYN on a closed flow starts a new one."""
        state = flow.tcp_state
        config = self.config
        if flags & 0x12 == TCP_SYN:
            isn = pkt.tcp_header()[0]
            if state >= TCP_CLOSED and flow.pkts_toserver + flow.pkts_toclient and isn != flow.client_isn:
                # The port pair was reused for a new connection after the old one closed (a SYN
                # with the same initial sequence number is only the old one retransmitted).
                return self._restart(flow, pkt, ts, cnt, source, "port_reuse")
            if to_server:
                flow.client_isn = isn
        if flags & TCP_RST:
            flow.tcp_state = TCP_RESET
            flow.timeout = config.tcp_closed_timeout
        elif flags & TCP_FIN:
            if to_server:
                flow.tcp_flags_ts |= TCP_FIN
            else:
                flow.tcp_flags_tc |= TCP_FIN
            if flow.tcp_flags_ts & flow.tcp_flags_tc & TCP_FIN:
                # Closed once both sides have sent a FIN.
                if state < TCP_CLOSED:
                    flow.tcp_state = TCP_CLOSED
                    flow.timeout = config.tcp_closed_timeout
            elif state < TCP_CLOSING:
                flow.tcp_state = TCP_CLOSING
                flow.timeout = config.tcp_timeout
        elif state == TCP_SYN_SENT and flags & 0x12 == 0x12 and not to_server:
            flow.tcp_state = TCP_SYN_RECV
        elif state == TCP_SYN_RECV and to_server and flags & TCP_ACK:
            flow.tcp_state = TCP_ESTABLISHED
            flow.timeout = config.tcp_timeout
        elif state == TCP_SYN_SENT and flags & TCP_ACK and (not to_server or flow.pkts_toserver):
            # The SYN-ACK was not captured (asymmetric mirror, drops), but the connection is clearly
            # in use: the server talks, or the client acknowledges something after its SYN.
            flow.tcp_state = TCP_ESTABLISHED
            flow.timeout = config.tcp_timeout
        return flow

    def _create(self, pkt: Packet, key: FlowKey, ts: float, cnt: int, source: int) -> Flow:
        config = self.config
        proto = key[4]
        tcp_state = TCP_NONE
        client_isn = -1
        if proto == IPPROTO_TCP:
            flags = pkt.tcp_flags
            if flags & 0x12 == 0x12:
                # First packet seen is the SYN-ACK: the receiver initiated the connection.
                src, dst, sp, dp, _, vlan = key
                key = (dst, src, dp, sp, proto, vlan)
                tcp_state = TCP_SYN_RECV
                timeout = config.tcp_new_timeout
            elif flags & TCP_SYN:
                tcp_state = TCP_SYN_SENT
                timeout = config.tcp_new_timeout
                client_isn = pkt.tcp_header()[0]
            else:
                tcp_state = TCP_ESTABLISHED  # picked up mid-stream
                timeout = config.tcp_timeout
        elif proto == IPPROTO_UDP:
            timeout = config.udp_timeout
        else:
            timeout = config.other_timeout
        if len(self._flows) >= config.max_flows:
            self._evict()
        self.created += 1
        flow = Flow(key, self._flow_id(key, ts), pkt.ip_version, ts, cnt, source, timeout)
        flow.deadline = ts + config.active_timeout
        flow.tcp_state = tcp_state
        flow.client_isn = client_isn
        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            flow.icmp_type = pkt.sport
            flow.icmp_code = pkt.dport
        if flow.ip_version:
            flow.community_id = self._community_id(flow, pkt)
            flow.app_proto = guess_app_proto(proto, flow.sport, flow.dport)
        else:  # an L2 flow: community_id is defined for IP only
            flow.app_proto = guess_l2_proto(proto)
        self._insert(flow)
        if self._on_new is not None:
            self._on_new(flow, pkt)
        return flow

    def _insert(self, flow: Flow) -> None:
        key = flow.key
        src, dst, sp, dp, proto, vlan = key
        self._flows[key] = flow
        self._lookup[key] = flow
        self._lookup[(dst, src, dp, sp, proto, vlan)] = flow

    def _remove(self, flow: Flow) -> None:
        key = flow.key
        src, dst, sp, dp, proto, vlan = key
        del self._flows[key]
        self._lookup.pop(key, None)
        self._lookup.pop((dst, src, dp, sp, proto, vlan), None)

    def _restart(self, old: Flow, pkt: Packet, ts: float, cnt: int, source: int, reason: str) -> Flow:
        """End ``old`` and start its continuation (active timeout) or successor (port reuse)."""
        self._remove(old)
        # An active timeout only cuts the record: the connection goes on, and so does its decoder
        # (its stream position and pending requests), which the end of the old record must not close.
        app = None
        if reason == "active_timeout":
            app, old.app = old.app, None
        self._finish(old, reason)
        if reason == "port_reuse":
            return self._create(
                pkt, (pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.proto, pkt.vlan), ts, cnt, source
            )
        self.created += 1
        flow = Flow(old.key, self._flow_id(old.key, ts), old.ip_version, ts, cnt, source, old.timeout)
        flow.deadline = ts + self.config.active_timeout
        flow.tcp_state = old.tcp_state
        flow.community_id = old.community_id
        flow.icmp_type = old.icmp_type
        flow.icmp_code = old.icmp_code
        flow.app_proto = old.app_proto
        flow.verdict = old.verdict
        if app is not None:
            flow.app = app
            app.continue_on(flow)
        if old.tcp is not None:
            flow.tcp = old.tcp.continuation()
        self._insert(flow)
        if self.on_continue is not None:
            self.on_continue(old, flow)
        return flow

    def _evict(self) -> None:
        flow = next(iter(self._flows.values()))
        self._remove(flow)
        self.evicted += 1
        self._finish(flow, "evicted")

    def _finish(self, flow: Flow, reason: str) -> None:
        self.ended += 1
        self._end(flow, reason)

    def expire(self, now: float) -> None:
        """End flows idle past their timeout. Called by the pipeline once per ``sweep_interval``."""
        self.next_sweep = now + self.config.sweep_interval
        horizon = now - self._min_timeout
        expired = []
        for flow in self._flows.values():
            if flow.lru_ts > horizon:
                # The table is in lru_ts order and last_ts >= lru_ts: every flow from here on was
                # seen more recently than the shortest timeout.
                break
            if now - flow.last_ts >= flow.timeout:
                expired.append(flow)
        for flow in expired:
            self._remove(flow)
            self.timed_out += 1
            self._finish(flow, "timeout")

    def flush(self, reason: str = "shutdown") -> None:
        """End every flow (end of replay, shutdown)."""
        while self._flows:
            flow = next(iter(self._flows.values()))
            self._remove(flow)
            self._finish(flow, reason)

    def _flow_id(self, key: FlowKey, ts: float) -> int:
        # Deterministic (same capture, same ids), unique in practice, and below 2**53 so that
        # JSON consumers that parse numbers as doubles (JavaScript, jq) keep it exact.
        src, dst, sp, dp, proto, vlan = key
        # An L2 flow's "protocol" is its EtherType (agent.linklayer): wider than the IP byte.
        layout = "!HHBd" if proto < 256 else "!HHId"
        packed = struct.pack(layout, sp, dp, proto, ts)
        material = b"".join((src, dst, packed, bytes(str(vlan), "ascii")))
        digest = hashlib.blake2b(material + self.created.to_bytes(8, "big"), digest_size=8).digest()
        return int.from_bytes(digest, "big") & ((1 << 53) - 1)

    @staticmethod
    def _community_id(flow: Flow, pkt: Packet) -> str:
        if flow.proto == IPPROTO_ICMP or flow.proto == IPPROTO_ICMPV6:
            # Keyed without ports; the first message's type and code make the id (request/reply pair up).
            return community_id(flow.proto, pkt.src, pkt.dst, pkt.sport, pkt.dport)
        return community_id(flow.proto, flow.src, flow.dst, flow.sport, flow.dport)
