"""Differential testing of the industrial decoders against tshark, packet by packet.

For one protocol: every corpus capture whose inventory names it is replayed through our pipeline
(in-process, all decoders on) and dissected by tshark with ``-T fields``. For each frame, the
multiset of the protocol's primary codes (function code, service, type id, ...) must be the same.
Frames where the two disagree are listed in ``known_disagreements/<protocol>.tsv`` with a reason
(tshark wrong, capture damaged, or a known limit of ours); the test fails on any disagreement
not listed there and on any listed entry that no longer disagrees, and requires at least 99%
agreement over all tshark-decoded messages.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.decoders.base import OtMessage
from agent.flows import Flow
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory

CORPUS = Path(
    os.environ.get("CONDUITWATCH_CORPUS", Path(__file__).resolve().parents[3] / "shared" / "corpus")
)
KNOWN = Path(__file__).with_name("known_disagreements")


def captures_where(wanted: Callable[[dict[str, str]], bool]) -> list[Path]:
    """Corpus captures whose INVENTORY.tsv row passes ``wanted`` (none when the corpus is absent)."""
    inventory = CORPUS / "INVENTORY.tsv"
    if not inventory.exists():
        return []
    with inventory.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [CORPUS / "pcaps" / r["path"] for r in rows if wanted(r)]


def captures_with(protocol_token: str) -> list[Path]:
    """Corpus captures whose tshark protocol hierarchy (INVENTORY.tsv) contains ``*TOKEN*``."""
    return captures_where(lambda row: f"*{protocol_token}*(" in row["protocols"])


class _Collector:
    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.by_frame: dict[int, list[OtMessage]] = defaultdict(list)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        return None

    def on_message(self, msg: OtMessage) -> None:
        if msg.protocol == self.protocol:
            self.by_frame[msg.pcap_cnt].append(msg)


def our_messages(
    path: Path, protocol: str, ports: dict[str, tuple[int, ...]] | None = None
) -> dict[int, list[OtMessage]]:
    """Our decoded messages of ``protocol`` by frame number."""
    collector = _Collector(protocol)
    config = PipelineConfig(events=EVENTS_ALL, ports=ports or {})
    pipeline = Pipeline(config, consumers=[collector])
    source = ReplaySource([str(path)])
    try:
        pipeline.run(source)
    finally:
        source.close()
    return collector.by_frame


def collect(capture: Path, ports: dict[str, tuple[int, ...]] | None = None) -> factory.Collector:
    """Every message and finished flow of one capture (skips when the capture is absent)."""
    if not capture.exists():
        pytest.skip("corpus not available")
    collector = factory.Collector()
    source = ReplaySource([str(capture)])
    try:
        Pipeline(PipelineConfig(ports=ports or {}), consumers=[collector]).run(source)
    finally:
        source.close()
    return collector


def tshark_fields(
    path: Path, display_filter: str, fields: Iterable[str], extra: Iterable[str] = ()
) -> dict[int, list[str]]:
    """frame number -> the field values (tshark's comma-separated occurrences, in field order)."""
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("CONDUITWATCH_REQUIRE_TOOLS") == "1":
            pytest.fail("tshark is required (CONDUITWATCH_REQUIRE_TOOLS=1) but not installed")
        pytest.skip("tshark not installed")
    cmd = [
        tshark,
        "-r",
        str(path),
        "-n",
        "-Y",
        display_filter,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-e",
        "frame.number",
    ]
    for name in fields:
        cmd += ["-e", name]
    cmd += list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    result: dict[int, list[str]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if parts and parts[0].isdigit():
            result[int(parts[0])] = parts[1:]
    return result


@dataclass
class Comparison:
    protocol: str
    total: int = 0  # messages tshark decoded
    agreed: int = 0
    # (capture relative path, frame) -> (ours, theirs)
    disagreements: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)

    def add(self, capture: str, frame: int, ours: Counter[int], theirs: Counter[int]) -> None:
        self.total += sum(theirs.values())
        self.agreed += sum((ours & theirs).values())
        if ours != theirs:
            self.disagreements[(capture, frame)] = (_fmt(ours), _fmt(theirs))

    @property
    def agreement(self) -> float:
        return self.agreed / self.total if self.total else 1.0


def _fmt(codes: Counter[int]) -> str:
    return ",".join(str(c) for c in sorted(codes.elements())) or "-"


def compare_protocol(
    protocol: str,
    captures: Iterable[Path],
    display_filter: str,
    tshark_codes: Callable[[list[str]], list[int]],
    our_code: Callable[[OtMessage], int | None] = lambda m: m.function,
    ports: dict[str, tuple[int, ...]] | None = None,
    extra: Iterable[str] = (),
    tshark_field_names: Iterable[str] = (),
) -> Comparison:
    """Compare per-frame code multisets over ``captures``; see the module docstring."""
    result = Comparison(protocol)
    for path in captures:
        rel = str(path.relative_to(CORPUS / "pcaps"))
        theirs_by_frame = tshark_fields(path, display_filter, tshark_field_names, extra)
        ours_by_frame = our_messages(path, protocol, ports)
        for frame in sorted(set(theirs_by_frame) | set(ours_by_frame)):
            theirs = Counter(tshark_codes(theirs_by_frame.get(frame, [])))
            ours = Counter(c for m in ours_by_frame.get(frame, []) if (c := our_code(m)) is not None)
            if theirs or ours:
                result.add(rel, frame, ours, theirs)
    return result


def load_known(protocol: str) -> dict[tuple[str, int], str]:
    """Listed disagreements: capture, frame, ours, tshark, reason (tab-separated, # comments)."""
    path = KNOWN / f"{protocol}.tsv"
    known: dict[tuple[str, int], str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                capture, frame, _ours, _theirs, reason = line.split("\t", 4)
                known[(capture, int(frame))] = reason
    return known


def assert_agreement(result: Comparison, minimum: float = 0.99) -> None:
    known = load_known(result.protocol)
    unexplained = {k: v for k, v in result.disagreements.items() if k not in known}
    stale = sorted(k for k in known if k not in result.disagreements)
    lines = [f"{c}\t{f}\t{o}\t{t}" for (c, f), (o, t) in sorted(unexplained.items())[:40]]
    assert not unexplained, (
        f"{len(unexplained)} {result.protocol} disagreements with tshark not listed in "
        f"known_disagreements/{result.protocol}.tsv (capture, frame, ours, tshark):\n" + "\n".join(lines)
    )
    assert not stale, f"listed disagreements that no longer occur: {stale[:20]}"
    assert result.total > 0, "tshark decoded no messages: wrong filter or no captures"
    assert result.agreement >= minimum, f"agreement {result.agreement:.4f} over {result.total} messages"
