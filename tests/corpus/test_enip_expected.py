"""EtherNet/IP + CIP against the peers' expectations in the corpus (EXPECTED.tsv).

* cisagov ICSNPP-ENIP (Zeek) btest baselines: enip.log (one row per encapsulation PDU), cip.log
  (one row per CIP service, containers included), cip_identity.log, cip_io.log;
* suricata-verify enip-* tests: alert and event counts, which we translate into counts of the
  PDUs or messages the rules select.

The baselines have no ``#fields`` header; the columns are ICSNPP's documented log layouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.decoders.base import OtMessage
from agent.flows import Flow
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests.corpus.expected import EXPECTED, zeek_columns
from tests.corpus.ot_oracle import CORPUS, our_messages

pytestmark = pytest.mark.corpus

BASELINE = EXPECTED / "icsnpp-enip" / "baseline"
EXAMPLE = "icsnpp-enip/traces/enip_cip_example.pcap"
MSP = 0x0A


def zeek_rows(test: str, log: str) -> list[list[str]]:
    path = BASELINE / test / log
    if not path.exists():
        pytest.skip(f"baseline {path} not available")
    return zeek_columns(path)


def messages(capture: str) -> list[OtMessage]:
    path = CORPUS / "pcaps" / capture
    if not path.exists():
        pytest.skip(f"{capture} not in the corpus")
    by_frame = our_messages(path, "enip")
    return [m for frame in sorted(by_frame) for m in by_frame[frame]]


def pdus(msgs: list[OtMessage]) -> Iterator[list[OtMessage]]:
    """Our messages grouped by encapsulation PDU (a PDU's messages are consecutive; an unwrapped
    Multiple Service Packet continues with index > 0)."""
    group: list[OtMessage] = []
    for m in msgs:
        if "command" not in m.fields:
            continue
        if group and m.fields.get("cip", {}).get("index", 0) == 0:
            yield group
            group = []
        group.append(m)
    if group:
        yield group


def cip(m: OtMessage) -> dict:
    return m.fields.get("cip", {})


# -- ICSNPP (Zeek) ---------------------------------------------------------------------------------


def _zeek_enip(rows: list[list[str]]) -> list[tuple]:
    # enip_command_code, length, session_handle, enip_status (name), sender_context, options
    return [(int(r[11], 16), int(r[13]), int(r[14], 16), r[15], r[16], int(r[17], 16)) for r in rows]


def _our_enip(msgs: list[OtMessage]) -> list[tuple]:
    out = []
    for group in pdus(msgs):
        f = group[0].fields
        out.append(
            (
                f["command"],
                f["length"],
                f["session_handle"],
                "Success" if f["status"] == 0 else f["status"],
                "0x" + f["sender_context"],
                f["options"],
            )
        )
    return out


def _zeek_cip(rows: list[list[str]]) -> tuple[list[tuple], int, int]:
    """(sequence count, direction, service, status, class, instance) of every non-container row,
    and the container rows by direction."""
    leaves = []
    containers = {"request": 0, "response": 0}
    for r in rows:
        sequence, direction, service = int(r[11]), r[12], int(r[13], 16)
        if service == MSP:
            containers[direction] += 1
            continue
        status = None if r[15] == "-" else int(r[15], 16)
        klass = None if r[19] == "-" else int(r[19], 16)
        instance = None if r[21] == "-" else int(r[21], 16)
        leaves.append((sequence, direction, service, status, klass, instance))
    return leaves, containers["request"], containers["response"]


def _our_cip(msgs: list[OtMessage]) -> tuple[list[tuple], int, int]:
    leaves = []
    for m in msgs:
        c = cip(m)
        if not c:
            continue
        request = m.direction == "request"
        leaves.append(
            (
                m.fields["cip_sequence"],
                m.direction,
                c["service"],
                None if request else c["status"],
                c.get("class") if request else None,
                c.get("instance") if request else None,
            )
        )
    containers = [g[0] for g in pdus(msgs) if cip(g[0]).get("via") == [MSP]]
    return (
        leaves,
        sum(m.direction == "request" for m in containers),
        sum(m.direction == "response" for m in containers),
    )


def test_icsnpp_basic_enip_log() -> None:
    expected = _zeek_enip(zeek_rows("analyzer.basic", "enip.log"))
    assert len(expected) == 269
    assert _our_enip(messages(EXAMPLE)) == expected


def test_icsnpp_basic_cip_log() -> None:
    expected = _zeek_cip(zeek_rows("analyzer.basic", "cip.log"))
    ours = _our_cip(messages(EXAMPLE))
    assert ours[1:] == expected[1:] == (41, 40)  # Multiple Service Packets, each way
    assert len(ours[0]) == len(expected[0]) == 1077
    assert ours[0] == expected[0]


def test_icsnpp_basic_cip_identity_log() -> None:
    (row,) = zeek_rows("analyzer.basic", "cip_identity.log")
    (identity,) = [m.fields["identity"] for m in messages(EXAMPLE) if "identity" in m.fields]
    assert identity == {
        "protocol_version": int(row[11]),
        "socket_address": row[12],
        "socket_port": int(row[13]),
        "vendor_id": int(row[14]),
        "device_type": int(row[16]),
        "product_code": int(row[18]),
        "revision": row[19],
        "status": int(row[20], 16),
        "serial_number": row[21],
        "product_name": row[22],
        "state": int(row[23], 16),
    }


def test_icsnpp_basic_cip_io_log() -> None:
    rows = zeek_rows("analyzer.basic", "cip_io.log")
    expected = [(r[6] == "T", int(r[11], 16), int(r[12]), int(r[13])) for r in rows]
    io = [m for m in messages(EXAMPLE) if m.operation == "io"]
    ours = [
        (m.to_server, m.fields["connection_id"], m.fields["sequence"], m.fields["data_length"]) for m in io
    ]
    assert len(ours) == 398 and ours == expected


@pytest.mark.parametrize(
    ("test", "capture"),
    [
        ("analyzer.multiple_service_request", "icsnpp-enip/traces/multiple_service_packet_cip.pcapng"),
        ("analyzer.set_attr_single_service", "icsnpp-enip/traces/set_attribute_single_service_cip.pcapng"),
    ],
)
def test_icsnpp_single_packet_baselines(test: str, capture: str) -> None:
    msgs = messages(capture)
    assert _our_enip(msgs) == _zeek_enip(zeek_rows(test, "enip.log"))
    assert _our_cip(msgs) == _zeek_cip(zeek_rows(test, "cip.log"))


def test_icsnpp_set_attribute_single_on_identity_is_config() -> None:
    (msg,) = messages("icsnpp-enip/traces/set_attribute_single_service_cip.pcapng")
    assert (msg.function, cip(msg)["class"], msg.operation) == (0x10, 1, "config")


# -- suricata-verify -------------------------------------------------------------------------------


def test_suricata_enip_keywords() -> None:
    """enip-keywords / enip-keywords-suricata8 / enip-frames over enip_cip_example.pcap."""
    groups = list(pdus(messages(EXAMPLE)))
    requests = [g for g in groups if g[0].direction == "request"]
    responses = [g for g in groups if g[0].direction == "response"]
    # cip_service: 10 -> 41 (requests, Suricata 7) and 81 (both ways, Suricata 8)
    assert sum(cip(g[0]).get("via") == [MSP] for g in requests) == 41
    assert sum(cip(g[0]).get("via") == [MSP] for g in groups) == 81
    # enip_command: 112 -> 267, enip_command: 99 -> 2, enip.status: 0 -> 269
    assert sum(g[0].fields["command"] == 0x70 for g in groups) == 267
    assert sum(g[0].fields["command"] == 0x63 for g in groups) == 2
    assert sum(g[0].fields["status"] == 0 for g in groups) == 269
    # enip.cip_attribute: 5; enip.cip_class: 1; enip.cip_instance: 1; to_server -> 41
    assert (
        sum(
            any(
                cip(m).get("class") == 1 and cip(m).get("instance") == 1 and 5 in cip(m).get("attributes", ())
                for m in g
            )
            for g in requests
        )
        == 41
    )
    # enip.cip_status: 0 -> 133 responses
    assert sum(all(cip(m).get("status") == 0 for m in g) for g in responses if "cip" in g[0].fields) == 133
    # enip-frames: SendUnitData with interface 0, timeout 1, length 32 -> 92; the CIP frame
    # "03 02 20 8b 24 01 01 00 06 00" (Get_Attribute_List 0x8B/1, attribute 6) -> 41
    assert (
        sum(
            g[0].fields["command"] == 0x70
            and g[0].fields["length"] == 32
            and g[0].fields["timeout"] == 1
            and g[0].fields["interface_handle"] == 0
            for g in groups
        )
        == 92
    )
    assert (
        sum(
            cip(m).get("service") == 3
            and cip(m).get("class") == 0x8B
            and cip(m).get("instance") == 1
            and cip(m).get("attributes") == [6]
            for g in requests
            for m in g
        )
        == 41
    )
    # enip.product_name "1756-ENBT/A", vendor_id 1, device_type 12, product_code 58, revision 0x403,
    # serial 0x524D8E, identity_status 0x30, state 3, protocol_version 1 -> 1 each
    (identity,) = [g[0].fields["identity"] for g in groups if "identity" in g[0].fields]
    assert (
        identity["product_name"],
        identity["vendor_id"],
        identity["device_type"],
        identity["product_code"],
        identity["revision"],
        identity["serial_number"],
        identity["status"],
        identity["state"],
        identity["protocol_version"],
    ) == ("1756-ENBT/A", 1, 12, 58, "4.3", "0x00524d8e", 0x30, 3, 1)


def test_suricata_enip_alert_and_log_identity() -> None:
    """enip-alert / enip-log-identity over enip_test1.pcap: a ListIdentity exchange."""
    request, response = messages("suricata-verify/enip-alert/enip_test1.pcap")
    assert request.fields["command"] == response.fields["command"] == 0x63
    assert response.fields["status"] == 0 and response.request_cnt == request.pcap_cnt
    identity = response.fields["identity"]
    assert (identity["revision"], identity["product_name"], identity["vendor_id"]) == (
        "4.3",
        "1756-ENBT/A",
        1,
    )


class _Flows:
    def __init__(self) -> None:
        self.flows: list[Flow] = []

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        self.flows.append(flow)

    def on_message(self, msg: OtMessage) -> None:
        return None


def test_suricata_enip_stats_udp() -> None:
    """enip-stats-udp: one ENIP flow in enip_test1.pcap, and it is TCP."""
    path = CORPUS / "pcaps" / "suricata-verify" / "enip-alert" / "enip_test1.pcap"
    if not Path(path).exists():
        pytest.skip("enip_test1.pcap not in the corpus")
    flows = _Flows()
    source = ReplaySource([str(path)])
    try:
        Pipeline(PipelineConfig(events=EVENTS_ALL), consumers=[flows]).run(source)
    finally:
        source.close()
    assert [f.proto for f in flows.flows if f.app_proto == "enip"] == [6]
