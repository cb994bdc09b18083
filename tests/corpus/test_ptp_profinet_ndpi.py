"""PTP and PROFINET IO-CM flows against nDPI's classification of the same captures (EXPECTED.tsv).

ndpiReader lists nDPI/ptpv2.pcap (PTPv2 over IPv6 UDP 319/320) and nDPI/profinet-io-le.pcap
(DCERPC.PROFINET_IO on UDP 34964, little-endian). Every flow nDPI names so must carry our
``ptp`` / ``pn-cm`` with the same packet counts (compared without direction: the initiator of a
UDP flow is whoever spoke first), and no other flow of the capture may.
"""

import ipaddress
import re
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.pipeline import Pipeline, PipelineConfig
from tests import factory
from tests.corpus.ot_oracle import CORPUS

pytestmark = pytest.mark.corpus

FLOW_LINE = re.compile(
    r"UDP \[?(?P<src>[\w.:]+?)\]?:(?P<sport>\d+) <?-> \[?(?P<dst>[\w.:]+?)\]?:(?P<dport>\d+) "
    r"\[proto: [\d.]+/(?P<proto>[\w.]+)\].*?"
    r"\[(?P<pkts_a>\d+) pkts/\d+ bytes <?-> (?P<pkts_b>\d+) pkts/\d+ bytes\]"
)


def _endpoints(a: str, pa: int, b: str, pb: int) -> frozenset[tuple[str, int]]:
    return frozenset({(str(ipaddress.ip_address(a)), pa), (str(ipaddress.ip_address(b)), pb)})


@pytest.mark.parametrize(
    ("capture", "ndpi_proto", "ours"),
    [("ptpv2.pcap", "PTPv2", "ptp"), ("profinet-io-le.pcap", "DCERPC.PROFINET_IO", "pn-cm")],
)
def test_flows_match_ndpi(capture: str, ndpi_proto: str, ours: str) -> None:
    path: Path = CORPUS / "pcaps" / "nDPI" / capture
    report = CORPUS / "expected" / "nDPI" / f"{capture}.out"
    if not path.exists() or not report.exists():
        pytest.skip("corpus not available")
    expected = {
        _endpoints(m["src"], int(m["sport"]), m["dst"], int(m["dport"])): sorted(
            (int(m["pkts_a"]), int(m["pkts_b"]))
        )
        for m in FLOW_LINE.finditer(report.read_text())
        if m["proto"] == ndpi_proto
    }
    assert expected
    collector = factory.Collector()
    with ReplaySource([str(path)]) as source:
        Pipeline(PipelineConfig(), consumers=[collector]).run(source)
    found = {
        _endpoints(
            str(ipaddress.ip_address(f.src)), f.sport, str(ipaddress.ip_address(f.dst)), f.dport
        ): sorted((f.pkts_toserver, f.pkts_toclient))
        for f in collector.flows
        if f.app_proto == ours
    }
    assert found == expected
