"""The compiled policy and the detector that checks flows and industrial messages against it.

Compilation turns the model into lookup tables: an exact-IP table for assets, one dictionary per
prefix length for networks (longest-prefix match in at most ~33 probes for IPv4), VLAN and MAC
tables, and the flow rules indexed by (initiator zone, responder zone). Nothing here runs per
packet: a flow is judged once when it starts (the verdict is cached on the flow) and an industrial
message only when its flow has rules that restrict operations, codes, schedules or rates. A flow
allowed only by a schedule is also judged again about once a second of packet time (``tick``, off the
packet path), by its last packet's time, until it leaves its windows or ends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.decoders.base import NO_RECORD, OPERATIONS, REQUEST, Interest, OtMessage, no_retune
from agent.dissect import Packet, format_ip
from agent.flows import TCP_SYN_RECV, TCP_SYN_SENT, Flow, FlowKey
from agent.linklayer import endpoint_macs, format_mac, is_group_mac
from agent.outputs.eve import format_timestamp
from agent.policy.model import Asset, Conduit, FlowRule, Policy, Schedule, Zone, sl_text

# Alert rules: (signature_id, severity 1 high .. 3 low, category, 62443-3-3 SRs, ISO/IEC 27001:2022 Annex A)
RULES: dict[str, tuple[int, int, str, tuple[str, ...], tuple[str, ...]]] = {
    "no_conduit": (9100001, 1, "Zone boundary violation", ("SR 5.1", "SR 5.2"), ("A.8.20", "A.8.22")),
    "protocol_not_allowed": (9100002, 2, "Conduit protocol violation", ("SR 5.2", "SR 7.7"),
                             ("A.8.20", "A.8.21")),
    "operation_not_allowed": (9100003, 1, "Unauthorised industrial operation", ("SR 2.1", "SR 5.2"),
                              ("A.8.20", "A.8.32")),
    "responder_initiated": (9100004, 2, "Conduit direction violation", ("SR 5.2",), ("A.8.22",)),
    "outside_schedule": (9100005, 2, "Operation outside its window", ("SR 2.1", "SR 1.13", "SR 5.2"),
                         ("A.8.32", "A.8.20")),
    "unknown_host": (9100006, 2, "Host in no zone", ("SR 7.8", "SR 5.1"), ("A.5.9", "A.8.22")),
    "intra_zone_not_allowed": (9100007, 3, "Intra-zone flow not allowed", ("SR 5.2", "SR 7.7"), ("A.8.22",)),
    "rate_exceeded": (9100008, 3, "Conduit rate budget exceeded", ("SR 7.1",), ("A.8.6",)),
}  # fmt: skip
AUDIT = (9100100, 3, "Audited industrial operation", ("SR 2.8",), ("A.8.15", "A.8.32"))

_ANY_PROTO_GUESSES = frozenset({"", "unknown"})
# A port guess that a decoder will refine: until the payload decides, rules for any of these match.
# (TCP 102 carries S7comm, S7comm-plus or IEC 61850 MMS behind the same TPKT/COTP start; UDP 2222's
# class-1 I/O is decoded as enip, the EtherNet/IP decoder reading both.)
_PENDING_GUESSES: dict[str, frozenset[str]] = {
    "iso-tsap": frozenset({"iso-tsap", "s7comm", "s7comm_plus", "mms"}),
    "enip-io": frozenset({"enip-io", "enip"}),
}


_NOTHING: frozenset[str] = frozenset()


def is_group_ip(addr: bytes) -> bool:
    """An IP multicast (224.0.0.0/4, ff00::/8) or limited broadcast (255.255.255.255) address."""
    if len(addr) == 4:
        return 224 <= addr[0] <= 239 or addr == b"\xff\xff\xff\xff"
    return len(addr) == 16 and addr[0] == 0xFF


def _position(flow: Flow, msg: OtMessage | None) -> tuple[int, int]:
    """(pcap_cnt, source) of an occurrence: its message's packet, or the flow's last one."""
    return (msg.pcap_cnt, msg.source) if msg is not None else (flow.last_cnt, flow.last_source)


class CompiledPolicy:
    """Lookup tables built once from a validated ``Policy``; immutable after construction."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.defaults = policy.defaults
        self.zones: dict[str, Zone] = {z.id: z for z in policy.zones}
        self.assets_by_ip: dict[bytes, Asset] = {}
        self.assets_by_name: dict[str, Asset] = {}
        self.by_mac: dict[str, str] = {}
        self.assets_by_mac: dict[str, Asset] = {}
        # Assets declared by MAC with no ip: on IP traffic their MAC is what names them (zone_of).
        self.ipless_assets_by_mac: dict[str, Asset] = {}
        self.by_vlan: dict[int, str] = {}
        # prefix length -> {network address as int: zone id}, separately for IPv4 and IPv6
        self.nets: dict[int, list[tuple[int, dict[int, str]]]] = {4: [], 6: []}
        tables: dict[tuple[int, int], dict[int, str]] = {}
        for zone in policy.zones:
            for net in zone.networks:
                tables.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = zone.id
            for vid in zone.vlans:
                self.by_vlan[vid] = zone.id
            for mac in zone.macs:
                self.by_mac[mac] = zone.id
            for asset in zone.assets:
                self.assets_by_name[asset.name] = asset
                if asset.ip:
                    self.assets_by_ip[ipaddress.ip_address(asset.ip).packed] = asset
                if asset.mac:
                    self.by_mac[asset.mac] = zone.id
                    self.assets_by_mac[asset.mac] = asset
                    if not asset.ip:
                        self.ipless_assets_by_mac[asset.mac] = asset
        for (version, plen), table in sorted(tables.items(), key=lambda kv: -kv[0][1]):
            self.nets[version].append((plen, table))
        # (initiator zone, responder zone) -> [(conduit or None for intra-zone, rule)]
        self.rules: dict[tuple[str, str], list[tuple[Conduit | None, FlowRule]]] = {}
        self.conduits_between: dict[frozenset[str], list[Conduit]] = {}
        # A rate budget is its rule's, across every flow the rule allows. The detector keys the
        # rule's window by where the rule is written and its id, which outlive a reload that keeps
        # the rule; found here by the rule object's id (rules live as long as this object).
        self.rate_keys: dict[int, tuple[str, str, str]] = {}
        for conduit in policy.conduits:
            self.conduits_between.setdefault(frozenset(conduit.zones), []).append(conduit)
            for rule in conduit.flows:
                self.rules.setdefault((rule.initiator.zone, rule.responder.zone), []).append((conduit, rule))
                if rule.messages_per_second is not None:
                    self.rate_keys[id(rule)] = ("conduit", conduit.id, rule.id)
        for zone in policy.zones:
            for rule in zone.allow:
                self.rules.setdefault((zone.id, zone.id), []).append((None, rule))
                if rule.messages_per_second is not None:
                    self.rate_keys[id(rule)] = ("zone", zone.id, rule.id)
        self.audited = policy.defaults.audit_operations
        self._tz: dict[str, ZoneInfo] = {}
        # looked_at() by the ids of the rules allowing a flow (rules live as long as this object)
        self._looks: dict[tuple[int, ...], frozenset[str]] = {}

    def zone_of(self, addr: bytes, vlan: tuple[int, ...], mac: str | None) -> tuple[str | None, Asset | None]:
        """(zone id, asset) of an address. The zone: asset IP, longest prefix, VLAN, then MAC. The
        asset: the one with that IP, else one declared by MAC alone whose MAC the frame carries, if it
        is in that zone. (An asset with an ip is never named by its MAC on IP traffic: a router's or
        firewall's MAC is on the frames of every host it forwards.)"""
        asset = self.assets_by_ip.get(addr)
        if asset is not None:
            return asset.zone, asset
        zone = self.network_zone(addr)
        if zone is None and vlan:
            zone = self.by_vlan.get(vlan[-1])
        if zone is None and mac is not None:
            zone = self.by_mac.get(mac)
        if zone is not None and mac is not None:
            asset = self.ipless_assets_by_mac.get(mac)
            if asset is not None and asset.zone == zone:
                return zone, asset
        return zone, None

    def network_zone(self, addr: bytes) -> str | None:
        """The zone whose network is the longest prefix containing ``addr``."""
        value = int.from_bytes(addr, "big")
        bits = len(addr) * 8
        for plen, table in self.nets[4 if bits == 32 else 6]:
            zone = table.get(value >> (bits - plen) << (bits - plen) if plen else 0)
            if zone is not None:
                return zone
        return None

    def dest_zone_of(
        self, addr: bytes, vlan: tuple[int, ...], mac: str | None, sender_zone: str | None
    ) -> tuple[str | None, Asset | None]:
        """zone_of for the destination of an IP flow: a multicast or broadcast address that no asset
        or network places is in the sender's zone, as a link-layer group frame is (docs/policy.md,
        "IP multicast and broadcast")."""
        if is_group_ip(addr) and addr not in self.assets_by_ip and self.network_zone(addr) is None:
            return sender_zone, None
        return self.zone_of(addr, vlan, mac)

    def zone_of_l2(self, mac: str | None, vlan: tuple[int, ...]) -> tuple[str | None, Asset | None]:
        """(zone id, asset) of a MAC on an L2 flow: asset MAC, zone MAC list, then VLAN."""
        if mac is not None:
            asset = self.assets_by_mac.get(mac)
            if asset is not None:
                return asset.zone, asset
            zone = self.by_mac.get(mac)
            if zone is not None:
                return zone, None
        if vlan:
            zone = self.by_vlan.get(vlan[-1])
            if zone is not None:
                return zone, None
        return None, None

    def looked_at(self, rules: list[FlowRule]) -> frozenset[str]:
        """The operation classes a flow allowed by ``rules`` has its requests judged for: those no
        rule allows, or whose first allowing rule (in the order ``PolicyDetector.on_message`` walks
        them) restricts by function code or schedule, rate-limits, or audits (when no rule restricts
        anything, just the audited ones). A request of any other class is allowed silently, so its
        record need not be built (DecoderContext.interest)."""
        key = tuple(id(rule) for rule in rules)
        looks = self._looks.get(key)
        if looks is not None:
            return looks
        audited = self.audited
        chosen = set()
        for operation in OPERATIONS:
            for rule in rules:
                if rule.operations is not None and operation not in rule.operations:
                    continue
                if (
                    rule.function_codes is not None
                    or rule.schedule is not None
                    or rule.messages_per_second is not None
                    or operation in audited
                ):
                    chosen.add(operation)
                break
            else:  # no rule allows it
                chosen.add(operation)
        looks = self._looks[key] = frozenset(chosen)
        return looks

    def in_schedule(self, schedule: Schedule, ts: float) -> bool:
        tz = self._tz.get(schedule.timezone)
        if tz is None:
            tz = self._tz[schedule.timezone] = ZoneInfo(schedule.timezone)
        local = datetime.fromtimestamp(ts, UTC).astimezone(tz)
        minute = local.hour * 60 + local.minute
        start, end = schedule.start_minute, schedule.end_minute
        if start < end:
            return local.weekday() in schedule.days and start <= minute < end
        # Wraps midnight: the part after midnight belongs to the previous day's window.
        if minute >= start:
            return local.weekday() in schedule.days
        return minute < end and (local.weekday() - 1) % 7 in schedule.days


def _endpoint_matches(
    endpoint_zone: str, endpoint_asset: str | None, zone: str | None, asset: Asset | None
) -> bool:
    return endpoint_zone == zone and (
        endpoint_asset is None or (asset is not None and asset.name == endpoint_asset)
    )


def _protocol_matches(rule: FlowRule, app_proto: str, dport: int) -> bool:
    if rule.ports is not None and dport not in rule.ports:
        return False
    if rule.protocols is None:
        return True
    if app_proto in rule.protocols:
        return True
    candidates = _PENDING_GUESSES.get(app_proto)
    return candidates is not None and not candidates.isdisjoint(rule.protocols)


@dataclass(slots=True)
class Verdict:
    """Cached on ``flow.verdict`` when the flow starts."""

    generation: int
    src_zone: str | None
    dest_zone: str | None
    src_asset: Asset | None
    dest_asset: Asset | None
    conduit: Conduit | None
    rules: list[FlowRule]  # the rules allowing this flow (empty when it is a violation)
    checks_messages: bool  # some rule restricts operations, codes, schedules or rates
    # The operation classes whose requests the detector must see on this flow (see looked_at): the
    # decoder builds no record for the others.
    looks: frozenset[str]
    proto_checked: str
    macs: tuple[str | None, str | None]
    client: bytes  # the side that opened the flow (as far as the capture can tell)
    server: bytes
    server_port: int
    # Inside one zone with ``intra_zone: allow``: allowed with no rule, its always-audited operations
    # still audited (SR 2.8 asks who changed what, wherever the change came from).
    intra_allowed: bool = False


@dataclass(slots=True)
class _Fold:
    event_type: str  # "alert" or "audit": the key of ``template`` holding count and first/last seen
    first: float
    last: float
    window_end: float
    pending: int  # occurrences since the last event
    template: dict[str, Any]
    flow: Flow
    cnt: int  # packet of the latest occurrence
    source: int


@dataclass(slots=True)
class _Followed:
    """A flow allowed only by scheduled flow-level rules, and inside one of their windows so far."""

    flow: Flow  # its current record (an active timeout continues it in a new one: on_flow_continue)
    verdict: Verdict
    rules: list[FlowRule]  # the scheduled flow-level rules
    until: float  # packet time before which the answer cannot change (the next minute)


def _next_minute(ts: float) -> float:
    # Schedules are judged to the local minute and time zones differ from UTC by whole minutes, so
    # whether a time is in a window stays the same up to the next minute of UTC.
    return (ts // 60 + 1) * 60


# emit(event_type, timestamp, flow, pcap_cnt, source index, fields)
EmitFn = Callable[[str, float, Flow, int, int, dict[str, Any]], None]


class PolicyDetector:
    """Flow consumer checking the policy; emits ``alert`` and ``audit`` events through ``emit``."""

    def __init__(self, policy: CompiledPolicy, emit: EmitFn, max_folds: int = 10_000,
                 max_followed: int = 10_000) -> None:  # fmt: skip
        self.compiled = policy
        self.generation = 1
        self.emit = emit
        self.max_folds = max_folds
        self.folds: dict[tuple[Any, ...], _Fold] = {}
        self.fold_evictions = 0
        # (rule, src zone, dest zone, conduit, operation) -> occurrences: every one, folded or not
        self.violations: dict[tuple[str, str, str, str, str], int] = {}
        self.audits = 0
        self.flows_checked = 0
        # Rate budgets (CompiledPolicy.rate_keys) -> [window start, messages in it]: one entry per
        # rate-limited rule of the policy in force, so bounded by the policy, not by the traffic.
        self.rate_windows: dict[tuple[str, str, str], list[float]] = {}
        # Flows whose only allowance is a schedule, followed until they carry packets outside it
        # (judged at tick and at their end, by their last packet's time), oldest first.
        self.followed: dict[FlowKey, _Followed] = {}
        self.max_followed = max_followed
        self.followed_evictions = 0
        # Called on a swap: the decoders ask record_interest again (DecoderContext.retune).
        self.retune: Callable[[], None] = no_retune

    def stats(self) -> dict[str, Any]:
        by_rule: dict[str, int] = {}
        for (rule, *_), count in self.violations.items():
            by_rule[rule] = by_rule.get(rule, 0) + count
        return {
            "file": self.compiled.policy.path,
            "generation": self.generation,
            "flows_checked": self.flows_checked,
            "violations": dict(sorted(by_rule.items())),
            "audits": self.audits,
            "alert_folds_open": len(self.folds),
            "alert_fold_evictions": self.fold_evictions,
            "scheduled_flows_followed": len(self.followed),
            "scheduled_flow_evictions": self.followed_evictions,
        }

    def swap(self, policy: CompiledPolicy) -> None:
        """Use a new policy from now on; flows re-judge themselves at their next message or end."""
        self.compiled = policy
        self.generation += 1
        # A rule the new policy keeps (same conduit or zone, same id) keeps its window: a reload in
        # the middle of a burst does not forgive it. The windows of rules it drops go with them.
        kept = set(policy.rate_keys.values())
        self.rate_windows = {key: w for key, w in self.rate_windows.items() if key in kept}
        self.retune()

    # -- flows -----------------------------------------------------------------------------------

    def on_flow_start(self, flow: Flow, pkt: Packet) -> None:
        macs: tuple[str | None, str | None] = (None, None)
        if not flow.ip_version:  # an L2 flow is keyed by its MACs (agent.linklayer)
            macs = (format_mac(flow.src), format_mac(flow.dst))
        elif pkt.l2_off >= 0:
            macs = endpoint_macs(pkt, flow.src)
        self._judge(flow, macs, flow.first_ts)

    def _judge(self, flow: Flow, macs: tuple[str | None, str | None], ts: float,
               continued: bool = False) -> Verdict:  # fmt: skip
        self.flows_checked += 1
        if self.followed:
            self.followed.pop(flow.key, None)  # judged again: followed again if the new verdict says so
        cp = self.compiled
        if flow.ip_version:
            src_zone, src_asset = cp.zone_of(flow.src, flow.vlan, macs[0])
            dest_zone, dest_asset = cp.dest_zone_of(flow.dst, flow.vlan, macs[1], src_zone)
        else:
            src_zone, src_asset = cp.zone_of_l2(macs[0], flow.vlan)
            if is_group_mac(flow.dst):
                # A multicast/broadcast frame stays on its segment: it is judged as intra-zone traffic
                # of its sender's zone (docs/policy.md, "Link-layer flows").
                dest_zone, dest_asset = src_zone, None
            else:
                dest_zone, dest_asset = cp.zone_of_l2(macs[1], flow.vlan)
        verdict = Verdict(self.generation, src_zone, dest_zone, src_asset, dest_asset, None, [], False,
                          _NOTHING, flow.app_proto, macs, flow.src, flow.dst, flow.dport)  # fmt: skip
        flow.verdict = verdict
        if src_zone is None or dest_zone is None:
            if cp.defaults.unknown_hosts == "alert":
                self._alert("unknown_host", flow, verdict, ts, None)
            return verdict
        if src_zone == dest_zone and cp.defaults.intra_zone == "allow":
            verdict.intra_allowed = True
            verdict.looks = cp.audited
            return verdict
        if src_zone != dest_zone:
            conduits = cp.conduits_between.get(frozenset((src_zone, dest_zone)), [])
            verdict.conduit = conduits[0] if conduits else None
            if not conduits:
                self._alert("no_conduit", flow, verdict, ts, None)
                return verdict
        allowed = self._allowed(src_zone, src_asset, dest_zone, dest_asset, flow.app_proto, flow.dport)
        if not allowed and self._midstream(flow):
            # The capture began after the handshake, so "initiator" is only the first talker: judge
            # the flow the way round that the rules allow, e.g. the side on port 502 is the server.
            allowed = self._allowed(dest_zone, dest_asset, src_zone, src_asset, flow.app_proto, flow.sport)
            if allowed:
                verdict.src_zone, verdict.dest_zone = dest_zone, src_zone
                verdict.src_asset, verdict.dest_asset = dest_asset, src_asset
                verdict.client, verdict.server, verdict.server_port = flow.dst, flow.src, flow.sport
        if allowed:
            verdict.conduit = allowed[0][0] or verdict.conduit
            verdict.rules = [r for _, r in allowed]
            verdict.checks_messages = any(
                r.operations is not None or r.function_codes is not None or r.messages_per_second is not None
                or (r.schedule is not None) for r in verdict.rules
            )  # fmt: skip
            verdict.looks = self.compiled.looked_at(verdict.rules)
            self._check_flow_schedule(flow, verdict, ts, continued)
            return verdict
        if not self._midstream(flow) and self._allowed(
            dest_zone, dest_asset, src_zone, src_asset, flow.app_proto, flow.sport, flow.dport
        ):
            self._alert("responder_initiated", flow, verdict, ts, None)
        elif src_zone == dest_zone:
            self._alert("intra_zone_not_allowed", flow, verdict, ts, None)
        else:
            self._alert("protocol_not_allowed", flow, verdict, ts, None)
        return verdict

    def _allowed(self, client_zone: str, client_asset: Asset | None, server_zone: str,
                 server_asset: Asset | None, app_proto: str,
                 *ports: int) -> list[tuple[Conduit | None, FlowRule]]:  # fmt: skip
        """The rules letting ``client`` open ``app_proto`` to ``server`` on one of ``ports``."""
        return [
            (c, r)
            for c, r in self.compiled.rules.get((client_zone, server_zone), ())
            if _endpoint_matches(r.initiator.zone, r.initiator.asset, client_zone, client_asset)
            and _endpoint_matches(r.responder.zone, r.responder.asset, server_zone, server_asset)
            and any(_protocol_matches(r, app_proto, port) for port in ports)
        ]

    def record_interest(self, flow: Flow, _protocol: str, ts: float) -> Interest:
        """The requests this detector reads on ``flow`` (DecoderContext.interest), asked at the flow's
        first message: by then the payload has settled the protocol the port only guessed, so a
        verdict on the guess is judged again here, as it would be at any message."""
        verdict = flow.verdict
        if not isinstance(verdict, Verdict):
            return NO_RECORD
        if verdict.generation != self.generation or flow.app_proto != verdict.proto_checked:
            verdict = self._judge(flow, verdict.macs, ts)
        # (A flow that is itself a violation had its alert and looks at nothing: its operations are not
        # judged again.)
        return Interest(verdict.looks, _NOTHING)

    @staticmethod
    def _midstream(flow: Flow) -> bool:
        """A TCP flow picked up after its handshake: the capture cannot say who opened it."""
        return flow.proto == 6 and flow.tcp_state not in (TCP_SYN_SENT, TCP_SYN_RECV) and flow.client_isn < 0

    def _check_flow_schedule(self, flow: Flow, verdict: Verdict, ts: float, continued: bool) -> None:
        # A schedule on a rule without an operation list governs the flow itself: a flow allowed only
        # by such rules is an alert when it opens outside all their windows, and is followed when it
        # opens inside one, to be an alert if it carries packets past them. A rule with an operation
        # list allows the flow at any time (its schedule, if any, governs only those operations).
        flow_rules = verdict.rules
        if any(r.operations is not None or r.schedule is None for r in flow_rules):
            return
        if not self._in_a_window(flow_rules, ts):
            self._alert("outside_schedule", flow, verdict, ts, None, rule=flow_rules[0], continued=continued)
            return
        if len(self.followed) >= self.max_followed:
            del self.followed[next(iter(self.followed))]  # the oldest is not judged against its windows again
            self.followed_evictions += 1
        self.followed[flow.key] = _Followed(flow, verdict, flow_rules, _next_minute(ts))

    def _in_a_window(self, rules: list[FlowRule], ts: float) -> bool:
        in_schedule = self.compiled.in_schedule
        return any(r.schedule is not None and in_schedule(r.schedule, ts) for r in rules)

    def _follow_up(self) -> None:
        """Judge the followed flows by their last packet's time (from tick, once a second)."""
        for key, followed in list(self.followed.items()):
            flow = followed.flow
            if followed.verdict.generation != self.generation:
                # Reloaded: a flow that sends no industrial messages would otherwise keep its old
                # verdict until it ends. Judging it follows it again, or alerts, under the new policy.
                self._judge(flow, followed.verdict.macs, flow.last_ts, continued=True)
                continue
            if flow.last_ts >= followed.until:
                self._judge_followed(key, followed, flow)

    def _judge_followed(self, key: FlowKey, followed: _Followed, flow: Flow) -> bool:
        """Whether ``flow`` is still inside a window at its last packet; if not, the alert, and the
        flow is no longer followed."""
        ts = flow.last_ts
        if self._in_a_window(followed.rules, ts):
            followed.until = _next_minute(ts)
            return True
        del self.followed[key]
        self._alert("outside_schedule", flow, followed.verdict, ts, None, rule=followed.rules[0],
                    continued=True)  # fmt: skip
        return False

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        verdict = flow.verdict
        if not isinstance(verdict, Verdict):
            return
        if verdict.generation != self.generation or (
            flow.app_proto != verdict.proto_checked and flow.app_proto not in _ANY_PROTO_GUESSES
        ):
            # The policy was reloaded, or the payload showed another protocol than the port said.
            verdict = self._judge(flow, verdict.macs, flow.last_ts)
        followed = self.followed.get(flow.key) if self.followed else None
        if followed is None or followed.flow is not flow or followed.verdict is not verdict:
            return
        # Outside its windows: alerted, and no longer followed. Inside: done with, unless the flow
        # goes on in a new record (active timeout), which on_flow_continue follows instead.
        if self._judge_followed(flow.key, followed, flow) and reason != "active_timeout":
            del self.followed[flow.key]

    def on_flow_continue(self, old: Flow, new: Flow) -> None:
        """The flow table cut ``old`` by active timeout and goes on with ``new`` (same verdict)."""
        followed = self.followed.get(old.key)
        if followed is not None and followed.flow is old:
            followed.flow = new

    # -- messages --------------------------------------------------------------------------------

    def on_message(self, msg: OtMessage) -> None:
        ts, flow, _, _, _, _, direction, function, operation, _, _, _, _ = msg  # one unpacking: cheaper
        verdict = flow.verdict
        if not isinstance(verdict, Verdict):
            return
        if verdict.generation != self.generation or flow.app_proto != verdict.proto_checked:
            # Reloaded policy, or the payload has now said which protocol the port guess was.
            verdict = self._judge(flow, verdict.macs, ts)
        if direction != REQUEST or not verdict.rules:
            # A response takes its request's class (already judged); a flow that is itself a
            # violation has had its alert, its operations are not listed again.
            if verdict.intra_allowed and direction == REQUEST and operation in self.compiled.audited:
                self._audit(msg, verdict, None)
            return
        audited = operation in self.compiled.audited
        if not verdict.checks_messages:
            if audited:
                self._audit(msg, verdict, verdict.rules[0])
            return
        allowing: FlowRule | None = None
        scheduled_out: FlowRule | None = None
        for rule in verdict.rules:
            if rule.operations is not None and operation not in rule.operations:
                continue
            if rule.function_codes is not None and function not in rule.function_codes:
                continue
            if rule.schedule is not None and not self.compiled.in_schedule(rule.schedule, ts):
                scheduled_out = rule
                continue
            allowing = rule
            break
        if allowing is None:
            kind = "outside_schedule" if scheduled_out is not None else "operation_not_allowed"
            self._alert(kind, flow, verdict, ts, msg, rule=scheduled_out)
            return
        if audited:
            self._audit(msg, verdict, allowing)
        if allowing.messages_per_second is not None:
            self._check_rate(allowing, flow, verdict, msg)

    def _check_rate(self, rule: FlowRule, flow: Flow, verdict: Verdict, msg: OtMessage) -> None:
        """Count ``msg`` against its rule's budget, summed over every flow the rule allows."""
        key = self.compiled.rate_keys[id(rule)]
        window = self.rate_windows.get(key)
        if window is None or msg.ts - window[0] >= 1.0:
            self.rate_windows[key] = [msg.ts, 1.0]
            return
        window[1] += 1
        if rule.messages_per_second is not None and window[1] > rule.messages_per_second:
            self._alert("rate_exceeded", flow, verdict, msg.ts, msg, rule=rule)

    # -- events ----------------------------------------------------------------------------------

    def _policy_object(
        self, verdict: Verdict, rule: FlowRule | None, msg: OtMessage | None
    ) -> dict[str, Any]:
        conduit = verdict.conduit
        sl_t = conduit.sl_t if conduit is not None else None
        if sl_t is None and verdict.dest_zone is not None:
            sl_t = self.compiled.zones[verdict.dest_zone].sl_t
        return {
            "src_zone": verdict.src_zone,
            "dest_zone": verdict.dest_zone,
            "conduit": conduit.id if conduit is not None else None,
            "rule": rule.id if rule is not None else (verdict.rules[0].id if verdict.rules else None),
            "operation": msg.operation if msg is not None else None,
            "sl_t": sl_text(sl_t),
            "src_asset": verdict.src_asset.name if verdict.src_asset else None,
            "dest_asset": verdict.dest_asset.name if verdict.dest_asset else None,
        }

    def _alert(self, kind: str, flow: Flow, verdict: Verdict, ts: float, msg: OtMessage | None,
               rule: FlowRule | None = None, continued: bool = False) -> None:  # fmt: skip
        conduit = verdict.conduit.id if verdict.conduit is not None else None
        operation = msg.operation if msg is not None else None
        key = (kind, verdict.src_zone or "-", verdict.dest_zone or "-", conduit or "-", operation or "-")
        self.violations[key] = self.violations.get(key, 0) + 1
        # Same rule, endpoints, conduit and operation: one alert, however many times a poll repeats it.
        fold_key = ("alert", kind, verdict.client, verdict.server, verdict.server_port, conduit, operation)
        if self._repeat(fold_key, ts, flow, msg):
            return  # folded: the event, its sentence included, is built once per window
        sid, severity, category, srs, iso = RULES[kind]
        fields: dict[str, Any] = {
            "alert": {
                "signature_id": sid,
                "signature": self._sentence(kind, flow, verdict, msg, rule, continued),
                "category": category,
                "severity": severity,
                "rule": kind,
                "metadata": {"iec62443_sr": list(srs), "iso27001_annex_a": list(iso)},
            },
            "policy": self._policy_object(verdict, rule, msg),
        }
        self._fold("alert", fold_key, ts, flow, msg, fields)

    def _audit(self, msg: OtMessage, verdict: Verdict, rule: FlowRule | None) -> None:
        """An allowed operation of an always-audited class (SR 2.8): who did what, under which rule
        (None: inside a zone, allowed by ``intra_zone: allow``)."""
        self.audits += 1
        flow = msg.flow
        # A program download is hundreds of block messages: audited once per window, with a count.
        rule_id = rule.id if rule is not None else None
        key = ("audit", verdict.client, verdict.server, verdict.server_port, rule_id, msg.operation)
        if self._repeat(key, msg.ts, flow, msg):
            return
        sid, severity, category, srs, iso = AUDIT
        fields: dict[str, Any] = {
            "audit": {
                "signature_id": sid,
                "signature": f"{self._who(verdict.client, verdict.src_asset, verdict.src_zone)} performed "
                f"{msg.protocol} {msg.operation} (function {msg.function}) on "
                f"{self._who(verdict.server, verdict.dest_asset, verdict.dest_zone)}",
                "category": category,
                "severity": severity,
                "metadata": {"iec62443_sr": list(srs), "iso27001_annex_a": list(iso)},
            },
            "policy": self._policy_object(verdict, rule, msg),
        }
        self._fold("audit", key, msg.ts, flow, msg, fields)

    def _repeat(self, key: tuple[Any, ...], ts: float, flow: Flow, msg: OtMessage | None) -> bool:
        """Fold an occurrence into the open window of the same alert or audit, if there is one."""
        fold = self.folds.get(key)
        if fold is None or ts >= fold.window_end:
            return False
        if not fold.pending:
            fold.first = ts  # the folded event covers the repeats, not the occurrence reported at once
        fold.pending += 1
        fold.last = ts
        fold.cnt, fold.source = _position(flow, msg)
        return True

    def _fold(self, event_type: str, key: tuple[Any, ...], ts: float, flow: Flow, msg: OtMessage | None,
              fields: dict[str, Any]) -> None:  # fmt: skip
        """Emit the first occurrence of a window (``_repeat`` folds the others) and open the window."""
        cnt, source = _position(flow, msg)
        fold = self.folds.get(key)
        if fold is not None:
            self._flush_fold(fold)
            del self.folds[key]
        elif len(self.folds) >= self.max_folds:
            oldest = next(iter(self.folds))
            self._flush_fold(self.folds.pop(oldest))
            self.fold_evictions += 1
        window = self.compiled.defaults.alert_fold_seconds
        fields[event_type].update(count=1, first_seen=format_timestamp(ts), last_seen=format_timestamp(ts))
        self.emit(event_type, ts, flow, cnt, source, fields)
        self.folds[key] = _Fold(event_type, ts, ts, ts + window, 0, fields, flow, cnt, source)

    def _flush_fold(self, fold: _Fold) -> None:
        """One event for the repeats folded in a window (none if the first alert was alone)."""
        if not fold.pending:
            return
        kind = fold.event_type
        fields = dict(fold.template)
        fields[kind] = dict(fold.template[kind], count=fold.pending, folded=True,
                            first_seen=format_timestamp(fold.first),
                            last_seen=format_timestamp(fold.last))  # fmt: skip
        self.emit(kind, fold.last, fold.flow, fold.cnt, fold.source, fields)

    def tick(self, now: float) -> None:
        """Close fold windows that have ended and judge the followed flows (called about once a
        second of packet time)."""
        ended = [k for k, f in self.folds.items() if f.window_end <= now]
        for key in ended:
            self._flush_fold(self.folds.pop(key))
        if self.followed:
            self._follow_up()

    def finish(self) -> None:
        for fold in self.folds.values():
            self._flush_fold(fold)
        self.folds.clear()

    # -- sentences -------------------------------------------------------------------------------

    @staticmethod
    def _allowance(verdict: Verdict) -> str:
        """What the flow's rules do allow, e.g. "read, diagnostic; write with function 16"."""
        parts = []
        for rule in verdict.rules:
            ops = ", ".join(sorted(rule.operations)) if rule.operations is not None else "any operation"
            if rule.function_codes is not None:
                ops += " with function " + ", ".join(str(c) for c in sorted(rule.function_codes))
            if rule.schedule is not None:
                ops += f" ({rule.schedule.text()})"
            parts.append(ops)
        return "; ".join(parts)

    @staticmethod
    def _who(addr: bytes, asset: Asset | None, zone: str | None) -> str:
        ip = format_ip(addr)
        name = f"{asset.name} {ip}" if asset is not None else ip
        return f"{name} ({zone})" if zone else f"{name} (in no zone)"

    def _sentence(self, kind: str, flow: Flow, verdict: Verdict, msg: OtMessage | None,
                  rule: FlowRule | None, continued: bool = False) -> str:  # fmt: skip
        src = self._who(verdict.client, verdict.src_asset, verdict.src_zone)
        dst = self._who(verdict.server, verdict.dest_asset, verdict.dest_zone)
        proto = flow.app_proto or "traffic"
        port = f"/{verdict.server_port}" if flow.proto in (6, 17) else ""
        conduit = verdict.conduit.id if verdict.conduit is not None else None
        if kind == "no_conduit":
            zones = f"{verdict.src_zone} and {verdict.dest_zone}"
            return f"{src} sent {proto}{port} to {dst}: no conduit joins {zones}"
        if kind == "unknown_host":
            return f"{src} talked {proto}{port} with {dst}: a host in no zone of the policy"
        if kind == "protocol_not_allowed":
            return f"{src} opened {proto}{port} to {dst}: conduit {conduit} does not allow {proto}"
        if kind == "responder_initiated":
            return (f"{src} opened {proto}{port} to {dst}: conduit {conduit} only allows it the other way, "
                    f"from {verdict.dest_zone} to {verdict.src_zone}")  # fmt: skip
        if kind == "intra_zone_not_allowed":
            return f"{src} opened {proto}{port} to {dst}: no rule of zone {verdict.src_zone} allows it"
        if msg is not None:
            what = f"{msg.protocol} {msg.operation} (function {msg.function})"
            if kind == "operation_not_allowed":
                allowance = self._allowance(verdict)
                return f"{src} performed {what} on {dst}: conduit {conduit} allows only {allowance}"
            if kind == "outside_schedule" and rule is not None and rule.schedule is not None:
                return (f"{src} performed {what} on {dst} outside the window of rule {rule.id} "
                        f"({rule.schedule.text()})")  # fmt: skip
            if kind == "rate_exceeded" and rule is not None:
                rate = f"{rule.messages_per_second:g} {msg.protocol} messages a second"
                return f"{src} sent more than {rate} to {dst}"
        if kind == "outside_schedule" and rule is not None and rule.schedule is not None:
            window = f"rule {rule.id} ({rule.schedule.text()})"
            if continued:  # (past the window's end, or before the start of one a reload moved later)
                return f"{proto}{port} from {src} to {dst} was still open outside the window of {window}"
            return f"{src} opened {proto}{port} to {dst} outside the window of {window}"
        return f"{src} -> {dst}: {kind}"
