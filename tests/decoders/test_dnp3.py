"""DNP3 decoder: link framing and CRCs, transport reassembly, application layer, pairing, anomalies.

Traffic is built here with struct and an independent bit-by-bit CRC-16/DNP, and goes through the
public path (a Pipeline over scapy packets, or the decoder's ``feed``/``parse`` with a fake flow).
Operation classes seen in real captures are checked on those captures in the corpus tier below.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decoders import dnp3
from agent.decoders.base import OPERATIONS, RESPONSE, Anomaly, DecoderConfig, DecoderContext, OtMessage
from agent.decoders.stream import INVALID, NEED_MORE
from agent.dissect import Packet
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory
from tests.corpus.ot_oracle import CORPUS

MASTER, OUTSTATION = 1, 1024
REQ_CONTROL = 0xC4  # DIR, PRM, unconfirmed user data
RESP_CONTROL = 0x44  # PRM, unconfirmed user data


def crc(data: bytes) -> int:
    """CRC-16/DNP bit by bit (reflected 0x3D65 = 0xA6BC), independent of the decoder's tables."""
    value = 0
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA6BC if value & 1 else value >> 1
    return value ^ 0xFFFF


def frame(user: bytes, src: int = MASTER, dst: int = OUTSTATION, control: int = REQ_CONTROL) -> bytes:
    """One link frame carrying ``user`` (transport byte included)."""
    header = struct.pack("<BBBBHH", 0x05, 0x64, 5 + len(user), control, dst, src)
    out = header + struct.pack("<H", crc(header))
    for i in range(0, len(user), 16):
        block = user[i : i + 16]
        out += block + struct.pack("<H", crc(block))
    return out


def wire(
    app: bytes,
    src: int = MASTER,
    dst: int = OUTSTATION,
    control: int = REQ_CONTROL,
    segment: int = 249,
    tseq: int = 0,
) -> bytes:
    """An application fragment as link frames, split into transport segments of ``segment`` bytes."""
    pieces = [app[i : i + segment] for i in range(0, len(app), segment)] or [b""]
    out = b""
    for i, piece in enumerate(pieces):
        th = (0x40 if i == 0 else 0) | (0x80 if i == len(pieces) - 1 else 0) | (tseq + i) & 0x3F
        out += frame(bytes([th]) + piece, src, dst, control)
    return out


def request(fc: int, seq: int = 0, objects: bytes = b"", ac: int | None = None) -> bytes:
    return bytes([0xC0 | seq if ac is None else ac, fc]) + objects


def response(fc: int = 129, seq: int = 0, iin: int = 0, objects: bytes = b"", ac: int | None = None) -> bytes:
    return bytes([0xC0 | seq if ac is None else ac, fc]) + struct.pack(">H", iin) + objects


def req(fc: int, seq: int = 0, objects: bytes = b"", **kw: Any) -> bytes:
    return wire(request(fc, seq, objects), **kw)


def resp(
    seq: int = 0, iin: int = 0, objects: bytes = b"", fc: int = 129, ac: int | None = None, **kw: Any
) -> bytes:
    kw.setdefault("src", OUTSTATION)
    kw.setdefault("dst", MASTER)
    kw.setdefault("control", RESP_CONTROL)
    return wire(response(fc, seq, iin, objects, ac), **kw)


CLASS_0 = bytes([60, 1, 0x06])  # g60v1, all objects
TIME_G50 = bytes([50, 1, 0x07, 1]) + bytes(6)  # g50v1, count 1, 48-bit time
CROB = (
    bytes([12, 1, 0x28]) + struct.pack("<HH", 1, 3) + bytes([0x41, 1]) + struct.pack("<II", 100, 100) + b"\0"
)
ANALOG_OUT = bytes([41, 2, 0x28]) + struct.pack("<HHhB", 1, 0, 42, 0)
CLEAR_RESTART = bytes([80, 1, 0x00, 7, 7, 0])  # g80v1 index 7 = 0
FILE_OPEN = bytes([70, 3, 0x5B, 1]) + struct.pack("<H", 4) + b"\0\0\0\0"


class Collected:
    def __init__(self) -> None:
        self.messages: list[OtMessage] = []
        self.anomalies: list[tuple[int, str, str]] = []

    # FlowConsumer
    def on_flow_end(self, flow: object, reason: str) -> None:
        return None

    def on_message(self, msg: OtMessage) -> None:
        self.messages.append(msg)

    # Sink
    def emit(self, event: Any) -> None:
        if event.event_type == "anomaly" and event.fields["anomaly"]["layer"] == "dnp3":
            a = event.fields["anomaly"]
            self.anomalies.append((event.fields["pcap_cnt"], a["event"], a["detail"]))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    @property
    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.anomalies]


def run(packets: list[Any]) -> tuple[Collected, Pipeline]:
    out = Collected()
    pipeline = Pipeline(PipelineConfig(decoder_names=("dnp3",)), consumers=[out], sinks=[out])
    pipeline.run(factory.ListSource(packets))
    return out, pipeline


def session(*exchanges: tuple[bytes, bytes], **kw: Any) -> list[Any]:
    return factory.tcp_session(dport=20000, requests=exchanges, **kw)


# -- framing and CRC -----------------------------------------------------------------------------


def test_crc_matches_the_catalogue_check_value_and_an_independent_implementation() -> None:
    assert dnp3.crc16_dnp(b"123456789", 0, 9) == 0xEA82
    data = bytes(range(7, 40))
    for off in range(3):
        for n in range(17):
            assert dnp3.crc16_dnp(data, off, n) == crc(data[off : off + n])


def test_two_byte_crc_table_is_the_byte_table_applied_twice() -> None:
    # The word table is built with byte-string operations; every entry must equal two byte steps.
    byte = dnp3._CRC_BYTE
    words = dnp3._crc_word_table()
    assert len(words) == 65536
    for x in range(65536):
        lo, hi = x & 0xFF, x >> 8
        assert words[x] == (byte[lo] >> 8) ^ byte[(hi ^ byte[lo]) & 0xFF], x


@pytest.mark.parametrize(("length", "total"), [(5, 10), (6, 13), (21, 28), (22, 31), (255, 292)])
def test_frame_length_counts_a_crc_per_16_byte_block(length: int, total: int) -> None:
    assert dnp3.frame_length(length) == total
    assert len(frame(bytes(length - 5))) == total


def test_message_length_needs_a_whole_checked_header() -> None:
    good = req(1, objects=CLASS_0)
    assert dnp3.message_length(good, 0, len(good)) == len(good)
    assert dnp3.message_length(good, 0, 9) == NEED_MORE
    assert dnp3.message_length(b"\x05\x64", 0, 2) == NEED_MORE
    assert dnp3.message_length(b"\x05\x65", 0, 2) == INVALID
    assert dnp3.message_length(b"\x05\x64\x04", 0, 3) == INVALID  # length below 5
    bad_crc = good[:8] + bytes([good[8] ^ 1]) + good[9:]
    assert dnp3.message_length(bad_crc, 0, len(bad_crc)) == INVALID


def test_probe_wants_start_bytes_length_and_header_crc() -> None:
    good = req(1, objects=CLASS_0)
    assert dnp3.probe(good, True) and dnp3.probe(resp(), False)
    assert not dnp3.probe(good[:9], True)
    assert not dnp3.probe(good[:3] + bytes([good[3] ^ 0x10]) + good[4:], True)  # header CRC no longer fits
    assert not dnp3.probe(b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01", True)  # Modbus/TCP
    assert not dnp3.probe(b"GET / HTTP/1.1\r\n", True)


# -- application layer through the pipeline -----------------------------------------------------


def test_read_and_response_pair_with_fields_latency_and_iin() -> None:
    objects = bytes([30, 2, 0x00, 0, 1]) + struct.pack("<BhBh", 1, 10, 1, -3)  # g30v2 range 0-1
    got, pipeline = run(session((req(1, seq=3, objects=CLASS_0), resp(seq=3, iin=0x9000, objects=objects))))
    rq, rs = got.messages
    assert got.anomalies == []
    assert (rq.direction, rq.function, rq.operation, rq.to_server) == ("request", 1, "read", True)
    assert rq.fields == {
        "src": MASTER,
        "dst": OUTSTATION,
        "link_control": {"dir": True, "prm": True, "fcb": False, "fcv": False, "function": 4},
        "application_control": {"fir": True, "fin": True, "con": False, "uns": False, "sequence": 3},
        "function_code": 1,
        "objects": [{"group": 60, "variation": 1, "qualifier": 6, "all": True}],
    }
    assert (rs.direction, rs.function, rs.operation, rs.to_server, rs.exception) == (
        RESPONSE,
        129,
        "read",
        False,
        False,
    )
    assert rs.request_cnt == rq.pcap_cnt and rs.latency_s == pytest.approx(0.01)
    assert rs.fields["src"] == OUTSTATION and rs.fields["link_control"]["dir"] is False
    assert rs.fields["iin"] == {"value": 0x9000, "indicators": ["need_time", "device_restart"]}
    assert rs.fields["objects"] == [{"group": 30, "variation": 2, "qualifier": 0, "range": [0, 1]}]
    stats = pipeline.decoders.stats["dnp3"]
    assert (stats.requests, stats.responses, stats.matched, stats.unanswered) == (1, 1, 1, 0)


@pytest.mark.parametrize(
    ("fc", "objects", "operation"),
    [
        (0, b"", "session"),
        (1, CLASS_0, "read"),
        (1, bytes([70, 5, 0x5B, 1]) + struct.pack("<H", 8) + bytes(8), "file"),  # file transport read
        (28, bytes([70, 7, 0x5B, 1]) + struct.pack("<H", 2) + b"\0\0", "read"),  # get file info
        (2, bytes([10, 1, 0x00, 0, 7, 0x55]), "write"),  # binary outputs, packed bits
        (2, TIME_G50, "time"),
        (2, CLEAR_RESTART, "session"),
        (2, bytes([70, 5, 0x5B, 1]) + struct.pack("<H", 5) + bytes(5), "file"),
        (2, bytes([120, 6, 0x5B, 1]) + struct.pack("<H", 3) + bytes(3), "auth"),
        (2, bytes([34, 1, 0x17, 1, 4]) + struct.pack("<H", 100), "config"),  # analog deadband
        (2, bytes([0, 245, 0x00, 0, 0, 1, 3]) + b"abc", "config"),  # device attribute (location)
        (2, CLEAR_RESTART + TIME_G50, "time"),  # time outranks the restart acknowledgement
        (3, CROB, "operate"),
        (4, CROB, "operate"),
        (5, ANALOG_OUT, "operate"),
        (6, CROB, "operate"),
        (7, bytes([20, 0, 0x06]), "operate"),  # immediate freeze
        (11, bytes([50, 2, 0x07, 1]) + bytes(10) + bytes([20, 0, 0x06]), "operate"),  # freeze at time
        (13, b"", "mode"),
        (14, b"", "mode"),
        (16, bytes([90, 1, 0x5B, 1]) + struct.pack("<H", 3) + b"app", "mode"),
        (17, bytes([90, 1, 0x06]), "mode"),
        (18, bytes([90, 1, 0x06]), "mode"),
        (15, bytes([60, 1, 0x06]), "config"),
        (19, b"", "config"),
        (21, bytes([60, 2, 0x06, 60, 3, 0x06]), "config"),
        (22, bytes([60, 2, 0x06, 1, 0, 0x06]), "config"),
        (31, bytes([70, 8, 0x5B, 1]) + struct.pack("<H", 4) + b"/cfg", "program"),
        (20, bytes([60, 2, 0x06]), "subscribe"),
        (23, b"", "time"),
        (24, b"", "time"),
        (25, FILE_OPEN, "file"),
        (26, bytes([70, 4, 0x5B, 1]) + struct.pack("<H", 2) + b"\0\0", "file"),
        (27, FILE_OPEN, "file"),
        (29, bytes([70, 2, 0x5B, 1]) + struct.pack("<H", 2) + b"\0\0", "file"),
        (30, bytes([70, 4, 0x5B, 1]) + struct.pack("<H", 2) + b"\0\0", "file"),
        (32, bytes([120, 4, 0x07, 1, 1, 0]), "auth"),  # session key status request
        (33, bytes([120, 3, 0x07, 1]) + bytes(6), "auth"),
        (112, b"", "unknown"),
    ],
)
def test_request_operation_classes(fc: int, objects: bytes, operation: str) -> None:
    got, _ = run(session((req(fc, objects=objects), b"")))
    (msg,) = got.messages
    assert (msg.function, msg.operation) == (fc, operation)
    assert got.kinds == (["unknown_function"] if operation == "unknown" else [])


def test_responses_take_the_request_class_and_unsolicited_is_subscribe() -> None:
    got, pipeline = run(
        session(
            (req(2, seq=1, objects=TIME_G50), resp(seq=1)),
            (req(5, seq=2, objects=CROB), resp(seq=2, objects=CROB)),
            (b"", resp(seq=9, fc=130, iin=0x0200, ac=0xF9)),  # unsolicited, FIR FIN CON UNS
            (wire(request(0, ac=0xD9)), b""),  # its confirm: FIR FIN UNS, sequence 9
            (b"", resp(seq=4)),  # no request with sequence 4
        )
    )
    ops = [(m.direction, m.function, m.operation) for m in got.messages]
    assert ops == [
        ("request", 2, "time"),
        (RESPONSE, 129, "time"),
        ("request", 5, "operate"),
        (RESPONSE, 129, "operate"),
        (RESPONSE, 130, "subscribe"),
        ("request", 0, "session"),
        (RESPONSE, 129, "unknown"),
    ]
    unsolicited = got.messages[4]
    assert unsolicited.request_cnt == 0 and unsolicited.fields["iin"]["indicators"] == ["class_1_events"]
    stats = pipeline.decoders.stats["dnp3"]
    assert (stats.matched, stats.unmatched_responses) == (2, 1)


def test_confirm_of_an_unsolicited_response_has_uns_and_no_anomaly() -> None:
    got, _ = run(session((b"", resp(seq=7, fc=130, ac=0xF7)), (wire(request(0, ac=0xD7)), b"")))
    assert [(m.function, m.operation) for m in got.messages] == [(130, "subscribe"), (0, "session")]
    assert got.messages[1].fields["application_control"]["uns"] is True
    assert got.anomalies == []


def test_secure_authentication_around_a_critical_request() -> None:
    challenge = bytes([120, 1, 0x5B, 1]) + struct.pack("<H", 4) + bytes(4)
    got, pipeline = run(
        session(
            (req(5, seq=4, objects=CROB), resp(seq=4, fc=131, objects=challenge)),
            (req(32, seq=4, objects=bytes([120, 2, 0x5B, 1, 2, 0, 0, 0])), resp(seq=4)),
        )
    )
    assert [(m.function, m.operation) for m in got.messages] == [
        (5, "operate"),
        (131, "auth"),
        (32, "auth"),
        (129, "operate"),  # the answer to the operate, once the challenge was met
    ]
    stats = pipeline.decoders.stats["dnp3"]
    assert (stats.matched, stats.unanswered, stats.unmatched_responses) == (1, 0, 0)
    assert got.messages[3].request_cnt == got.messages[0].pcap_cnt


def test_error_iin_marks_the_response_as_an_exception() -> None:
    got, _ = run(session((req(1, objects=bytes([99, 1, 0x06])), resp(iin=0x0002))))
    assert got.messages[1].exception and got.messages[1].fields["iin"]["indicators"] == ["object_unknown"]
    got, _ = run(session((req(1, objects=CLASS_0), resp(iin=0x0100 | 0x0008))))
    assert not got.messages[1].exception


def test_multi_fragment_response_carries_the_request_class_through_its_sequence() -> None:
    part = bytes([1, 2, 0x00, 0, 3]) + bytes(4)

    def fragment(ac: int) -> bytes:
        return wire(response(objects=part, ac=ac), src=OUTSTATION, dst=MASTER, control=RESP_CONTROL)

    got, pipeline = run(
        session(
            (req(1, seq=5, objects=bytes([1, 2, 0x06])), fragment(0xA5)),  # FIR CON, sequence 5
            (req(0, seq=5), fragment(0x26)),  # CON, sequence 6
            (req(0, seq=6), fragment(0x47)),  # FIN, sequence 7
        )
    )
    responses = [m for m in got.messages if m.direction == RESPONSE]
    assert [m.operation for m in responses] == ["read", "read", "read"]
    assert responses[0].request_cnt > 0 and responses[1].request_cnt == 0
    stats = pipeline.decoders.stats["dnp3"]
    assert (stats.matched, stats.unmatched_responses, stats.unanswered) == (1, 0, 0)


def test_same_sequence_on_two_outstations_pairs_by_link_addresses() -> None:
    got, _ = run(
        session(
            (req(1, seq=2, objects=CLASS_0, dst=10) + req(2, seq=2, objects=TIME_G50, dst=11), b""),
            (b"", resp(seq=2, src=11) + resp(seq=2, src=10)),
        )
    )
    assert [(m.fields["src"], m.operation) for m in got.messages if m.direction == RESPONSE] == [
        (11, "time"),
        (10, "read"),
    ]


def test_unanswerable_requests_do_not_wait_for_a_response() -> None:
    _, pipeline = run(session((req(6, objects=CROB), b""), (req(1, objects=CLASS_0, dst=0xFFFF), b"")))
    assert pipeline.decoders.stats["dnp3"].unanswered == 0
    _, pipeline = run(session((req(1, objects=CLASS_0), b"")))
    assert pipeline.decoders.stats["dnp3"].unanswered == 1


# -- framing and transport -----------------------------------------------------------------------


def _long_response() -> bytes:
    points = 200  # g30v1: 5 bytes each, a 1011-byte fragment in five transport segments
    return response(
        seq=1, objects=bytes([30, 1, 0x01]) + struct.pack("<HH", 0, points - 1) + bytes(5 * points)
    )


def test_transport_segments_reassemble_across_link_frames_and_tcp_segments() -> None:
    data = wire(_long_response(), src=OUTSTATION, dst=MASTER, control=RESP_CONTROL)
    assert len(data) > 3 * 255
    cuts = [0, 7, 300, 301, 650, len(data)]  # inside a header, inside blocks, inside a CRC
    parts = [data[a:b] for a, b in itertools.pairwise(cuts)]
    exchanges = [(req(1, seq=1, objects=bytes([30, 1, 0x06])), parts[0])] + [(b"", p) for p in parts[1:]]
    got, _ = run(session(*exchanges))
    rq, rs = got.messages
    assert got.anomalies == []
    assert rs.fields["transport_segments"] == 5 and rs.operation == "read" and rs.request_cnt == rq.pcap_cnt
    assert rs.fields["objects"] == [{"group": 30, "variation": 1, "qualifier": 1, "range": [0, 199]}]
    assert rs.pcap_cnt == max(m.pcap_cnt for m in got.messages)


def test_several_frames_in_one_segment() -> None:
    got, _ = run(session((req(1, seq=1, objects=CLASS_0) + req(0, seq=0) + req(23, seq=2), b"")))
    assert [m.function for m in got.messages] == [1, 0, 23]
    assert len({m.pcap_cnt for m in got.messages}) == 1


def test_udp_datagram_with_several_frames_and_broken_ones() -> None:
    frames = req(1, seq=1, objects=CLASS_0) + req(23, seq=2)
    got, _ = run(
        [
            factory.udp(dport=20000, data=frames),
            factory.udp(factory.SERVER, factory.CLIENT, 20000, 40000, resp(seq=1)),
            factory.udp(dport=20000, data=frames[:-3]),
            factory.udp(dport=20000, data=b"\x05\x64junk!!!!!"),
        ]
    )
    assert [(m.function, m.operation, m.to_server) for m in got.messages] == [
        (1, "read", True),
        (23, "time", True),
        (129, "read", False),
        (1, "read", True),
    ]
    assert got.kinds == ["truncated_frame", "bad_header"]


def test_bad_data_crc_drops_the_frame() -> None:
    good = req(1, objects=CLASS_0)
    corrupt = good[:12] + bytes([good[12] ^ 0xFF]) + good[13:]
    got, _ = run(session((corrupt + req(23, seq=1), b"")))
    assert [m.function for m in got.messages] == [23]
    assert got.kinds == ["bad_crc"]


def test_bad_header_resynchronises_on_the_next_frame() -> None:
    good = req(1, objects=CLASS_0)
    got, _ = run(session((req(23), b""), (b"\x05\x64\x0b\xc4junkjunk" + good, b"")))
    assert [m.function for m in got.messages] == [23, 1]
    assert got.kinds == ["bad_header"]


def _transport(th: int, app: bytes, src: int = MASTER) -> bytes:
    return frame(bytes([th]) + app, src=src)


def test_transport_anomalies() -> None:
    app = request(1, objects=CLASS_0)
    got, _ = run(
        session(
            (_transport(0x81, app), b""),  # no first segment
            (_transport(0x40, app[:2]) + _transport(0x02, app[2:]), b""),  # FIR seq 0, then seq 2: gap
            (_transport(0x40, app[:2]) + _transport(0x41, app[:2]), b""),  # new first before the end
            (_transport(0x01, app[:2]) + _transport(0x82, app[2:]), b""),  # a repeat (ignored), then the end
        )
    )
    assert got.kinds == ["transport_orphan", "transport_sequence", "transport_incomplete"]
    (msg,) = got.messages
    assert msg.function == 1 and msg.fields["transport_segments"] == 2


def test_fragment_longer_than_64_segments_is_dropped() -> None:
    data = wire(
        response(objects=bytes(dnp3.MAX_FRAGMENT + 100)), src=OUTSTATION, dst=MASTER, control=RESP_CONTROL
    )
    got, _ = run(session((b"", data)))
    assert got.messages == [] and got.kinds == ["fragment_too_long"]


def test_link_only_frames_are_silent_and_link_anomalies() -> None:
    status = frame(b"", control=0xC9)  # request link status
    reset = frame(b"", control=0xC0)  # reset link states
    link_status = frame(b"", src=OUTSTATION, dst=MASTER, control=0x0B)
    ack = frame(b"", src=OUTSTATION, dst=MASTER, control=0x00)
    got, _ = run(session((status + reset, link_status + ack)))
    assert got.messages == [] and got.anomalies == []
    app = bytes([0xC0]) + request(1, objects=CLASS_0)
    got, _ = run(
        session(
            (
                frame(app, control=0xC5)
                + frame(app, control=0xC2)
                + frame(app, control=0xC3)
                + frame(b"", control=0xC4),
                b"",
            )
        )
    )
    assert got.kinds == [
        "unknown_link_function",
        "unexpected_link_data",
        "unexpected_link_data",
        "bad_link_control",
        "bad_length",
    ]
    assert [m.function for m in got.messages] == [1]  # the FCV error is reported, the request still decoded


# -- object headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "kind"),
    [
        (request(2, objects=bytes([99, 1, 0x07, 1, 0])), "unknown_object"),
        (
            request(2, objects=bytes([12, 1, 0x28, 2, 0]) + bytes(13)),
            "bad_object",
        ),  # 2 CROBs announced, 1 sent
        (request(1, objects=bytes([1, 2, 0x00, 9, 3])), "bad_range"),
        (request(1, objects=bytes([1, 2, 0x0A])), "bad_qualifier"),
        (request(1, objects=bytes([1, 2])), "bad_object"),
        (request(1, objects=bytes([1, 1, 0x17, 2, 0])), "bad_object"),  # index list shorter than the count
        (request(2, objects=bytes([1, 1, 0x17, 1, 0, 0])), "bad_object"),  # bit-packed, with an index prefix
        (response(objects=bytes([70, 4, 0x5B, 1, 9, 0, 1])), "bad_object"),  # object size past the end
        (request(2, objects=CLEAR_RESTART, ac=0x80), "bad_app_control"),  # a request without FIN
    ],
)
def test_object_and_control_anomalies(app: bytes, kind: str) -> None:
    if app[1] < 129:
        got, _ = run(session((wire(app), b"")))
    else:
        got, _ = run(session((b"", wire(app, src=OUTSTATION, dst=MASTER, control=RESP_CONTROL))))
    assert len(got.messages) == 1 and kind in got.kinds


@pytest.mark.parametrize(
    ("app", "kind", "function", "operation"),
    [
        (bytes([0xC0, 129, 0x00]), "short_fragment", 129, "unknown"),  # no room for the IIN
        (response(130, ac=0xC0), "bad_app_control", 130, "subscribe"),  # unsolicited without UNS
        (response(129, ac=0xD0), "bad_app_control", 129, "unknown"),  # solicited with UNS
        (response(200), "unknown_function", 200, "unknown"),  # undefined code from the outstation
    ],
)
def test_response_anomalies(app: bytes, kind: str, function: int, operation: str) -> None:
    got, _ = run(session((b"", wire(app, src=OUTSTATION, dst=MASTER, control=RESP_CONTROL))))
    (msg,) = got.messages
    assert (msg.direction, msg.function, msg.operation, got.kinds) == (RESPONSE, function, operation, [kind])


def test_free_format_and_device_attribute_sizes() -> None:
    free = bytes([120, 2, 0x1B, 1, 3]) + b"abc"  # free format, 1-byte size prefix
    got, _ = run(session((b"", resp(objects=free + CLASS_0))))
    assert [o["group"] for o in got.messages[0].fields["objects"]] == [120, 60] and got.anomalies == []
    for objects in (
        bytes([0, 250, 0x00, 0, 0, 1, 9]) + b"short",
        bytes([0, 250, 0x00, 0, 0, 1]),
        bytes([1, 2, 0x08, 1]),
    ):
        got, _ = run(session((b"", resp(objects=objects))))
        assert got.kinds == ["bad_object"]


def test_object_list_is_bounded() -> None:
    got, _ = run(session((req(1, objects=bytes([1, 2, 0x06]) * 40), b"")))
    fields = got.messages[0].fields
    assert len(fields["objects"]) == dnp3.MAX_LISTED_OBJECTS and fields["objects_omitted"] == 8
    got, _ = run(session((req(1, objects=bytes([1, 2, 0x06]) * (dnp3.MAX_OBJECT_HEADERS + 1)), b"")))
    assert got.kinds == ["too_many_objects"]


def test_object_counts_and_prefixes_are_stepped_over() -> None:
    objects = b"".join(
        [
            bytes([1, 1, 0x00, 0, 9]) + b"\xff\x03",  # 10 packed bits: 2 bytes
            bytes([3, 1, 0x00, 0, 4]) + b"\x55\x01",  # 5 double bits: 2 bytes
            bytes([2, 2, 0x17, 2]) + (b"\x01" + bytes(7)) * 2,  # 1-byte index + 7 bytes, twice
            bytes([32, 5, 0x28, 1, 0]) + b"\x05\x00" + bytes(5),  # 2-byte index + flag and float
            bytes([51, 1, 0x07, 1]) + bytes(6),  # common time of occurrence
            bytes([110, 3, 0x00, 0, 0]) + b"abc",  # octet string of 3 bytes
            bytes([0, 252, 0x00, 0, 0]) + bytes([1, 2]) + b"ok",  # device attribute: type, length, value
            bytes([70, 5, 0x5B, 1]) + struct.pack("<H", 3) + b"xyz",  # size-prefixed file transport
            bytes([20, 1, 0x01]) + struct.pack("<HH", 0, 1) + bytes(10),  # 16-bit range, 5 bytes each
        ]
    )
    got, _ = run(session((req(1, objects=CLASS_0), resp(objects=objects))))
    assert got.anomalies == []
    listed = [
        (o["group"], o["variation"], o.get("range", o.get("count")))
        for o in got.messages[1].fields["objects"]
    ]
    assert listed == [
        (1, 1, [0, 9]),
        (3, 1, [0, 4]),
        (2, 2, 2),
        (32, 5, 1),
        (51, 1, 1),
        (110, 3, [0, 0]),
        (0, 252, [0, 0]),
        (70, 5, 1),
        (20, 1, [0, 1]),
    ]


# -- EVE -----------------------------------------------------------------------------------------


def test_eve_ot_event_carries_the_dnp3_object(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(
        factory.ListSource(session((req(5, seq=1, objects=CROB), resp(seq=1, objects=CROB))))
    )
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    ot = [e for e in events if e["event_type"] == "ot"]
    assert [e["ot"]["operation"] for e in ot] == ["operate", "operate"]
    assert ot[0]["app_proto"] == "dnp3" and ot[0]["dest_port"] == 20000
    record = ot[1]["dnp3"]
    assert {"function_code", "src", "dst", "application_control", "iin", "objects"} <= set(record)
    assert record["objects"] == [{"group": 12, "variation": 1, "qualifier": 0x28, "count": 1}]
    assert ot[1]["ot"]["request_pcap_cnt"] == ot[0]["pcap_cnt"]


# -- robustness ----------------------------------------------------------------------------------


class _Flow:
    def __init__(self, proto: int) -> None:
        self.proto = proto


def _decoder(proto: int) -> tuple[dnp3.Dnp3Decoder, list[OtMessage], list[Anomaly]]:
    messages: list[OtMessage] = []
    anomalies: list[Anomaly] = []
    ctx = DecoderContext(DecoderConfig(max_stream_buffer=4096), messages.append, anomalies.append)
    return dnp3.Dnp3Decoder(_Flow(proto), ctx), messages, anomalies  # type: ignore[arg-type]


def _tcp_packet(seq: int, payload: bytes) -> Packet:
    pkt = Packet()
    header = struct.pack("!HHII", 40000, 20000, seq, 0) + bytes(12)
    pkt.data = header + payload
    pkt.l4_off, pkt.payload_off, pkt.payload_len, pkt.proto = 0, 20, len(payload), 6
    return pkt


def _check_bounded(decoder: dnp3.Dnp3Decoder, messages: list[OtMessage]) -> None:
    assert len(decoder._partial) <= dnp3.MAX_PARTIAL
    assert all(len(p.data) <= dnp3.MAX_FRAGMENT for p in decoder._partial.values())
    assert len(decoder._continuations) <= dnp3.MAX_CONTINUATIONS
    assert len(decoder.pending) <= decoder.ctx.config.max_pending
    for framer in (decoder._c2s, decoder._s2c):
        assert framer is None or len(framer.buf) <= decoder.ctx.config.max_stream_buffer
    for m in messages:
        assert m.operation in OPERATIONS and len(m.fields["objects"]) <= dnp3.MAX_LISTED_OBJECTS


# Valid framing around random transport and application bytes reaches the deep layers; raw random
# bytes exercise the framer and header checks.
app_bytes = st.binary(min_size=0, max_size=600)
frames = st.lists(st.tuples(st.integers(0, 255), app_bytes, st.integers(0, 3)), min_size=1, max_size=6).map(
    lambda items: b"".join(
        wire(app, src=src, dst=OUTSTATION, tseq=t, segment=60)
        if src % 2
        else frame(bytes([t << 6 | src & 0x3F]) + app[:250], src=src)
        for src, app, t in items
    )
)


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, value in flips:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.lists(st.integers(1, 400), min_size=1, max_size=8),
    st.binary(max_size=300),
)
def test_random_and_mutated_bytes_never_raise_and_stay_bounded(
    data: bytes, flips: list[tuple[int, int]], cuts: list[int], noise: bytes
) -> None:
    stream = _mutate(data, flips) + noise + data
    tcp, messages, _ = _decoder(6)
    pos, seq = 0, 1000
    for n in cuts * 50:
        if pos >= len(stream):
            break
        chunk = stream[pos : pos + n]
        tcp.feed(_tcp_packet(seq, chunk), True, 1.0, 1, 0)
        pos += n
        seq += len(chunk)
    _check_bounded(tcp, messages)
    udp, messages, _ = _decoder(17)
    for payload in (stream, noise, _mutate(data, flips)):
        udp.parse(payload, 0, len(payload), False)
    _check_bounded(udp, messages)
    udp.close("test")
    tcp.close("test")


def test_reassembly_table_is_bounded_with_many_address_pairs() -> None:
    decoder, _, anomalies = _decoder(17)
    for src in range(dnp3.MAX_PARTIAL + 5):
        first = frame(bytes([0x40]) + request(1)[:1], src=src)
        decoder.parse(first, 0, len(first), True)
    assert len(decoder._partial) == dnp3.MAX_PARTIAL
    assert sum(a.kind == "transport_evicted" for a in anomalies) == 5


# -- operation classes on real captures ----------------------------------------------------------

CORPUS_CLASSES = [
    ("ICS-Security-Tools/dnp3/unsolcited_response_and_confirm.pcap", "session", 0),
    ("ICS-Security-Tools/dnp3/write_iin_and_response.pcap", "session", 2),  # g80: clear restart
    ("ICS-Security-Tools/openics/DNP3-Read.pcap", "read", 1),
    ("ICS-Security-Tools/dnp3/write_binary_output.pcap", "write", 2),
    ("ICS-Security-Tools/dnp3/direct_operate_analog_output.pcap", "operate", 5),
    ("ICS-Security-Tools/dnp3/direct_operate_no_ack_crob.pcap", "operate", 6),
    ("ICS-Security-Tools/dnp3/immediate_freeze.pcap", "operate", 7),
    ("ICS-Security-Tools/dnp3/cold_restart_and_response.pcap", "mode", 13),
    ("ICS-Security-Tools/dnp3/warm_restart_and_response.pcap", "mode", 14),
    ("ICS-Security-Tools/dnp3/disable_unsolcited_and_response.pcap", "config", 21),
    ("ICS-Security-Tools/dnp3/assign_class.pcap", "config", 22),
    ("ICS-Security-Tools/dnp3/enable_unsolicited_and_response.pcap", "subscribe", 20),
    ("ICS-Security-Tools/dnp3/unsolcited_response_and_confirm.pcap", "subscribe", 130),
    ("ICS-Security-Tools/dnp3/lan_time_sync.pcap", "time", 24),
    ("ICS-Security-Tools/dnp3/lan_time_sync.pcap", "time", 2),  # g50v3 last recorded time
    ("zeek/dnp3/dnp3_del_measure.pcap", "time", 23),
    ("ICS-Security-Tools/dnp3/file_read.pcap", "file", 25),
    ("ICS-Security-Tools/dnp3/file_write.pcap", "file", 2),  # g70v5 file transport
    ("ICS-Security-Tools/dnp3/file_delete.pcap", "file", 27),
    ("zeek/dnp3/dnp3_select_operate.pcap", "operate", 3),
]


@pytest.mark.corpus
@pytest.mark.parametrize(("capture", "operation", "fc"), CORPUS_CLASSES)
def test_operation_classes_on_real_captures(capture: str, operation: str, fc: int) -> None:
    path = CORPUS / "pcaps" / capture
    if not path.exists():
        pytest.skip("corpus not available")
    from agent.capture.files import ReplaySource

    out = Collected()
    source = ReplaySource([str(path)])
    try:
        Pipeline(PipelineConfig(), consumers=[out]).run(source)
    finally:
        source.close()
    messages = [m for m in out.messages if m.function == fc]
    assert messages and {m.operation for m in messages} == {operation}
    frames = {m.pcap_cnt for m in messages}
    assert all(m.operation == operation for m in out.messages if m.request_cnt in frames)
