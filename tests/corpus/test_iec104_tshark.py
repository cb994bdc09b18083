"""IEC 60870-5-104 against tshark, frame by frame (see ot_oracle): ASDU type ids and APCI frame types.

Two comparisons over the same captures: the type identification of every I-frame's ASDU
(``iec60870_asdu.typeid``), and the APCI format of every APDU (``iec60870_104.type``, with the
U-frame function ``iec60870_104.utype`` folded in) so that S- and U-frames are covered too.
"""

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import assert_agreement, captures_with, compare_protocol, our_messages

pytestmark = pytest.mark.corpus

APCI_TYPES = {"I": 0, "S": 1, "U": 3}  # tshark's iec60870_104.type values


def _type_ids(values: list[str]) -> list[int]:
    return [int(v) for v in values[0].split(",") if v] if values else []


def _our_type_id(msg: OtMessage) -> int | None:
    type_id = msg.fields.get("type_id")
    return type_id if isinstance(type_id, int) else None


def _apci_codes(values: list[str]) -> list[int]:
    # type has one occurrence per APDU, utype one per U-frame only: pair them up in order.
    types = [int(v, 0) for v in values[0].split(",") if v] if values else []
    utypes = iter([int(v, 0) for v in values[1].split(",") if v] if len(values) > 1 else [])
    return [t << 8 | (next(utypes, 0) if t == APCI_TYPES["U"] else 0) for t in types]


def _our_apci_code(msg: OtMessage) -> int:
    apci = APCI_TYPES[msg.fields["apci_type"]]
    # For U-frames ``function`` is 0x100 | control octet, and tshark's utype is that octet >> 2.
    return apci << 8 | ((msg.function & 0xFF) >> 2 if apci == APCI_TYPES["U"] else 0)


def _captures() -> list:
    captures = captures_with("IEC60870_104")
    if not captures:
        pytest.skip("corpus not available")
    return captures


def test_iec104_type_ids_match_tshark() -> None:
    result = compare_protocol("iec104", _captures(), "iec60870_asdu", _type_ids, our_code=_our_type_id,
                              tshark_field_names=["iec60870_asdu.typeid"])  # fmt: skip
    assert_agreement(result)


def test_iec104_apci_frame_types_match_tshark() -> None:
    result = compare_protocol("iec104", _captures(), "iec60870_104", _apci_codes, our_code=_our_apci_code,
                              tshark_field_names=["iec60870_104.type", "iec60870_104.utype"])  # fmt: skip
    assert_agreement(result)


def test_iec104_operation_classes_and_pairing_in_real_captures() -> None:
    by_capture = {path.name: our_messages(path, "iec104") for path in _captures()}
    operations = {m.operation for frames in by_capture.values() for ms in frames.values() for m in ms}
    # mode, config, file and auth occur in no capture: tests/decoders/test_iec104.py builds them.
    assert operations == {"read", "operate", "write", "time", "diagnostic", "session", "unknown"}
    diverse = by_capture["090813_diverse.pcap"]
    select, confirmation = diverse[9][0], diverse[11][0]  # C_SC_TA_1 select and its activation confirmation
    assert (select.direction, select.operation, select.fields["se"]) == ("request", "operate", "select")
    assert (confirmation.direction, confirmation.request_cnt) == ("response", 9)
    commands = [m for ms in diverse.values() for m in ms if m.fields.get("cot") == 6]
    confirmations = [m for ms in diverse.values() for m in ms if m.fields.get("cot") == 7]
    assert len(commands) == len(confirmations) == 19 and all(m.request_cnt for m in confirmations)
    clock = by_capture["iec60780-5-104.pcap"][139][0]  # C_CS_NA_1 clock synchronisation
    assert (clock.operation, clock.fields["cp56time"]) == ("time", "2008-08-29T08:57:13.000")
