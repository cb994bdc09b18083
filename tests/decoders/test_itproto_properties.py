"""Property tests: no probe or identifier raises on random or mutated input, and fields stay JSON."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders.base import DecoderConfig, DecoderContext, ProtocolSpec
from agent.decoders.identify import StreamWalker, flow_fields
from agent.decoders.it_protocols import SPECS
from agent.flows import Flow
from tests.decoders import itproto_traffic as t
from tests.decoders.test_itproto_sessions import client_hello, rdp_request, server_hello

VALID = [
    t.nbss(t.smb2_negotiate_response(0x0311)),
    t.nbss(t.smb2_write(1, b"x" * 100)),
    t.nbss(t.smb2_read_response(1, b"y" * 100)),
    t.nbss(t.smb1_write_andx(b"z" * 50)),
    t.nfs3_write(1, b"w" * 64),
    t.record(t.nfs3_read_reply(2, b"r" * 64)),
    t.RSYNC_SERVER_GREETING + b"@RSYNCD: OK\n",
    t.iscsi_login_request({"InitiatorName": "iqn.x", "HeaderDigest": "CRC32C"}),
    t.iscsi_login_response({"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}),
    t.scsi_command(0x2A, True, b"i" * 16),
    t.ndmp(1, 0, 0x900, bytes(4)),
    b"SSH-2.0-OpenSSH_9.2\r\n",
    rdp_request(3),
    b"RFB 003.008\n",
    b"\xff\xfd\x18\xff\xfb\x01",
    b"227 Entering Passive Mode (10,0,0,1,195,80)\r\n229 Entering Extended Passive Mode (|||6446|)\r\n",
    b"PORT 10,0,0,1,4,1\r\nEPRT |2|::1|6275|\r\n",
    client_hello("plc.example"),
    server_hello(),
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes.fromhex("302602010104067075626c6963a019020101020100020100300e300c06082b060102010105000500"),
    bytes.fromhex("00018180000100010000000003706c6300000100010000"),
    bytes([0x23]) + bytes(47),
    bytes([0x00, 0x02, 0x00, 0x2C]) + bytes(40),
    b"<134>Nov 28 plc: x",
]


def flow(spec: ProtocolSpec, proto: int) -> Flow:
    ports = spec.tcp_ports if proto == 6 else spec.udp_ports
    port = min(ports) if ports else 40001
    f = Flow((b"\x0a\0\0\1", b"\x0a\0\0\2", 40000, port, proto, ()), 1, 4, 0.0, 1, 0, 60.0)
    f.app_proto = spec.name
    return f


def feed_all(spec: ProtocolSpec, proto: int, segments: list[tuple[bool, int, bytes]]) -> Flow:
    ctx = DecoderContext(DecoderConfig(), lambda _m: None, lambda _a: None)
    f = flow(spec, proto)
    decoder = spec.factory(f, ctx, True)
    f.app = decoder
    for i, (to_server, seq, payload) in enumerate(segments):
        spec.probe(payload, to_server)
        decoder.feed_segment(to_server, seq if proto == 6 else 0, payload, float(i), i + 1, 0)
    decoder.close("shutdown")
    json.dumps(flow_fields(f))  # whatever was found serialises
    return f


segment_lists = st.lists(
    st.tuples(st.booleans(), st.integers(0, 2**32 - 1), st.binary(max_size=400)), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SPECS), st.sampled_from((6, 17)), segment_lists)
def test_random_segments_never_raise(spec: ProtocolSpec, proto: int, segments: list) -> None:
    feed_all(spec, proto, segments)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SPECS), st.sampled_from((6, 17)), st.data())
def test_mutated_valid_payloads_never_raise_nor_mark_a_parser_failure(
    spec: ProtocolSpec, proto: int, data: st.DataObject
) -> None:
    payload = bytearray(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(0, 6))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(payload)))
    first, second = bytes(payload[:cut]), bytes(payload[cut:])
    f = feed_all(spec, proto, [(True, 1000, first), (True, 1000 + len(first), second), (False, 5000, first)])
    # The identifiers check their bounds: the safety net in Identifier.feed_segment is never needed.
    assert "malformed" not in (flow_fields(f) or {}).get(spec.factory.protocol, {})  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=20), st.integers(1, 64))
def test_stream_walker_finds_every_message_however_the_stream_is_cut(messages: list[bytes], cut: int) -> None:
    # Messages framed by a 1-byte length: cutting the stream anywhere must not lose or invent any.
    stream = b"".join(bytes([len(m)]) + m for m in messages)
    seen: list[int] = []

    def framer(buf: bytes, off: int, avail: int, _from_client: bool) -> int:
        if avail < 1:
            return 0
        seen.append(buf[off])
        return 1 + buf[off]

    walker = StreamWalker()
    for at in range(0, len(stream), cut):
        walker.walk(1000 + at, stream[at : at + cut], framer, True)
    assert seen == [len(m) for m in messages]
