"""BACnet/IP and BACnet/Ethernet against tshark, frame by frame (see ot_oracle): BVLC function, APDU
type, services.

One tshark run per corpus capture with BACnet (display filter ``bvlc || llc.dsap == 0x82``: BACnet/IP
and BACnet over 802.2 LLC; the corpus also holds MS/TP, in Cimetrics or ARCNET framing, which is not
decoded) serves six comparisons: ``bvlc.function``
of every datagram, ``bacapp.type``, ``bacapp.confirmed_service`` (requests, SimpleACK, ComplexACK,
Error), ``bacapp.unconfirmed_service``, network-layer message types (``bacnet.mesgtyp``), and the
first object type, instance and property of ReadProperty/WriteProperty requests.
"""

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import (
    CORPUS,
    Comparison,
    assert_agreement,
    captures_with,
    our_messages,
    tshark_fields,
)

pytestmark = pytest.mark.corpus

# One tshark run per capture serves every comparison: these fields, in this order.
FIELDS = (
    "bvlc.function",
    "bacapp.type",
    "bacapp.confirmed_service",
    "bacapp.unconfirmed_service",
    "bacnet.mesgtyp",
    "bacapp.objectType",
    "bacapp.instance_number",
    "bacapp.property_identifier",
)
Decoded = dict[str, tuple[dict[int, list[str]], dict[int, list[OtMessage]]]]


@pytest.fixture(scope="module")
def decoded() -> Decoded:
    """capture -> (tshark's fields by frame, our bacnet messages by frame), for every BACnet capture."""
    captures = sorted(set(captures_with("BVLC")) | set(captures_with("BACNET")))
    if not captures:
        pytest.skip("corpus not available")
    return {
        str(path.relative_to(CORPUS / "pcaps")): (
            tshark_fields(path, "bvlc || llc.dsap == 0x82", FIELDS),
            our_messages(path, "bacnet"),
        )
        for path in captures
    }


def _ints(value: str) -> list[int]:
    return [int(v, 0) for v in value.split(",") if v]


def _field(name: str) -> Callable[[OtMessage], int | None]:
    def code(msg: OtMessage) -> int | None:
        value = msg.fields.get(name)
        return value if isinstance(value, int) else None

    return code


def _compare(
    decoded: Decoded, theirs: Callable[[list[str]], list[int]], ours: Callable[[OtMessage], int | None]
) -> Comparison:
    result = Comparison("bacnet")
    for capture, (fields_by_frame, messages_by_frame) in decoded.items():
        for frame in sorted(set(fields_by_frame) | set(messages_by_frame)):
            their_codes = Counter(theirs(fields_by_frame.get(frame, [""] * len(FIELDS))))
            our_codes = Counter(c for m in messages_by_frame.get(frame, []) if (c := ours(m)) is not None)
            if their_codes or our_codes:
                result.add(capture, frame, our_codes, their_codes)
    return result


@pytest.mark.parametrize(
    ("tshark_field", "our_field"),
    [
        ("bvlc.function", "bvlc_function"),
        ("bacapp.type", "apdu_type"),
        ("bacapp.confirmed_service", "confirmed_service"),
        ("bacapp.unconfirmed_service", "unconfirmed_service"),
        ("bacnet.mesgtyp", "network_message_type"),
    ],
)
def test_bacnet_codes_match_tshark(decoded: Decoded, tshark_field: str, our_field: str) -> None:
    column = FIELDS.index(tshark_field)
    result = _compare(
        decoded, lambda values: _ints(values[column]) if len(values) > column else [], _field(our_field)
    )
    assert_agreement(result)


def _first_object(values: list[str]) -> list[int]:
    """ReadProperty/WriteProperty requests: the first object type, instance and property."""
    if len(values) < len(FIELDS) or values[1] != "0" or values[2] not in ("12", "15"):
        return []
    # objectType/instance_number/property_identifier occur once per object or property: the first.
    firsts = [v.split(",")[0] for v in values[5:8]]
    if not all(firsts):
        return []
    object_type, instance, prop = (int(v, 0) for v in firsts)
    return [object_type << 40 | instance << 16 | prop]


def _our_first_object(msg: OtMessage) -> int | None:
    fields = msg.fields
    if fields.get("apdu_type") != 0 or fields.get("confirmed_service") not in (12, 15):
        return None
    return int(fields["object_type"]) << 40 | int(fields["instance"]) << 16 | int(fields["property_id"])


def test_read_and_write_property_objects_match_tshark(decoded: Decoded) -> None:
    result = _compare(decoded, _first_object, _our_first_object)
    assert result.total > 4000
    assert_agreement(result)


def test_bacnet_operation_classes_and_pairing_in_real_captures(decoded: Decoded) -> None:
    by_capture = {Path(capture).name: messages for capture, (_fields, messages) in decoded.items()}
    messages = [m for frames in by_capture.values() for ms in frames.values() for m in ms]
    operations = {m.operation for m in messages}
    # write, config, upload and program occur in no capture: tests/decoders/test_bacnet.py builds them.
    assert operations == {"read", "discovery", "mode", "file", "operate", "session", "diagnostic", "time"}
    services = by_capture["bacnet_services.pcap"]
    dcc = [m for ms in services.values() for m in ms if m.fields.get("confirmed_service") == 17]
    requests = [m for m in dcc if m.direction == "request"]
    replies = [m for m in dcc if m.direction == "response"]
    assert len(requests) == len(replies) == 4
    assert {r.request_cnt for r in replies} == {r.pcap_cnt for r in requests}
    assert [r.fields["enable_disable"] for r in requests] == ["disable", "disable", "enable", "enable"]
    assert [r.fields.get("error_code") for r in replies] == [26, None, 26, None]  # password-failure
    i_ams = [m for m in messages if m.fields.get("unconfirmed_service") == 0 and "identity" in m.fields]
    assert i_ams and all(
        m.fields["identity"]["device_instance"] == m.fields["device_instance"] for m in i_ams
    )
