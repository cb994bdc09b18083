"""EtherNet/IP + CIP against tshark, frame by frame (see ot_oracle), and what the corpus shows.

We emit one message per CIP service (containers unwrapped), tshark lists every ENIP PDU and every
CIP service header. Each frame is compared as a multiset of tagged codes:

* ``cmd:`` each encapsulation command (``enip.command``): ours once per PDU, from its first message;
* ``sc:`` each CIP service (``cip.sc``, reply bit excluded), containers included: ours from every
  message plus, once per container, the Multiple Service Packet / Unconnected Send it came through;
* ``class:`` in frames that carry only CIP requests, the set of classes addressed (``cip.class``)
  other than the Message Router and Connection Manager, which are the containers' targets;
* ``st:`` each non-zero CIP general status (``cip.genstat``);
* ``io:`` the connection id of each class 0/1 I/O datagram (``enip.cpf.sai.connid``).

tshark's IDMP heuristic claims the 44818 stream of EIP-ControlProtocolChangeAttempt.pcap (a capture
without the handshake), so the inventory lists no ENIP there; with IDMP disabled tshark decodes it
as EtherNet/IP, and it is compared too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import (
    CORPUS,
    Comparison,
    assert_agreement,
    captures_with,
    our_messages,
    tshark_fields,
)

pytestmark = pytest.mark.corpus

FIELDS = ["enip.command", "cip.sc", "enip.cpf.sai.connid", "cip.rr", "cip.class", "cip.genstat"]
CONTAINER_CLASSES = {"class:0x2", "class:0x6"}
TSHARK_OPTIONS = ["--disable-protocol", "idmp"]
CLAIMED_BY_IDMP = "ICS-Security-Tools/openics/EIP-ControlProtocolChangeAttempt.pcap"


def _values(field: str) -> list[int]:
    return [int(v, 16) for v in field.split(",") if v]


def tshark_codes(values: list[str]) -> list[str]:
    if not values:
        return []
    commands, services, io_ids, rr, classes, statuses = values
    codes = [f"cmd:{v:#06x}" for v in _values(commands)] + [f"sc:{v:#04x}" for v in _values(services)]
    if rr and set(_values(rr)) == {0}:
        codes += sorted({f"class:{v:#x}" for v in _values(classes)} - CONTAINER_CLASSES)
    codes += [f"st:{v:#04x}" for v in _values(statuses) if v]
    if not commands:
        codes += [f"io:{v:#010x}" for v in _values(io_ids)]
    return codes


def our_codes(msgs: list[OtMessage]) -> list[str]:
    codes: list[str] = []
    classes: set[int] = set()
    only_requests = all(m.direction == "request" for m in msgs) and any("cip" in m.fields for m in msgs)
    for m in msgs:
        f = m.fields
        if "command" not in f:
            codes.append(f"io:{f.get('connection_id', 0):#010x}")
            continue
        cip = f.get("cip")
        if cip is None or cip.get("index", 0) == 0:  # the PDU's (or container's) first message
            codes.append(f"cmd:{f['command']:#06x}")
            if cip is not None:
                codes += [f"sc:{v:#04x}" for v in cip.get("via", ())]
        if cip is None:
            continue
        codes.append(f"sc:{cip['service']:#04x}")
        if cip.get("status"):
            codes.append(f"st:{cip['status']:#04x}")
        classes.update(
            c
            for c in (cip.get("class"), cip.get("forward_open", {}).get("connection_path", {}).get("class"))
            if c is not None
        )
        classes.update(v for k, v in cip.get("extra_path", ()) if k == "class")
    if only_requests:
        codes += sorted({f"class:{v:#x}" for v in classes} - CONTAINER_CLASSES)
    return codes


def _captures() -> list[Path]:
    captures = captures_with("ENIP")
    if not captures:
        pytest.skip("corpus not available")
    extra = CORPUS / "pcaps" / CLAIMED_BY_IDMP
    return [*captures, extra] if extra.exists() else captures


def test_enip_commands_cip_services_classes_statuses_and_io_match_tshark() -> None:
    result = Comparison("enip")
    for path in _captures():
        rel = str(path.relative_to(CORPUS / "pcaps"))
        theirs = tshark_fields(path, "enip || cipio", FIELDS, TSHARK_OPTIONS)
        ours = our_messages(path, "enip")
        for frame in sorted(set(theirs) | set(ours)):
            expected = Counter(tshark_codes(theirs.get(frame, [])))
            got = Counter(our_codes(ours.get(frame, [])))
            if expected or got:
                result.add(rel, frame, got, expected)  # type: ignore[arg-type]
    assert result.total > 240_000  # 23 captures, every ENIP PDU and CIP service
    assert_agreement(result)


def _by_frame(name: str) -> dict[int, list[OtMessage]]:
    path = next((p for p in _captures() if p.name == name), None)
    if path is None:
        pytest.skip(f"{name} not in the corpus")
    return our_messages(path, "enip")


def _all(name: str) -> list[OtMessage]:
    return [m for msgs in _by_frame(name).values() for m in msgs]


def test_operation_classes_in_real_captures() -> None:
    """Every operation class the corpus can show, from the capture that shows it."""
    seen = {
        "cip_stop_plc.pcap": {m.operation for m in _all("cip_stop_plc.pcap")},
        "EIP-ChangePortConfigurationAttempt.pcap": {
            m.operation for m in _all("EIP-ChangePortConfigurationAttempt.pcap")
        },
        "EIP-ChangeTimeAttempt.pcap": {m.operation for m in _all("EIP-ChangeTimeAttempt.pcap")},
        "EIP-FirmwareChange.pcap": {m.operation for m in _all("EIP-FirmwareChange.pcap")},
        "cip_only.pcap": {m.operation for m in _all("cip_only.pcap")},
        "EthernetIP-CIP.pcap": {m.operation for m in _all("EthernetIP-CIP.pcap")},
        "enip_cip_example.pcap": {m.operation for m in _all("enip_cip_example.pcap")},
    }
    assert seen["cip_stop_plc.pcap"] == {"mode"}  # Stop on the controller object
    assert "config" in seen["EIP-ChangePortConfigurationAttempt.pcap"]  # Set on Ethernet Link
    assert "time" in seen["EIP-ChangeTimeAttempt.pcap"]  # Set_Attribute_List on the wall clock
    # ControlFLASH: NVS transfers, RegisterSession, ListServices/Interfaces, Identity reset, 0x0001.
    assert {"firmware", "session", "discovery", "mode", "read", "unknown"} <= seen["EIP-FirmwareChange.pcap"]
    assert {"vendor", "session"} <= seen["cip_only.pcap"]  # PCCC, Forward Open
    assert seen["EthernetIP-CIP.pcap"] == {"read", "write"}  # Logix tag reads and read-modify-writes
    assert {"io", "discovery", "read"} <= seen["enip_cip_example.pcap"]
    # A Logix download attempt: Stop/Start/Reset, Create (templates), Apply_Attributes, Forward Open.
    download = {m.operation for m in _all("EIP-ControlProtocolChangeAttempt.pcap")}
    assert {"mode", "config", "session", "write", "read", "vendor"} <= download


def test_real_forward_open_identity_and_tags() -> None:
    forward_opens = [m for m in _all("cip_only.pcap") if "forward_open" in m.fields.get("cip", {})]
    request = next(m for m in forward_opens if m.direction == "request")
    params = request.fields["cip"]["forward_open"]
    assert params["transport_class"] == 3 and params["timeout_multiplier"] in (
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
    )
    assert params["ot_rpi_us"] > 0 and params["to_connection_id"] != 0
    granted = next(
        m for m in forward_opens if m.direction == "response" and m.request_cnt == request.pcap_cnt
    )
    assert granted.fields["cip"]["forward_open"]["to_connection_id"] == params["to_connection_id"]
    identity = next(m for m in _all("enip_test.pcap") if "identity" in m.fields).fields["identity"]
    assert (identity["vendor_id"], identity["product_name"], identity["revision"]) == (
        1,
        "1756-ENBT/A",
        "4.3",
    )
    tags = {m.fields["cip"].get("tag") for m in _all("EthernetIP-CIP.pcap") if m.operation == "write"}
    assert "LMS_ALIVEBIT" in tags


def test_pairing_in_real_captures() -> None:
    """Connected messaging pairs by connection id and sequence count, even with several CIP
    connections on one TCP connection and no Forward Open in the capture."""
    for name in ("EthernetIP-CIP.pcap", "mb2.pcap", "EIP-FirmwareChange.pcap", "EIP-LockPLCAttempt.pcap"):
        msgs = _all(name)
        responses = [m for m in msgs if m.direction == "response"]
        matched = [m for m in responses if m.request_cnt]
        assert len(matched) >= 0.99 * len(responses) - 2, name
        assert all(m.latency_s is not None and m.latency_s >= 0 for m in matched)
