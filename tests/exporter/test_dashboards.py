"""The Grafana dashboards: generated from dashboards/generate.py, consistent, provisionable."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import yaml

from .helpers import ROOT

DASHBOARDS = ROOT / "dashboards"
UIDS = {
    "conduitwatch-overview",
    "conduitwatch-zones",
    "conduitwatch-control-health",
    "conduitwatch-backup-impact",
}


def generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_the_generator_writes() -> None:
    files = generator().files()
    assert set(files) == {f"{uid}.json" for uid in UIDS}
    for name, text in files.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == text, (
            f"run python dashboards/generate.py ({name})"
        )


def test_dashboards_are_consistent() -> None:
    seen_uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        seen_uids.add(board["uid"])
        assert path.stem == board["uid"] and len(board["uid"]) <= 40  # Grafana's uid limit
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert (
            variables["datasource"]["type"] == "datasource"
            and variables["datasource"]["query"] == "prometheus"
        )
        assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                expr = target["expr"]
                assert 'instance=~"$instance"' in expr, (panel["title"], expr)
                for used in re.findall(r"\$\w+", expr):
                    assert used in ("$instance", "$zone", "$__rate_interval") and (
                        used[1:] in variables or used.startswith("$__")
                    ), (panel["title"], used)
    assert seen_uids == UIDS


def test_provisioning_files() -> None:
    datasources = yaml.safe_load(
        (DASHBOARDS / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (source,) = datasources["datasources"]
    assert datasources["apiVersion"] == 1 and source["type"] == "prometheus" and source["uid"]
    providers = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "conduitwatch.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_backup_panel_covers_every_backup_protocol() -> None:
    from agent.ports import CATEGORIES

    board = json.loads((DASHBOARDS / "conduitwatch-backup-impact.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"] == "Backup-category protocols between zones"]
    (target,) = panel["targets"]
    match = re.search(r'protocol=~"([^"]*)"', target["expr"])
    assert match is not None
    assert CATEGORIES["backup"] <= set(match.group(1).split("|"))


def expected_unit(expr: str) -> str | None:
    """The Grafana unit an expression's value has, from the metric names it reads (None: no rule)."""
    if "histogram_quantile(" in expr and "_seconds_bucket" in expr:
        return "s"
    if re.search(r"rate\(\w+_seconds_total", expr):
        return "percentunit"  # CPU seconds per second: 1.0 = one core
    if re.search(r"rate\(\w+_bytes_total", expr):
        return "bps" if expr.startswith("8 * ") else "Bps"
    if re.search(r"\brate\(\w+_(packets|frames)_total", expr) and "/" not in expr:
        return "pps"
    if re.search(r"\w+_ratio\b", expr) or re.search(
        r"conduitwatch_flows_active\S* / conduitwatch_flows_max", expr
    ):
        return "percentunit"
    if re.search(r"time\(\) - \w+_timestamp_seconds", expr) or re.search(r"\w+_seconds\{", expr):
        return "s"
    if "rate(" not in expr and "increase(" not in expr and re.search(r"\w+_bytes(_total)?\{", expr):
        return "bytes"
    return None


def unit_of(panel: dict, target: dict) -> str:  # type: ignore[type-arg]
    """The unit Grafana shows a target's values in: a table's per-column override, else the panel's."""
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byName", "options": f"Value #{target['refId']}"}:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    return str(prop["value"])
    return str(panel["fieldConfig"]["defaults"]["unit"])


def test_every_panel_shows_its_values_in_their_unit() -> None:
    """Bytes as bytes (or bits when multiplied by 8), seconds as seconds, ratios as percentunit."""
    wrong = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                unit = expected_unit(target["expr"])
                if unit is not None and unit_of(panel, target) != unit:
                    wrong.append(
                        f"{panel['title']} ({target['refId']}): {unit_of(panel, target)}, not {unit}"
                    )
    assert not wrong, "\n".join(wrong)
