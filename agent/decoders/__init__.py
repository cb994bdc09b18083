"""Application-layer decoders and the registry that attaches them to flows.

``PROTOCOLS`` is the explicit list of what is decoded: add a module's ``SPEC`` here.

A new flow gets a decoder chosen by port **and** confirmed by a payload probe: the first payload
packets go through ``_Probing``, which runs the port's candidate probe (a few tries, in case the
capture began mid-message) and, for flows on no known port, the probes of every protocol that
allows it. A flow that matches nothing drops its decoder, so bulk traffic costs one attribute
test per packet afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from agent.decoders import (
    bacnet,
    dnp3,
    enip,
    goose,
    iec104,
    it_protocols,
    lldp,
    mms,
    modbus,
    mqtt,
    opcua,
    pn_cm,
    profinet,
    ptp,
    rgoose,
    s7comm,
    stp,
    sv,
)
from agent.decoders.base import DecoderContext, FlowDecoder, ProtocolSpec
from agent.decoders.expect import expectations_for

if TYPE_CHECKING:
    from agent.dissect import Packet
    from agent.flows import Flow

PROTOCOLS: tuple[ProtocolSpec, ...] = (
    modbus.SPEC,
    iec104.SPEC,
    dnp3.SPEC,
    enip.SPEC,
    s7comm.SPEC,
    s7comm.SPEC_ANY_PORT,
    bacnet.SPEC,
    bacnet.SPEC_LLC,
    mqtt.SPEC,
    mqtt.SPEC_ANY_PORT,
    opcua.SPEC,
    mms.SPEC,
    goose.SPEC,
    sv.SPEC,
    profinet.SPEC,
    pn_cm.SPEC,
    lldp.SPEC,
    stp.SPEC,
    ptp.SPEC,
    rgoose.SPEC,
    *it_protocols.SPECS,
)

# Payload packets probed on a protocol's own port before giving up. Six, because on TCP 102 the
# protocol shows only in the first DT, after CR and CC, and each TPKT header may come in a segment
# of its own.
_PORT_TRIES = 6
_ANY_PORT_TRIES = 2  # ... and on other ports
_PROBE_BYTES = 4096  # per direction, kept while probing
_SEQ = struct.Struct("!I")


class Registry:
    """Chooses decoders for new flows; ``port_overrides`` maps a protocol to extra TCP/UDP ports."""

    def __init__(
        self,
        ctx: DecoderContext,
        protocols: Iterable[ProtocolSpec] = PROTOCOLS,
        port_overrides: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.protocols = tuple(protocols)
        self.names = frozenset(p.name for p in self.protocols)
        # (IP protocol, server port) -> the protocols served there, probed in this order: several
        # share a port (S7comm and IEC 61850 MMS on 102) and the payload tells them apart.
        self._by_port: dict[tuple[int, int], tuple[ProtocolSpec, ...]] = {}
        for spec in self.protocols:
            for port in spec.tcp_ports:
                self._add_port((6, port), spec)
            for port in spec.udp_ports:
                self._add_port((17, port), spec)
        for name, ports in (port_overrides or {}).items():
            override = next((p for p in self.protocols if p.name == name), None)
            if override is None:
                raise ValueError(f"unknown protocol {name!r} (known: {', '.join(sorted(self.names))})")
            for port in ports:
                # An override is the operator's word: it is probed first, before the defaults.
                self._add_port((6, port), override, first=True)
                self._add_port((17, port), override, first=True)
        self._any_port = tuple(p for p in self.protocols if p.probe_any_port and not p.ethertypes)
        # L2 flows (agent.linklayer): the flow key's EtherType chooses the decoder, no probing.
        self._by_ethertype: dict[int, ProtocolSpec] = {}
        for spec in self.protocols:
            for ethertype in spec.ethertypes:
                if ethertype in self._by_ethertype:
                    raise ValueError(f"EtherType 0x{ethertype:04x} registered twice ({spec.name})")
                self._by_ethertype[ethertype] = spec
        self.expected = expectations_for(ctx)  # connections announced by control flows (FTP data)
        self._serves: dict[tuple[int, int], frozenset[int]] = {}

    def _add_port(self, key: tuple[int, int], spec: ProtocolSpec, first: bool = False) -> None:
        others = tuple(s for s in self._by_port.get(key, ()) if s is not spec)
        self._by_port[key] = (spec, *others) if first else (*others, spec)

    def attach(self, flow: Flow, pkt: Packet | None = None) -> None:
        """FlowTable ``on_new`` hook: a TCP/UDP flow gets a probing decoder, an L2 flow its EtherType's."""
        proto = flow.proto
        if proto != 6 and proto != 17:
            if not flow.ip_version:
                spec = self._by_ethertype.get(proto)
                if spec is not None:
                    flow.app = spec.factory(flow, self.ctx, True)
                    flow.app_proto = spec.name
            return
        if self.expected.entries:
            announced = self.expected.claim(flow)
            if announced is not None:
                flow.app_proto = announced  # its payload is the file itself: nothing to probe
                return
        by_port = self._by_port
        specs = by_port.get((proto, flow.dport)) or by_port.get((proto, flow.sport)) or ()
        flow.app = _Probing(self, flow, specs)

    def serves(self, spec: ProtocolSpec, proto: int) -> frozenset[int]:
        """The ports on which ``spec`` is the server (defaults plus overrides)."""
        # Asked for every flow a probe names; with the IT protocols the port table is long.
        key = (id(spec), proto)
        ports = self._serves.get(key)
        if ports is None:
            ports = self._serves[key] = frozenset(
                port
                for (p, port), specs in self._by_port.items()
                if p == proto and any(s is spec for s in specs)
            )
        return ports

    def unknown_port_candidates(self, exclude: tuple[ProtocolSpec, ...]) -> tuple[ProtocolSpec, ...]:
        return tuple(p for p in self._any_port if p not in exclude)


class _Probing:
    """A flow's decoder until the payload says which protocol it carries.

    Payloads are kept (bounded) while probing, so a message split over several segments is still
    recognised, and the chosen decoder is replayed everything from the first payload on.
    """

    __slots__ = ("flow", "held", "held_bytes", "registry", "specs", "tries")

    def __init__(self, registry: Registry, flow: Flow, specs: tuple[ProtocolSpec, ...]) -> None:
        self.registry = registry
        self.flow = flow
        self.specs = specs  # the protocols of the flow's port, if any
        self.tries = 0
        self.held: list[tuple[bool, int, bytes, float, int, int]] = []
        self.held_bytes = {True: b"", False: b""}

    def continue_on(self, flow: Flow) -> None:
        self.flow = flow

    def feed(self, pkt: Packet, to_server: bool, ts: float, cnt: int, source: int) -> None:
        data = pkt.data
        seq = _SEQ.unpack_from(data, pkt.l4_off + 4)[0] if self.flow.proto == 6 else 0
        payload = data[pkt.payload_off : pkt.payload_off + pkt.payload_len]
        self.feed_segment(to_server, seq, payload, ts, cnt, source)

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        flow = self.flow
        if flow.proto == 6:
            self.held.append((to_server, seq, payload, ts, cnt, source))
            # Probe what this direction has sent so far: a message may span segments.
            sample = self.held_bytes[to_server] = (self.held_bytes[to_server] + payload)[:_PROBE_BYTES]
        else:
            self.held = [(to_server, 0, payload, ts, cnt, source)]  # datagrams stand alone
            sample = payload
        self.tries += 1
        specs = self.specs
        chosen = None
        for spec in specs:
            if spec.probe(sample, to_server):
                chosen = spec
                break
        if chosen is None and self.tries <= _ANY_PORT_TRIES:
            for candidate in self.registry.unknown_port_candidates(specs):
                if candidate.probe(sample, to_server):
                    chosen = candidate
                    break
        if chosen is not None:
            # The client is the side not on the protocol's port (a capture starting mid-stream
            # makes the server look like the initiator); on unknown ports, assume the initiator.
            server_port = self.registry.serves(chosen, flow.proto)
            initiator_is_client = not (flow.sport in server_port and flow.dport not in server_port)
            decoder: FlowDecoder = chosen.factory(flow, self.registry.ctx, initiator_is_client)
            flow.app = decoder
            flow.app_proto = chosen.name
            for held in self.held:
                decoder.feed_segment(*held)
            self.held = []
        elif self.tries >= (_PORT_TRIES if specs else _ANY_PORT_TRIES):
            flow.app = None
            self.held = []
            if flow.app_proto in self.registry.names:
                # The port said e.g. "modbus" but the payload does not: do not call it that.
                flow.app_proto = "unknown"

    def close(self, reason: str) -> None:
        if self.flow.app_proto in self.registry.names:
            # Never saw a payload we could confirm.
            self.flow.app_proto = "unknown"
