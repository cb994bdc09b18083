"""IEC 60870-5-104 flows against nDPI's classification of the same capture (EXPECTED.tsv: nDPI).

The only peer output EXPECTED.tsv lists for an IEC 104 capture is ndpiReader's per-flow report of
nDPI/iec60780-5-104.pcap: six TCP flows to port 2404 detected as IEC60870, with packet and byte
counts per direction. Every one of them must be an ``iec104`` flow for us with the same counts, and
we must not call any other flow of the capture IEC 104.
"""

import pytest

from tests.corpus.expected import EXPECTED, PCAPS, ndpi_counts, our_counts
from tests.corpus.ot_oracle import collect

pytestmark = pytest.mark.corpus

CAPTURE = PCAPS / "nDPI" / "iec60780-5-104.pcap"
REPORT = EXPECTED / "nDPI" / "iec60780-5-104.pcap.out"


def test_iec104_flows_match_ndpi() -> None:
    if not CAPTURE.exists() or not REPORT.exists():
        pytest.skip("corpus not available")
    expected = ndpi_counts(REPORT, "IEC60870")
    assert len(expected) == 6
    assert our_counts(collect(CAPTURE).flows, "iec104") == expected
