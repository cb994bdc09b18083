"""PROFINET against tshark and ICSNPP (see ot_oracle).

* RT frames (EtherType 0x8892): the frame id of every frame (``pn_rt.frame_id``), which says
  cyclic class, alarm, DCP service or PTCP; and the DCP service id (``pn_dcp.service_id``).
* IO-CM over DCE/RPC: the operation number of every request, response, fault and reject
  (``dcerpc.opnum``, first fragments only: a fragmented call is one message for us).
* ICSNPP's profinet_io_cm.log: the same calls counted by packet type and operation.
"""

from collections import Counter
from pathlib import Path

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import CORPUS, assert_agreement, captures_with, compare_protocol, our_messages

pytestmark = pytest.mark.corpus

BASELINE = CORPUS / "expected" / "icsnpp-profinet-io-cm" / "baseline"
ICSNPP_TYPES = {"Request": "request", "Response": "response"}


def _rt_captures() -> list[Path]:
    captures = captures_with("PN_RT")
    if not captures:
        pytest.skip("corpus not available")
    return captures


def _cm_captures() -> list[Path]:
    captures = sorted(set(captures_with("PN_IO_DEVICE")) | set(captures_with("PN_IO_CONTROLLER")))
    if not captures:
        pytest.skip("corpus not available")
    return captures


def _ints(values: list[str]) -> list[int]:
    return [int(v, 0) for v in values[0].split(",") if v] if values else []


def _dcp_service(msg: OtMessage) -> int | None:
    return msg.fields.get("service_id")


def test_profinet_frame_ids_match_tshark() -> None:
    result = compare_protocol(
        "profinet", _rt_captures(), "pn_rt", _ints, tshark_field_names=["pn_rt.frame_id"]
    )
    assert_agreement(result)


def test_dcp_service_ids_match_tshark() -> None:
    result = compare_protocol(
        "profinet",
        _rt_captures(),
        "pn_dcp",
        _ints,
        our_code=_dcp_service,
        tshark_field_names=["pn_dcp.service_id"],
    )
    assert_agreement(result)


def test_io_cm_opnums_match_tshark() -> None:
    kinds = " || ".join(f"dcerpc.pkt_type == {t}" for t in (0, 2, 3, 6))  # request, response, fault, reject
    display = f"udp && dcerpc.dg_frag_num == 0 && ({kinds})"
    result = compare_protocol("pn-cm", _cm_captures(), display, _ints, tshark_field_names=["dcerpc.opnum"])
    assert_agreement(result)


@pytest.mark.parametrize(
    ("test", "capture"),
    [
        ("tests.profinet_io_cm", "profinet_io_cm.pcap"),
        ("tests.profinet_io_cm_connect", "profinet_io_cm_connect.pcapng"),
        ("tests.profinet_io_cm_connect_minimal", "profinet_io_cm_connect_minimal.pcapng"),
        ("tests.profinet_io_cm_control", "profinet_io_cm_control.pcapng"),
        ("tests.profinet_io_cm_device", "profinet_io_cm_device.pcapng"),
        ("tests.profinet_io_cm_mixed_1", "profinet_io_cm_mixed_1.pcap"),
        ("tests.profinet_io_cm_mixed_2", "profinet_io_cm_mixed_2.pcapng"),
        ("tests.profinet_io_cm_write", "profinet_io_cm_write.pcapng"),
    ],
)
def test_io_cm_calls_match_icsnpp(test: str, capture: str) -> None:
    """Requests and responses by operation; ICSNPP also logs later fragments, pings and acks."""
    theirs: Counter[tuple[str, str]] = Counter()
    for line in (BASELINE / test / "profinet_io_cm.log").read_text().splitlines():
        cols = line.split("\t")
        # packet type (11th column), operation (32nd), fragment number (36th); see the log's writer
        if len(cols) > 36 and cols[10] in ICSNPP_TYPES and cols[35] == "0":
            theirs[(ICSNPP_TYPES[cols[10]], cols[31].lower().replace(" ", "_"))] += 1
    frames = our_messages(CORPUS / "pcaps" / "icsnpp-profinet-io-cm" / "traces" / capture, "pn-cm")
    ours = Counter((m.direction, m.fields["operation_name"]) for ms in frames.values() for m in ms)
    assert ours == theirs and sum(theirs.values()) > 0


def test_io_cm_pairs_every_answered_call_in_real_captures() -> None:
    frames = our_messages(
        CORPUS / "pcaps" / "icsnpp-profinet-io-cm" / "traces" / "profinet_io_cm.pcap", "pn-cm"
    )
    messages = [m for _, ms in sorted(frames.items()) for m in ms]
    responses = [m for m in messages if m.direction == "response"]
    requests = {
        (m.fields["activity_uuid"], m.fields["seq_num"]): m for m in messages if m.direction == "request"
    }
    unpaired = [m for m in responses if not m.request_cnt]
    assert len(responses) == 469 and len(unpaired) < 10
    for response in unpaired:
        # This capture splices sessions: these answers come over an hour after their request in
        # packet time, past the 30 s request timeout, or their request is not in the file.
        request = requests.get((response.fields["activity_uuid"], response.fields["seq_num"]))
        assert request is None or response.ts - request.ts > 30 or request.pcap_cnt > response.pcap_cnt
    operations = Counter(m.operation for ms in frames.values() for m in ms)
    assert set(operations) == {"session", "read", "write", "config"}


def test_dcp_identify_response_yields_identity() -> None:
    path = CORPUS / "pcaps" / "icsnpp-profinet-io-cm" / "traces" / "profinet_io_cm_mixed_1.pcap"
    identities = [
        m.fields["identity"]
        for ms in our_messages(path, "profinet").values()
        for m in ms
        if "identity" in m.fields
    ]
    assert identities == [
        {
            "name": "versamax-pns11",
            "product": "IC200PNS001",
            "vendor_id": 346,
            "product_code": 3,
            "role_hint": "io-device",
        }
    ]
