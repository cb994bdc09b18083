"""MQTT decoder: fixed header, CONNECT variants, publish/subscribe pairing, v5 properties, anomalies."""

import json
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import mqtt
from agent.decoders.base import DecoderConfig, DecoderContext
from agent.flows import Flow
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory

# -- building MQTT from the standards' encodings ------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def props(raw: bytes = b"") -> bytes:
    return varint(len(raw)) + raw


def connect(
    client_id: str = "sensor-7",
    level: int = 4,
    flags: int = 0x02,
    keep_alive: int = 60,
    tail: bytes = b"",
    properties: bytes = b"",
) -> bytes:
    name = s("MQIsdp") if level == 3 else s("MQTT")
    head = name + bytes([level, flags]) + struct.pack("!H", keep_alive)
    if level == 5:
        head += props(properties)
    return packet(1, 0, head + s(client_id) + tail)


def connack(code: int = 0, v5: bool = False) -> bytes:
    return packet(2, 0, bytes([0, code]) + (props() if v5 else b""))


def publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    dup: bool = False,
    v5_props: bytes | None = None,
) -> bytes:
    body = s(topic) + (struct.pack("!H", packet_id) if qos else b"")
    if v5_props is not None:
        body += props(v5_props)
    return packet(3, (8 if dup else 0) | qos << 1 | (1 if retain else 0), body + payload)


def ack(kind: int, packet_id: int) -> bytes:
    return packet(kind, 2 if kind == mqtt.PUBREL else 0, struct.pack("!H", packet_id))


def subscribe(packet_id: int, topics: list[tuple[str, int]], v5: bool = False) -> bytes:
    body = struct.pack("!H", packet_id) + (props() if v5 else b"")
    return packet(8, 2, body + b"".join(s(t) + bytes([q]) for t, q in topics))


PING, PONG = packet(12, 0, b""), packet(13, 0, b"")


def decode(segments: list[tuple[bool, bytes]], dport: int = 1883, ports: dict | None = None):
    return factory.decode(factory.tcp_stream(segments, dport=dport), ports=ports)


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


# -- packets, fields and pairing ---------------------------------------------------------------------


def test_connect_fields_never_include_the_password() -> None:
    tail = s("will/topic") + s("gone") + s("operator") + s("hunter2")
    msgs, anomalies, _ = decode([(True, connect(flags=0xEE, tail=tail)), (False, connack())])
    assert not anomalies
    request, response = msgs
    assert request.fields == {
        "message_type": 1,
        "message_name": "connect",
        "protocol_name": "MQTT",
        "protocol_version": 4,
        "clean_session": True,
        "will": True,
        "username_present": True,
        "password_present": True,
        "keep_alive": 60,
        "will_qos": 1,
        "will_retain": True,
        "client_id": "sensor-7",
        "will_topic": "will/topic",
    }
    assert "hunter2" not in json.dumps(request.fields) and "operator" not in json.dumps(request.fields)
    assert (request.operation, request.function, request.direction) == ("session", 1, "request")
    assert (response.fields["return_code"], response.fields["session_present"]) == (0, False)
    assert response.request_cnt == request.pcap_cnt and not response.exception


def test_refused_connection_and_v31() -> None:
    msgs, anomalies, _ = decode([(True, connect(level=3)), (False, connack(code=5))])
    assert not anomalies
    assert msgs[0].fields["protocol_name"] == "MQIsdp" and msgs[0].fields["protocol_version"] == 3
    assert msgs[1].exception and msgs[1].fields["return_code"] == 5


def test_publish_qos1_and_qos2_flows_pair_by_packet_id() -> None:
    msgs, anomalies, _ = decode(
        [
            (True, connect()),
            (False, connack()),
            (True, publish("plant/line1/temp", b"21.5", qos=1, packet_id=10, retain=True)),
            (False, ack(mqtt.PUBACK, 10)),
            (True, publish("plant/line1/cmd", b"start", qos=2, packet_id=11)),
            (False, ack(mqtt.PUBREC, 11)),
            (True, ack(mqtt.PUBREL, 11)),
            (False, ack(mqtt.PUBCOMP, 11)),
            (False, publish("plant/line1/setpoint", b"30", qos=1, packet_id=10, dup=True)),  # broker delivers
            (True, ack(mqtt.PUBACK, 10)),
            (True, publish("plant/line1/temp", b"21.6")),
        ]
    )
    assert not anomalies
    pub = msgs[2]
    assert pub.fields == {
        "message_type": 3,
        "message_name": "publish",
        "dup": False,
        "qos": 1,
        "retain": True,
        "topic": "plant/line1/temp",
        "packet_id": 10,
        "payload_len": 4,
    }
    assert (pub.operation, msgs[3].operation, msgs[3].request_cnt) == ("write", "write", pub.pcap_cnt)
    assert [m.request_cnt for m in msgs[5:8]] == [msgs[4].pcap_cnt, 0, msgs[6].pcap_cnt]
    assert msgs[6].direction == "request" and msgs[7].operation == "write"
    delivery = msgs[8]
    assert (delivery.operation, delivery.fields["dup"], delivery.to_server) == ("subscribe", True, False)
    assert msgs[9].request_cnt == delivery.pcap_cnt and msgs[9].operation == "subscribe"
    assert msgs[10].fields["qos"] == 0 and "packet_id" not in msgs[10].fields


def test_subscribe_unsubscribe_ping_disconnect() -> None:
    unsub = packet(10, 2, struct.pack("!H", 3) + s("a/#"))
    msgs, anomalies, _ = decode(
        [
            (True, connect()),
            (False, connack()),
            (True, subscribe(2, [("a/#", 1), ("b/+/c", 2)])),
            (False, packet(9, 0, struct.pack("!H", 2) + b"\x01\x80")),
            (True, unsub),
            (False, ack(mqtt.UNSUBACK, 3)),
            (True, PING),
            (False, PONG),
            (True, packet(14, 0, b"")),
        ]
    )
    assert not anomalies
    sub, suback = msgs[2], msgs[3]
    assert sub.fields["topics"] == [{"topic": "a/#", "qos": 1}, {"topic": "b/+/c", "qos": 2}]
    assert sub.operation == "subscribe" and suback.request_cnt == sub.pcap_cnt
    assert suback.fields["return_codes"] == [1, 0x80] and suback.exception  # one filter refused
    assert msgs[4].fields["topics"] == [{"topic": "a/#"}] and msgs[5].request_cnt == msgs[4].pcap_cnt
    assert [(m.function, m.operation) for m in msgs[6:]] == [
        (12, "session"),
        (13, "session"),
        (14, "session"),
    ]
    assert msgs[7].request_cnt == msgs[6].pcap_cnt


def test_v5_properties_are_skipped_by_their_length() -> None:
    user_property = b"\x26" + s("site") + s("north")
    msgs, anomalies, _ = decode(
        [
            (True, connect(level=5, properties=b"\x11\x00\x00\x00\x3c" + user_property)),
            (False, connack(v5=True)),
            (True, publish("t/1", b"\x00\x01", qos=1, packet_id=5, v5_props=b"\x01\x01" + user_property)),
            (
                False,
                packet(4, 0, struct.pack("!H", 5) + b"\x10"),
            ),  # PUBACK, reason 0x10 no matching subscribers
            (True, subscribe(6, [("t/#", 0x2D)], v5=True)),
            (False, packet(9, 0, struct.pack("!H", 6) + props() + b"\x01")),
            (True, packet(15, 0, b"\x18" + props(b"\x15" + s("SCRAM-SHA-1")))),  # AUTH, re-authenticate
            (False, packet(14, 0, b"\x8e" + props())),  # DISCONNECT, session taken over
        ]
    )
    assert not anomalies
    assert msgs[0].fields["protocol_version"] == 5 and msgs[0].fields["client_id"] == "sensor-7"
    assert msgs[1].fields["reason_code"] == 0
    assert msgs[2].fields["topic"] == "t/1" and msgs[2].fields["payload_len"] == 2
    assert msgs[2].fields["properties_len"] == 2 + len(user_property)
    assert msgs[3].fields["reason_code"] == 0x10 and not msgs[3].exception and msgs[3].request_cnt
    assert msgs[4].fields["topics"] == [{"topic": "t/#", "qos": 1}] and msgs[5].fields["reason_codes"] == [1]
    assert (msgs[6].operation, msgs[6].fields["reason_code"]) == ("auth", 0x18)
    assert (msgs[7].operation, msgs[7].fields["reason_code"], msgs[7].to_server) == ("session", 0x8E, False)


def test_framing_across_segments_and_long_remaining_lengths() -> None:
    big = publish("big", bytes(20000), qos=1, packet_id=1)
    assert big[1:4] == varint(20000 + 7) and len(varint(20000 + 7)) == 3
    stream = big + PING
    msgs, anomalies, _ = decode(
        [
            (True, connect()[:5]),
            (True, connect()[5:]),
            (False, connack()),
            (True, stream[:300]),
            (True, stream[300:]),
            (False, ack(mqtt.PUBACK, 1) + PONG),
        ]
    )
    assert not anomalies
    assert [m.function for m in msgs] == [1, 2, 3, 12, 4, 13]
    assert msgs[2].fields["payload_len"] == 20000 and msgs[4].request_cnt == msgs[2].pcap_cnt


def test_packets_over_the_stream_buffer_are_decoded_from_their_start_and_skipped() -> None:
    image = publish("cam/1", bytes(range(256)) * 1200, qos=1, packet_id=9)  # 300 KiB, over the 256 KiB buffer
    huge_subscribe = subscribe(10, [("t/" + "x" * 60000, 0)] * 5)
    stream = PING + image + huge_subscribe + PING
    msgs, anomalies, pipeline = decode(
        [(True, connect()), (False, connack())]
        + [(True, stream[i : i + 1460]) for i in range(0, len(stream), 1460)]
        + [(False, PONG + ack(mqtt.PUBACK, 9) + PONG)]
    )
    assert [(m.fields["message_name"], m.fields.get("payload_len")) for m in msgs] == [
        ("connect", None),
        ("connack", None),
        ("pingreq", None),
        ("publish", 307200),
        ("pingreq", None),
        ("pingresp", None),
        ("puback", None),
        ("pingresp", None),
    ]
    assert msgs[3].fields["topic"] == "cam/1" and msgs[6].request_cnt == msgs[3].pcap_cnt
    assert events(anomalies) == ["oversize"]  # the SUBSCRIBE: skipped, not decoded
    assert pipeline.decoders.stats["mqtt"].buffer_overflows == 2


def test_anomalies_use_suricata_event_names() -> None:
    msgs, anomalies, _ = decode(
        [
            (True, PING),
            (False, connack()),  # before any CONNECT
            (True, connect()),
            (True, connect()),
            (True, publish("x", b"", qos=3, packet_id=1)),
            (True, bytes([0x00, 0x00])),  # reserved type 0
            (False, ack(mqtt.PUBACK, 99)),
            (False, packet(9, 0, struct.pack("!H", 42) + b"\x00")),
            (
                True,
                packet(8, 0, struct.pack("!H", 7) + s("z") + b"\x00"),
            ),  # SUBSCRIBE without its 0b0010 flags
        ]
    )
    assert events(anomalies) == [
        "unintroduced_message",
        "missing_connect",
        "double_connect",
        "invalid_qos_level",
        "unassigned_msg_type",
        "missing_publish",
        "missing_subscribe",
        "reserved_bits",
    ]
    assert msgs[5].operation == "unknown" and msgs[5].function == 0


def test_malformed_packets_are_anomalies_never_exceptions() -> None:
    v5 = connect(level=5)
    msgs, anomalies, _ = decode(
        [
            (True, v5),
            (False, connack(v5=True)),
            (True, packet(3, 2, s("t") + b"\x00\x01" + b"\x20")),  # property length 32 past the packet
            (True, packet(3, 0, b"\x00\x09ab")),  # topic length past the packet
            (True, packet(8, 2, struct.pack("!H", 1) + props())),  # SUBSCRIBE without a topic
            (True, b"\x30\xff\xff\xff\xff\x01"),  # remaining length over four bytes
        ]
    )
    assert events(anomalies)[:3] == ["malformed_traffic", "malformed_traffic", "malformed_traffic"]
    assert "bad_header" in events(anomalies)
    assert [m.function for m in msgs] == [1, 2, 3, 3, 8]


def test_probes() -> None:
    assert (
        mqtt.probe(connect(), True)
        and mqtt.probe(connect(level=3), True)
        and mqtt.probe(connect(level=5), True)
    )
    assert mqtt.probe(PING + PING, True) and mqtt.probe(publish("a", b"b"), False)
    assert not mqtt.probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True)
    assert not mqtt.probe(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", True)  # TLS ClientHello
    assert mqtt.probe_any_port(connect(), True) and not mqtt.probe_any_port(connect(), False)
    assert not mqtt.probe_any_port(PING, True)
    assert not mqtt.probe_any_port(packet(1, 0, s("MQTT") + bytes([9, 2, 0, 60]) + s("x")), True)


def test_found_on_another_port_only_by_a_connect() -> None:
    msgs, _, _ = decode([(True, connect()), (False, connack())], dport=17501)
    assert [m.function for m in msgs] == [1, 2]
    msgs, _, _ = decode([(True, PING), (False, PONG)], dport=17501)
    assert not msgs
    msgs, _, _ = decode([(True, PING), (False, PONG)], dport=17501, ports={"mqtt": (17501,)})
    assert [m.function for m in msgs] == [12, 13]


def test_eve_object(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    packets = factory.tcp_stream(
        [(True, connect()), (False, connack()), (True, publish("a/b", b"1"))], dport=1883
    )
    Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    ot = [e for e in map(json.loads, out.read_text().splitlines()) if e["event_type"] == "ot"]
    assert [e["mqtt"]["message_name"] for e in ot] == ["connect", "connack", "publish"]
    assert ot[2]["ot"] == {"protocol": "mqtt", "operation": "write", "direction": "request", "function": 3}
    assert ot[1]["ot"]["request_pcap_cnt"] == ot[0]["pcap_cnt"] and ot[0]["app_proto"] == "mqtt"


# -- robustness --------------------------------------------------------------------------------------

VALID_STREAM = (
    connect(level=5)
    + publish("a", b"xyz", qos=2, packet_id=3, v5_props=b"")
    + subscribe(4, [("a/#", 1)], v5=True)
    + PING
    + packet(14, 0, b"")
)


def _feed(segments: list[tuple[bool, bytes]]) -> None:
    config = DecoderConfig(max_stream_buffer=512, max_pending=8)
    ctx = DecoderContext(config, lambda m: None, lambda a: None)
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 1883, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
    decoder = mqtt.MqttDecoder(flow, ctx, True)
    seq = {True: 1000, False: 5000}
    for cnt, (to_server, data) in enumerate(segments, 1):
        decoder.feed_segment(to_server, seq[to_server], data, float(cnt), cnt, 0)
        seq[to_server] += len(data)
        for framer in (decoder._c2s, decoder._s2c):
            assert framer is not None and len(framer.buf) <= config.max_stream_buffer
        assert len(decoder.pending) <= config.max_pending
    decoder.close("shutdown")
    assert len(decoder.pending) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=700)), min_size=1, max_size=10))
def test_random_streams_never_raise_and_stay_bounded(segments: list[tuple[bool, bytes]]) -> None:
    _feed([(True, connect()), *segments])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_streams_never_raise(data: st.DataObject) -> None:
    stream = bytearray(VALID_STREAM)
    for _ in range(data.draw(st.integers(1, 10))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    _feed([(True, bytes(stream[:cut])), (False, bytes(stream[cut:])), (True, bytes(stream))])


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_random_payload_through_the_pipeline(payload: bytes) -> None:
    decode([(True, connect()), (False, payload), (True, payload)])
