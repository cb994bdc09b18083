"""Policies from observed traffic: ``policy learn`` drafts one, ``policy diff`` compares one with it.

Learning groups hosts into zones by subnet (/24 for IPv4, /64 for IPv6; multicast and broadcast get
zones of their own), names each zone after the roles of its hosts and the VLANs it was seen on, and
writes one conduit per pair of zones that talked, with a flow rule per (initiator zone, responder
zone, protocol, port set) listing the operation classes seen and, as YAML comments, the counts. The
draft allows exactly what the captures show, so replaying them against it raises no alert; an
engineer then narrows it (asset-level initiators) and removes what should not be there. Engineering
operations and remote-access sessions seen only at some hours get a schedule around those hours
(agent.policy.schedules), in a rule of their own so that polling on the same flows stays unscheduled.

The rules are written the way the engine matches flows: a flow is judged when it starts, by the
protocol its port suggests, and again once a decoder has named the payload. A protocol that only a
payload probe recognised (on a port that suggests nothing, or something else) is therefore allowed
by port with ``category: any``, which both judgements accept.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.decoders.base import AUDITED_OPERATIONS, REQUEST, OtMessage
from agent.flows import Flow
from agent.linklayer import format_mac
from agent.policy.schedules import Coverage, TimeSamples, Window, propose
from agent.ports import CATEGORIES, guess_app_proto

if TYPE_CHECKING:
    from agent.assets.inventory import AssetInventory
    from agent.policy.engine import CompiledPolicy

_GROUP_ZONES = frozenset({"broadcast", "multicast", "multicast-v6"})
MAX_PORTS = 16  # responder ports listed in one rule; more and the rule allows any port
MAX_RULES = 20_000  # distinct (zones, protocol) combinations kept; more are counted
ANY = "any"
ANY_IP = "any-ip"  # IP protocols without ports (ICMP, IGMP, ...): a rule that cannot list ports
LINK_ZONE = "link-layer"  # devices seen only on link-layer flows (GOOSE, PROFINET, LLDP, ...)
MAX_L2_KEYS = 20_000  # distinct (sender MAC, unicast destination MAC, protocol) kept; more are counted


def zone_for(addr: bytes) -> tuple[str, str]:
    """(zone id, network) of an address for a learned policy."""
    if len(addr) == 4:
        if addr == b"\xff\xff\xff\xff":
            return "broadcast", "255.255.255.255/32"
        if 224 <= addr[0] <= 239:
            return "multicast", "224.0.0.0/4"
        net = ipaddress.IPv4Network((addr[:3] + b"\x00", 24))
        return f"net-{net.network_address}-24", str(net)
    if len(addr) == 16:
        if addr[0] == 0xFF:
            return "multicast-v6", "ff00::/8"
        net6 = ipaddress.IPv6Network((addr[:8] + bytes(8), 64))
        return f"net-{str(net6.network_address).rstrip(':').replace(':', '.')}-64", str(net6)
    return "", ""


@dataclass(slots=True)
class RuleStats:
    flows: int = 0
    bytes: int = 0
    ports: set[int] = field(default_factory=set)
    operations: dict[str, int] = field(default_factory=dict)
    # when engineering operations (or, on remote-access rules, sessions) were seen: for schedules
    changes: TimeSamples = field(default_factory=TimeSamples)


@dataclass(slots=True)
class ZoneStats:
    network: str
    hosts: set[bytes] = field(default_factory=set)
    vlans: set[int] = field(default_factory=set)


# (initiator zone, responder zone, protocol name or "any", guessed protocol) -> stats
RuleKey = tuple[str, str, str]

# Interactive sessions people open: their rules get a schedule when the evidence supports one.
SESSION_PROTOCOLS = CATEGORIES["remote_access"]
# Engineering operations: done by people at chosen times, not by polling loops (agent.policy.schedules)
CHANGE_OPERATIONS = AUDITED_OPERATIONS


class TrafficModel:
    """Flow consumer recording who opened what to whom, by learned zone, with operation classes."""

    def __init__(self) -> None:
        self.zones: dict[str, ZoneStats] = {}
        self.rules: dict[RuleKey, RuleStats] = {}
        self.dropped = 0
        # Link-layer flows are judged by MAC (agent.policy.engine.zone_of_l2): (sender MAC, unicast
        # destination MAC or None for a group address, protocol) -> stats, placed in zones at draft
        # time, when the inventory says which IP host (hence which zone) owns each MAC.
        self.l2: dict[tuple[str, str | None, str], RuleStats] = {}
        self.coverage = Coverage()  # when the captures carried traffic: may weekdays be learned?

    def _zone(self, addr: bytes, vlan: tuple[int, ...]) -> str:
        zone_id, network = zone_for(addr)
        zone = self.zones.get(zone_id)
        if zone is None:
            zone = self.zones[zone_id] = ZoneStats(network)
        if len(zone.hosts) < 4096:
            zone.hosts.add(addr)
        if vlan:
            zone.vlans.add(vlan[-1])
        return zone_id

    @staticmethod
    def rule_protocol(flow: Flow) -> str:
        """The protocol a learned rule names for ``flow`` (``any`` when only the port can say)."""
        if flow.proto != 6 and flow.proto != 17:
            return ANY_IP
        final = flow.app_proto
        guess = guess_app_proto(flow.proto, flow.sport, flow.dport)
        if final and final in _known_protocols() and (guess == final or guess == "iso-tsap"):
            return final
        return ANY

    def _rule(self, flow: Flow) -> RuleStats | None:
        if flow.ip_version == 0:
            return None  # link-layer flows are not judged by address zones
        key = (self._zone(flow.src, flow.vlan), self._zone(flow.dst, flow.vlan), self.rule_protocol(flow))
        stats = self.rules.get(key)
        if stats is None:
            if len(self.rules) >= MAX_RULES:
                self.dropped += 1
                return None
            stats = self.rules[key] = RuleStats()
        return stats

    def _link_layer(self, flow: Flow) -> None:
        src, dst = format_mac(flow.src), format_mac(flow.dst)
        protocol = flow.app_proto if flow.app_proto in _known_protocols() else ANY
        key = (src, None if flow.dst[0] & 1 else dst, protocol)
        stats = self.l2.get(key)
        if stats is None:
            if len(self.l2) >= MAX_L2_KEYS:
                self.dropped += 1
                return
            stats = self.l2[key] = RuleStats()
        stats.flows += 1
        stats.bytes += flow.bytes_toserver + flow.bytes_toclient

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        if flow.ip_version == 0:
            self._link_layer(flow)
            return
        self.coverage.add_span(flow.first_ts, flow.last_ts)
        stats = self._rule(flow)
        if stats is None:
            return
        if self.rule_protocol(flow) in SESSION_PROTOCOLS:
            stats.changes.add_span(flow.first_ts, flow.last_ts)
        stats.flows += 1
        stats.bytes += flow.bytes_toserver + flow.bytes_toclient
        if flow.proto in (6, 17) and len(stats.ports) <= MAX_PORTS:
            stats.ports.add(flow.dport)

    def on_message(self, msg: OtMessage) -> None:
        if msg.direction != REQUEST:
            return
        stats = self._rule(msg.flow)
        if stats is not None:
            stats.operations[msg.operation] = stats.operations.get(msg.operation, 0) + 1
            if msg.operation in CHANGE_OPERATIONS:
                stats.changes.add(msg.ts)


# ---------------------------------------------------------------------------------------------
# the draft


def _known_protocols() -> frozenset[str]:
    from agent.policy.loader import KNOWN_PROTOCOLS

    return KNOWN_PROTOCOLS


def _link_layer_zones(model: TrafficModel, inventory: AssetInventory | None) -> dict[str, str]:
    """The zone of every MAC seen on link-layer flows: the learned zone of the one IP host that uses
    it, else the link-layer zone (a MAC shared by hosts in several zones, e.g. a router's, goes there
    too: for IP flows the engine looks at MACs last, so it changes nothing for them)."""
    macs = {src for src, _dst, _p in model.l2} | {dst for _src, dst, _p in model.l2 if dst is not None}
    zones: dict[str, str] = {}
    for mac in sorted(macs):
        ips = inventory.mac_ips.get(mac, set()) if inventory is not None else set()
        owners = {zone_for(ip)[0] for ip in ips} & set(model.zones) - _GROUP_ZONES
        zones[mac] = owners.pop() if len(owners) == 1 else LINK_ZONE
    return zones


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(text)


def _zone_name(zone_id: str, zone: ZoneStats, roles: dict[str, int]) -> tuple[str, str]:
    vlans = sorted(zone.vlans)
    where = zone.network + (f", VLAN {','.join(map(str, vlans))}" if vlans else "")
    if roles:
        top = ", ".join(f"{r} x{n}" for r, n in sorted(roles.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{where}", f"{len(zone.hosts)} hosts seen; roles: {top}"
    return where, f"{len(zone.hosts)} hosts seen"


def _rule_lines(index: int, key: RuleKey, stats: RuleStats, timezone: str, coverage: Coverage) -> list[str]:
    initiator, responder, protocol = key
    ops = ", ".join(f"{op} {n}" for op, n in sorted(stats.operations.items(), key=lambda kv: (-kv[1], kv[0])))
    name = {ANY: "port", ANY_IP: "ip"}.get(protocol, protocol)
    is_any = protocol == ANY or protocol == ANY_IP
    head = [f"        initiator: {initiator}", f"        responder: {responder}"]
    head.append(f"        category: {ANY}" if is_any else f"        protocol: {protocol}")
    if protocol == ANY_IP:
        head.append("        # IP protocols without ports (ICMP, IGMP, ...)")
    elif stats.ports and len(stats.ports) <= MAX_PORTS:
        head.append(f"        ports: [{', '.join(map(str, sorted(stats.ports)))}]")
    elif protocol == ANY:
        head.append("        # more than 16 responder ports: any port allowed; narrow this rule")
    window = propose(stats.changes, coverage, timezone)
    changes = sorted(op for op in stats.operations if op in CHANGE_OPERATIONS)
    lines = [f"      # {stats.flows} flows, {stats.bytes:,} bytes" + (f"; requests: {ops}" if ops else "")]
    if window is not None and protocol in SESSION_PROTOCOLS:
        sessions = f"{stats.flows} sessions"
        lines += [f"      - id: r{index}-{name}", *head, *_schedule_lines(window, sessions)]
        return lines
    others = sorted(op for op in stats.operations if window is None or op not in CHANGE_OPERATIONS)
    if others or window is None:
        lines += [f"      - id: r{index}-{name}", *head]
        if others:
            lines.append(f"        operations: [{', '.join(others)}]")
    if window is not None:
        lines += [f"      - id: r{index}-{name}-changes", *head]
        lines.append(f"        operations: [{', '.join(changes)}]")
        lines += _schedule_lines(window, f"{stats.changes.count} {'/'.join(changes)} requests")
    return lines


def _schedule_lines(window: Window, what: str) -> list[str]:
    evidence = [f"        #   {line}" for line in window.evidence()]
    return [f"        # schedule learned from {what}", *evidence, f"        schedule: {window.yaml()}"]


MAX_ZONE_HOSTS = 4096  # hosts kept per learned zone; a zone with more is written by network
MAX_ROUTED_LISTED = 256  # devices behind BACnet routers listed (as comments) per zone
NO_ZONE = ""  # routed devices whose router no learned zone holds


def _router_zone(router: str, mac_zone: dict[str, str]) -> str:
    """The learned zone of a router named by IP or MAC text (the inventory's ``via``)."""
    if router.count(":") == 5 and len(router) == 17:
        return mac_zone.get(router, NO_ZONE)
    try:
        return zone_for(ipaddress.ip_address(router).packed)[0]
    except ValueError:
        return NO_ZONE


def _routed_by_zone(inventory: AssetInventory | None, mac_zone: dict[str, str]) -> dict[str, list[str]]:
    """Devices on other BACnet networks (an MS/TP trunk behind a BACnet/IP router), as comment text by
    the zone of the router they were reached through. They have no IP or MAC on the captured link, so
    a policy cannot place them; their traffic is the router's, which that zone's rules already judge.
    Listing them there tells the engineer that the zone extends behind the router."""
    from agent.assets.inventory import routed_sort_key

    out: dict[str, list[str]] = {}
    if inventory is None:
        return out
    for address in sorted(inventory.routed, key=routed_sort_key):
        host = inventory.routed[address]
        routers = sorted(host.via, key=lambda r: (-host.via[r], r))
        if not routers:
            continue
        ident = host.identity
        what = " ".join(
            f"{k} {ident[k]}" for k in ("device_instance", "vendor_id", "name", "model") if k in ident
        )
        text = f"{address}" + (f" ({what})" if what else "") + f" via {', '.join(routers)}"
        out.setdefault(_router_zone(routers[0], mac_zone), []).append(text)
    return out


def _routed_lines(devices: list[str], indent: str) -> list[str]:
    lines = [f"{indent}#   {text}" for text in devices[:MAX_ROUTED_LISTED]]
    if len(devices) > MAX_ROUTED_LISTED:
        lines.append(f"{indent}#   ... and {len(devices) - MAX_ROUTED_LISTED} more")
    return lines


def draft(
    model: TrafficModel,
    inventory: AssetInventory | None,
    captures: Sequence[str],
    digests: Sequence[str],
    hosts_only: bool = False,
    timezone: str = "UTC",
) -> str:
    """The learned policy as YAML text (deterministic for the same traffic).

    ``hosts_only``: zones list the hosts seen (as assets) instead of their subnets, so that a device
    that was not there while learning is a host in no zone (an ``unknown_host`` alert).
    ``timezone``: the IANA zone learned schedules are written in (the plant's local time reads best).
    """
    from agent import __version__
    from agent.assets.inventory import address_text, infer_roles

    roles_by_zone: dict[str, dict[str, int]] = {}
    assets_by_zone: dict[str, list[tuple[bytes, str]]] = {}
    if inventory is not None:
        for addr, host in sorted(inventory.hosts.items(), key=lambda kv: (len(kv[0]), kv[0])):
            zone_id, _net = zone_for(addr)
            if zone_id not in model.zones or zone_id in _GROUP_ZONES:
                continue
            roles = infer_roles(host)
            if roles:
                role = roles[0].role
                counts = roles_by_zone.setdefault(zone_id, {})
                counts[role] = counts.get(role, 0) + 1
                assets_by_zone.setdefault(zone_id, []).append((addr, role))
    lines = [f"# Draft zone/conduit policy learned by conduitwatch {__version__} from:"]
    lines += [f"#   {name} (sha256 {digest})" for name, digest in zip(captures, digests, strict=True)]
    lines += [
        "# It allows exactly the traffic those captures show. Review it: rename zones, set purdue_level,",
        "# sl_t and owners, restrict initiators to named assets, check the learned schedules (engineering",
        "# operations and remote sessions seen only at some hours; the evidence is in the comments), and",
        "# delete whatever should not happen. Counts are in the comments.",
        "version: 1",
        "system:",
        f"  name: {_q('learned from ' + ', '.join(captures))[:200]}",
        f"  description: {_q('draft drawn from observed traffic; not yet reviewed')}",
        "defaults:",
        "  intra_zone: allow",
        "  unknown_hosts: alert",
        "zones:",
    ]
    mac_zone = _link_layer_zones(model, inventory)
    macs_by_zone: dict[str, list[str]] = {}
    for mac, zone_id in mac_zone.items():
        macs_by_zone.setdefault(zone_id, []).append(mac)
    routed = _routed_by_zone(inventory, mac_zone)
    for zone_id in [z for z in routed if z not in model.zones and z not in (LINK_ZONE, NO_ZONE)]:
        routed.setdefault(NO_ZONE, []).extend(routed.pop(zone_id))
    behind = "    # BACnet devices on other networks behind a router in this zone (no IP of their own: the"
    behind_rest = "    # router carries their traffic, and this zone's rules judge it):"
    for zone_id in sorted(
        model.zones,
        key=lambda z: (
            ipaddress.ip_network(model.zones[z].network).version,
            ipaddress.ip_network(model.zones[z].network),
        ),
    ):
        zone = model.zones[zone_id]
        name, description = _zone_name(zone_id, zone, roles_by_zone.get(zone_id, {}))
        lines += [f"  - id: {zone_id}", f"    name: {_q(name)}", f"    description: {_q(description)}"]
        by_hosts = hosts_only and len(zone.hosts) < MAX_ZONE_HOSTS and zone_id not in _GROUP_ZONES
        if not by_hosts:
            lines.append(f"    networks: [{_q(zone.network)}]")
        role_of = dict(assets_by_zone.get(zone_id, ()))
        listed = sorted(zone.hosts if by_hosts else role_of, key=lambda a: (len(a), a))
        if listed:
            lines.append("    assets:")
            for addr in listed:
                ip = address_text(addr)
                role = role_of.get(addr, "")
                name = f"{role or 'host'}-{ip.replace(':', '.')}"
                lines.append(f"      - {{name: {name}, ip: {_q(ip)}" + (f", role: {role}}}" if role else "}"))
        if macs_by_zone.get(zone_id):
            lines.append(
                "    # link-layer devices (GOOSE, PROFINET, LLDP, ...): their flows are judged by MAC"
            )
            lines.append(f"    macs: [{', '.join(_q(m) for m in sorted(macs_by_zone[zone_id]))}]")
        if routed.get(zone_id):
            lines += [behind, behind_rest, *_routed_lines(routed[zone_id], "    ")]
    if macs_by_zone.get(LINK_ZONE):
        lines += [f"  - id: {LINK_ZONE}", f"    name: {_q('link-layer devices')}",
                  f"    description: {_q('seen only on link-layer flows, or MACs shared across zones')}",
                  f"    macs: [{', '.join(_q(m) for m in sorted(macs_by_zone[LINK_ZONE]))}]"]  # fmt: skip
        if routed.get(LINK_ZONE):
            lines += [behind, behind_rest, *_routed_lines(routed[LINK_ZONE], "    ")]
    if routed.get(NO_ZONE):
        lines += ["  # BACnet devices behind routers that no zone here holds:",
                  *_routed_lines(routed[NO_ZONE], "  ")]  # fmt: skip
    all_rules = dict(model.rules)
    for (src, dst, protocol), l2_stats in model.l2.items():
        src_zone = mac_zone[src]
        dst_zone = mac_zone[dst] if dst is not None else src_zone  # a group address stays on the segment
        if src_zone != dst_zone:
            merged = all_rules.setdefault((src_zone, dst_zone, protocol), RuleStats())
            merged.flows += l2_stats.flows
            merged.bytes += l2_stats.bytes
    conduits: dict[tuple[str, str], list[tuple[RuleKey, RuleStats]]] = {}
    for key, stats in all_rules.items():
        if key[0] != key[1]:
            pair = tuple(sorted((key[0], key[1])))
            conduits.setdefault((pair[0], pair[1]), []).append((key, stats))
    lines.append("conduits:" if conduits else "conduits: []")
    for (a, b), rules in sorted(conduits.items()):
        lines += [f"  - id: {a}--{b}", f"    zones: [{a}, {b}]", "    flows:"]
        for index, (key, stats) in enumerate(sorted(rules, key=lambda kr: kr[0]), 1):
            lines += _rule_lines(index, key, stats, timezone, model.coverage)
    if model.dropped:
        lines.append(f"# {model.dropped} flows were not learned: more than {MAX_RULES} distinct rules")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# drift


@dataclass(slots=True)
class Observed:
    flows: int = 0
    protocols: dict[str, int] = field(default_factory=dict)
    operations: dict[str, int] = field(default_factory=dict)


class DriftModel:
    """Flow consumer comparing traffic with a declared policy, grouped by its zones."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.pairs: dict[tuple[str, str], Observed] = {}
        self.rules_used: dict[str, int] = {}  # "conduit/rule" -> flows
        self.uncovered: dict[tuple[str, str, str], int] = {}  # (src zone, dst zone, protocol) -> flows
        self.not_allowed_ops: dict[tuple[str, str, str, str], int] = {}
        self.unknown_hosts: dict[str, int] = {}

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        from agent.assets.inventory import address_text

        verdict = flow.verdict
        if verdict is None or not hasattr(verdict, "rules"):
            return
        src = verdict.src_zone or "(no zone)"
        dst = verdict.dest_zone or "(no zone)"
        protocol = flow.app_proto or f"{ {6: 'tcp', 17: 'udp'}.get(flow.proto, 'ip') }/{flow.dport}"
        observed = self.pairs.setdefault((src, dst), Observed())
        observed.flows += 1
        observed.protocols[protocol] = observed.protocols.get(protocol, 0) + 1
        for side, zone in ((verdict.client, verdict.src_zone), (verdict.server, verdict.dest_zone)):
            if zone is None and len(self.unknown_hosts) < 10_000:
                text = address_text(side)
                self.unknown_hosts[text] = self.unknown_hosts.get(text, 0) + 1
        if verdict.rules:
            owner = verdict.conduit.id if verdict.conduit is not None else src
            for rule in verdict.rules:
                name = f"{owner}/{rule.id}"
                self.rules_used[name] = self.rules_used.get(name, 0) + 1
        elif not (src == dst and self.policy.defaults.intra_zone == "allow"):
            key = (src, dst, protocol)
            self.uncovered[key] = self.uncovered.get(key, 0) + 1

    def on_message(self, msg: OtMessage) -> None:
        if msg.direction != REQUEST:
            return
        verdict = msg.flow.verdict
        if verdict is None or not hasattr(verdict, "rules"):
            return
        src, dst = verdict.src_zone or "(no zone)", verdict.dest_zone or "(no zone)"
        observed = self.pairs.setdefault((src, dst), Observed())
        observed.operations[msg.operation] = observed.operations.get(msg.operation, 0) + 1
        if verdict.rules and not any(
            r.operations is None or msg.operation in r.operations for r in verdict.rules
        ):
            key = (src, dst, msg.protocol, msg.operation)
            self.not_allowed_ops[key] = self.not_allowed_ops.get(key, 0) + 1


def diff_text(drift: DriftModel) -> tuple[str, bool]:
    """(a readable diff, whether the model and the traffic differ). '+' observed but not declared,
    '-' declared but not observed, ' ' both."""
    p = drift.policy.policy
    lines = [
        f"--- declared: {p.path} ({len(p.zones)} zones, {len(p.conduits)} conduits)",
        "+++ observed: the captures",
    ]
    differs = False
    if drift.unknown_hosts:
        differs = True
        lines.append("")
        lines.append("hosts in no zone:")
        for host, n in sorted(drift.unknown_hosts.items()):
            lines.append(f"+ {host} ({n} flows)")
    lines.append("")
    lines.append("conduit flow rules:")
    for conduit in p.conduits:
        for rule in conduit.flows:
            name = f"{conduit.id}/{rule.id}"
            used = drift.rules_used.get(name, 0)
            what = f"{rule.initiator.text()} -> {rule.responder.text()} {rule.label}"
            if rule.operations is not None:
                what += f" [{', '.join(sorted(rule.operations))}]"
            if used:
                lines.append(f"  {name}: {what} ({used} flows)")
            else:
                differs = True
                lines.append(f"- {name}: {what} (never used)")
    if drift.uncovered:
        differs = True
        lines.append("")
        lines.append("traffic no rule allows:")
        for (src, dst, protocol), n in sorted(drift.uncovered.items()):
            lines.append(f"+ {src} -> {dst} {protocol} ({n} flows)")
    if drift.not_allowed_ops:
        differs = True
        lines.append("")
        lines.append("operations no rule allows:")
        for (src, dst, protocol, op), n in sorted(drift.not_allowed_ops.items()):
            lines.append(f"+ {src} -> {dst} {protocol} {op} ({n} requests)")
    lines.append("")
    lines.append("observed zone pairs (initiator -> responder):")
    for (src, dst), obs in sorted(drift.pairs.items()):
        protos = ", ".join(f"{k} {v}" for k, v in sorted(obs.protocols.items()))
        ops = ", ".join(f"{k} {v}" for k, v in sorted(obs.operations.items()))
        lines.append(
            f"  {src} -> {dst}: {obs.flows} flows; {protos}" + (f"; operations: {ops}" if ops else "")
        )
    return "\n".join(lines), differs


def learn_result(captures: Sequence[str]) -> Any:
    """Run the captures and return (TrafficModel, AssetInventory, Analysis) for a draft."""
    from agent.analysis import analyse
    from agent.assets.inventory import AssetInventory

    model = TrafficModel()
    inventory = AssetInventory()
    result = analyse(captures, [model, inventory])
    return model, inventory, result
