"""Reading the peer outputs EXPECTED.tsv lists, and replaying a capture to compare with them.

One reader per format, so that every ``*_expected`` / ``*_ndpi`` corpus test reads the same file the
same way: EXPECTED.tsv rows, Zeek TSV logs (with or without a ``#fields`` header) and ndpiReader's
per-flow reports.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.capture.files import ReplaySource
from agent.decoders.base import OtMessage
from agent.dissect import format_ip
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests.corpus.ot_oracle import CORPUS

PCAPS = CORPUS / "pcaps"
EXPECTED = CORPUS / "expected"

# -- EXPECTED.tsv and INVENTORY.tsv ------------------------------------------------------------------


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def expected_rows() -> list[dict[str, str]]:
    """Every EXPECTED.tsv row (none when the corpus is absent)."""
    path = CORPUS / "EXPECTED.tsv"
    return _tsv(path) if path.exists() else []


def row_pcaps(row: dict[str, str]) -> list[str]:
    """The captures of one EXPECTED.tsv row, relative to pcaps/.

    The column is ";"-separated; "MISSING(reason):path" names a capture that is not in the snapshot.
    """
    return [p.split("):", 1)[-1] for p in row["pcaps"].split(";")]


def rows_comparing(inventory_filter: Callable[[dict[str, str]], bool]) -> set[str]:
    """The EXPECTED.tsv rows (their ``expected`` column) naming a capture that is in the snapshot and
    whose INVENTORY.tsv row passes ``inventory_filter``; skips when the corpus is absent."""
    inventory, expected = CORPUS / "INVENTORY.tsv", CORPUS / "EXPECTED.tsv"
    if not inventory.exists() or not expected.exists():
        pytest.skip("corpus not available")
    captures = {r["path"] for r in _tsv(inventory) if inventory_filter(r)}
    return {
        row["expected"]
        for row in _tsv(expected)
        if any(p in captures and (PCAPS / p).exists() for p in row_pcaps(row))
    }


# -- Zeek ------------------------------------------------------------------------------------------


def zeek_log(path: Path) -> list[dict[str, str]]:
    """The lines of a Zeek TSV log as {column: value}, named by its ``#fields`` header."""
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def zeek_columns(path: Path) -> list[list[str]]:
    """The lines of a Zeek TSV log as lists of values (for btest baselines without a header)."""
    return [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]


# -- nDPI ------------------------------------------------------------------------------------------

# "	1	TCP 172.27.248.109:1578 <-> 172.27.248.79:2404 [VLAN: 12][proto: 245/IEC60870]...
#     [28 pkts/1758 bytes <-> 19 pkts/1297 bytes]..." (IPv6 addresses stand in brackets)
_ENDPOINT = r"\[?(?P<{0}>[0-9a-fA-F:.]+?)\]?:(?P<{0}_port>\d+)"
_NDPI_FLOW = re.compile(
    rf"^\s+\d+\s+(?P<l4>TCP|UDP) {_ENDPOINT.format('src')} <?-> {_ENDPOINT.format('dst')} "
    r"(?:\[VLAN: (?P<vlan>\d+)\])?\[proto: [\d.]+/(?P<proto>[\w.-]+)\].*?"
    r"\[(?P<pkts_ts>\d+) pkts/(?P<bytes_ts>\d+) bytes <?-> (?P<pkts_tc>\d+) pkts/(?P<bytes_tc>\d+) bytes\]",
    re.MULTILINE,
)

FlowKey = tuple[str, int, str, int]  # source address, source port, destination address, port
FlowCounts = tuple[int, int, int, int]  # packets and bytes to the server, packets and bytes back


@dataclass(frozen=True, slots=True)
class NdpiFlow:
    """One flow line of an ndpiReader report."""

    l4: str  # TCP or UDP
    vlan: int  # 0: none
    proto: str  # "master.app" as nDPI names it, e.g. "Modbus.UMAS"
    key: FlowKey
    counts: FlowCounts


def ndpi_flows(report: Path) -> list[NdpiFlow]:
    """Every TCP and UDP flow of an ndpiReader report, in its order."""
    return [
        NdpiFlow(
            l4=m["l4"],
            vlan=int(m["vlan"] or 0),
            proto=m["proto"],
            key=(m["src"], int(m["src_port"]), m["dst"], int(m["dst_port"])),
            counts=(int(m["pkts_ts"]), int(m["bytes_ts"]), int(m["pkts_tc"]), int(m["bytes_tc"])),
        )
        for m in _NDPI_FLOW.finditer(report.read_text())
    ]


def ndpi_counts(report: Path, proto: str) -> dict[FlowKey, FlowCounts]:
    """Packet and byte counts of the flows nDPI names ``proto``, by their endpoints."""
    return {f.key: f.counts for f in ndpi_flows(report) if f.proto == proto}


def our_counts(flows: Iterable[Any], app_proto: str) -> dict[FlowKey, FlowCounts]:
    """The same for our finished flows of one ``app_proto``."""
    return {
        (format_ip(f.src), f.sport, format_ip(f.dst), f.dport): (
            f.pkts_toserver,
            f.bytes_toserver,
            f.pkts_toclient,
            f.bytes_toclient,
        )
        for f in flows
        if f.app_proto == app_proto
    }


# -- our side --------------------------------------------------------------------------------------


class ProtocolRun:
    """Consumer and sink of one replay: one protocol's messages, every finished flow, and that
    protocol's anomalies as (pcap_cnt, kind)."""

    name = "corpus-expected"

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.messages: list[OtMessage] = []
        self.flows: list[Any] = []
        self.anomalies: list[tuple[int, str]] = []

    @property
    def anomaly_kinds(self) -> Counter[str]:
        return Counter(kind for _, kind in self.anomalies)

    def on_flow_end(self, flow: Any, reason: str) -> None:
        self.flows.append(flow)

    def on_message(self, msg: OtMessage) -> None:
        if msg.protocol == self.protocol:
            self.messages.append(msg)

    def emit(self, event: Any) -> None:
        anomaly = event.fields.get("anomaly", {})
        if event.event_type == "anomaly" and anomaly.get("layer") == self.protocol:
            self.anomalies.append((event.fields.get("pcap_cnt", 0), anomaly["event"]))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def run_protocol(
    capture: Path, protocol: str, ports: dict[str, tuple[int, ...]] | None = None, needs: Iterable[Path] = ()
) -> ProtocolRun:
    """Replay ``capture`` with every event on; skips when it, or a peer output in ``needs``, is absent."""
    for path in (capture, *needs):
        if not path.exists():
            pytest.skip(f"corpus file missing: {path}")
    run = ProtocolRun(protocol)
    source = ReplaySource([str(capture)])
    try:
        config = PipelineConfig(events=EVENTS_ALL, ports=ports or {})
        Pipeline(config, sinks=[run], consumers=[run]).run(source)
    finally:
        source.close()
    return run
