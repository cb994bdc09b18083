"""Every corpus capture replays without a crash, and is read frame for frame.

Oracle: INVENTORY.tsv, whose packet and link type columns are what tshark 4.0 (capinfos) reported
for each capture. The reader must yield exactly that many frames from every capture (it does not
care about link types); the pipeline must count them all, dissect those of supported link types and
count the others as unsupported; the CLI, run as a user runs it on each source directory of the
corpus, must end with exit code 0, or 1 naming the damaged file and byte offset, never a traceback.

Where a capture legitimately departs from that, it is listed below with what its bytes show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.capture.files import ReplaySource
from agent.flows import Flow
from agent.pipeline import Pipeline, PipelineConfig
from tests.corpus.conftest import SUPPORTED_LINKTYPES, UNSUPPORTED_LINKTYPES, Capture, load_inventory

# Captures that cannot be read to their end: path -> (reason prefix, byte offset, what the bytes show).
KNOWN_CAPTURE_PROBLEMS: dict[str, tuple[str, int, str]] = {
    "ICS-Security-Tools/MELSEC/melsoft_129_clean.pcap": (
        "truncated packet record",
        331665,
        "the file is 331776 bytes (81 x 4096: cut at a 4 KiB boundary); the record header at byte "
        "331665 announces 157 bytes of which 95 remain. capinfos also counts 2041 packets and says "
        "the file 'appears to have been cut short in the middle of a packet'",
    ),
}

# Captures with frames our dissector counts as malformed: path -> (count, what the bytes show).
KNOWN_MALFORMED: dict[str, tuple[int, str]] = {
    "zeek/modbus/fuzz-1011.pcap": (
        1,
        "a fuzzer's output: frame 2 has ethertype IPv4 but IP version 2 (tshark: 'Bogus IPv4 "
        "version (2, must be 4)')",
    ),
}

SOURCES = sorted({c.source for c in load_inventory()})


# ---------------------------------------------------------------------------------------------
# The inventory itself


def test_every_link_type_is_classified(inventory: tuple[Capture, ...]) -> None:
    """A link type new to the corpus must be put in one of the lists, not silently left out."""
    names = {c.linktype for c in inventory}
    unknown = names - SUPPORTED_LINKTYPES - UNSUPPORTED_LINKTYPES
    assert not unknown, f"INVENTORY link types neither supported nor known unsupported: {sorted(unknown)}"
    assert names & SUPPORTED_LINKTYPES


def test_known_exceptions_name_corpus_captures(inventory: tuple[Capture, ...]) -> None:
    paths = {c.path for c in inventory}
    stale = (set(KNOWN_CAPTURE_PROBLEMS) | set(KNOWN_MALFORMED)) - paths
    assert not stale, f"known exceptions for captures that are not in the corpus: {sorted(stale)}"


# ---------------------------------------------------------------------------------------------
# In process, per capture


def test_reader_yields_inventory_frame_count(corpus_capture: Capture) -> None:
    frames = 0
    with ReplaySource([str(corpus_capture.file)]) as source:
        for _frame in source:
            frames += 1
        problems = source.problems
    assert frames == corpus_capture.packets, (
        f"{corpus_capture.path}: read {frames} frames, INVENTORY (tshark) says {corpus_capture.packets}"
    )
    known = KNOWN_CAPTURE_PROBLEMS.get(corpus_capture.path)
    if known is None:
        assert not problems, f"unexpected capture problem: {[str(p) for p in problems]}"
    else:
        reason, offset, _why = known
        assert len(problems) == 1, [str(p) for p in problems]
        assert problems[0].reason.startswith(reason)
        assert problems[0].offset == offset
        assert problems[0].packets_read == corpus_capture.packets


class _FlowTotals:
    """A FlowConsumer adding up the packets of every ended flow record."""

    def __init__(self) -> None:
        self.flows = 0
        self.packets = 0

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        self.flows += 1
        self.packets += flow.pkts_toserver + flow.pkts_toclient

    def on_message(self, msg: object) -> None:
        return None


def test_pipeline_counts_every_frame(corpus_capture: Capture) -> None:
    totals = _FlowTotals()
    pipeline = Pipeline(PipelineConfig(), consumers=[totals])
    with ReplaySource([str(corpus_capture.file)]) as source:
        stats = pipeline.run(source)
    path = corpus_capture.path
    assert stats.packets == corpus_capture.packets, (
        f"{path}: INVENTORY (tshark) says {corpus_capture.packets}"
    )
    table = pipeline.flows
    assert len(table) == 0, "flows left in the table after the run"
    assert table.created == table.ended == totals.flows
    # Every dissected IP packet, and every non-IP Ethernet frame but ARP, is accounted to exactly one
    # flow record (IP or L2).
    assert totals.packets == stats.ip_packets + stats.l2_flow_packets
    if corpus_capture.supported:
        assert stats.unsupported_link == 0, f"{path}: {stats.unsupported_linktypes}"
        expected_malformed = KNOWN_MALFORMED.get(path, (0, ""))[0]
        assert stats.malformed == expected_malformed, (
            f"{path}: {stats.malformed} malformed frames, anomalies {pipeline.dissector.anomalies}"
        )
    else:
        assert stats.unsupported_link == stats.packets
        assert stats.ip_packets == 0
        assert table.created == 0


# ---------------------------------------------------------------------------------------------
# The CLI, as a subprocess, one run per source directory (many files merged in time order)


@dataclass
class CliRun:
    source: str
    returncode: int
    stderr: str
    events: list[dict[str, Any]]
    captures: list[Capture]

    @property
    def stats(self) -> dict[str, Any]:
        return self.events[-1]["stats"]


def _cli_env() -> dict[str, str]:
    # No CONDUITWATCH_* settings from the caller's environment (they are option defaults), and
    # no CONDUITWATCH_DEBUG, which turns an internal error into a traceback.
    return {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}


@pytest.fixture(scope="module")
def replay_source(
    corpus: Path, inventory: tuple[Capture, ...], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], CliRun]:
    runs: dict[str, CliRun] = {}

    def run(source: str) -> CliRun:
        if source not in runs:
            eve = tmp_path_factory.mktemp("eve") / f"{source}.json"
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "replay",
                    str(corpus / "pcaps" / source),
                    "--eve",
                    str(eve),
                    "-q",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=_cli_env(),
            )
            events = []
            if eve.exists():
                with eve.open(encoding="utf-8") as f:
                    events = [json.loads(line) for line in f]
            captures = [c for c in inventory if c.source == source]
            runs[source] = CliRun(source, proc.returncode, proc.stderr, events, captures)
        return runs[source]

    return run


@pytest.mark.parametrize("source", SOURCES)
def test_cli_replays_source_directory(source: str, replay_source: Callable[[str], CliRun]) -> None:
    run = replay_source(source)
    assert "Traceback" not in run.stderr, run.stderr
    assert "internal error" not in run.stderr, run.stderr
    assert run.returncode in (0, 1), run.stderr

    damaged = {c.path for c in run.captures if c.path in KNOWN_CAPTURE_PROBLEMS}
    named: set[str] = set()
    for line in run.stderr.splitlines():
        if not line.startswith("conduitwatch: error: "):
            continue
        assert "byte offset" in line, line
        message = line.removeprefix("conduitwatch: error: ")
        named_here = [c.path for c in run.captures if message.startswith(f"{c.file}: ")]
        assert named_here, f"error line names no capture of {source}: {line}"
        rel = named_here[0]
        assert rel in damaged, f"error for a capture not known to be damaged: {line}"
        reason, offset, _why = KNOWN_CAPTURE_PROBLEMS[rel]
        assert f": {reason}" in line and f"at byte offset {offset} " in line, line
        named.add(rel)
    assert named == damaged, f"damaged captures not reported: {sorted(damaged - named)}"
    assert run.returncode == (1 if damaged else 0), run.stderr

    # The EVE output: valid JSON lines (flow, anomaly, ... events), the stats event last.
    assert run.events, "no EVE output"
    assert [e["event_type"] for e in run.events].count("stats") == 1
    assert run.events[-1]["event_type"] == "stats"
    flows = [e for e in run.events if e["event_type"] == "flow"]
    stats = run.stats
    assert stats["capture"]["packets"] == sum(c.packets for c in run.captures)
    unsupported = sum(c.packets for c in run.captures if not c.supported)
    assert stats["capture"]["unsupported_link_packets"] == unsupported
    assert len(flows) == stats["flow"]["created"] == stats["flow"]["ended"]
    assert stats["flow"]["active"] == 0
    assert (
        sum(e["flow"]["pkts_toserver"] + e["flow"]["pkts_toclient"] for e in flows)
        == stats["decoder"]["ip"] + stats["decoder"]["link_layer_flows"]
    )
    files = {str(c.file) for c in run.captures}
    assert {e["pcap_filename"] for e in flows} <= files


@pytest.mark.parametrize(
    "source", sorted({path.split("/", 1)[0] for path in KNOWN_CAPTURE_PROBLEMS} & set(SOURCES))
)
def test_cli_stats_event_lists_capture_problems(source: str, replay_source: Callable[[str], CliRun]) -> None:
    """The stats event names damaged captures too (it once missed them: a snapshot taken before the run)."""
    run = replay_source(source)
    problems = run.stats["capture"]["problems"]
    for capture in run.captures:
        if capture.path in KNOWN_CAPTURE_PROBLEMS:
            offset = KNOWN_CAPTURE_PROBLEMS[capture.path][1]
            assert any(str(capture.file) in p and f"byte offset {offset} " in p for p in problems), problems
