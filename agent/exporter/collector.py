"""The scrape-time collector: reads the run's plain counters and publishes them as metric families.

It runs in the HTTP server's thread. Every dictionary it reads may change under it, so each is
copied first (``list(d.items())`` is one C call, atomic under the GIL). Nothing here is called per
packet: the pipeline counts in integers and this turns them into families only when Prometheus asks.

Label values come only from the policy (zone ids, conduit ids), protocol names, operation classes
and fixed enums (kinds, severities, reasons): never addresses or free text, so the number of series
is bounded by the policy and the decoders, not by the traffic.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.exporter.accounting import NONE, PolicyEventCounter

if TYPE_CHECKING:
    from agent.pipeline import Pipeline
    from agent.policy.reload import PolicyReloader

log = logging.getLogger("conduitwatch.exporter")

SEVERITY_NAMES = {1: "high", 2: "medium", 3: "low"}


@dataclass(slots=True)
class RunView:
    """What the collector reads; the command fills it in as the run is set up."""

    mode: str  # "live" or "replay"
    policy_path: str | None = None
    pipeline: Pipeline | None = None
    reloader: PolicyReloader | None = None
    policy_events: PolicyEventCounter | None = None
    # Counters the exporter keeps outside the pipeline's consumer list (its operation counts).
    extra_collectors: list[Any] = field(default_factory=list)

    def ready(self) -> tuple[bool, str]:
        """Ready once the capture loop runs with its policy loaded (and after a replay, to inspect it)."""
        pipeline = self.pipeline
        if pipeline is None or not pipeline.started:
            return False, "Not ready: capture not started"
        if self.policy_path is not None and pipeline.policy is None:
            return False, "Not ready: policy not loaded"
        if pipeline.finished:
            return True, "Ready: capture finished, counters are final"
        return True, "Ready"


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels or [])


class AgentCollector(Collector):
    """Publishes the capture, flow, decoder and policy counters and every consumer's own metrics."""

    def __init__(self, view: RunView) -> None:
        self.view = view
        self.errors: dict[str, int] = {}

    def collect(self) -> Iterable[Metric]:
        yield InfoMetricFamily(
            "conduitwatch_build",
            "Version of the agent and of the Python running it.",
            value={"version": __version__, "python": platform.python_version()},
        )
        pipeline = self.view.pipeline
        up = GaugeMetricFamily(
            "conduitwatch_capture_up",
            "1 while the capture loop runs, 0 before it starts and after it ends.",
            labels=["mode"],
        )
        up.add_metric(
            [self.view.mode], int(pipeline is not None and pipeline.started and not pipeline.finished)
        )
        yield up
        if pipeline is None:
            return
        yield from self._capture(pipeline)
        yield from self._flows(pipeline)
        yield from self._decoders(pipeline)
        if pipeline.policy is not None:
            yield from self._policy(pipeline)
        yield from self._consumers(pipeline)
        yield from self._outputs(pipeline)
        for extra in self.view.extra_collectors:
            yield from self._guarded(type(extra).__name__, extra.collect_metrics)
        errors = _counter(
            "conduitwatch_exporter_collect_errors",
            "Consumers whose metrics failed to collect.",
            ["collector"],
        )
        for name, count in sorted(list(self.errors.items())):
            errors.add_metric([name], count)
        yield errors

    # -- outputs ---------------------------------------------------------------------------------

    def _outputs(self, pipeline: Pipeline) -> Iterator[Metric]:
        """Delivery of events by each output (EVE file, syslog): a failing SIEM link shows here."""
        events = _counter("conduitwatch_output_events", "Events handed to the output.", ["output"])
        failures = _counter("conduitwatch_output_failures",
                            "Failed delivery attempts (disk full, receiver down); retried from the backlog.",
                            ["output"])  # fmt: skip
        dropped = _counter("conduitwatch_output_dropped_events",
                           "Events dropped because the output's bounded backlog was full.",
                           ["output"])  # fmt: skip
        queued = GaugeMetricFamily("conduitwatch_output_queued_events",
                                   "Events waiting in the output's backlog for delivery.",
                                   labels=["output"])  # fmt: skip
        for sink in list(pipeline.sinks):
            stats = getattr(sink, "stats", None)
            if not callable(stats):
                continue
            counts = stats()
            events.add_metric([sink.name], counts.get("events", 0))
            failures.add_metric([sink.name], counts.get("failures", 0))
            dropped.add_metric([sink.name], counts.get("dropped", 0))
            queued.add_metric([sink.name], counts.get("queued", 0))
        yield from (events, failures, dropped, queued)

    # -- capture ---------------------------------------------------------------------------------

    def _capture(self, pipeline: Pipeline) -> Iterator[Metric]:
        stats = pipeline.stats
        yield CounterMetricFamily(
            "conduitwatch_capture_packets", "Frames read from the capture.", value=stats.packets
        )
        yield CounterMetricFamily(
            "conduitwatch_capture_bytes",
            "Frame bytes (wire length) read from the capture.",
            value=stats.bytes,
        )
        yield GaugeMetricFamily(
            "conduitwatch_capture_last_packet_timestamp_seconds",
            "Time of the last frame counted (packet time: wall clock live, the capture's clock in replay).",
            value=stats.last_ts,
        )
        kernel = self._kernel_stats(pipeline)
        dropped = _counter(
            "conduitwatch_capture_dropped_packets",
            "Frames lost before analysis: kernel (socket ring full, the agent fell behind) and "
            "unsupported_link (read but of a link type the agent cannot dissect).",
            ["reason"],
        )
        dropped.add_metric(["kernel"], int(kernel.get("kernel_drops", 0)))
        dropped.add_metric(["unsupported_link"], sum(list(stats.unsupported_linktypes.values())))
        yield dropped
        if kernel:
            yield CounterMetricFamily(
                "conduitwatch_capture_kernel_packets",
                "Frames the kernel passed through the capture filter, including those it then dropped.",
                value=int(kernel.get("kernel_packets", 0)),
            )

    def _kernel_stats(self, pipeline: Pipeline) -> dict[str, Any]:
        source = pipeline.source
        read = getattr(source, "stats", None) if source is not None else None
        if not callable(read):
            return pipeline.kernel or {}
        try:
            result = read()
        except OSError:
            return pipeline.kernel or {}
        return result if isinstance(result, dict) else {}

    # -- flows -----------------------------------------------------------------------------------

    def _flows(self, pipeline: Pipeline) -> Iterator[Metric]:
        table = pipeline.flows
        yield GaugeMetricFamily("conduitwatch_flows_active", "Flows in the flow table.", value=len(table))
        yield GaugeMetricFamily(
            "conduitwatch_flows_max",
            "Capacity of the flow table (--max-flows).",
            value=table.config.max_flows,
        )
        yield CounterMetricFamily("conduitwatch_flows_created", "Flows started.", value=table.created)
        ended = _counter(
            "conduitwatch_flows_ended",
            "Flows ended, by reason: timeout (idle), evicted (table full: the flow idle longest), other "
            "(TCP close, active timeout, port reuse, end of input).",
            ["reason"],
        )
        ended.add_metric(["timeout"], table.timed_out)
        ended.add_metric(["evicted"], table.evicted)
        ended.add_metric(["other"], max(0, table.ended - table.timed_out - table.evicted))
        yield ended

    # -- decoders --------------------------------------------------------------------------------

    def _decoders(self, pipeline: Pipeline) -> Iterator[Metric]:
        anomalies = _counter(
            "conduitwatch_decoder_anomalies",
            "Malformed or odd packets and messages, by protocol (a header layer or an application "
            "protocol) and kind.",
            ["protocol", "kind"],
        )
        for name, count in sorted(list(pipeline.dissector.anomalies.items())):
            layer, _, kind = name.partition(".")
            anomalies.add_metric([layer, kind or "malformed"], count)
        messages = _counter(
            "conduitwatch_app_messages",
            "Application messages decoded, by protocol and direction.",
            ["protocol", "direction"],
        )
        operations = _counter(
            "conduitwatch_app_operations",
            "Industrial operations by protocol and operation class (requests, and responses whose request "
            "was not seen).",
            ["protocol", "operation"],
        )
        problems = {
            "unanswered": _counter(
                "conduitwatch_app_unanswered_requests",
                "Requests that expired without a response.",
                ["protocol"],
            ),
            "unmatched": _counter(
                "conduitwatch_app_unmatched_responses",
                "Responses with no pending request to pair with.",
                ["protocol"],
            ),
            "pending_evicted": _counter(
                "conduitwatch_app_pending_evicted",
                "Pending requests dropped because a flow's pending table was full.",
                ["protocol"],
            ),
            "stream_gaps": _counter(
                "conduitwatch_app_stream_gaps", "TCP stream gaps seen by the decoders.", ["protocol"]
            ),
            "buffer_overflows": _counter(
                "conduitwatch_app_buffer_overflows",
                "Stream buffers discarded because a message outgrew the limit.",
                ["protocol"],
            ),
        }
        for protocol, st in sorted(list(pipeline.decoders.stats.items())):
            messages.add_metric([protocol, "request"], st.requests)
            messages.add_metric([protocol, "response"], st.responses)
            for operation, count in sorted(list(st.operations.items())):
                operations.add_metric([protocol, operation], count)
            for kind, count in sorted(list(st.anomalies.items())):
                anomalies.add_metric([protocol, kind], count)
            problems["unanswered"].add_metric([protocol], st.unanswered)
            problems["unmatched"].add_metric([protocol], st.unmatched_responses)
            problems["pending_evicted"].add_metric([protocol], st.pending_evicted)
            problems["stream_gaps"].add_metric([protocol], st.stream_gaps)
            problems["buffer_overflows"].add_metric([protocol], st.buffer_overflows)
        yield anomalies
        yield messages
        yield operations
        yield from problems.values()

    # -- policy ----------------------------------------------------------------------------------

    def _policy(self, pipeline: Pipeline) -> Iterator[Metric]:
        from agent.policy.engine import RULES

        detector = pipeline.policy
        assert detector is not None
        compiled = detector.compiled
        reloader = self.view.reloader
        digest = reloader.digest if reloader is not None else ""
        yield InfoMetricFamily(
            "conduitwatch_policy",
            "The zone/conduit policy in force: content hash of its file, number of zones and conduits.",
            value={
                "hash": digest,
                "zones": str(len(compiled.zones)),
                "conduits": str(len(compiled.policy.conduits)),
            },
        )
        violations = _counter(
            "conduitwatch_policy_violations",
            "Policy violations (every occurrence, folded alerts included) by rule kind, severity and zones.",
            ["kind", "severity", "src_zone", "dest_zone"],
        )
        by_labels: dict[tuple[str, str, str, str], int] = {}
        for (kind, src, dest, _conduit, _op), count in list(detector.violations.items()):
            severity = SEVERITY_NAMES.get(RULES[kind][1], "low") if kind in RULES else "low"
            key = (kind, severity, src if src != "-" else NONE, dest if dest != "-" else NONE)
            by_labels[key] = by_labels.get(key, 0) + count
        for key, count in sorted(by_labels.items()):
            violations.add_metric(list(key), count)
        yield violations
        yield CounterMetricFamily(
            "conduitwatch_policy_flows_checked",
            "Flows judged against the policy.",
            value=detector.flows_checked,
        )
        # The policy's bounded tables: their size, and what their limit made them drop.
        for size_name, size_help, size, evicted_name, evicted_help, evicted in (
            ("alert_folds_open", "Alert fold windows open (repeats being folded into one alert).",
             len(detector.folds), "alert_fold_evictions",
             "Alert folds closed early because the fold table was full.", detector.fold_evictions),
            ("scheduled_flows_followed",
             "Flows allowed only by a schedule, followed until they leave its windows or end.",
             len(detector.followed), "scheduled_flow_evictions",
             "Scheduled flows no longer judged against their windows because the table was full.",
             detector.followed_evictions),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"conduitwatch_policy_{size_name}", size_help, value=size)
            yield CounterMetricFamily(f"conduitwatch_policy_{evicted_name}", evicted_help, value=evicted)
        if reloader is not None:
            yield GaugeMetricFamily(
                "conduitwatch_policy_reload_success",
                "1 if the last policy load or reload succeeded, 0 if it was refused.",
                value=int(reloader.last_success),
            )
            yield GaugeMetricFamily(
                "conduitwatch_policy_reload_timestamp_seconds",
                "Wall time of the last successful policy load or reload.",
                value=reloader.last_success_time,
            )
            reloads = _counter(
                "conduitwatch_policy_reloads", "Policy reloads by result (SIGHUP or file change).", ["result"]
            )
            reloads.add_metric(["success"], reloader.reloads)
            reloads.add_metric(["refused"], reloader.refused)
            yield reloads
        if self.view.policy_events is not None:
            yield from self._guarded("policy_events", self.view.policy_events.collect_metrics())

    # -- consumers -------------------------------------------------------------------------------

    def _consumers(self, pipeline: Pipeline) -> Iterator[Metric]:
        for consumer in list(pipeline.consumers):
            collect = getattr(consumer, "collect_metrics", None)
            if callable(collect):
                yield from self._guarded(type(consumer).__name__, collect)

    def _guarded(self, name: str, metrics: Any) -> Iterator[Metric]:
        """A consumer's metrics, or none (counted and logged) if collecting them fails."""
        try:
            families = list(metrics() if callable(metrics) else metrics)
        except Exception:
            self.errors[name] = self.errors.get(name, 0) + 1
            log.exception("collecting metrics of %s failed", name)
            return
        yield from families
