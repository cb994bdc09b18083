"""Cyclic I/O periods: CIP connections from their Forward Opens, GOOSE bounded by its time to live."""

from __future__ import annotations

from typing import Any

import pytest

from agent.decoders.base import REQUEST, RESPONSE, OtMessage
from agent.detectors import cip_connections
from agent.detectors.cip_connections import CipConnections
from agent.detectors.floods import FloodDetector
from agent.detectors.health import FORWARD_OPEN, OBSERVED, Cyclic
from agent.flows import Flow

SCANNER, ADAPTER = bytes([10, 2, 0, 11]), bytes([10, 2, 0, 31])
TRIAD = {"connection_serial": 0x1234, "originator_vendor_id": 0x005A, "originator_serial": 0xC0FFEE}


def forward_open_request(**changes: Any) -> dict[str, Any]:
    return {
        **TRIAD,
        "ot_connection_id": 0,  # the target chooses the O->T id
        "to_connection_id": 0x2000_0001,
        "ot_rpi_us": 15_000,
        "to_rpi_us": 15_000,
        "to_connection_type": "point_to_point",
        "trigger": "cyclic",
        **changes,
    }


def forward_open_reply(**changes: Any) -> dict[str, Any]:
    granted = {**TRIAD, "ot_connection_id": 0x1000_0042, "to_connection_id": 0x2000_0001,
               "ot_api_us": 16_000, "to_api_us": 16_000}  # fmt: skip
    return {**granted, **changes}


def test_the_reply_s_actual_packet_interval_wins_over_the_requested_one() -> None:
    table = CipConnections()
    table.on_request(SCANNER, ADAPTER, forward_open_request())
    # Before the reply the T->O id (the originator's choice) already has the requested interval.
    assert table.interval(ADAPTER, SCANNER, 0x2000_0001) == 0.015
    assert table.interval(SCANNER, ADAPTER, 0x1000_0042) is None
    table.on_reply(SCANNER, ADAPTER, forward_open_reply())
    assert table.interval(SCANNER, ADAPTER, 0x1000_0042) == 0.016  # O->T datagrams go to the adapter
    assert table.interval(ADAPTER, SCANNER, 0x2000_0001) == 0.016  # T->O ones come from it
    assert table.interval(SCANNER, bytes(4), 0x1000_0042) is None  # another target's id
    assert not table.pending


def test_a_reply_without_intervals_falls_back_to_the_request_and_change_of_state_is_not_a_period() -> None:
    table = CipConnections()
    table.on_request(SCANNER, ADAPTER, forward_open_request(trigger="change_of_state"))
    assert table.interval(ADAPTER, SCANNER, 0x2000_0001) is None
    table.on_reply(SCANNER, ADAPTER, forward_open_reply(ot_api_us=0, to_api_us=0))
    assert table.interval(SCANNER, ADAPTER, 0x1000_0042) == 0.015  # O->T: the request's RPI
    assert table.interval(ADAPTER, SCANNER, 0x2000_0001) is None  # T->O sends on change, RPI = heartbeat


def test_tables_are_bounded_and_count_what_they_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cip_connections, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(cip_connections, "MAX_PENDING", 2)
    table = CipConnections()
    for serial in range(3):
        table.on_request(
            SCANNER, ADAPTER, forward_open_request(connection_serial=serial, to_connection_id=serial)
        )
    assert len(table.pending) == 2 and table.pending_dropped == 1
    for serial in range(3, 6):
        table.on_reply(SCANNER, ADAPTER, forward_open_reply(connection_serial=serial, ot_connection_id=serial,
                                                             to_connection_id=100 + serial))  # fmt: skip
    assert len(table.intervals) == 4 and table.evicted == 5  # 3 T->O from requests + 6 from replies
    assert table.interval(ADAPTER, SCANNER, 105) == 0.016  # the newest stay


# ------------------------------------------------------------------------------- in the detector


def _flow(a: bytes, b: bytes, sport: int, dport: int, proto: int) -> Flow:
    return Flow((a, b, sport, dport, proto, ()), 1, 4, 100.0, 1, 0, 600.0)


def _msg(flow: Flow, ts: float, to_server: bool, direction: str, function: int, operation: str,
         fields: dict[str, Any], protocol: str = "enip", exception: bool = False) -> OtMessage:  # fmt: skip
    return OtMessage(ts, flow, 1, 0, protocol, to_server, direction, function, operation, fields,
                     exception=exception)  # fmt: skip


def _io(detector: FloodDetector, flow: Flow, start: float, intervals: list[float], connection_id: int,
        to_server: bool = True, first_seq: int = 1) -> float:  # fmt: skip
    t, seq = start, first_seq
    for step in [0.0, *intervals]:
        t += step
        fields = {"connection_id": connection_id, "sequence": seq, "data_length": 8}
        detector.on_message(_msg(flow, t, to_server, REQUEST, 0x00B1, "io", fields))
        seq += 1
    return t


def _stream(detector: FloodDetector, flow: Flow) -> Cyclic:
    (stream,) = detector.cyclic[flow].values()
    return stream


def test_class1_jitter_is_measured_against_the_forward_open_interval() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    explicit = _flow(SCANNER, ADAPTER, 50000, 44818, 6)
    request = {"service": 0x54, "forward_open": forward_open_request()}
    detector.on_message(_msg(explicit, 10.0, True, REQUEST, 0x54, "session", {"cip": request}))
    reply = {"service": 0x54, "status": 0, "forward_open": forward_open_reply()}
    detector.on_message(_msg(explicit, 10.002, False, RESPONSE, 0x54, "session", {"cip": reply}))
    io = _flow(SCANNER, ADAPTER, 2222, 2222, 17)
    # Every interval 0.5 ms longer than granted: the observed median would call that no jitter at all.
    _io(detector, io, 10.01, [0.0165] * 40, 0x1000_0042)
    stream = _stream(detector, io)
    assert (stream.period, stream.period_source) == (0.016, FORWARD_OPEN)
    assert stream.jitter() == pytest.approx(0.0005, abs=1e-9)
    assert detector.jitter_by_zone()[("none", "enip")] == pytest.approx(0.0005, abs=1e-9)


def test_without_a_forward_open_the_period_is_the_observed_median_and_gaps_count() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    io = _flow(SCANNER, ADAPTER, 2222, 2222, 17)
    end = _io(detector, io, 0.0, [0.0165] * 40, 0x1000_0042)
    stream = _stream(detector, io)
    assert (stream.period, stream.period_source) == (pytest.approx(0.0165), OBSERVED)
    assert stream.jitter() == pytest.approx(0.0, abs=1e-9)
    detector.on_message(_msg(io, end + 3 * 0.0165, True, REQUEST, 0x00B1, "io",
                             {"connection_id": 0x1000_0042, "sequence": 44}))  # fmt: skip
    assert stream.gaps == 2  # 42 and 43 never came


def test_a_forward_open_seen_later_replaces_the_observed_period() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    io = _flow(ADAPTER, SCANNER, 2222, 2222, 17)  # the adapter spoke first: T->O is "to server" here
    end = _io(detector, io, 0.0, [0.0165] * 30, 0x2000_0001)
    assert _stream(detector, io).period_source == OBSERVED
    explicit = _flow(SCANNER, ADAPTER, 50001, 44818, 6)
    reply = {"service": 0x54, "status": 0, "forward_open": forward_open_reply(to_api_us=20_000)}
    detector.on_message(_msg(explicit, end, False, RESPONSE, 0x54, "session", {"cip": reply}))
    _io(detector, io, end + 0.02, [0.02] * 5, 0x2000_0001, first_seq=100)
    assert (_stream(detector, io).period, _stream(detector, io).period_source) == (0.02, FORWARD_OPEN)


def test_a_refused_forward_open_teaches_nothing() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    explicit = _flow(SCANNER, ADAPTER, 50000, 44818, 6)
    reply = {"service": 0x54, "status": 1, "forward_open": forward_open_reply()}
    detector.on_message(_msg(explicit, 1.0, False, RESPONSE, 0x54, "session", {"cip": reply}, exception=True))
    assert not detector.cip.intervals


def test_a_stream_s_jitter_stays_visible_after_it_ended() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    io = _flow(SCANNER, ADAPTER, 2222, 2222, 17)
    _io(detector, io, 0.0, [0.010, 0.011] * 20, 7)
    before = detector.jitter_by_zone()[("none", "enip")]
    assert before == pytest.approx(0.0005, abs=1e-9)
    detector.on_flow_end(io, "timeout")
    assert not detector.cyclic and detector.jitter_by_zone() == {("none", "enip"): before}


# ------------------------------------------------------------------------------------------- GOOSE


def _goose(stream: Cyclic, t: float, tal_ms: int, state_change: bool = False, missing: int = 0) -> None:
    stream.on_frame(t, None, missing, state_change, tal_ms / 1000)


def test_goose_events_and_their_fast_repetitions_are_not_jitter() -> None:
    stream = Cyclic("bay", "goose", bursty=True)
    t = 0.0
    for _ in range(25):  # heartbeat 1 s, 2 s allowed to live
        _goose(stream, t, 2000)
        t += 1.0
    assert stream.period == 1.0 and stream.jitter() == 0.0
    _goose(stream, t - 0.6, 20, state_change=True)  # an event, then 2, 4, 8 ... ms repetitions
    for step in (0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256):
        t_rep = stream.last_ts + step
        _goose(stream, t_rep, 2000)
    _goose(stream, stream.last_ts + 1.0, 2000)
    assert stream.jitter() == 0.0


def test_goose_time_allowed_to_live_bounds_the_expected_interval() -> None:
    stream = Cyclic("bay", "goose", bursty=True)
    for i in range(25):  # a publisher sending every 2 s while promising 1.5 s
        _goose(stream, 2.0 * i, 1500)
    assert stream.period == 2.0 and stream.expected() == 1.5
    assert stream.jitter() == pytest.approx(0.5)  # every message comes 0.5 s after the promise expired
    _goose(stream, 50.2, 1500, missing=2)
    assert stream.gaps == 2


def test_goose_losses_counted_by_the_decoder_reach_the_gap_counter() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    link = Flow((b"\x01" * 6, b"\x02" * 6, 0, 0, 0x88B8, ()), 1, 4, 0.0, 0, 0, 600.0)
    for i, extra in enumerate([{}, {"sq_gap": 0}, {"sq_gap": 3}, {"state_change": True, "st_gap": 1}]):
        fields = {"appid": 1, "time_allowed_to_live": 2000, **extra}
        detector.on_message(_msg(link, float(i), True, REQUEST, 1, "io", fields, protocol="goose"))
    (stream,) = detector.cyclic[link].values()
    assert stream.bursty and stream.gaps == 4 and stream.bound == 2.0


def test_profinet_frame_ids_are_separate_streams_and_missed_cycles_are_gaps() -> None:
    detector = FloodDetector(None, lambda *_a: None)
    link = Flow((b"\x01" * 6, b"\x02" * 6, 0, 0, 0x8892, ()), 1, 4, 0.0, 0, 0, 600.0)
    for i in range(30):
        for frame_id in (0x8001, 0x8002):
            gap = 2 if (frame_id, i) == (0x8002, 20) else 0
            fields = {"frame_id": frame_id, "cycle_counter": i * 32, "cycle_gap": gap}
            detector.on_message(
                _msg(link, i * 0.001, True, REQUEST, frame_id, "io", fields, protocol="profinet")
            )
    streams = detector.cyclic[link]
    assert len(streams) == 2
    assert sorted(s.gaps for s in streams.values()) == [0, 2]
    assert all(s.period == pytest.approx(0.001) for s in streams.values())
