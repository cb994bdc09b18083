"""Control-loop health and cyclic I/O: baselines, thresholds, jitter and sequence gaps."""

from __future__ import annotations

from pathlib import Path

from agent.detectors.health import (
    LATENCY_BUCKETS,
    RETRANS_MIN,
    Cyclic,
    LatencyHistogram,
    Loop,
    percentile,
)
from agent.detectors.tcp_health import TcpCounts, TcpHealth
from agent.flows import Flow

ROOT = Path(__file__).resolve().parents[2]


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
    key = (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 40000, 502, 6, ())
    flow = Flow(key, 1, 4, 0.0, 1, 0, 600.0)
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


def test_retransmissions_beyond_the_learned_rate_degrade_a_loop() -> None:
    """Latency stays normal (the responses that come are fast) but requests keep being sent again."""
    loop = _loop()
    tcp = loop.flow.tcp = TcpHealth(TcpCounts())
    _poll(loop, 0.0, 5.0, 0.004)
    tcp.retransmissions += 1  # one now and then while healthy: part of the baseline once old enough
    _poll(loop, 5.0, 10.0, 0.004)
    assert loop.retransmissions == 1
    threshold = loop.retrans_threshold()
    assert threshold is not None and threshold == RETRANS_MIN  # 4 x (1 per ~15 s) is well below two
    tcp.retransmissions += RETRANS_MIN
    loop.on_request(15.2, 1)
    loop.on_response(15.204, 0.004, 1)
    assert loop.judge(15.5) is True and loop.retrans_degraded
    assert loop.judge(16.0) is True  # still within the one-second window
    assert loop.judge(16.5) is not True and not loop.retrans_degraded
    assert loop.retransmissions == 1 + RETRANS_MIN


def test_retransmissions_are_not_judged_before_a_rate_is_learned() -> None:
    loop = _loop()
    tcp = loop.flow.tcp = TcpHealth(TcpCounts())
    _poll(loop, 0.0, 3.0, 0.004)
    tcp.retransmissions += 5
    assert loop.retrans_threshold() is None
    assert loop.judge(3.5) is not True


def test_a_loop_with_retransmissions_as_usual_is_not_degraded() -> None:
    """A link that always loses a little: its usual rate is the baseline, not a degradation."""
    loop = _loop()
    tcp = loop.flow.tcp = TcpHealth(TcpCounts())
    t = 0.0
    for _ in range(60):
        tcp.retransmissions += 1  # one a second
        _poll(loop, t, 1.0, 0.004)
        t += 1.0
    threshold = loop.retrans_threshold()
    assert threshold is not None and 3.0 < threshold < 5.0
    tcp.retransmissions += 3
    loop.on_request(t + 0.1, 1)
    loop.on_response(t + 0.104, 0.004, 1)
    assert loop.judge(t + 0.5) is not True


def _polling(client: str, polls: int) -> list:
    """A Modbus client reading one register ``polls`` times, each read answered."""
    from tests.factory import tcp_stream

    segments = []
    for tid in range(1, polls + 1):
        segments.append((True, tid.to_bytes(2, "big") + b"\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"))
        segments.append((False, tid.to_bytes(2, "big") + b"\x00\x00\x00\x05\x01\x03\x02\x00\x2a"))
    return tcp_stream(segments, client=client, server="10.0.0.100")


def test_every_paired_response_reaches_the_histogram_by_the_end_of_the_run() -> None:
    """Messages are logged and folded in at each judgement; the end of the run folds the rest, so
    the last half second of a replay is not missing from the samples and the histogram."""
    from agent.detectors.floods import FloodDetector
    from agent.pipeline import Pipeline, PipelineConfig
    from tests.factory import ListSource

    detector = FloodDetector(None, lambda *_a: None)
    Pipeline(PipelineConfig(), consumers=[detector]).run(ListSource(_polling("10.0.0.1", 3), step=0.01))
    detector.finish()
    (loop,) = detector.loops.values()
    assert len(loop.summary) == 3 and sum(loop.histogram.counts) == 3


def test_loops_beyond_the_limit_are_counted_and_picked_up_once_room_is_made() -> None:
    """The loop table is bounded: a flow whose loop finds no room is counted in loops_dropped and its
    decoder logs no timings. Once an idle loop is forgotten the decoders ask again (retune), and the
    waiting flow, still polling, gets its loop."""
    from agent.detectors.floods import FloodConfig
    from agent.pipeline import Pipeline, PipelineConfig
    from agent.policy.reload import compile_policy
    from tests.factory import ListSource

    first, second = _polling("10.0.0.1", 20), _polling("10.0.0.2", 100)
    # The first client polls for a second, the second from 0.5 s to 5 s: it asks for a loop while the
    # first one's is still followed, and goes on after that one has been idle for longer than 1 s.
    timed = [(1000.0 + i * 0.05, p) for i, p in enumerate(first)]
    timed += [(1000.5 + i * 0.025, p) for i, p in enumerate(second)]
    timed.sort(key=lambda item: item[0])
    policy, _ = compile_policy(str(ROOT / "rules" / "demo.yaml"))
    pipeline = Pipeline(PipelineConfig(), policy=policy)  # the pipeline ticks its flood detector
    detector = pipeline.floods
    assert detector is not None
    detector.config = FloodConfig(max_loops=1, loop_idle_s=1.0)
    pipeline.run(ListSource([p for _, p in timed], times=[t for t, _ in timed]))
    assert detector.loops_dropped == 1  # once, for the second client's flow (not once per message)
    (loop,) = detector.loops.values()
    assert loop.client == bytes([10, 0, 0, 2])
    assert 0 < len(loop.summary) < 100  # the polls before it got its loop were not timed
    assert pipeline.decoders.epoch >= 1
