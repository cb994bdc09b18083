"""BACnet/IP against every peer output EXPECTED.tsv lists for a BACnet/IP capture in the snapshot.

Three rows (``test_every_bacnet_row_is_compared`` keeps the list honest):

* ICSNPP-BACnet (Zeek) ``analyzer.basic`` and ``analyzer.services``: ``bacnet.log`` has one line per
  BVLC message (requests, replies, network-layer messages), compared in order on originator flag,
  BVLC function, PDU type, service, invoke id and error code, with ICSNPP's names rebuilt from our
  numbers by the explicit tables below (names as ICSNPP spells them). ``bacnet_discovery.log``
  (Who-Is ranges, I-Am device instances), ``bacnet_property.log`` (object type, instance and
  property of ReadProperty requests and ACKs and WriteProperty requests) and
  ``bacnet_device_control.log`` (DeviceCommunicationControl / ReinitializeDevice states, durations
  and results) are compared as multisets. ICSNPP logs the password of those requests; we record its
  presence only, by design.
* nDPI ``bacnet.pcap.out``: the ten flows nDPI calls BACnet are our bacnet flows, with the same
  packet and byte counts, and no other flow of the capture is.

Known differences, each checked against the bytes:

* bacnet_example.pcap frames 572-1189: 240 datagrams (reinitializeDevice, readProperty and their
  replies) carry BVLC length 17 whatever their size (9 to 33 bytes): the trace was crafted. ICSNPP
  and tshark decode the NPDU by the datagram's size, and so do we, with a ``bad_length`` anomaly for
  each (ICSNPP raises none). Capture damaged.
* bacnet_services.pcap frames 279/281, a ComplexACK in two segments: ICSNPP logs it once, at the
  last segment; we log each segment (the first carries the service parameters). The comparison
  drops our non-final segments.
* ``bacnet_property.log`` has one line per element of an array or list value (16 for a
  priority-array, two for a date-time), so properties are compared as sets of (service, invoke id,
  object type, instance, property), not counted, for the properties named in ``PROPERTIES`` (all
  but 19 rarely read device properties) and the vendor-specific ones.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.expected import (
    EXPECTED,
    PCAPS,
    ProtocolRun,
    ndpi_counts,
    our_counts,
    rows_comparing,
    run_protocol,
    zeek_log,
)

pytestmark = pytest.mark.corpus

BASELINE = EXPECTED / "icsnpp-bacnet" / "baseline"
COMPARED = {
    "icsnpp-bacnet/baseline/analyzer.basic",
    "icsnpp-bacnet/baseline/analyzer.services",
    "nDPI/bacnet.pcap.out",
}

# ICSNPP's spellings (scripts/consts.zeek of cisagov/icsnpp-bacnet), for the values in these logs.
BVLC_NAMES = {
    0x00: "BVLC_Result",
    0x04: "Forwarded_NPDU",
    0x0A: "Original_Unicast_NPDU",
    0x0B: "Original_Broadcast_NPDU",
}
PDU_TYPES = (
    "CONFIRMED_REQUEST",
    "UNCONFIRMED_REQUEST",
    "SIMPLE_ACK",
    "COMPLEX_ACK",
    "SEGMENT_ACK",
    "ERROR_PDU",
    "REJECT_PDU",
    "ABORT_PDU",
)
ERROR_CODES = {26: "password-failure", 31: "unknown-object", 32: "unknown-property"}
OBJECT_TYPES = {
    "analog-input": 0,
    "analog-output": 1,
    "analog-value": 2,
    "binary-input": 3,
    "binary-output": 4,
    "binary-value": 5,
    "device": 8,
    "file": 10,
}
PROPERTIES = {
    "application-software-version": 12,
    "archive": 13,
    "description": 28,
    "event-state": 36,
    "file-access-method": 41,
    "file-size": 42,
    "file-type": 43,
    "firmware-revision": 44,
    "location": 58,
    "model-name": 70,
    "modification-date": 71,
    "object-identifier": 75,
    "object-list": 76,
    "object-name": 77,
    "object-type": 79,
    "out-of-service": 81,
    "polarity": 84,
    "present-value": 85,
    "priority-array": 87,
    "read-only": 99,
    "reliability": 103,
    "relinquish-default": 104,
    "status-flags": 111,
    "units": 117,
}


def _snake(name: str) -> str:
    """ICSNPP's service names: readProperty -> read_property, i-Am -> i_am."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", name).replace("-", "_").lower()


def replay(capture: Path) -> ProtocolRun:
    run = run_protocol(capture, "bacnet")
    # Zeek (ICSNPP) and nDPI see BACnet/IP only; BACnet/Ethernet frames (802.2 LLC) are ours alone.
    run.messages = [msg for msg in run.messages if msg.flow.ip_version]
    return run


def icsnpp_line(msg: OtMessage) -> tuple[str, ...]:
    f = msg.fields
    if "network_message" in f:
        pdu_type, service = "NPDU", _snake(f["network_message"])
    else:
        pdu_type = PDU_TYPES[f["apdu_type"]]
        service = _snake(f["service"]) if "service" in f else "-"
    result = ERROR_CODES[f["error_code"]] if "error_code" in f else "-"
    invoke = str(f.get("invoke_id", "-"))
    return ("T" if msg.to_server else "F", BVLC_NAMES[f["bvlc_function"]], pdu_type, service, invoke, result)


def expected_line(row: dict[str, str]) -> tuple[str, ...]:
    return (
        row["is_orig"],
        row["bvlc_function"],
        row["pdu_type"],
        row["pdu_service"],
        row["invoke_id"],
        row["result_code"],
    )


@pytest.mark.parametrize(
    ("analyzer", "capture", "lines"),
    [
        ("analyzer.basic", "bacnet_example.pcap", 3257),
        ("analyzer.services", "bacnet_services.pcap", 7048),
    ],
)
def test_bacnet_log_matches_icsnpp(analyzer: str, capture: str, lines: int) -> None:
    run = replay(PCAPS / "icsnpp-bacnet" / "traces" / capture)
    expected = [expected_line(r) for r in zeek_log(BASELINE / analyzer / "bacnet.log")]
    final = [m for m in run.messages if not (m.fields.get("apdu_type") == 3 and m.fields["more_follows"])]
    ours = [icsnpp_line(m) for m in final]
    assert len(expected) == lines
    mismatches = [(i, o, e) for i, (o, e) in enumerate(zip(ours, expected, strict=False)) if o != e]
    assert not mismatches[:5] and len(ours) == len(expected)
    # Every confirmed request is answered in these captures; the pairing must find each answer.
    replies = [m for m in run.messages if m.direction == "response" and m.fields.get("apdu_type") != 4]
    assert replies and all(m.request_cnt for m in replies)
    expected_anomalies = Counter({"bad_length": 240}) if capture == "bacnet_example.pcap" else Counter()
    assert run.anomaly_kinds == expected_anomalies


@pytest.mark.parametrize(
    ("analyzer", "capture"),
    [("analyzer.basic", "bacnet_example.pcap"), ("analyzer.services", "bacnet_services.pcap")],
)
def test_discovery_and_properties_match_icsnpp(analyzer: str, capture: str) -> None:
    run = replay(PCAPS / "icsnpp-bacnet" / "traces" / capture)
    discovery = zeek_log(BASELINE / analyzer / "bacnet_discovery.log")
    expected_discovery = Counter(
        (r["pdu_service"], r["instance_number"] if r["pdu_service"] == "i-am" else r["range"])
        for r in discovery
    )
    ours_discovery: Counter[tuple[str, str]] = Counter()
    for m in run.messages:
        service = m.fields.get("unconfirmed_service")
        if service == 0:
            ours_discovery["i-am", str(m.fields["device_instance"])] += 1
        elif service == 8:
            low, high = m.fields.get("low_limit"), m.fields.get("high_limit")
            ours_discovery["who-is", "All" if low is None else f"{low}-{high}"] += 1
        elif service in (1, 7):
            ours_discovery["i-have" if service == 1 else "who-has", ""] += 1
    expected_discovery = Counter(
        {(s, v if s in ("i-am", "who-is") else ""): n for (s, v), n in expected_discovery.items()}
    )
    assert ours_discovery == expected_discovery

    names = {"read-property-request": (0, 12), "read-property-ack": (3, 12), "write-property": (0, 15)}
    expected_props = set(
        (
            r["pdu_service"],
            r["invoke_id"],
            OBJECT_TYPES.get(r["object_type"]),
            r["instance_number"],
            PROPERTIES.get(r["property"], r["property"]),
        )
        for r in zeek_log(BASELINE / analyzer / "bacnet_property.log")
        if r["pdu_service"] in names and (r["property"] in PROPERTIES or r["property"].startswith("Vendor"))
    )
    ours_props: set[tuple[Any, ...]] = set()
    by_codes = {codes: name for name, codes in names.items()}
    for m in run.messages:
        name = by_codes.get((m.fields.get("apdu_type"), m.fields.get("confirmed_service")))
        if name is not None and "instance" in m.fields:
            prop = m.fields["property_id"]
            if prop not in PROPERTIES.values() and prop < 512:
                continue  # named by ICSNPP, not in our copy of the names: 19 standard properties
            prop = (
                prop
                if prop in PROPERTIES.values()
                else (f"Vendor Specific ({prop})" if prop >= 512 else prop)
            )
            instance = str(m.fields["instance"])
            ours_props.add((name, str(m.fields["invoke_id"]), m.fields["object_type"], instance, prop))
    assert len(expected_props) > 1000
    assert ours_props == expected_props


IDENTITY_PROPERTIES = {
    "object-name": "name",
    "model-name": "model",
    "firmware-revision": "revision",
    "vendor-name": "vendor",
    "vendor-identifier": "vendor_id",
}


@pytest.mark.parametrize(
    ("analyzer", "capture"),
    [("analyzer.basic", "bacnet_example.pcap"), ("analyzer.services", "bacnet_services.pcap")],
)
def test_device_identity_matches_icsnpp_property_values(analyzer: str, capture: str) -> None:
    """Identities from Device-object ReadProperty ACKs carry the values ICSNPP logged for them."""
    run = replay(PCAPS / "icsnpp-bacnet" / "traces" / capture)
    expected = {
        (r["invoke_id"], r["instance_number"], IDENTITY_PROPERTIES[r["property"]]): r["value"]
        for r in zeek_log(BASELINE / analyzer / "bacnet_property.log")
        if r["pdu_service"] == "read-property-ack"
        and r["object_type"] == "device"
        and r["property"] in IDENTITY_PROPERTIES
    }
    ours = {}
    for m in run.messages:
        identity = m.fields.get("identity")
        if identity and m.direction == "response":
            ((key, value),) = ((k, v) for k, v in identity.items() if k != "device_instance")
            ours[str(m.fields["invoke_id"]), str(identity["device_instance"]), key] = str(value)
    assert len(expected) >= 5 and ours == expected
    # Device 29 of bacnet_services.pcap sits behind a router (SNET 3): its properties are the identity
    # of the device at its BACnet address, not of the IP host that relayed them.
    owners = {
        str(m.fields["instance"]): m.fields.get("identity_of")
        for m in run.messages
        if m.direction == "response" and "identity" in m.fields
    }
    routed = {i: o for i, o in owners.items() if isinstance(o, str) and o.startswith("bacnet:")}
    assert set(routed) == ({"29"} if capture == "bacnet_services.pcap" else set())
    assert all(o.startswith("bacnet:3:") for o in routed.values())


def test_device_control_matches_icsnpp() -> None:
    run = replay(PCAPS / "icsnpp-bacnet" / "traces" / "bacnet_services.pcap")
    expected = Counter(
        (
            r["is_orig"],
            r["invoke_id"],
            r["pdu_service"],
            r["time_duration"],
            r["device_state"],
            r["result"],
            r["result_code"],
        )
        for r in zeek_log(BASELINE / "analyzer.services" / "bacnet_device_control.log")
    )
    ours: Counter[tuple[str, ...]] = Counter()
    for m in run.messages:
        if m.fields.get("confirmed_service") not in (17, 20):
            continue
        f = m.fields
        service = _snake(f["service"])
        if m.direction == "request":
            duration = str(f.get("time_duration", "-"))
            state = f.get("enable_disable", f.get("reinitialized_state", "-"))
            ours["T", str(f["invoke_id"]), service, duration, state, "-", "-"] += 1
        else:
            result = ("ERROR", ERROR_CODES[f["error_code"]]) if m.exception else ("SUCCESS", "-")
            ours["F", str(f["invoke_id"]), service, "-", "-", *result] += 1
    assert len(expected) == 16 and ours == expected


def test_bacnet_flows_match_ndpi() -> None:
    run = replay(PCAPS / "nDPI" / "bacnet.pcap")
    ndpi = ndpi_counts(EXPECTED / "nDPI" / "bacnet.pcap.out", "BACnet")
    assert len(ndpi) == 10
    assert our_counts(run.flows, "bacnet") == ndpi
    assert len(run.messages) == 23 and not run.anomalies  # every datagram is one message


def test_every_bacnet_row_is_compared() -> None:
    assert rows_comparing(lambda capture: "*BVLC*(" in capture["protocols"]) == COMPARED
