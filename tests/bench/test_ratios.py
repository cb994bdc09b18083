"""The throughput ratios bench.run reports for the issues' acceptance checks."""

from __future__ import annotations

from typing import Any

import pytest

from bench.run import all_ratios, throughput_ratio


def _tool(cpu_seconds: list[float], packets: int = 1_000_000) -> dict[str, Any]:
    best = min(cpu_seconds)
    return {
        "status": "ok",
        "packets_per_s": packets / best,
        "packets_per_cpu_s": packets / best,
        "runs": [{"wall": c, "user": c - 0.1, "sys": 0.1} for c in cpu_seconds],
    }


def test_ratio_gives_best_against_best_the_paired_median_and_its_middle_half() -> None:
    core = _tool([4.0, 4.0, 4.0, 4.0, 4.0])
    decoders = _tool([5.0, 8.0, 4.0, 5.0, 10.0])  # per round: 0.8, 0.5, 1.0, 0.8, 0.4
    ratio = throughput_ratio({"conduitwatch-core": core, "conduitwatch": decoders}, "conduitwatch",
                             "conduitwatch-core")  # fmt: skip
    assert ratio is not None
    assert ratio["wall"] == pytest.approx(1.0)  # best 4.0 against best 4.0
    assert ratio["paired_cpu_median"] == pytest.approx(0.8)
    assert ratio["paired_cpu_q1"] == pytest.approx(0.45)
    assert ratio["paired_cpu_q3"] == pytest.approx(0.9)


def test_few_rounds_give_no_quartiles_and_a_missing_tool_no_ratio() -> None:
    core = _tool([4.0, 4.0])
    decoders = _tool([5.0, 8.0])
    ratios = all_ratios({"conduitwatch-core": core, "conduitwatch": decoders})
    assert set(ratios) == {"decoders"}  # no policy or exporter run
    assert ratios["decoders"]["paired_cpu_median"] == pytest.approx(0.65)
    assert "paired_cpu_q1" not in ratios["decoders"]


def test_the_policy_is_also_compared_with_the_decoders_it_runs_on() -> None:
    ratios = all_ratios(
        {"conduitwatch-core": _tool([4.0]), "conduitwatch": _tool([5.0]), "conduitwatch-policy": _tool([8.0])}
    )
    assert set(ratios) == {"decoders", "policy", "policy_layer"}
    assert ratios["policy"]["paired_cpu_median"] == pytest.approx(0.5)
    assert ratios["policy_layer"]["paired_cpu_median"] == pytest.approx(0.625)
