"""IEC 60870-5-104 decoder: APCI, ASDU fields, roles and pairing, sequence tracking, anomalies."""

import json
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import iec104
from agent.decoders.base import DecoderConfig, DecoderContext
from agent.flows import Flow
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory

CA = 0x0A0B


def i_frame(ns: int, nr: int, asdu: bytes) -> bytes:
    return bytes([0x68, 4 + len(asdu)]) + struct.pack("<HH", ns << 1, nr << 1) + asdu


def s_frame(nr: int) -> bytes:
    return bytes([0x68, 4, 0x01, 0x00]) + struct.pack("<H", nr << 1)


def u_frame(control: int) -> bytes:
    return bytes([0x68, 4, control, 0, 0, 0])


STARTDT_ACT, STARTDT_CON = u_frame(0x07), u_frame(0x0B)


def asdu(type_id: int, cot: int, objects: list[tuple[int, bytes]], ca: int = CA, sq: bool = False,
         negative: bool = False, test: bool = False, originator: int = 0) -> bytes:  # fmt: skip
    """An ASDU; with ``sq`` only the first IOA is sent and the elements follow it."""
    vsq = len(objects) | (0x80 if sq else 0)
    cause = cot | (0x40 if negative else 0) | (0x80 if test else 0)
    head = struct.pack("<BBBBH", type_id, vsq, cause, originator, ca)
    if sq:
        body = struct.pack("<I", objects[0][0])[:3] + b"".join(e for _, e in objects)
    else:
        body = b"".join(struct.pack("<I", ioa)[:3] + e for ioa, e in objects)
    return head + body


def decode(segments: list[tuple[bool, bytes]], **kwargs: object):
    return factory.decode(factory.tcp_stream(segments, dport=2404, **kwargs))  # type: ignore[arg-type]


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


def test_select_execute_single_command_pairs_with_confirmation_and_termination() -> None:
    select = asdu(45, 6, [(4500, bytes([0x81]))], originator=7)  # ON, select
    execute = asdu(45, 6, [(4500, bytes([0x01]))], originator=7)
    msgs, anomalies, pipeline = decode([
        (True, i_frame(0, 0, select)),
        (False, i_frame(0, 1, asdu(45, 7, [(4500, bytes([0x81]))], originator=7))),
        (True, i_frame(1, 1, execute)),
        (False, i_frame(1, 2, asdu(45, 7, [(4500, bytes([0x01]))], originator=7))),
        (False, i_frame(2, 2, asdu(45, 10, [(4500, bytes([0x01]))], originator=7))),
    ])  # fmt: skip
    assert not anomalies
    req = msgs[0]
    assert req.fields == {"apci_type": "I", "tx_seq": 0, "rx_seq": 0, "unacked": 1, "type_id": 45,
                          "type_name": "C_SC_NA_1", "sq": False, "objects": 1, "cot": 6, "negative": False,
                          "test": False, "originator": 7, "common_address": CA, "ioa": 4500, "sco_on": True,
                          "qu": 0, "se": "select"}  # fmt: skip
    assert (req.direction, req.operation, req.function, req.to_server) == ("request", "operate", 45, True)
    con = msgs[1]
    assert (con.direction, con.operation, con.exception) == ("response", "operate", False)
    assert con.request_cnt == req.pcap_cnt
    assert con.latency_s == pytest.approx(0.01)
    assert msgs[2].fields["se"] == "execute" and msgs[3].request_cnt == msgs[2].pcap_cnt
    term = msgs[4]
    assert (term.direction, term.operation, term.fields["cot"]) == ("response", "operate", 10)
    assert term.request_cnt == 0  # the command was already answered by its confirmation
    stats = pipeline.decoders.stats["iec104"]
    assert (stats.matched, stats.unanswered, stats.unmatched_responses) == (2, 0, 0)


def test_u_frames_are_session_and_pair_whichever_side_starts() -> None:
    msgs, anomalies, pipeline = decode([
        (True, STARTDT_ACT), (False, STARTDT_CON),
        (False, u_frame(0x43)), (True, u_frame(0x83)),  # TESTFR started by the controlled station
        (True, u_frame(0x13)), (False, u_frame(0x23)),
    ])  # fmt: skip
    assert not anomalies
    assert [(m.fields["u_function"], m.direction, m.function, m.operation) for m in msgs] == [
        ("startdt_act", "request", 0x107, "session"),
        ("startdt_con", "response", 0x10B, "session"),
        ("testfr_act", "request", 0x143, "session"),
        ("testfr_con", "response", 0x183, "session"),
        ("stopdt_act", "request", 0x113, "session"),
        ("stopdt_con", "response", 0x123, "session"),
    ]
    assert msgs[2].to_server is False and msgs[3].request_cnt == msgs[2].pcap_cnt
    assert all(m.fields["apci_type"] == "U" for m in msgs)
    assert pipeline.decoders.stats["iec104"].matched == 3


def test_reports_are_unpaired_responses_and_s_frames_acknowledge() -> None:
    report = asdu(13, 3, [(1300, struct.pack("<fB", 21.5, 0))])
    msgs, anomalies, pipeline = decode([
        (True, STARTDT_ACT), (False, STARTDT_CON),
        (False, i_frame(0, 0, report)), (False, i_frame(1, 0, report)), (False, i_frame(2, 0, report)),
        (True, s_frame(3)),
    ])  # fmt: skip
    assert not anomalies
    reports, ack = msgs[2:5], msgs[5]
    assert [(m.direction, m.operation, m.request_cnt, m.fields["unacked"]) for m in reports] == [
        ("response", "read", 0, 1), ("response", "read", 0, 2), ("response", "read", 0, 3)]  # fmt: skip
    assert ack.fields == {"apci_type": "S", "rx_seq": 3, "acked": 3}
    assert (ack.direction, ack.operation, ack.function, ack.to_server) == ("response", "session", 0x101, True)
    assert pipeline.decoders.stats["iec104"].unmatched_responses == 0


def test_sequence_gap_and_acknowledging_unsent_frames_are_anomalies() -> None:
    report = asdu(1, 3, [(1, b"\x01")])
    _, anomalies, _ = decode([(False, i_frame(0, 0, report)), (False, i_frame(1, 0, report)),
                              (False, i_frame(3, 0, report)), (True, s_frame(9))])  # fmt: skip
    assert events(anomalies) == ["sequence_gap", "bad_ack"]
    assert "expected 2" in anomalies[0].fields["anomaly"]["detail"]


def test_acknowledgement_going_backwards_is_an_anomaly() -> None:
    report = asdu(1, 3, [(1, b"\x01")])
    msgs, anomalies, _ = decode([(False, i_frame(0, 0, report)), (False, i_frame(1, 0, report)),
                                 (True, s_frame(2)), (True, s_frame(1))])  # fmt: skip
    assert events(anomalies) == ["bad_ack"]
    assert msgs[2].fields["acked"] == 2


def test_interrogation_with_sequence_of_objects() -> None:
    msgs, anomalies, _ = decode([
        (True, i_frame(0, 0, asdu(100, 6, [(0, bytes([20]))]))),
        (False, i_frame(0, 1, asdu(100, 7, [(0, bytes([20]))]))),
        (False, i_frame(1, 1, asdu(1, 20, [(10010, b"\x01"), (10011, b"\x00"), (10012, b"\x01")], sq=True))),
        (False, i_frame(2, 1, asdu(100, 10, [(0, bytes([20]))]))),
    ])  # fmt: skip
    assert not anomalies
    assert msgs[0].fields["qoi"] == 20 and msgs[0].operation == "read"
    assert msgs[1].request_cnt == msgs[0].pcap_cnt
    data = msgs[2]
    expected = {"sq": True, "objects": 3, "ioa": 10010, "cot": 20}  # only the first IOA is sent with SQ=1
    assert {k: data.fields[k] for k in expected} == expected
    assert (data.direction, data.operation, data.request_cnt) == ("response", "read", 0)


def test_read_command_is_answered_by_the_requested_report() -> None:
    msgs, anomalies, _ = decode([
        (True, i_frame(0, 0, asdu(102, 5, [(700, b"")]))),
        (False, i_frame(0, 1, asdu(11, 5, [(700, struct.pack("<hB", -5, 0))]))),
    ])  # fmt: skip
    assert not anomalies
    assert (msgs[0].direction, msgs[0].operation) == ("request", "read")
    assert (msgs[1].direction, msgs[1].operation) == ("response", "read")
    assert msgs[1].request_cnt == msgs[0].pcap_cnt


def test_negative_confirmations_are_exceptions() -> None:
    cmd = asdu(46, 6, [(15000, bytes([0x82]))])
    refused = asdu(46, 7, [(15000, bytes([0x82]))], negative=True)
    msgs, _, _ = decode([
        (True, i_frame(0, 0, cmd)), (False, i_frame(0, 1, refused)),
        (True, i_frame(1, 1, asdu(45, 6, [(33333, b"\x01")]))),
        (False, i_frame(1, 2, asdu(45, 47, [(33333, b"\x01")], negative=True))),  # unknown IOA
    ])  # fmt: skip
    assert [m.exception for m in msgs] == [False, True, False, True]
    assert msgs[1].request_cnt == msgs[0].pcap_cnt and msgs[3].request_cnt == msgs[2].pcap_cnt
    assert msgs[1].fields["negative"] is True and msgs[3].fields["cot"] == 47


def test_unanswered_command_is_counted() -> None:
    _, _, pipeline = decode([(True, i_frame(0, 0, asdu(45, 6, [(1, b"\x01")])))])
    stats = pipeline.decoders.stats["iec104"]
    assert (stats.requests, stats.unanswered) == (1, 1)


@pytest.mark.parametrize(
    ("type_id", "element", "expected"),
    [
        (46, bytes([0x86]), {"dco_on": 2, "qu": 1, "se": "select"}),
        (47, bytes([0x01]), {"rco_up": 1, "qu": 0, "se": "execute"}),
        (48, struct.pack("<hB", 16384, 0x80), {"value": 0.5, "ql": 0, "se": "select"}),
        (49, struct.pack("<hB", -300, 0x05), {"value": -300, "ql": 5, "se": "execute"}),
        (50, struct.pack("<fB", 12.0, 0x80), {"value": 12.0, "ql": 0, "se": "select"}),
        (50, struct.pack("<fB", math.nan, 0), {"value": None, "ql": 0, "se": "execute"}),
        (51, struct.pack("<I", 0xDEADBEEF), {"bitstring": 0xDEADBEEF}),
        (63, struct.pack("<fB", -43.5, 0) + bytes(7), {"value": -43.5, "ql": 0, "se": "execute"}),
        (101, bytes([0x45]), {"qcc": 0x45}),
        (105, bytes([1]), {"qrp": 1}),
        (113, bytes([3]), {"qpa": 3}),
    ],
)
def test_command_qualifiers(type_id: int, element: bytes, expected: dict) -> None:
    msgs, anomalies, _ = decode([(True, i_frame(0, 0, asdu(type_id, 6, [(99, element)])))])
    assert not anomalies
    assert {k: msgs[0].fields[k] for k in expected} == expected


def test_clock_synchronisation_time() -> None:
    cp56 = struct.pack("<H", 13_250) + bytes([57, 8, 29 | 0x80, 8, 24])  # Thursday 29 Aug 2024 08:57:13.250
    msgs, anomalies, _ = decode([(True, i_frame(0, 0, asdu(103, 6, [(0, cp56)])))])
    assert not anomalies
    assert msgs[0].operation == "time" and msgs[0].fields["cp56time"] == "2024-08-29T08:57:13.250"


@pytest.mark.parametrize(
    ("frame", "from_client", "operation"),
    [
        (i_frame(0, 0, asdu(1, 3, [(1, b"\x01")])), False, "read"),
        (i_frame(0, 0, asdu(100, 6, [(0, bytes([20]))])), True, "read"),
        (i_frame(0, 0, asdu(101, 6, [(0, bytes([5]))])), True, "read"),
        (i_frame(0, 0, asdu(102, 5, [(1, b"")])), True, "read"),
        (i_frame(0, 0, asdu(45, 6, [(1, b"\x01")])), True, "operate"),
        (i_frame(0, 0, asdu(59, 6, [(1, b"\x02" + bytes(7))])), True, "operate"),
        (i_frame(0, 0, asdu(64, 6, [(1, bytes(11))])), True, "operate"),
        (i_frame(0, 0, asdu(49, 6, [(1, bytes(3))])), True, "write"),
        (i_frame(0, 0, asdu(62, 6, [(1, bytes(10))])), True, "write"),
        (i_frame(0, 0, asdu(103, 6, [(0, bytes(7))])), True, "time"),
        (i_frame(0, 0, asdu(107, 6, [(0, bytes(9))])), True, "diagnostic"),
        (i_frame(0, 0, asdu(70, 4, [(0, b"\x00")])), False, "diagnostic"),
        (i_frame(0, 0, asdu(105, 6, [(0, b"\x01")])), True, "mode"),
        (i_frame(0, 0, asdu(110, 6, [(5, bytes(3))])), True, "config"),
        (i_frame(0, 0, asdu(113, 6, [(5, b"\x01")])), True, "config"),
        (i_frame(0, 0, asdu(122, 13, [(0, bytes(4))])), True, "file"),
        (i_frame(0, 0, asdu(126, 5, [(0, bytes(13))])), False, "file"),
        (i_frame(0, 0, asdu(81, 14, [(0, bytes(8))])), False, "auth"),
        (i_frame(0, 0, asdu(95, 16, [(0, bytes(4))])), True, "auth"),
        (u_frame(0x07), True, "session"),
        (s_frame(0), True, "session"),
        (i_frame(0, 0, asdu(24, 3, [(1, b"\x01")])), False, "unknown"),  # reserved
        (i_frame(0, 0, asdu(104, 6, [(0, b"\xaa\x55")])), True, "unknown"),  # C_TS_NA_1: IEC 101 only
        (i_frame(0, 0, asdu(106, 6, [(0, b"\x00\x00")])), True, "unknown"),  # C_CD_NA_1: IEC 101 only
    ],
)
def test_operation_classes(frame: bytes, from_client: bool, operation: str) -> None:
    msgs, _, _ = decode([(True, STARTDT_ACT), (from_client, frame)])  # the probe wants a valid first APDU
    assert msgs[-1].operation == operation


def test_unknown_type_and_undefined_cause_are_anomalies() -> None:
    _, anomalies, _ = decode([(True, STARTDT_ACT), (True, i_frame(0, 0, asdu(200, 6, [(1, b"")]))),
                              (True, i_frame(1, 0, asdu(45, 18, [(1, b"\x01")])))])  # fmt: skip
    assert events(anomalies) == ["unknown_type_id", "bad_cot"]


def test_object_count_must_fit_the_asdu_length() -> None:
    short = asdu(13, 3, [(1, bytes(5)), (2, bytes(5))])[:-2]
    sq = asdu(1, 20, [(1, b"\x01"), (2, b"\x01")], sq=True) + b"\x00"
    msgs, anomalies, _ = decode([(False, i_frame(0, 0, short)), (False, i_frame(1, 0, sq))])
    assert events(anomalies) == ["bad_length", "bad_length"]
    assert len(msgs) == 2 and msgs[0].fields["objects"] == 2


def test_command_states_that_are_not_permitted() -> None:
    _, anomalies, _ = decode([(True, i_frame(0, 0, asdu(46, 6, [(1, b"\x03")]))),
                              (True, i_frame(1, 0, asdu(60, 6, [(1, b"\x00" + bytes(7))])))])  # fmt: skip
    assert events(anomalies) == ["bad_command_state", "bad_command_state"]


def test_malformed_apci_is_decoded_as_far_as_it_goes() -> None:
    msgs, anomalies, _ = decode([
        (True, STARTDT_ACT),
        (True, bytes([0x68, 4, 0x16, 0x16, 0x16, 0x16])),  # I-frame without an ASDU
        (True, bytes([0x68, 6, 0x18, 0x18, 0x18, 0x18, 0x18, 0x18])),  # ASDU cut after 2 octets
        (True, bytes([0x68, 5, 0x17, 0x17, 0x17, 0x17, 0x17])),  # U-frame with two function bits
        (True, bytes([0x68, 6, 0x19, 0x19, 0x19, 0x19, 0x19, 0x19])),  # S-frame with reserved bits
    ])  # fmt: skip
    msgs = msgs[1:]
    assert [(m.fields["apci_type"], m.fields.get("type_id"), m.operation) for m in msgs] == [
        ("I", None, "unknown"), ("I", 24, "unknown"),
        ("U", None, "unknown"), ("S", None, "session"),
    ]  # fmt: skip
    assert msgs[1].fields["objects"] == 24 and msgs[1].function == 24 and msgs[2].function == 0x117
    assert events(anomalies) == [
        "truncated_asdu",
        "sequence_gap", "truncated_asdu", "unknown_type_id",
        "bad_length", "bad_u_function",
        "bad_length", "bad_control_field",
    ]  # fmt: skip


def test_framing_split_batched_and_resynchronised() -> None:
    report = i_frame(0, 0, asdu(13, 3, [(1300, bytes(5))]))
    two = STARTDT_ACT + i_frame(0, 0, asdu(100, 6, [(0, bytes([20]))]))
    msgs, anomalies, _ = decode([
        (True, two),  # two APDUs in one segment
        (False, report[:1]), (False, report[1:9]), (False, report[9:]),  # one APDU over three segments
        (True, b"\x00\x01\x02" + u_frame(0x43)),  # garbage before a header
    ])  # fmt: skip
    assert [m.function for m in msgs] == [0x107, 100, 13, 0x143]
    assert msgs[0].pcap_cnt == msgs[1].pcap_cnt and msgs[2].pcap_cnt == 7  # the segment completing it
    assert events(anomalies) == ["bad_header"]


def test_capture_starting_mid_stream_keeps_roles() -> None:
    msgs, _, _ = decode([(False, i_frame(77, 20, asdu(13, 1, [(1300, bytes(5))]))), (True, s_frame(78)),
                         (True, i_frame(20, 78, asdu(45, 6, [(1, b"\x01")])))], handshake=False)  # fmt: skip
    # The server's packet comes first, so it is the flow's initiator, but port 2404 names the client.
    assert [(m.direction, m.to_server) for m in msgs] == [("response", True), ("response", False),
                                                          ("request", False)]  # fmt: skip
    assert "unacked" not in msgs[0].fields and msgs[2].fields["acked"] == 0


def test_found_on_another_port_by_probe() -> None:
    packets = factory.tcp_stream([(True, STARTDT_ACT), (False, STARTDT_CON)], dport=12404)
    msgs, _, _ = factory.decode(packets)
    assert [m.protocol for m in msgs] == ["iec104", "iec104"]


def test_probe() -> None:
    assert iec104.probe(STARTDT_ACT, True)
    assert iec104.probe(s_frame(5) + i_frame(0, 0, asdu(13, 3, [(1, bytes(5))])), False)
    assert not iec104.probe(STARTDT_ACT[:-1], True)
    assert not iec104.probe(u_frame(0x17), True)  # two U functions
    assert not iec104.probe(i_frame(0, 0, asdu(24, 3, [(1, b"\x01")])), False)  # reserved type id
    assert not iec104.probe(i_frame(0, 0, asdu(1, 0, [(1, b"\x01")])), False)  # COT 0
    assert not iec104.probe(b"hello world\r\n", True)
    assert not iec104.probe(b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01", True)  # Modbus
    assert not iec104.probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", True)  # TLS client hello


def test_eve_object(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    command = [(True, i_frame(0, 0, asdu(45, 6, [(4500, b"\x81")]))),
               (False, i_frame(0, 1, asdu(45, 7, [(4500, b"\x81")])))]  # fmt: skip
    packets = factory.tcp_stream(command, dport=2404)
    Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    ot = [e for e in map(json.loads, out.read_text().splitlines()) if e["event_type"] == "ot"]
    assert ot[0]["iec104"]["se"] == "select" and ot[0]["iec104"]["type_id"] == 45
    summary = {"protocol": "iec104", "operation": "operate", "direction": "request", "function": 45}
    assert ot[0]["ot"] == summary
    assert ot[1]["ot"]["request_pcap_cnt"] == ot[0]["pcap_cnt"] and ot[1]["dest_port"] == 2404


# -- robustness --------------------------------------------------------------------------------------

VALID_STREAM = (STARTDT_ACT + i_frame(0, 0, asdu(45, 6, [(4500, b"\x81")])) + s_frame(1)
                + i_frame(1, 1, asdu(63, 6, [(5021, struct.pack("<fB", 1.5, 0) + bytes(7))]))
                + i_frame(2, 1, asdu(1, 20, [(1, b"\x01"), (2, b"\x00")], sq=True)))  # fmt: skip


def _decoder() -> tuple[iec104.Iec104Decoder, DecoderConfig]:
    config = DecoderConfig(max_stream_buffer=512)
    ctx = DecoderContext(config, lambda m: None, lambda a: None)
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 2404, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
    return iec104.Iec104Decoder(flow, ctx, True), config


def _feed(segments: list[tuple[bool, bytes]]) -> None:
    decoder, config = _decoder()
    seq = {True: 1000, False: 5000}
    for cnt, (to_server, data) in enumerate(segments, 1):
        decoder.feed_segment(to_server, seq[to_server], data, float(cnt), cnt, 0)
        seq[to_server] += len(data)
        for framer in (decoder._c2s, decoder._s2c):
            assert framer is not None and len(framer.buf) <= config.max_stream_buffer
    decoder.close("shutdown")
    assert len(decoder.pending) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=700)), min_size=1, max_size=10))
def test_random_streams_never_raise_and_stay_bounded(segments: list[tuple[bool, bytes]]) -> None:
    _feed([(True, STARTDT_ACT), *segments])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise(data: st.DataObject) -> None:
    stream = bytearray(VALID_STREAM)
    for _ in range(data.draw(st.integers(1, 10))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    _feed([(True, bytes(stream[:cut])), (False, bytes(stream[cut:])), (True, bytes(stream))])


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_random_payload_through_the_pipeline(payload: bytes) -> None:
    decode([(True, STARTDT_ACT), (False, payload), (True, payload)])
