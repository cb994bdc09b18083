"""Suricata-EVE-shaped JSON lines: the event sink, and the builders shared by every event type.

The header fields (``timestamp``, ``flow_id``, ``event_type``, addresses, ``community_id``, and in
replay ``pcap_filename`` and ``pcap_cnt``) come first in every line, in the same order as Suricata,
so tools written for Suricata's EVE read ours unchanged. docs/eve.schema.json describes the fields.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from agent.decoders.base import RESPONSE, Anomaly, OtMessage
from agent.decoders.identify import flow_fields
from agent.dissect import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, format_ip
from agent.flows import TCP_NONE, TCP_STATE_NAMES, Flow
from agent.linklayer import LLC_KEY, format_mac
from agent.outputs.backlog import DEFAULT_LIMIT, Backlog
from agent.ports import primary_category
from agent.records import Event

log = logging.getLogger(__name__)

# Every event_type this writer produces (docs/eve.schema.json): what --syslog-types may name.
EVENT_TYPES = frozenset({"flow", "stats", "ot", "anomaly", "alert", "audit", "asset"})

PROTO_NAMES = {
    IPPROTO_TCP: "TCP",
    IPPROTO_UDP: "UDP",
    IPPROTO_ICMP: "ICMP",
    IPPROTO_ICMPV6: "IPv6-ICMP",
    132: "SCTP",
}


def format_timestamp(ts: float) -> str:
    """ISO 8601 / RFC 3339 in UTC with microseconds, e.g. 2024-05-01T10:00:00.123456+00:00."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def flow_header(flow: Flow, sources: list[str] | None, cnt: int = 0, source: int = -1) -> dict[str, Any]:
    """The common EVE header fields describing ``flow`` (initiator as src).

    In replay (``sources`` given) the event names its packet: ``cnt``/``source``, by default the
    flow's last packet.
    """
    header: dict[str, Any] = {"flow_id": flow.flow_id}
    if sources is not None:
        header["pcap_cnt"] = cnt or flow.last_cnt
        header["pcap_filename"] = sources[source if source >= 0 else flow.last_source]
    header["vlan"] = list(flow.vlan)
    if not flow.ip_version:
        _l2_addresses(header, flow)
        return header
    header["src_ip"] = format_ip(flow.src)
    proto = flow.proto
    has_ports = proto in (IPPROTO_TCP, IPPROTO_UDP, 132)
    if has_ports:
        header["src_port"] = flow.sport
    header["dest_ip"] = format_ip(flow.dst)
    if has_ports:
        header["dest_port"] = flow.dport
    header["proto"] = PROTO_NAMES.get(proto, str(proto))
    header["app_proto"] = flow.app_proto or "unknown"
    header["community_id"] = flow.community_id
    return header


def _l2_addresses(header: dict[str, Any], flow: Flow) -> None:
    """An L2 flow (agent.linklayer) is named by MACs and EtherType (or LLC DSAP), not IPs and ports."""
    header["src_mac"] = format_mac(flow.src)
    header["dest_mac"] = format_mac(flow.dst)
    key = flow.proto
    if key & LLC_KEY:
        header["llc_dsap"] = key & 0xFF
    else:
        header["ether_type"] = key
    header["proto"] = "ETH"
    header["app_proto"] = flow.app_proto or "unknown"
    header["community_id"] = ""  # Community ID is defined for IP flows only


def flow_event(flow: Flow, reason: str, sources: list[str] | None) -> Event:
    """The ``flow`` event written when a flow ends."""
    fields = flow_header(flow, sources)
    fields["flow"] = {
        "pkts_toserver": flow.pkts_toserver,
        "pkts_toclient": flow.pkts_toclient,
        "bytes_toserver": flow.bytes_toserver,
        "bytes_toclient": flow.bytes_toclient,
        "start": format_timestamp(flow.first_ts),
        "end": format_timestamp(flow.last_ts),
        "age": int(flow.last_ts - flow.first_ts),
        "state": flow.state,
        "reason": reason,
        "category": primary_category(flow.app_proto),
    }
    identification = flow_fields(flow)
    if identification:
        # What identification of an IT protocol found ("smb": {...}, "tls": {...}), copied: the
        # identifier may still be updating them.
        for name, values in identification.items():
            if values:
                fields[name] = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    if flow.tcp_state != TCP_NONE:
        ts_flags = flow.tcp_flags_ts
        tc_flags = flow.tcp_flags_tc
        both = ts_flags | tc_flags
        tcp: dict[str, Any] = {
            "tcp_flags": f"{both:02x}",
            "tcp_flags_ts": f"{ts_flags:02x}",
            "tcp_flags_tc": f"{tc_flags:02x}",
        }
        for bit, name in (
            (0x02, "syn"),
            (0x01, "fin"),
            (0x04, "rst"),
            (0x08, "psh"),
            (0x10, "ack"),
            (0x20, "urg"),
        ):
            if both & bit:
                tcp[name] = True
        tcp["state"] = TCP_STATE_NAMES[flow.tcp_state]
        health = flow.tcp
        if health is not None:  # a control flow the flood detector watched (agent.detectors.tcp_health)
            tcp["retransmissions"] = health.retransmissions
            tcp["duplicate_acks"] = health.duplicate_acks
            tcp["zero_windows"] = health.zero_windows
        fields["tcp"] = tcp
    elif flow.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        fields["icmp_type"] = flow.icmp_type
        fields["icmp_code"] = flow.icmp_code
    return Event("flow", flow.first_ts, fields)


def ot_event(msg: OtMessage, sources: list[str] | None) -> Event:
    """An application message: the protocol's own object plus the shared ``ot`` summary."""
    fields = flow_header(msg.flow, sources, msg.pcap_cnt, msg.source)
    fields[msg.protocol] = msg.fields
    ot: dict[str, Any] = {
        "protocol": msg.protocol,
        "operation": msg.operation,
        "direction": msg.direction,
        "function": msg.function,
    }
    if msg.direction == RESPONSE:
        if msg.request_cnt:
            ot["request_pcap_cnt"] = msg.request_cnt
        if msg.latency_s is not None:
            ot["latency_s"] = round(msg.latency_s, 6)
    if msg.exception:
        ot["exception"] = True
    fields["ot"] = ot
    return Event("ot", msg.ts, fields)


def anomaly_event(anomaly: Anomaly, sources: list[str] | None) -> Event:
    """An application-layer anomaly (Suricata's ``anomaly`` event with ``type: applayer``)."""
    fields = flow_header(anomaly.flow, sources, anomaly.pcap_cnt, anomaly.source)
    fields["anomaly"] = {"type": "applayer", "layer": anomaly.protocol, "event": anomaly.kind,
                         "detail": anomaly.detail}  # fmt: skip
    return Event("anomaly", anomaly.ts, fields)


def decode_anomaly_event(kind: str, ts: float, cnt: int, source_name: str | None) -> Event:
    """A packet whose headers could not be decoded (no flow: the addresses may be what is broken)."""
    fields: dict[str, Any] = {}
    if source_name is not None:
        fields["pcap_cnt"] = cnt
        fields["pcap_filename"] = source_name
    layer, _, event = kind.partition(".")
    fields["anomaly"] = {"type": "decode", "layer": layer, "event": event}
    return Event("anomaly", ts, fields)


def eve_record(event: Event) -> dict[str, Any]:
    """The EVE line of ``event`` as a dict: header fields first, in Suricata's order."""
    line: dict[str, Any] = {"timestamp": format_timestamp(event.timestamp)}
    fields = event.fields
    if "flow_id" in fields:
        line["flow_id"] = fields["flow_id"]
    line["event_type"] = event.event_type
    line.update(fields)
    return line


_BATCH = 1 << 16  # bytes of lines gathered before one write(2)


class EveSink:
    """Writes events as JSON lines to a file (appended, reopened on ``reopen``) or stdout (``-``).

    Lines are written with ``os.write`` in batches, through a ``Backlog``: when the disk is full the
    lines wait (bounded) and are retried, and the agent keeps monitoring.
    """

    name = "eve"

    def __init__(self, path: str, line_buffered: bool = False, backlog_limit: int = DEFAULT_LIMIT) -> None:
        """``line_buffered`` for live capture, so that a SIEM tailing the file sees events at once."""
        self.path = path
        self._fd = -1
        self._owned = path != "-"
        self._open()
        self._line_buffered = line_buffered
        self._dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self._batch: list[str] = []
        self._batch_len = 0
        self.written = 0  # lines handed to the backlog
        self.reopened = 0
        self.backlog = Backlog(f"EVE {path}", self._write, backlog_limit)

    def _open(self) -> None:
        if self._owned:
            # Append, as Suricata does: restarting the agent must not destroy earlier evidence.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        else:
            sys.stdout.flush()
            self._fd = sys.stdout.fileno()

    def _write(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def emit(self, event: Event) -> None:
        line = self._dumps(eve_record(event)) + "\n"
        self.written += 1
        if self._line_buffered:
            self.backlog.put(line.encode())
            return
        self._batch.append(line)
        self._batch_len += len(line)
        if self._batch_len >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            data = "".join(self._batch).encode()
            lines = len(self._batch)
            self._batch.clear()
            self._batch_len = 0
            self.backlog.put(data, lines)
        else:
            self.backlog.drain()

    def reopen(self) -> None:
        """After logrotate moved the file: write on into a new file at ``path`` (SIGHUP)."""
        self.flush()
        if self._owned:
            old = self._fd
            try:
                self._open()
            except OSError as e:
                log.warning("cannot reopen EVE output %s: %s; writing on to the old file",
                            self.path, e.strerror)  # fmt: skip
                return
            os.close(old)
            self.reopened += 1

    def close(self) -> None:
        self.flush()
        if self._owned and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def stats(self) -> dict[str, int]:
        counts = self.backlog.stats()
        counts["queued"] += len(self._batch)  # lines gathered for the next write wait too
        return {"events": self.written, **counts}
