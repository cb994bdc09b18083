"""Schedules proposed from when activity was seen (agent.policy.schedules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agent.policy.engine import CompiledPolicy
from agent.policy.loader import load_policy_bytes
from agent.policy.schedules import Coverage, TimeSamples, propose

TUESDAY = datetime(2024, 6, 11, tzinfo=UTC)


def at(day: int, hh: int, mm: int) -> float:
    return (TUESDAY + timedelta(days=day, hours=hh, minutes=mm)).timestamp()


def samples(*times: float) -> TimeSamples:
    s = TimeSamples()
    for t in times:
        s.add(t)
    return s


def one_day() -> Coverage:
    c = Coverage()
    c.add_span(at(0, 0, 0), at(0, 23, 0))
    return c


def a_week() -> Coverage:
    c = Coverage()
    c.add_span(at(0, 0, 0), at(7, 0, 0))
    return c


def test_a_morning_change_gets_a_rounded_window_with_margin() -> None:
    window = propose(samples(at(0, 10, 15), at(0, 10, 40)), one_day(), "UTC")
    assert window is not None
    assert window.yaml() == '{hours: "09:00-12:00", timezone: UTC}'
    assert window.evidence()[0].startswith("seen only 10:15-10:41 UTC on tue")


def test_the_window_is_written_in_the_plants_time_zone() -> None:
    window = propose(samples(at(0, 8, 15)), one_day(), "Europe/Berlin")  # 10:15 CEST
    assert window is not None and window.yaml() == '{hours: "09:00-12:00", timezone: Europe/Berlin}'


def test_activity_around_midnight_gives_a_window_across_it() -> None:
    window = propose(samples(at(0, 23, 50), at(1, 0, 10), at(1, 23, 55)), one_day(), "UTC")
    assert window is not None and window.yaml() == '{hours: "22:00-02:00", timezone: UTC}'


def test_activity_around_the_clock_gets_no_window() -> None:
    assert propose(samples(*(at(0, h, 0) for h in range(0, 24, 3))), one_day(), "UTC") is None
    assert propose(TimeSamples(), one_day(), "UTC") is None


def test_weekdays_are_learned_only_from_a_capture_covering_the_whole_week() -> None:
    seen = samples(at(0, 10, 0), at(2, 11, 0))  # Tuesday and Thursday
    window = propose(seen, a_week(), "UTC")
    assert window is not None and window.yaml() == '{days: [tue, thu], hours: "09:00-13:00", timezone: UTC}'
    assert window.days == (1, 3) and len(window.evidence()) == 1
    window = propose(seen, one_day(), "UTC")
    assert window is not None and window.days is None and "weekdays were not learned" in window.evidence()[1]


def test_a_wrapping_window_counts_the_small_hours_as_the_evening_before() -> None:
    # Monday 23:30 and Tuesday 00:20 are one evening's work: the window belongs to Monday.
    window = propose(samples(at(-1, 23, 30), at(0, 0, 20)), a_week(), "UTC")
    assert window is not None and window.days == (0,)
    assert window.yaml() == '{days: [mon], hours: "22:00-02:00", timezone: UTC}'


def test_too_many_distinct_minutes_is_not_sporadic() -> None:
    s = TimeSamples()
    s.add_span(at(0, 0, 0), at(8, 0, 0))
    assert s.overflow and propose(s, a_week(), "UTC") is None


@given(
    st.lists(st.floats(min_value=at(-400, 0, 0), max_value=at(400, 0, 0)), min_size=1, max_size=30),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
    st.booleans(),
)
def test_a_proposed_window_admits_every_time_it_was_learned_from(
    times: list[float], timezone: str, week: bool
) -> None:
    seen = samples(*times)
    coverage = a_week() if week else one_day()
    window = propose(seen, coverage, timezone)
    if window is None:
        return
    text = (
        "version: 1\nsystem: {name: t}\nzones:\n"
        "  - {id: a, networks: [10.0.0.0/24]}\n  - {id: b, networks: [10.0.1.0/24]}\n"
        "conduits:\n  - id: ab\n    zones: [a, b]\n    flows:\n"
        f"      - {{id: r, initiator: a, responder: b, protocol: modbus, schedule: {window.yaml()}}}\n"
    )
    policy, problems = load_policy_bytes(text.encode(), "p.yaml")
    assert policy is not None, [str(p) for p in problems]
    schedule = policy.conduits[0].flows[0].schedule
    assert schedule is not None
    compiled = CompiledPolicy(policy)
    for t in times:
        assert compiled.in_schedule(schedule, t), (t, window.yaml())
