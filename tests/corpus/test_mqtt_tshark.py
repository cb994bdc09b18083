"""MQTT against tshark, frame by frame (see ot_oracle): the control packet type (``mqtt.msgtype``).

Every corpus capture tshark finds MQTT in (all on TCP 1883). tshark decodes a reserved type 0 as
type 0; so do we (an ``unknown`` message with an ``unassigned_msg_type`` anomaly).
"""

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import assert_agreement, captures_with, compare_protocol, our_messages

pytestmark = pytest.mark.corpus


def _types(values: list[str]) -> list[int]:
    return [int(v, 0) for v in values[0].split(",") if v] if values else []


def _our_type(msg: OtMessage) -> int:
    return int(msg.fields["message_type"])


def _captures() -> list:
    captures = captures_with("MQTT")
    if not captures:
        pytest.skip("corpus not available")
    return captures


def test_mqtt_message_types_match_tshark() -> None:
    result = compare_protocol(
        "mqtt", _captures(), "mqtt", _types, our_code=_our_type, tshark_field_names=["mqtt.msgtype"]
    )
    assert_agreement(result)


def _topics(values: list[str]) -> list[int]:
    return [hash(t) for t in values[0].split(",") if t] if values else []


def _our_topic(msg: OtMessage) -> int | None:
    topic = msg.fields.get("topic")
    return hash(topic) if isinstance(topic, str) and msg.fields["message_type"] == 3 else None


def test_mqtt_publish_topics_match_tshark() -> None:
    result = compare_protocol(
        "mqtt",
        _captures(),
        "mqtt.msgtype == 3",
        _topics,
        our_code=_our_topic,
        tshark_field_names=["mqtt.topic"],
    )
    assert_agreement(result)


def test_mqtt_operation_classes_and_pairing_in_real_captures() -> None:
    by_capture = {str(path): our_messages(path, "mqtt") for path in _captures()}
    messages = [m for frames in by_capture.values() for ms in frames.values() for m in ms]
    assert {m.operation for m in messages} == {"session", "write", "subscribe", "unknown"}
    qos2 = next(frames for name, frames in by_capture.items() if name.endswith("mqtt311-pub-qos2/input.pcap"))
    flow = [m for _frame, ms in sorted(qos2.items()) for m in ms]
    assert [m.fields["message_name"] for m in flow] == [
        "connect",
        "connack",
        "publish",
        "pubrec",
        "pubrel",
        "pubcomp",
        "disconnect",
    ]
    assert flow[3].request_cnt == flow[2].pcap_cnt and flow[5].request_cnt == flow[4].pcap_cnt
    assert flow[2].fields["qos"] == 2 and flow[0].fields["protocol_version"] == 4
