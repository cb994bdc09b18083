"""The throughput ratios bench.run reports for the issues' acceptance checks."""

from __future__ import annotations

from typing import Any

import pytest

from bench.run import all_ratios, round_order, throughput_ratio


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


def test_every_other_round_runs_the_tools_in_reverse() -> None:
    tools = ["conduitwatch-core", "conduitwatch", "conduitwatch-policy", "conduitwatch-exporter"]
    orders = [round_order(tools, rnd) for rnd in range(4)]
    assert orders[0] == orders[2] == tools
    assert orders[1] == orders[3] == tools[::-1]
    # Over two rounds each tool of a compared pair runs first once: a drift within a round favours
    # neither side of the paired ratio.
    for first, second in (
        ("conduitwatch-core", "conduitwatch-policy"),
        ("conduitwatch-policy", "conduitwatch-exporter"),
    ):
        assert [o.index(first) < o.index(second) for o in orders[:2]] == [True, False]
