"""The flood detector's pieces without captures: behavioural bulk, bins on packet time, policy reload."""

from __future__ import annotations

from collections import deque
from typing import Any

from agent.detectors.floods import FloodDetector
from agent.detectors.load import Tracked, looks_like_bulk
from agent.flows import Flow
from agent.policy.engine import CompiledPolicy, PolicyDetector
from agent.policy.loader import load_policy_text

POLICY = """\
version: 1
system: {name: t}
zones:
  - id: office
    networks: [10.1.0.0/24]
  - id: cell
    purdue_level: 1
    networks: [10.2.0.0/24]
    link: {capacity: CAPACITY, bulk_budget: 50%}
"""


def compiled(capacity: str = "10 Mbit/s") -> CompiledPolicy:
    policy, problems = load_policy_text(POLICY.replace("CAPACITY", capacity))
    assert policy is not None, problems
    return CompiledPolicy(policy)


def flow(src: str, dst: str, dport: int) -> Flow:
    key = (bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))), 40000, dport, 6, ())
    return Flow(key, 1, 4, 100.0, 1, 0, 600.0)


def tracked(recent: list[tuple[int, int, int, int]], age: float) -> Tracked:
    f = flow("10.1.0.5", "10.2.0.5", 9999)
    f.first_ts = 100.0 - age
    return Tracked(f, (), (), "", False, False, "office", "cell", recent=deque(recent))


def test_behavioural_bulk_is_long_one_way_fast_and_in_big_segments() -> None:
    fast = [(150_000, 2_000, 100, 50)] * 10  # 12 Mbit/s one way in 1500-byte segments
    assert looks_like_bulk(tracked(fast, 5.0), 100.0, 10)
    assert not looks_like_bulk(tracked(fast, 1.0), 100.0, 10)  # too young
    assert not looks_like_bulk(tracked([(150_000, 150_000, 100, 100)] * 10, 5.0), 100.0, 10)  # both ways
    assert not looks_like_bulk(tracked([(150_000, 0, 1500, 0)] * 10, 5.0), 100.0, 10)  # 100-byte segments
    assert not looks_like_bulk(tracked([(10_000, 0, 7, 0)] * 10, 5.0), 100.0, 10)  # 0.8 Mbit/s


def _detector(capacity: str = "10 Mbit/s") -> tuple[FloodDetector, PolicyDetector, list[Any]]:
    events: list[Any] = []
    policy = PolicyDetector(compiled(capacity), lambda *a: None)
    detector = FloodDetector(policy, lambda *a: events.append(a))
    return detector, policy, events


def test_bins_hold_the_bytes_of_their_packet_time_and_overload_raises() -> None:
    detector, policy, events = _detector()
    smb = flow("10.1.0.5", "10.2.0.5", 445)
    smb.app_proto = "smb"  # the flow table's port guess
    policy._judge(smb, (None, None), 100.0)
    detector.tick(100.0)
    detector.on_flow_start(smb)
    assert smb in detector.tracked
    scope = detector.zone_scopes[("cell", "in")]
    for i in range(30):  # 100 ms bins; 100 kB each = 8 Mbit/s into the cell, budget 5 Mbit/s
        t = 100.0 + i * 0.1 + 0.05
        detector.tick(t)
        smb.bytes_toserver += 100_000
        smb.last_ts = t
    detector.tick(103.01)  # the bin of the last packet (102.9-103.0) closes
    assert len(scope.bins) == 30 and {b[0] for b in scope.bins} == {100_000}
    assert all(b[1] == b[0] for b in scope.bins)  # SMB is a backup carrier: all of it is bulk
    rules = [e[5]["alert"]["rule"] for e in events]
    assert rules.count("bulk_over_budget") == 1 and "bulk_into_control_zone" in rules


def test_bulk_leaving_a_control_zone_is_an_incident_that_says_so() -> None:
    detector, policy, events = _detector()
    backup = flow("10.2.0.5", "10.1.0.5", 445)  # a server in the cell sends its backup out
    backup.app_proto = "smb"
    policy._judge(backup, (None, None), 100.0)
    detector.tick(100.0)
    detector.on_flow_start(backup)
    for i in range(30):
        t = 100.0 + i * 0.1 + 0.05
        detector.tick(t)
        backup.bytes_toserver += 100_000
        backup.last_ts = t
    detector.tick(103.01)
    raised = [e[5]["alert"] for e in events if e[5]["alert"]["rule"] == "bulk_into_control_zone"]
    assert len(raised) == 1
    assert raised[0]["signature"].endswith("crosses out of control zone cell"), raised[0]["signature"]


def test_a_reloaded_policy_rebuilds_the_links() -> None:
    detector, policy, _events = _detector()
    assert detector.zone_scopes[("cell", "in")].capacity_bps == 10e6
    detector.tick(100.0)
    policy.swap(compiled("1 Gbit/s"))
    detector.tick(100.05)
    assert detector.zone_scopes[("cell", "in")].capacity_bps == 1e9


def test_busy_exceptions() -> None:
    from agent.detectors.floods import _busy

    assert _busy("modbus", {"exception_code": 6}) and _busy("modbus", {"exception_code": 0x0B})
    assert not _busy("modbus", {"exception_code": 2})  # illegal address: the request was wrong
    assert _busy("enip", {"cip": {"service": 0x4C, "status": 1, "ext_status": [0x0203]}})
    assert not _busy("enip", {"cip": {"service": 0x4C, "status": 1, "ext_status": [0x0100]}})
    assert not _busy("dnp3", {})
