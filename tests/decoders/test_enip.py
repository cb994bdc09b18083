"""EtherNet/IP + CIP decoder: packets built with struct, run through the pipeline (or the decoder)."""

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import enip
from agent.decoders.base import DecoderConfig, DecoderContext
from agent.outputs.eve import EveSink
from agent.pipeline import Pipeline, PipelineConfig
from tests import factory

CTX = b"ctx00001"


# -- builders --------------------------------------------------------------------------------------


def encap(
    command: int,
    body: bytes = b"",
    session: int = 0x1234,
    status: int = 0,
    context: bytes = CTX,
    options: int = 0,
) -> bytes:
    return struct.pack("<HHII8sI", command, len(body), session, status, context, options) + body


def cpf(*items: tuple[int, bytes]) -> bytes:
    return struct.pack("<H", len(items)) + b"".join(struct.pack("<HH", t, len(d)) + d for t, d in items)


def rr(cip_msg: bytes, context: bytes = CTX, status: int = 0) -> bytes:
    """SendRRData: unconnected CIP (null address + unconnected data item)."""
    return encap(
        0x6F, struct.pack("<IH", 0, 10) + cpf((0, b""), (0xB2, cip_msg)), context=context, status=status
    )


def unit(cip_msg: bytes, connection_id: int, sequence: int) -> bytes:
    """SendUnitData: connected CIP (connected address + connected data item with sequence count)."""
    body = struct.pack("<IH", 0, 0) + cpf(
        (0xA1, struct.pack("<I", connection_id)), (0xB1, struct.pack("<H", sequence) + cip_msg)
    )
    return encap(0x70, body, context=bytes(8))


def logical(klass: int | None = None, instance: int | None = None, attribute: int | None = None) -> bytes:
    out = b""
    for kind, value in ((0x20, klass), (0x24, instance), (0x30, attribute)):
        if value is None:
            continue
        out += bytes([kind, value]) if value < 0x100 else bytes([kind | 1, 0]) + struct.pack("<H", value)
    return out


def symbol(name: str) -> bytes:
    raw = name.encode()
    return bytes([0x91, len(raw)]) + raw + b"\0" * (len(raw) & 1)


def req(service: int, path: bytes, data: bytes = b"") -> bytes:
    return bytes([service, len(path) // 2]) + path + data


def reply(service: int, status: int = 0, data: bytes = b"", ext: tuple[int, ...] = ()) -> bytes:
    return bytes([service | 0x80, 0, status, len(ext)]) + b"".join(struct.pack("<H", e) for e in ext) + data


def msp(*services: bytes) -> bytes:
    """Multiple Service Packet body: count, offsets (from the count), services."""
    offsets, pos = [], 2 + 2 * len(services)
    for s in services:
        offsets.append(pos)
        pos += len(s)
    return (
        struct.pack("<H", len(services))
        + b"".join(struct.pack("<H", o) for o in offsets)
        + b"".join(services)
    )


def unconnected_send(inner: bytes, route: bytes = bytes([0x01, 0x00])) -> bytes:
    pad = b"\0" * (len(inner) & 1)
    data = (
        bytes([0x0A, 0x0E])
        + struct.pack("<H", len(inner))
        + inner
        + pad
        + bytes([len(route) // 2, 0])
        + route
    )
    return req(0x52, logical(6, 1), data)


IDENTITY = struct.pack("<HHHBBHIB", 1, 12, 58, 4, 3, 0x30, 0x00524D8E, 11) + b"1756-ENBT/A" + b"\x03"
LIST_IDENTITY_ITEM = (
    struct.pack("<H", 1) + struct.pack(">HH4s8x", 2, 44818, bytes([10, 1, 1, 164])) + IDENTITY
)


def tcp(*segments: tuple[bool, bytes], **kw: object) -> list:
    return factory.tcp_stream(segments, dport=44818, **kw)  # type: ignore[arg-type]


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


def decoder(max_pending: int = 1024) -> enip.EnipDecoder:
    """A decoder outside the pipeline (TCP flow), for state checks."""
    ctx = DecoderContext(DecoderConfig(max_pending=max_pending), lambda m: None, lambda a: None)
    return enip.EnipDecoder(SimpleNamespace(proto=6), ctx)  # type: ignore[arg-type]


# -- encapsulation ---------------------------------------------------------------------------------


def test_list_identity_request_and_response_with_identity_fields() -> None:
    request = encap(0x63)
    response = encap(0x63, cpf((0x0C, LIST_IDENTITY_ITEM)))
    msgs, anomalies, _ = factory.decode(tcp((True, request), (False, response)))
    assert not anomalies
    req_msg, resp_msg = msgs
    assert req_msg.fields == {
        "command": 0x63,
        "length": 0,
        "session_handle": 0x1234,
        "status": 0,
        "sender_context": CTX.hex(),
        "options": 0,
    }
    assert (req_msg.direction, req_msg.operation, req_msg.function) == ("request", "discovery", 0x63)
    assert resp_msg.request_cnt == req_msg.pcap_cnt and resp_msg.latency_s == pytest.approx(0.01)
    assert resp_msg.fields["identity"] == {
        "protocol_version": 1,
        "socket_address": "10.1.1.164",
        "socket_port": 44818,
        "vendor_id": 1,
        "device_type": 12,
        "product_code": 58,
        "revision": "4.3",
        "status": 0x30,
        "serial_number": "0x00524d8e",
        "product_name": "1756-ENBT/A",
        "state": 3,
    }


def test_list_identity_over_udp_pairs_by_sender_context() -> None:
    other = b"other-ct"
    packets = [
        factory.udp(sport=5000, dport=44818, data=encap(0x63, context=other)),
        factory.udp(sport=5000, dport=44818, data=encap(0x63)),
        factory.udp(
            src=factory.SERVER,
            dst=factory.CLIENT,
            sport=44818,
            dport=5000,
            data=encap(0x63, cpf((0x0C, LIST_IDENTITY_ITEM))),
        ),
    ]
    msgs, anomalies, pipeline = factory.decode(packets)
    assert not anomalies
    assert [m.direction for m in msgs] == ["request", "request", "response"]
    assert (
        msgs[2].request_cnt == msgs[1].pcap_cnt
        and msgs[2].fields["identity"]["product_name"] == "1756-ENBT/A"
    )
    assert pipeline.decoders.stats["enip"].unanswered == 1  # the other context


def test_list_services_and_list_interfaces_replies() -> None:
    service = struct.pack("<HH16s", 1, 0x0120, b"Communications")
    msgs, anomalies, _ = factory.decode(
        tcp(
            (True, encap(0x04)),
            (False, encap(0x04, cpf((0x100, service)))),
            (True, encap(0x64)),
            (False, encap(0x64, cpf())),
        )
    )
    assert not anomalies
    assert [m.operation for m in msgs] == ["discovery"] * 4
    assert msgs[1].fields["services"] == [
        {"version": 1, "capability_flags": 0x0120, "name": "Communications"}
    ]
    assert msgs[3].fields["interfaces"] == 0


def test_register_and_unregister_session() -> None:
    register = encap(0x65, struct.pack("<HH", 1, 0), session=0)
    registered = encap(0x65, struct.pack("<HH", 1, 0), session=0x11020100)
    msgs, anomalies, pipeline = factory.decode(
        tcp((True, register), (False, registered), (True, encap(0x66, session=0x11020100)))
    )
    assert not anomalies
    assert [m.direction for m in msgs] == ["request", "response", "request"]
    assert {m.operation for m in msgs} == {"session"}
    assert msgs[1].fields["session_handle"] == 0x11020100 and msgs[1].fields["protocol_version"] == 1
    assert pipeline.decoders.stats["enip"].unanswered == 0  # UnRegisterSession has no reply


def test_encapsulation_error_status_is_an_exception() -> None:
    msgs, _, _ = factory.decode(
        tcp(
            (True, encap(0x65, struct.pack("<HH", 2, 0))),
            (False, encap(0x65, struct.pack("<HH", 2, 0), status=0x69)),
        )
    )
    assert msgs[1].exception and msgs[1].fields["status"] == 0x69 and msgs[1].operation == "session"


def test_unknown_command_is_unknown_and_an_anomaly() -> None:
    msgs, anomalies, _ = factory.decode(tcp((True, encap(0x63)), (True, encap(0x01))))
    assert [(m.function, m.operation) for m in msgs] == [(0x63, "discovery"), (0x01, "unknown")]
    assert events(anomalies) == ["unknown_command"]


def test_nop_is_session_and_unanswered_by_design() -> None:
    msgs, _, pipeline = factory.decode(tcp((True, encap(0x63)), (True, encap(0x00, b"keepalive"))))
    assert msgs[1].operation == "session" and msgs[1].fields["length"] == 9
    assert pipeline.decoders.stats["enip"].unanswered == 1  # only the ListIdentity


# -- framing ---------------------------------------------------------------------------------------


def test_messages_split_across_segments_and_batched_in_one() -> None:
    first = rr(req(0x0E, logical(1, 1, 7)))
    second = rr(req(0x01, logical(1, 1)), context=b"second!!")
    both = first + second
    msgs, anomalies, _ = factory.decode(tcp((True, both[:10]), (True, both[10:30]), (True, both[30:])))
    assert not anomalies
    assert [(m.function, m.fields["sender_context"]) for m in msgs] == [
        (0x0E, CTX.hex()),
        (1, b"second!!".hex()),
    ]
    assert msgs[0].pcap_cnt == 6 and msgs[1].pcap_cnt == 6


def test_garbage_between_messages_is_skipped_with_a_bad_header_anomaly() -> None:
    msgs, anomalies, _ = factory.decode(
        tcp((True, encap(0x63)), (True, b"\x99\x99junk" + encap(0x63, context=b"again!!!")))
    )
    assert [m.fields["sender_context"] for m in msgs] == [CTX.hex(), b"again!!!".hex()]
    assert "bad_header" in events(anomalies)


def test_udp_length_mismatch_is_an_anomaly() -> None:
    data = encap(0x63) + b"xx"
    msgs, anomalies, _ = factory.decode([factory.udp(sport=5000, dport=44818, data=data)])
    assert len(msgs) == 1 and events(anomalies) == ["bad_length"]


# -- CIP explicit messaging ------------------------------------------------------------------------


def test_unconnected_request_and_reply_pair_by_sender_context() -> None:
    request = rr(req(0x0E, logical(0xF5, 1, 5)))
    response = rr(reply(0x0E, data=bytes([192, 168, 1, 10])))
    msgs, anomalies, _ = factory.decode(tcp((True, request), (False, response)))
    assert not anomalies
    req_msg, resp_msg = msgs
    assert req_msg.fields["cip"] == {
        "service": 0x0E,
        "class": 0xF5,
        "instance": 1,
        "attribute": 5,
        "service_name": "Get_Attribute_Single",
    }
    assert req_msg.fields["interface_handle"] == 0 and req_msg.fields["timeout"] == 10
    assert resp_msg.fields["cip"] == {
        "service": 0x0E,
        "status": 0,
        "class": 0xF5,
        "instance": 1,
        "attribute": 5,
        "service_name": "Get_Attribute_Single",
    }
    assert (resp_msg.direction, resp_msg.operation, resp_msg.request_cnt) == (
        "response",
        "read",
        req_msg.pcap_cnt,
    )
    assert resp_msg.latency_s == pytest.approx(0.01) and not resp_msg.exception


def test_reply_cut_inside_its_additional_status_keeps_whole_words() -> None:
    # Two words of additional status announced, three bytes present (found by the mutation test).
    cut = bytes([0x90, 0, 0x0E, 2]) + b"\x34\x12\x56"
    msgs, anomalies, _ = factory.decode(
        tcp((True, rr(req(0x10, logical(4, 100, 3), b"\x01"))), (False, rr(cut)))
    )
    assert msgs[1].fields["cip"]["ext_status"] == [0x1234]
    assert any(a.fields["anomaly"]["event"] == "bad_length" for a in anomalies)


def test_cip_error_status_and_extended_status() -> None:
    msgs, _, _ = factory.decode(
        tcp(
            (True, rr(req(0x10, logical(4, 100, 3), b"\x01"))),
            (False, rr(reply(0x10, status=0x0E, ext=(0x1234,)))),
        )
    )
    assert msgs[1].exception and msgs[1].fields["cip"]["status"] == 0x0E
    assert msgs[1].fields["cip"]["ext_status"] == [0x1234] and msgs[1].operation == "write"
    # Partial transfer (0x06) is how fragmented reads continue, not an error.
    msgs, _, _ = factory.decode(
        tcp(
            (True, rr(req(0x52, symbol("Big"), b"\x01\x00\x00\x00\x00\x00"))),
            (False, rr(reply(0x52, status=0x06, data=b"\xc4\x00" + bytes(8)))),
        )
    )
    assert (
        not msgs[1].exception and msgs[1].operation == "read" and msgs[1].fields["cip"]["data_type"] == 0xC4
    )


def test_connected_messages_pair_by_connection_and_sequence_after_forward_open() -> None:
    fwd_open = req(
        0x54,
        logical(6, 1),
        struct.pack(
            "<BBIIHHIB3xIHIHB",
            0x0A,
            0x0E,
            0,
            0x80000001,
            7,
            0x4D,
            0xABCD,
            1,
            100_000,
            0x43F4,
            100_000,
            0x43F4,
            0xA3,
        )
        + bytes([2])
        + logical(2, 1),
    )
    granted = reply(
        0x54, data=struct.pack("<IIHHIIIBB", 0x00F10001, 0x80000001, 7, 0x4D, 0xABCD, 100_000, 100_000, 0, 0)
    )
    read = req(0x4C, symbol("Motor"), struct.pack("<H", 1))
    # Two requests in flight on the connection; the replies (on the T->O id) come back in order.
    msgs, anomalies, _ = factory.decode(
        tcp(
            (True, rr(fwd_open)),
            (False, rr(granted)),
            (True, unit(read, 0x00F10001, 5) + unit(read, 0x00F10001, 6)),
            (False, unit(reply(0x4C, data=b"\xc4\x00\x01\x00\x00\x00"), 0x80000001, 5)),
            (False, unit(reply(0x4C, data=b"\xc4\x00\x02\x00\x00\x00"), 0x80000001, 6)),
        )
    )
    assert not anomalies
    open_req, open_resp, r5, r6, a5, a6 = msgs
    params = open_req.fields["cip"]["forward_open"]
    assert params == {
        "ot_connection_id": 0,
        "to_connection_id": 0x80000001,
        "connection_serial": 7,
        "originator_vendor_id": 0x4D,
        "originator_serial": 0xABCD,
        "timeout_multiplier": 8,
        "ot_rpi_us": 100_000,
        "to_rpi_us": 100_000,
        "ot_connection_type": "point_to_point",
        "to_connection_type": "point_to_point",
        "ot_connection_size": 500,
        "to_connection_size": 500,
        "transport_class": 3,
        "trigger": "application",
        "connection_path": {"class": 2, "instance": 1},
    }
    assert open_req.operation == "session" and open_resp.operation == "session"
    assert open_resp.fields["cip"]["forward_open"]["ot_connection_id"] == 0x00F10001
    assert r5.fields["connection_id"] == 0x00F10001 and r5.fields["cip_sequence"] == 5
    assert r5.fields["cip"]["tag"] == "Motor" and r5.fields["cip"]["elements"] == 1 and r5.operation == "read"
    assert (a5.request_cnt, a6.request_cnt) == (r5.pcap_cnt, r6.pcap_cnt)
    assert a5.fields["cip"]["tag"] == "Motor" and a5.fields["cip"]["data_type"] == 0xC4


def test_large_forward_open_has_32_bit_network_parameters() -> None:
    params = (2 << 29) | 4000  # point to point, 4000 bytes (a size Forward Open's 9 bits cannot hold)
    body = struct.pack(
        "<BBIIHHIB3xIIIIB", 0x0A, 0x0E, 0, 0x80000002, 8, 0x4D, 1, 7, 2000, params, 2000, (1 << 29) | 12, 0x01
    )
    msgs, anomalies, _ = factory.decode(
        tcp((True, rr(req(0x5B, logical(6, 1), body + bytes([2]) + logical(4, 100)))))
    )
    assert not anomalies and msgs[0].operation == "session"
    fo = msgs[0].fields["cip"]["forward_open"]
    assert (fo["ot_connection_size"], fo["ot_connection_type"], fo["to_connection_type"]) == (
        4000,
        "point_to_point",
        "multicast",
    )
    assert (fo["timeout_multiplier"], fo["transport_class"], fo["trigger"]) == (512, 1, "cyclic")
    assert fo["connection_path"] == {"class": 4, "instance": 100}


def test_connected_reply_without_forward_open_pairs_by_outstanding_sequence() -> None:
    read = req(0x4C, symbol("A"), b"\x01\x00")
    msgs, _, pipeline = factory.decode(
        tcp(
            (True, unit(read, 0x11, 40) + unit(read, 0x22, 9)),
            (False, unit(reply(0x4C), 0x99, 9)),  # T->O id never seen: sequence 9 is only outstanding on 0x22
            (False, unit(reply(0x4C), 0x88, 40)),
            (True, unit(read, 0x22, 10)),
            (False, unit(reply(0x4C), 0x99, 10)),  # learned: 0x99 answers for 0x22
        )
    )
    r40, r9, a9, a40, r10, a10 = msgs
    assert (a9.request_cnt, a40.request_cnt, a10.request_cnt) == (r9.pcap_cnt, r40.pcap_cnt, r10.pcap_cnt)
    assert pipeline.decoders.stats["enip"].matched == 3


def test_multiple_service_packet_emits_one_message_per_service() -> None:
    inner = [
        req(0x0E, logical(1, 1, 1)),
        req(0x4D, symbol("Setpoint"), struct.pack("<HH", 0xCA, 1) + bytes(4)),
    ]
    request = rr(req(0x0A, logical(2, 1), msp(*inner)))
    response = rr(reply(0x0A, data=msp(reply(0x0E, data=b"\x01\x00"), reply(0x4D, status=0x08))))
    msgs, anomalies, _ = factory.decode(tcp((True, request), (False, response)))
    assert not anomalies
    get, write, got, wrote = msgs
    assert [(m.function, m.operation) for m in msgs] == [
        (0x0E, "read"),
        (0x4D, "write"),
        (0x0E, "read"),
        (0x4D, "write"),
    ]
    assert get.fields["cip"]["via"] == [0x0A] and get.fields["cip"]["index"] == 0
    assert write.fields["cip"]["index"] == 1 and write.fields["cip"]["data_type"] == 0xCA
    assert (got.request_cnt, wrote.request_cnt) == (get.pcap_cnt, write.pcap_cnt)
    assert wrote.exception and not got.exception and wrote.fields["cip"]["tag"] == "Setpoint"


def test_unconnected_send_is_unwrapped_and_classified_by_the_inner_service() -> None:
    request = rr(unconnected_send(req(0x05, logical(1, 1), b"\x00"), route=bytes([0x01, 0x02])))
    msgs, anomalies, _ = factory.decode(tcp((True, request), (False, rr(reply(0x05)))))
    assert not anomalies
    reset, done = msgs
    assert reset.function == 0x05 and reset.operation == "mode"
    assert reset.fields["cip"]["via"] == [0x52] and reset.fields["cip"]["route_path"] == [
        {"port": 1, "link": 2}
    ]
    assert (
        reset.fields["cip"]["class"] == 1 and done.request_cnt == reset.pcap_cnt and done.operation == "mode"
    )


def test_unconnected_send_wrapping_a_multiple_service_packet() -> None:
    inner = req(0x0A, logical(2, 1), msp(req(0x01, logical(1, 1)), req(0x07, logical(0x8E, 1))))
    response = rr(reply(0x0A, data=msp(reply(0x01), reply(0x07))))
    msgs, _, _ = factory.decode(tcp((True, rr(unconnected_send(inner))), (False, response)))
    assert [(m.function, m.operation, m.fields["cip"]["via"]) for m in msgs] == [
        (0x01, "read", [0x52, 0x0A]),
        (0x07, "mode", [0x52, 0x0A]),
        (0x01, "read", [0x0A]),
        (0x07, "mode", [0x0A]),
    ]
    assert msgs[3].request_cnt == msgs[1].pcap_cnt


def test_forward_close_is_session_and_read_modify_write_is_write() -> None:
    close = req(
        0x4E, logical(6, 1), struct.pack("<BBHHIBB", 0x0A, 0x0E, 7, 0x4D, 0xABCD, 2, 0) + logical(2, 1)
    )
    rmw = req(0x4E, symbol("Bits"), struct.pack("<H", 1) + b"\x01\xfe")
    msgs, _, _ = factory.decode(tcp((True, rr(close)), (True, rr(rmw, context=b"rmw-ctx!"))))
    assert msgs[0].operation == "session" and msgs[0].fields["cip"]["forward_close"] == {
        "connection_serial": 7,
        "originator_vendor_id": 0x4D,
        "originator_serial": 0xABCD,
    }
    assert msgs[1].operation == "write" and msgs[1].fields["cip"]["service_name"] == "Read_Modify_Write_Tag"


def test_logix_tag_paths_with_program_scope_members_and_indices() -> None:
    path = (
        symbol("Program:Main")
        + symbol("Recipe")
        + bytes([0x28, 3, 0x29, 0])
        + struct.pack("<H", 300)
        + symbol("T")
    )
    msgs, anomalies, _ = factory.decode(tcp((True, rr(req(0x4C, path, b"\x02\x00")))))
    assert not anomalies
    assert (
        msgs[0].fields["cip"]["tag"] == "Program:Main.Recipe[3,300].T"
        and msgs[0].fields["cip"]["elements"] == 2
    )


def test_identity_from_get_attributes_all_reply() -> None:
    msgs, _, _ = factory.decode(
        tcp((True, rr(req(0x01, logical(1, 1)))), (False, rr(reply(0x01, data=IDENTITY))))
    )
    assert (
        msgs[1].fields["identity"]["product_name"] == "1756-ENBT/A"
        and msgs[1].fields["identity"]["vendor_id"] == 1
    )


def test_pccc_and_modbus_object_details() -> None:
    pccc = req(
        0x4B, logical(0x67, 1), bytes([7]) + struct.pack("<HI", 1, 2) + bytes([0x0F, 0, 0x34, 0x12, 0xA2])
    )
    passthrough = req(0x51, logical(0x44, 1), bytes([6]) + struct.pack(">HH", 1, 2))
    msgs, _, _ = factory.decode(tcp((True, rr(pccc)), (True, rr(passthrough, context=b"modbus!!"))))
    assert msgs[0].operation == "vendor" and msgs[0].fields["cip"]["pccc"] == {
        "command": 0x0F,
        "tns": 0x1234,
        "function": 0xA2,
    }
    assert msgs[1].operation == "write" and msgs[1].fields["cip"]["modbus_function"] == 6


def test_attribute_list_ids_and_a_second_class_in_the_path() -> None:
    get = req(0x03, logical(0xAC, 1), struct.pack("<HHH", 2, 1, 10))
    vendor = req(0x4B, logical(0x8E, 1) + logical(0x74, 1))
    msgs, anomalies, _ = factory.decode(tcp((True, rr(get)), (True, rr(vendor, context=b"vendor!!"))))
    assert msgs[0].fields["cip"]["attributes"] == [1, 10] and msgs[0].fields["cip"]["attribute_count"] == 2
    assert msgs[1].fields["cip"]["extra_path"] == [["class", 0x74], ["instance", 1]]
    assert msgs[1].operation == "vendor" and not anomalies  # an unnamed service on a vendor's class


def c(service: int, path: bytes, data: bytes = b"") -> bytes:
    return rr(req(service, path, data))


@pytest.mark.parametrize(
    ("message", "operation"),
    [
        (c(0x01, logical(1, 1)), "read"),
        (c(0x03, logical(4, 100), b"\x01\x00\x03\x00"), "read"),
        (c(0x0E, logical(1, 1, 1)), "read"),
        (c(0x18, logical(4, 100, 3)), "read"),
        (c(0x10, logical(4, 150, 3), b"\x01"), "write"),  # assembly data
        (c(0x02, logical(0x64, 1)), "write"),
        (c(0x19, logical(4, 100, 3)), "write"),
        (c(0x10, logical(0xF5, 1, 5)), "config"),  # TCP/IP interface: IP address
        (c(0x10, logical(0xF6, 1, 6)), "config"),  # Ethernet link: speed/duplex
        (c(0x04, logical(1, 1), b"\x01\x00\x07\x00"), "config"),  # Identity
        (c(0x08, logical(4)), "config"),
        (c(0x09, logical(4, 150)), "config"),
        (c(0x16, logical(0x48, 1)), "config"),
        (c(0x10, logical(0x43, 1, 6)), "time"),  # Time Sync
        (c(0x04, logical(0x8B, 1), b"\x01\x00\x06\x00"), "time"),  # Logix wall clock
        (c(0x05, logical(1, 1), b"\x01"), "mode"),  # device reset
        (c(0x06, logical(0x8E, 1)), "mode"),
        (c(0x07, logical(0x8E, 1)), "mode"),
        (c(0x11, logical(4)), "diagnostic"),
        (c(0x17, logical(1, 1)), "diagnostic"),
        (c(0x56, logical(6, 1)), "diagnostic"),
        (c(0x5A, logical(6, 1)), "session"),
        (c(0x4B, logical(0x37, 0xC8)), "file"),  # File object: initiate upload (EDS file)
        (c(0x4D, logical(0xA1, 1)), "firmware"),  # Non-Volatile Storage: transfer (ControlFLASH)
        (c(0x4B, logical(0x67, 1)), "vendor"),  # PCCC
        (c(0x4C, logical(0x44, 1)), "read"),  # Modbus object: read coils
        (c(0x50, logical(0x44, 1)), "write"),  # Modbus object: write holding registers
        (c(0x51, logical(0x44, 1), bytes([3, 0, 0, 0, 1])), "read"),  # passthrough of FC 3
        (c(0x52, symbol("Array")), "read"),  # Read Tag Fragmented (not on the Connection Manager)
        (c(0x53, symbol("Array")), "write"),
        (c(0x55, logical(0x6B)), "read"),  # Logix symbol browse
        (c(0x4C, logical(0x72, 0)), "read"),  # Logix tag service on a vendor class
        (c(0x60, logical(0x72, 0)), "vendor"),
        (c(0x4C, logical(1, 1)), "unknown"),  # no object-specific 0x4C on Identity
        (c(0x30, logical(1, 1)), "unknown"),
        (c(0x1C, logical(1, 1)), "unknown"),  # Group_Sync: named, but no class in DOMAIN.md
    ],
)
def test_operation_classes(message: bytes, operation: str) -> None:
    msgs, _, _ = factory.decode(tcp((True, message)))
    assert msgs[0].operation == operation


def test_unknown_service_is_an_anomaly_but_a_named_unclassified_one_is_not() -> None:
    _, anomalies, _ = factory.decode(tcp((True, c(0x30, logical(1, 1)))))
    assert events(anomalies) == ["unknown_service"]
    _, anomalies, _ = factory.decode(tcp((True, c(0x1C, logical(1, 1)))))
    assert not anomalies


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (rr(bytes([0x0E, 3]) + logical(1, 1)), "bad_path"),  # path size says 3 words, 2 present
        (rr(req(0x0E, bytes([0x2F, 1]))), "bad_path"),  # reserved logical format
        (rr(req(0x0E, bytes([0xE0, 1]))), "bad_path"),  # reserved segment type
        (rr(req(0x0A, logical(2, 1), struct.pack("<HHH", 2, 6, 200) + bytes(4))), "bad_msp"),
        (rr(req(0x0A, logical(2, 1), struct.pack("<H", 0))), "bad_msp"),
        (rr(req(0x52, logical(6, 1), struct.pack("<BBH", 10, 14, 50) + bytes(4))), "bad_unconnected_send"),
        (rr(req(0x54, logical(6, 1), bytes(10))), "bad_length"),
        (encap(0x6F, struct.pack("<IH", 0, 10) + struct.pack("<HHH", 2, 0, 0)), "bad_cpf"),
        (encap(0x6F, struct.pack("<IH", 0, 10) + cpf((0, b""))), "bad_cpf"),
        (encap(0x70, struct.pack("<IH", 0, 0) + cpf((0xB1, b"\x01"))), "bad_cpf"),
    ],
)
def test_malformed_messages_are_anomalies(message: bytes, kind: str) -> None:
    msgs, anomalies, _ = factory.decode(tcp((True, message)))
    assert kind in events(anomalies)
    assert len(msgs) == 1  # still reported, as far as it could be read


# -- class 0/1 I/O ---------------------------------------------------------------------------------


def io(connection_id: int, sequence: int, data: bytes) -> bytes:
    return cpf((0x8002, struct.pack("<II", connection_id, sequence)), (0xB1, data))


def test_class1_io_on_udp_2222() -> None:
    packets = [
        factory.udp(sport=2222, dport=2222, data=io(0x004B0603, 4166875, b"\xa5\x87\xe8\x0f\x03\x00")),
        factory.udp(
            src=factory.SERVER, dst=factory.CLIENT, sport=2222, dport=2222, data=io(0x008E400B, 1, b"\x01")
        ),
    ]
    msgs, anomalies, pipeline = factory.decode(packets)
    assert not anomalies
    assert [m.fields for m in msgs] == [
        {"connection_id": 0x004B0603, "sequence": 4166875, "data_length": 6},
        {"connection_id": 0x008E400B, "sequence": 1, "data_length": 1},
    ]
    assert all(m.operation == "io" and m.function == 0xB1 and m.request_cnt == 0 for m in msgs)
    assert pipeline.decoders.stats["enip"].unanswered == 0


def test_io_with_a_missing_data_item_is_an_anomaly() -> None:
    data = cpf((0x8002, struct.pack("<II", 1, 2)), (0x00B2, b"\x00"))
    packets = [factory.udp(sport=2222, dport=2222, data=d) for d in (io(1, 1, b"\x00"), data)]
    msgs, anomalies, _ = factory.decode(packets)
    assert (
        events(anomalies) == ["bad_cpf"] and msgs[1].operation == "io" and "data_length" not in msgs[1].fields
    )


# -- probe, EVE, bounds ----------------------------------------------------------------------------


def test_probe() -> None:
    assert enip.probe(encap(0x63), True)
    assert enip.probe(encap(0x01) + encap(0x04), True)  # a legacy command first, a known one next
    assert enip.probe(rr(req(0x01, logical(1, 1)))[:30] + b"", True) is False  # nothing whole yet
    assert enip.probe(encap(0x63) + rr(req(0x01, logical(1, 1)))[:30], True)  # the next is arriving
    assert enip.probe(io(1, 2, b"abc"), True)
    assert not enip.probe(io(1, 2, b"abc") + b"x", True)
    assert not enip.probe(encap(0x63, options=1), True)
    assert not enip.probe(encap(0x65, b"\x01\x00"), True)  # RegisterSession carries 4 bytes
    # DCE/RPC over UDP (PROFINET CM) starts 04 00 like a ListServices header.
    assert not enip.probe(bytes.fromhex("04000100000001001c000000000000002a2a303230302a2a30323030"), True)
    assert not enip.probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20), True)
    # Zero-filled file data is a train of NOP headers; an NTP packet is a legacy command then NOPs.
    assert not enip.probe(bytes(1440), True)
    assert not enip.probe(b"\x0b" + bytes(47), True)


def test_a_datagram_that_is_not_enip_on_an_enip_flow_is_a_bad_header() -> None:
    packets = [factory.udp(sport=5000, dport=44818, data=d) for d in (encap(0x63), b"\x0c\x06" + bytes(30))]
    msgs, anomalies, _ = factory.decode(packets)
    assert len(msgs) == 1 and events(anomalies) == ["bad_header"]


def test_enip_on_another_port_is_found_by_probe() -> None:
    packets = factory.tcp_stream(
        [(True, encap(0x63)), (False, encap(0x63, cpf((0x0C, LIST_IDENTITY_ITEM))))], dport=9999
    )
    msgs, _, _ = factory.decode(packets)
    assert [m.protocol for m in msgs] == ["enip", "enip"]


def test_eve_event_has_the_enip_object(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    packets = tcp(
        (True, rr(req(0x4C, symbol("Tank_Level"), b"\x01\x00"))), (False, rr(reply(0x4C, data=bytes(6))))
    )
    Pipeline(PipelineConfig(events="all"), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    ot = [e for e in map(json.loads, out.read_text().splitlines()) if e["event_type"] == "ot"]
    assert ot[0]["app_proto"] == "enip" and ot[0]["enip"]["cip"]["tag"] == "Tank_Level"
    assert ot[0]["enip"]["session_handle"] == 0x1234 and ot[0]["enip"]["sender_context"] == CTX.hex()
    assert ot[1]["ot"]["operation"] == "read" and ot[1]["ot"]["request_pcap_cnt"] == ot[0]["pcap_cnt"]


def test_request_side_table_and_connection_map_stay_bounded() -> None:
    dec = decoder(max_pending=8)
    for i in range(50):
        message = rr(req(0x0E, logical(1, 1, 1)), context=struct.pack("<Q", i))
        dec.parse(message, 0, len(message), True)
    assert len(dec._requests) <= 8 and len(dec.pending) <= 8
    assert dec.stats.pending_evicted == 42
    for i in range(enip.MAX_CONNECTIONS + 10):
        dec._remember_connection(i, i + 1)
    assert len(dec._connections) == enip.MAX_CONNECTIONS
    assert dec.stats.anomalies["connection_table_full"] == 10


# -- robustness ------------------------------------------------------------------------------------

SAMPLES = [
    rr(req(0x0A, logical(2, 1), msp(req(0x0E, logical(1, 1, 1)), req(0x4C, symbol("X"), b"\x01\x00")))),
    rr(unconnected_send(req(0x01, logical(1, 1)))),
    unit(req(0x4D, symbol("Y[1]"), struct.pack("<HH", 0xC4, 1) + bytes(4)), 7, 1),
    encap(0x63, cpf((0x0C, LIST_IDENTITY_ITEM))),
    rr(reply(0x0A, data=msp(reply(0x0E, data=b"\x01\x00"), reply(0x4C, status=5, ext=(1,))))),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=300)), min_size=1, max_size=8))
def test_random_streams_never_raise(segments: list[tuple[bool, bytes]]) -> None:
    factory.decode(factory.tcp_stream([(True, encap(0x63)), *segments], dport=44818))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_messages_never_raise(data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from(SAMPLES)))
    for _ in range(data.draw(st.integers(1, 8))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(frame)
    factory.decode(
        factory.tcp_stream([(True, encap(0x63)), (True, raw[:30]), (False, raw[30:])], dport=44818)
    )
    dec = decoder()
    dec.parse(raw, 0, len(raw), data.draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([44818, 2222]))
def test_random_datagrams_never_raise(payload: bytes, port: int) -> None:
    factory.decode(
        [
            factory.udp(sport=port, dport=port, data=io(1, 1, b"x")),
            factory.udp(sport=port, dport=port, data=payload),
        ]
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=20))
def test_stream_buffers_stay_bounded(chunks: list[bytes]) -> None:
    limit = 4096
    out: list = []
    ctx = DecoderContext(DecoderConfig(max_stream_buffer=limit), out.append, out.append)
    dec = enip.EnipDecoder(SimpleNamespace(proto=6), ctx)  # type: ignore[arg-type]
    seq = 1000
    # A header announcing a large message, then whatever arrives: the buffer never exceeds the limit.
    for chunk in [encap(0x6F)[:2] + b"\xff\xff" + encap(0x6F)[4:], *chunks]:
        dec.feed_segment(True, seq, chunk, 0.0, 1, 0)
        seq += len(chunk)
        assert dec._c2s is not None and len(dec._c2s.buf) <= limit
