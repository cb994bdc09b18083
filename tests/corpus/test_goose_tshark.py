"""IEC 61850 GOOSE against tshark and ICSNPP, frame by frame (see ot_oracle).

The code compared per frame is (APPID, stNum, sqNum): the publisher, the state and the repetition,
which is what the cyclic bookkeeping for the control-health work is built on.
"""

from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.decoders.base import OtMessage
from agent.pipeline import Pipeline, PipelineConfig
from agent.records import Event
from tests.corpus.ot_oracle import CORPUS, assert_agreement, captures_with, compare_protocol, our_messages

pytestmark = pytest.mark.corpus

EXPECTED = CORPUS / "expected" / "icsnpp-iec61850-goose" / "Baseline"


def _captures() -> list[Path]:
    captures = captures_with("GOOSE")
    if not captures:
        pytest.skip("corpus not available")
    return captures


def _theirs(values: list[str]) -> list[tuple[int, int, int]]:
    if not values or not values[1]:
        return []
    return [(int(values[0], 0), int(values[1]), int(values[2]))]


def _ours(msg: OtMessage) -> tuple[int, int, int] | None:
    f = msg.fields
    return (f["appid"], f["st_num"], f["sq_num"]) if "st_num" in f and "sq_num" in f else None


def test_goose_appid_stnum_sqnum_match_tshark() -> None:
    result = compare_protocol(
        "goose",
        _captures(),
        "goose.goosePdu_element",
        _theirs,
        our_code=_ours,  # type: ignore[arg-type]
        tshark_field_names=["goose.appid", "goose.stNum", "goose.sqNum"],
    )
    assert_agreement(result)


class _Events:
    name = "events"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def _anomalies(path: Path) -> list[Event]:
    sink = _Events()
    source = ReplaySource([str(path)])
    try:
        Pipeline(PipelineConfig(), sinks=[sink]).run(source)
    finally:
        source.close()
    return sink.events


def _icsnpp_rows(test: str) -> list[dict[str, str]]:
    path = EXPECTED / test / "goose.log"
    lines = [
        line
        for line in path.read_text().splitlines()
        if not line.startswith("#") or line.startswith("#fields")
    ]
    header = lines[0].split("\t")[1:]
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


@pytest.mark.parametrize(
    ("test", "capture"),
    [
        ("tests.test-GOOSE", "GOOSE.pcap"),
        ("tests.test-GOOSE-missing-conf-rev", "GOOSE_missing_conf_rev.pcap"),
        ("tests.test-GOOSE-missing-dataset", "GOOSE_missing_dataset.pcap"),
        ("tests.test-GOOSE-missing-go-id", "GOOSE_missing_go_id.pcap"),
        ("tests.test-GOOSE-missing-gocb-ref", "GOOSE_missing_gocb_ref.pcap"),
        ("tests.test-GOOSE-missing-num-dat-set-entries", "GOOSE_missing_num_dat_set_entries.pcap"),
        ("tests.test-GOOSE-missing-timestamp", "GOOSE_missing_timestamp.pcap"),
    ],
)
def test_goose_fields_match_icsnpp(test: str, capture: str) -> None:
    """ICSNPP's goose.log field by field; "-" (unset) there is a field we must not report either."""
    rows = _icsnpp_rows(test)
    anomalies = _anomalies(CORPUS / "pcaps" / "icsnpp-iec61850-goose" / capture)
    frames = our_messages(CORPUS / "pcaps" / "icsnpp-iec61850-goose" / capture, "goose")
    ours = [m.fields for _, ms in sorted(frames.items()) for m in ms]
    assert len(ours) == len(rows)
    names = {
        "gocb_ref": "gocb_ref",
        "time_allowed_to_live": "time_allowed_to_live",
        "dataset": "dat_set",
        "go_id": "go_id",
        "st_num": "st_num",
        "sq_num": "sq_num",
        "conf_rev": "conf_rev",
        "num_dat_set_entries": "num_dat_set_entries",
        "length": "length",
    }
    for row, fields in zip(rows, ours, strict=True):
        assert int(row["appid"], 16) == fields["appid"]
        partial = row["parse_error"] == "missing_required_field"
        for theirs, mine in names.items():
            # ICSNPP logs a missing field as unset, or (when it calls the PDU partial) as its default.
            if row[theirs] == "-" or (partial and row[theirs] in ("0", "(empty)")):
                assert mine not in fields, (capture, mine)
            else:
                assert str(fields[mine]) == row[theirs], (capture, mine)
        assert (row["simulation"] == "T") == fields.get("simulation", False)
    kinds = [a.fields["anomaly"]["event"] for a in anomalies if a.event_type == "anomaly"]
    if any(row["parse_error"] == "missing_required_field" for row in rows):
        assert "missing_field" in kinds
