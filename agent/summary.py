"""The end-of-run summary a person reads at a glance: traffic by protocol and by network pair."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.dissect import format_ip
from agent.flows import Flow
from agent.pipeline import LINKTYPE_NAMES, RunStats
from agent.records import CaptureProblem

if TYPE_CHECKING:
    from agent.policy.engine import PolicyDetector


@dataclass(slots=True)
class Tally:
    flows: int = 0
    packets: int = 0
    bytes: int = 0

    def add(self, flow: Flow) -> None:
        self.flows += 1
        self.packets += flow.pkts_toserver + flow.pkts_toclient
        self.bytes += flow.bytes_toserver + flow.bytes_toclient


def network_label(flow_vlan: tuple[int, ...], addr: bytes) -> str:
    """Until a policy names zones, a network is its VLAN, else its /24 (IPv4) or /64 (IPv6)."""
    if flow_vlan:
        return "vlan " + ".".join(str(v) for v in flow_vlan)
    if len(addr) == 4:
        return format_ip(addr[:3] + b"\x00") + "/24"
    if len(addr) == 6:  # an untagged L2 flow (agent.linklayer): the segment it was captured on
        return "ethernet"
    return format_ip(addr[:8] + bytes(8)) + "/64"


@dataclass(slots=True)
class TrafficSummary:
    """Flow consumer aggregating finished flows by application protocol and network pair."""

    by_protocol: dict[str, Tally] = field(default_factory=dict)
    by_network_pair: dict[tuple[str, str], Tally] = field(default_factory=dict)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        proto = flow.app_proto or {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(
            flow.proto, f"ip-{flow.proto}" if flow.ip_version else f"ether-0x{flow.proto:04x}"
        )
        tally = self.by_protocol.get(proto)
        if tally is None:
            tally = self.by_protocol[proto] = Tally()
        tally.add(flow)
        verdict = flow.verdict
        if verdict is not None and hasattr(verdict, "src_zone"):
            # With a policy, the pair is the zones' (or "no zone" for hosts the policy does not know).
            pair = (verdict.src_zone or "(no zone)", verdict.dest_zone or "(no zone)")
        else:
            pair = (network_label(flow.vlan, flow.src), network_label(flow.vlan, flow.dst))
        tally = self.by_network_pair.get(pair)
        if tally is None:
            tally = self.by_network_pair[pair] = Tally()
        tally.add(flow)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def render(
    summary: TrafficSummary,
    stats: RunStats,
    flow_counts: dict[str, int],
    anomalies: dict[str, int],
    problems: list[CaptureProblem],
    top: int = 10,
    policy: PolicyDetector | None = None,
    operations: dict[str, dict[str, int]] | None = None,
    incidents: dict[str, int] | None = None,
) -> str:
    """Plain-text report; sorted so that the same capture always prints the same text.

    ``operations``: per protocol, operations performed by class (DecoderStats.operations).
    ``incidents``: backup-flood and control-health incidents raised, by kind.
    """
    lines: list[str] = []
    span = stats.last_ts - stats.first_ts if stats.packets else 0.0
    rate = stats.packets / stats.wall_seconds if stats.wall_seconds > 0 else 0.0
    lines.append(
        f"{stats.packets:,} packets, {_size(stats.bytes)}, {span:.1f} s of traffic; "
        f"{flow_counts['created']:,} flows; processed at {rate:,.0f} packets/s"
    )
    other = []
    if stats.l2_packets:
        other.append(f"{stats.l2_packets:,} non-IP")
    if stats.fragments:
        other.append(f"{stats.fragments:,} IP fragments (not reassembled)")
    if stats.unsupported_link:
        kinds = ", ".join(
            f"{LINKTYPE_NAMES.get(k, k)}:{v}" for k, v in sorted(stats.unsupported_linktypes.items())
        )
        other.append(f"{stats.unsupported_link:,} on unsupported link types ({kinds})")
    if other:
        lines.append("also: " + "; ".join(other))

    def table(title: str, rows: list[tuple[str, Tally]]) -> None:
        lines.append("")
        lines.append(f"{title:<40} {'flows':>8} {'packets':>10} {'bytes':>10}")
        for name, t in rows[:top]:
            lines.append(f"{name:<40} {t.flows:>8,} {t.packets:>10,} {_size(t.bytes):>10}")
        if len(rows) > top:
            rest = rows[top:]
            lines.append(
                f"{f'... {len(rest)} more':<40} {sum(t.flows for _, t in rest):>8,} "
                f"{sum(t.packets for _, t in rest):>10,} {_size(sum(t.bytes for _, t in rest)):>10}"
            )

    def order(item: tuple[object, Tally]) -> tuple[int, str]:
        return (-item[1].bytes, str(item[0]))

    table("protocol", sorted(summary.by_protocol.items(), key=order))
    table(
        "zone pair (initiator -> responder)"
        if policy is not None
        else "network pair (initiator -> responder)",
        [(f"{a} -> {b}", t) for (a, b), t in sorted(summary.by_network_pair.items(), key=order)],
    )
    if policy is not None:
        lines.append("")
        policy_stats = policy.stats()
        total = sum(policy.violations.values())
        audits = policy_stats["audits"]
        lines.append(f"policy {policy_stats['file']}: {total:,} violations, {audits:,} audited operations")
        rows = sorted(policy.violations.items(), key=lambda kv: (-kv[1], kv[0]))
        for (rule, src_zone, dest_zone, conduit, operation), count in rows[:top]:
            where = f"{src_zone} -> {dest_zone}" + (f" via {conduit}" if conduit != "-" else "")
            what = f" ({operation})" if operation != "-" else ""
            lines.append(f"  {count:>7,}  {rule}{what}: {where}")
        if len(rows) > top:
            lines.append(f"  ... {len(rows) - top} more kinds; all are in the EVE alerts")
    if incidents is not None:
        raised = {kind: n for kind, n in incidents.items() if n}
        lines.append("")
        if raised:
            kinds = ", ".join(
                f"{kind} {n:,}" for kind, n in sorted(raised.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            lines.append(f"backup floods and control health: {sum(raised.values()):,} incidents ({kinds})")
        else:
            lines.append("backup floods and control health: no incident")
    if operations and any(operations.values()):
        lines.append("")
        lines.append("industrial operations (requests, and responses whose request was not seen)")
        for protocol, counts in sorted(operations.items()):
            if counts:
                parts = [f"{op} {n:,}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
                lines.append(f"  {protocol:<12} " + ", ".join(parts))
    if flow_counts.get("evicted"):
        lines.append(f"\n{flow_counts['evicted']:,} flows evicted early because the flow table was full")
    if anomalies:
        lines.append("")
        lines.append("decoder anomalies: " + ", ".join(f"{k} {v:,}" for k, v in sorted(anomalies.items())))
    for problem in problems:
        lines.append(f"\ncapture problem: {problem}")
    if stats.interrupted:
        lines.append("\ninterrupted: results cover the packets read until then")
    return "\n".join(lines)
