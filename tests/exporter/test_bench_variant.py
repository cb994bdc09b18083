"""bench/run.py's exporter variant: the same run as conduitwatch-policy with the exporter on and scraped."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gen_plant, run


def test_exporter_variant_runs_and_reports_the_ratio(tmp_path: Path) -> None:
    capture = tmp_path / "small.pcap"
    gen_plant.meta_path(capture).write_text(
        json.dumps(gen_plant.generate(capture, 1500, seed=9, profile="demo"))
    )
    results = tmp_path / "results.json"
    argv = [
        "--capture",
        str(capture),
        "--tools",
        "conduitwatch-policy,conduitwatch-exporter",
        "--repeat",
        "1",
        "--no-pin",
        "--results",
        str(results),
    ]
    assert run.main(argv) == 0
    report = json.loads(results.read_text())
    exporter = report["tools"]["conduitwatch-exporter"]
    assert exporter["status"] == "ok", exporter
    assert "--web.listen-address" in exporter["argv"] and "scrapes" in exporter
    ratio = report["ratios"]["exporter"]
    assert ratio["wall"] > 0 and ratio["cpu"] > 0
