"""OPC UA binary decoder: UA TCP messages, secure channels, services and their classes, pairing,
chunks, security modes, identity, probing, anomalies, and robustness (hypothesis).

The traffic is built here from OPC 10000-6 (message header, secure channel headers, the binary
encoding of NodeIds, strings, Variants and DataValues) and OPC 10000-4 (service parameters).
"""

import json
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import opcua
from agent.decoders.base import DecoderConfig, DecoderContext
from agent.flows import Flow
from agent.pipeline import Pipeline, PipelineConfig
from tests import factory

NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"
BASIC256SHA256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
EXT_NONE = b"\x00\x00\x00"  # ExtensionObject: null NodeId, no body


def string(value: str | bytes | None) -> bytes:
    if value is None:
        return struct.pack("<i", -1)
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("<i", len(data)) + data


def nid(ident: int, ns: int = 0) -> bytes:
    if ns == 0 and ident < 256:
        return bytes([0, ident])
    if ns < 256 and ident < 65536:
        return bytes([1, ns]) + struct.pack("<H", ident)
    return b"\x02" + struct.pack("<HI", ns, ident)


def request_header(handle: int) -> bytes:
    return nid(0) + struct.pack("<qII", 0, handle, 0) + string(None) + struct.pack("<I", 10000) + EXT_NONE


def response_header(handle: int, result: int = 0) -> bytes:
    return struct.pack("<qII", 0, handle, result) + b"\x00" + struct.pack("<i", -1) + EXT_NONE


def secure(kind: bytes, body: bytes, request_id: int, chunk: bytes = b"F", seq: int | None = None) -> bytes:
    payload = struct.pack("<IIII", 7, 1, seq if seq is not None else request_id, request_id) + body
    return kind + chunk + struct.pack("<I", 8 + len(payload)) + payload


def msg(service: int, body: bytes, request_id: int, chunk: bytes = b"F") -> bytes:
    return secure(b"MSG", nid(service) + body, request_id, chunk)


def opn(policy: str, body: bytes) -> bytes:
    payload = struct.pack("<I", 0) + string(policy) + string(None) + string(None) + body
    return b"OPNF" + struct.pack("<I", 8 + len(payload)) + payload


def hello(url: str = "opc.tcp://plc:4840") -> bytes:
    payload = struct.pack("<IIIII", 0, 65536, 65536, 0, 0) + string(url)
    return b"HELF" + struct.pack("<I", 8 + len(payload)) + payload


ACK = b"ACKF" + struct.pack("<IIIIII", 28, 0, 65536, 65536, 1 << 24, 0)


def open_request(handle: int = 1, request_id: int = 1, request_type: int = 0, mode: int = 1) -> bytes:
    body = nid(446) + request_header(handle) + struct.pack("<IIIiI", 0, request_type, mode, -1, 600000)
    return opn(NONE, struct.pack("<II", 1, request_id) + body)


def open_response(handle: int = 1, request_id: int = 1) -> bytes:
    token = struct.pack("<IIqI", 7, 1, 0, 600000)
    body = nid(449) + response_header(handle) + struct.pack("<I", 0) + token + string(None)
    return opn(NONE, struct.pack("<II", 1, request_id) + body)


HANDSHAKE = [(True, hello()), (False, ACK), (True, open_request()), (False, open_response())]


def data_value(value: int) -> bytes:
    return b"\x03" + b"\x06" + struct.pack("<i", value) + struct.pack("<I", 0)  # Int32 value + status


def write_request(handle: int, attributes: list[int]) -> bytes:
    items = b"".join(
        nid(1000 + i, ns=2) + struct.pack("<I", a) + string(None) + data_value(i)
        for i, a in enumerate(attributes)
    )
    return request_header(handle) + struct.pack("<i", len(attributes)) + items


def call_request(handle: int, methods: list[tuple[int, int]]) -> bytes:
    # each: object, method, one Int32 input argument and one String array argument
    args = struct.pack("<i", 2) + b"\x06" + struct.pack("<i", 5)
    args += b"\x8c" + struct.pack("<i", 2) + string("a") + string(None)
    items = b"".join(nid(2253) + nid(m, ns=ns) + args for ns, m in methods)
    return request_header(handle) + struct.pack("<i", len(methods)) + items


def read_request(handle: int) -> bytes:
    item = nid(2258) + struct.pack("<I", 13) + string(None) + struct.pack("<H", 0) + string(None)
    return request_header(handle) + struct.pack("<dI", 0.0, 0) + struct.pack("<i", 1) + item


def application(uri: str, product: str | None, name: str, kind: int) -> bytes:
    return (
        string(uri)
        + string(product)
        + b"\x02"
        + string(name)
        + struct.pack("<I", kind)
        + string(None)
        + string(None)
        + struct.pack("<i", 1)
        + string("opc.tcp://plc:4840")
    )


SERVER_APP = application("urn:acme:plc17", "urn:acme:controller", "ACME PLC 17", 0)


def endpoint(mode: int, policy: str) -> bytes:
    token = string("anonymous") + struct.pack("<I", 0) + string(None) + string(None) + string(None)
    return (
        string("opc.tcp://plc:4840")
        + SERVER_APP
        + string(b"\x30\x82cert")
        + struct.pack("<I", mode)
        + string(policy)
        + struct.pack("<i", 1)
        + token
        + string("http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary")
        + b"\x01"
    )


def endpoints_response(handle: int) -> bytes:
    return response_header(handle) + struct.pack("<i", 2) + endpoint(1, NONE) + endpoint(3, BASIC256SHA256)


def decode(segments: list[tuple[bool, bytes]], dport: int = 4840, **kwargs: Any):
    return factory.decode(factory.tcp_stream(segments, dport=dport), **kwargs)


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


def summary(messages: list) -> list[tuple]:
    return [(m.fields["message_type"], m.function, m.direction, m.operation) for m in messages]


# -- transport and secure channel ------------------------------------------------------------------


def test_hello_acknowledge_and_open_secure_channel_without_security() -> None:
    msgs, anomalies, _ = decode(HANDSHAKE)
    assert not anomalies
    assert summary(msgs) == [
        ("HEL", 0, "request", "session"),
        ("ACK", 0, "response", "session"),
        ("OPN", 446, "request", "session"),
        ("OPN", 449, "response", "session"),
    ]
    hel, ack, req, resp = msgs
    assert hel.fields == {
        "message_type": "HEL",
        "chunk_type": "F",
        "message_size": 50,
        "protocol_version": 0,
        "receive_buffer_size": 65536,
        "send_buffer_size": 65536,
        "max_message_size": 0,
        "max_chunk_count": 0,
        "endpoint_url": "opc.tcp://plc:4840",
    }
    assert ack.request_cnt == hel.pcap_cnt and ack.latency_s == pytest.approx(0.01)
    assert ack.fields["max_message_size"] == 1 << 24
    assert req.fields["security_policy_uri"] == NONE
    assert (req.fields["request_type"], req.fields["security_mode"]) == ("issue", "None")
    assert (req.fields["request_id"], req.fields["request_handle"], req.fields["service"]) == (
        1,
        1,
        "OpenSecureChannelRequest",
    )
    assert resp.request_cnt == req.pcap_cnt and resp.fields["revised_lifetime"] == 600000
    assert (resp.fields["service_result"], resp.fields["security_mode"], resp.exception) == (0, "None", False)


def test_renew_and_close_secure_channel() -> None:
    close = secure(b"CLO", nid(452) + request_header(9), 9)
    msgs, anomalies, pipeline = decode(
        [*HANDSHAKE, (True, open_request(8, 8, request_type=1)), (True, close)]
    )
    assert not anomalies
    assert msgs[4].fields["request_type"] == "renew"
    assert summary(msgs[5:]) == [("CLO", 452, "request", "session")]
    # CloseSecureChannel has no response: the renew is the only request left unanswered at the end.
    assert pipeline.decoders.stats["opcua"].unanswered == 1


def test_error_rejecting_a_hello_is_an_exception_response() -> None:
    error = b"ERRF" + struct.pack("<I", 8 + 4 + 4 + 7) + struct.pack("<I", 0x807E0000) + string("bad url")
    msgs, anomalies, _ = decode([(True, hello()), (False, error)])
    assert not anomalies
    err = msgs[1]
    assert (err.direction, err.exception, err.request_cnt) == ("response", True, msgs[0].pcap_cnt)
    assert (err.fields["error"], err.fields["reason"]) == (0x807E0000, "bad url")


# -- services and operation classes -----------------------------------------------------------------


def test_read_pairs_by_request_id_and_handle_with_latency() -> None:
    response = response_header(42) + struct.pack("<i", 1) + data_value(7) + struct.pack("<i", -1)
    msgs, anomalies, _ = decode(
        [*HANDSHAKE, (True, msg(631, read_request(42), 5)), (False, msg(634, response, 5))]
    )
    assert not anomalies
    req, resp = msgs[4:]
    assert (req.function, req.operation, req.fields["service"], req.fields["request_handle"]) == (
        631,
        "read",
        "ReadRequest",
        42,
    )
    assert (req.fields["sequence_number"], req.fields["request_id"], req.fields["token_id"]) == (5, 5, 1)
    assert (resp.function, resp.operation, resp.request_cnt) == (634, "read", req.pcap_cnt)
    assert resp.latency_s == pytest.approx(0.01) and resp.fields["service_result"] == 0


def test_service_fault_and_bad_service_result_are_exceptions_taking_the_request_class() -> None:
    fault = msg(397, response_header(3, 0x80340000), 3)
    msgs, anomalies, _ = decode([*HANDSHAKE, (True, msg(712, call_request(3, [(2, 5)]), 3)), (False, fault)])
    assert not anomalies
    resp = msgs[5]
    assert (resp.function, resp.fields["service"], resp.operation, resp.exception) == (
        397,
        "ServiceFault",
        "operate",
        True,
    )
    assert resp.fields["service_result"] == 0x80340000 and resp.request_cnt == msgs[4].pcap_cnt


@pytest.mark.parametrize(
    ("attributes", "operation"),
    [([13], "write"), ([13, 13], "write"), ([3], "config"), ([13, 19, 13], "config"), ([], "write")],
)
def test_write_of_value_is_write_and_of_other_attributes_config(
    attributes: list[int], operation: str
) -> None:
    msgs, anomalies, _ = decode(
        [
            *HANDSHAKE,
            (True, msg(673, write_request(4, attributes), 4)),
            (False, msg(676, response_header(4) + struct.pack("<ii", 0, -1), 4)),
        ]
    )
    assert not anomalies
    req, resp = msgs[4:]
    assert (req.function, req.operation, resp.operation) == (673, operation, operation)
    assert req.fields["attribute_ids"] == list(dict.fromkeys(attributes))
    assert req.fields["nodes"] == len(attributes)


@pytest.mark.parametrize(
    ("methods", "operation"),
    [
        ([(2, 5001)], "operate"),  # a vendor method on the controller
        ([(0, 12886)], "mode"),  # Server.RequestServerStateChange
        ([(0, 11492)], "subscribe"),  # Server.GetMonitoredItems
        ([(0, 11492), (3, 77)], "operate"),
        ([(0, 11492), (0, 12886)], "mode"),
    ],
)
def test_call_is_classified_by_its_method_node_ids(methods: list[tuple[int, int]], operation: str) -> None:
    msgs, anomalies, _ = decode([*HANDSHAKE, (True, msg(712, call_request(6, methods), 6))])
    assert not anomalies
    call = msgs[4]
    assert (call.function, call.operation) == (712, operation)
    assert call.fields["methods"] == [f"ns={ns};i={m}" if ns else f"i={m}" for ns, m in methods]


@pytest.mark.parametrize(
    ("service", "operation"),
    [
        (527, "read"),
        (533, "read"),
        (554, "read"),
        (664, "read"),
        (560, "read"),
        (615, "read"),
        (422, "discovery"),
        (428, "discovery"),
        (12208, "discovery"),
        (461, "session"),
        (467, "session"),
        (473, "session"),
        (479, "session"),
        (787, "subscribe"),
        (826, "subscribe"),
        (751, "subscribe"),
        (781, "subscribe"),
        (847, "subscribe"),
        (488, "config"),
        (494, "config"),
        (500, "config"),
        (506, "config"),
        (437, "config"),
        (12211, "config"),
        (700, "write"),
        (410, "diagnostic"),
    ],
)
def test_service_classes_follow_domain_md(service: int, operation: str) -> None:
    # Only the request header is sent: the details are optional evidence, the class is not.
    response = {12208: 12209, 12211: 12212}.get(service, service + 3)  # NodeIds.csv
    msgs, _, _ = decode(
        [
            *HANDSHAKE,
            (True, msg(service, request_header(11), 11)),
            (False, msg(response, response_header(11), 11)),
        ]
    )
    req, resp = msgs[4:]
    assert (req.function, req.operation, req.direction) == (service, operation, "request")
    assert (resp.function, resp.operation, resp.request_cnt) == (response, operation, req.pcap_cnt)


def test_unknown_service_is_unknown_and_an_anomaly() -> None:
    msgs, anomalies, _ = decode([*HANDSHAKE, (True, msg(9999, request_header(2), 2))])
    assert (msgs[4].function, msgs[4].operation) == (9999, "unknown")
    assert events(anomalies) == ["unknown_service"]


def test_response_without_request_infers_the_class_from_the_response_type() -> None:
    msgs, _, pipeline = decode([(False, msg(676, response_header(77) + struct.pack("<ii", 0, -1), 77))])
    assert (msgs[0].operation, msgs[0].request_cnt) == ("write", 0)
    assert pipeline.decoders.stats["opcua"].unmatched_responses == 1


# -- identity (CONTRACTS.md) ----------------------------------------------------------------------------


def test_get_endpoints_response_carries_the_server_identity_and_offered_security() -> None:
    msgs, anomalies, _ = decode(
        [
            *HANDSHAKE,
            (True, msg(428, request_header(2) + string(None) * 1 + struct.pack("<ii", -1, -1), 2)),
            (False, msg(431, endpoints_response(2), 2)),
        ]
    )
    assert not anomalies
    resp = msgs[5]
    assert resp.operation == "discovery"
    assert resp.fields["identity"] == {
        "application_uri": "urn:acme:plc17",
        "product": "urn:acme:controller",
        "name": "ACME PLC 17",
        "device_type": "server",
    }
    assert [(e["security_mode"], e["security_policy_uri"]) for e in resp.fields["endpoints"]] == [
        ("None", NONE),
        ("SignAndEncrypt", BASIC256SHA256),
    ]


def test_create_session_carries_both_identities_and_activate_session_the_token_type() -> None:
    client_app = application("urn:scada:hmi1", None, "HMI 1", 1)
    create = request_header(3) + client_app + string("urn:acme:plc17") + string("opc.tcp://plc:4840")
    created = (
        response_header(3)
        + nid(5001, ns=1)
        + nid(5002, ns=1)
        + struct.pack("<d", 60000.0)
        + string(None)
        + string(None)
        + struct.pack("<i", 1)
        + endpoint(1, NONE)
    )
    token = string("username_basic") + string("operator") + string(b"secret") + string(None)
    activate = (
        request_header(4)
        + string(None)
        + string(None)
        + struct.pack("<ii", 0, 0)
        + nid(324)
        + b"\x01"
        + string(token)
        + string(None)
        + string(None)
    )
    msgs, anomalies, _ = decode(
        [
            *HANDSHAKE,
            (True, msg(461, create, 3)),
            (False, msg(464, created, 3)),
            (True, msg(467, activate, 4)),
        ]
    )
    assert not anomalies
    req, resp, act = msgs[4:]
    assert req.fields["identity"] == {
        "application_uri": "urn:scada:hmi1",
        "name": "HMI 1",
        "device_type": "client",
    }
    assert resp.fields["identity"]["application_uri"] == "urn:acme:plc17"
    assert (act.operation, act.fields["identity_token"], act.fields["user_name"]) == (
        "session",
        "username",
        "operator",
    )
    assert "secret" not in json.dumps(act.fields)


# -- chunks ------------------------------------------------------------------------------------------


def test_chunked_request_is_reassembled_into_one_message_on_its_final_chunk() -> None:
    body = nid(673) + write_request(12, [13, 13, 3])
    first, middle, last = body[:20], body[20:41], body[41:]
    msgs, anomalies, _ = decode(
        [
            *HANDSHAKE,
            (True, secure(b"MSG", first, 12, b"C", seq=20)),
            (True, secure(b"MSG", middle, 12, b"C", seq=21)),
            (True, secure(b"MSG", last, 12, b"F", seq=22)),
            (False, msg(676, response_header(12) + struct.pack("<ii", 0, -1), 12)),
        ]
    )
    assert not anomalies
    req, resp = msgs[4:]
    assert (req.function, req.operation, req.fields["chunks"], req.fields["attribute_ids"]) == (
        673,
        "config",
        3,
        [13, 3],
    )
    assert req.pcap_cnt == 10  # 3 handshake packets, 4 of the channel, then the third chunk
    assert resp.request_cnt == req.pcap_cnt


def test_abort_chunk_ends_a_chunked_response_as_an_exception() -> None:
    partial = nid(634) + response_header(13) + struct.pack("<i", 500)
    abort = struct.pack("<I", 0x80080000) + string("too large")
    msgs, anomalies, pipeline = decode(
        [
            *HANDSHAKE,
            (True, msg(631, read_request(13), 13)),
            (False, secure(b"MSG", partial, 13, b"C")),
            (False, secure(b"MSG", abort, 13, b"A")),
        ]
    )
    assert not anomalies
    resp = msgs[5]
    assert (resp.direction, resp.exception, resp.fields["aborted"], resp.fields["error"]) == (
        "response",
        True,
        True,
        0x80080000,
    )
    assert (resp.function, resp.operation, resp.request_cnt, resp.fields["reason"]) == (
        634,
        "read",
        msgs[4].pcap_cnt,
        "too large",
    )
    assert pipeline.decoders.stats["opcua"].matched == 3  # ACK, OPN, and the read by its abort


def test_reassembly_is_bounded_and_a_large_message_still_counts_from_its_first_chunk() -> None:
    messages: list = []
    decoder, ctx = _decoder(max_stream_buffer=2048, messages=messages)
    feed = _feeder(decoder)
    feed(True, b"".join(s for _, s in HANDSHAKE[:3:2]))
    for i in range(40):  # 40 chunked messages started, none finished: the oldest are dropped
        feed(True, secure(b"MSG", nid(631) + read_request(i), 100 + i, b"C"))
    assert len(decoder._chunks) == opcua.MAX_REASSEMBLIES
    stats = ctx.stats["opcua"]
    assert stats.anomalies["reassembly_overflow"] == 40 - opcua.MAX_REASSEMBLIES
    for _ in range(30):  # the newest grows past the buffer limit: its body stops being kept
        feed(True, secure(b"MSG", bytes(100), 139, b"C"))
    assert all(r.size <= 2048 for r in decoder._chunks.values())
    feed(True, secure(b"MSG", bytes(100), 139, b"F"))
    feed(False, msg(634, response_header(39) + struct.pack("<ii", 0, -1), 139))
    read, answer = messages[-2:]
    assert (read.function, read.operation, read.fields["request_handle"]) == (631, "read", 39)
    assert (read.fields["chunks"], read.fields["truncated"], answer.request_cnt) == (32, True, read.pcap_cnt)
    assert stats.buffer_overflows == 40 - opcua.MAX_REASSEMBLIES + 1
    assert stats.anomalies == {"reassembly_overflow": 40 - opcua.MAX_REASSEMBLIES}


# -- security modes ------------------------------------------------------------------------------------


def _noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def encrypted_open(seed: int) -> bytes:
    return opn(BASIC256SHA256, _noise(256, seed))


def encrypted(kind: bytes, seed: int, n: int = 96) -> bytes:
    return kind + b"F" + struct.pack("<I", 16 + n) + struct.pack("<II", 7, 1) + _noise(n, seed)


def test_sign_and_encrypt_bodies_are_opaque_messages_not_anomalies() -> None:
    segments = [(True, hello()), (False, ACK), (True, encrypted_open(1)), (False, encrypted_open(2))]
    segments += [(i % 2 == 0, encrypted(b"MSG", 10 + i)) for i in range(6)] + [(True, encrypted(b"CLO", 99))]
    msgs, anomalies, pipeline = decode(segments)
    assert not anomalies
    assert summary(msgs[2:4]) == [("OPN", 446, "request", "session"), ("OPN", 449, "response", "session")]
    assert msgs[3].request_cnt == msgs[2].pcap_cnt and msgs[2].fields["encrypted"] is True
    assert msgs[2].fields["security_policy_uri"] == BASIC256SHA256
    opaque = msgs[4:10]
    assert {(m.operation, m.function, m.fields["security_mode"]) for m in opaque} == {
        ("opaque", 0, "SignAndEncrypt")
    }
    assert [m.direction for m in opaque] == ["request", "response"] * 3
    assert summary(msgs[10:]) == [("CLO", 452, "request", "session")]
    # three requests, and three responses no visible request explains
    assert pipeline.decoders.stats["opcua"].operations["opaque"] == 6


def test_sign_only_channel_bodies_are_decoded() -> None:
    signature = _noise(32, 5)
    read = msg(631, read_request(21) + signature, 21)
    read = read[:4] + struct.pack("<I", len(read)) + read[8:]
    msgs, anomalies, _ = decode(
        [(True, hello()), (False, ACK), (True, encrypted_open(3)), (False, encrypted_open(4)), (True, read)]
    )
    assert not anomalies
    req = msgs[4]
    assert (req.function, req.operation, req.fields["security_mode"], req.fields["request_handle"]) == (
        631,
        "read",
        "Sign",
        21,
    )


# -- probing and roles ----------------------------------------------------------------------------------


def test_found_by_probe_on_another_port_and_not_claimed_on_4840_without_opc_ua() -> None:
    msgs, _, _ = decode([*HANDSHAKE, (True, msg(631, read_request(1), 2))], dport=48010)
    assert [m.function for m in msgs] == [0, 0, 446, 449, 631]
    http = [(True, b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\n\r\n")]
    collector = factory.Collector()
    source = factory.ListSource(factory.tcp_stream(http, dport=4840))
    Pipeline(PipelineConfig(), consumers=[collector]).run(source)
    # Not OPC UA, whatever the port says; the IT identification recognises what it is instead.
    assert not collector.messages and [f.app_proto for f in collector.flows] == ["http"]


def test_probe() -> None:
    assert opcua.probe(hello(), True) and opcua.probe(msg(631, read_request(1), 1)[:12], True)
    assert not opcua.probe(b"HELF\x08\x00\x00\x00", True)  # smaller than a Hello can be
    assert not opcua.probe(hello()[:8] + struct.pack("<I", 5) + hello()[12:], True)  # protocol version 5
    assert not opcua.probe(b"MSGX" + bytes(20), True) and not opcua.probe(b"GET / HTTP/1.1\r\n", True)


def test_requests_sent_from_the_server_port_are_still_requests() -> None:
    # As in icsnpp-opcua-binary's pending_overflow.pcap: the roles are reversed and no OPN is seen.
    msgs, anomalies, _ = decode(
        [(False, msg(751, request_header(1) + bytes(12), 1)), (True, msg(754, response_header(1), 1))]
    )
    assert not anomalies
    assert [(m.direction, m.to_server, m.operation) for m in msgs] == [
        ("request", False, "subscribe"),
        ("response", True, "subscribe"),
    ]
    assert msgs[1].request_cnt == msgs[0].pcap_cnt


def test_truncated_body_is_an_anomaly_and_the_message_still_counts() -> None:
    write = msg(673, request_header(3) + struct.pack("<i", 5) + nid(1000, ns=2), 3)
    msgs, anomalies, _ = decode([*HANDSHAKE, (True, write)])
    assert (msgs[4].function, msgs[4].operation, msgs[4].fields["request_handle"]) == (673, "write", 3)
    assert events(anomalies) == ["malformed"]


def test_truncated_call_keeps_the_class_its_readable_methods_decide() -> None:
    call = msg(712, call_request(3, [(0, 12886), (2, 9)])[:-6], 3)  # the last argument cut short
    msgs, anomalies, _ = decode([*HANDSHAKE, (True, call)])
    assert (msgs[4].operation, msgs[4].fields["methods"]) == ("mode", ["i=12886", "ns=2;i=9"])
    assert events(anomalies) == ["malformed"]


def test_eve_fields_are_json() -> None:
    msgs, _, _ = decode(
        [*HANDSHAKE, (True, msg(428, request_header(2), 2)), (False, msg(431, endpoints_response(2), 2))]
    )
    for m in msgs:
        json.dumps(m.fields)


# -- robustness --------------------------------------------------------------------------------------

VALID_STREAM = (
    b"".join(s for _, s in HANDSHAKE)
    + msg(673, write_request(4, [13, 3]), 4)
    + msg(712, call_request(5, [(0, 12886), (2, 9)]), 5)
    + msg(431, endpoints_response(6), 6)
)


def _decoder(
    max_stream_buffer: int = 4096, messages: list | None = None
) -> tuple[opcua.OpcUaDecoder, DecoderContext]:
    sink = messages if messages is not None else []
    ctx = DecoderContext(
        DecoderConfig(max_stream_buffer=max_stream_buffer, max_pending=64), sink.append, lambda a: None
    )
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 4840, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
    return opcua.OpcUaDecoder(flow, ctx, True), ctx


def _feeder(decoder: opcua.OpcUaDecoder):
    seq = {True: 1000, False: 5000}
    count = [0]

    def feed(to_server: bool, data: bytes) -> None:
        count[0] += 1
        decoder.feed_segment(to_server, seq[to_server], data, float(count[0]), count[0], 0)
        seq[to_server] += len(data)

    return feed


def _feed(segments: list[tuple[bool, bytes]]) -> None:
    decoder, _ = _decoder()
    feed = _feeder(decoder)
    for to_server, data in segments:
        feed(to_server, data)
        for framer in (decoder._c2s, decoder._s2c):
            assert framer is not None and len(framer.buf) <= 4096
        assert len(decoder._chunks) <= opcua.MAX_REASSEMBLIES
        assert all(r.size <= 4096 for r in decoder._chunks.values())
        assert len(decoder.pending) <= 64
    decoder.close("shutdown")
    assert len(decoder.pending) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=700)), min_size=1, max_size=10))
def test_random_streams_never_raise_and_stay_bounded(segments: list[tuple[bool, bytes]]) -> None:
    _feed([(True, hello()), *segments])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_messages_never_raise(data: st.DataObject) -> None:
    stream = bytearray(VALID_STREAM)
    for _ in range(data.draw(st.integers(1, 10))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    _feed([(True, bytes(stream[:cut])), (False, bytes(stream[cut:])), (True, bytes(stream))])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(b"FCA"), st.integers(0, 3), st.binary(max_size=80)),
        min_size=1,
        max_size=30,
    )
)
def test_random_chunk_sequences_never_raise(chunks: list[tuple[bool, int, int, bytes]]) -> None:
    segments = [
        (c, secure(b"MSG", nid(631) + body if i == 0 else body, rid, bytes([t])))
        for c, t, rid, body in chunks
        for i in (0, 1)
    ]
    _feed([*HANDSHAKE, *segments])


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_random_payload_through_the_pipeline(payload: bytes) -> None:
    decode([(True, hello()), (False, payload), (True, payload)])
