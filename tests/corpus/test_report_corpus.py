"""Corpus tier: one report over the whole corpus (every file merged in time order). Its evidence
must agree with the corpus's own inventory: the SHA-256 and packet count of every capture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.corpus.conftest import CORPUS, Capture

ROOT = Path(__file__).resolve().parents[2]


def test_report_evidence_matches_the_inventory(
    inventory: tuple[Capture, ...], tmp_path: Path, tshark: str
) -> None:
    import csv

    import jsonschema

    from tests.corpus.test_identity_tshark import routed_devices

    with (CORPUS / "INVENTORY.tsv").open(newline="", encoding="utf-8") as f:
        digests = {row["path"]: row["sha256"] for row in csv.DictReader(f, delimiter="\t")}
    out = tmp_path / "report"
    args = [
        "report",
        str(CORPUS / "pcaps"),
        "--out",
        str(out),
        "--generated-at",
        "2026-01-31T12:00:00Z",
        "-q",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: some corpus captures are damaged on purpose
    assert "Traceback" not in done.stderr
    doc = json.loads((out / "report.json").read_text())
    captures = {str(Path(c["name"]).relative_to(CORPUS / "pcaps")): c for c in doc["evidence"]["captures"]}
    assert set(captures) == {c.path for c in inventory}
    for capture in inventory:
        ours = captures[capture.path]
        assert ours["sha256"] == digests[capture.path], capture.path
        if not ours["damage"]:
            assert ours["packets"] == capture.packets, capture.path
    assert (out / "report.html").stat().st_size > 0
    jsonschema.validate(doc, json.loads((ROOT / "docs" / "report.schema.json").read_text()))
    # Every device whose I-Am a BACnet router relayed is an asset of its own, reached through a router.
    routed = {a["address"]: a for a in doc["assets"] if a["address"].startswith("bacnet:")}
    assert set(routed) == routed_devices(tshark)
    assert all(a["via"] and isinstance(a["identity"].get("device_instance"), int) for a in routed.values())
