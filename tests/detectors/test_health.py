"""Control-loop health and cyclic I/O: baselines, thresholds, jitter and sequence gaps."""

from __future__ import annotations

from typing import Any

from agent.detectors.health import LATENCY_BUCKETS, Cyclic, LatencyHistogram, Loop, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [0.005, 0.001, 0.004, 0.002, 0.003]
    assert [percentile(values, q) for q in (0, 20, 50, 99, 100)] == [0.001, 0.001, 0.003, 0.005, 0.005]
    assert percentile([], 50) == 0.0


def test_histogram_buckets() -> None:
    hist = LatencyHistogram()
    for value in (0.0005, 0.001, 0.003, 7.0):
        hist.add(value)
    assert hist.counts[0] == 2 and hist.counts[LATENCY_BUCKETS.index(0.005)] == 1 and hist.counts[-1] == 1
    assert abs(hist.total - 7.0045) < 1e-9


def _loop() -> Loop:
    flow: Any = object()
    return Loop(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", "modbus", "cell", "sup", None, flow)


def _poll(loop: Loop, start: float, seconds: float, latency: float, step: float = 0.1) -> None:
    """Requests every ``step`` with responses ``latency`` later, judged twice a second (all healthy)."""
    t, cnt = start, int(start * 100)
    next_judge = start + 0.5
    while t < start + seconds:
        cnt += 1
        loop.on_request(t, cnt)
        loop.on_response(t + latency, latency, cnt)
        t += step
        if t >= next_judge:
            assert loop.judge(next_judge) is not True
            next_judge += 0.5


def test_baseline_threshold_and_no_learning_from_a_degradation() -> None:
    loop = _loop()
    _poll(loop, 0.0, 10.0, 0.004)
    assert loop.threshold() is not None
    threshold = loop.threshold()
    assert threshold is not None and abs(threshold - 0.009) < 1e-9  # max(2 x 4 ms, 4 ms + 5 ms)
    assert loop.judge(10.0) is False
    # A jump to 30 ms: judged degraded, and the baseline does not move.
    for i in range(10):
        t = 10.0 + i * 0.1
        loop.on_request(t, 5000 + i)
        loop.on_response(t + 0.03, 0.03, 5000 + i)
    assert loop.judge(11.1) is True
    assert max(loop.baseline) == 0.004


def test_unanswered_requests_count_and_signal() -> None:
    loop = _loop()
    _poll(loop, 0.0, 10.0, 0.004)
    loop.on_request(10.0, 9001)
    loop.on_request(10.1, 9002)
    loop.on_request(10.2, 9003, function=99)  # never answered here: not expected to be
    assert loop.judge(11.5) is True  # two requests left unanswered for more than 1 s
    assert loop.unanswered == 2


def test_cyclic_period_jitter_and_gaps() -> None:
    stream = Cyclic("cell", "enip")
    t, seq = 0.0, 100
    for _ in range(30):
        stream.on_frame(t, seq)
        t += 0.010
        seq += 1
    assert abs(stream.period - 0.010) < 1e-9
    assert stream.gaps == 0 and stream.jitter() is not None and stream.jitter() < 1e-6  # type: ignore[operator]
    stream.on_frame(t + 0.015, seq + 3)  # three frames missing, 15 ms late
    assert stream.gaps == 3
    assert abs((stream.jitter() or 0.0) - 0.015) < 1e-6
    stream.on_frame(t + 0.03, 5)  # the connection restarted: not a gap
    assert stream.gaps == 3


def test_busy_exceptions_signal_degradation() -> None:
    loop = _loop()
    _poll(loop, 0.0, 10.0, 0.004)
    loop.busy.extend([10.2, 10.4])
    loop.on_response(10.45, 0.004, 0)
    assert loop.judge(10.5) is True
