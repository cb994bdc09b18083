"""IEC 60870-5-104 flows against nDPI's classification of the same capture (EXPECTED.tsv: nDPI).

The only peer output EXPECTED.tsv lists for an IEC 104 capture is ndpiReader's per-flow report of
nDPI/iec60780-5-104.pcap: six TCP flows to port 2404 detected as IEC60870, with packet and byte
counts per direction. Every one of them must be an ``iec104`` flow for us with the same counts, and
we must not call any other flow of the capture IEC 104.
"""

import re

import pytest

from agent.capture.files import ReplaySource
from agent.pipeline import Pipeline, PipelineConfig
from tests import factory
from tests.corpus.ot_oracle import CORPUS

pytestmark = pytest.mark.corpus

CAPTURE = CORPUS / "pcaps" / "nDPI" / "iec60780-5-104.pcap"
REPORT = CORPUS / "expected" / "nDPI" / "iec60780-5-104.pcap.out"
# TCP 172.27.248.109:1578 <-> 172.27.248.79:2404 [proto: 245/IEC60870]...
#     [28 pkts/1758 bytes <-> 19 pkts/1297 bytes]
FLOW_LINE = re.compile(
    r"TCP (?P<src>[\d.]+):(?P<sport>\d+) <-> (?P<dst>[\d.]+):(?P<dport>\d+) "
    r"\[proto: \d+/(?P<proto>[\w.]+)\].*?"
    r"\[(?P<pkts_ts>\d+) pkts/(?P<bytes_ts>\d+) bytes <-> (?P<pkts_tc>\d+) pkts/(?P<bytes_tc>\d+) bytes\]"
)


def test_iec104_flows_match_ndpi() -> None:
    if not CAPTURE.exists() or not REPORT.exists():
        pytest.skip("corpus not available")
    expected = {}
    for match in FLOW_LINE.finditer(REPORT.read_text()):
        if match["proto"] == "IEC60870":
            key = (match["src"], int(match["sport"]), match["dst"], int(match["dport"]))
            expected[key] = tuple(int(match[k]) for k in ("pkts_ts", "bytes_ts", "pkts_tc", "bytes_tc"))
    assert len(expected) == 6

    collector = factory.Collector()
    source = ReplaySource([str(CAPTURE)])
    try:
        Pipeline(PipelineConfig(), consumers=[collector]).run(source)
    finally:
        source.close()
    ours = {}
    for flow in collector.flows:
        if flow.app_proto == "iec104":
            key = (_ip(flow.src), flow.sport, _ip(flow.dst), flow.dport)
            ours[key] = (flow.pkts_toserver, flow.bytes_toserver, flow.pkts_toclient, flow.bytes_toclient)
    assert ours == expected


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)
