"""Request/response latency against tshark's own pairing, on real corpus captures.

tshark pairs Modbus/TCP responses with their requests (``modbus.request_frame``,
``modbus.response_time``) and EtherNet/IP encapsulation replies with their requests
(``enip.response_to``, ``enip.time``), one value per frame. We compare per response frame (the first
of our messages in it: a frame with several PDUs answers several requests sent together) and the
percentiles (p50, p95, p99) over tshark's paired frames must agree within 1 ms. The backup-flood
detector's latency samples must be exactly the decoders' paired latencies. tshark gives no such
fields for S7comm or DNP3, so they are not compared here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.capture.files import ReplaySource
from agent.decoders.base import OtMessage
from agent.detectors.floods import FloodDetector
from agent.detectors.health import percentile
from agent.pipeline import Pipeline, PipelineConfig
from tests.corpus.ot_oracle import CORPUS, captures_with, tshark_fields

MIN_PAIRS = 20  # fewer pairs than this make no percentile worth comparing
CASES = {
    # protocol: (INVENTORY token, display filter, tshark field with the request-to-response time)
    "modbus": ("MODBUS", "modbus.response_time", "modbus.response_time"),
    "enip": ("ENIP", "enip.time", "enip.time"),
}


class _Latencies:
    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.by_frame: dict[int, list[float]] = {}

    def on_flow_end(self, flow: object, reason: str) -> None:
        return None

    def on_message(self, msg: OtMessage) -> None:
        if msg.protocol == self.protocol and msg.latency_s is not None:
            self.by_frame.setdefault(msg.pcap_cnt, []).append(msg.latency_s)


def our_latencies(path: Path, protocol: str) -> tuple[dict[int, list[float]], list[float]]:
    """Our paired latencies by response frame, and the flood detector's samples of the protocol."""
    detector = FloodDetector(None, lambda *_a: None)
    collector = _Latencies(protocol)
    pipeline = Pipeline(PipelineConfig(), consumers=[collector, detector])
    source = ReplaySource([str(path)])
    try:
        pipeline.run(source)
    finally:
        source.close()
    samples = [lat for loop in detector.loops.values() if loop.protocol == protocol for lat in loop.summary]
    return collector.by_frame, samples


def tshark_latencies(path: Path, display_filter: str, field: str) -> dict[int, float]:
    return {
        frame: float(row[0].split(",")[0])
        for frame, row in tshark_fields(path, display_filter, [field]).items()
    }


def _captures(protocol: str) -> list[Any]:
    token = CASES[protocol][0]
    return [
        pytest.param(protocol, p, id=f"{protocol}:{p.relative_to(CORPUS / 'pcaps')}")
        for p in captures_with(token)
    ]


@pytest.mark.parametrize(("protocol", "path"), [c for proto in CASES for c in _captures(proto)])
def test_latency_percentiles_agree_with_tshark(protocol: str, path: Path) -> None:
    _token, display_filter, field = CASES[protocol]
    theirs = tshark_latencies(path, display_filter, field)
    if len(theirs) < MIN_PAIRS:
        pytest.skip(f"tshark pairs only {len(theirs)} {protocol} responses here")
    by_frame, samples = our_latencies(path, protocol)
    assert sorted(samples) == sorted(lat for lats in by_frame.values() for lat in lats)
    ours = {frame: lats[0] for frame, lats in by_frame.items() if frame in theirs}
    missing = sorted(set(theirs) - set(ours))
    assert len(missing) <= 0.01 * len(theirs), f"response frames tshark pairs and we do not: {missing[:20]}"
    differ = [f for f in ours if abs(ours[f] - theirs[f]) > 0.001]
    assert len(differ) <= 0.01 * len(ours), f"frames whose latency differs by more than 1 ms: {differ[:20]}"
    for q in (50, 95, 99):
        mine, tshark = percentile(list(ours.values()), q), percentile(list(theirs.values()), q)
        assert abs(mine - tshark) <= 0.001, (q, mine, tshark)
