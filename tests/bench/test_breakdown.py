"""bench.breakdown: the per-stage figures, and a run end to end on a small capture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import breakdown, gen_plant
from bench.breakdown import STAGES, summarize

DEMO_POLICY = Path(breakdown.ROOT, "rules", "demo.yaml")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("breakdown") / "small.pcap"
    gen_plant.generate(path, 1500, seed=9, profile="demo")  # the plant rules/demo.yaml describes
    return path


def test_stages_add_what_they_cost_per_packet_and_compare_with_the_foundation() -> None:
    names = [stage.name for stage in STAGES]
    assert names == ["foundation", "decoders", "policy engine", "policy"]
    rounds = [
        dict(zip(names, (3.0, 4.0, 4.5, 6.0), strict=True)),
        dict(zip(names, (4.0, 5.2, 5.6, 8.0), strict=True)),  # a slower moment: every stage slower
        dict(zip(names, (3.2, 4.0, 4.6, 6.2), strict=True)),
    ]
    rows = {row["stage"]: row for row in summarize(rounds, packets=1_000_000)}
    assert "adds_us_per_packet" not in rows["foundation"]
    assert rows["decoders"]["adds_us_per_packet"] == pytest.approx(1.0)  # median of 1.0, 1.2, 0.8
    assert rows["policy engine"]["adds_us_per_packet"] == pytest.approx(0.5)  # of 0.5, 0.4, 0.6
    assert rows["policy"]["adds_us_per_packet"] == pytest.approx(1.6)  # of 1.5, 2.4, 1.6
    assert rows["policy"]["best_cpu_s"] == 6.0 and rows["policy"]["median_cpu_s"] == 6.2
    assert rows["policy"]["packets_per_cpu_s"] == pytest.approx(1_000_000 / 6.0)
    assert rows["policy"]["vs_foundation_best"] == pytest.approx(3.0 / 6.0)
    assert rows["policy"]["vs_foundation_paired"] == pytest.approx(0.5)  # of 0.5, 0.5, 0.516
    assert rows["decoders"]["vs_foundation_paired"] == pytest.approx(0.769, abs=1e-3)  # of .75, .769, .8
    assert rows["foundation"]["vs_foundation_best"] == rows["foundation"]["vs_foundation_paired"] == 1.0


def test_the_policy_engine_stage_runs_no_flood_detection_and_the_policy_stage_does(capture: Path) -> None:
    for stage in STAGES:
        result = breakdown.run_stage(stage, capture, DEMO_POLICY)
        assert result["packets"] == 1500 and result["cpu_s"] > 0
    # The stages differ in what they build, not only in name: checked through the pipeline itself.
    from agent.pipeline import Pipeline, PipelineConfig
    from agent.policy.reload import compile_policy

    compiled, _ = compile_policy(str(DEMO_POLICY))
    assert Pipeline(PipelineConfig(flood_detection=False), policy=compiled).floods is None
    assert Pipeline(PipelineConfig(), policy=compiled).floods is not None


def test_end_to_end_prints_every_stage_and_writes_the_rounds(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "breakdown.json"
    argv = ["--capture", str(capture), "--policy", str(DEMO_POLICY), "--repeat", "2", "--no-pin",
            "--json", str(out)]  # fmt: skip
    assert breakdown.main(argv) == 0
    printed = capsys.readouterr().out
    for stage in STAGES:
        assert f"\n{stage.name} " in printed
    report = json.loads(out.read_text())
    assert report["packets"] == 1500 and len(report["rounds"]) == 2
    assert report["rows"] == json.loads(json.dumps(summarize(report["rounds"], 1500)))


def test_a_broken_policy_stops_the_run_with_its_error(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nzones: [\n")
    argv = ["--capture", str(capture), "--policy", str(bad), "--repeat", "1", "--no-pin"]
    assert breakdown.main(argv) == 2
    err = capsys.readouterr().err
    assert "invalid policy" in err and "bad.yaml:3" in err and "round" not in err  # refused up front
