"""Load in fine time bins per zone uplink and conduit, and which flows are bulk transfers.

Nothing here runs per packet. The flow table already counts bytes per flow and direction; at every
bin boundary (packet time, by default every 100 ms) the detector reads the counters of the flows
that cross a declared link (or touch a control zone) and adds the differences to the bins of the
scopes those flows cross. The first packet at or after a boundary triggers the sample before it is
counted, so a bin holds exactly the bytes of the packets whose timestamps fall into it.

A *scope* is one direction of a link: a zone's uplink ("in" to or "out" of the zone) or a conduit
(from its first zone to its second, or back), with the capacity and bulk budget the policy declares.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agent.flows import Flow
from agent.policy.model import Link

BULK_CATEGORIES = ("backup", "file_transfer")
# Behavioural bulk: a long, mostly one-way, high-rate transfer of large segments.
BEHAVIOUR_MIN_AGE_S = 2.0
BEHAVIOUR_MIN_BPS = 1_000_000.0
BEHAVIOUR_ONE_WAY_SHARE = 0.9
BEHAVIOUR_MIN_SEGMENT = 1000.0
# Without a declared budget, bulk traffic above this share of a link's capacity counts as overload:
# QoS only helps from about 70-80 % utilisation on (DOMAIN.md section 6).
DEFAULT_BUDGET_SHARE = 0.7
VIEWS = (("100ms", 1), ("1s", 10), ("10s", 100))  # view name, width in 100 ms bins (scaled by bin size)


@dataclass(slots=True, eq=False)  # identity: flows hold their scopes in tuples
class Scope:
    """One direction of a link; bins of total and bulk bytes for the last ``history`` bins."""

    kind: str  # "zone" or "conduit"
    name: str  # zone id or conduit id
    direction: str  # zone: "in" | "out"; conduit: "a>b" with its zone ids
    link: Link | None
    control: bool  # a control zone (Purdue level <= 1 or safety), or a conduit into one
    capacity_bps: float | None
    budget_bps: float | None
    history: int
    bin_bytes: int = 0
    bin_bulk: int = 0
    bins: deque[tuple[int, int]] = field(default_factory=deque)  # (total, bulk) of closed bins
    bulk_by_flow: dict[Tracked, int] = field(default_factory=dict)  # bulk bytes per transfer, this bin
    recent_bulk_flows: deque[dict[Tracked, int]] = field(default_factory=deque)
    peak: dict[str, float] = field(default_factory=dict)  # view -> peak utilisation, last completed window
    closed: int = 0  # bins closed so far
    last_bulk: int = -(1 << 30)  # the number (``closed`` count) of the last closed bin that carried bulk

    def quiet(self, bins: int) -> bool:
        """No bulk in the last ``bins`` closed bins: the link checks have nothing to add up."""
        return self.closed - self.last_bulk >= bins

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} ({self.direction})"

    def close_bin(self, keep_flows: int) -> None:
        self.bins.append((self.bin_bytes, self.bin_bulk))
        self.closed += 1
        if self.bin_bulk:
            self.last_bulk = self.closed
        if len(self.bins) > self.history:
            self.bins.popleft()
        self.recent_bulk_flows.append(self.bulk_by_flow)
        if len(self.recent_bulk_flows) > keep_flows:
            self.recent_bulk_flows.popleft()
        self.bin_bytes = 0
        self.bin_bulk = 0
        self.bulk_by_flow = {}

    def rate_bps(self, bins: int, bin_s: float, bulk: bool) -> float:
        """Average rate over the last ``bins`` closed bins."""
        if not self.bins:
            return 0.0
        recent = list(self.bins)[-bins:]
        total = sum(b[1] if bulk else b[0] for b in recent)
        return total * 8 / (bins * bin_s)

    def utilisation(self, nbytes: int, seconds: float) -> float:
        if not self.capacity_bps:
            return 0.0
        return nbytes * 8 / (self.capacity_bps * seconds)

    def transfers(self, bins: int) -> dict[Tracked, int]:
        """Bulk bytes per transfer over the last ``bins`` bins."""
        out: dict[Tracked, int] = {}
        for per_bin in list(self.recent_bulk_flows)[-bins:]:
            for fid, n in per_bin.items():
                out[fid] = out.get(fid, 0) + n
        return out


@dataclass(slots=True, eq=False)  # identity: a transfer is a key of the scopes' per-bin tables
class Tracked:
    """A flow whose bytes go into scopes' bins; ``bulk`` once classified as a bulk transfer."""

    flow: Flow
    to_server: tuple[Scope, ...]  # scopes crossed by bytes from the flow's src to its dst
    to_client: tuple[Scope, ...]
    category: str  # "backup", "file_transfer", "behaviour" or "" (not bulk)
    bulk: bool
    control_crossing: bool  # one end in a control zone, the other in another zone
    src_zone: str
    dst_zone: str
    seen_ts: int = 0
    seen_tc: int = 0
    pkts_ts: int = 0
    pkts_tc: int = 0
    bulk_bytes: int = 0
    first_bulk_ts: float = 0.0
    # last second of (bytes to server, bytes to client, packets to server, packets to client), per bin
    recent: deque[tuple[int, int, int, int]] = field(default_factory=deque)


def bulk_category(app_proto: str, categories: dict[str, frozenset[str]]) -> str:
    for name in BULK_CATEGORIES:
        members = categories.get(name)
        if members is not None and app_proto in members:
            return name
    return ""


def looks_like_bulk(tr: Tracked, now: float, bins_per_second: int) -> bool:
    """Behaviour: long, mostly one way, at least 1 Mbit/s, in large segments (last second)."""
    if now - tr.flow.first_ts < BEHAVIOUR_MIN_AGE_S or len(tr.recent) < bins_per_second:
        return False
    b_ts = sum(r[0] for r in tr.recent)
    b_tc = sum(r[1] for r in tr.recent)
    major, minor = (b_ts, b_tc) if b_ts >= b_tc else (b_tc, b_ts)
    pkts = sum(r[2] for r in tr.recent) if b_ts >= b_tc else sum(r[3] for r in tr.recent)
    seconds = len(tr.recent) / bins_per_second
    return (
        major * 8 / seconds >= BEHAVIOUR_MIN_BPS
        and major >= BEHAVIOUR_ONE_WAY_SHARE * (major + minor)
        and pkts > 0
        and major / pkts >= BEHAVIOUR_MIN_SEGMENT
    )
