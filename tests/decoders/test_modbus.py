import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import modbus
from agent.decoders.base import DecoderConfig, DecoderContext
from agent.decoders.message import MessageDecoder
from agent.flows import Flow
from tests import factory


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


READ_REQ = mbap(1, 1, bytes([3]) + struct.pack("!HH", 100, 2))
READ_RESP = mbap(1, 1, bytes([3, 4]) + struct.pack("!HH", 7, 8))


def test_request_response_fields_pairing_and_latency() -> None:
    msgs, anomalies, _ = factory.decode(factory.tcp_stream([(True, READ_REQ), (False, READ_RESP)]))
    assert not anomalies
    req, resp = msgs
    assert req.fields == {
        "transaction_id": 1,
        "unit_id": 1,
        "function_code": 3,
        "address": 100,
        "quantity": 2,
    }
    assert (req.direction, req.operation, req.to_server) == ("request", "read", True)
    assert resp.fields["byte_count"] == 4 and resp.fields["values_count"] == 2
    assert (resp.direction, resp.operation, resp.request_cnt) == ("response", "read", req.pcap_cnt)
    assert resp.latency_s == pytest.approx(0.01)


def test_messages_split_across_segments_and_batched_in_one() -> None:
    two = READ_REQ + mbap(2, 1, bytes([6]) + struct.pack("!HH", 5, 99))
    segments = [(True, two[:5]), (True, two[5:20]), (True, two[20:])]
    msgs, anomalies, _ = factory.decode(factory.tcp_stream(segments))
    assert not anomalies
    assert [(m.fields["transaction_id"], m.function, m.operation) for m in msgs] == [
        (1, 3, "read"),
        (2, 6, "write"),
    ]
    assert msgs[1].fields["value"] == 99
    assert msgs[0].pcap_cnt == 5 and msgs[1].pcap_cnt == 6  # reported with the segment completing it


def test_exception_response() -> None:
    resp = mbap(1, 1, bytes([0x83, 0x06]))
    msgs, anomalies, _ = factory.decode(factory.tcp_stream([(True, READ_REQ), (False, resp)]))
    assert msgs[1].exception and msgs[1].fields["exception_code"] == 6 and msgs[1].operation == "read"
    assert not anomalies
    bad = mbap(1, 1, bytes([0x83, 0x07]))
    _, anomalies, _ = factory.decode(factory.tcp_stream([(True, READ_REQ), (False, bad)]))
    assert [a.fields["anomaly"]["event"] for a in anomalies] == ["bad_exception_code"]


def test_write_multiple_registers_fields_and_length_check() -> None:
    pdu = bytes([16]) + struct.pack("!HHB", 40, 3, 6) + bytes(6)
    msgs, anomalies, _ = factory.decode(factory.tcp_stream([(True, mbap(9, 2, pdu))]))
    assert msgs[0].fields | {} == {"transaction_id": 9, "unit_id": 2, "function_code": 16, "address": 40,
                                   "quantity": 3, "byte_count": 6, "values_count": 3}  # fmt: skip
    assert not anomalies
    short = bytes([16]) + struct.pack("!HHB", 40, 3, 6) + bytes(4)
    _, anomalies, _ = factory.decode(factory.tcp_stream([(True, mbap(9, 2, short))]))
    assert [a.fields["anomaly"]["event"] for a in anomalies] == ["bad_length"]


def test_device_identification_objects() -> None:
    req = mbap(3, 1, bytes([43, 14, 1, 0]))
    objects = b"".join(
        bytes([i, len(v)]) + v for i, v in enumerate([b"Schneider Electric", b"BMX P34 2020", b"v2.70"])
    )
    resp = mbap(3, 1, bytes([43, 14, 1, 1, 0, 0, 3]) + objects)
    msgs, anomalies, _ = factory.decode(factory.tcp_stream([(True, req), (False, resp)]))
    assert not anomalies
    assert msgs[0].operation == "diagnostic" and msgs[0].fields["read_device_id"] == 1
    assert msgs[1].fields["objects"] == {"vendor_name": "Schneider Electric", "product_code": "BMX P34 2020",
                                         "revision": "v2.70"}  # fmt: skip


@pytest.mark.parametrize(
    ("pdu", "operation"),
    [
        (bytes([1]) + struct.pack("!HH", 0, 8), "read"),
        (bytes([24]) + struct.pack("!H", 0), "read"),
        (bytes([5]) + struct.pack("!HH", 0, 0xFF00), "write"),
        (bytes([22]) + struct.pack("!HHH", 0, 0xFF, 0), "write"),
        (bytes([8]) + struct.pack("!HH", 0x00, 0), "diagnostic"),
        (bytes([8]) + struct.pack("!HH", 0x01, 0), "mode"),  # restart communications
        (bytes([8]) + struct.pack("!HH", 0x04, 0), "mode"),  # force listen-only: silences the device
        (bytes([8]) + struct.pack("!HH", 0x0A, 0), "config"),  # clear counters
        (bytes([17]), "diagnostic"),
        (bytes([20, 7, 6, 0, 1, 0, 0, 0, 1]), "file"),
        (bytes([43, 13]), "vendor"),  # CANopen general reference
        (bytes([100]), "vendor"),
        (bytes([90, 0, 0x10]), "session"),  # UMAS reserve
        (bytes([90, 0x2B, 0x23]), "write"),
        (bytes([90, 0x2B, 0x30]), "program"),  # UMAS "initialize upload" = logic PC -> PLC
        (bytes([90, 0x2B, 0x34]), "upload"),  # UMAS "download block" = logic PLC -> PC
        (bytes([90, 0x2B, 0x41]), "mode"),  # stop PLC
        (bytes([90, 0x2B, 0x58]), "diagnostic"),
        (bytes([90, 0x2B, 0x02]), "vendor"),
        (bytes([55]), "unknown"),
    ],
)
def test_operation_classes(pdu: bytes, operation: str) -> None:
    msgs, _, _ = factory.decode(factory.tcp_stream([(True, mbap(1, 1, pdu))]))
    assert msgs[0].operation == operation


def test_unknown_function_is_an_anomaly() -> None:
    _, anomalies, _ = factory.decode(factory.tcp_stream([(True, mbap(1, 1, bytes([55])))]))
    assert anomalies[0].fields["anomaly"]["event"] == "unknown_function"


def test_non_modbus_on_502_is_not_called_modbus() -> None:
    packets = factory.tcp_stream(
        [(True, b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\n\r\n")]
    )
    msgs, _, pipeline = factory.decode(packets)
    assert not msgs
    assert pipeline.stats.packets == len(packets)
    collector = factory.Collector()
    from agent.pipeline import Pipeline, PipelineConfig

    p = Pipeline(PipelineConfig(), consumers=[collector])
    p.run(factory.ListSource(packets))
    assert collector.flows[0].app_proto == "http"  # not modbus: named by what its payload is


def test_modbus_on_another_port_is_found_by_probe_and_by_override() -> None:
    packets = factory.tcp_stream([(True, READ_REQ), (False, READ_RESP)], dport=5020)
    msgs, _, _ = factory.decode(packets)
    assert [m.protocol for m in msgs] == ["modbus", "modbus"]
    assert msgs[1].operation == "read"
    msgs, _, _ = factory.decode(packets, ports={"modbus": (5020,)})
    assert len(msgs) == 2


def test_capture_starting_mid_stream_keeps_client_and_server_apart() -> None:
    # The first packet seen is the server's response: the server becomes the flow's "initiator",
    # but port 502 says which side is the client, so requests are still requests.
    packets = factory.tcp_stream([(False, READ_RESP), (True, READ_REQ), (False, READ_RESP)], handshake=False)
    msgs, _, _ = factory.decode(packets)
    assert [m.direction for m in msgs] == ["response", "request", "response"]
    assert msgs[2].request_cnt == msgs[1].pcap_cnt


def test_unanswered_requests_counted() -> None:
    _, _, pipeline = factory.decode(factory.tcp_stream([(True, READ_REQ)]))
    stats = pipeline.decoders.stats["modbus"]
    assert stats.requests == 1 and stats.unanswered == 1


def test_probe() -> None:
    assert modbus.probe(READ_REQ, True)
    assert modbus.probe(READ_REQ + READ_REQ, True)
    assert not modbus.probe(READ_REQ[:-1], True)
    assert not modbus.probe(b"\x00\x01\x00\x01\x00\x06\x01\x03\x00\x00\x00\x01", True)  # protocol id 1
    assert not modbus.probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", True)  # TLS client hello


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=300)), min_size=1, max_size=8))
def test_random_streams_never_raise(segments: list[tuple[bool, bytes]]) -> None:
    factory.decode(factory.tcp_stream([(True, READ_REQ), *segments]))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise(data: st.DataObject) -> None:
    frame = bytearray(READ_REQ + mbap(2, 1, bytes([43, 14, 1, 0])) + READ_RESP)
    for _ in range(data.draw(st.integers(1, 8))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    factory.decode(factory.tcp_stream([(True, bytes(frame[:20])), (False, bytes(frame[20:]))]))


class _GeneralPathOnly(modbus.ModbusDecoder):
    """The decoder without its polling fast path: every segment through MessageDecoder.feed_segment."""

    __slots__ = ()

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        MessageDecoder.feed_segment(self, to_server, seq, payload, ts, cnt, source)


def _run(cls: type[modbus.ModbusDecoder], segments: list[tuple[bool, int, bytes]]) -> tuple[list, list, dict]:
    messages: list = []
    anomalies: list = []
    ctx = DecoderContext(DecoderConfig(), messages.append, anomalies.append)
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 502, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
    decoder = cls(flow, ctx, True)
    for i, (to_server, seq, payload) in enumerate(segments):
        decoder.feed_segment(to_server, seq, payload, 1.0 + i * 0.01, i + 1, 0)
    decoder.close("shutdown")
    as_tuples = [
        (m.ts, m.pcap_cnt, m.to_server, m.direction, m.function, m.operation, list(m.fields.items()),
         m.request_cnt, m.latency_s, m.exception)
        for m in messages
    ]  # fmt: skip
    return as_tuples, [(a.pcap_cnt, a.kind, a.detail) for a in anomalies], ctx.stats["modbus"].as_dict()


_POLL = st.builds(
    lambda tid, fc, qty: mbap(tid, 1, bytes([fc]) + struct.pack("!HH", 0, qty)),
    st.integers(0, 3),
    st.integers(0, 7),
    st.sampled_from([0, 1, 10, 125, 126, 2000, 2001]),
)
_ANSWER = st.builds(
    lambda tid, fc, n, extra: mbap(tid, 1, bytes([fc, n]) + bytes(max(0, n + extra))),
    st.integers(0, 3),
    st.sampled_from([3, 4, 4, 0x83, 6]),
    st.sampled_from([0, 1, 2, 6, 20]),
    st.sampled_from([0, 0, 0, 1, -1]),
)
# Mostly polls and answers (what the fast path takes, and its near misses), some noise.
_POLL_PARTS = st.one_of(_POLL, _ANSWER, _POLL, _ANSWER, st.binary(min_size=1, max_size=20))  # fmt: skip


_WHERE = st.sampled_from(["next", "next", "next", "gap", "again"])  # in order, after a hole, repeated


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _POLL_PARTS, _WHERE), min_size=1, max_size=12))
def test_the_polling_fast_path_decodes_exactly_as_the_general_path(
    parts: list[tuple[bool, bytes, str]],
) -> None:
    """Polls and their answers take a fused path; on any stream (valid polls, bad quantities, odd
    lengths, exceptions, holes and repeats) it must emit what the general path emits."""
    next_seq = {True: 1000, False: 5000}
    segments = []
    for to_server, payload, where in parts:
        seq = next_seq[to_server] + (7 if where == "gap" else 0) - (len(payload) if where == "again" else 0)
        segments.append((to_server, seq & 0xFFFFFFFF, payload))
        next_seq[to_server] = (seq + len(payload)) & 0xFFFFFFFF
    assert _run(modbus.ModbusDecoder, segments) == _run(_GeneralPathOnly, segments)


def test_the_fast_path_is_taken_for_polls() -> None:
    """The differential test above must compare two different code paths."""
    calls = []

    class Spy(_GeneralPathOnly):
        __slots__ = ()

        def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
            calls.append(length)
            super().parse(buf, off, length, from_client)

    # The first segment of each direction sets the stream position (general path); the second pair
    # is in order.
    second = (True, 1000 + len(READ_REQ), READ_REQ), (False, 5000 + len(READ_RESP), READ_RESP)
    segments = [(True, 1000, READ_REQ), (False, 5000, READ_RESP), *second]
    _run(Spy, segments)
    assert len(calls) == 4  # the general path parses all four ...
    calls.clear()

    class FastSpy(modbus.ModbusDecoder):
        __slots__ = ()

        def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
            calls.append(length)
            super().parse(buf, off, length, from_client)

    _run(FastSpy, segments)
    assert len(calls) == 2  # ... the fast path only the first pair
