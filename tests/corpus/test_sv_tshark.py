"""IEC 61850-9-2 Sampled Values against tshark and ICSNPP: (svID, smpCnt) of every ASDU."""

from pathlib import Path

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import CORPUS, assert_agreement, captures_with, compare_protocol, our_messages

pytestmark = pytest.mark.corpus

CAPTURE = CORPUS / "pcaps" / "icsnpp-iec61850-sv" / "SV_Normal_Traffic.pcap"
EXPECTED = CORPUS / "expected" / "icsnpp-iec61850-sv" / "Baseline" / "tests.test-SV_Normal_Traffic" / "sv.log"


def _captures() -> list[Path]:
    captures = captures_with("SV")
    if not captures:
        pytest.skip("corpus not available")
    return captures


def _theirs(values: list[str]) -> list[str]:
    """One code per frame: every ASDU's svID/smpCnt, in order (a frame may carry several ASDUs)."""
    if not values or not values[0]:
        return []
    pairs = zip(values[0].split(","), values[1].split(","), strict=True)
    return [",".join(f"{sv_id}/{cnt}" for sv_id, cnt in pairs)]


def _ours(msg: OtMessage) -> str:
    return ",".join(f"{a['sv_id']}/{a['smp_cnt']}" for a in msg.fields["asdus"])


def test_sv_ids_and_sample_counts_match_tshark() -> None:
    result = compare_protocol(
        "sv",
        _captures(),
        "sv",
        _theirs,
        our_code=_ours,  # type: ignore[arg-type]
        tshark_field_names=["sv.svID", "sv.smpCnt"],
    )
    assert_agreement(result)


def test_sv_matches_icsnpp_log() -> None:
    if not EXPECTED.exists():
        pytest.skip("ICSNPP SV baseline not in the corpus")
    lines = [line for line in EXPECTED.read_text().splitlines() if line and not line.startswith("#")]
    header = next(line for line in EXPECTED.read_text().splitlines() if line.startswith("#fields")).split(
        "\t"
    )[1:]
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in lines]
    ours = [m for _, ms in sorted(our_messages(CAPTURE, "sv").items()) for m in ms]
    assert len(ours) == len(rows)
    for row, msg in zip(rows, ours, strict=True):
        assert (row["sv_id"], int(row["smpCnt"]), int(row["appid"], 0)) == (
            msg.fields["sv_id"],
            msg.fields["smp_cnt"],
            msg.fields["appid"],
        )
