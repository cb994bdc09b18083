"""Schedules proposed by ``policy learn`` from when things were seen.

Only sporadic, human-driven activity gets a window: engineering operations (program, upload, mode,
firmware, config: DOMAIN.md's always-audited classes) and interactive remote-access sessions (RDP,
VNC, SSH, Telnet). Polling, writes from HMIs and I/O run around the clock in a plant with shifts,
so a capture that happened to see them only in the morning is no evidence that the afternoon is
forbidden; they never get one.

A window covers every time of day the activity was seen (the shortest arc of the 24-hour clock
holding all of it, so a session at 23:50 and another at 00:10 give a window across midnight), widened
by a margin and rounded outward to the hour, because one day's observation is a sample, not the rule.
A window that would span most of the day is no restriction worth writing: none is proposed. Weekdays
are restricted only when the captures show traffic on every day of the week; otherwise their absence
says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agent.policy.model import DAYS

MARGIN_MINUTES = 60
MAX_WINDOW_MINUTES = 20 * 60
MAX_SAMPLES = 20_000  # distinct minutes kept per rule; more and the activity is not sporadic
SESSION_STEP_S = 600  # a session is sampled every 10 minutes from its first to its last packet
MAX_COVERAGE_HOURS = 24 * 400
DAY = 24 * 60


@dataclass(slots=True)
class TimeSamples:
    """Distinct minutes (since the epoch, UTC) at which something was seen; bounded."""

    minutes: set[int] = field(default_factory=set)
    overflow: bool = False
    count: int = 0  # occurrences, not distinct minutes

    def add(self, ts: float) -> None:
        self.count += 1
        if self.overflow:
            return
        self.minutes.add(int(ts // 60))
        if len(self.minutes) > MAX_SAMPLES:
            self.overflow = True
            self.minutes.clear()

    def add_span(self, first: float, last: float) -> None:
        """A session from ``first`` to ``last``: the engine may judge it at any moment in between."""
        if last - first >= 7 * 86400:
            self.count += 1
            self.overflow = True  # open for a week: around the clock by any measure
            self.minutes.clear()
            return
        ts = first
        while ts < last:
            self.minutes.add(int(ts // 60))
            ts += SESSION_STEP_S
        self.add(last)


@dataclass(slots=True)
class Coverage:
    """The hours (since the epoch, UTC) in which the captures carried any traffic; bounded."""

    hours: set[int] = field(default_factory=set)

    def add_span(self, first: float, last: float) -> None:
        hour, end = int(first // 3600), int(last // 3600)
        while hour <= end and len(self.hours) < MAX_COVERAGE_HOURS:
            self.hours.add(hour)
            hour += 1


@dataclass(frozen=True, slots=True)
class Window:
    days: tuple[int, ...] | None  # None: every day
    start: int  # minutes after local midnight
    end: int  # exclusive, 1..1440; end <= start wraps past midnight
    timezone: str
    seen_first: int  # the observed arc, minutes after local midnight
    seen_last: int
    seen_days: tuple[int, ...]  # weekdays of the windows the activity fell in
    covered_days: tuple[int, ...]  # weekdays on which the captures carried any traffic

    def yaml(self) -> str:
        """The schedule as a YAML flow mapping (docs/policy.md, flow rules)."""
        days = f"days: [{', '.join(DAYS[d] for d in self.days)}], " if self.days is not None else ""
        return f'{{{days}hours: "{_hhmm(self.start)}-{_hhmm(self.end)}", timezone: {self.timezone}}}'

    def evidence(self) -> list[str]:
        """Why this window: what was seen when, and what the captures could not tell."""
        seen = ", ".join(DAYS[d] for d in self.seen_days)
        lines = [
            f"seen only {_hhmm(self.seen_first)}-{_hhmm((self.seen_last + 1) % DAY)} {self.timezone} "
            f"on {seen}; the window is that +-{MARGIN_MINUTES} min, to the hour"
        ]
        if self.days is None:
            covered = ", ".join(DAYS[d] for d in self.covered_days)
            lines.append(f"any weekday: the captures only cover {covered}, so weekdays were not learned")
        return lines


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def propose(samples: TimeSamples, coverage: Coverage, timezone: str) -> Window | None:
    """The window to propose for activity seen at ``samples``, or None when the evidence does not
    support one (seen around the clock, too often to be sporadic, or not at all)."""
    if samples.overflow or not samples.minutes:
        return None
    tz = ZoneInfo(timezone)
    local = [datetime.fromtimestamp(m * 60, UTC).astimezone(tz) for m in samples.minutes]
    of_day = sorted({t.hour * 60 + t.minute for t in local})
    # The shortest arc holding every minute leaves out the largest gap between neighbours.
    gaps = [(of_day[i + 1] - of_day[i], i + 1) for i in range(len(of_day) - 1)]
    gaps.append((of_day[0] + DAY - of_day[-1], 0))
    _gap, first_index = max(gaps, key=lambda g: (g[0], -g[1]))
    seen_first = of_day[first_index]
    seen_last = of_day[first_index - 1]  # index -1 wraps to the last minute when first_index is 0
    seen_length = (seen_last - seen_first) % DAY + 1
    start = (seen_first - MARGIN_MINUTES) // 60 * 60  # may fall before midnight: wraps below
    end = -(-(seen_first + seen_length + MARGIN_MINUTES) // 60) * 60
    if end - start > MAX_WINDOW_MINUTES:
        return None
    start_mod = start % DAY
    end_mod = end % DAY or DAY
    seen_days = sorted(
        {(t - timedelta(minutes=(t.hour * 60 + t.minute - start_mod) % DAY)).weekday() for t in local}
    )
    covered = sorted({datetime.fromtimestamp(h * 3600, UTC).astimezone(tz).weekday() for h in coverage.hours})
    days = tuple(seen_days) if len(covered) == 7 else None
    return Window(days, start_mod, end_mod, timezone, seen_first, seen_last, tuple(seen_days), tuple(covered))
