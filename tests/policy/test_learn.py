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


def learned(captures: list[Path], hosts_only: bool = False, timezone: str = "UTC") -> CompiledPolicy:
    model, inventory, result = learn_result([str(c) for c in captures])
    names = [s.name for s in result.sources]
    text = draft(model, inventory, names, ["0" * 64] * len(captures), hosts_only, timezone)
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


@pytest.fixture(scope="module", params=["UTC", "Europe/Berlin"])
def from_the_compliant_day(request: pytest.FixtureRequest) -> CompiledPolicy:
    return learned([SCENARIOS / "compliant.pcap"], hosts_only=True, timezone=request.param)


@pytest.mark.parametrize(
    "labels", sorted(SCENARIOS.glob("*.labels.json")), ids=lambda p: p.name.split(".")[0]
)
def test_learned_from_the_compliant_day_flags_injected_violations(
    labels: Path, from_the_compliant_day: CompiledPolicy
) -> None:
    """Every labelled finding, of its labelled kind at its packet; the compliant day raises none.
    (The learned policy may flag more than the hand-written one: it allows only what one day showed.)"""
    spec = json.loads(labels.read_text())
    found = alerts(SCENARIOS / spec["capture"], from_the_compliant_day)
    got = {(a["alert"]["rule"], a["src_ip"], a["dest_ip"], a["pcap_cnt"]) for a in found}
    expected = {(f["rule"], f["src_ip"], f["dest_ip"], f["first_pcap_cnt"]) for f in spec["findings"]}
    assert expected <= got
    if not spec["findings"]:
        assert got == set()


def test_engineering_changes_and_remote_sessions_get_a_schedule_polling_does_not(tmp_path: Path) -> None:
    out = tmp_path / "draft.yaml"
    done = cli("learn", "pcaps/scenarios/compliant.pcap", "-o", str(out), "--timezone", "Europe/Berlin")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    # ews-1's UMAS download at 10:15 local: mode/program in a rule of their own, the rest unscheduled
    assert (
        "        operations: [mode, program]\n"
        "        # schedule learned from 10 mode/program requests\n"
        "        #   seen only 10:15-10:16 Europe/Berlin on tue; the window is that +-60 min, to the hour\n"
        "        #   any weekday: the captures only cover tue, so weekdays were not learned\n"
        '        schedule: {hours: "09:00-12:00", timezone: Europe/Berlin}\n'
    ) in text
    assert 'schedule: {hours: "06:00-09:00", timezone: Europe/Berlin}' in text  # the 07:30 RDP session
    policy, problems = load_policy_bytes(text.encode(), "draft.yaml")
    assert policy is not None, [str(p) for p in problems]
    for conduit in policy.conduits:
        for rule in conduit.flows:
            if rule.schedule is not None:
                assert rule.operations is None or rule.operations <= {"program", "upload", "mode"}, rule.id
                assert rule.operations is not None or rule.protocols == frozenset({"rdp"}), rule.id
    assert sum(r.schedule is not None for c in policy.conduits for r in c.flows) == 4
    assert cli("learn", "pcaps/demo.pcap", "-o", "-", "--timezone", "Mars/Olympus").returncode == 2


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


@pytest.mark.parametrize("hosts_only", [False, True], ids=["subnets", "hosts"])
def test_devices_behind_a_bacnet_router_are_listed_in_the_routers_zone(
    tmp_path: Path, hosts_only: bool
) -> None:
    from tests.assets import traffic
    from tests.factory import write

    pcap = write(tmp_path / "routed.pcap", traffic.routed_i_am())
    model, inventory, _result = learn_result([str(pcap)])
    text = draft(model, inventory, [str(pcap)], ["0" * 64], hosts_only)
    policy, problems = load_policy_bytes(text.encode(), "learned.yaml")
    assert policy is not None, [str(p) for p in problems if p.severity == "error"]
    assert [z.id for z in policy.zones] == ["net-10.1.3.0-24"]  # no zone, asset or address for them
    block = text[text.index("  - id: net-10.1.3.0-24") :]
    assert f"#   bacnet:5:17 (device_instance 517 vendor_id 42) via {traffic.ROUTER}\n" in block
    assert f"#   bacnet:5:18 (device_instance 518 vendor_id 42) via {traffic.ROUTER}\n" in block
    assert alerts(pcap, CompiledPolicy(policy)) == []


def test_routed_devices_whose_router_no_zone_holds_are_listed_apart(tmp_path: Path) -> None:
    from agent.assets.inventory import Host
    from tests.assets import traffic
    from tests.factory import write

    model, inventory, _result = learn_result([str(write(tmp_path / "routed.pcap", traffic.routed_i_am()))])
    # A router the learned traffic never placed in a zone (its own flows were not learned).
    inventory.routed["bacnet:7:2a"] = Host(b"", 0.0, 0.0, network_address="bacnet:7:2a", via={"10.9.9.9": 1})
    text = draft(model, inventory, ["x.pcap"], ["0" * 64])
    assert (
        "  # BACnet devices behind routers that no zone here holds:\n  #   bacnet:7:2a via 10.9.9.9\n" in text
    )
    assert load_policy_bytes(text.encode(), "learned.yaml")[0] is not None
