"""MQTT against every peer output EXPECTED.tsv lists for an MQTT capture in the snapshot.

``test_every_mqtt_row_is_compared`` keeps the list honest. The rows:

* Zeek ``mqtt_connect.log``, ``mqtt_publish.log``, ``mqtt_subscribe.log`` (scripts.base.protocols.mqtt.mqtt,
  and the payload-cap variants, whose logs differ only in payload lengths that we also compare):
  compared line by line, with Zeek's names rebuilt from our numbers. Zeek logs message payloads;
  we record their length only, by design.
* suricata-verify (48 rows): every ``event_type: mqtt`` and ``event_type: anomaly`` check of each
  test.yaml, counted over our messages grouped as Suricata groups them into transactions (a request
  with its replies; a QoS 2 PUBLISH with its PUBREC, PUBREL and PUBCOMP). Our protocol-state
  anomalies use Suricata's event names. Not compared, by design: alert checks (Suricata's rules),
  frame and flow checks (Suricata's internals), user names, passwords and message payloads (we
  record presence and length only), v5 property values (we skip properties by their length) and
  values Suricata's ``string-log-limit`` truncated.
* nDPI ``coap_mqtt.pcap.out``: MQTT on TCP 17501. Of nDPI's four MQTT flows only one shows its
  CONNECT (tcp.stream 2); the other three are picked up mid-session (PINGREQ, PUBLISH). Without a
  port hint we find the one with the CONNECT, as the any-port probe requires; with
  ``--ports mqtt=17501`` all four, with nDPI's packet and byte counts.

Known differences:

* A v5 DISCONNECT of remaining length 1 (``e0 01 04`` in mqtt5-sub-userpass, mqtt5-unsub-userpass,
  mqtt5-unsub-qos1/qos2 and the rule tests on the same captures): the byte is the reason code, 4
  "disconnect with will message" (MQTT 5.0 section 3.14.2.1: present whenever the remaining length
  is at least 1; tshark reads 4 too). Suricata 7.0.10 (run here) logs reason code 0. Peer wrong;
  those checks are compared with 4.
* ``truncated`` / ``skipped_length`` checks depend on Suricata's ``max-msg-length`` setting and
  are not compared.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.decoders import mqtt
from agent.decoders.base import REQUEST, OtMessage
from tests.corpus.expected import (
    EXPECTED,
    PCAPS,
    ProtocolRun,
    expected_rows,
    ndpi_counts,
    our_counts,
    rows_comparing,
    run_protocol,
    zeek_log,
)
from tests.corpus.ot_oracle import CORPUS

pytestmark = pytest.mark.corpus

ZEEK = EXPECTED / "zeek"
ZEEK_ROWS = {
    "zeek/scripts.base.protocols.mqtt.mqtt",
    "zeek/scripts.base.protocols.mqtt.mqtt-payload-cap",
    "zeek/scripts.base.protocols.mqtt.mqtt-payload-cap-dynamic",
}
NDPI_ROWS = {"nDPI/coap_mqtt.pcap.out"}


def replay(capture: Path, ports: dict[str, tuple[int, ...]] | None = None) -> ProtocolRun:
    return run_protocol(capture, "mqtt", ports)


def _expected_rows() -> list[dict[str, str]]:
    rows = expected_rows()
    if not rows:
        pytest.skip("corpus not available")
    return rows


# -- Zeek -----------------------------------------------------------------------------------------------


ZEEK_QOS = ("at most once", "at least once", "exactly once")
ZEEK_CONNECT_STATUS = {0: "Connection Accepted"}  # MQTT::return_codes, the value in these logs


def test_zeek_logs() -> None:
    run = replay(PCAPS / "zeek" / "mqtt.pcap")
    base = ZEEK / "scripts.base.protocols.mqtt.mqtt"
    connects = [m for m in run.messages if m.function == mqtt.CONNECT]
    connacks = {m.request_cnt: m for m in run.messages if m.function == mqtt.CONNACK}
    ours_connect = [
        (
            m.fields["protocol_name"],
            mqtt.PROTOCOL_LEVELS[m.fields["protocol_version"]],
            m.fields["client_id"],
            ZEEK_CONNECT_STATUS[connacks[m.pcap_cnt].fields["return_code"]],
            m.fields.get("will_topic", "-"),
        )
        for m in connects
    ]
    assert ours_connect == [
        (r["proto_name"], r["proto_version"], r["client_id"], r["connect_status"], r["will_topic"])
        for r in zeek_log(base / "mqtt_connect.log")
    ]
    publishes = [m for m in run.messages if m.function == mqtt.PUBLISH]
    ours_publish = [
        (
            "T" if m.to_server else "F",
            "T" if m.fields["retain"] else "F",
            ZEEK_QOS[m.fields["qos"]],
            m.fields["topic"],
            str(m.fields["payload_len"]),
        )
        for m in publishes
    ]
    for variant in ("mqtt", "mqtt-payload-cap"):
        rows = zeek_log(ZEEK / f"scripts.base.protocols.mqtt.{variant}" / "mqtt_publish.log")
        assert ours_publish == [
            (r["from_client"], r["retain"], r["qos"], r["topic"], r["payload_len"]) for r in rows
        ]
        assert all(r["status"] == "ok" for r in rows)
    subs = [m for m in run.messages if m.function == mqtt.SUBSCRIBE]
    subacks = {m.request_cnt: m for m in run.messages if m.function == mqtt.SUBACK}
    ours_subscribe = [
        (
            "MQTT::SUBSCRIBE",
            ",".join(t["topic"] for t in m.fields["topics"]),
            ",".join(str(t["qos"]) for t in m.fields["topics"]),
            ",".join(str(c) for c in subacks[m.pcap_cnt].fields["return_codes"]),
            "T",
        )
        for m in subs
    ]
    assert ours_subscribe == [
        (r["action"], r["topics"], r["qos_levels"], r["granted_qos_level"], r["ack"])
        for r in zeek_log(base / "mqtt_subscribe.log")
    ]
    # The dynamic payload-cap test prints each publish's payload length as Zeek saw it.
    out = (ZEEK / "scripts.base.protocols.mqtt.mqtt-payload-cap-dynamic" / "out").read_text()
    assert str(publishes[0].fields["payload_len"]) in out


# -- suricata-verify ----------------------------------------------------------------------------------

# Keys we do not record, by design (see the module docstring).
NOT_RECORDED = re.compile(r"\.(username|password|message)$|\.properties\.|\.will\.message$")
# Keys whose values depend on Suricata's configuration (max-msg-length): such filters are skipped.
CONFIG_DEPENDENT = re.compile(r"\.(truncated|skipped_length)$")
# Where Suricata 7 and the bytes disagree (see the module docstring): the value on the wire.
WIRE_VALUES = {"mqtt.disconnect.reason_code": 4}
WIRE_VALUE_CASES = {
    "suricata-verify/mqtt-sub-rules",
    "suricata-verify/mqtt-unsub-rules",
    "suricata-verify/mqtt5-sub-userpass",
    "suricata-verify/mqtt5-unsub-userpass",
    "suricata-verify/mqtt5-unsub-qos1",
    "suricata-verify/mqtt5-unsub-qos2",
}


def transactions(messages: list[OtMessage]) -> list[dict[str, OtMessage]]:
    """Our messages grouped the way Suricata groups MQTT packets into transactions."""
    txs: list[dict[str, OtMessage]] = []
    # A response names its request by frame; one frame may hold several requests: add the packet id.
    by_request: dict[tuple[int, int, Any], dict[str, OtMessage]] = {}
    open_qos2: dict[tuple[int, bool, Any], dict[str, OtMessage]] = {}
    for m in messages:
        name = m.fields["message_name"]
        flow = id(m.flow)
        if name == "pubrel" and (flow, m.to_server, m.fields.get("packet_id")) in open_qos2:
            tx = open_qos2[flow, m.to_server, m.fields.get("packet_id")]
            tx[name] = m
            by_request[flow, m.pcap_cnt, m.fields.get("packet_id")] = tx
            continue
        request_key = (flow, m.request_cnt, m.fields.get("packet_id"))
        if m.direction == REQUEST or not m.request_cnt or request_key not in by_request:
            tx = {name: m}
            txs.append(tx)
            if m.direction == REQUEST:
                by_request[flow, m.pcap_cnt, m.fields.get("packet_id")] = tx
            if name == "publish" and m.fields.get("qos") == 2:
                open_qos2[flow, m.to_server, m.fields.get("packet_id")] = tx
            continue
        by_request[request_key][name] = m
    return txs


def our_value(msg: OtMessage, name: str, key: str) -> Any:
    f = msg.fields
    if key in ("qos", "retain", "dup") and name != "publish":
        # Fixed-header bits, checked against the required values (else a reserved_bits anomaly).
        required = mqtt.REQUIRED_FLAGS[f["message_type"]]
        return {"qos": required >> 1 & 3, "retain": False, "dup": False}[key]
    translated = {
        "protocol_string": "protocol_name",
        "flags.username": "username_present",
        "flags.password": "password_present",
        "flags.will": "will",
        "flags.clean_session": "clean_session",
        "message_id": "packet_id",
        "will.topic": "will_topic",
    }.get(key, key)
    if key == "flags.will_retain":
        return f.get("will_retain", False)
    if key == "return_code":
        return f.get("return_code", f.get("reason_code"))
    if key == "reason_code":
        return f.get("reason_code", 0)  # absent means 0 (success) in v5
    if key == "qos_granted":
        return f.get("return_codes", f.get("reason_codes"))
    if key == "topics" and name == "unsubscribe":
        return [t["topic"] for t in f["topics"]]
    return f.get(translated)


def check_count(
    txs: list[dict[str, OtMessage]], run: ProtocolRun, match: dict[str, Any], case: str
) -> int | None:
    """Our count for one test.yaml filter, or None when the filter is not about what we produce."""
    event_type = match.get("event_type")
    if event_type == "anomaly" and set(match) <= {
        "event_type",
        "anomaly.event",
        "anomaly.app_proto",
        "anomaly.type",
        "anomaly.layer",
    }:
        return run.anomaly_kinds[match["anomaly.event"]]
    if event_type != "mqtt" or any(CONFIG_DEPENDENT.search(key) for key in match):
        return None
    wanted: dict[tuple[str, str], Any] = {}
    present: set[str] = set()
    for key, value in match.items():
        if key == "has-key":
            present.add(value.split(".")[1])
        elif key.startswith("mqtt.") and not NOT_RECORDED.search(key) and "[truncated" not in str(value):
            _, name, field = key.split(".", 2)
            wanted[name, field] = WIRE_VALUES.get(key, value) if case in WIRE_VALUE_CASES else value
            present.add(name)
        elif key.startswith("mqtt."):
            present.add(key.split(".")[1])
    return sum(
        1
        for tx in txs
        if present <= set(tx) and all(our_value(tx[n], n, k) == v for (n, k), v in wanted.items())
    )


def suricata_cases() -> list[tuple[str, str]]:
    rows = _expected_rows()
    return [
        (r["expected"], r["pcaps"])
        for r in rows
        if r["expected"].startswith("suricata-verify/mqtt") and (PCAPS / r["pcaps"]).exists()
    ]


@pytest.mark.parametrize(
    "case", [c for c, _ in suricata_cases()] if (CORPUS / "EXPECTED.tsv").exists() else []
)
def test_suricata_verify_checks(case: str) -> None:
    pcap = dict(suricata_cases())[case]
    run = replay(PCAPS / pcap)
    txs = transactions(run.messages)
    checks = yaml.safe_load((EXPECTED / case / "test.yaml").read_text()).get("checks", [])
    compared = 0
    for check in checks:
        spec = check.get("filter")
        if not spec:
            continue
        ours = check_count(txs, run, spec.get("match", {}), case)
        if ours is None:
            continue
        compared += 1
        assert ours == spec["count"], f"{case}: {spec['match']}"
    # Cases with only rule, frame or shell checks compare nothing; the others compare something.
    kinds = {c["filter"]["match"].get("event_type") for c in checks if "filter" in c}
    assert compared or not kinds & {"mqtt", "anomaly"}


# -- nDPI --------------------------------------------------------------------------------------------


def test_mqtt_flows_match_ndpi() -> None:
    report = EXPECTED / "nDPI" / "coap_mqtt.pcap.out"
    expected = ndpi_counts(report, "MQTT") if report.exists() else {}
    assert len(expected) == 4 or not report.exists()
    hinted = replay(PCAPS / "nDPI" / "coap_mqtt.pcap", ports={"mqtt": (17501,)})
    assert our_counts(hinted.flows, "mqtt") == expected
    unhinted = our_counts(replay(PCAPS / "nDPI" / "coap_mqtt.pcap").flows, "mqtt")
    assert list(unhinted) == [("192.168.56.1", 53528, "192.168.56.101", 17501)]


def test_every_mqtt_row_is_compared() -> None:
    rows = rows_comparing(lambda capture: "mqtt" in capture["families"])
    assert rows == ZEEK_ROWS | NDPI_ROWS | {c for c, _ in suricata_cases()}
    assert len(suricata_cases()) == 48
