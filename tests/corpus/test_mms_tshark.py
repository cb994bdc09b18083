"""IEC 61850 MMS, frame by frame, against tshark (see ot_oracle); port 102 shared with S7comm.

Each MMS PDU is compared as one code: PDU type (the MMSpdu CHOICE tag) << 8, plus the confirmed
service tag for confirmed requests and responses (``mms.confirmedServiceRequest`` /
``mms.confirmedServiceResponse``) or the unconfirmed service (``mms.unconfirmedService``). tshark
marks each PDU type by an element field; a confirmed PDU whose service tshark could not decode
counts as service 0xFF, as does ours when the service element is missing or broken. COTP, session
and ACSE messages without an MMS PDU are not MMS PDUs and are left out.
"""

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import (
    CORPUS,
    assert_agreement,
    captures_with,
    compare_protocol,
    our_messages,
    tshark_fields,
)

pytestmark = pytest.mark.corpus

PDU_FIELDS = [
    "mms.confirmed_RequestPDU_element", "mms.confirmed_ResponsePDU_element", "mms.confirmed_ErrorPDU_element",
    "mms.unconfirmed_PDU_element", "mms.rejectPDU_element", "mms.cancel_RequestPDU", "mms.cancel_ResponsePDU",
    "mms.cancel_ErrorPDU_element", "mms.initiate_RequestPDU_element", "mms.initiate_ResponsePDU_element",
    "mms.initiate_ErrorPDU_element", "mms.conclude_RequestPDU_element", "mms.conclude_ResponsePDU_element",
    "mms.conclude_ErrorPDU_element",
]  # fmt: skip
SERVICE_FIELDS = ["mms.confirmedServiceRequest", "mms.confirmedServiceResponse", "mms.unconfirmedService"]
FIELDS = PDU_FIELDS + SERVICE_FIELDS
NO_SERVICE = 0xFF
# PDU types whose code carries a service, and the service field tshark gives it in.
SERVICE_OF = {0: 0, 1: 1, 3: 2}


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def mms_codes(values: list[str]) -> list[int]:
    """One code per MMS PDU of the frame from tshark's per-field occurrence lists."""
    if not values:
        return []
    pdus = values[: len(PDU_FIELDS)]
    services = [[int(v) for v in _split(s)] for s in values[len(PDU_FIELDS) :]]
    codes = []
    for pdu, occurrences in enumerate(pdus):
        for _ in _split(occurrences):
            code = pdu << 8
            if pdu in SERVICE_OF:
                listed = services[SERVICE_OF[pdu]]
                code |= listed.pop(0) if listed else NO_SERVICE
            codes.append(code)
    return codes


def our_mms_code(msg: OtMessage) -> int | None:
    pdu = msg.fields.get("pdu")
    if pdu is None:  # COTP, session or ACSE without an MMS PDU
        return None
    if pdu in SERVICE_OF:
        return int(pdu) << 8 | msg.fields.get("service", NO_SERVICE)
    return int(pdu) << 8


def test_mms_codes_match_tshark() -> None:
    captures = captures_with("MMS")
    if not captures:
        pytest.skip("corpus not available")
    result = compare_protocol("mms", captures, "mms || pres || ses || cotp", mms_codes, our_code=our_mms_code,
                              tshark_field_names=FIELDS)  # fmt: skip
    assert_agreement(result)


ICCP = "ICS-Security-Tools/IEC61850/8d7c7db0-9804-012b-b2a6-0016cb8cea27.pcap"  # TASE.2 over MMS, both ways
# Operation classes at frames whose tshark decode confirms the service.
CLASS_FRAMES = [
    (ICCP, 20, "mms.confirmedServiceRequest == 4", "read"),
    (ICCP, 59, "mms.confirmedServiceRequest == 5", "write"),
    (ICCP, 35, "mms.confirmedServiceRequest == 1", "discovery"),
    (ICCP, 68, "mms.unconfirmedService == 0", "read"),
    (ICCP, 11, "mms.initiate_RequestPDU_element", "session"),
    ("ICS-Security-Tools/IEC61850/piccolo.pcap", 5, "mms.confirmedServiceRequest == 0", "diagnostic"),
    ("ICS-Security-Tools/IEC61850/MMS_-_Specific_Commands/mms-stopRequest.pcap", 16,
     "mms.confirmedServiceRequest == 41", "mode"),
    ("ICS-Security-Tools/IEC61850/MMS_-_Specific_Commands/mms-initiateDownloadSequence.pcap", 16,
     "mms.confirmedServiceRequest == 26", "program"),
    ("ICS-Security-Tools/IEC61850/MMS_-_Specific_Commands/mms-deleteProgramInvocation.pcap", 12,
     "mms.confirmedServiceRequest == 39", "program"),
    ("ICS-Security-Tools/IEC61850/MMS_-_Specific_Commands/mms-takeControl.pcap", 12,
     "mms.confirmedServiceRequest == 19", "session"),
    ("ICS-Security-Tools/IEC61850/MMS_-_Specific_Commands/mms-getAlarmSummary.pcap", 12,
     "mms.confirmedServiceRequest == 63", "read"),
    ("ICS-Security-Tools/IEC61850/MMS_-_Specific_Commands/mms-initiateUploadSequence.pcap", 12,
     "mms.confirmedServiceRequest == 29", "upload"),
]  # fmt: skip


@pytest.mark.parametrize(("capture", "frame", "tshark_filter", "operation"), CLASS_FRAMES)
def test_operation_classes_on_real_captures(
    capture: str, frame: int, tshark_filter: str, operation: str
) -> None:
    path = CORPUS / "pcaps" / capture
    if not path.exists():
        pytest.skip("corpus not available")
    assert frame in tshark_fields(path, f"frame.number == {frame} && {tshark_filter}", [])
    msgs = [m for m in our_messages(path, "mms")[frame] if "pdu" in m.fields]
    assert [m.operation for m in msgs] == [operation]


def test_identify_response_gives_the_device_identity() -> None:
    path = CORPUS / "pcaps" / ICCP
    if not path.exists():
        pytest.skip("corpus not available")
    theirs = tshark_fields(path, "frame.number == 26", ["mms.vendorName", "mms.modelName", "mms.revision"])
    (msg,) = our_messages(path, "mms")[26]
    assert msg.fields["identity"] == dict(zip(("vendor", "model", "revision"), theirs[26], strict=True))
    assert msg.request_cnt == 23 and msg.latency_s is not None and msg.latency_s > 0
