"""``conduitwatch report`` end to end on the bundled captures: files, determinism, schema, evidence."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = "pcaps/demo.pcap"
PINNED = "2026-01-31T12:00:00Z"
FILES = (
    "report.html",
    "report.json",
    "evidence.csv",
    "zone_matrix.csv",
    "findings.csv",
    "integrity.csv",
    "audits.csv",
    "incidents.csv",
    "assets.csv",
    "compliance.csv",
)


def conduitwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def report(out: Path, *captures: str, policy: str | None = "rules/demo.yaml") -> dict:
    args = ["report", *(captures or (DEMO,)), "--out", str(out), "--generated-at", PINNED, "-q"]
    if policy:
        args += ["--policy", policy]
    done = conduitwatch(*args)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo-report")
    return out, report(out)


def test_writes_every_file(demo: tuple[Path, dict]) -> None:
    out, _doc = demo
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_two_runs_are_byte_identical(demo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _doc = demo
    report(tmp_path)
    for name in FILES:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_source_date_epoch_pins_the_time(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    done = conduitwatch("report", DEMO, "--out", str(tmp_path), "-q", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "report.json").read_text())["generated_at"] == "2023-11-14T22:13:20+00:00"


def test_json_matches_its_schema(demo: tuple[Path, dict]) -> None:
    import jsonschema

    schema = json.loads((ROOT / "docs" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(demo[1], schema)


def test_evidence_names_hashes_and_counts(demo: tuple[Path, dict]) -> None:
    ev = demo[1]["evidence"]
    [capture] = ev["captures"]
    assert capture["name"] == DEMO
    assert capture["sha256"] == hashlib.sha256((ROOT / DEMO).read_bytes()).hexdigest()
    assert capture["packets"] == ev["totals"]["packets"] > 0
    assert capture["link_types"] == [{"linktype": 1, "name": "ethernet", "packets": capture["packets"]}]
    assert capture["damage"] == []
    assert ev["policy"]["sha256"] == hashlib.sha256((ROOT / "rules/demo.yaml").read_bytes()).hexdigest()
    assert ev["tool"]["name"] == "conduitwatch" and ev["tool"]["version"]


def test_findings_point_at_the_packets_replay_reports(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """Every alert replay writes is in the report, under the same capture, packet and time."""
    eve = tmp_path / "eve.json"
    done = conduitwatch("replay", DEMO, "--policy", "rules/demo.yaml", "--eve", str(eve), "-q")
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in eve.read_text().splitlines()]
    alerts = [a for a in alerts if a["event_type"] == "alert"]
    assert alerts
    listed = {
        (o["pcap_filename"], o["pcap_cnt"], o["timestamp"])
        for f in demo[1]["findings"]
        for o in f["occurrences"]
    }
    for alert in alerts:
        assert (alert["pcap_filename"], alert["pcap_cnt"], alert["timestamp"]) in listed
    assert sum(f["count"] for f in demo[1]["findings"]) == sum(a["alert"]["count"] for a in alerts)


def test_zone_matrix_and_model(demo: tuple[Path, dict]) -> None:
    zm = demo[1]["zone_model"]
    pairs = {(m["src_zone"], m["dest_zone"]): m for m in zm["matrix"]}
    modbus = pairs[("supervisory", "control")]
    assert modbus["protocols"] == {"modbus": modbus["flows"]} and modbus["operations"]["read"] > 0
    assert "supervisory-control" in modbus["conduits"]
    assert [c["id"] for c in zm["unused_conduits"]] == ["enterprise-dmz"]
    assert {(u["src_zone"], u["dest_zone"], u["protocol"]) for u in zm["uncovered"]} == {
        ("enterprise", "dmz", "http")
    }


def test_compliance_links_findings(demo: tuple[Path, dict]) -> None:
    doc = demo[1]
    ids = {f["id"] for f in doc["findings"]} | {f["id"] for f in doc["integrity_findings"]}
    rows = {c["id"]: c for c in doc["compliance"]}
    assert rows["SR 5.2"]["status"] == "non-conformity"
    assert set(rows["SR 5.2"]["findings"]) <= ids and rows["SR 5.2"]["findings"]
    assert rows["SR 6.2"]["status"] == "not passively observable"
    assert rows["A.5.28"]["status"] == "conformity"
    for row in doc["compliance"]:
        assert (row["status"] == "non-conformity") == bool(row["findings"])


def test_every_finding_the_compliance_csv_cites_is_in_a_csv_file(tmp_path: Path) -> None:
    import csv

    report(tmp_path, "pcaps/scenarios/compliant.pcap", policy="rules/purdue-plant.yaml")
    rows = {name: list(csv.DictReader((tmp_path / name).open())) for name in FILES if name.endswith(".csv")}
    cited = {f for c in rows["compliance.csv"] for f in c["findings"].split()}
    listed = {r["id"] for name in ("findings.csv", "integrity.csv", "incidents.csv") for r in rows[name]}
    assert any(f.startswith("R-") for f in cited)  # cleartext Modbus over SL-T FR3 3 conduits (SR 3.1)
    assert cited <= listed


def test_traffic_no_conduit_covers_is_drift_from_the_declared_model(demo: tuple[Path, dict]) -> None:
    doc = demo[1]
    uncovered = {(u["src_zone"], u["dest_zone"]) for u in doc["zone_model"]["uncovered"]}
    flagged = [
        f["id"]
        for f in doc["findings"]
        if f["policy_rule"] is None and (f["src_zone"], f["dest_zone"]) in uncovered
    ]
    rows = {c["id"]: c for c in doc["compliance"]}
    assert uncovered and flagged
    for item in ("SR 7.6", "A.8.9"):  # "conformity: no uncovered traffic" would contradict section 2
        assert rows[item]["status"] == "non-conformity" and rows[item]["findings"] == flagged


def test_without_policy_policy_items_are_not_observable(tmp_path: Path) -> None:
    doc = report(tmp_path, policy=None)
    rows = {c["id"]: c for c in doc["compliance"]}
    assert rows["SR 5.1"]["status"] == "not passively observable"
    assert doc["evidence"]["policy"] is None and doc["findings"] == []
    pairs = {(m["src_zone"], m["dest_zone"]) for m in doc["zone_model"]["matrix"]}
    assert {("vlan 10", "vlan 10"), ("10.10.10.0/24", "10.10.30.0/24")} <= pairs
    assert not any("(no zone)" in p for p in pairs)


def test_html_is_self_contained_with_every_section(demo: tuple[Path, dict]) -> None:
    from agent.report.html import SECTIONS

    text = (demo[0] / "report.html").read_text()
    for sid, _title in SECTIONS:
        assert f'<section id="{sid}">' in text
    # No script, no resource fetched from anywhere (the SVG namespace is an identifier, not a fetch).
    assert "<script" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text)
    assert "<svg" in text and "@page { size: A4" in text


def test_damaged_capture_is_reported_as_evidence(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    data = (ROOT / DEMO).read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    out = tmp_path / "out"
    done = conduitwatch("report", str(cut), "--out", str(out), "--generated-at", PINNED, "-q")
    assert done.returncode == 1  # reported, with everything up to the damage
    capture = json.loads((out / "report.json").read_text())["evidence"]["captures"][0]
    assert capture["damage"] and "byte offset" in capture["damage"][0]
    assert capture["packets"] > 0


def test_replay_report_option_writes_the_same_report(demo: tuple[Path, dict], tmp_path: Path) -> None:
    done = conduitwatch(
        "replay",
        DEMO,
        "--policy",
        "rules/demo.yaml",
        "--report",
        str(tmp_path),
        "-q",
        env={**__import__("os").environ, "SOURCE_DATE_EPOCH": "1769860800"},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.json").read_bytes() == (demo[0] / "report.json").read_bytes()


def test_missing_capture_is_a_clear_error(tmp_path: Path) -> None:
    done = conduitwatch("report", "nope.pcap", "--out", str(tmp_path))
    assert done.returncode == 2 and "nope.pcap" in done.stderr and "Traceback" not in done.stderr


def test_a_firmware_change_is_a_finding_against_sr_3_4(tmp_path: Path) -> None:
    from tests.assets import traffic
    from tests.factory import write

    pcap = write(tmp_path / "fw.pcap", traffic.modbus_identification(b"V2.70")
                 + traffic.modbus_identification(b"V3.10", sport=40002))  # fmt: skip
    doc = report(tmp_path / "out", str(pcap), policy=None)
    [finding] = doc["findings"]
    assert finding["signature_id"] == 9100303 and "'V2.70' -> 'V3.10'" in finding["signature"]
    assert finding["occurrences"][0]["pcap_filename"] == str(pcap)
    rows = {c["id"]: c for c in doc["compliance"]}
    assert rows["SR 3.4"]["status"] == "non-conformity" and rows["SR 3.4"]["findings"] == [finding["id"]]
    plc = {a["address"]: a for a in doc["assets"]}[traffic.PLC]
    assert plc["identity"]["revision"] == "V3.10"
    assert [(c["key"], c["old"], c["new"]) for c in plc["identity_changes"]] == [
        ("revision", "V2.70", "V3.10")
    ]


def test_devices_behind_a_bacnet_router_are_in_every_form_of_the_report(tmp_path: Path) -> None:
    import csv

    import jsonschema

    from tests.assets import traffic
    from tests.factory import write

    pcap = write(tmp_path / "routed.pcap", traffic.routed_i_am())
    out = tmp_path / "out"
    doc = report(out, str(pcap), policy=None)
    jsonschema.validate(doc, json.loads((ROOT / "docs" / "report.schema.json").read_text()))
    rows = {a["address"]: a for a in doc["assets"]}
    routed = rows["bacnet:5:17"]
    assert routed["via"] == [traffic.ROUTER] and routed["identity"]["device_instance"] == 517
    assert (
        routed["identity_packet"]["pcap_filename"] == str(pcap) and routed["identity_packet"]["pcap_cnt"] == 2
    )
    assert rows[traffic.ROUTER]["via"] == [] and doc["limits"]["assets_evicted"] == 0
    html = (out / "report.html").read_text()
    assert "bacnet:5:18<br>" in html and f"via {traffic.ROUTER}" in html
    with (out / "assets.csv").open() as f:
        table = {r["address"]: r for r in csv.DictReader(f)}
    assert (table["bacnet:5:18"]["via"], table["bacnet:5:18"]["device_instance"]) == (traffic.ROUTER, "518")
