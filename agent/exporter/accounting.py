"""Counters the exporter adds to a run: traffic by zone pair and protocol, operations by conduit, audits.

They are pipeline consumers, so the per-packet loop pays nothing for them:

* ``TrafficAccounting`` adds a flow's packets and bytes to its (zone pair, protocol) when the flow
  ends, and at scrape time adds the running totals of the flows still active. The flow table
  already counts every packet per flow; nothing new happens per packet.
* ``OperationAccounting`` counts each industrial request under its conduit, the zone it acts on and
  its operation class (one dictionary update per request, in a table the decoder of the flow holds,
  only when the exporter is on).
* ``PolicyEventCounter`` taps the policy detector's event hand-off and counts audits by operation
  and zone from the (folded) audit events, whose ``count`` fields add up to every occurrence.

Label values are zone ids and conduit ids of the policy, protocol names and operation classes:
never addresses. Without a policy, or for a host in no zone, the zone is ``none``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, Metric

from agent.decoders.base import Interest
from agent.flows import Flow

if TYPE_CHECKING:
    from agent.policy.engine import EmitFn, PolicyDetector

NONE = "none"  # label value for "no zone" / "no conduit"
_TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}

TrafficKey = tuple[str, str, str]  # (src_zone, dest_zone, protocol)


def protocol_label(flow: Flow) -> str:
    """The flow's application protocol, else its transport (bounded: port table, decoders, IP numbers)."""
    return flow.app_proto or _TRANSPORT.get(flow.proto) or "other"


def traffic_key(flow: Flow) -> TrafficKey:
    verdict = flow.verdict
    if verdict is None:
        return (NONE, NONE, protocol_label(flow))
    return (
        getattr(verdict, "src_zone", None) or NONE,
        getattr(verdict, "dest_zone", None) or NONE,
        protocol_label(flow),
    )


class TrafficAccounting:
    """Packets and bytes by (initiator zone, responder zone, protocol), counted per flow."""

    def __init__(self) -> None:
        self.ended: dict[TrafficKey, list[int]] = {}  # key -> [packets, bytes] of finished flows
        # Set by the exporter once the pipeline exists: the flows still active (a copy).
        self.active_flows: Callable[[], list[Flow]] = list
        # What the last scrape published per key: totals never go down, even when a scrape catches a
        # flow between leaving the table and being added to ``ended``, or a reload moves a flow's zones.
        self._published: dict[TrafficKey, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        key = traffic_key(flow)
        tally = self.ended.get(key)
        if tally is None:
            tally = self.ended[key] = [0, 0]
        tally[0] += flow.pkts_toserver + flow.pkts_toclient
        tally[1] += flow.bytes_toserver + flow.bytes_toclient

    def totals(self) -> dict[TrafficKey, tuple[int, int]]:
        """Monotonic totals: finished flows plus the active flows' counts so far."""
        with self._lock:
            # Finished flows first, then the table: a flow ending in between is missed once (and the
            # clamp below hides it) rather than counted twice.
            totals = {key: (p, b) for key, (p, b) in list(self.ended.items())}
            for flow in self.active_flows():
                key = traffic_key(flow)
                p, b = totals.get(key, (0, 0))
                totals[key] = (
                    p + flow.pkts_toserver + flow.pkts_toclient,
                    b + flow.bytes_toserver + flow.bytes_toclient,
                )
            published = self._published
            for key, (p, b) in list(published.items()):
                now_p, now_b = totals.get(key, (0, 0))
                totals[key] = (max(p, now_p), max(b, now_b))
            published.update(totals)
            return dict(totals)

    def collect_metrics(self) -> Iterable[Metric]:
        labels = ["src_zone", "dest_zone", "protocol"]
        packets = CounterMetricFamily(
            "conduitwatch_traffic_packets",
            "Packets by initiator zone, responder zone and application protocol (per-flow accounting).",
            labels=labels,
        )
        octets = CounterMetricFamily(
            "conduitwatch_traffic_bytes",
            "Frame bytes by initiator zone, responder zone and application protocol.",
            labels=labels,
        )
        for key, (p, b) in sorted(self.totals().items()):
            packets.add_metric(list(key), p)
            octets.add_metric(list(key), b)
        yield packets
        yield octets


class OperationAccounting:
    """Industrial requests by conduit, the zone acted on, protocol and operation class.

    Not a pipeline consumer and no reader of records: ``wrap`` chains onto the decoders' interest
    (DecoderContext.interest) and gives each flow's decoder the table of its (conduit, zone,
    protocol), in which the decoder counts the flow's requests by operation class: one dictionary
    update per request, no record built for it.
    """

    def __init__(self) -> None:
        # (conduit, zone, protocol) -> operation class -> requests
        self.tables: dict[tuple[str, str, str], dict[str, int]] = {}

    def wrap(self, inner: Callable[[Flow, str, float], Interest]) -> Callable[[Flow, str, float], Interest]:
        """``inner`` plus this flow's table (asked after ``inner``: a reloaded policy re-judges the flow
        there first, so the requests count under its new verdict)."""
        tables = self.tables

        def interest_and_table(flow: Flow, protocol: str, ts: float) -> Interest:
            wanted = inner(flow, protocol, ts)
            verdict = flow.verdict
            if verdict is None:
                key = (NONE, NONE, protocol)
            else:
                conduit = verdict.conduit
                key = (conduit.id if conduit is not None else NONE, verdict.dest_zone or NONE, protocol)
            table = tables.get(key)
            if table is None:
                table = tables[key] = {}
            return Interest(wanted.requests, wanted.responses, table)

        return interest_and_table

    @property
    def counts(self) -> dict[tuple[str, str, str, str], int]:
        """Requests by (conduit, zone, protocol, operation class), as the metric publishes them."""
        # list(): the decoders add tables and classes from the packet thread while a scrape reads
        return {
            (*key, operation): count
            for key, table in list(self.tables.items())
            for operation, count in list(table.items())
        }

    def collect_metrics(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "conduitwatch_operations",
            "Industrial requests by conduit (none: intra-zone or no policy), zone acted on, protocol and "
            "operation class.",
            labels=["conduit", "zone", "protocol", "operation"],
        )
        for key, count in sorted(self.counts.items()):
            family.add_metric(list(key), count)
        yield family


class PolicyEventCounter:
    """Counts audit events by operation and zone on their way from the policy detector to the sinks."""

    def __init__(self, detector: PolicyDetector) -> None:
        self._inner: EmitFn = detector.emit
        detector.emit = self.emit
        self.audits: dict[tuple[str, str], int] = {}

    def emit(
        self, event_type: str, ts: float, flow: Flow, cnt: int, source: int, fields: dict[str, Any]
    ) -> None:
        if event_type == "audit":
            policy = fields.get("policy") or {}
            key = (policy.get("operation") or NONE, policy.get("dest_zone") or NONE)
            self.audits[key] = self.audits.get(key, 0) + int(fields["audit"].get("count", 1))
        self._inner(event_type, ts, flow, cnt, source, fields)

    def collect_metrics(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "conduitwatch_audit_events",
            "Allowed operations of always-audited classes (SR 2.8), by operation and the zone acted on; "
            "repeats folded into one event are added when their fold window closes.",
            labels=["operation", "zone"],
        )
        for key, count in sorted(list(self.audits.items())):
            family.add_metric(list(key), count)
        yield family
