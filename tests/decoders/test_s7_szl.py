"""S7comm SZL identity lists (agent.decoders.s7_szl) and their place in the S7comm decoder."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.assets.inventory import AssetInventory
from agent.decoders.s7_szl import MAX_JOINS, MAX_LIST_BYTES, SzlParts, szl_contents
from tests.decoders.test_s7comm import CC, CR, decode, szl, userdata


def module_record(index: int, order_number: bytes, major: int, minor: int) -> bytes:
    return (
        struct.pack("!H", index)
        + order_number.ljust(20, b" ")
        + b"\x00\xc0"
        + struct.pack("!HH", major, minor)
    )


def component_record(index: int, body: bytes) -> bytes:
    return struct.pack("!H", index) + body.ljust(32, b"\x00")


def szl_list(szl_id: int, size: int, records: list[bytes]) -> bytes:
    return struct.pack("!HHHH", szl_id, 0, size, len(records)) + b"".join(records)


MODULES = szl_list(
    0x0011,
    28,
    [
        module_record(1, b"6ES7 315-2EH14-0AB0", 4, 1),
        module_record(6, b"6ES7 315-2EH14-0AB0", 4, 1),
        module_record(7, b"", 0x5603, 0x0206),  # "V" 3, 2, 6
        module_record(0x81, b"Boot Loader", 0x4120, 0x0909),
    ],
)
COMPONENTS = szl_list(
    0x001C,
    34,
    [
        component_record(1, b"SNAP7-SERVER"),
        component_record(2, b"CPU 315-2 PN/DP"),
        component_record(3, b"Line 4 filling"),
        component_record(4, b"Original Siemens Equipment"),
        component_record(5, b"S C-C2UR28922012"),
        component_record(7, b"CPU 315-2 PN/DP"),
        component_record(8, b"MMC 267FF11F"),
        component_record(9, b"\x00\x2a\xf6\x00\x00\x01"),
        component_record(11, b"Hall 2"),
    ],
)


def test_module_identification_gives_order_number_and_firmware() -> None:
    identity, other = szl_contents(MODULES)
    assert identity == {"vendor": "Siemens", "model": "6ES7 315-2EH14-0AB0", "revision": "V3.2.6"}
    assert other == {"szl_record_length": 28, "szl_record_count": 4}


def test_component_identification_gives_name_product_serial_and_vendor_id() -> None:
    identity, other = szl_contents(COMPONENTS)
    assert identity == {
        "vendor": "Siemens",
        "name": "SNAP7-SERVER",
        "product": "CPU 315-2 PN/DP",
        "serial": "S C-C2UR28922012",
        "vendor_id": 42,
    }
    assert other["plant_designation"] == "Line 4 filling" and other["location"] == "Hall 2"


def test_the_module_name_stands_in_for_a_missing_type_name_and_one_record_lists_work() -> None:
    identity, _ = szl_contents(szl_list(0x011C, 34, [component_record(2, b"IM151-8 PN/DP CPU")]))
    assert identity == {"vendor": "Siemens", "product": "IM151-8 PN/DP CPU"}
    identity, _ = szl_contents(szl_list(0x0111, 28, [module_record(6, b"6ES7 151-8AB01-0AB0", 1, 0)]))
    assert identity == {"vendor": "Siemens", "model": "6ES7 151-8AB01-0AB0"}


def test_other_lists_short_records_and_cut_answers_give_nothing() -> None:
    assert szl_contents(szl_list(0x0424, 20, [bytes(20)]))[0] == {}
    assert szl_contents(szl_list(0x0011, 20, [bytes(20)]))[0] == {}  # not a 28-byte record
    assert szl_contents(MODULES[: 8 + 27])[0] == {}  # the first record is cut short
    assert szl_contents(b"\x00\x11")[0] == {}


def test_the_decoder_puts_the_identity_on_the_answer_and_the_inventory_shows_it() -> None:
    request = userdata(1, 4, 1, pdu_ref=0x600, data=szl(0x0011, 0))
    answer = userdata(2, 4, 1, pdu_ref=0x600, data=b"\xff\x09" + struct.pack("!H", len(MODULES)) + MODULES,
                      ext=(0, 0, 0))  # fmt: skip
    msgs, anomalies, _ = decode([(True, CR), (False, CC), (True, request), (False, answer)])
    assert not anomalies
    reply = msgs[-1]
    assert reply.direction == "response" and reply.fields["szl_id"] == 0x0011
    assert reply.fields["identity"]["model"] == "6ES7 315-2EH14-0AB0"
    inventory = AssetInventory()
    inventory.on_message(reply)
    plc = inventory.hosts[reply.flow.dst]
    assert plc.identity["revision"] == "V3.2.6" and plc.identity_from == "s7comm identity"


def parts(payload: bytes, unit: int, cut: int) -> list[tuple[bool, bytes]]:
    first, second = payload[:cut], payload[cut:]
    return [
        (False, userdata(2, 4, 1, pdu_ref=0x700, data=b"\xff\x09" + struct.pack("!H", len(first)) + first,
                         ext=(unit, 1, 0))),
        (False, userdata(2, 4, 1, pdu_ref=0x701, data=b"\xff\x09" + struct.pack("!H", len(second)) + second,
                         ext=(unit, 0, 0))),
    ]  # fmt: skip


def test_an_answer_in_two_parts_is_joined_and_read_with_the_last() -> None:
    request = userdata(1, 4, 1, pdu_ref=0x700, data=szl(0x001C, 0))
    # Cut inside a record, as a CPU does when a list does not fit one PDU.
    msgs, anomalies, _ = decode([(True, CR), (False, CC), (True, request), *parts(COMPONENTS, 6, 201)])
    assert not anomalies
    first, last = msgs[-2:]
    assert "identity" not in first.fields and "szl_id" not in first.fields
    assert last.fields["szl_id"] == 0x001C and last.fields["identity"]["serial"] == "S C-C2UR28922012"
    assert last.fields["identity"]["vendor_id"] == 42


def test_a_last_part_whose_first_was_not_seen_is_skipped() -> None:
    msgs, _, _ = decode([(True, CR), (False, CC), parts(COMPONENTS, 6, 201)[1]])
    assert "identity" not in msgs[-1].fields and "szl_id" not in msgs[-1].fields


def test_joins_stay_bounded() -> None:
    joins = SzlParts()
    for unit in range(1, 20):
        assert joins.add((False, unit), COMPONENTS[:40], last=False) is None
        assert len(joins.joins) <= MAX_JOINS
    assert joins.add((True, 1), b"\x00\x24" + bytes(10), last=False) is None  # not an identity list
    for _ in range(MAX_LIST_BYTES // 100 + 2):
        joins.add((False, 19), bytes(100), last=False)
    assert (False, 19) not in joins.joins and joins.dropped == 19 - MAX_JOINS + 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_answers_never_raise(data: bytes) -> None:
    szl_contents(data)
    szl_contents(b"\x00\x11" + data)
    szl_contents(b"\x00\x1c" + data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_answers_never_raise(data: st.DataObject) -> None:
    answer = bytearray(data.draw(st.sampled_from([MODULES, COMPONENTS])))
    for _ in range(data.draw(st.integers(1, 8))):
        answer[data.draw(st.integers(0, len(answer) - 1))] = data.draw(st.integers(0, 255))
    cut = bytes(answer[: data.draw(st.integers(0, len(answer)))])
    identity, _ = szl_contents(cut)
    assert all(isinstance(v, (str, int)) for v in identity.values())
    joins = SzlParts()
    split = data.draw(st.integers(0, len(cut)))
    joins.add((False, 1), cut[:split], last=False)
    joined = joins.add((False, 1), cut[split:], last=True)
    if joined is not None:
        szl_contents(joined)


def test_an_answer_missing_a_part_is_not_read() -> None:
    joins = SzlParts()
    assert joins.add((False, 9), COMPONENTS[:100], last=False) is None
    assert joins.add((False, 9), COMPONENTS[200:], last=True) is None  # bytes 100-199 were lost
    assert joins.dropped == 1 and not joins.joins
    joins.add((False, 9), COMPONENTS[:100], last=False)
    joins.add((False, 9), COMPONENTS[100:200], last=False)
    assert joins.add((False, 9), COMPONENTS[200:], last=True) == COMPONENTS
