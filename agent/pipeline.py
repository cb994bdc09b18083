"""source -> dissect -> flows -> consumers -> sinks. No protocol logic lives here.

The per-packet loop is deliberately one function with its collaborators bound to locals: at a
budget of ~4 us a packet, attribute lookups and calls are a measurable share of the cost.
Everything that is not per packet (flow ends, events, summaries) goes through the explicit
``FlowConsumer`` and ``Sink`` lists, which is where later stages plug in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.decoders import PROTOCOLS, Registry
from agent.decoders.base import (
    Anomaly,
    DecoderConfig,
    DecoderContext,
    Interest,
    OtMessage,
    every_record,
    ignore_message,
    merge_interests,
    no_record,
)
from agent.dissect import FRAGMENT, IP, L2, L2_FLOW, MALFORMED, UNSUPPORTED_LINK, Dissector, Packet
from agent.flows import Flow, FlowConfig, FlowTable
from agent.outputs.eve import anomaly_event, decode_anomaly_event, flow_event, flow_header, ot_event
from agent.records import CaptureProblem, Event, Frame, SourceInfo

if TYPE_CHECKING:
    # Imported when a policy is given: the engine is not needed (nor loaded) without one.
    from agent.detectors.floods import FloodDetector
    from agent.policy.engine import CompiledPolicy, PolicyDetector

log = logging.getLogger(__name__)

LINKTYPE_NAMES = {0: "null", 1: "ethernet", 12: "raw", 14: "raw", 101: "raw", 108: "loop", 113: "linux_sll",
                  228: "ipv4", 229: "ipv6", 276: "linux_sll2"}  # fmt: skip


class Source(Protocol):
    """What the pipeline reads: a replay of files or a live interface (agent.capture)."""

    sources: list[SourceInfo]

    def __iter__(self) -> Iterator[Frame]: ...


class Sink(Protocol):
    """Receives every event (EVE file, syslog, ...)."""

    name: str

    def emit(self, event: Event) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...

    # Optionally ``stats() -> dict[str, int]``: events taken, delivery failures, events dropped
    # from a full backlog; reported in the stats event under ``outputs``.


class FlowConsumer(Protocol):
    """A stage that learns from finished flows (summaries, detectors).

    A consumer that also wants application messages defines ``on_message(msg: OtMessage)``; the
    pipeline only routes messages to consumers that have it, and every record is built for it unless
    it also says per flow which ones it reads: ``record_interest(flow, protocol, ts) -> Interest``
    (see DecoderContext). One that times control loops offers the decoders a ``timing_tap(flow,
    protocol, client_is_initiator)`` (the flood detector). One that needs the packet opening a flow
    (its MAC addresses, say) defines ``on_flow_start(flow: Flow, pkt: Packet)``; one that follows flows
    across the records an active timeout cuts them into defines ``on_flow_continue(old, new)``.
    """

    def on_flow_end(self, flow: Flow, reason: str) -> None: ...


@dataclass(slots=True)
class RunStats:
    """Counters of one run; the ``stats`` event and the summary are built from these."""

    packets: int = 0
    bytes: int = 0
    ip_packets: int = 0
    fragments: int = 0
    l2_packets: int = 0
    l2_flow_packets: int = 0  # of the l2_packets, those accounted to L2 flows (non-IP Ethernet, not ARP)
    malformed: int = 0
    unsupported_link: int = 0
    unsupported_linktypes: dict[int, int] = field(default_factory=dict)
    first_ts: float = 0.0
    last_ts: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False


EVENTS_DEFAULT = "default"  # flow, anomaly, stats (and alerts once detectors raise them)
EVENTS_ALL = "all"  # plus one ``ot`` event per application message


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    flows: FlowConfig = field(default_factory=FlowConfig)
    decoders: DecoderConfig = field(default_factory=DecoderConfig)
    # Extra ports per protocol name, e.g. {"modbus": (5020,)}.
    ports: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Names of the application decoders to run; None runs all of them.
    decoder_names: tuple[str, ...] | None = None
    events: str = EVENTS_DEFAULT
    # Replay: name files in events (pcap_filename, pcap_cnt). Live: off.
    replay: bool = True
    # Backup-flood and control-health detector (runs with a policy): load bin width in seconds.
    flood_bin_seconds: float = 0.1
    # Whether that detector runs with a policy. The commands always run it; off, a policy run is the
    # policy engine alone, which bench.breakdown times as a stage of its own.
    flood_detection: bool = True


class Pipeline:
    """One run over one source. Not reusable: build a new one per run."""

    def __init__(
        self,
        config: PipelineConfig,
        sinks: Iterable[Sink] = (),
        consumers: Iterable[FlowConsumer] = (),
        progress: Callable[[RunStats], None] | None = None,
        policy: CompiledPolicy | None = None,
    ) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.consumers = list(consumers)
        self.progress = progress
        self.dissector = Dissector()
        self.decoders = DecoderContext(config.decoders, self._on_message, self._on_anomaly)
        protocols = PROTOCOLS
        if config.decoder_names is not None:
            protocols = tuple(p for p in PROTOCOLS if p.name in config.decoder_names)
        self.registry = Registry(self.decoders, protocols, port_overrides=config.ports)
        self.policy: PolicyDetector | None = None
        if policy is not None:
            from agent.policy.engine import PolicyDetector

            self.policy = PolicyDetector(policy, self._emit_detection)
            self.consumers.insert(0, self.policy)
        # Backup floods and control health (agent.detectors.floods): needs the policy's zones and links.
        self.floods: FloodDetector | None = None
        if self.policy is not None and config.flood_detection:
            from agent.detectors.floods import FloodConfig, FloodDetector

            self.floods = FloodDetector(
                self.policy, self._emit_detection, FloodConfig(bin_seconds=config.flood_bin_seconds)
            )
            self.consumers.insert(1, self.floods)
        starters = (getattr(c, "on_flow_start", None) for c in self.consumers if c is not self.policy)
        self._flow_start_consumers = tuple(h for h in starters if callable(h))
        self.flows = FlowTable(config.flows, self._on_flow_end, self._flow_starter(bool(protocols)))
        continuers = (getattr(c, "on_flow_continue", None) for c in self.consumers)
        self._flow_continue_consumers = tuple(h for h in continuers if callable(h))
        if self._flow_continue_consumers:
            self.flows.on_continue = self._on_flow_continue
        self._log_messages = config.events == EVENTS_ALL
        handlers = (getattr(c, "on_message", None) for c in self.consumers)
        self._message_consumers: tuple[Callable[[OtMessage], None], ...] = tuple(
            h for h in handlers if callable(h)
        )
        if not (self._log_messages and self.sinks):
            # Decoders call the consumers directly: a hop (and a loop) less per message.
            if not self._message_consumers:
                self.decoders.on_message = ignore_message
            elif len(self._message_consumers) == 1:
                self.decoders.on_message = self._message_consumers[0]
            elif len(self._message_consumers) == 2:
                first, second = self._message_consumers  # the policy and the flood detector

                def both(msg: OtMessage) -> None:
                    first(msg)
                    second(msg)

                self.decoders.on_message = both
        self._settle_interest()
        self.stats = RunStats()
        self.source_names: list[str] | None = None
        self.kernel: dict[str, Any] | None = None  # live capture: the kernel's counters at the end
        self._stopping = False
        # For the exporter (read from its HTTP thread): the source being read, set when the loop starts
        # (readiness), and whether the run has ended (its counters are then final).
        self.source: Source | None = None
        self.started = False
        self.finished = False
        self._next_expiry = 0.0  # packet time of the next flow expiry sweep (see _sweep)

    def _settle_interest(self) -> None:
        """Tell the decoders what the stages read (see DecoderContext): which records (a stage that
        says so with ``record_interest(flow, protocol, ts)`` gets only those; any other message reader,
        and ``--events all``, gets every record) and the flood detector's timing taps."""
        ctx = self.decoders
        interests: list[Callable[[Flow, str, float], Interest]] = []
        every = self._log_messages and bool(self.sinks)
        for consumer in self.consumers:
            if not callable(getattr(consumer, "on_message", None)):
                continue
            interest = getattr(consumer, "record_interest", None)
            if callable(interest):
                interests.append(interest)
            else:
                every = True
        if every:
            # Still asking the others: the policy judges a flow again there (after a reload, or once
            # the payload settled the protocol) before anything counts under its verdict.
            interests.append(every_record)
        if not interests:
            ctx.interest = no_record
        elif len(interests) == 1:
            ctx.interest = interests[0]
        else:
            readers = tuple(interests)

            def merged(flow: Flow, protocol: str, ts: float) -> Interest:
                wanted = readers[0](flow, protocol, ts)
                for reader in readers[1:]:
                    wanted = merge_interests(wanted, reader(flow, protocol, ts))
                return wanted

            ctx.interest = merged
        ctx.listening = ctx.on_message is not ignore_message
        for consumer in self.consumers:
            if hasattr(consumer, "retune"):  # policy, flood detector: what they read can change
                consumer.retune = ctx.retune
            timing_tap = getattr(consumer, "timing_tap", None)
            if callable(timing_tap):  # the flood detector (also as a plain consumer, in tests)
                ctx.timing_tap = timing_tap
                ctx.listening = True

    def _flow_starter(self, decoding: bool) -> Callable[[Flow, Packet], None] | None:
        """The FlowTable hook for new flows: attach a decoder, judge the flow against the policy."""
        hooks: list[Callable[[Flow, Packet], None]] = [self.registry.attach] if decoding else []
        if self.policy is not None:
            hooks.append(self.policy.on_flow_start)
        hooks.extend(self._flow_start_consumers)  # after the policy: they may read its verdict
        if len(hooks) <= 1:
            return hooks[0] if hooks else None
        if len(hooks) == 2:
            first, second = hooks

            def start(flow: Flow, pkt: Packet) -> None:
                first(flow, pkt)
                second(flow, pkt)

            return start

        def start_all(flow: Flow, pkt: Packet) -> None:
            for hook in hooks:
                hook(flow, pkt)

        return start_all

    def _emit_detection(self, event_type: str, ts: float, flow: Flow, cnt: int, source: int,
                        fields: dict[str, Any]) -> None:  # fmt: skip
        if self.sinks:
            header = flow_header(flow, self.source_names, cnt, source)
            header.update(fields)
            self.emit(Event(event_type, ts, header))

    # -- control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish at the next check (safe to call from a signal handler)."""
        self._stopping = True

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def _on_message(self, msg: OtMessage) -> None:
        for on_message in self._message_consumers:
            on_message(msg)
        if self._log_messages and self.sinks:
            self.emit(ot_event(msg, self.source_names))

    def _on_anomaly(self, anomaly: Anomaly) -> None:
        if self.sinks:
            self.emit(anomaly_event(anomaly, self.source_names))

    def _on_flow_continue(self, old: Flow, new: Flow) -> None:
        for on_flow_continue in self._flow_continue_consumers:
            on_flow_continue(old, new)

    def _on_flow_end(self, flow: Flow, reason: str) -> None:
        app = flow.app
        if app is not None:
            flow.app = None
            app.close(reason)
        for consumer in self.consumers:
            consumer.on_flow_end(flow, reason)
        if self.sinks:
            self.emit(flow_event(flow, reason, self.source_names))

    # -- the loop --------------------------------------------------------------------------------

    def run(self, source: Source, frames: Iterable[Frame] | None = None) -> RunStats:
        """Process every frame of ``source``, then end all flows and emit the stats event.

        ``frames`` replaces iterating ``source`` itself, for wrappers such as real-time pacing.
        """
        if self.config.replay:
            self.source_names = [info.name for info in source.sources]
        self.source = source
        self.started = True
        stats = self.stats
        pkt = Packet()
        dissect = self.dissector.dissect
        table = self.flows
        update = table.update
        fast_path = table.fast_path
        unsupported = stats.unsupported_linktypes
        status_counts = [0, 0, 0, 0, 0, 0]  # IP is derived at the end: one less increment per packet
        update_l2 = table.update_l2
        packets = 0
        nbytes = 0
        dissected = 0  # packets that took the full path; the others were counted by the fast path
        ts = 0.0
        progress = self.progress
        started = time.perf_counter()
        try:
            for ts, data, wirelen, _iface, linktype, cnt, src in source if frames is None else frames:
                if not packets & 0x3FFF:
                    # Every 16k packets: honour a stop request, refresh the progress display and the
                    # totals a metrics scrape reads (also when no IP packet triggers the sweep below).
                    if self._stopping:
                        stats.interrupted = True
                        break
                    stats.packets = packets
                    stats.bytes = nbytes
                    if progress is not None:
                        progress(stats)
                packets += 1
                nbytes += wirelen
                if linktype == 1 and fast_path(data, ts, wirelen, cnt, src):
                    continue
                dissected += 1
                status = dissect(pkt, data, linktype)
                if status == IP:
                    if ts >= table.next_sweep:
                        # Once a second of packet time the totals become visible to a metrics scrape.
                        stats.packets = packets
                        stats.bytes = nbytes
                        stats.last_ts = ts
                        self._sweep(ts)
                    flow, to_server = update(pkt, ts, wirelen, cnt, src)
                    app = flow.app
                    if app is not None and pkt.payload_len:
                        app.feed(pkt, to_server, ts, cnt, src)
                    continue
                status_counts[status] += 1
                if status == L2_FLOW:
                    # GOOSE, SV, PROFINET, LLDP, STP, ...: the same flow/decoder contract as IP.
                    if ts >= table.next_sweep:
                        self._sweep(ts)
                    flow, to_server = update_l2(pkt, ts, wirelen, cnt, src)
                    app = flow.app
                    if app is not None and pkt.payload_len:
                        app.feed(pkt, to_server, ts, cnt, src)
                elif status == MALFORMED:
                    if self.sinks:
                        self._decode_anomaly(ts, cnt, src)
                elif status == UNSUPPORTED_LINK:
                    if linktype not in unsupported:
                        log.warning(
                            "link type %d is not supported: its packets are counted and skipped", linktype
                        )
                        unsupported[linktype] = 0
                    unsupported[linktype] += 1
        finally:
            stats.packets = packets
            stats.bytes = nbytes
            stats.last_ts = ts
            stats.ip_packets = packets - sum(status_counts)
            table.fast_packets = packets - dissected
            stats.fragments = status_counts[FRAGMENT]
            stats.l2_packets = status_counts[L2] + status_counts[L2_FLOW]
            stats.l2_flow_packets = status_counts[L2_FLOW]
            stats.malformed = status_counts[MALFORMED]
            stats.unsupported_link = status_counts[UNSUPPORTED_LINK]
            stats.wall_seconds = time.perf_counter() - started
        if self._stopping:
            stats.interrupted = True
        # Live sources report the kernel's own counters (packets seen, dropped before we read them).
        kernel_stats = getattr(source, "stats", None)
        kernel = kernel_stats() if callable(kernel_stats) else None
        self.finish(list(getattr(source, "problems", ())), kernel)
        return stats

    def _sweep(self, ts: float) -> None:
        """Housekeeping on packet time, when ``ts`` reaches the flow table's ``next_sweep``.

        Flow expiry and alert folding run once a second of packet time (expiry walks the idle
        flows); the flood detector's load bins close more often (100 ms by default), so the next
        sweep is the earlier of the two. Sweeps also end the fast path, so they stay rare.
        """
        table = self.flows
        if ts >= self._next_expiry:
            if not self.stats.first_ts:
                self.stats.first_ts = ts
            table.expire(ts)
            if self.policy is not None:
                self.policy.tick(ts)
            self._next_expiry = table.next_sweep
        if self.floods is not None:
            table.next_sweep = min(self._next_expiry, self.floods.tick(ts))

    def _decode_anomaly(self, ts: float, cnt: int, source: int) -> None:
        names = self.source_names
        name = names[source] if names is not None else None
        self.emit(decode_anomaly_event(self.dissector.last_anomaly, ts, cnt, name))

    def finish(self, problems: list[CaptureProblem], kernel: dict[str, Any] | None = None) -> None:
        """End all flows, emit the stats event and flush every sink."""
        self.flows.flush("shutdown")
        if self.policy is not None:
            self.policy.finish()
        if self.floods is not None:
            self.floods.finish()
        self.kernel = kernel
        if self.sinks:
            stats = self.stats_dict(problems)
            if kernel is not None:
                stats["capture"]["kernel"] = kernel
            self.emit(Event("stats", self.stats.last_ts or time.time(), {"stats": stats}))
        for sink in self.sinks:
            sink.flush()
        self.finished = True

    def _layer_counts(self) -> dict[str, int]:
        """The dissector's layer counts plus the frames the flow table's fast path accounted."""
        counts = self.dissector.counts
        table = self.flows
        if table.fast_packets:
            counts["ipv4"] = counts.get("ipv4", 0) + table.fast_packets
        if table.fast_vlan:
            counts["vlan"] = counts.get("vlan", 0) + table.fast_vlan
        return counts

    def stats_dict(self, problems: list[CaptureProblem]) -> dict[str, Any]:
        s = self.stats
        table = self.flows
        return {
            "capture": {
                "packets": s.packets,
                "bytes": s.bytes,
                "unsupported_link_packets": s.unsupported_link,
                "unsupported_linktypes": {str(k): v for k, v in sorted(s.unsupported_linktypes.items())},
                "interrupted": s.interrupted,
                "problems": [str(p) for p in problems],
            },
            "decoder": {
                "ip": s.ip_packets,
                "fragments": s.fragments,
                "non_ip": s.l2_packets,
                "link_layer_flows": s.l2_flow_packets,
                "malformed": s.malformed,
                "layers": dict(sorted(self._layer_counts().items())),
                "anomalies": dict(sorted(self.dissector.anomalies.items())),
            },
            "app_layer": {name: st.as_dict() for name, st in sorted(self.decoders.stats.items())},
            **({"policy": self.policy.stats()} if self.policy is not None else {}),
            "outputs": {
                sink.name: stats() for sink in self.sinks if callable(stats := getattr(sink, "stats", None))
            },
            **({"floods": self.floods.stats()} if self.floods is not None else {}),
            "flow": {
                "created": table.created,
                "ended": table.ended,
                "timed_out": table.timed_out,
                "evicted": table.evicted,
                "active": len(table),
                "max": table.config.max_flows,
            },
        }
