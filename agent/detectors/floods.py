"""Backup floods on control segments, and the health of the control traffic they hurt.

``FloodDetector`` is a pipeline consumer (flow start/end, messages, a tick on packet time). It
measures load per declared link in fine bins (``agent.detectors.load``), the health of every control
loop (``agent.detectors.health``), and raises incidents (``agent.detectors.incidents``) for:

* ``bulk_into_control_zone``: a bulk transfer crossing into a control zone (Purdue level <= 1, or a
  safety zone);
* ``bulk_over_budget``: bulk load on a link above its budget (1 s average);
* ``backup_outside_window``: bulk load on a link that declares backup windows, outside all of them;
* ``control_degradation``: a control loop's latency beyond its learned baseline, requests left
  unanswered, or TCP retransmissions on its connection beyond their learned rate
  (``agent.detectors.tcp_health`` counts them, with duplicate ACKs and zero windows, on every control
  TCP flow);
* ``backup_interference``: a link over its bulk budget while control loops whose path crosses that
  link are degraded. Degradation with no overload on its path is only ever ``control_degradation``.

Every decision uses packet time: a replay at full speed and a ``--realtime`` replay are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.decoders.base import EVERY_RECORD, REQUEST, Interest, OtMessage, no_retune
from agent.decoders.cip import FORWARD_OPEN, LARGE_FORWARD_OPEN
from agent.detectors.cip_connections import CipConnections
from agent.detectors.health import FORWARD_OPEN as PERIOD_FROM_FORWARD_OPEN
from agent.detectors.health import (
    JUDGE_EVERY_S,
    LATENCY_BUCKETS,
    RAISE_AFTER,
    Cyclic,
    LatencyHistogram,
    Loop,
    percentile,
)
from agent.detectors.incidents import KINDS, EmitFn, Incident, Incidents
from agent.detectors.load import DEFAULT_BUDGET_SHARE, VIEWS, Scope, Tracked, bulk_category, looks_like_bulk
from agent.detectors.tcp_health import TcpCounts, TcpHealth
from agent.dissect import Packet, format_ip
from agent.flows import TCP_RESET, Flow
from agent.ports import CATEGORIES

if TYPE_CHECKING:
    from agent.policy.engine import CompiledPolicy, PolicyDetector
    from agent.policy.model import Conduit, Zone

OT_PROTOCOLS = CATEGORIES.get("ot", frozenset())
FORWARD_OPENS = frozenset({FORWARD_OPEN, LARGE_FORWARD_OPEN})
# Cyclic protocols that send on events as well as on a heartbeat (IEC 61850-8-1 retransmission).
BURSTY = frozenset({"goose", "rgoose"})
NO_ZONE = "none"
# The records read on a flow other than EtherNet/IP's: cyclic I/O (see record_interest).
CYCLIC_RECORDS = Interest(frozenset({"io"}), frozenset({"io"}))


@dataclass(frozen=True, slots=True)
class FloodConfig:
    bin_seconds: float = 0.1
    max_tracked: int = 50_000  # flows whose bytes are binned
    max_loops: int = 10_000  # control loops with health state
    bulk_min_bps: float = 1_000_000.0  # bulk below this (1 s average) is not a transfer worth an incident
    clear_after_s: float = 2.0  # a condition must be gone this long before its incident clears
    update_every_s: float = 10.0  # an open incident reports its numbers at most this often
    loop_idle_s: float = 300.0  # a loop with no message for this long is forgotten
    max_cyclic: int = 10_000  # cyclic I/O streams followed for jitter and sequence gaps


# Exceptions that say the device (or the gateway behind it) cannot keep up, not that the request was
# wrong: Modbus 0x06 server device busy, 0x0B gateway target failed to respond; CIP general status
# 0x01 with extended status 0x0203, connection timed out (DOMAIN.md section 6).
MODBUS_BUSY = frozenset({0x06, 0x0B})


def _busy(protocol: str, fields: dict[str, Any]) -> bool:
    if protocol == "modbus":
        return fields.get("exception_code") in MODBUS_BUSY
    if protocol == "enip":
        reply = fields.get("cip")  # the CIP reply's general and extended status
        if not isinstance(reply, dict):
            return False
        extended = reply.get("ext_status")
        return reply.get("status") == 0x01 and isinstance(extended, list) and 0x0203 in extended
    return False


def _loop_key(flow: Flow, protocol: str, client_is_initiator: bool) -> tuple[bytes, bytes, str]:
    """A control loop's key: (client, server, protocol)."""
    return (flow.src, flow.dst, protocol) if client_is_initiator else (flow.dst, flow.src, protocol)


def is_control_zone(zone: Zone) -> bool:
    return zone.safety or (zone.purdue_level is not None and zone.purdue_level <= 1)


def _mbps(bps: float) -> str:
    return f"{bps / 1e6:.1f} Mbit/s"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class FloodDetector:
    """Load bins per link, control-loop health, and their incidents."""

    def __init__(
        self, policy: PolicyDetector | None, emit: EmitFn, config: FloodConfig | None = None
    ) -> None:
        self.config = config = config or FloodConfig()
        self.policy = policy
        self.bin_s = config.bin_seconds
        self.bins_per_second = max(1, round(1.0 / self.bin_s))
        self.history = max(1, round(10.0 / self.bin_s))
        self.views = tuple((name, max(1, round(width * 0.1 / self.bin_s))) for name, width in VIEWS)
        self.incidents = Incidents(emit)
        self.zone_scopes: dict[tuple[str, str], Scope] = {}
        self.conduit_scopes: dict[tuple[str, str], Scope] = {}
        self.control_zones: frozenset[str] = frozenset()
        self.generation = -1
        self.compiled: CompiledPolicy | None = None
        self._build_scopes()
        self.tracked: dict[Flow, Tracked] = {}
        # The tracked flow the table just ended by active timeout: its continuation follows at once
        # (on_flow_continue) and carries on its measurement.
        self._cut: tuple[Flow, Tracked] | None = None
        self.untracked = 0  # flows not binned because max_tracked were
        self.loops: dict[tuple[bytes, bytes, str], Loop] = {}
        self.loops_dropped = 0  # flow directions whose loop was not followed because max_loops were
        # Called when loops are forgotten: decoders holding one as their timing tap ask again (the
        # pipeline sets it to DecoderContext.retune).
        self.retune: Callable[[], None] = no_retune
        self.next_bin = 0.0
        self.next_judge = 0.0
        self.bins_closed = 0
        # metrics, plain numbers read at scrape time
        self.bulk_bytes: dict[tuple[str, str, str], int] = {}  # (zone, in|out, category)
        self.latency: dict[tuple[str, str], LatencyHistogram] = {}  # (zone, protocol)
        self.unanswered: dict[tuple[str, str], int] = {}
        self.cyclic: dict[Flow, dict[tuple[bool, int, int], Cyclic]] = {}  # by flow: dropped with it
        self.cyclic_count = 0
        self.cyclic_dropped = 0
        self.cip = CipConnections()  # CIP I/O connections' intervals from their Forward Opens
        # The jitter each (zone, protocol) had when its last stream ended: the gauge keeps showing it
        # until a stream of the zone and protocol runs again (a replay's streams all end with it).
        self.cyclic_last_jitter: dict[tuple[str, str], float] = {}
        self.sequence_gaps: dict[tuple[str, str], int] = {}
        self.resets: dict[tuple[str, str], int] = {}  # control flows ended by a TCP reset
        # Retransmissions, duplicate ACKs and zero windows of control TCP flows, by (zone, protocol):
        # every watched flow's TcpHealth adds to its zone's counts as it sees them.
        self.tcp_counts: dict[tuple[str, str], TcpCounts] = {}

    # -- policy ----------------------------------------------------------------------------------

    def _build_scopes(self) -> None:
        """Scopes for every zone with a link or a control role, and every conduit with a link."""
        compiled = self.policy.compiled if self.policy is not None else None
        self.compiled = compiled
        self.generation = self.policy.generation if self.policy is not None else 0
        old = {**{("zone", *k): s for k, s in self.zone_scopes.items()},
               **{("conduit", *k): s for k, s in self.conduit_scopes.items()}}  # fmt: skip
        self.zone_scopes = {}
        self.conduit_scopes = {}
        if compiled is None:
            return
        policy = compiled.policy
        self.control_zones = frozenset(z.id for z in policy.zones if is_control_zone(z))
        for zone in policy.zones:
            if zone.link is None and zone.id not in self.control_zones:
                continue
            for direction in ("in", "out"):
                self.zone_scopes[(zone.id, direction)] = self._scope(
                    "zone", zone.id, direction, zone.link, zone.id in self.control_zones, old
                )
        for conduit in policy.conduits:
            if conduit.link is None:
                continue
            a, b = conduit.zones
            control = a in self.control_zones or b in self.control_zones
            for direction in (f"{a}>{b}", f"{b}>{a}"):
                self.conduit_scopes[(conduit.id, direction)] = self._scope(
                    "conduit", conduit.id, direction, conduit.link, control, old
                )

    def _scope(self, kind: str, name: str, direction: str, link: Any, control: bool,
               old: dict[tuple[str, str, str], Scope]) -> Scope:  # fmt: skip
        capacity = link.capacity_bps if link is not None else None
        budget = link.budget_bps() if link is not None else None
        if budget is None and capacity is not None:
            budget = DEFAULT_BUDGET_SHARE * capacity
        scope = Scope(kind, name, direction, link, control, capacity, budget, self.history)
        previous = old.get((kind, name, direction))
        if previous is not None:  # a reload keeps the measured history
            scope.bins, scope.recent_bulk_flows, scope.peak = (
                previous.bins,
                previous.recent_bulk_flows,
                previous.peak,
            )
            scope.closed, scope.last_bulk = previous.closed, previous.last_bulk
        return scope

    # -- flows -----------------------------------------------------------------------------------

    def on_flow_start(self, flow: Flow, _pkt: Packet | None = None) -> None:
        if flow.proto == 6 and flow.app_proto in OT_PROTOCOLS:
            self._watch_tcp(flow)
        if not self.zone_scopes and not self.conduit_scopes:
            return
        tracked = self._track(flow)
        if tracked is None:
            return
        if len(self.tracked) >= self.config.max_tracked:
            self.untracked += 1
            return
        self.tracked[flow] = tracked

    def _watch_tcp(self, flow: Flow) -> None:
        """Give a control TCP flow its retransmission/dup-ACK/zero-window state (the flow table then
        feeds it every segment; other flows never pay for it)."""
        flow.tcp = TcpHealth(self._tcp_counts((self._zones_of(flow)[1], flow.app_proto)))

    def _tcp_counts(self, key: tuple[str, str]) -> TcpCounts:
        """The shared counts of (zone, protocol), with one more connection counted there."""
        counts = self.tcp_counts.get(key)
        if counts is None:
            counts = self.tcp_counts[key] = TcpCounts(key)
        counts.flows += 1
        return counts

    def _settle_tcp(self, tcp: TcpHealth, flow: Flow, protocol: str) -> None:
        """Count a control connection's TCP health under the protocol its decoder settled on (s7comm
        or mms where the port said iso-tsap), as its latency and resets are, from now on. What was
        counted before stays where it is (counters only grow); an entry left with no connection and
        nothing counted is dropped, so that the port's name does not linger as a series of zeros."""
        old = tcp.counts
        key = (self._zones_of(flow)[1], protocol)
        if key == old.key:
            return
        tcp.counts = self._tcp_counts(key)
        old.flows -= 1
        if old.flows <= 0 and not old.counted() and self.tcp_counts.get(old.key) is old:
            del self.tcp_counts[old.key]

    def _zones_of(self, flow: Flow) -> tuple[str, str, Conduit | None]:
        """(zone of flow.src, zone of flow.dst, conduit) from the policy verdict cached on the flow."""
        verdict = flow.verdict
        if verdict is None:
            return NO_ZONE, NO_ZONE, None
        src_zone = verdict.src_zone or NO_ZONE
        dst_zone = verdict.dest_zone or NO_ZONE
        if verdict.client != flow.src:
            src_zone, dst_zone = dst_zone, src_zone
        return src_zone, dst_zone, verdict.conduit

    def _track(self, flow: Flow) -> Tracked | None:
        src_zone, dst_zone, conduit = self._zones_of(flow)
        to_server: list[Scope] = []
        to_client: list[Scope] = []
        if src_zone != dst_zone:
            zs = self.zone_scopes
            for scope, into in (
                (zs.get((src_zone, "out")), to_server),
                (zs.get((dst_zone, "in")), to_server),
                (zs.get((dst_zone, "out")), to_client),
                (zs.get((src_zone, "in")), to_client),
            ):
                if scope is not None:
                    into.append(scope)
            if conduit is not None and conduit.link is not None:
                forward = self.conduit_scopes.get((conduit.id, f"{src_zone}>{dst_zone}"))
                back = self.conduit_scopes.get((conduit.id, f"{dst_zone}>{src_zone}"))
                if forward is not None:
                    to_server.append(forward)
                if back is not None:
                    to_client.append(back)
        if not to_server and not to_client:
            return None
        category = bulk_category(flow.app_proto, CATEGORIES)
        control_crossing = src_zone != dst_zone and bool({src_zone, dst_zone} & self.control_zones)
        tracked = Tracked(
            flow,
            tuple(to_server),
            tuple(to_client),
            category,
            bool(category),
            control_crossing,
            src_zone,
            dst_zone,
        )
        tracked.seen_ts, tracked.seen_tc = flow.bytes_toserver, flow.bytes_toclient
        tracked.pkts_ts, tracked.pkts_tc = flow.pkts_toserver, flow.pkts_toclient
        return tracked

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        tracked = self.tracked.pop(flow, None)
        if tracked is not None:
            self._sample(tracked, flow.last_ts)
            if reason == "active_timeout":
                self._cut = (flow, tracked)  # a long flow (a backup of hours) goes on in a new record
        if flow.tcp_state == TCP_RESET and flow.app_proto in OT_PROTOCOLS:
            reset_key = (self._zones_of(flow)[1], flow.app_proto)
            self.resets[reset_key] = self.resets.get(reset_key, 0) + 1
        streams = self.cyclic.pop(flow, None)
        if streams is not None:
            self.cyclic_count -= len(streams)
            for stream in streams.values():
                self._fold_gaps(stream)
                jitter = stream.jitter()
                if jitter is not None:
                    self.cyclic_last_jitter[(stream.zone, stream.protocol)] = jitter

    def _sample(self, tr: Tracked, now: float) -> None:
        """Move the bytes a flow carried since the last sample into its scopes' current bins."""
        flow = tr.flow
        d_ts = flow.bytes_toserver - tr.seen_ts
        d_tc = flow.bytes_toclient - tr.seen_tc
        p_ts = flow.pkts_toserver - tr.pkts_ts
        p_tc = flow.pkts_toclient - tr.pkts_tc
        tr.seen_ts, tr.seen_tc = flow.bytes_toserver, flow.bytes_toclient
        tr.pkts_ts, tr.pkts_tc = flow.pkts_toserver, flow.pkts_toclient
        if not tr.bulk and tr.category == "" and flow.app_proto not in OT_PROTOCOLS:
            tr.recent.append((d_ts, d_tc, p_ts, p_tc))
            if len(tr.recent) > self.bins_per_second:
                tr.recent.popleft()
        if not d_ts and not d_tc:
            return
        for scopes, delta in ((tr.to_server, d_ts), (tr.to_client, d_tc)):
            if not delta:
                continue
            for scope in scopes:
                scope.bin_bytes += delta
                if tr.bulk:
                    scope.bin_bulk += delta
                    scope.bulk_by_flow[tr] = scope.bulk_by_flow.get(tr, 0) + delta
        if tr.bulk:
            if not tr.bulk_bytes:
                tr.first_bulk_ts = now
            tr.bulk_bytes += d_ts + d_tc
            category = tr.category or "behaviour"
            for zone, direction, delta in (
                (tr.src_zone, "out", d_ts),
                (tr.dst_zone, "in", d_ts),
                (tr.dst_zone, "out", d_tc),
                (tr.src_zone, "in", d_tc),
            ):
                if delta and tr.src_zone != tr.dst_zone:
                    key = (zone, direction, category)
                    self.bulk_bytes[key] = self.bulk_bytes.get(key, 0) + delta  # fmt: skip

    # -- messages --------------------------------------------------------------------------------

    def record_interest(self, flow: Flow, protocol: str, _ts: float) -> Interest:
        """The records this detector reads (DecoderContext.interest): cyclic I/O, every EtherNet/IP
        message (for the Forward Opens setting up I/O connections) and exception responses (which may
        say "device busy"). Request/response timings come through ``timing_tap`` instead.

        Asked at a flow's first message, once its protocol is settled: the time to count its TCP
        health under that protocol."""
        tcp = flow.tcp
        if tcp is not None:
            self._settle_tcp(tcp, flow, protocol)
        return EVERY_RECORD if protocol == "enip" else CYCLIC_RECORDS

    def timing_tap(self, flow: Flow, protocol: str, client_is_initiator: bool) -> Loop | None:
        """The control loop a decoder logs ``flow``'s request/response timings in directly
        (DecoderContext.timing_tap): one client polling one server over ``protocol``. None when
        ``max_loops`` are followed already (counted in ``loops_dropped``)."""
        key = _loop_key(flow, protocol, client_is_initiator)
        loop = self.loops.get(key)
        if loop is None:
            loop = self._new_loop(key, flow)
            if loop is None:
                return None
        loop.flow = flow  # the loop's current connection (its TCP retransmissions are the loop's)
        return loop

    def on_message(self, msg: OtMessage) -> None:
        # One unpacking of the message tuple reads every field for the price of about one attribute.
        (ts, flow, _, _, protocol, to_server, _, function, operation, fields, _, latency,
         exception) = msg  # fmt: skip
        if operation == "io":
            self._on_cyclic(msg)
            return
        if function in FORWARD_OPENS and protocol == "enip":
            self._on_forward_open(msg)
        if exception and latency is not None:
            # The loop the decoder logged the response's timing in (a response's receiver is the client).
            loop = self.loops.get(_loop_key(flow, protocol, not to_server))
            if loop is not None:
                loop.exceptions += 1
                if _busy(protocol, fields):
                    loop.busy.append(ts)

    def _on_cyclic(self, msg: OtMessage) -> None:
        fields = msg.fields
        connection = fields.get("connection_id")
        connection_id = connection if isinstance(connection, int) else -1
        # One stream per direction and connection (CIP), APPID (GOOSE) or frame id (PROFINET).
        key = (msg.to_server, connection_id, msg.function)
        streams = self.cyclic.get(msg.flow)
        stream = streams.get(key) if streams is not None else None
        if stream is None:
            if self.cyclic_count >= self.config.max_cyclic:
                self.cyclic_dropped += 1
                return
            src_zone, dst_zone, _ = self._zones_of(msg.flow)
            stream = Cyclic(dst_zone if msg.to_server else src_zone, msg.protocol, msg.protocol in BURSTY)
            self.cyclic.setdefault(msg.flow, {})[key] = stream
            self.cyclic_count += 1
        if connection_id >= 0 and stream.rpi_generation != self.cip.generation:
            stream.rpi_generation = self.cip.generation  # look up again only when a Forward Open was seen
            interval = self.cip.interval(msg.flow.src, msg.flow.dst, connection_id)
            if interval is not None and interval != stream.period:
                stream.set_period(interval, PERIOD_FROM_FORWARD_OPEN)
        seq = fields.get("sequence")
        if stream.bursty:
            # GOOSE counts its own losses (sqNum/stNum steps) and promises the next message in time.
            tal = fields.get("time_allowed_to_live")
            stream.on_frame(
                msg.ts,
                None,
                fields.get("sq_gap", 0) + fields.get("st_gap", 0),
                fields.get("state_change") is True,
                tal / 1000.0 if isinstance(tal, int) and tal > 0 else 0.0,
            )
        else:  # CIP: the sequence number; PROFINET: cycles missed by the counter
            stream.on_frame(msg.ts, seq if isinstance(seq, int) else None, fields.get("cycle_gap", 0))

    def _on_forward_open(self, msg: OtMessage) -> None:
        """A CIP Forward Open request or successful reply: the intervals of the I/O it sets up."""
        cip_fields = msg.fields.get("cip")
        params = cip_fields.get("forward_open") if isinstance(cip_fields, dict) else None
        if not isinstance(params, dict):
            return
        flow = msg.flow
        sender, receiver = (flow.src, flow.dst) if msg.to_server else (flow.dst, flow.src)
        if msg.direction == REQUEST:
            self.cip.on_request(sender, receiver, params)
        elif not msg.exception:
            self.cip.on_reply(receiver, sender, params)

    def _fold_gaps(self, stream: Cyclic) -> None:
        if stream.gaps > stream.gaps_reported:
            key = (stream.zone, stream.protocol)
            self.sequence_gaps[key] = self.sequence_gaps.get(key, 0) + stream.gaps - stream.gaps_reported
            stream.gaps_reported = stream.gaps

    def _new_loop(self, key: tuple[bytes, bytes, str], flow: Flow) -> Loop | None:
        if len(self.loops) >= self.config.max_loops:
            self.loops_dropped += 1
            return None
        client, server, protocol = key
        src_zone, dst_zone, conduit = self._zones_of(flow)
        server_zone, client_zone = (dst_zone, src_zone) if server == flow.dst else (src_zone, dst_zone)
        loop = Loop(client, server, protocol, server_zone, client_zone, conduit.id if conduit else None, flow)
        hkey = (server_zone, protocol)
        histogram = self.latency.get(hkey)
        if histogram is None:
            histogram = self.latency[hkey] = LatencyHistogram()
        loop.histogram = histogram  # shared by the loops of a zone and protocol
        self.loops[key] = loop
        return loop

    # -- time ------------------------------------------------------------------------------------

    def tick(self, ts: float) -> float:
        """Close the bins and judge the windows that ended before ``ts``; return the next boundary.

        Called at the first packet at or after the returned boundary, before that packet is counted.
        """
        if not self.next_bin:
            self.next_bin = (math.floor(ts / self.bin_s) + 1) * self.bin_s
            self.next_judge = (math.floor(ts / JUDGE_EVERY_S) + 1) * JUDGE_EVERY_S
            return self.next_bin
        if self.policy is not None and self.policy.generation != self.generation:
            self._build_scopes()
            for flow in list(self.tracked):
                tracked = self._track(flow)
                if tracked is None:
                    del self.tracked[flow]
                else:
                    self.tracked[flow] = tracked
        if ts >= self.next_bin:
            for tracked in list(self.tracked.values()):
                self._sample(tracked, ts)
            closed = 0
            while ts >= self.next_bin:
                self._close_bin(self.next_bin)
                closed += 1
                self.next_bin += self.bin_s
                if closed > self.history:  # a long silence: nothing more to learn from empty bins
                    self.next_bin = (math.floor(ts / self.bin_s) + 1) * self.bin_s
        if ts >= self.next_judge:
            self._judge(self.next_judge if ts - self.next_judge < JUDGE_EVERY_S else ts)
            self.next_judge = (math.floor(ts / JUDGE_EVERY_S) + 1) * JUDGE_EVERY_S
        return self.next_bin

    def on_flow_continue(self, old: Flow, new: Flow) -> None:
        """The flow table cut ``old`` by active timeout and goes on with ``new``: keep measuring it."""
        cut, self._cut = self._cut, None
        if cut is None or cut[0] is not old or len(self.tracked) >= self.config.max_tracked:
            return
        tracked = self._track(new)
        if tracked is not None:
            previous = cut[1]
            tracked.bulk, tracked.category = previous.bulk, previous.category
            tracked.bulk_bytes = previous.bulk_bytes
            self.tracked[new] = tracked

    def finish(self) -> None:
        """End of the run: the last bin closes with what the flows carried, and the messages logged
        since the last judgement reach the loops' samples and the latency histograms."""
        for loop in list(self.loops.values()):
            loop.digest()
        if not self.next_bin:
            return
        for tracked in list(self.tracked.values()):
            self._sample(tracked, self.next_bin)
        self._close_bin(self.next_bin)

    def _scopes(self) -> list[Scope]:
        return [*self.zone_scopes.values(), *self.conduit_scopes.values()]

    def _close_bin(self, end: float) -> None:
        self.bins_closed += 1
        check_behaviour = self.bins_closed % self.bins_per_second == 0
        if check_behaviour:
            for tr in list(self.tracked.values()):
                if not tr.bulk and tr.category == "" and looks_like_bulk(tr, end, self.bins_per_second):
                    tr.bulk = True
                    tr.category = "behaviour"
        scopes = self._scopes()
        for scope in scopes:
            scope.close_bin(self.bins_per_second * 10)
        if self.bins_closed % self.history == 0:
            for scope in scopes:
                self._views(scope)
        self._check_links(end, scopes)

    def _views(self, scope: Scope) -> None:
        """Peak utilisation per view over the 10 s window that just completed."""
        bins = [b[0] for b in scope.bins]
        for name, width in self.views:
            peak = 0.0
            for start in range(0, len(bins) - width + 1, width):
                peak = max(peak, scope.utilisation(sum(bins[start : start + width]), width * self.bin_s))
            scope.peak[name] = peak

    # -- link incidents --------------------------------------------------------------------------

    def _check_links(self, now: float, scopes: list[Scope]) -> None:
        per_second = self.bins_per_second
        min_bulk = self.config.bulk_min_bps
        # Per link (both directions): the direction carrying the most bulk speaks for it.
        outside: dict[tuple[str, str], tuple[float, Scope]] = {}
        into: dict[str, tuple[float, Scope]] = {}
        for scope in scopes:
            if scope.quiet(2 * per_second):  # the usual case, answered without adding bins up
                bulk_bps = 0.0
                sustained = False
            else:
                bulk_bps = scope.rate_bps(per_second, self.bin_s, bulk=True)
                # A backup "runs": bulk in most bins of the last 2 s, not one sub-second copy burst.
                recent = list(scope.bins)[-2 * per_second :]
                sustained = sum(1 for b in recent if b[1]) >= 1.5 * per_second
            if scope.budget_bps is not None:
                self._condition("bulk_over_budget", (scope.kind, scope.name, scope.direction), scope,
                                bulk_bps > scope.budget_bps, now)  # fmt: skip
            if bulk_bps >= min_bulk and sustained:
                link = scope.link
                if link is not None and link.backup_windows and not self._in_window(link.backup_windows, now):
                    key = (scope.kind, scope.name)
                    if key not in outside or outside[key][0] < bulk_bps:
                        outside[key] = (bulk_bps, scope)
                if (
                    scope.kind == "zone"
                    and scope.control
                    and (scope.name not in into or into[scope.name][0] < bulk_bps)
                ):
                    into[scope.name] = (bulk_bps, scope)
        for scope in self._scopes():
            link = scope.link
            if link is not None and link.backup_windows:
                key = (scope.kind, scope.name)
                self._condition(
                    "backup_outside_window", key, outside.get(key, (0.0, scope))[1], key in outside, now
                )
            if scope.kind == "zone" and scope.control and scope.direction == "in":
                carrier = into.get(scope.name, (0.0, scope))[1]
                self._condition("bulk_into_control_zone", (scope.name,), carrier, scope.name in into, now)

    def _in_window(self, windows: Iterable[Any], ts: float) -> bool:
        compiled = self.compiled
        return compiled is not None and any(compiled.in_schedule(w, ts) for w in windows)

    def _condition(self, kind: str, key: tuple[str, ...], scope: Scope, holds: bool, now: float) -> None:
        """Raise, update or clear the incident of a link condition evaluated at a bin boundary."""
        incident = self.incidents.get(kind, key)
        if holds:
            if incident is None:
                transfers = scope.transfers(self.bins_per_second)
                top = max(transfers.items(), key=lambda kv: kv[1])[0] if transfers else None
                flow = top.flow if top is not None else self._any_flow(scope)
                if flow is None:
                    return
                data: dict[str, Any] = {"scope": scope, "last_true": now, "peak": 0.0, "transfers": transfers}
                self._account(scope, data)
                details = self._link_details(kind, scope, data)
                sentence = self._link_sentence(kind, scope, details)
                incident = self.incidents.raise_(kind, key, now, flow, sentence, details)
                if incident is None:
                    return
                incident.data = data
                data["details"] = details
                return
            data = incident.data
            data["last_true"] = now
            data["scope"] = scope
            self._account(scope, data)
            data["details"] = details = self._link_details(kind, scope, data)
            if now - incident.last_update >= self.config.update_every_s:
                self.incidents.update(incident, now, self._link_sentence(kind, scope, details), details)
        elif incident is not None and now - incident.data["last_true"] >= self.config.clear_after_s:
            # The clear event carries the numbers of the last moment the condition held.
            details = incident.data["details"]
            sentence = "Ended: " + self._link_sentence(kind, incident.data["scope"], details)
            self.incidents.clear(incident, now, sentence, details)

    def _account(self, scope: Scope, data: dict[str, Any]) -> None:
        """Peak bin utilisation and bulk bytes per transfer while the condition holds."""
        if scope.bins:
            data["peak"] = max(data["peak"], scope.utilisation(scope.bins[-1][0], self.bin_s))
            data["bins"] = data.get("bins", 0) + 1
        transfers: dict[Tracked, int] = data.setdefault("bytes", {})
        if scope.recent_bulk_flows:
            for tr, n in scope.recent_bulk_flows[-1].items():
                transfers[tr] = transfers.get(tr, 0) + n

    def _any_flow(self, scope: Scope) -> Flow | None:
        for tr in self.tracked.values():
            if scope in tr.to_server or scope in tr.to_client:
                return tr.flow
        return None

    def _transfer(self, tr: Tracked, nbytes: int, seconds: float) -> dict[str, Any]:
        flow = tr.flow
        return {
            "src_ip": format_ip(flow.src),
            "src_port": flow.sport,
            "dest_ip": format_ip(flow.dst),
            "dest_port": flow.dport,
            "app_proto": flow.app_proto or "unknown",
            "category": tr.category or "behaviour",
            "src_zone": tr.src_zone,
            "dest_zone": tr.dst_zone,
            "rate_bps": round(nbytes * 8 / seconds),
            "bytes": tr.bulk_bytes,
        }

    def _incident_transfers(self, data: dict[str, Any], limit: int = 3) -> list[dict[str, Any]]:
        """The biggest transfers of a condition, with their average rate while it held."""
        seconds = max(self.bin_s, data.get("bins", 0) * self.bin_s)
        top = sorted(data.get("bytes", {}).items(), key=lambda kv: -kv[1])[:limit]
        return [self._transfer(tr, n, seconds) for tr, n in top]

    def _link_details(self, kind: str, scope: Scope, data: dict[str, Any]) -> dict[str, Any]:
        per_second = self.bins_per_second
        return {
            "kind": kind,
            "link": {"scope": scope.kind, "name": scope.name, "direction": scope.direction,
                     "capacity_bps": scope.capacity_bps, "bulk_budget_bps": scope.budget_bps},
            "bulk_rate_bps": round(scope.rate_bps(per_second, self.bin_s, bulk=True)),
            "total_rate_bps": round(scope.rate_bps(per_second, self.bin_s, bulk=False)),
            "peak_utilisation": round(data.get("peak", 0.0), 4),
            "transfers": self._incident_transfers(data),
        }  # fmt: skip

    @staticmethod
    def _link_sentence(kind: str, scope: Scope, details: dict[str, Any]) -> str:
        transfers = details["transfers"]
        what = (
            ", ".join(
                f"{t['app_proto']} {t['src_ip']} -> {t['dest_ip']} ({_mbps(t['rate_bps'])})"
                for t in transfers
            )
            or "bulk traffic"
        )
        if kind == "bulk_over_budget":
            budget = _mbps(scope.budget_bps or 0.0)
            return (
                f"{what} on {scope.label}: bulk {_mbps(details['bulk_rate_bps'])} over its budget of {budget}"
            )
        if kind == "backup_outside_window":
            return f"{what} on {scope.kind} {scope.name} outside its backup windows"
        # Bulk counts in either direction: a backup pulled out of the zone loads its uplink as much.
        way = "out of" if scope.direction == "out" else "into"
        return f"{what} crosses {way} control zone {scope.name}"

    # -- control health and interference ---------------------------------------------------------

    def _judge(self, now: float) -> None:
        idle: list[tuple[bytes, bytes, str]] = []
        for key, loop in list(self.loops.items()):
            if not loop.log and not loop.degraded and not loop.pending and not loop.to_learn:
                continue  # nothing new since the last judgement, nothing waiting: same verdict
            verdict = loop.judge(now)
            if verdict is True or loop.degraded:  # else no incident to raise, update or clear
                self._loop_condition(loop, verdict, now)
            if (
                now - max(loop.last_request, loop.sample_times[-1] if loop.sample_times else 0.0)
                > self.config.loop_idle_s
            ):
                idle.append(key)
            if loop.unanswered > loop.unanswered_reported:
                zkey = (loop.zone, loop.protocol)
                self.unanswered[zkey] = (
                    self.unanswered.get(zkey, 0) + loop.unanswered - loop.unanswered_reported
                )
                loop.unanswered_reported = loop.unanswered
        for stream in [c for streams in list(self.cyclic.values()) for c in list(streams.values())]:
            self._fold_gaps(stream)
        if idle:
            self.retune()
        for key in idle:
            loop = self.loops.pop(key)
            incident = self.incidents.get("control_degradation", key)
            if incident is not None:
                self.incidents.clear(
                    incident, now, self._loop_sentence(loop, "no longer seen"), self._loop_details(loop)
                )
        self._interference(now)

    def _loop_condition(self, loop: Loop, verdict: bool | None, now: float) -> None:
        key = (loop.client, loop.server, loop.protocol)
        incident = self.incidents.get("control_degradation", key)
        if verdict is True:
            loop.healthy_judgements = 0
            if incident is None and loop.streak >= RAISE_AFTER:
                loop.degraded = True
                loop.during = loop.window_latencies()
                loop.during_intervals = loop.intervals[:]
                details = self._loop_details(loop)
                self.incidents.raise_("control_degradation", key, now, loop.flow,
                                      self._loop_sentence(loop, "degraded"), details)  # fmt: skip
            elif incident is not None and now - incident.last_update >= self.config.update_every_s:
                self.incidents.update(incident, now, self._loop_sentence(loop, "still degraded"),
                                      self._loop_details(loop))  # fmt: skip
        elif verdict is False and incident is not None:
            loop.healthy_judgements += 1
            if loop.healthy_judgements * JUDGE_EVERY_S >= self.config.clear_after_s:
                details = self._loop_details(loop)
                self.incidents.clear(incident, now, self._loop_sentence(loop, "recovered"), details)
                loop.degraded = False
                loop.during = []
                loop.during_intervals = []

    def _loop_details(self, loop: Loop) -> dict[str, Any]:
        base = list(loop.baseline)
        window = loop.window_latencies()
        during = loop.during or window
        return {
            "kind": "control_degradation",
            "client_ip": format_ip(loop.client),
            "server_ip": format_ip(loop.server),
            "protocol": loop.protocol,
            "client_zone": loop.client_zone,
            "server_zone": loop.zone,
            "conduit": loop.conduit,
            "latency_before_ms": {"p50": _ms(percentile(base, 50)), "p99": _ms(percentile(base, 99))},
            "latency_during_ms": {"p50": _ms(percentile(during, 50)), "p95": _ms(percentile(during, 95)),
                                  "p99": _ms(percentile(during, 99)), "samples": len(during)},
            "latency_threshold_ms": _ms(loop.threshold() or 0.0),
            "jitter_before_ms": _ms(loop.jitter(list(loop.base_intervals))),
            "jitter_during_ms": _ms(loop.jitter(loop.during_intervals or loop.intervals)),
            "unanswered": loop.unanswered,
            "exceptions": loop.exceptions,
            "tcp_retransmissions": loop.retransmissions,
            "tcp_retransmission_threshold": loop.retrans_threshold(),
        }  # fmt: skip

    @staticmethod
    def _loop_sentence(loop: Loop, state: str) -> str:
        if state == "recovered":
            why = "request latency and TCP retransmissions back within their baselines"
        else:
            measure = "TCP retransmissions" if loop.retrans_degraded else "request latency"
            why = f"{measure} beyond its baseline"
        if state == "no longer seen":
            why = "the loop stopped"
        return (
            f"{loop.protocol} from {format_ip(loop.client)} ({loop.client_zone}) to {format_ip(loop.server)} "
            f"({loop.zone}) {state}: {why}"
        )

    def _on_path(self, loop: Loop, scope: Scope) -> bool:
        if scope.kind == "zone":
            return scope.name in (loop.zone, loop.client_zone) and loop.zone != loop.client_zone
        return loop.conduit == scope.name

    def _interference(self, now: float) -> None:
        overloads = {i.key: i for i in self.incidents.active("bulk_over_budget")}
        degraded = [
            self.loops[i.key] for i in self.incidents.active("control_degradation") if i.key in self.loops
        ]
        for key, overload in overloads.items():
            scope: Scope = overload.data["scope"]
            affected = [loop for loop in degraded if self._on_path(loop, scope)]
            incident = self.incidents.get("backup_interference", key)
            if not affected:
                if incident is not None:
                    self._clear_interference(incident, now, "control traffic recovered")
                continue
            names = {(lp.client, lp.server, lp.protocol) for lp in affected}
            if incident is None:
                flow = overload.flow
                details = self._interference_details(scope, overload, affected)
                sentence = self._interference_sentence(scope, details)
                incident = self.incidents.raise_("backup_interference", key, now, flow, sentence, details)
                if incident is not None:
                    incident.data.update(loops=names, overload=overload, scope=scope, affected=affected,
                                         details=details)  # fmt: skip
            elif (
                not names <= incident.data["loops"]
                or now - incident.last_update >= self.config.update_every_s
            ):
                incident.data["loops"] |= names
                known = {(lp.client, lp.server, lp.protocol) for lp in incident.data["affected"]}
                incident.data["affected"] += [
                    lp for lp in affected if (lp.client, lp.server, lp.protocol) not in known
                ]
                details = self._interference_details(scope, overload, incident.data["affected"])
                incident.data["details"] = details
                self.incidents.update(incident, now, self._interference_sentence(scope, details), details)
        for incident in self.incidents.active("backup_interference"):
            if incident.key not in overloads:
                self._clear_interference(incident, now, "bulk load back under budget")

    def _clear_interference(self, incident: Incident, now: float, why: str) -> None:
        data = incident.data
        details = dict(data["details"], cleared_because=why)
        self.incidents.clear(
            incident, now, "Ended: " + self._interference_sentence(data["scope"], details), details
        )

    def _interference_details(self, scope: Scope, overload: Incident, loops: list[Loop]) -> dict[str, Any]:
        data = overload.data
        return {
            "kind": "backup_interference",
            "link": {"scope": scope.kind, "name": scope.name, "direction": scope.direction,
                     "capacity_bps": scope.capacity_bps, "bulk_budget_bps": scope.budget_bps},
            "peak_utilisation": round(data["peak"], 4),
            "overload_incident": overload.id,
            "transfers": self._incident_transfers(data),
            "control_flows": [self._loop_details(loop) for loop in loops],
        }  # fmt: skip

    @staticmethod
    def _interference_sentence(scope: Scope, details: dict[str, Any]) -> str:
        transfers = details["transfers"]
        what = ", ".join(f"{t['app_proto']} {t['src_ip']} -> {t['dest_ip']} ({_mbps(t['rate_bps'])})"
                         for t in transfers) or "bulk traffic"  # fmt: skip
        loops = details["control_flows"]
        hurt = "; ".join(
            f"{c['protocol']} {c['client_ip']} -> {c['server_ip']} p99 "
            f"{c['latency_before_ms']['p99']:g} ms -> {c['latency_during_ms']['p99']:g} ms"
            for c in loops[:3]
        )
        more = f" and {len(loops) - 3} more" if len(loops) > 3 else ""
        return (
            f"{what} fills {scope.label} to {details['peak_utilisation']:.0%} of its capacity and delays "
            f"{len(loops)} control loop(s): {hurt}{more}"
        )

    # -- reporting -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "tracked_flows": len(self.tracked),
            "untracked_flows": self.untracked,
            "loops": len(self.loops),
            "loops_dropped": self.loops_dropped,
            "cyclic_streams": self.cyclic_count,
            "cyclic_dropped": self.cyclic_dropped,
            "cip_connections": len(self.cip.intervals),
            "cip_connections_evicted": self.cip.evicted,
            "forward_opens_unreplied_dropped": self.cip.pending_dropped,
            "incidents": dict(self.incidents.total),
            "incidents_open": self.incidents.active_counts(),
            "tcp": self._tcp_stats(),
        }

    def _tcp_stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """Retransmissions, duplicate ACKs and zero windows of control flows, by zone then protocol."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for (zone, protocol), counts in sorted(self.tcp_counts.items()):
            out.setdefault(zone, {})[protocol] = counts.as_dict()
        return out

    def loop_summary(self) -> list[dict[str, Any]]:
        """Latency percentiles per control loop over its last samples (for reports and tests)."""
        out = []
        for loop in list(self.loops.values()):
            loop.digest()
            values = list(loop.summary)
            out.append({
                "client_ip": format_ip(loop.client),
                "server_ip": format_ip(loop.server),
                "protocol": loop.protocol,
                "samples": len(values),
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "p99": percentile(values, 99),
            })  # fmt: skip
        return out

    def jitter_by_zone(self) -> dict[tuple[str, str], float]:
        """Worst jitter per (zone, protocol) now: polling loops (last second) and cyclic streams (10 s);
        a (zone, protocol) whose cyclic streams have all ended keeps the jitter its last one ended with.

        Computed when asked (a scrape), not per judgement: nothing on the packet path pays for it.
        """
        jitter: dict[tuple[str, str], float] = {}
        running: set[tuple[str, str]] = set()
        for loop in list(self.loops.values()):
            intervals = loop.intervals[:]  # one copy, whole: the packet thread changes it
            if intervals:
                key = (loop.zone, loop.protocol)
                jitter[key] = max(jitter.get(key, 0.0), loop.jitter(intervals))
        for streams in list(self.cyclic.values()):
            for stream in list(streams.values()):
                value = stream.jitter()
                if value is not None:
                    key = (stream.zone, stream.protocol)
                    running.add(key)
                    jitter[key] = max(jitter.get(key, 0.0), value)
        for key, value in list(self.cyclic_last_jitter.items()):
            if key not in running:
                jitter[key] = max(jitter.get(key, 0.0), value)
        return jitter

    def _tcp_metrics(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        for attribute, name, doc in (
            ("retransmissions", "conduitwatch_tcp_retransmissions",
             "Control TCP segments carrying data (or SYN/FIN) already sent"),
            ("duplicate_acks", "conduitwatch_tcp_duplicate_acks",
             "Duplicate ACKs on control TCP flows (no data, same ACK and window as before)"),
            ("zero_windows", "conduitwatch_tcp_zero_windows",
             "Zero-window advertisements on control TCP flows (a receiver that cannot keep up)"),
        ):  # fmt: skip
            family = CounterMetricFamily(name, doc, labels=("zone", "protocol"))
            for (zone, protocol), counts in list(self.tcp_counts.items()):
                family.add_metric((zone, protocol), getattr(counts, attribute))
            yield family

    def collect_metrics(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        bulk = CounterMetricFamily("conduitwatch_bulk_bytes", "Bulk/backup bytes entering or leaving a zone",
                                   labels=("zone", "direction", "category"))  # fmt: skip
        for (zone, direction, category), n in list(self.bulk_bytes.items()):
            bulk.add_metric((zone, direction, category), n)
        yield bulk
        peak = GaugeMetricFamily("conduitwatch_link_utilisation_peak_ratio",
                                 "Peak utilisation of a link in the last completed 10 s window, per view",
                                 labels=("scope", "name", "view"))  # fmt: skip
        peaks: dict[tuple[str, str, str], float] = {}
        for scope in self._scopes():
            if scope.capacity_bps is None:
                continue
            for view, value in list(scope.peak.items()):
                key = (scope.kind, scope.name, view)
                peaks[key] = max(peaks.get(key, 0.0), value)
        for key, value in peaks.items():
            peak.add_metric(key, value)
        yield peak
        latency = HistogramMetricFamily(
            "conduitwatch_request_latency_seconds",
            "Request/response latency of control traffic",
            labels=("zone", "protocol"),
        )
        for (zone, protocol), hist in list(self.latency.items()):
            counts = list(hist.counts)
            cumulative = 0
            buckets = []
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric((zone, protocol), buckets, hist.total)
        yield latency
        jitter = GaugeMetricFamily("conduitwatch_cyclic_interarrival_jitter_seconds",
                                   "p99 of |interval - expected interval| of polling requests (last second) "
                                   "and cyclic I/O (last 10 s; the last value once a stream ended)",
                                   labels=("zone", "protocol"))  # fmt: skip
        for (zone, protocol), value in self.jitter_by_zone().items():
            jitter.add_metric((zone, protocol), value)
        yield jitter
        unanswered = CounterMetricFamily("conduitwatch_unanswered_requests",
                                         "Control requests left unanswered past their deadline",
                                         labels=("zone", "protocol"))  # fmt: skip
        for (zone, protocol), n in list(self.unanswered.items()):
            unanswered.add_metric((zone, protocol), n)
        yield unanswered
        gaps = CounterMetricFamily(
            "conduitwatch_cyclic_sequence_gaps",
            "Cyclic I/O frames missing from their sequence",
            labels=("zone", "protocol"),
        )
        for (zone, protocol), n in list(self.sequence_gaps.items()):
            gaps.add_metric((zone, protocol), n)
        yield gaps
        resets = CounterMetricFamily(
            "conduitwatch_tcp_resets", "Control TCP connections ended by a reset", labels=("zone", "protocol")
        )
        for (zone, protocol), n in list(self.resets.items()):
            resets.add_metric((zone, protocol), n)
        yield resets
        yield from self._tcp_metrics()
        active = GaugeMetricFamily("conduitwatch_incidents_active", "Open incidents", labels=("kind",))
        for kind, n in self.incidents.active_counts().items():
            active.add_metric((kind,), n)
        yield active
        total = CounterMetricFamily("conduitwatch_incidents", "Incidents raised", labels=("kind",))
        for kind in KINDS:
            total.add_metric((kind,), self.incidents.total.get(kind, 0))
        yield total
