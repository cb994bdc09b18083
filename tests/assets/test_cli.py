"""``conduitwatch assets`` end to end: table, CSV and JSON of the same inventory."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from tests.assets import traffic
from tests.factory import write

ROOT = Path(__file__).resolve().parents[2]


def assets(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "assets", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_three_formats_agree(tmp_path: Path) -> None:
    pcap = write(tmp_path / "ident.pcap", traffic.modbus_identification() + traffic.list_identity())
    as_json = assets(str(pcap), "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    rows = {a["address"]: a for a in doc["assets"]}
    assert set(rows) == {traffic.PLC, traffic.HMI, traffic.ADAPTER}
    assert rows[traffic.PLC]["identity"]["revision"] == "V2.70" and rows[traffic.PLC]["role"] == "controller"
    assert rows[traffic.PLC]["identity_packet"]["pcap_filename"] == str(pcap)
    as_csv = assets(str(pcap), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {r["address"]: r["revision"] for r in table}[traffic.PLC] == "V2.70"
    assert {r["address"]: r["role"] for r in table}[traffic.HMI] == "hmi"
    as_table = assets(str(pcap))
    assert as_table.returncode == 0 and f"{traffic.PLC}: controller - answers modbus" in as_table.stdout


def test_policy_names_zones_on_the_demo() -> None:
    done = assets("pcaps/demo.pcap", "--policy", "rules/demo.yaml", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = {a["address"]: a for a in json.loads(done.stdout)["assets"]}
    assert rows["10.10.10.11"]["zone"] == "control" and rows["10.10.10.11"]["role"] == "controller"
    assert rows["10.10.20.21"]["zone"] == "supervisory" and rows["10.10.20.21"]["role"] == "hmi"
    assert "255.255.255.255" not in rows


def test_bad_capture_is_one_line() -> None:
    done = assets("missing.pcap")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing.pcap" in done.stderr


def test_run_refuses_a_baseline_that_is_not_an_inventory(tmp_path: Path) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text('{"flows": []}')
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--interface", "lo", "--asset-baseline", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "not an inventory" in done.stderr and "Traceback" not in done.stderr


def test_baseline_reads_an_assets_json(tmp_path: Path) -> None:
    from agent.assets.inventory import load_baseline

    pcap = write(tmp_path / "ident.pcap", traffic.modbus_identification())
    inventory = tmp_path / "inventory.json"
    inventory.write_text(assets(str(pcap), "--format", "json").stdout)
    assert load_baseline(str(inventory)) == {traffic.PLC, traffic.HMI}


def test_devices_behind_a_bacnet_router_in_all_three_formats(tmp_path: Path) -> None:
    pcap = write(tmp_path / "routed.pcap", traffic.routed_i_am())
    done = assets(str(pcap), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = {a["address"]: a for a in doc["assets"]}
    routed = rows["bacnet:5:18"]
    assert routed["via"] == [traffic.ROUTER] and routed["mac"] == "" and routed["vlans"] == []
    assert routed["identity"] == {"device_instance": 518, "vendor_id": 42}
    assert routed["identity_packet"] == {
        "pcap_filename": str(pcap),
        "pcap_cnt": 3,
        "timestamp": routed["first_seen"],
    }
    assert rows[traffic.ROUTER]["via"] == [] and doc["counters"]["routed_devices"] == 2
    table = {
        r["address"]: r for r in csv.DictReader(io.StringIO(assets(str(pcap), "--format", "csv").stdout))
    }
    assert (table["bacnet:5:17"]["via"], table["bacnet:5:17"]["device_instance"]) == (traffic.ROUTER, "517")
    assert table["bacnet:5:17"]["vendor_id"] == "42" and table[traffic.ROUTER]["via"] == ""
    text = assets(str(pcap)).stdout
    line = next(x for x in text.splitlines() if x.startswith("bacnet:5:17"))
    assert traffic.ROUTER in line and "device_instance=517" in line
    assert "(2 behind BACnet routers)" in text


def test_a_baseline_names_devices_behind_routers(tmp_path: Path) -> None:
    from agent.assets.inventory import load_baseline

    pcap = write(tmp_path / "routed.pcap", traffic.routed_i_am())
    inventory = tmp_path / "inventory.json"
    inventory.write_text(assets(str(pcap), "--format", "json").stdout)
    assert {"bacnet:5:17", "bacnet:5:18", traffic.ROUTER} <= load_baseline(str(inventory))
