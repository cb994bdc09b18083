"""Schedules on flows: a flow allowed only by scheduled rules without operations is judged when it
opens and followed after, by its last packet's time, until it carries packets outside its windows."""

from dataclasses import replace
from datetime import UTC, datetime

from agent.flows import FlowConfig
from agent.pipeline import EVENTS_DEFAULT, Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.model import Conduit, Endpoint, FlowRule, Schedule
from tests import factory
from tests.policy.test_engine import EWS, HMI, PLC, READ, WRITE, make_policy, modbus, record_readers, run

__all__ = ["record_readers"]  # the fixture running every test with and without a full record reader

WEEKDAYS = frozenset(range(5))
RDP_REQUEST = bytes.fromhex("030000130ee000000000000100080003000000")  # X.224 CR + negotiation request
RDP_CONFIRM = bytes.fromhex("030000130ed000001234000200080002000000")
ENCRYPTED = bytes.fromhex("1703030010") + bytes(range(16))  # what follows: a TLS record


def at(hour: int, minute: int, second: float = 0.0) -> float:
    """Tuesday 5 March 2024, UTC."""
    return datetime(2024, 3, 5, hour, minute, tzinfo=UTC).timestamp() + second


def remote_desktop(until_minute: int = 19 * 60, rule_id: str = "remote-desktop",
                   from_minute: int = 7 * 60) -> CompiledPolicy:  # fmt: skip
    """The test policy plus RDP from the engineering workstation to the HMI, Mon-Fri ``from_minute``
    (07:00) to ``until_minute``, with no operation list: the schedule governs the flow itself."""
    policy = make_policy().policy
    rule = FlowRule(rule_id, Endpoint("engineering", "ews-1"), Endpoint("supervisory", "hmi-1"),
                    frozenset({"rdp"}), "rdp", ports=frozenset({3389}),
                    schedule=Schedule(WEEKDAYS, from_minute, until_minute, "UTC"))  # fmt: skip
    conduit = Conduit("ews-scada", ("engineering", "supervisory"), flows=(rule,))
    return CompiledPolicy(replace(policy, conduits=(*policy.conduits, conduit)))


def session(first: float, last: float, step: float = 60.0, sport: int = 50000) -> list[tuple[float, object]]:
    """An RDP session from the workstation to the HMI, opened at ``first``, then a client record every
    ``step`` seconds until ``last`` (the last packet): (time, packet) pairs."""
    segments = [(True, RDP_REQUEST), (False, RDP_CONFIRM)]
    sends = []
    ts = first + 1.0
    while ts < last:
        sends.append(ts)
        ts += step
    sends.append(last)
    segments += [(True, ENCRYPTED)] * (len(sends) - 1)
    packets = factory.tcp_stream(segments, client=EWS, server=HMI, sport=sport, dport=3389)
    times = [first, first + 0.01, first + 0.02, first + 0.5, *sends]
    return list(zip(times, packets, strict=True))


def polling(first: float, last: float, step: float = 30.0) -> list[tuple[float, object]]:
    """Compliant HMI polling on a connection of its own, which keeps packet time going."""
    count = int((last - first) // step)
    packets = modbus(HMI, PLC, *[READ] * count)
    return [(first + i * step / 2, p) for i, p in enumerate(packets)]


def replay(*streams: list[tuple[float, object]], policy: CompiledPolicy | None = None,
           reload: tuple[float, CompiledPolicy] | None = None) -> tuple[list[dict], Pipeline]:  # fmt: skip
    """Replay the streams merged by time; ``reload``: swap in a policy before the first packet at or
    after that time."""
    merged = sorted((pair for stream in streams for pair in stream), key=lambda pair: pair[0])
    times = [ts for ts, _ in merged]
    swap = None if reload is None else (next(i for i, ts in enumerate(times) if ts >= reload[0]), reload[1])
    alerts, _, pipeline = run([p for _, p in merged], policy=policy or remote_desktop(), times=times,
                              reload=swap)  # fmt: skip
    return alerts, pipeline


def summary(alerts: list[dict]) -> list[tuple[str, str, int]]:
    return [(a["alert"]["rule"], a["alert"]["first_seen"][11:19], a["alert"]["count"]) for a in alerts]


def test_a_session_still_sending_after_its_window_is_outside_schedule_once() -> None:
    """Opened at 18:58 and sending until 19:38 under a 07:00-19:00 rule: one alert, for the first
    record after 19:00; opened at 19:05, the alert is the one for a flow opened out of hours."""
    late, pipeline = replay(session(at(18, 58), at(19, 38)))
    assert summary(late) == [("outside_schedule", "19:00:01", 1)]
    (alert,) = late
    assert alert["alert"]["signature"] == (
        "rdp/3389 from ews-1 10.10.40.5 (engineering) to hmi-1 10.10.20.21 (supervisory) was still open "
        "outside the window of rule remote-desktop (mon,tue,wed,thu,fri 07:00-19:00 UTC)"
    )
    assert alert["src_ip"] == EWS and alert["dest_port"] == 3389 and alert["pcap_cnt"] == 4 + 3
    assert pipeline.policy is not None
    stats = pipeline.policy.stats()
    assert stats["violations"] == {"outside_schedule": 1} and stats["scheduled_flows_followed"] == 0
    opened_late, _ = replay(session(at(19, 5), at(19, 38)))
    assert summary(opened_late) == [("outside_schedule", "19:05:00", 1)]
    assert "opened rdp/3389 to hmi-1" in opened_late[0]["alert"]["signature"]
    same = ("signature_id", "rule", "category", "severity", "metadata")
    assert {k: alert["alert"][k] for k in same} == {k: opened_late[0]["alert"][k] for k in same}
    assert alert["policy"] == opened_late[0]["policy"] == {
        "src_zone": "engineering", "dest_zone": "supervisory", "conduit": "ews-scada",
        "rule": "remote-desktop", "operation": None, "sl_t": None, "src_asset": "ews-1",
        "dest_asset": "hmi-1",
    }  # fmt: skip


def test_a_session_silent_after_its_window_raises_nothing() -> None:
    """The last record at 18:59:30: the session stays open (until it times out) but carries nothing
    after 19:00, while other traffic keeps packet time going until 19:20."""
    alerts, pipeline = replay(session(at(18, 58), at(18, 59, 30)), polling(at(18, 58), at(19, 20)))
    assert alerts == []
    assert pipeline.flows.timed_out == 1  # the session ended by its timeout, judged then too


def test_a_session_ending_after_its_window_between_two_ticks_is_judged_at_its_end() -> None:
    """Its last packets, at 19:00:00.0 and 19:00:00.2, come after the last tick (at 19:00:00.0, which
    saw the session's packet of 18:59:59): the end of the replay judges it, by the last one."""
    alerts, _ = replay(session(at(18, 59, 58), at(19, 0, 0.2), step=1.0))
    assert summary(alerts) == [("outside_schedule", "19:00:00", 1)]
    assert alerts[0]["pcap_cnt"] == 7
    assert "was still open outside the window" in alerts[0]["alert"]["signature"]


def test_a_reload_judges_followed_sessions_under_the_new_windows() -> None:
    # Reloaded at 18:59:30 with the window extended to 20:00: nothing.
    alerts, _ = replay(session(at(18, 58), at(19, 38)), reload=(at(18, 59, 30), remote_desktop(20 * 60)))
    assert alerts == []
    # ... extended to 19:30 only, under another rule id: the alert names the new rule, for 19:30.
    alerts, pipeline = replay(
        session(at(18, 58), at(19, 38)), reload=(at(18, 59, 30), remote_desktop(19 * 60 + 30, "rdp-late"))
    )
    assert summary(alerts) == [("outside_schedule", "19:30:01", 1)]
    assert alerts[0]["policy"]["rule"] == "rdp-late"
    signature = alerts[0]["alert"]["signature"]
    assert "still open outside the window of rule rdp-late (mon,tue,wed,thu,fri 07:00-19:30 UTC)" in signature
    assert pipeline.policy is not None and pipeline.policy.generation == 2
    # ... moved to the evening: the session, in its old window, is now before the new one.
    evening = remote_desktop(22 * 60, "rdp-evening", from_minute=20 * 60)
    alerts, _ = replay(session(at(18, 58), at(19, 38)), reload=(at(18, 59, 30), evening))
    assert summary(alerts) == [("outside_schedule", "18:59:01", 1)]  # its last packet before the reload
    assert (
        "was still open outside the window of rule rdp-evening (mon,tue,wed,thu,fri 20:00-22:00 UTC)"
        in (alerts[0]["alert"]["signature"])
    )


def test_followed_sessions_cut_by_the_active_timeout_are_followed_in_their_continuation() -> None:
    """Records cut every 2 minutes: the record open at 19:00 is a continuation of the one that opened."""
    events: list[dict] = []
    config = PipelineConfig(events=EVENTS_DEFAULT, flows=FlowConfig(active_timeout=120.0))
    pipeline = Pipeline(config, policy=remote_desktop())
    assert pipeline.policy is not None
    pipeline.policy.emit = lambda kind, ts, flow, cnt, source, fields: events.append(fields)
    stream = session(at(18, 53), at(19, 38))
    pipeline.run(factory.ListSource([p for _, p in stream], times=[ts for ts, _ in stream]))
    assert pipeline.flows.created > 5  # the session was cut into records
    assert [e["alert"]["rule"] for e in events] == ["outside_schedule"]
    assert "still open outside the window" in events[0]["alert"]["signature"]


def test_the_followed_table_is_bounded() -> None:
    """Room for one session: following the second one drops the first, which is then not judged."""
    events: list[dict] = []
    pipeline = Pipeline(PipelineConfig(events=EVENTS_DEFAULT), policy=remote_desktop())
    detector = pipeline.policy
    assert detector is not None
    detector.max_followed = 1
    detector.emit = lambda kind, ts, flow, cnt, source, fields: events.append(fields)
    stream = sorted(session(at(18, 58), at(19, 38)) + session(at(18, 58, 10), at(19, 38), sport=50001),
                    key=lambda pair: pair[0])  # fmt: skip
    pipeline.run(factory.ListSource([p for _, p in stream], times=[ts for ts, _ in stream]))
    assert [(e["alert"]["rule"], e["policy"]["rule"]) for e in events] == [
        ("outside_schedule", "remote-desktop")
    ]
    stats = detector.stats()
    assert stats["scheduled_flow_evictions"] == 1 and stats["scheduled_flows_followed"] == 0


def test_a_flow_also_allowed_by_a_rule_with_operations_is_not_judged_by_the_schedule() -> None:
    """The workstation may do anything to the cell on weekdays 07:00-19:00 (a scheduled rule without
    operations) and read at any time (a rule with an operation list): the schedule governs the flow
    only when such scheduled rules alone allow it, so a read-only connection at 20:00 raises nothing,
    whichever rule comes first; a write in it is the scheduled rule's, outside its window."""
    base = make_policy().policy
    modbus_only = frozenset({"modbus"})
    anything = FlowRule("maintenance", Endpoint("engineering", "ews-1"), Endpoint("cell"), modbus_only,
                        "modbus", schedule=Schedule(WEEKDAYS, 7 * 60, 19 * 60, "UTC"))  # fmt: skip
    reads = FlowRule("reads", Endpoint("engineering", "ews-1"), Endpoint("cell"), modbus_only, "modbus",
                     operations=frozenset({"read"}))  # fmt: skip
    for flows in ((anything, reads), (reads, anything)):
        conduit = Conduit("ews-cell", ("engineering", "cell"), flows=flows)
        policy = CompiledPolicy(replace(base, conduits=(base.conduits[0], conduit)))
        alerts, _, _ = run(modbus(EWS, PLC, READ, READ), start=at(20, 0), policy=policy)
        assert alerts == []
        alerts, _, _ = run(modbus(EWS, PLC, READ, WRITE), start=at(20, 0), policy=policy)
        assert [(a["alert"]["rule"], a["policy"]["rule"], a["policy"]["operation"]) for a in alerts] == [
            ("outside_schedule", "maintenance", "write")
        ]
    # Without the read rule, the same connection is a flow opened outside the window.
    conduit = Conduit("ews-cell", ("engineering", "cell"), flows=(anything,))
    policy = CompiledPolicy(replace(base, conduits=(base.conduits[0], conduit)))
    alerts, _, _ = run(modbus(EWS, PLC, READ, READ), start=at(20, 0), policy=policy)
    assert (alerts[0]["alert"]["rule"], alerts[0]["policy"]["operation"]) == ("outside_schedule", None)
    assert "opened modbus/502 to plc-1" in alerts[0]["alert"]["signature"]
