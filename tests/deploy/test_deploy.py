"""The deployment files, checked by the tools that will read them (systemd, logrotate, Prometheus,
Alertmanager) and, where no such tool runs here (compose, Kubernetes), by their structure and by
feeding what they embed (the policy, the options) to conduitwatch itself."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from agent.cli import cli
from tests.tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "conduitwatch.service"


def conduitwatch_script() -> str:
    script = Path(sys.executable).with_name("conduitwatch")
    return str(script) if script.exists() else shutil.which("conduitwatch") or "/usr/bin/env"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    # verify checks that ExecStart exists: point it at this installation instead of /opt.
    unit = tmp_path / "conduitwatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/conduitwatch/bin/conduitwatch", conduitwatch_script()))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_unit_is_hardened_and_least_privileged() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["AmbientCapabilities"] == ["CAP_NET_RAW CAP_NET_ADMIN"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_RAW CAP_NET_ADMIN"]
    assert settings["User"] == ["conduitwatch"] and settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"] and settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # The command line it runs is one conduitwatch accepts.
    args = shlex.split(settings["ExecStart"][0])[1:]
    assert args[:2] == ["--config", "/etc/conduitwatch/config.yaml"] and args[2] == "run"


def test_example_config_is_accepted_by_conduitwatch() -> None:
    from click.testing import CliRunner

    # --config is read (and every key checked) before run's --help stops the command.
    result = CliRunner().invoke(cli, ["--config", str(DEPLOY / "config.yaml"), "run", "--help"])
    assert result.exit_code == 0, result.output


def test_logrotate_config_parses_and_rotates(tmp_path: Path) -> None:
    logrotate = require_tool("logrotate")
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "eve.json").write_text('{"event_type":"stats"}\n')
    marker = tmp_path / "hup"
    user = getpass.getuser()
    text = (DEPLOY / "logrotate" / "conduitwatch").read_text()
    text = text.replace("/var/log/conduitwatch", str(logs)).replace(
        "conduitwatch conduitwatch", f"{user} {user}"
    )
    text = re.sub(r"systemctl kill [^\n]*", f"touch {marker}", text)
    config = tmp_path / "logrotate.conf"
    config.write_text(text)
    config.chmod(0o644)
    result = subprocess.run([logrotate, "-f", "-v", "-s", str(tmp_path / "state"), str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0 and "error:" not in result.stderr, result.stderr
    rotated = [p.name for p in logs.iterdir() if p.name != "eve.json"]
    assert len(rotated) == 1 and rotated[0].startswith("eve.json-"), rotated
    assert (logs / "eve.json").exists() and marker.exists()  # recreated, and the agent was signalled


def test_prometheus_config_checks(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(ROOT / "rules")  # as compose.yaml mounts it
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_checks() -> None:
    amtool = require_tool("amtool")
    result = subprocess.run([amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_brings_up_sensor_prometheus_alertmanager_grafana() -> None:
    services = _compose()["services"]
    assert set(services) == {"sensor", "prometheus", "alertmanager", "grafana"}
    sensor = services["sensor"]
    assert sensor["network_mode"] == "host" and sensor["cap_drop"] == ["ALL"]
    assert sorted(sensor["cap_add"]) == ["NET_ADMIN", "NET_RAW"]
    assert (ROOT / "deploy" / sensor["build"]["dockerfile"].removeprefix("deploy/")).exists()
    # Every file the services mount exists in the project.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith((".", "/")) and "${" not in host:
                assert (DEPLOY / host).resolve().exists(), f"{name}: {host}"


def test_compose_sensor_command_is_valid_for_conduitwatch() -> None:
    command = [c.replace("${CONDUITWATCH_INTERFACE:?set CONDUITWATCH_INTERFACE to the mirror port}", "eth1")
               for c in _compose()["services"]["sensor"]["command"]]  # fmt: skip
    run = cli.commands["run"]
    ctx = run.make_context("run", [*command[1:], "--help"], resilient_parsing=True)
    assert ctx.params["interface"] == "eth1" and ctx.params["policy_path"] == "/etc/conduitwatch/policy.yaml"


def test_kubernetes_daemonset_and_policy(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "conduitwatch.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Namespace", "ConfigMap", "DaemonSet"}
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    container = pod["containers"][0]
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and sorted(caps["add"]) == ["NET_ADMIN", "NET_RAW"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(kinds["ConfigMap"]["data"]["policy.yaml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    result = subprocess.run([sys.executable, "-m", "agent.cli", "policy", "validate", str(policy)],
                            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_every_rule_to_its_team() -> None:
    """Sensor health pages OT engineering; security and process findings go to the SOC."""
    amtool = require_tool("amtool")
    rules = yaml.safe_load((ROOT / "rules" / "alerts.rules.yml").read_text())
    names = [r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r]
    health = {f"Conduitwatch{n}" for n in ("SensorDown", "SensorBlind", "CaptureStopped", "CaptureDrops",
                                           "FlowTableFull", "PolicyReloadFailed")}  # fmt: skip
    assert health <= set(names)
    for name in names:
        config = f"--config.file={DEPLOY / 'alertmanager' / 'alertmanager.yml'}"
        result = subprocess.run([amtool, "config", "routes", "test", config, f"alertname={name}"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        expected = "ot-engineering" if name in health else "soc"
        assert result.stdout.strip() == expected, (name, result.stdout, result.stderr)
