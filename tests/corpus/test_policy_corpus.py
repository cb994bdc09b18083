"""Policies written for real corpus captures give the alerts an OT engineer would expect.

Each policy under tests/corpus/policies/ says in its header what the capture shows and why the
alerts below follow; the tests pin them (kind, zones, operation, packet, count).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus.ot_oracle import CORPUS

pytestmark = pytest.mark.corpus
POLICIES = Path(__file__).with_name("policies")


def alerts(capture: str, policy: str) -> list[dict]:
    path = CORPUS / "pcaps" / capture
    if not path.exists():
        pytest.skip(f"{capture} not in the corpus")
    cmd = [sys.executable, "-m", "agent.cli", "replay", str(path), "--policy", str(POLICIES / policy)]
    result = subprocess.run([*cmd, "--eve", "-", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return [e for e in events if e["event_type"] in ("alert", "audit")]


def summary(events: list[dict]) -> list[tuple]:
    return sorted(
        (e["event_type"], e[e["event_type"]].get("rule"), e["policy"]["src_zone"], e["policy"]["dest_zone"],
         e["policy"]["operation"], e["pcap_cnt"], e[e["event_type"]]["count"])
        for e in events
    )  # fmt: skip


def test_s7_download_outside_the_change_window_and_plc_calling_back() -> None:
    events = alerts("ICS-Security-Tools/s7/s7comm_downloading_block_db1.pcap", "s7-download.yaml")
    assert summary(events) == [
        # Download request, blocks and end on a Wednesday: changes are allowed Tue/Thu only.
        ("alert", "outside_schedule", "engineering", "cell", "program", 43, 1),
        ("alert", "outside_schedule", "engineering", "cell", "program", 58, 5),
        # The PLC opens a COTP connection to the station's port 102: only the other way is allowed.
        ("alert", "responder_initiated", "cell", "engineering", None, 1, 1),
    ]
    first = next(e for e in events if e["pcap_cnt"] == 43)
    assert "outside the window of rule changes (tue,thu 08:00-16:00 UTC)" in first["alert"]["signature"]
    assert first["policy"]["conduit"] == "engineering-cell"


def test_operator_station_stopping_an_s7_cpu() -> None:
    events = alerts("ICS-Security-Tools/s7/step7_s300_stop.pcapng", "s7-stop.yaml")
    assert summary(events) == [("alert", "operation_not_allowed", "supervisory", "cell", "mode", 1, 1)]
    assert "performed s7comm mode (function 41)" in events[0]["alert"]["signature"]


def test_modbus_master_writing_coils_it_may_not_write() -> None:
    events = alerts("ICS-Security-Tools/ModbusTCP/ModbusTCP.pcap", "modbus-polling.yaml")
    first = [e for e in events if not e["alert"].get("folded")]
    folded = [e for e in events if e["alert"].get("folded")]
    # One alert per device written to (13 devices), each followed by one folded repeat count; the
    # capture starts mid-stream, so flows first seen from the device side are still judged right.
    assert {e["alert"]["rule"] for e in events} == {"operation_not_allowed"}
    assert len(first) == 13 and len(folded) == 13
    assert {e["dest_ip"] for e in first} == {e["dest_ip"] for e in folded}
    assert all(
        e["policy"]["operation"] == "write" and "function 15" in e["alert"]["signature"] for e in first
    )
    # Every FC 15 request counts (tshark: 2115 frames to port 502 carry function 15).
    assert sum(e["alert"]["count"] for e in events) == 2115


def test_dnp3_master_operating_an_output_it_may_only_poll() -> None:
    events = alerts("zeek/dnp3/dnp3_select_operate.pcap", "dnp3-operate.yaml")
    # SELECT at frame 4 raises the alert; OPERATE at frame 7 folds into it (count 1 more).
    assert summary(events) == [
        ("alert", "operation_not_allowed", "scada", "substation", "operate", 4, 1),
        ("alert", "operation_not_allowed", "scada", "substation", "operate", 7, 1),
    ]
    first, folded = sorted(events, key=lambda e: e["pcap_cnt"])
    assert (
        "polling-master 130.126.142.250 (scada) performed dnp3 operate (function 3)"
        in first["alert"]["signature"]
    )
    assert folded["alert"]["folded"] and folded["policy"]["dest_asset"] == "rtu-1"
