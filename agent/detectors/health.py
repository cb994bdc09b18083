"""Control-loop health: request/response latency and polling jitter per device pair, with a baseline.

A *loop* is one client polling one server over one protocol (an HMI reading a PLC). Its responses
give latency samples (the decoders pair them with their requests); its requests give the polling
interval. The baseline is learned from windows judged healthy, so a slow drift is caught once it
leaves the band it was learned in, and a degraded period never teaches the baseline that it is
normal. Everything is in packet time.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from agent.flows import Flow

WINDOW_S = 1.0  # latency and jitter are judged over the last second ...
JUDGE_EVERY_S = 0.5  # ... twice a second
MIN_WINDOW_SAMPLES = 3
MIN_BASELINE_SAMPLES = 20
BASELINE_SAMPLES = 600
SUMMARY_SAMPLES = 10_000
MIN_EXCESS_S = 0.005  # a rise smaller than this is noise for any control loop
# Samples teach the baseline only once they are this old and no degradation was seen meanwhile, so
# the onset of a degradation (before it is judged one) never raises the bar it is judged against.
LEARN_LAG_S = 2.0
BASELINE_REFRESH_S = 5.0  # the baseline's percentiles are recomputed at most this often (a sort each)
LATE_FACTOR = 10.0  # a request unanswered for 10x the baseline p99 (at least 1 s) is late
RAISE_AFTER = 2  # consecutive degraded judgements (1 s) before a loop counts as degraded: no flapping
LATE_MIN_S = 1.0
MAX_PENDING = 256
# TCP retransmissions on a loop's flow (agent.detectors.tcp_health) against the rate learned while the
# loop was healthy: degraded when the last second holds at least RETRANS_MIN of them and RETRANS_FACTOR
# times what the baseline rate predicts. Each one is a control message that came at least one
# retransmission timeout (~200 ms) late, so a clean network needs only two in a second.
RETRANS_MIN = 2
RETRANS_FACTOR = 4.0
RETRANS_LEARN_S = 10.0  # healthy time to learn from before retransmissions are judged at all
RETRANS_BASE_S = 600.0  # the baseline rate covers about the last ten minutes of healthy time

# Histogram buckets of conduitwatch_request_latency_seconds (CONTRACTS.md: 1 ms .. 5 s).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value


@dataclass(slots=True)
class Loop:
    """One client -> server control conversation over one protocol (may span several flows)."""

    client: bytes
    server: bytes
    protocol: str
    zone: str  # the server's zone ("none" outside the policy)
    client_zone: str
    conduit: str | None
    flow: Flow
    # The window, the latencies not yet learned and the intervals likewise are each two parallel lists
    # (when, value) in arrival order: judging moves and drops them a slice at a time (C loops) where
    # deques of tuples were popped one entry at a time.
    samples: list[float] = field(default_factory=list)  # latencies in the window ...
    sample_times: list[float] = field(default_factory=list)  # ... and when their responses came
    baseline: deque[float] = field(default_factory=lambda: deque(maxlen=BASELINE_SAMPLES))
    summary: deque[float] = field(default_factory=lambda: deque(maxlen=SUMMARY_SAMPLES))
    last_request: float = -1.0
    last_response: float = -1.0
    intervals: list[float] = field(default_factory=list)  # polling intervals in the window ...
    interval_times: list[float] = field(default_factory=list)  # ... and when the requests ending them came
    base_intervals: deque[float] = field(default_factory=lambda: deque(maxlen=BASELINE_SAMPLES))
    # request pcap_cnt -> (ts, function); ordered by age (an OrderedDict: its oldest entry is found in O(1)
    # however many have been deleted before it, which a dict's is not)
    pending: OrderedDict[int, tuple[float, int]] = field(default_factory=OrderedDict)
    # Functions whose requests have been answered here: only those count as unanswered when a response
    # never comes (a DNP3 confirm or a Modbus broadcast is never answered, by design).
    answered: set[int] = field(default_factory=set)
    late: deque[float] = field(default_factory=deque)  # when requests went unanswered too long
    busy: deque[float] = field(default_factory=deque)  # "busy" / "target did not respond" exceptions
    unanswered: int = 0
    unanswered_reported: int = 0  # the part of ``unanswered`` already in the zone's counter
    exceptions: int = 0
    to_learn: list[float] = field(default_factory=list)  # latencies not yet in the baseline
    to_learn_times: list[float] = field(default_factory=list)
    to_learn_intervals: list[float] = field(default_factory=list)
    to_learn_interval_times: list[float] = field(default_factory=list)
    # Every time in those lists came after the one before: judge() cuts them by binary search. Once one
    # went back (a capture's clock stepped back), it walks them from the start, as the deques were popped.
    ordered: bool = True
    degraded: bool = False
    healthy_judgements: int = 0
    stats: tuple[float, float, float] | None = None
    stats_valid: bool = False
    stats_at: float = 0.0
    usual_at: float = 0.0
    usual_interval: float | None = None  # median of the baseline intervals (None: to be computed)
    streak: int = 0  # consecutive judgements that found the window degraded
    # Messages since the last judgement, as they came: (ts, cnt, function, -1.0) for a request,
    # (ts, request_cnt, 0, latency) for a response; logged by the decoders (the loop is their timing
    # tap, see agent.decoders.base.DecoderContext) and folded in by digest().
    log: list[tuple[float, int, int, float]] = field(default_factory=list)
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    during: list[float] = field(default_factory=list)  # latencies while degraded (bounded)
    during_intervals: list[float] = field(default_factory=list)
    retransmissions: int = 0  # TCP retransmissions seen on the loop's flows
    retrans_window: deque[tuple[float, int]] = field(default_factory=deque)  # (judged at, new ones)
    retrans_recent: int = 0  # the new ones in retrans_window, summed
    retrans_to_learn: deque[tuple[float, int, float]] = field(default_factory=deque)  # (at, n, seconds)
    base_retrans: float = 0.0  # retransmissions over base_seconds of healthy time
    base_seconds: float = 0.0
    last_judged: float = -1.0
    retrans_degraded: bool = False  # the last degraded verdict came from retransmissions

    def label(self) -> str:
        return f"{self.protocol} {self.zone}"

    def on_request(self, ts: float, cnt: int, function: int = 0) -> None:
        """A request (``cnt``: its packet number, the key its response comes back with), as a decoder
        logs it through its timing tap (agent.decoders.message)."""
        self.log.append((ts, cnt, function, -1.0))

    def on_response(self, ts: float, latency: float, request_cnt: int) -> None:
        """A response paired with the request sent in packet ``request_cnt``, ``latency`` later."""
        self.log.append((ts, request_cnt, 0, latency))

    def digest(self) -> None:
        """Fold the messages logged since the last judgement into the window, the lists that teach
        the baseline, the pending table and the latency histogram.

        Messages are only logged as they arrive (one append each) and folded here, before every
        judgement, in one loop with everything bound to locals (the lists that only repeat the
        window's new entries are extended by a slice afterwards): per message that is several times
        cheaper than updating each container through method calls, and nothing reads them between
        judgements except a metrics scrape, which may be half a second of packet time behind.
        """
        log = self.log
        if not log:
            return
        self.log = []
        sample_times, samples = self.sample_times, self.samples
        interval_times, intervals = self.interval_times, self.intervals
        new_samples, new_intervals = len(samples), len(intervals)
        add_sample_time, add_sample = sample_times.append, samples.append
        add_interval_time, add_interval = interval_times.append, intervals.append
        pending = self.pending
        answered = self.answered
        counts = self.histogram.counts
        total = 0.0
        last_request = self.last_request
        last_response = self.last_response
        ordered = self.ordered
        for ts, cnt, function, latency in log:
            if latency < 0.0:  # a request
                if last_request >= 0.0:
                    if ts < last_request:
                        ordered = False
                    add_interval_time(ts)
                    add_interval(ts - last_request)
                last_request = ts
                if len(pending) < MAX_PENDING:
                    pending[cnt] = (ts, function)
            else:
                request = pending.pop(cnt, None)
                if request is not None:
                    answered.add(request[1])
                if ts < last_response:
                    ordered = False
                last_response = ts
                add_sample_time(ts)
                add_sample(latency)
                counts[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
                total += latency
        self.last_request = last_request
        self.last_response = last_response
        self.ordered = ordered
        self.histogram.total += total
        if len(samples) > new_samples:
            fresh = samples[new_samples:]
            self.to_learn += fresh
            self.to_learn_times += sample_times[new_samples:]
            self.summary += fresh
            if self.degraded:
                self.during += fresh[: max(0, SUMMARY_SAMPLES - len(self.during))]
        if len(intervals) > new_intervals:
            fresh = intervals[new_intervals:]
            self.to_learn_intervals += fresh
            self.to_learn_interval_times += interval_times[new_intervals:]
            if self.degraded:
                self.during_intervals += fresh[: max(0, SUMMARY_SAMPLES - len(self.during_intervals))]

    def baseline_stats(self) -> tuple[float, float, float] | None:
        """(p50, p95, p99) of the learned latency baseline, once it has enough samples (cached: the
        baseline only changes when a healthy window teaches it)."""
        if self.stats_valid:
            return self.stats
        self.stats_valid = True
        n = len(self.baseline)
        if n < MIN_BASELINE_SAMPLES:
            self.stats = None
            return None
        ordered = sorted(self.baseline)
        self.stats = tuple(ordered[max(1, math.ceil(q / 100 * n)) - 1] for q in (50, 95, 99))  # type: ignore[assignment]
        return self.stats

    def threshold(self) -> float | None:
        """Twice the baseline p95, and at least 5 ms above it (p95: a few outliers do not move it)."""
        stats = self.baseline_stats()
        if stats is None:
            return None
        p95 = stats[1]
        return max(2 * p95, p95 + MIN_EXCESS_S)

    def jitter(self, intervals: list[float]) -> float:
        """p99 of |interval - usual interval| (the usual interval is the baseline median)."""
        if not intervals or len(self.base_intervals) < MIN_BASELINE_SAMPLES:
            return 0.0
        if self.usual_interval is None:
            self.usual_interval = statistics.median(self.base_intervals)
        usual = self.usual_interval
        return percentile([abs(i - usual) for i in intervals], 99)

    def retrans_threshold(self) -> float | None:
        """Retransmissions in the last second that mean degraded; None while the rate is being learned."""
        if self.base_seconds < RETRANS_LEARN_S:
            return None
        return max(RETRANS_MIN, RETRANS_FACTOR * self.base_retrans / self.base_seconds * WINDOW_S)

    def _take_retransmissions(self, now: float) -> tuple[int, float]:
        """New retransmissions on the loop's current flow since the last judgement, and the time since."""
        fresh = 0
        tcp = self.flow.tcp
        if tcp is not None:
            fresh = tcp.retransmissions - tcp.judged
            tcp.judged = tcp.retransmissions
        elapsed = now - self.last_judged if self.last_judged >= 0 else 0.0
        self.last_judged = now
        window = self.retrans_window
        if fresh:
            self.retransmissions += fresh
            self.retrans_recent += fresh
            window.append((now, fresh))
        while window and window[0][0] <= now - WINDOW_S:
            self.retrans_recent -= window.popleft()[1]
        return fresh, elapsed

    def judge(self, now: float) -> bool | None:
        """Whether the last second looks degraded; None when there is not enough to say."""
        self.digest()
        fresh, elapsed = self._take_retransmissions(now)
        horizon = now - WINDOW_S
        samples = self.samples
        ordered = self.ordered
        gone = _count_before(self.sample_times, horizon, ordered)
        if gone:
            del self.sample_times[:gone], samples[:gone]
        gone = _count_before(self.interval_times, horizon, ordered)
        if gone:
            del self.interval_times[:gone], self.intervals[:gone]
        if self.pending:
            self._expire_pending(now)
        late = self.late
        while late and late[0] < horizon:
            late.popleft()
        busy = self.busy
        while busy and busy[0] < horizon:
            busy.popleft()
        threshold = self.threshold()
        verdict: bool | None = None
        if threshold is not None:
            if len(late) >= 2 or len(busy) >= 2:
                verdict = True
            elif len(samples) >= MIN_WINDOW_SAMPLES:
                verdict = percentile(samples, 50) > threshold
        retrans_threshold = self.retrans_threshold()
        self.retrans_degraded = False
        if retrans_threshold is not None and self.retrans_recent >= retrans_threshold:
            self.retrans_degraded = verdict is not True  # latency, when it says so too, is the better why
            verdict = True
        self.streak = self.streak + 1 if verdict is True else 0
        self.retrans_to_learn.append((now, fresh, elapsed))
        if verdict is True or self.degraded:
            del self.to_learn[:], self.to_learn_times[:]
            del self.to_learn_intervals[:], self.to_learn_interval_times[:]
            self.retrans_to_learn.clear()
        else:
            self._learn_retransmissions(now - LEARN_LAG_S)
            ripe = now - LEARN_LAG_S
            ready = _count_before(self.to_learn_times, ripe, ordered, inclusive=True)
            if ready:
                if self.stats is None or now - self.stats_at >= BASELINE_REFRESH_S:
                    self.stats_valid = False  # recomputed on next use
                    self.stats_at = now
                self.baseline += self.to_learn[:ready]
                del self.to_learn[:ready], self.to_learn_times[:ready]
            ready = _count_before(self.to_learn_interval_times, ripe, ordered, inclusive=True)
            if ready:
                if self.usual_interval is None or now - self.usual_at >= BASELINE_REFRESH_S:
                    self.usual_interval = None
                    self.usual_at = now
                self.base_intervals += self.to_learn_intervals[:ready]
                del self.to_learn_intervals[:ready], self.to_learn_interval_times[:ready]
        return verdict

    def _learn_retransmissions(self, ripe: float) -> None:
        pending = self.retrans_to_learn
        while pending and pending[0][0] <= ripe:
            _, n, seconds = pending.popleft()
            self.base_retrans += n
            self.base_seconds += seconds
        if self.base_seconds > RETRANS_BASE_S:
            scale = RETRANS_BASE_S / self.base_seconds
            self.base_retrans *= scale
            self.base_seconds = RETRANS_BASE_S

    def _expire_pending(self, now: float) -> None:
        limit = -1.0  # at least LATE_MIN_S: only asked of a request older than that
        pending = self.pending
        while pending:
            cnt, (ts, function) = next(iter(pending.items()))  # oldest first: requests come in time order
            if now - ts <= LATE_MIN_S:
                break
            if limit < 0.0:
                stats = self.baseline_stats()
                limit = max(LATE_MIN_S, LATE_FACTOR * stats[2]) if stats is not None else LATE_MIN_S
            if now - ts <= limit:
                break
            del pending[cnt]
            if function in self.answered:
                self.unanswered += 1
                self.late.append(now)

    def window_latencies(self) -> list[float]:
        return self.samples[:]


def _count_before(times: list[float], bound: float, ordered: bool, inclusive: bool = False) -> int:
    """How many of ``times``, from the start, come before ``bound`` (or at it, if ``inclusive``): by
    binary search while they are in order; once one went back, by walking from the start, as the
    deques these lists replaced were popped."""
    if ordered:
        return bisect.bisect_right(times, bound) if inclusive else bisect.bisect_left(times, bound)
    n = 0
    if inclusive:
        while n < len(times) and times[n] <= bound:
            n += 1
    else:
        while n < len(times) and times[n] < bound:
            n += 1
    return n


CYCLIC_LEARN = 20  # intervals that teach a cyclic stream its period (when its set-up was not seen)
CYCLIC_WINDOW_S = 10.0
SEQ_MOD = 1 << 32
OBSERVED = "observed"  # period_source: the median of the first intervals
FORWARD_OPEN = "forward_open"  # period_source: the CIP Forward Open that set the connection up


@dataclass(slots=True)
class Cyclic:
    """One cyclic I/O stream (CIP class 0/1 connection, PROFINET RT, GOOSE): period, jitter and gaps.

    The period is what the connection was set up with when that was seen (a CIP Forward Open's actual
    packet interval, ``set_period``), else the median of the first intervals. Jitter is the p99 of
    |interval - expected interval| over the last 10 s. A sequence number that jumps by more than one
    means frames were lost (or never sent); a jump backwards (a restarted connection) is not a gap.
    Protocols that count their losses themselves (GOOSE sqNum/stNum, PROFINET cycle counter) pass
    them as ``missing``.

    GOOSE is not strictly periodic: an event is sent at once and repeated at growing intervals up
    to the heartbeat (IEC 61850-8-1), each message promising the next within its timeAllowedToLive.
    So for a ``bursty`` stream the interval ending at an event and the fast repetitions after it
    (shorter than half the expected interval) are not jitter, and the promise bounds the expected
    interval: a heartbeat learned longer than the time allowed to live is judged against the latter.
    """

    zone: str
    protocol: str
    bursty: bool = False
    last_ts: float = -1.0
    last_seq: int = -1
    learning: list[float] = field(default_factory=list)
    period: float = 0.0
    period_source: str = ""
    bound: float = 0.0  # the time allowed to live last promised (s); 0: none
    rpi_generation: int = -1  # the connection table's generation this stream last looked its period up in
    intervals: deque[tuple[float, float]] = field(default_factory=deque)
    gaps: int = 0
    gaps_reported: int = 0

    def set_period(self, period: float, source: str) -> None:
        if period > 0:
            self.period = period
            self.period_source = source
            self.learning = []

    def expected(self) -> float:
        """The interval a frame is due in: the period, never more than the promised time to live."""
        if self.bound and self.bound < self.period:
            return self.bound
        return self.period

    def on_frame(
        self, ts: float, seq: int | None, missing: int = 0, event: bool = False, bound: float = 0.0
    ) -> None:
        if self.last_ts >= 0 and not event:
            interval = ts - self.last_ts
            if not self.period:
                self.learning.append(interval)
                if len(self.learning) >= CYCLIC_LEARN:
                    self.period = statistics.median(self.learning)
                    self.period_source = OBSERVED
                    self.learning = []
            elif not (self.bursty and interval < self.expected() / 2):
                self.intervals.append((ts, interval))
                horizon = ts - CYCLIC_WINDOW_S
                while self.intervals and self.intervals[0][0] < horizon:
                    self.intervals.popleft()
        self.last_ts = ts
        if bound > 0:
            self.bound = bound
        if missing > 0:
            self.gaps += missing
        if seq is not None:
            if self.last_seq >= 0:
                step = (seq - self.last_seq) % SEQ_MOD
                if 1 < step < SEQ_MOD // 2:
                    self.gaps += step - 1
            self.last_seq = seq

    def jitter(self) -> float | None:
        if not self.period or not self.intervals:
            return None
        expected = self.expected()
        return percentile([abs(i - expected) for _, i in self.intervals], 99)
