"""What a report needs, gathered during one in-process replay.

* ``EvidenceTap`` sees every frame on its way into the pipeline: per capture file its time span and
  link types, and the load on the wire in one-second bins (the chart's bulk-load curve).
* ``ReportCollector`` is a flow consumer: the zone x zone matrix (flows, bytes, protocols, operation
  classes), the conduits in use, traffic no conduit covers, and control-message latency per second.
* ``EventCollector`` is a sink keeping the alert and audit events (policy violations, backup-flood
  incidents, asset changes) that become the report's findings.

Every table is bounded and counts what it could not keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.decoders.base import REQUEST, RESPONSE, OtMessage
from agent.flows import Flow
from agent.ports import CATEGORIES
from agent.records import Event, Frame
from agent.summary import network_label as network_of

MAX_BINS = 7 * 86_400  # one-second bins: a week of capture; later seconds are counted, not kept
MAX_PAIRS = 10_000  # zone (or network) pairs
MAX_PER_PAIR = 64  # protocols / operation classes per pair
MAX_EVENTS = 50_000  # alert and audit events kept for findings
NO_ZONE = "(no zone)"
_OT = CATEGORIES["ot"]
_BULK = CATEGORIES["backup"] | CATEGORIES["file_transfer"]


@dataclass(slots=True)
class FileEvidence:
    first_ts: float = 0.0
    last_ts: float = 0.0
    packets: int = 0
    link_types: dict[int, int] = field(default_factory=dict)


class EvidenceTap:
    """Wraps the frame iterator: per-file spans and link types, and bytes per second on the wire."""

    def __init__(self, files: int) -> None:
        self.files = [FileEvidence() for _ in range(files)]
        self.load: dict[int, int] = {}  # second -> bytes
        self.bins_dropped = 0

    def __call__(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        # Per packet this is a few comparisons: per-file facts are accumulated over runs of frames
        # from the same file and link type (merged files interleave, but in long runs), and bytes
        # over the current second, and written to the tables only when the run or second changes.
        run_src = run_link = -1
        run_packets = 0
        run_min = run_max = 0.0
        bin_start = bin_end = 0.0
        acc = 0
        try:
            for frame in frames:
                ts = frame[0]
                if frame[6] != run_src or frame[4] != run_link:
                    if run_packets:
                        self._run(run_src, run_link, run_packets, run_min, run_max)
                    run_src, run_link = frame[6], frame[4]
                    run_packets = 0
                    run_min = run_max = ts
                elif ts > run_max:
                    run_max = ts
                elif ts < run_min:
                    run_min = ts
                run_packets += 1
                if ts >= bin_end or ts < bin_start:
                    if acc:
                        self._add(int(bin_start), acc)
                    bin_start = float(int(ts))
                    bin_end = bin_start + 1.0
                    acc = 0
                acc += frame[2]
                yield frame
        finally:
            if run_packets:
                self._run(run_src, run_link, run_packets, run_min, run_max)
            if acc:
                self._add(int(bin_start), acc)

    def _run(self, src: int, link: int, packets: int, first: float, last: float) -> None:
        evidence = self.files[src]
        if not evidence.packets:
            evidence.first_ts, evidence.last_ts = first, last
        else:
            evidence.first_ts = min(evidence.first_ts, first)
            evidence.last_ts = max(evidence.last_ts, last)
        evidence.packets += packets
        evidence.link_types[link] = evidence.link_types.get(link, 0) + packets

    def _add(self, second: int, nbytes: int) -> None:
        if second in self.load:
            self.load[second] += nbytes
        elif len(self.load) < MAX_BINS:
            self.load[second] = nbytes
        else:
            self.bins_dropped += 1


@dataclass(slots=True)
class PairStats:
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    protocols: dict[str, int] = field(default_factory=dict)
    operations: dict[str, int] = field(default_factory=dict)
    conduits: dict[str, int] = field(default_factory=dict)
    uncovered: dict[str, int] = field(default_factory=dict)  # protocol -> flows no rule allowed
    cleartext_ot: dict[str, int] = field(default_factory=dict)  # protocol -> messages without integrity
    protected_ot: dict[str, int] = field(default_factory=dict)


def _bump(table: dict[str, int], key: str, n: int = 1) -> None:
    if key in table:
        table[key] += n
    elif len(table) < MAX_PER_PAIR:
        table[key] = n


def _protocol(flow: Flow) -> str:
    if flow.app_proto:
        return flow.app_proto
    return {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(flow.proto, f"ip-{flow.proto}")


class ReportCollector:
    """Flow consumer for the zone model section and the control-latency curve."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairStats] = {}
        self.pairs_dropped = 0
        self.latency: dict[int, list[float]] = {}  # second -> [max latency, sum, count] of OT responses
        self.remote_access = 0  # flows of remote-access protocols (SR 1.13 evidence)
        self.time_sync = 0  # NTP/PTP flows (SR 2.11 evidence)
        self.backup_flows = 0
        # second -> bytes of backup and file-transfer flows, spread evenly over each flow's life
        # (the flow table knows their totals only at the end; the chart needs their shape in time).
        self.bulk: dict[int, float] = {}

    def _spread(self, flow: Flow) -> None:
        total = flow.bytes_toserver + flow.bytes_toclient
        first, last = flow.first_ts, flow.last_ts
        if last <= first:
            self._bulk_add(int(first), float(total))
            return
        rate = total / (last - first)
        second = int(first)
        while second <= last:
            overlap = min(last, second + 1.0) - max(first, float(second))
            if overlap > 0:
                self._bulk_add(second, rate * overlap)
            second += 1

    def _bulk_add(self, second: int, nbytes: float) -> None:
        if second in self.bulk:
            self.bulk[second] += nbytes
        elif len(self.bulk) < MAX_BINS:
            self.bulk[second] = nbytes

    def _pair(self, flow: Flow) -> PairStats | None:
        verdict = flow.verdict
        if verdict is not None and hasattr(verdict, "src_zone"):
            key = (verdict.src_zone or NO_ZONE, verdict.dest_zone or NO_ZONE)
        elif flow.ip_version:
            # No policy: networks stand in for zones, as in the run summary (VLAN, else /24 or /64).
            key = (network_of(flow.vlan, flow.src), network_of(flow.vlan, flow.dst))
        else:
            key = (NO_ZONE, NO_ZONE)
        pair = self.pairs.get(key)
        if pair is None:
            if len(self.pairs) >= MAX_PAIRS:
                self.pairs_dropped += 1
                return None
            pair = self.pairs[key] = PairStats()
        return pair

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        protocol = _protocol(flow)
        if protocol in CATEGORIES["remote_access"]:
            self.remote_access += 1
        if protocol in ("ntp", "ptp"):
            self.time_sync += 1
        if protocol in CATEGORIES["backup"]:
            self.backup_flows += 1
        if protocol in _BULK:
            self._spread(flow)
        pair = self._pair(flow)
        if pair is None:
            return
        pair.flows += 1
        pair.packets += flow.pkts_toserver + flow.pkts_toclient
        pair.bytes += flow.bytes_toserver + flow.bytes_toclient
        _bump(pair.protocols, protocol)
        verdict = flow.verdict
        if verdict is None or not hasattr(verdict, "rules"):
            return
        if verdict.rules:
            conduit = verdict.conduit.id if verdict.conduit is not None else "(intra-zone rule)"
            _bump(pair.conduits, conduit)
        elif verdict.src_zone is None or verdict.dest_zone is None or verdict.src_zone != verdict.dest_zone:
            _bump(pair.uncovered, protocol)

    def on_message(self, msg: OtMessage) -> None:
        if msg.direction == RESPONSE:
            latency = msg.latency_s
            if latency is not None:
                second = int(msg.ts)
                point = self.latency.get(second)
                if point is None:
                    if len(self.latency) >= MAX_BINS:
                        return
                    point = self.latency[second] = [0.0, 0.0, 0.0]
                if latency > point[0]:
                    point[0] = latency
                point[1] += latency
                point[2] += 1
            return
        if msg.direction != REQUEST:
            return
        pair = self._pair(msg.flow)
        if pair is None:
            return
        _bump(pair.operations, msg.operation)
        protected = (
            msg.operation == "opaque" or bool(msg.fields.get("integrity")) or msg.protocol.endswith("-tls")
        )
        _bump(pair.protected_ot if protected else pair.cleartext_ot, msg.protocol)


class EventCollector:
    """A sink keeping alert and audit events (their fields as the EVE line would carry them)."""

    name = "report"

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.max_events = max_events
        self.events: list[tuple[str, float, dict[str, Any]]] = []
        self.dropped = 0

    def emit(self, event: Event) -> None:
        if event.event_type != "alert" and event.event_type != "audit":
            return
        if len(self.events) >= self.max_events:
            self.dropped += 1
            return
        self.events.append((event.event_type, event.timestamp, event.fields))

    def flush(self) -> None:
        """Nothing buffered outside memory."""

    def close(self) -> None:
        """Nothing to release."""
