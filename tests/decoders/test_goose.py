"""GOOSE decoder: header and goosePdu fields, cyclic bookkeeping, strict BER, random input."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agent.decoders.ber import BerError, read_tlv
from tests import factory
from tests.decoders.l2frames import GOOSE_GROUP, PUBLISHER, apdu, goose, goose_pdu, tlv


def anomaly_kinds(events: list) -> list[str]:
    return [e.fields["anomaly"]["event"] for e in events]


def test_goose_fields_and_io_class() -> None:
    messages, anomalies, _ = factory.decode([goose(appid=0x3001, st_num=7, sq_num=3, tal=4000)])
    (msg,) = messages
    assert not anomalies
    assert (msg.protocol, msg.operation, msg.direction, msg.function) == ("goose", "io", "request", 0x3001)
    f = msg.fields
    assert f["gocb_ref"] == "IED1LD0/LLN0$GO$gcb1" and f["dat_set"] == "IED1LD0/LLN0$DataSet1"
    assert f["go_id"] == "IED1_GOOSE1" and f["time_allowed_to_live"] == 4000
    assert (f["st_num"], f["sq_num"], f["conf_rev"], f["num_dat_set_entries"], f["all_data_count"]) == (
        7,
        3,
        1,
        2,
        2,
    )
    assert f["simulation"] is False and f["nds_com"] is False and f["simulated"] is False
    assert f["t"] == "2023-11-14T22:13:20.500000Z"
    assert msg.flow.ip_version == 0 and msg.flow.app_proto == "goose"


def test_goose_inside_a_vlan_tag_and_the_simulation_bit() -> None:
    messages, _, _ = factory.decode([goose(vlan=10, reserved1=0x8000, simulation=True)])
    (msg,) = messages
    assert msg.flow.vlan == (10,) and msg.fields["simulated"] is True and msg.fields["simulation"] is True


def test_retransmissions_events_gaps_and_time_allowed_to_live() -> None:
    frames = [
        goose(st_num=1, sq_num=5, tal=1000),
        goose(st_num=1, sq_num=6, tal=1000),
        goose(st_num=1, sq_num=9, tal=1000),
        goose(st_num=2, sq_num=0, tal=20),
        goose(st_num=5, sq_num=0, tal=20),
    ]
    messages, anomalies, _ = factory.decode(frames, step=0.5)
    assert not anomalies
    first, retrans, gap, event, st_jump = (m.fields for m in messages)
    assert "interval_s" not in first
    assert retrans["interval_s"] == 0.5 and retrans["state_change"] is False and retrans["sq_gap"] == 0
    assert retrans["ttl_ratio"] == 0.5  # 0.5 s after a message that promised the next within 1 s
    assert gap["sq_gap"] == 2  # sqNum 7 and 8 never arrived
    assert event["state_change"] is True and event["st_gap"] == 0
    assert st_jump["st_gap"] == 2 and st_jump["ttl_ratio"] == 25.0  # 500 ms after promising 20 ms


def test_counters_running_backwards_are_anomalies() -> None:
    frames = [goose(st_num=4, sq_num=3), goose(st_num=4, sq_num=3), goose(st_num=2, sq_num=0)]
    messages, anomalies, _ = factory.decode(frames)
    assert len(messages) == 3
    assert anomaly_kinds(anomalies) == ["sqnum_regression", "stnum_regression"]


def test_control_blocks_of_one_publisher_are_tracked_apart() -> None:
    frames = [goose(gocb="A", sq_num=1), goose(gocb="B", sq_num=40), goose(gocb="A", sq_num=2)]
    messages, anomalies, _ = factory.decode(frames)
    assert not anomalies and len({m.flow.flow_id for m in messages}) == 1
    assert "interval_s" not in messages[1].fields and messages[2].fields["sq_gap"] == 0


def test_missing_mandatory_fields_are_reported_but_the_message_kept() -> None:
    messages, anomalies, _ = factory.decode([goose(drop=(0x80, 0x82))])
    assert len(messages) == 1 and anomaly_kinds(anomalies) == ["missing_field"]
    assert "gocb_ref, dat_set" in anomalies[0].fields["anomaly"]["detail"]


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (apdu(1, goose_pdu())[:-5], "bad_length"),  # header length says more than the frame has
        (apdu(1, b"\x61\x85" + goose_pdu()[2:]), "bad_length"),  # long form with 5 length octets
        (apdu(1, b"\x61\x80" + goose_pdu()[2:]), "bad_length"),  # indefinite length
        (apdu(1, tlv(0x61, tlv(0x85, bytes(12)))), "bad_integer"),  # a 12-octet stNum
        (apdu(1, tlv(0x61, tlv(0x84, bytes(7)))), "bad_time"),
        (apdu(1, tlv(0x60, b"")), "bad_pdu"),
        (b"\x00\x01\x00", "truncated"),
    ],
)
def test_malformed_pdus_are_anomalies_not_messages(payload: bytes, kind: str) -> None:
    frame = Ether(src=PUBLISHER, dst=GOOSE_GROUP, type=0x88B8) / Raw(payload)
    messages, anomalies, _ = factory.decode([frame])
    assert not messages and anomaly_kinds(anomalies) == [kind]


def test_ber_child_longer_than_its_parent_is_rejected() -> None:
    with pytest.raises(BerError) as err:
        read_tlv(b"\x61\x03\x80\x05abc", 2, 5)
    assert err.value.kind == "bad_length"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_payloads_never_raise(payload: bytes) -> None:
    frame = Ether(src=PUBLISHER, dst=GOOSE_GROUP, type=0x88B8) / Raw(payload)
    factory.decode([frame])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_goose_never_raises(data: st.DataObject) -> None:
    good = bytearray(apdu(1, goose_pdu()))
    for _ in range(data.draw(st.integers(1, 4))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    frame = Ether(src=PUBLISHER, dst=GOOSE_GROUP, type=0x88B8) / Raw(bytes(good[:cut]))
    messages, anomalies, _ = factory.decode([frame])
    assert len(messages) + len(anomalies) >= 1 or cut == 0


def test_routable_goose_over_udp_is_identified_and_its_pdu_decoded() -> None:
    from scapy.layers.inet import IP, UDP

    pdu = goose_pdu(st_num=3, sq_num=9)
    payload_tail = b"\x81\x00" + struct.pack("!HH", 0x1001, len(pdu)) + pdu  # payload type, simulation, APPID
    security = bytes(10)
    common = struct.pack("!BBIIH", 0x80, 10, 0, 42, 2)
    body = common + security + struct.pack("!I", len(payload_tail)) + payload_tail
    spdu = bytes([0xA1, len(common) + len(security)]) + body
    spdu = spdu[:4] + struct.pack("!I", len(spdu)) + spdu[8:]
    frame = factory.eth() / IP(src="192.0.2.1", dst="239.0.0.1") / UDP(sport=102, dport=102) / Raw(spdu)
    messages, anomalies, _ = factory.decode([frame])
    (msg,) = messages
    assert not anomalies and (msg.protocol, msg.operation, msg.flow.app_proto) == ("rgoose", "io", "rgoose")
    assert (msg.fields["kind"], msg.fields["spdu_number"], msg.fields["st_num"], msg.fields["sq_num"]) == (
        "goose",
        42,
        3,
        9,
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_routable_goose_datagrams_never_raise(tail: bytes) -> None:
    from scapy.layers.inet import IP, UDP

    spdu = b"\xa1\x14\x80\x0a" + struct.pack("!I", 20 + len(tail)) + tail  # a header the probe accepts
    frame = factory.eth() / IP(src="192.0.2.1", dst="239.0.0.1") / UDP(sport=102, dport=102) / Raw(spdu)
    factory.decode([frame])
