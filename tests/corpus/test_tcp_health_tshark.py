"""TCP retransmissions, duplicate ACKs and zero windows of control flows, against tshark's SEQ/ACK analysis.

Every corpus capture with Modbus, DNP3, S7comm or EtherNet/IP over TCP is replayed with the flood
detector watching control flows; the EVE flow record of each watched flow carries its counts
(``tcp.retransmissions``, ``tcp.duplicate_acks``, ``tcp.zero_windows``). tshark flags frames with
``tcp.analysis.retransmission`` / ``fast_retransmission`` / ``spurious_retransmission`` (one count per
frame whichever it says: they are all data sent again), ``tcp.analysis.duplicate_ack`` and
``tcp.analysis.zero_window``; its counts per connection (by address and port pair) must equal ours for
every watched flow, except the flows listed with a reason in known_disagreements/tcp_health.tsv. A
listed flow that agrees now fails the test too, so the list stays true.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.detectors.floods import FloodDetector
from agent.pipeline import Pipeline, PipelineConfig
from agent.records import Event
from tests.corpus.ot_oracle import CORPUS, KNOWN, captures_with

TOKENS = ("MODBUS", "DNP3", "S7COMM", "ENIP")
RETRANSMITTED = ("tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
                 "tcp.analysis.spurious_retransmission")  # fmt: skip
FIELDS = (
    *RETRANSMITTED,
    "tcp.analysis.out_of_order",
    "tcp.analysis.duplicate_ack",
    "tcp.analysis.zero_window",
)
MIN_FLOWS_WITH_EVENTS = 10  # the comparison must cover flows where something happened, not only zeros

Conversation = tuple[tuple[str, int], tuple[str, int]]


def conversation(a: str, pa: int, b: str, pb: int) -> Conversation:
    first, second = sorted(((a, pa), (b, pb)))
    return first, second


def label(conv: Conversation) -> str:
    (a, pa), (b, pb) = conv
    return f"{a}:{pa}-{b}:{pb}"


class FlowRecords:
    name = "flows"

    def __init__(self) -> None:
        self.counts: dict[Conversation, Counter[str]] = {}

    def emit(self, event: Event) -> None:
        fields = event.fields
        tcp = fields.get("tcp", {})
        if event.event_type != "flow" or "retransmissions" not in tcp:
            return
        conv = conversation(fields["src_ip"], fields["src_port"], fields["dest_ip"], fields["dest_port"])
        seen = self.counts.setdefault(conv, Counter())  # a reused port pair adds up, as in tshark's view
        for name in ("retransmissions", "duplicate_acks", "zero_windows"):
            seen[name] += tcp[name]

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def ours(path: Path) -> dict[Conversation, Counter[str]]:
    records = FlowRecords()
    pipeline = Pipeline(PipelineConfig(), sinks=[records], consumers=[FloodDetector(None, lambda *_a: None)])
    source = ReplaySource([str(path)])
    try:
        pipeline.run(source)
    finally:
        source.close()
    return records.counts


def theirs(tshark: str, path: Path) -> dict[Conversation, Counter[str]]:
    cmd = [tshark, "-n", "-r", str(path), "-Y", " || ".join(FIELDS), "-T", "fields", "-E", "occurrence=f",
           "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
           "-e", "tcp.dstport"]  # fmt: skip
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    result: dict[Conversation, Counter[str]] = {}
    for line in out.splitlines():
        src4, src6, sport, dst4, dst6, dport, *flags = line.split("\t")
        if not sport or not dport:
            continue
        seen = result.setdefault(conversation(src4 or src6, int(sport), dst4 or dst6, int(dport)), Counter())
        retransmitted, out_of_order, dup_ack, zero_window = any(flags[:3]), *map(bool, flags[3:])
        seen["retransmissions"] += retransmitted
        seen["out_of_order"] += out_of_order
        seen["duplicate_acks"] += dup_ack
        seen["zero_windows"] += zero_window
    return result


def triple(counts: Counter[str]) -> str:
    return ",".join(str(counts[k]) for k in ("retransmissions", "duplicate_acks", "zero_windows"))


def load_known() -> dict[tuple[str, str], str]:
    """capture, flow, ours, tshark, reason (tab-separated; # starts a comment)."""
    known: dict[tuple[str, str], str] = {}
    for line in (KNOWN / "tcp_health.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            capture, flow, _ours, _theirs, reason = line.split("\t", 4)
            known[(capture, flow)] = reason
    return known


def captures() -> list[Path]:
    return sorted({p for token in TOKENS for p in captures_with(token)})


def test_control_flow_tcp_counts_agree_with_tshark(tshark: str) -> None:
    paths = captures()
    if not paths:
        pytest.skip("no corpus capture with Modbus, DNP3, S7comm or EtherNet/IP")
    disagreements: dict[tuple[str, str], tuple[str, str]] = {}
    compared = with_events = 0
    for path in paths:
        capture = str(path.relative_to(CORPUS / "pcaps"))
        mine = ours(path)
        tshark_counts = theirs(tshark, path)
        for conv, counts in mine.items():
            other = tshark_counts.get(conv, Counter())
            compared += 1
            if triple(counts) != triple(other):
                disagreements[(capture, label(conv))] = (triple(counts), triple(other))
            elif sum(counts.values()):
                with_events += 1
    known = load_known()
    unexplained = {k: v for k, v in disagreements.items() if k not in known}
    lines = [f"{c}\t{f}\t{o}\t{t}" for (c, f), (o, t) in sorted(unexplained.items())[:40]]
    assert not unexplained, (
        "flows whose retransmissions,duplicate_acks,zero_windows differ from tshark's, not listed in "
        "known_disagreements/tcp_health.tsv (capture, flow, ours, tshark):\n" + "\n".join(lines)
    )
    stale = sorted(k for k in known if k not in disagreements)
    assert not stale, f"listed disagreements that no longer occur: {stale}"
    assert with_events >= MIN_FLOWS_WITH_EVENTS, (compared, with_events)
    assert len(disagreements) <= 0.02 * compared, (len(disagreements), compared)
