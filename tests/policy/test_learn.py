"""``policy learn`` and ``policy diff``: a learned draft validates, allows exactly what it was learned
from, and, learned from the compliant day, flags the injected violations of the labelled scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.pipeline import Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.learn import draft, learn_result, zone_for
from agent.policy.loader import load_policy_bytes

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "pcaps" / "scenarios"
CAPTURES = [ROOT / "pcaps" / "demo.pcap", *sorted(SCENARIOS.glob("*.pcap"))]
# Schedules are not learned: a change made outside its usual hours looks like the change itself.
NOT_LEARNABLE = {"engineering-outside-window"}


def learned(captures: list[Path], hosts_only: bool = False) -> CompiledPolicy:
    model, inventory, result = learn_result([str(c) for c in captures])
    text = draft(model, inventory, [s.name for s in result.sources], ["0" * 64] * len(captures), hosts_only)
    policy, problems = load_policy_bytes(text.encode(), "learned.yaml")
    assert policy is not None, [str(p) for p in problems if p.severity == "error"]
    return CompiledPolicy(policy)


POLICY_SIDS = range(9100001, 9100100)  # conduit violations; detector incidents (floods, assets) are not


def alerts(capture: Path, policy: CompiledPolicy) -> list[dict]:
    """The policy violations a replay of ``capture`` raises under ``policy``."""
    events: list[dict] = []

    class Memory:
        name = "memory"

        def emit(self, event: object) -> None:
            fields = event.fields  # type: ignore[attr-defined]
            if event.event_type == "alert" and fields["alert"]["signature_id"] in POLICY_SIDS:  # type: ignore[attr-defined]
                events.append(fields)

        def flush(self) -> None: ...
        def close(self) -> None: ...

    with ReplaySource([str(capture)]) as source:
        Pipeline(PipelineConfig(), sinks=[Memory()], policy=policy).run(source)
    return events


@pytest.mark.parametrize("hosts_only", [False, True], ids=["subnets", "hosts"])
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.stem)
def test_a_policy_learned_from_a_capture_allows_all_of_it(capture: Path, hosts_only: bool) -> None:
    assert [a["alert"]["signature"] for a in alerts(capture, learned([capture], hosts_only))] == []


@pytest.mark.parametrize(
    "labels", sorted(SCENARIOS.glob("*.labels.json")), ids=lambda p: p.name.split(".")[0]
)
def test_learned_from_the_compliant_day_flags_injected_violations(labels: Path) -> None:
    spec = json.loads(labels.read_text())
    policy = learned([SCENARIOS / "compliant.pcap"], hosts_only=True)
    got = {(a["src_ip"], a["dest_ip"], a["pcap_cnt"]) for a in alerts(SCENARIOS / spec["capture"], policy)}
    expected = {(f["src_ip"], f["dest_ip"], f["first_pcap_cnt"]) for f in spec["findings"]}
    if labels.name.split(".")[0] in NOT_LEARNABLE:
        assert got == set()
    else:
        assert expected <= got


def test_zone_for_groups() -> None:
    assert zone_for(bytes([10, 1, 2, 3])) == ("net-10.1.2.0-24", "10.1.2.0/24")
    assert zone_for(b"\xff\xff\xff\xff") == ("broadcast", "255.255.255.255/32")
    assert zone_for(bytes([239, 1, 1, 1]))[0] == "multicast"
    assert zone_for(bytes.fromhex("fd000099000000000000000000000010")) == ("net-fd00.99-64", "fd00:99::/64")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "policy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_learn_validate_diff_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "draft.yaml"
    done = cli("learn", "pcaps/demo.pcap", "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "# 8 flows, 481,156 bytes; requests: read 1809, write 15" in text
    assert "operations: [read, write]" in text and "sha256 " in text
    assert cli("validate", str(out)).returncode == 0
    same = cli("diff", str(out), "pcaps/demo.pcap")
    assert same.returncode == 0, same.stdout
    assert "\n- " not in same.stdout and "\n+ " not in same.stdout


def test_diff_shows_drift_from_the_declared_model() -> None:
    done = cli("diff", "rules/demo.yaml", "pcaps/demo.pcap")
    assert done.returncode == 1
    assert "- enterprise-dmz/historian-web: enterprise -> dmz/hist-web tls (never used)" in done.stdout
    assert "+ enterprise -> dmz http (8 flows)" in done.stdout
    assert "+ supervisory -> control modbus write (6 requests)" in done.stdout


def test_diff_refuses_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nzones: []\n")
    done = cli("diff", str(bad), "pcaps/demo.pcap")
    assert done.returncode == 2 and "bad.yaml" in done.stderr
