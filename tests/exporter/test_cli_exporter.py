"""The --web.* flags as a user runs them: a replay an auditor can inspect, clear errors, the default port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agent.exporter.server import DEFAULT_PORT
from tests.agent_process import agent_process, stop

from .helpers import DEMO, DEMO_POLICY, ROOT
from .test_prometheus import free_port

CMD = [sys.executable, "-m", "agent.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cw(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_replay_keeps_serving_its_final_metrics_until_interrupted() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    cmd = [*CMD, "replay", str(DEMO), "--policy", str(DEMO_POLICY), "--web.listen-address", address]
    with agent_process(cmd, env=ENV, cwd=ROOT) as proc:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                text = scrape(port)
            except OSError:
                text = ""
            if 'conduitwatch_capture_up{mode="replay"} 0.0' in text and "packets_total 6000.0" in text:
                break
            time.sleep(0.2)
        assert "conduitwatch_capture_packets_total 6000.0" in text
        assert "conduitwatch_policy_violations_total{" in text
        time.sleep(1)
        assert proc.poll() is None, (
            "a replay with --web.listen-address and no --web.linger waits for a signal"
        )
        out, err = stop(proc, signal.SIGINT, timeout=20)
    assert f"metrics stay at http://127.0.0.1:{port}/metrics until interrupted" in err
    assert "6,000" in out  # the summary was printed before lingering


def test_linger_zero_and_settings_from_the_config_file(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "cw.yaml"
    config.write_text(f"replay:\n  web.listen-address: '127.0.0.1:{port}'\n  web.linger: 0\n")
    started = time.monotonic()
    result = cw("--config", str(config), "replay", str(DEMO), "--quiet")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    assert "metrics stay" not in result.stderr


def test_bad_web_settings_are_one_line_errors(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    for args, message in (
        (["--web.listen-address", "127.0.0.1:0", "--web.config.file", str(web)], f"{web}: basic_auth_users"),
        (["--web.listen-address", "nonsense"], "--web.listen-address 'nonsense'"),
        (["--web.listen-address", "127.0.0.1:0", "--web.telemetry-path", "metrics"], "--web.telemetry-path"),
    ):
        result = cw("replay", str(DEMO), "--quiet", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("conduitwatch: error:") and message in lines[0], lines


def test_run_listens_on_the_default_port_unless_told_otherwise() -> None:
    help_text = cw("run", "--help").stdout
    assert f":{DEFAULT_PORT}" in help_text and "--web.config.file" in help_text
    assert "--web.linger" in cw("replay", "--help").stdout
