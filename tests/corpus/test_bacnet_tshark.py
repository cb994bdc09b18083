"""BACnet/IP against tshark, frame by frame (see ot_oracle): BVLC function, APDU type, services.

Four comparisons over every corpus capture tshark finds BVLC in: ``bvlc.function`` of every
datagram, and for the APDUs carried over BACnet/IP (``bvlc && bacapp``: the corpus also holds
BACnet over 802.2 LLC and MS/TP, which is not IP and not ours) ``bacapp.type``,
``bacapp.confirmed_service`` (requests, SimpleACK, ComplexACK, Error) and
``bacapp.unconfirmed_service``. A fifth compares network-layer message types (``bacnet.mesgtyp``)
and a sixth the first object type, instance and property of ReadProperty/WriteProperty requests.
"""

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import assert_agreement, captures_with, compare_protocol, our_messages

pytestmark = pytest.mark.corpus


def _ints(values: list[str]) -> list[int]:
    return [int(v, 0) for v in values[0].split(",") if v] if values else []


def _field(name: str):
    def code(msg: OtMessage) -> int | None:
        value = msg.fields.get(name)
        return value if isinstance(value, int) else None

    return code


def _captures() -> list:
    captures = captures_with("BVLC")
    if not captures:
        pytest.skip("corpus not available")
    return captures


@pytest.mark.parametrize(
    ("display_filter", "tshark_field", "our_field"),
    [
        ("bvlc", "bvlc.function", "bvlc_function"),
        ("bvlc && bacapp", "bacapp.type", "apdu_type"),
        ("bvlc && bacapp", "bacapp.confirmed_service", "confirmed_service"),
        ("bvlc && bacapp", "bacapp.unconfirmed_service", "unconfirmed_service"),
        ("bvlc && bacnet.mesgtyp", "bacnet.mesgtyp", "network_message_type"),
    ],
)
def test_bacnet_codes_match_tshark(display_filter: str, tshark_field: str, our_field: str) -> None:
    result = compare_protocol(
        "bacnet",
        _captures(),
        display_filter,
        _ints,
        our_code=_field(our_field),
        tshark_field_names=[tshark_field],
    )
    assert_agreement(result)


def _first_object(values: list[str]) -> list[int]:
    # objectType/instance_number/property_identifier occur once per object or property: the first.
    firsts = [v.split(",")[0] for v in values]
    if len(firsts) < 3 or not all(firsts):
        return []
    object_type, instance, prop = (int(v, 0) for v in firsts)
    return [object_type << 40 | instance << 16 | prop]


def _our_first_object(msg: OtMessage) -> int | None:
    fields = msg.fields
    if fields.get("apdu_type") != 0 or fields.get("confirmed_service") not in (12, 15):
        return None
    return int(fields["object_type"]) << 40 | int(fields["instance"]) << 16 | int(fields["property_id"])


def test_read_and_write_property_objects_match_tshark() -> None:
    filter_ = "bvlc && bacapp.type == 0 && (bacapp.confirmed_service == 12 || bacapp.confirmed_service == 15)"
    result = compare_protocol(
        "bacnet",
        _captures(),
        filter_,
        _first_object,
        our_code=_our_first_object,
        tshark_field_names=["bacapp.objectType", "bacapp.instance_number", "bacapp.property_identifier"],
    )
    # Listed as "bacnet" disagreements too: one file per protocol.
    assert_agreement(result)


def test_bacnet_operation_classes_and_pairing_in_real_captures() -> None:
    by_capture = {path.name: our_messages(path, "bacnet") for path in _captures()}
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
