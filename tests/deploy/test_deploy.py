"""The deployment files, checked by the tools that will read them (systemd, logrotate, Prometheus,
Alertmanager) and, where no such tool runs here (compose, Kubernetes), by their structure and by
feeding what they embed (the policy, the options) to conduitwatch itself."""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import cli
from tests.tooling import require_root, require_tool

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
    # CAP_NET_RAW alone: test_unit_capabilities_suffice_for_promiscuous_capture shows it is enough.
    assert settings["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert settings["User"] == ["conduitwatch"] and settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"] and settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # Writable: the log directory of the EVE file in deploy/config.yaml, nothing else (it keeps no state).
    eve = yaml.safe_load((DEPLOY / "config.yaml").read_text())["run"]["eve"]
    assert settings["LogsDirectory"] == ["conduitwatch"] and eve.startswith("/var/log/conduitwatch/")
    assert "StateDirectory" not in settings and "ReadWritePaths" not in settings
    # ProcSubset=pid would hide /proc/stat (prometheus_client then publishes no process_* metrics, which
    # the overview dashboard and the drop alert's runbook use) and /proc/net/if_inet6
    # (agent/outputs/passive.py).
    assert "ProcSubset" not in settings
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
    assert sensor["cap_add"] == ["NET_RAW"]
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
    assert caps["drop"] == ["ALL"] and caps["add"] == ["NET_RAW"]
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


def _unit_capabilities() -> list[str]:
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return line.partition("=")[2].split()
    raise AssertionError("no CapabilityBoundingSet in the unit")


CAPTURE_CHECK = """
import json, subprocess, sys
from agent.capture.live import LiveSource
source = LiveSource("lo", promisc=True)
link = json.loads(subprocess.run(["ip", "-d", "-j", "link", "show", "lo"], capture_output=True,
                                 text=True, check=True).stdout)[0]
print(json.dumps({"mode": source.mode, "promiscuity": link["promiscuity"]}))
source.close()
"""


@pytest.mark.netns
def test_unit_capabilities_suffice_for_promiscuous_capture() -> None:
    """With only the unit's capabilities (and no_new_privs, as NoNewPrivileges=yes), a live capture opens
    its ring and puts the interface in promiscuous mode, in a network namespace of its own."""
    require_root()
    setpriv, unshare, _ip = require_tool("setpriv"), require_tool("unshare"), require_tool("ip")
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in _unit_capabilities())
    script = (f"ip link set lo up && exec {setpriv} --bounding-set=-all,{caps} --inh-caps=-all "
              f"--no-new-privs {shlex.quote(sys.executable)} -c {shlex.quote(CAPTURE_CHECK)}")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([unshare, "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                            env=env, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    opened = json.loads(result.stdout.splitlines()[-1])
    assert opened == {"mode": "tpacket_v3", "promiscuity": 1}, opened


CONTAINERFILE = DEPLOY / "container" / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    """The Containerfile's instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_containerfile_copies_what_exists_and_runs_a_valid_command() -> None:
    from click.testing import CliRunner

    steps = _instructions()
    for keyword, args in steps:
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    entrypoint = json.loads(next(a for k, a in steps if k == "ENTRYPOINT"))
    command = json.loads(next(a for k, a in steps if k == "CMD"))
    # The entry point is the script pip installs for [project.scripts] in the image's virtualenv.
    assert (
        entrypoint == ["/opt/conduitwatch/bin/conduitwatch"]
        and "conduitwatch = " in (ROOT / "pyproject.toml").read_text()
    )
    # The default command, with the example settings in place of the mounted config file.
    args = [str(DEPLOY / "config.yaml") if a == "/etc/conduitwatch/config.yaml" else a for a in command]
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0 and "Usage: cli run" in result.output, result.output


def test_container_capabilities_match_what_compose_and_kubernetes_grant() -> None:
    """The interpreter's file capabilities must all be granted to the container, or exec fails (EPERM),
    and must be the unit's: CAP_NET_RAW."""
    setcap = next(a for k, a in _instructions() if k == "RUN" and a.startswith("setcap"))
    granted = re.fullmatch(r"setcap (\S+)\+eip .*", setcap)
    assert granted is not None, setcap
    file_caps = sorted(c.upper() for c in granted.group(1).split(","))
    assert file_caps == sorted(_unit_capabilities())
    sensor = _compose()["services"]["sensor"]
    manifest = (DEPLOY / "kubernetes" / "conduitwatch.yaml").read_text()
    docs = {d["kind"]: d for d in yaml.safe_load_all(manifest)}
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    for added in (sensor["cap_add"], pod["securityContext"]["capabilities"]["add"]):
        assert sorted("CAP_" + c for c in added) == file_caps


def test_container_installs_what_the_program_reads_at_run_time() -> None:
    from agent.assets.oui import DEFAULT_PATHS

    installs = " ".join(a for k, a in _instructions() if k == "RUN" and "apt-get install" in a)
    assert DEFAULT_PATHS[0].startswith("/usr/share/ieee-data/") and "ieee-data" in installs.split()
    # --bpf is compiled by libpcap (agent/capture/live.py compile_bpf); the slim image has none.
    assert "libpcap0.8" in installs.split()


def _labels_kept(expr: str) -> set[str] | None:
    """The labels an alert of ``expr`` carries from its series: those of its outermost aggregation's
    ``by (...)``, or None (all the target's labels) when it does not aggregate."""
    clauses = re.findall(r"\b(?:sum|max|min|avg|count) by \(([^)]*)\)", expr)
    if not clauses:
        return None
    kept = [{label.strip() for label in clause.split(",")} for clause in clauses]
    return set.intersection(*kept)


def test_alertmanager_groups_and_inhibits_by_labels_the_alerts_carry() -> None:
    """A label that the rules aggregate away is empty on the alert: grouping by it lumps sensors together,
    and an inhibition 'equal' on it would let one blind sensor silence the warnings of every other."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    external = set(
        yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["global"]["external_labels"]
    )
    rules = yaml.safe_load((ROOT / "rules" / "alerts.rules.yml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"] if "alert" in r}
    needed = set(config["route"]["group_by"]) - {"alertname"} - external
    for inhibit in config["inhibit_rules"]:
        needed |= set(inhibit["equal"])
    for name, rule in alerts.items():
        kept = _labels_kept(rule["expr"])
        if kept is not None:
            assert needed <= kept | set(rule.get("labels", {})), (name, needed - kept)
