"""The labelled scenario captures (bench/scenarios.py) against rules/purdue-plant.yaml.

Every injected violation must raise the right alert kind with the right zones, conduit, endpoints
and operation at the right packet (100% recall), the compliant day must raise none (0 false
alerts), and the always-audited operations allowed by a rule must be audited.
"""

import json
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.pipeline import Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
LABELS = sorted((ROOT / "pcaps" / "scenarios").glob("*.labels.json"))


@pytest.fixture(scope="module")
def purdue() -> CompiledPolicy:
    policy, problems = load_policy(str(ROOT / "rules" / "purdue-plant.yaml"))
    assert policy is not None, [str(p) for p in problems]
    return CompiledPolicy(policy)


def replay(capture: Path, policy: CompiledPolicy) -> list[dict]:
    events: list[dict] = []

    class Memory:
        name = "memory"

        def emit(self, event: object) -> None:
            events.append({"event_type": event.event_type, **event.fields})  # type: ignore[attr-defined]

        def flush(self) -> None: ...
        def close(self) -> None: ...

    source = ReplaySource([str(capture)])
    Pipeline(PipelineConfig(), sinks=[Memory()], policy=policy).run(source)
    return events


def test_every_scenario_is_labelled() -> None:
    assert len(LABELS) >= 9


@pytest.mark.parametrize("labels", LABELS, ids=lambda p: p.name.removesuffix(".labels.json"))
def test_scenario_alerts_match_labels(labels: Path, purdue: CompiledPolicy) -> None:
    spec = json.loads(labels.read_text())
    events = replay(labels.parent / spec["capture"], purdue)
    first_alerts = [e for e in events if e["event_type"] == "alert" and not e["alert"].get("folded")]
    zones = ("src_zone", "dest_zone", "conduit")
    got = sorted(
        (e["alert"]["rule"], e["alert"]["signature_id"], *(e["policy"][k] for k in zones), e["src_ip"],
         e["dest_ip"], e["dest_port"], e["policy"]["operation"], e["pcap_cnt"])
        for e in first_alerts
    )  # fmt: skip
    expected = sorted(
        (f["rule"], f["signature_id"], f["src_zone"], f["dest_zone"], f["conduit"], f["src_ip"], f["dest_ip"],
         f["dest_port"], f["operation"], f["first_pcap_cnt"])
        for f in spec["findings"]
    )  # fmt: skip
    assert got == expected
    for alert in first_alerts:
        assert alert["alert"]["signature"] and alert["alert"]["metadata"]["iec62443_sr"]
    audits = sorted(
        (e["policy"]["operation"], e["policy"]["rule"], e["pcap_cnt"])
        for e in events
        if e["event_type"] == "audit" and not e["audit"].get("folded")
    )
    expected_audits = sorted(
        (a["operation"], a["flow_rule"], a["first_pcap_cnt"]) for a in spec.get("audits", [])
    )
    assert audits == expected_audits
