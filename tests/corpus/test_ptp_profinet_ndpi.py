"""PTP and PROFINET IO-CM flows against nDPI's classification of the same captures (EXPECTED.tsv).

ndpiReader lists nDPI/ptpv2.pcap (PTPv2 over IPv6 UDP 319/320) and nDPI/profinet-io-le.pcap
(DCERPC.PROFINET_IO on UDP 34964, little-endian). Every flow nDPI names so must carry our
``ptp`` / ``pn-cm`` with the same packet counts (compared without direction: the initiator of a
UDP flow is whoever spoke first), and no other flow of the capture may.
"""

import ipaddress

import pytest

from tests.corpus.expected import EXPECTED, PCAPS, ndpi_flows
from tests.corpus.ot_oracle import collect

pytestmark = pytest.mark.corpus


def _endpoints(a: str, pa: int, b: str, pb: int) -> frozenset[tuple[str, int]]:
    return frozenset({(str(ipaddress.ip_address(a)), pa), (str(ipaddress.ip_address(b)), pb)})


@pytest.mark.parametrize(
    ("capture", "ndpi_proto", "ours"),
    [("ptpv2.pcap", "PTPv2", "ptp"), ("profinet-io-le.pcap", "DCERPC.PROFINET_IO", "pn-cm")],
)
def test_flows_match_ndpi(capture: str, ndpi_proto: str, ours: str) -> None:
    path = PCAPS / "nDPI" / capture
    report = EXPECTED / "nDPI" / f"{capture}.out"
    if not path.exists() or not report.exists():
        pytest.skip("corpus not available")
    flows = [f for f in ndpi_flows(report) if f.proto == ndpi_proto]
    expected = {_endpoints(*f.key): sorted((f.counts[0], f.counts[2])) for f in flows}
    assert expected
    found = {
        _endpoints(
            str(ipaddress.ip_address(f.src)), f.sport, str(ipaddress.ip_address(f.dst)), f.dport
        ): sorted((f.pkts_toserver, f.pkts_toclient))
        for f in collect(path).flows
        if f.app_proto == ours
    }
    assert found == expected
