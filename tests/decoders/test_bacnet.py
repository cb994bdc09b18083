"""BACnet/IP decoder: BVLC, NPDU routing, APDU types, services, pairing, backup, anomalies, robustness."""

import json
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from agent.assets.identity import identity_owner
from agent.assets.inventory import AssetInventory, routed_sort_key
from agent.decoders import bacnet
from agent.decoders.base import OPERATIONS, DecoderConfig, DecoderContext
from agent.flows import Flow
from agent.linklayer import LLC_BACNET, llc_key
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory

CLIENT, DEVICE = factory.CLIENT, factory.SERVER


# -- building BACnet/IP from the standard's encodings -----------------------------------------------


def bvlc(function: int, body: bytes) -> bytes:
    return bytes([0x81, function]) + struct.pack("!H", 4 + len(body)) + body


def npdu(
    apdu: bytes,
    expecting_reply: bool = False,
    dnet: tuple[int, bytes] | None = None,
    snet: tuple[int, bytes] | None = None,
    hops: int = 255,
) -> bytes:
    control = (0x04 if expecting_reply else 0) | (0x20 if dnet else 0) | (0x08 if snet else 0)
    out = bytes([1, control])
    if dnet:
        out += struct.pack("!HB", dnet[0], len(dnet[1])) + dnet[1]
    if snet:
        out += struct.pack("!HB", snet[0], len(snet[1])) + snet[1]
    if dnet:
        out += bytes([hops])
    return out + apdu


def unicast(apdu: bytes, **kwargs: object) -> bytes:
    return bvlc(0x0A, npdu(apdu, **kwargs))  # type: ignore[arg-type]


def _tag(tag: int, context: int, value: bytes) -> bytes:
    if len(value) < 5:
        return bytes([tag << 4 | context | len(value)]) + value
    return bytes([tag << 4 | context | 5, len(value)]) + value  # extended length


def ctx(tag: int, value: bytes) -> bytes:
    return _tag(tag, 0x08, value)


def app(tag: int, value: bytes) -> bytes:
    return _tag(tag, 0, value)


def opening(tag: int) -> bytes:
    return bytes([tag << 4 | 0x0E])


def closing(tag: int) -> bytes:
    return bytes([tag << 4 | 0x0F])


def oid(object_type: int, instance: int) -> bytes:
    return struct.pack("!I", object_type << 22 | instance)


def confirmed(service: int, invoke_id: int, params: bytes = b"") -> bytes:
    return bytes([0x00, 0x05, invoke_id, service]) + params


def unconfirmed(service: int, params: bytes = b"") -> bytes:
    return bytes([0x10, service]) + params


def simple_ack(service: int, invoke_id: int) -> bytes:
    return bytes([0x20, invoke_id, service])


def complex_ack(service: int, invoke_id: int, params: bytes = b"") -> bytes:
    return bytes([0x30, invoke_id, service]) + params


ANALOG_OUTPUT, DEVICE_OBJECT, FILE = 1, 8, 10
PRESENT_VALUE, OBJECT_NAME = 85, 77
READ_PROPERTY = ctx(0, oid(ANALOG_OUTPUT, 101)) + ctx(1, bytes([PRESENT_VALUE]))
I_AM = app(12, oid(DEVICE_OBJECT, 1234)) + app(2, b"\x05\xc4") + app(9, b"\x03") + app(2, b"\x01\x04")


def decode(datagrams: list[tuple[bool, bytes]], sport: int = 47808, dport: int = 47808):
    packets = [
        factory.udp(
            CLIENT if from_client else DEVICE,
            DEVICE if from_client else CLIENT,
            sport if from_client else dport,
            dport if from_client else sport,
            data,
        )
        for from_client, data in datagrams
    ]
    return factory.decode(packets)


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


# -- services, fields and pairing ----------------------------------------------------------------


def test_read_property_pairs_with_its_complex_ack() -> None:
    ack = complex_ack(12, 7, READ_PROPERTY + opening(3) + app(4, struct.pack("!f", 21.5)) + closing(3))
    msgs, anomalies, _ = decode(
        [(True, unicast(confirmed(12, 7, READ_PROPERTY), expecting_reply=True)), (False, unicast(ack))]
    )
    assert not anomalies
    request, response = msgs
    assert request.fields == {
        "bvlc_function": 0x0A,
        "bvlc_name": "original-unicast-npdu",
        "control": 0x04,
        "expecting_reply": True,
        "priority": 0,
        "apdu_type": 0,
        "segmented": False,
        "more_follows": False,
        "segmented_accepted": False,
        "max_segments": 0,
        "max_apdu": 5,
        "invoke_id": 7,
        "confirmed_service": 12,
        "service": "readProperty",
        "object_type": ANALOG_OUTPUT,
        "instance": 101,
        "property_id": PRESENT_VALUE,
    }
    assert (request.direction, request.operation, request.function) == ("request", "read", 12)
    assert (response.direction, response.operation, response.function) == ("response", "read", 12)
    assert response.fields["apdu_type"] == 3 and response.fields["instance"] == 101
    assert response.request_cnt == request.pcap_cnt and response.latency_s == pytest.approx(0.01)


def test_i_am_gives_the_device_identity_and_who_is_its_range() -> None:
    who_is = bvlc(0x0B, npdu(unconfirmed(8, ctx(0, b"\x04\xd2") + ctx(1, b"\x04\xd2"))))
    msgs, anomalies, _ = decode([(True, who_is), (False, bvlc(0x0B, npdu(unconfirmed(0, I_AM))))])
    assert not anomalies
    assert (
        msgs[0].operation,
        msgs[0].function,
        msgs[0].fields["low_limit"],
        msgs[0].fields["high_limit"],
    ) == ("discovery", 0x108, 1234, 1234)
    i_am = msgs[1]
    assert (i_am.direction, i_am.operation, i_am.function) == ("request", "discovery", 0x100)
    assert i_am.fields["device_instance"] == 1234 and i_am.fields["max_apdu_accepted"] == 1476
    assert i_am.fields["segmentation"] == "no-segmentation" and i_am.fields["vendor_id"] == 260
    assert i_am.fields["identity"] == {"device_instance": 1234, "vendor_id": 260}


def forwarded_by(ip: bytes, body: bytes) -> bytes:
    return bvlc(0x04, ip + struct.pack("!H", 47808) + body)


@pytest.mark.parametrize(
    ("network", "sadr", "address"),
    [
        (5, b"\x17", "bacnet:5:17"),  # an MS/TP station behind an IP router
        (2001, b"\x00\x2a", "bacnet:2001:002a"),  # a LonTalk / ARCNET-style two-byte address
        (11, bytes([192, 168, 0, 16, 0xBA, 0xC0]), "bacnet:11:c0a80010bac0"),  # B/IP on another net
        (65534, bytes(range(1, 8)), "bacnet:65534:01020304050607"),  # a seven-byte (LonTalk) address
    ],
)
def test_routed_i_am_gives_the_identity_to_the_device_at_its_network_address(
    network: int, sadr: bytes, address: str
) -> None:
    msgs, anomalies, _ = decode([(False, bvlc(0x0B, npdu(unconfirmed(0, I_AM), snet=(network, sadr))))])
    assert not anomalies
    fields = msgs[0].fields
    assert (fields["snet"], fields["sadr"]) == (network, sadr.hex())
    assert fields["identity"] == {"device_instance": 1234, "vendor_id": 260}
    assert fields["identity_of"] == address and "identity_via" not in fields  # via: the sender


def test_a_routed_i_am_a_bbmd_forwarded_names_the_router_it_came_through() -> None:
    routed = npdu(unconfirmed(0, I_AM), snet=(4, b"\x56"))
    msgs, anomalies, _ = decode([(False, forwarded_by(bytes([192, 0, 2, 18]), routed))])
    assert not anomalies
    assert msgs[0].fields["identity_of"] == "bacnet:4:56"
    assert msgs[0].fields["identity_via"] == "192.0.2.18"  # the router's B/IP address, not the BBMD's


@pytest.mark.parametrize(
    ("network", "sadr"),
    [(5, b""), (0xFFFF, b"\x17"), (0, b"\x17")],
    ids=["empty-sadr-broadcast", "broadcast-network", "network-0"],
)
def test_a_source_specifier_naming_no_single_device_gives_no_identity(network: int, sadr: bytes) -> None:
    msgs, anomalies, _ = decode([(False, bvlc(0x0B, npdu(unconfirmed(0, I_AM), snet=(network, sadr))))])
    assert msgs[0].fields["device_instance"] == 1234  # still decoded, only not anyone's identity
    assert "identity" not in msgs[0].fields and "identity_of" not in msgs[0].fields
    assert events(anomalies) == ([] if network == 0 else ["bad_address"])


def test_forwarded_i_am_names_its_original_sender() -> None:
    msgs, anomalies, _ = decode([(False, forwarded_by(bytes([192, 0, 2, 99]), npdu(unconfirmed(0, I_AM))))])
    assert not anomalies
    assert msgs[0].fields["original_address"] == "192.0.2.99:47808"
    assert msgs[0].fields["bvlc_name"] == "forwarded-npdu" and msgs[0].fields["device_instance"] == 1234
    # The BBMD relayed it: the identity is the device's at 192.0.2.99, not the BBMD's.
    assert msgs[0].fields["identity"] == {"device_instance": 1234, "vendor_id": 260}
    assert msgs[0].fields["identity_of"] == "192.0.2.99" and "identity_via" not in msgs[0].fields


def test_the_inventory_gives_a_forwarded_identity_to_the_original_sender() -> None:
    forwarded = bvlc(0x04, bytes([192, 0, 2, 99]) + struct.pack("!H", 47808) + npdu(unconfirmed(0, I_AM)))
    inventory = AssetInventory()
    packets = [factory.udp(DEVICE, "192.0.2.255", 47808, 47808, forwarded)]
    Pipeline(PipelineConfig(), consumers=[inventory]).run(factory.ListSource(packets))
    assert inventory.hosts[bytes([192, 0, 2, 99])].identity == {"device_instance": 1234, "vendor_id": 260}
    assert not inventory.hosts[socket.inet_aton(DEVICE)].identity  # the BBMD


# -- BACnet/Ethernet: 802.2 LLC to LSAP 0x82, the NPDU without a BVLC -----------------------------

ROUTER_MAC, DEVICE_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def llc_frame(src: str, dst: str, npdu_bytes: bytes, padding: int = 0) -> Packet:
    body = b"\x82\x82\x03" + npdu_bytes
    return Ether(src=src, dst=dst, type=len(body)) / Raw(body + bytes(padding))  # type: length (802.3)


def test_bacnet_over_llc_is_decoded_as_over_bvlc() -> None:
    who_is = llc_frame(ROUTER_MAC, "ff:ff:ff:ff:ff:ff", npdu(unconfirmed(8)))
    i_am = llc_frame(DEVICE_MAC, "ff:ff:ff:ff:ff:ff", npdu(unconfirmed(0, I_AM)))
    request = llc_frame(ROUTER_MAC, DEVICE_MAC, npdu(confirmed(12, 7, READ_PROPERTY), expecting_reply=True))
    ack = complex_ack(12, 7, READ_PROPERTY + opening(3) + app(4, struct.pack("!f", 21.5)) + closing(3))
    reply = llc_frame(DEVICE_MAC, ROUTER_MAC, npdu(ack), padding=20)  # past the 802.3 length: not read
    msgs, anomalies, _ = factory.decode([who_is, i_am, request, reply])
    assert not anomalies
    assert [(m.protocol, m.direction, m.function, m.operation) for m in msgs] == [
        ("bacnet", "request", 0x108, "discovery"),
        ("bacnet", "request", 0x100, "discovery"),
        ("bacnet", "request", 12, "read"),
        ("bacnet", "response", 12, "read"),
    ]
    assert msgs[1].fields["identity"] == {"device_instance": 1234, "vendor_id": 260}
    assert "bvlc_function" not in msgs[1].fields and msgs[1].flow.ip_version == 0
    assert msgs[3].request_cnt == msgs[2].pcap_cnt
    assert {m.flow.app_proto for m in msgs} == {"bacnet"}


def test_the_inventory_gives_an_llc_identity_to_the_sending_mac() -> None:
    inventory = AssetInventory()
    i_am = llc_frame(DEVICE_MAC, "ff:ff:ff:ff:ff:ff", npdu(unconfirmed(0, I_AM)))
    Pipeline(PipelineConfig(), consumers=[inventory]).run(factory.ListSource([i_am]))
    assert inventory.hosts[bytes.fromhex("02000000000b")].identity["device_instance"] == 1234


def test_pairing_key_holds_invoke_id_requester_and_routed_peer() -> None:
    # The same invoke id to two devices behind a router, answered in reverse order.
    to_a = unicast(confirmed(12, 9, READ_PROPERTY), dnet=(5, b"\x0a"))
    to_b = unicast(confirmed(12, 9, READ_PROPERTY), dnet=(5, b"\x0b"))
    from_b = unicast(complex_ack(12, 9, READ_PROPERTY), snet=(5, b"\x0b"))
    from_a = unicast(complex_ack(12, 9, READ_PROPERTY), snet=(5, b"\x0a"))
    # The device also asks the client something with the same invoke id.
    reverse = unicast(
        confirmed(15, 9, ctx(0, oid(2, 1)) + ctx(1, b"\x55") + opening(3) + app(4, bytes(4)) + closing(3))
    )
    msgs, anomalies, pipeline = decode(
        [
            (True, to_a),
            (True, to_b),
            (False, reverse),
            (False, from_b),
            (False, from_a),
            (True, unicast(simple_ack(15, 9))),
        ]
    )
    assert not anomalies
    assert (
        msgs[0].fields["dnet"] == 5 and msgs[0].fields["dadr"] == "0a" and msgs[0].fields["hop_count"] == 255
    )
    assert msgs[3].request_cnt == msgs[1].pcap_cnt and msgs[4].request_cnt == msgs[0].pcap_cnt
    assert msgs[5].request_cnt == msgs[2].pcap_cnt and msgs[5].operation == "write"
    stats = pipeline.decoders.stats["bacnet"]
    assert stats.matched == 3 and stats.unmatched_responses == 0


def test_device_properties_read_back_give_the_identity() -> None:
    def read(invoke_id: int, prop: int) -> bytes:
        return confirmed(12, invoke_id, ctx(0, oid(DEVICE_OBJECT, 77)) + ctx(1, bytes([prop])))

    def ack(invoke_id: int, prop: int, value: bytes, object_type: int = DEVICE_OBJECT) -> bytes:
        params = ctx(0, oid(object_type, 77)) + ctx(1, bytes([prop])) + opening(3) + value + closing(3)
        return complex_ack(12, invoke_id, params)

    model = app(7, b"\x00EAC-257")
    msgs, anomalies, _ = decode(
        [
            (True, unicast(read(1, 70))),
            (False, unicast(ack(1, 70, model))),
            (True, unicast(read(2, 44))),
            (False, unicast(ack(2, 44, app(7, b"\x05r\xe9v 2")))),  # ISO 8859-1
            (True, unicast(read(3, 120))),
            (False, unicast(ack(3, 120, app(2, b"\x01\x04")))),
            (True, unicast(read(4, 70))),
            (False, unicast(ack(4, 70, model), snet=(3, b"\x09"))),  # a device behind a router
            (True, unicast(read(5, 70))),
            (False, unicast(ack(5, 70, model, object_type=ANALOG_OUTPUT))),  # not the Device object
            (True, unicast(read(6, 70))),
            (False, unicast(ack(6, 70, app(7, b"\x03DBCS")))),  # a character set we do not decode
        ]
    )
    assert not anomalies
    identities = [m.fields.get("identity") for m in msgs if m.direction == "response"]
    assert identities == [
        {"device_instance": 77, "model": "EAC-257"},
        {"device_instance": 77, "revision": "rév 2"},
        {"device_instance": 77, "vendor_id": 260},
        {"device_instance": 77, "model": "EAC-257"},  # the routed device's, not the router's
        None,
        None,
    ]
    assert [m.fields.get("identity_of") for m in msgs if "identity" in m.fields] == [None] * 3 + [
        "bacnet:3:09"
    ]
    assert all("identity" not in m.fields for m in msgs if m.direction == "request")


def test_write_property_with_a_priority_is_operate() -> None:
    value = opening(3) + app(4, struct.pack("!f", 50.0)) + closing(3)
    plain = confirmed(15, 1, READ_PROPERTY + value)
    commanded = confirmed(15, 2, READ_PROPERTY + value + ctx(4, b"\x08"))
    msgs, anomalies, _ = decode(
        [
            (True, unicast(plain)),
            (False, unicast(simple_ack(15, 1))),
            (True, unicast(commanded)),
            (False, unicast(simple_ack(15, 2))),
        ]
    )
    assert not anomalies
    assert [m.operation for m in msgs] == ["write", "write", "operate", "operate"]
    assert msgs[2].fields["write_priority"] == 8 and msgs[3].direction == "response"


def test_read_property_multiple_lists_objects_and_first_properties() -> None:
    request = (
        ctx(0, oid(0, 1))
        + opening(1)
        + ctx(0, bytes([PRESENT_VALUE]))
        + ctx(0, bytes([OBJECT_NAME]))
        + closing(1)
        + ctx(0, oid(3, 2))
        + opening(1)
        + ctx(0, bytes([OBJECT_NAME]))
        + closing(1)
    )
    ack = (
        ctx(0, oid(0, 1))
        + opening(1)
        + ctx(2, bytes([PRESENT_VALUE]))
        + opening(4)
        + app(4, bytes(4))
        + closing(4)
        + closing(1)
    )
    msgs, anomalies, _ = decode(
        [(True, unicast(confirmed(14, 3, request))), (False, unicast(complex_ack(14, 3, ack)))]
    )
    assert not anomalies
    assert msgs[0].fields["objects"] == [
        {"object_type": 0, "instance": 1, "property_id": PRESENT_VALUE},
        {"object_type": 3, "instance": 2, "property_id": OBJECT_NAME},
    ]
    assert msgs[0].fields["object_count"] == 2 and msgs[0].fields["object_type"] == 0
    assert msgs[1].fields["objects"] == [{"object_type": 0, "instance": 1, "property_id": PRESENT_VALUE}]


def test_error_reject_and_abort_are_exceptional_responses() -> None:
    error = bytes([0x50, 4, 12]) + app(9, b"\x02") + app(9, b"\x20")  # property / unknown-property
    wpm_error = (
        bytes([0x50, 5, 16]) + opening(0) + app(9, b"\x01") + app(9, b"\x1f") + closing(0) + ctx(1, bytes(6))
    )
    msgs, anomalies, _ = decode(
        [
            (True, unicast(confirmed(12, 4, READ_PROPERTY))),
            (False, unicast(error)),
            (True, unicast(confirmed(16, 5, ctx(0, oid(1, 1))))),
            (False, unicast(wpm_error)),
            (True, unicast(confirmed(12, 6, READ_PROPERTY))),
            (False, unicast(bytes([0x60, 6, 9]))),
            (True, unicast(confirmed(20, 8, ctx(0, b"\x01")))),
            (False, unicast(bytes([0x71, 8, 4]))),
        ]
    )
    assert not anomalies
    err, wpm, reject, abort = msgs[1], msgs[3], msgs[5], msgs[7]
    assert (err.fields["error_class"], err.fields["error_code"], err.exception, err.operation) == (
        "property",
        32,
        True,
        "read",
    )
    assert (wpm.fields["error_class"], wpm.fields["error_code"], wpm.operation) == ("object", 31, "write")
    assert (reject.fields["reject_reason"], reject.exception, reject.function, reject.request_cnt) == (
        "unrecognized-service",
        True,
        12,
        msgs[4].pcap_cnt,
    )
    assert abort.fields["abort_reason"] == "segmentation-not-supported" and abort.fields["sent_by_server"]
    assert (abort.operation, abort.function, abort.request_cnt) == ("mode", 20, msgs[6].pcap_cnt)


def test_segmented_reply_keeps_the_request_until_the_last_segment() -> None:
    first = bytes([0x3C, 11, 0, 4, 14]) + ctx(0, oid(8, 1)) + opening(1) + ctx(2, bytes([76])) + opening(4)
    middle = bytes([0x3C, 11, 1, 4, 14]) + bytes(20)
    last = bytes([0x38, 11, 2, 4, 14]) + bytes(10)
    segment_ack = bytes([0x40, 11, 2, 4])
    msgs, anomalies, _ = decode(
        [
            (
                True,
                unicast(
                    bytes([0x02, 0x75, 11, 14])
                    + ctx(0, oid(8, 1))
                    + opening(1)
                    + ctx(0, bytes([76]))
                    + closing(1)
                ),
            ),
            (False, unicast(first)),
            (False, unicast(middle)),
            (False, unicast(last)),
            (True, unicast(segment_ack)),
        ]
    )
    assert not anomalies
    request = msgs[0]
    assert request.fields["segmented_accepted"] and request.fields["max_segments"] == 7
    assert request.fields["max_apdu"] == 5
    assert [m.request_cnt for m in msgs[1:4]] == [request.pcap_cnt] * 3
    assert (
        msgs[1].fields["segmented"]
        and msgs[1].fields["more_follows"]
        and msgs[1].fields["sequence_number"] == 0
    )
    assert msgs[1].fields["objects"] == [{"object_type": 8, "instance": 1, "property_id": 76}]
    assert "objects" not in msgs[2].fields  # a continuation segment carries no parameters to read
    assert not msgs[3].fields["more_follows"]
    assert (msgs[4].fields["apdu_type"], msgs[4].request_cnt, msgs[4].fields["sent_by_server"]) == (
        4,
        0,
        False,
    )


def test_backup_reads_are_uploads_and_restore_writes_are_program() -> None:
    read_file = confirmed(
        6, 0, app(12, oid(FILE, 1)) + opening(0) + app(3, b"\x00") + app(2, b"\x04\x00") + closing(0)
    )
    write_file = confirmed(
        7, 0, app(12, oid(FILE, 1)) + opening(0) + app(3, b"\x00") + app(6, b"ab") + closing(0)
    )
    password = ctx(1, b"\x00secret")
    steps = [
        confirmed(6, 1, read_file[4:]),
        confirmed(20, 2, ctx(0, b"\x02") + password),  # startbackup
        confirmed(6, 3, read_file[4:]),
        confirmed(20, 4, ctx(0, b"\x03")),  # endbackup
        confirmed(6, 5, read_file[4:]),
        confirmed(20, 6, ctx(0, b"\x04")),  # startrestore
        confirmed(7, 7, write_file[4:]),
        confirmed(20, 8, ctx(0, b"\x05")),  # endrestore
        confirmed(17, 9, ctx(0, b"\x3c") + ctx(1, b"\x01") + ctx(2, b"\x00pw")),
    ]
    msgs, anomalies, _ = decode([(True, unicast(step)) for step in steps])
    assert not anomalies
    assert [m.operation for m in msgs] == [
        "file",
        "mode",
        "upload",
        "mode",
        "file",
        "mode",
        "program",
        "mode",
        "mode",
    ]
    assert msgs[1].fields["reinitialized_state"] == "startbackup" and msgs[1].fields["password_present"]
    assert msgs[2].fields["object_type"] == FILE
    assert msgs[8].fields["enable_disable"] == "disable" and msgs[8].fields["time_duration"] == 60
    assert not any("secret" in json.dumps(m.fields) or "pw" in json.dumps(m.fields) for m in msgs)


def test_network_layer_and_bvll_messages() -> None:
    who_is_router = bvlc(0x0B, bytes([1, 0x80, 0x00]))
    i_am_router = bvlc(0x0B, bytes([1, 0x80, 0x01, 0x00, 0x05, 0x00, 0x06]))
    proprietary = bvlc(0x0A, bytes([1, 0x80, 0x90, 0x01, 0x04]))
    register = bvlc(0x05, struct.pack("!H", 300))
    result = bvlc(0x00, struct.pack("!H", 0x0030))  # Register-Foreign-Device NAK
    msgs, anomalies, _ = decode(
        [
            (True, who_is_router),
            (False, i_am_router),
            (True, proprietary),
            (True, register),
            (False, result),
            (True, bvlc(0x02, b"")),
        ]
    )
    assert not anomalies
    assert [(m.function, m.operation) for m in msgs] == [
        (0x200, "discovery"),
        (0x201, "discovery"),
        (0x290, "vendor"),
        (0x305, "session"),
        (0x300, "session"),
        (0x302, "diagnostic"),
    ]
    assert msgs[1].fields["network"] == 5 and msgs[2].fields["vendor_id"] == 260
    assert msgs[3].fields["ttl"] == 300
    assert (
        msgs[4].exception
        and msgs[4].request_cnt == msgs[3].pcap_cnt
        and msgs[4].fields["result_code"] == 0x30
    )


# DOMAIN.md section 5, as written there (19/5, text messages, have no class: unknown).
DOMAIN_CONFIRMED = {
    "read": (3, 4, 12, 13, 14, 26, 29, 33),
    "write": (8, 9, 15, 16),
    "config": (10, 11),
    "operate": (0, 27),
    "mode": (17, 20),
    "file": (6, 7),
    "subscribe": (1, 2, 5, 28, 30, 31, 32),
    "session": (21, 22, 23),
    "auth": (24, 25),
    "vendor": (18,),
    "unknown": (19,),
}
DOMAIN_UNCONFIRMED = {
    "discovery": (0, 1, 7, 8, 13),
    "config": (14,),
    "time": (6, 9),
    "write": (10,),
    "vendor": (4,),
    "subscribe": (2, 3, 11, 12),
    "unknown": (5,),
}


def test_every_service_takes_its_domain_class() -> None:
    confirmed_services = [(s, op) for op, services in DOMAIN_CONFIRMED.items() for s in services]
    unconfirmed_services = [(s, op) for op, services in DOMAIN_UNCONFIRMED.items() for s in services]
    assert sorted(s for s, _ in confirmed_services) == list(range(34))
    assert sorted(s for s, _ in unconfirmed_services) == list(range(15))
    datagrams = [(True, unicast(confirmed(s, i))) for i, (s, _) in enumerate(confirmed_services)]
    datagrams += [(True, unicast(unconfirmed(s))) for s, _ in unconfirmed_services]
    msgs, _anomalies, _ = decode(datagrams)
    assert [m.operation for m in msgs] == [op for _, op in confirmed_services + unconfirmed_services]
    assert {m.operation for m in msgs} <= OPERATIONS


# -- anomalies, probing, EVE ---------------------------------------------------------------------------


def test_malformed_datagrams_are_anomalies() -> None:
    bad_length = bytes([0x81, 0x0A, 0x00, 0x40]) + npdu(unconfirmed(8))
    msgs, anomalies, _ = decode(
        [
            (True, unicast(confirmed(12, 1, READ_PROPERTY))),
            (True, bad_length),  # decoded anyway, as Wireshark does
            (True, bvlc(0x0A, bytes([2, 0]) + unconfirmed(8))),  # NPDU version 2
            (True, unicast(bytes([0x90, 0x01]))),  # reserved APDU type 9
            (True, unicast(bytes([0x00, 0x05]))),  # confirmed request cut in its header
            (True, unicast(confirmed(12, 2, ctx(0, oid(1, 1))[:3]))),  # tag runs past the end
            (True, unicast(confirmed(40, 3))),  # unknown service
            (True, bvlc(0x0A, bytes([1, 0x20, 0x00]))),  # cut inside the destination specifier
            (True, bvlc(0x0E, b"")),  # unknown BVLC function
            (False, unicast(bytes([0x50, 1, 12]))),  # Error without class and code
        ]
    )
    assert events(anomalies) == [
        "bad_length",
        "bad_version",
        "unknown_pdu_type",
        "bad_length",
        "bad_encoding",
        "unknown_function",
        "bad_length",
        "unknown_function",
        "bad_encoding",
    ]
    assert [m.function for m in msgs] == [12, 0x108, 12, 40, 12]
    assert msgs[3].operation == "unknown"


def test_probe() -> None:
    assert bacnet.probe(unicast(confirmed(12, 1, READ_PROPERTY)), True)
    assert bacnet.probe(bvlc(0x05, struct.pack("!H", 60)), True)
    assert not bacnet.probe(b"\x81\x0a\x00\x08\x02\x00\x10\x08", True)  # NPDU version 2
    assert not bacnet.probe(b"\x82\x0a\x00\x06\x01\x00", True)  # BACnet/IPv6 BVLC
    assert not bacnet.probe(bvlc(0x05, b"\x00"), True)  # wrong fixed length
    assert not bacnet.probe(b"GET / HTTP/1.1\r\n", True)


def test_found_on_another_port_by_its_payload() -> None:
    msgs, _, _ = decode(
        [
            (True, unicast(confirmed(12, 1, READ_PROPERTY))),
            (False, unicast(complex_ack(12, 1, READ_PROPERTY))),
        ],
        sport=47809,
        dport=47809,
    )
    assert [m.protocol for m in msgs] == ["bacnet", "bacnet"] and msgs[1].request_cnt == msgs[0].pcap_cnt
    msgs, _, _ = decode([(True, b"\x81" + bytes(30))], dport=47808)
    assert not msgs


def test_bvlc_found_on_an_undeclared_tcp_port_is_framed_by_its_length() -> None:
    request, reply = unicast(confirmed(12, 1, READ_PROPERTY)), unicast(complex_ack(12, 1, READ_PROPERTY))
    packets = factory.tcp_stream(
        [(True, request + request[:5]), (True, request[5:]), (False, reply)], dport=47900
    )
    msgs, anomalies, _ = factory.decode(packets)
    assert not anomalies
    assert [(m.protocol, m.direction, m.function) for m in msgs] == [("bacnet", "request", 12)] * 2 + [
        ("bacnet", "response", 12)
    ]
    assert bacnet.BacnetDecoder.message_length(b"\x81\x0a\x00\x02", 0, 4) == -1  # shorter than its header
    assert bacnet.BacnetDecoder.message_length(b"\x81", 0, 1) == 0  # wait for the length


def test_eve_object(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    packets = [factory.udp(DEVICE, "192.0.2.255", 47808, 47808, bvlc(0x0B, npdu(unconfirmed(0, I_AM))))]
    Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    ot = [e for e in map(json.loads, out.read_text().splitlines()) if e["event_type"] == "ot"]
    assert ot[0]["bacnet"]["identity"] == {"device_instance": 1234, "vendor_id": 260}
    assert ot[0]["ot"] == {
        "protocol": "bacnet",
        "operation": "discovery",
        "direction": "request",
        "function": 0x100,
    }
    assert ot[0]["app_proto"] == "bacnet"


# -- robustness --------------------------------------------------------------------------------------

VALID = [
    unicast(confirmed(12, 1, READ_PROPERTY), expecting_reply=True),
    unicast(
        complex_ack(12, 1, READ_PROPERTY + opening(3) + app(4, bytes(4)) + closing(3)), snet=(7, b"\x01\x02")
    ),
    bvlc(0x04, bytes(6) + npdu(unconfirmed(0, I_AM), dnet=(0xFFFF, b""))),
    unicast(confirmed(20, 2, ctx(0, b"\x02") + ctx(1, b"\x00pw"))),
    unicast(bytes([0x50, 4, 12]) + app(9, b"\x02") + app(9, b"\x20")),
    unicast(bytes([0x3C, 11, 0, 4, 14]) + ctx(0, oid(8, 1)) + opening(1)),
    bvlc(0x00, b"\x00\x00"),
    bvlc(0x0B, npdu(unconfirmed(0, I_AM), snet=(5, b"\x17"))),  # routed from an MS/TP network
    forwarded_by(bytes([192, 0, 2, 18]), npdu(unconfirmed(0, I_AM), snet=(11, bytes(6)))),
]


def _decoder(max_pending: int = 8) -> bacnet.BacnetDecoder:
    ctx_ = DecoderContext(DecoderConfig(max_pending=max_pending), lambda m: None, lambda a: None)
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 47808, 47808, 17, ()), 1, 4, 0.0, 1, 0, 60.0)
    return bacnet.BacnetDecoder(flow, ctx_, True)


def _feed(datagrams: list[tuple[bool, bytes]]) -> None:
    decoder = _decoder()
    for cnt, (to_server, data) in enumerate(datagrams, 1):
        decoder.feed_segment(to_server, 0, data, float(cnt), cnt, 0)
        assert len(decoder.pending) <= 8 and len(decoder._backup) <= bacnet.MAX_TRACKED_DEVICES
    decoder.close("shutdown")
    assert len(decoder.pending) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=300)), min_size=1, max_size=10))
def test_random_datagrams_never_raise(datagrams: list[tuple[bool, bytes]]) -> None:
    _feed(datagrams)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_datagrams_never_raise(data: st.DataObject) -> None:
    datagrams = []
    for _ in range(data.draw(st.integers(1, 6))):
        datagram = bytearray(data.draw(st.sampled_from(VALID)))
        for _ in range(data.draw(st.integers(1, 6))):
            datagram[data.draw(st.integers(0, len(datagram) - 1))] = data.draw(st.integers(0, 255))
        datagrams.append(
            (data.draw(st.booleans()), bytes(datagram[: data.draw(st.integers(1, len(datagram)))]))
        )
    _feed(datagrams)


def test_tables_stay_bounded_under_many_requests() -> None:
    decoder = _decoder(max_pending=8)
    for i in range(300):
        decoder.feed_segment(
            True,
            0,
            unicast(confirmed(20, i & 0xFF, ctx(0, b"\x02")), dnet=(1, bytes([i & 0xFF, i >> 8]))),
            float(i),
            i + 1,
            0,
        )
    assert len(decoder.pending) == 8 and len(decoder._backup) == bacnet.MAX_TRACKED_DEVICES
    assert decoder.stats.pending_evicted == 292


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_llc_frames_never_raise(data: st.DataObject) -> None:
    ctx_ = DecoderContext(DecoderConfig(max_pending=8), lambda m: None, lambda a: None)
    key = (bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b"), 0, 0, llc_key(LLC_BACNET), ())
    decoder = bacnet.BacnetLlcDecoder(Flow(key, 1, 0, 0.0, 1, 0, 60.0), ctx_, True)
    for cnt in range(1, data.draw(st.integers(1, 6)) + 1):
        frame = bytearray(data.draw(st.sampled_from(VALID))[4:])  # the NPDU without its BVLC header
        for _ in range(data.draw(st.integers(0, 6))):
            frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
        cut = bytes(frame[: data.draw(st.integers(0, len(frame)))])
        decoder.feed_segment(data.draw(st.booleans()), 0, cut, float(cnt), cnt, 0)
        assert len(decoder.pending) <= 8
    decoder.close("shutdown")


@settings(max_examples=300, deadline=None)
@given(
    network=st.integers(0, 0xFFFF),
    sadr=st.binary(max_size=8),
    instance=st.integers(0, 0x3FFFFF),
    vendor=st.integers(0, 0xFFFF),
    forwarded=st.booleans(),
)
def test_a_routed_i_am_is_the_identity_of_exactly_the_device_its_source_names(
    network: int, sadr: bytes, instance: int, vendor: int, forwarded: bool
) -> None:
    i_am = app(12, oid(DEVICE_OBJECT, instance)) + app(2, b"\x05\xc4") + app(9, b"\x03")
    i_am += app(2, struct.pack("!H", vendor))
    body = npdu(unconfirmed(0, i_am), snet=(network, sadr))
    datagram = forwarded_by(bytes([192, 0, 2, 18]), body) if forwarded else bvlc(0x0B, body)
    msgs: list = []
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\xff", 47808, 47808, 17, ()), 1, 4, 0.0, 1, 0, 60.0)
    decoder = bacnet.BacnetDecoder(flow, DecoderContext(DecoderConfig(), msgs.append, lambda a: None))
    decoder.feed_segment(False, 0, datagram, 1.0, 1, 0)
    [msg] = msgs
    fields = msg.fields
    assert (fields["snet"], fields["sadr"], fields["device_instance"]) == (network, sadr.hex(), instance)
    if sadr and 0 < network < 0xFFFF:
        assert fields["identity"] == {"device_instance": instance, "vendor_id": vendor}
        assert fields["identity_of"] == f"bacnet:{network}:{sadr.hex()}"
        assert fields.get("identity_via") == ("192.0.2.18" if forwarded else None)
        # The inventory reads it back as that device's key, ordered by network and MAC.
        assert identity_owner(fields) == fields["identity_of"]
        assert routed_sort_key(fields["identity_of"]) == (network, sadr)
    else:  # a broadcast or unnamed source is no device
        assert "identity" not in fields and "identity_of" not in fields and "identity_via" not in fields
