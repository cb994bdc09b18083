"""PROFINET over Ethernet: DCP services and identity, RT cyclic bookkeeping, alarms, random input."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from tests import factory

CONTROLLER = "02:00:00:00:00:0a"
DEVICE = "02:00:00:00:00:0b"
DCP_GROUP = "01:0e:cf:00:00:00"


def pn(src: str, dst: str, body: bytes, vlan: int | None = None) -> Packet:
    if vlan is not None:
        return Ether(src=src, dst=dst) / Dot1Q(vlan=vlan, prio=6, type=0x8892) / Raw(body)
    return Ether(src=src, dst=dst, type=0x8892) / Raw(body)


def block(option: int, sub: int, value: bytes, prefix: bytes | None = None) -> bytes:
    data = (prefix if prefix is not None else b"") + value
    return struct.pack("!BBH", option, sub, len(data)) + data + (b"\0" if len(data) % 2 else b"")


def dcp(frame_id: int, service: int, stype: int, xid: int, blocks: bytes, delay: int = 0) -> bytes:
    return struct.pack("!HBBIHH", frame_id, service, stype, xid, delay, len(blocks)) + blocks


IDENTITY_BLOCKS = (
    block(2, 2, b"plc-line-1", b"\0\0")
    + block(2, 1, b"S7-1500", b"\0\0")
    + block(2, 3, struct.pack("!HH", 0x002A, 0x010E), b"\0\0")
    + block(2, 4, b"\x02\x00", b"\0\0")
    + block(1, 2, bytes([192, 168, 0, 10, 255, 255, 255, 0, 192, 168, 0, 1]), b"\0\1")
)


def test_identify_request_and_response_with_identity() -> None:
    request = pn(CONTROLLER, DCP_GROUP, dcp(0xFEFE, 5, 0, 0x1234, block(0xFF, 0xFF, b""), delay=1))
    response = pn(DEVICE, CONTROLLER, dcp(0xFEFF, 5, 1, 0x1234, IDENTITY_BLOCKS))
    messages, anomalies, _ = factory.decode([request, response])
    assert not anomalies
    req, resp = messages
    assert (req.operation, req.direction, req.function, req.fields["service"]) == (
        "discovery",
        "request",
        0xFEFE,
        "identify",
    )
    assert req.fields["options"] == [[0xFF, 0xFF]] and req.fields["response_delay"] == 1
    assert (resp.operation, resp.direction) == ("discovery", "response")
    assert resp.fields["identity"] == {
        "name": "plc-line-1",
        "product": "S7-1500",
        "vendor_id": 0x2A,
        "product_code": 0x010E,
        "role_hint": "io-controller",
    }
    assert resp.fields["ip"] == "192.168.0.10" and resp.fields["gateway"] == "192.168.0.1"
    assert req.flow is not resp.flow  # the answer travels on the responder's own L2 flow


def test_set_name_of_station_is_config_and_pairs_with_its_response() -> None:
    set_req = pn(CONTROLLER, DEVICE, dcp(0xFEFD, 4, 0, 7, block(2, 2, b"new-name", b"\0\1")))
    set_resp = pn(DEVICE, CONTROLLER, dcp(0xFEFD, 4, 1, 7, block(5, 4, b"\x02\x02\x00")))
    messages, _, _ = factory.decode([set_req, set_resp])
    req, resp = messages
    assert (req.operation, req.fields["name_of_station"], req.fields["options"]) == (
        "config",
        "new-name",
        [[2, 2]],
    )
    assert "identity" not in req.fields  # the value set describes the target, not the sender
    assert (resp.direction, resp.request_cnt, resp.operation, resp.fields["results"]) == (
        "response",
        1,
        "config",
        [[2, 2, 0]],
    )


def test_factory_reset_and_signal() -> None:
    reset = pn(CONTROLLER, DEVICE, dcp(0xFEFD, 4, 0, 8, block(5, 6, b"\0\0", b"\0\0")))
    signal = pn(CONTROLLER, DEVICE, dcp(0xFEFD, 4, 0, 9, block(5, 3, b"\x01\x00", b"\0\0")))
    messages, _, _ = factory.decode([reset, signal])
    assert (messages[0].operation, messages[0].fields["factory_reset"]) == ("config", True)
    assert messages[1].operation == "diagnostic"  # flashing the LED changes nothing


def test_get_request_lists_bare_options() -> None:
    get = pn(CONTROLLER, DEVICE, dcp(0xFEFD, 3, 0, 10, b"\x02\x02\x01\x02"))
    unsupported = pn(DEVICE, CONTROLLER, dcp(0xFEFD, 3, 5, 10, b""))
    messages, _, _ = factory.decode([get, unsupported])
    assert (messages[0].operation, messages[0].fields["options"]) == ("diagnostic", [[2, 2], [1, 2]])
    assert messages[1].exception and messages[1].request_cnt == 1


def rt(frame_id: int, counter: int, data_status: int = 0x35, transfer: int = 0) -> Packet:
    body = struct.pack("!H", frame_id) + bytes(40) + struct.pack("!HBB", counter, data_status, transfer)
    return pn(DEVICE, CONTROLLER, body, vlan=0)


def test_rt_cyclic_frames_counter_gaps_and_status() -> None:
    frames = [rt(0xC001, 0), rt(0xC001, 256), rt(0xC001, 512), rt(0xC001, 1280), rt(0x8001, 5, 0x31)]
    messages, anomalies, _ = factory.decode(frames, step=0.008)
    assert not anomalies
    first, second, third, late, class2 = (m.fields for m in messages)
    assert all(m.operation == "io" for m in messages) and first["rt_class"] == 1 and class2["rt_class"] == 2
    assert (second["cycle_delta"], second["cycle_gap"], second["interval_s"]) == (256, 0, 0.008)
    assert (third["cycle_gap"], late["cycle_delta"], late["cycle_gap"]) == (0, 768, 2)
    assert first["data_valid"] and first["provider_run"] and first["station_ok"] and first["primary"]
    assert class2["data_valid"] is False and messages[0].flow.vlan == (0,)


def test_rt_counter_wraps_without_a_gap() -> None:
    messages, _, _ = factory.decode([rt(0xC001, 65280), rt(0xC001, 0), rt(0xC001, 256)])
    assert [m.fields.get("cycle_gap") for m in messages] == [None, 0, 0]


def test_alarm_notification_and_abort() -> None:
    notification = struct.pack("!HHBBHIHHII", 0x0001, 36, 1, 0, 0x0004, 0, 1, 0x8001, 0x32, 0x1) + b"\0\0"
    data = struct.pack("!HHHBBHHH", 0xFC01, 1, 2, 0x11, 0x11, 1, 0xFFFE, len(notification)) + notification
    err = struct.pack("!HHHBBHHH", 0xFE01, 1, 2, 0x14, 0x01, 0xFFFF, 0xFFFE, 4) + bytes.fromhex("cf81fd0f")
    messages, anomalies, _ = factory.decode([pn(DEVICE, CONTROLLER, data), pn(DEVICE, CONTROLLER, err)])
    alarm, abort = messages
    assert (alarm.operation, alarm.fields["alarm"], alarm.fields["slot"], alarm.fields["priority"]) == (
        "diagnostic",
        "plug",
        1,
        "high",
    )
    assert abort.fields["pdu_type"] == "err" and abort.fields["pnio_status"] == "cf81fd0f"
    assert [a.fields["anomaly"]["event"] for a in anomalies] == ["alarm_abort"]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (dcp(0xFEFD, 4, 0, 1, b"")[:8], "truncated"),
        (struct.pack("!HBBIHH", 0xFEFD, 4, 0, 1, 0, 40) + b"\0" * 4, "bad_length"),
        (dcp(0xFEFD, 4, 0, 1, struct.pack("!BBH", 2, 2, 30) + b"x"), "bad_length"),
        (dcp(0xFEFD, 9, 0, 1, b""), "unknown_service"),
        (struct.pack("!H", 0xC001) + b"\0", "truncated"),
    ],
)
def test_malformed_frames_are_anomalies(body: bytes, kind: str) -> None:
    messages, anomalies, _ = factory.decode([pn(CONTROLLER, DEVICE, body)])
    assert not messages and [a.fields["anomaly"]["event"] for a in anomalies] == [kind]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0xFEFD, 0xFEFE, 0xFEFF, 0xFEFC, 0xFC01, 0xFE01, 0xC000, 0x0100, 0xFF40, 0xFF80]),
    st.binary(max_size=120),
)
def test_random_bodies_never_raise(frame_id: int, body: bytes) -> None:
    factory.decode([pn(CONTROLLER, DEVICE, struct.pack("!H", frame_id) + body)])
