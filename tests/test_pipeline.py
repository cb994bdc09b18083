"""The pipeline as a whole: the fast path must change nothing but speed."""

import json
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.flows import FlowTable
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = [ROOT / "pcaps" / "demo.pcap", *sorted((ROOT / "pcaps" / "scenarios").glob("*.pcap"))[:3]]


def replay(capture: Path, out: Path, policy: CompiledPolicy | None) -> tuple[list[dict], dict]:
    sink = EveSink(str(out))
    pipeline = Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink], policy=policy)
    source = ReplaySource([str(capture)])
    pipeline.run(source)
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return events[:-1], events[-1]["stats"]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fast_path_gives_the_same_events_as_full_dissection(
    capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = "demo.yaml" if capture.name == "demo.pcap" else "purdue-plant.yaml"
    policy, _ = load_policy(str(ROOT / "rules" / rules))
    assert policy is not None
    fast_events, fast_stats = replay(capture, tmp_path / "fast.json", CompiledPolicy(policy))
    monkeypatch.setattr(FlowTable, "fast_path", lambda self, *args: False)
    full_events, full_stats = replay(capture, tmp_path / "full.json", CompiledPolicy(policy))
    assert fast_events == full_events
    assert fast_stats == full_stats  # layer counts included: the fast path counts what it skips
    assert len(fast_events) > 10
