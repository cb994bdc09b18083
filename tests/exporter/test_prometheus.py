"""A real Prometheus scrapes a real agent; every dashboard query and alert rule runs through its API.

The agent replays the bundled labelled scenarios against rules/purdue-plant.yaml with
``--web.listen-address`` and ``--web.linger``, Prometheus (the Debian package) scrapes it every second
and evaluates rules/alerts.rules.yml. Then:

* every PromQL expression of every dashboard panel returns data (Grafana's variables replaced by
  what "All" means), except the panels listed in EXPECTED_MISSING;
* every alert rule's expression evaluates without error, and the conduit-violation alerts fire;
* promtool accepts the exposition (check metrics), the rules (check rules) and their unit tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tooling import require_tool

from .helpers import PLANT_POLICY, ROOT, SCENARIOS, exposition, run_with_exporter

pytestmark = pytest.mark.tool

RULES = ROOT / "rules" / "alerts.rules.yml"
RULE_TESTS = sorted((ROOT / "rules" / "tests").glob("*.yaml"))
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
# (dashboard uid, panel title) -> why the panel has no data in this test. Remove entries once their
# metrics exist: the test fails for an entry whose panel does return data, so the list cannot go stale.
# Empty: the flood scenarios carry cyclic I/O (floods-cyclic-io), an unanswering PLC and a control
# connection ended by a reset (floods-plc-unresponsive).
EXPECTED_MISSING: dict[tuple[str, str], str] = {}
# Alerts this replay must fire: the scenarios' violations (each kind of the labels) are new series.
EXPECTED_FIRING = {
    "ConduitwatchConduitViolationHigh",
    "ConduitwatchConduitViolation",
    "ConduitwatchBackupInterference",
}
# Alerts that would fire on this replay once the flood detector's metrics exist (its flood scenarios).
EXPECTED_FIRING_LATER: dict[str, str] = {}
GRAFANA_VARIABLES = {"$instance": ".*", "$zone": ".*", "$__rate_interval": "15s", "$__range": "1m"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class PromAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = get_json(url)
        except urllib.error.HTTPError as e:
            pytest.fail(f"Prometheus refused {expr!r}: {e.read().decode(errors='replace')}")
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromAPI]:
    binary = require_tool("prometheus")
    where = tmp_path_factory.mktemp("prometheus")
    agent_port, prom_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "replay",
            *map(str, SCENARIOS),
            "--policy",
            str(PLANT_POLICY),
            "--quiet",
            "--web.listen-address",
            f"127.0.0.1:{agent_port}",
            "--web.linger",
            "300",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    config = where / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "conduitwatch", "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]}
                ],
            }
        )
    )
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={where / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    api = PromAPI(f"http://127.0.0.1:{prom_port}")
    try:
        wait_for("Prometheus to be ready", lambda: urllib.request.urlopen(f"{api.base}/-/ready", timeout=2))
        # The replay has finished (capture_up back to 0 after packets were counted) and Prometheus has
        # enough samples after that for rate() over the panels' window.
        finished = "conduitwatch_capture_up == 0 and on (instance) conduitwatch_capture_packets_total > 0"
        wait_for("the replay to finish", lambda: api.query(finished))
        wait_for(
            "samples after the replay",
            lambda: api.query("count_over_time((conduitwatch_capture_up == 0)[1m:1s]) >= 6"),
        )
        yield api
    finally:
        for proc in (server, agent):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (server, agent):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert agent.returncode == 0, agent.stderr.read() if agent.stderr else ""


def panels() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                out.append((dashboard["uid"], panel["title"], [t["expr"] for t in panel["targets"]]))
    return out


def grafana_to_promql(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unreplaced Grafana variable in {expr}"
    return expr


def test_every_dashboard_panel_returns_data(prometheus: PromAPI) -> None:
    empty, unexpected = [], []
    for uid, title, exprs in panels():
        results = [prometheus.query(grafana_to_promql(expr)) for expr in exprs]
        has_data = all(results)
        if (uid, title) in EXPECTED_MISSING:
            if any(results):
                unexpected.append(f"{uid} / {title}: returns data now, remove it from EXPECTED_MISSING")
        elif not has_data:
            empty.append(f"{uid} / {title}: {exprs}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert not unexpected, "\n".join(unexpected)
    known = {(uid, title) for uid, title, _ in panels()}
    assert set(EXPECTED_MISSING) <= known, "stale EXPECTED_MISSING entry"


def test_every_alert_rule_evaluates_and_the_violations_fire(prometheus: PromAPI) -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        prometheus.query(rule["expr"])  # valid and evaluable against real data (fails the test otherwise)

    def firing() -> set[str]:
        alerts = get_json(f"{prometheus.base}/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    fired = wait_for("the violation alerts", lambda: firing() >= EXPECTED_FIRING and firing())
    assert "ConduitwatchSensorDown" not in fired and "ConduitwatchPolicyReloadFailed" not in fired
    assert not set(EXPECTED_FIRING_LATER) & fired, "remove from EXPECTED_FIRING_LATER and expect it"
    alerts = get_json(f"{prometheus.base}/api/v1/alerts")["data"]["alerts"]
    kinds = {a["labels"].get("kind") for a in alerts if a["labels"]["alertname"] in EXPECTED_FIRING}
    labelled = set()
    for labels_file in ROOT.glob("pcaps/scenarios/*.labels.json"):
        labelled |= {f["rule"] for f in json.loads(labels_file.read_text()).get("findings", [])}
    assert labelled and labelled <= kinds, (labelled, kinds)


def test_the_target_is_healthy_and_labels_are_bounded(prometheus: PromAPI) -> None:
    (up,) = prometheus.query('up{job="conduitwatch"}')
    assert up["value"][1] == "1"
    series = prometheus.query('count({job="conduitwatch"})')
    assert 0 < int(series[0]["value"][1]) < 5000


def test_promtool_checks_the_exposition_and_the_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    exporter, _ = run_with_exporter(SCENARIOS, PLANT_POLICY)
    text = exposition(exporter)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout)
    tested = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
