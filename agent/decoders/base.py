"""The decoder contract: what a protocol module provides and what it may produce.

A protocol module is sans-io: it gets payload bytes with their flow and packet position, and turns
them into typed records (``OtMessage``, ``Anomaly``) handed to a ``DecoderContext``. It never reads
sockets or files, never raises on bad bytes (a bad message is an ``Anomaly``), and keeps bounded
state: stream buffers and pending-request tables have limits and count what they drop.

How a protocol plugs in (see ``agent/decoders/__init__.py`` for the explicit list):

* a ``ProtocolSpec`` names the protocol, its default TCP/UDP ports, a cheap ``probe`` on the first
  payload of a flow, and a factory building the per-flow decoder; a link-layer protocol (GOOSE,
  PROFINET, LLDP, ...) names EtherTypes instead (``link_layer_spec``) and is chosen by them alone;
* the per-flow decoder implements ``FlowDecoder``: ``feed`` for each packet with payload, ``close``
  when the flow ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from agent.dissect import Packet
    from agent.flows import Flow

# The operation classes of DOMAIN.md section 5: every application message maps to exactly one.
OPERATIONS = frozenset(
    {
        "read",
        "write",
        "operate",
        "program",
        "upload",
        "config",
        "mode",
        "time",
        "diagnostic",
        "file",
        "firmware",
        "discovery",
        "subscribe",
        "session",
        "auth",
        "io",
        "vendor",
        "unknown",
        "opaque",
    }
)

# Operation classes audited even when a policy allows them (SR 2.8).
AUDITED_OPERATIONS = frozenset({"program", "upload", "mode", "firmware", "config"})

REQUEST = "request"
RESPONSE = "response"


class OtMessage(NamedTuple):
    """One application-layer message of an industrial protocol.

    A named tuple rather than a slotted class: one is built for every message, and a tuple is built
    in C (``tuple.__new__``, see ``agent.decoders.message``) where a class runs a Python ``__init__``
    of thirteen assignments; its fields read as fast as slots. Immutable: a decoder builds a response
    with its request's operation and latency already known.
    """

    ts: float
    flow: Flow
    pcap_cnt: int
    source: int  # index of the capture source (file) the packet came from
    protocol: str  # "modbus", "dnp3", "s7comm", "enip", "iec104", ...
    to_server: bool  # sent by the flow's initiator
    direction: str  # REQUEST or RESPONSE (a DNP3 unsolicited response is a RESPONSE with no request)
    function: int  # the protocol's primary code: function code, service, type id, ...
    operation: str  # one of OPERATIONS; a response takes the class of its request
    fields: dict[str, Any]  # protocol fields for EVE, named close to Wireshark's
    request_cnt: int = 0  # responses: pcap_cnt of the matched request (0 if unmatched)
    latency_s: float | None = None  # responses: time since the matched request
    exception: bool = False  # an error/exception response (Modbus exception, CIP error status, ...)


@dataclass(slots=True)
class Anomaly:
    """Something wrong with a message: bad length, unknown function, reserved bits, stream gap."""

    ts: float
    flow: Flow
    pcap_cnt: int
    source: int
    protocol: str
    kind: str  # short stable identifier, e.g. "bad_length", "unknown_function", "stream_gap"
    detail: str  # one sentence for a person


@dataclass(slots=True)
class DecoderStats:
    """Plain integer counters per protocol, published at scrape time and in the stats event."""

    requests: int = 0
    responses: int = 0
    matched: int = 0
    unanswered: int = 0  # requests that expired without a response
    unmatched_responses: int = 0
    pending_evicted: int = 0  # requests dropped because a flow's pending table was full
    anomalies: dict[str, int] = field(default_factory=dict)
    stream_gaps: int = 0
    buffer_overflows: int = 0
    # Operations performed: requests by class, plus responses whose request was not seen.
    operations: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.requests + self.responses,
            "requests": self.requests,
            "responses": self.responses,
            "matched": self.matched,
            "unanswered": self.unanswered,
            "unmatched_responses": self.unmatched_responses,
            "pending_evicted": self.pending_evicted,
            "stream_gaps": self.stream_gaps,
            "buffer_overflows": self.buffer_overflows,
            "operations": dict(sorted(self.operations.items())),
            "anomalies": dict(sorted(self.anomalies.items())),
        }


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    request_timeout: float = 30.0  # a request unanswered this long (packet time) counts as unanswered
    max_pending: int = 1024  # per flow
    max_stream_buffer: int = 1 << 18  # bytes buffered per direction while waiting for a whole message


def ignore_message(_msg: OtMessage) -> None:
    """``DecoderContext.on_message`` when nothing consumes messages (see DecoderContext)."""


class Interest(NamedTuple):
    """What the stages reading one flow's messages need from its decoder (see DecoderContext)."""

    # Operation classes whose requests become ``OtMessage`` records; None: every request.
    requests: frozenset[str] | None
    # The same for responses (an exception response always does: it may say "device busy").
    responses: frozenset[str] | None
    # Where the flow's requests are counted by operation class (shared by the flows a reader counts
    # together, e.g. one conduit, zone and protocol), or None.
    operations: dict[str, int] | None = None


EVERY_RECORD = Interest(None, None)
NO_RECORD = Interest(frozenset(), frozenset())


def every_record(_flow: Flow, _protocol: str, _ts: float) -> Interest:
    """``DecoderContext.interest`` of a stage that reads every record."""
    return EVERY_RECORD


def no_record(_flow: Flow, _protocol: str, _ts: float) -> Interest:
    """``DecoderContext.interest`` when no stage reads records (counts and timings may still be read)."""
    return NO_RECORD


def _union(first: frozenset[str] | None, second: frozenset[str] | None) -> frozenset[str] | None:
    return None if first is None or second is None else first | second


def merge_interests(first: Interest, second: Interest) -> Interest:
    """What two readers need together: the union of their records; the first one's counts."""
    operations = first.operations if first.operations is not None else second.operations
    return Interest(_union(first.requests, second.requests), _union(first.responses, second.responses),
                    operations)  # fmt: skip


def no_retune() -> None:
    """The ``retune`` of a reader no pipeline has wired to its DecoderContext yet."""


# A timing tap's log is folded in (``digest``) once it holds this many entries: bounded memory between
# the judgements that normally fold it.
TAP_LOG_LIMIT = 4096


class TimingTap(Protocol):
    """Where a decoder logs the timing of a control loop's messages, without building records
    (``agent.detectors.health.Loop``): ``(ts, pcap_cnt, function, -1.0)`` for a request and
    ``(ts, request pcap_cnt, 0, latency)`` for a matched response."""

    log: list[tuple[float, int, int, float]]

    def digest(self) -> None: ...


class DecoderContext:
    """What decoders hand their records to; the pipeline owns one and routes the records on.

    Building a record (an ``OtMessage`` and its fields) for every message costs more than decoding
    it, so decoders build one only for a stage that reads it, as Zeek raises no event without a
    handler. The pipeline settles, before the first packet:

    * ``listening``: whether any stage reads messages at all. While it is false (no policy, exporter,
      report, asset inventory, policy learning or ``--events all``), decoders count every message
      and nothing more.
    * ``interest(flow, protocol, ts)``: per flow, asked at the flow's first message and again after
      every ``retune()``: which requests and responses become records for ``on_message``, and where
      requests are counted by operation class (the exporter). A policy needs records only for the
      operations its rules restrict or audit on that flow.
    * ``timing_tap(flow, protocol, client_is_initiator)``: per flow and direction, the control loop
      (flood detector) whose request/response timings the decoder logs directly, or None.

    ``retune()`` makes every decoder ask again at its next message: the policy was reloaded, or a
    control loop it may hold was forgotten.
    """

    def __init__(
        self,
        config: DecoderConfig,
        on_message: Callable[[OtMessage], None],
        on_anomaly: Callable[[Anomaly], None],
    ) -> None:
        self.config = config
        self.on_message = on_message
        self.on_anomaly = on_anomaly
        self.listening = on_message is not ignore_message
        self.interest: Callable[[Flow, str, float], Interest] = every_record
        self.timing_tap: Callable[[Flow, str, bool], TimingTap | None] | None = None
        self.epoch = 0
        self.stats: dict[str, DecoderStats] = {}

    def retune(self) -> None:
        self.epoch += 1

    def stats_for(self, protocol: str) -> DecoderStats:
        stats = self.stats.get(protocol)
        if stats is None:
            stats = self.stats[protocol] = DecoderStats()
        return stats

    def anomaly(self, anomaly: Anomaly, stats: DecoderStats) -> None:
        stats.anomalies[anomaly.kind] = stats.anomalies.get(anomaly.kind, 0) + 1
        self.on_anomaly(anomaly)


class FlowDecoder(Protocol):
    """Per-flow decoder state. ``feed`` gets every packet of the flow that carries payload."""

    def feed(self, pkt: Packet, to_server: bool, ts: float, cnt: int, source: int) -> None: ...

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        """The same from saved parts (TCP sequence number, 0 for UDP): how probing replays payloads."""
        ...

    def close(self, reason: str) -> None:
        """The flow ended: flush what is buffered and expire pending requests."""
        ...

    def continue_on(self, flow: Flow) -> None:
        """The flow's record was cut (active timeout) and continues as ``flow``: decode on into it,
        with the stream state and the pending requests as they are."""
        ...


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """How the registry finds and builds a protocol's decoder."""

    name: str
    tcp_ports: frozenset[int]
    udp_ports: frozenset[int]
    # probe(first payload, sent by initiator) -> does this look like the protocol? Must be cheap,
    # must not raise, and must reject other protocols that share the port (e.g. S7comm vs MMS on 102).
    probe: Callable[[bytes, bool], bool]
    # factory(flow, context, initiator_is_client): the registry works out which side is the client
    # from the ports, because a capture that starts mid-stream makes the server the "initiator".
    factory: Callable[[Flow, DecoderContext, bool], FlowDecoder]
    # Whether a flow on none of the ports is probed for this protocol (false for weak probes).
    probe_any_port: bool = True
    # Link-layer protocols: the EtherTypes (agent.linklayer keys, e.g. ``llc_key(0x42)`` for STP)
    # whose L2 flows get this decoder. The EtherType decides: there is no probe, no port.
    ethertypes: frozenset[int] = frozenset()


def ethertype_decides(payload: bytes, from_initiator: bool) -> bool:
    """The ``probe`` of a link-layer ProtocolSpec: never chosen by payload on an IP flow."""
    return False


def link_layer_spec(
    name: str, ethertypes: frozenset[int], factory: Callable[[Flow, DecoderContext, bool], FlowDecoder]
) -> ProtocolSpec:
    """A ProtocolSpec for a protocol carried directly in Ethernet frames (no ports, no probe)."""
    return ProtocolSpec(name, frozenset(), frozenset(), ethertype_decides, factory, probe_any_port=False,
                        ethertypes=ethertypes)  # fmt: skip
