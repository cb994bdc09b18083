"""The policy model: what a policy file says, validated, as frozen records.

``agent.policy.loader`` builds these from YAML (with file/line/column for every error); the engine
(``agent.policy.engine``) compiles them into lookup tables. Nothing on the per-packet path reads
this model. docs/policy.md describes the file format field by field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

FOUNDATIONAL_REQUIREMENTS = ("FR1", "FR2", "FR3", "FR4", "FR5", "FR6", "FR7")
PURDUE_LEVELS = (0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0)
CRITICALITIES = ("low", "medium", "high", "critical")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_AUDITED = ("program", "upload", "mode", "firmware", "config")


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    zone: str
    ip: str | None = None
    mac: str | None = None
    role: str = ""
    criticality: str = ""


@dataclass(frozen=True, slots=True)
class Schedule:
    days: frozenset[int]  # 0 = Monday ... 6 = Sunday
    start_minute: int  # minutes after midnight, local time
    end_minute: int  # exclusive; end <= start means the window wraps past midnight
    timezone: str

    def text(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return (
            f"{days} {self.start_minute // 60:02d}:{self.start_minute % 60:02d}-"
            f"{self.end_minute // 60:02d}:{self.end_minute % 60:02d} {self.timezone}"
        )


@dataclass(frozen=True, slots=True)
class Link:
    """The network link behind a zone (its uplink) or a conduit, for bulk-load checks (DOMAIN.md 6).

    Capacity is per direction (full duplex). The bulk budget is what bulk/backup traffic may use of
    it, as bits per second or as a share of the capacity; backup windows say when backups may run.
    """

    capacity_bps: float | None = None
    bulk_budget_bps: float | None = None
    bulk_budget_share: float | None = None  # 0..1
    backup_windows: tuple[Schedule, ...] = ()
    line: int = 0

    def budget_bps(self) -> float | None:
        """The bulk budget in bits per second (a share needs the capacity)."""
        if self.bulk_budget_bps is not None:
            return self.bulk_budget_bps
        if self.bulk_budget_share is not None and self.capacity_bps is not None:
            return self.bulk_budget_share * self.capacity_bps
        return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a flow rule: a whole zone, or one named asset in it."""

    zone: str
    asset: str | None = None

    def text(self) -> str:
        return f"{self.zone}/{self.asset}" if self.asset else self.zone


@dataclass(frozen=True, slots=True)
class FlowRule:
    id: str
    initiator: Endpoint
    responder: Endpoint
    protocols: frozenset[str] | None  # None: any protocol
    label: str  # the protocol or category as written, for messages
    ports: frozenset[int] | None = None
    operations: frozenset[str] | None = None  # None: all
    function_codes: frozenset[int] | None = None
    schedule: Schedule | None = None
    messages_per_second: float | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str = ""
    description: str = ""
    owner: str = ""
    location: str = ""
    safety: bool = False
    purdue_level: float | None = None
    sl_t: tuple[int, ...] | None = None  # 7 values (FR1..FR7); a single level is repeated
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    vlans: frozenset[int] = frozenset()
    macs: frozenset[str] = frozenset()  # lower-case aa:bb:cc:dd:ee:ff
    assets: tuple[Asset, ...] = ()
    allow: tuple[FlowRule, ...] = ()
    line: int = 0
    link: Link | None = None


@dataclass(frozen=True, slots=True)
class Conduit:
    id: str
    zones: tuple[str, str]
    flows: tuple[FlowRule, ...]
    name: str = ""
    description: str = ""
    sl_t: tuple[int, ...] | None = None
    line: int = 0
    link: Link | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    intra_zone: str = "allow"  # allow | check
    unknown_hosts: str = "alert"  # alert | ignore
    audit_operations: frozenset[str] = frozenset(DEFAULT_AUDITED)
    alert_fold_seconds: float = 300.0
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class SystemInfo:
    name: str
    owner: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    path: str
    system: SystemInfo
    zones: tuple[Zone, ...]
    conduits: tuple[Conduit, ...]
    defaults: Defaults = field(default_factory=Defaults)
    version: int = 1

    def zone(self, zone_id: str) -> Zone:
        return next(z for z in self.zones if z.id == zone_id)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of validation: an error (the policy is refused) or a warning."""

    path: str
    line: int  # 1-based; 0 when the problem is about the file as a whole
    column: int
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        return f"{where}: {self.severity}: {self.message}"


def sl_text(sl_t: tuple[int, ...] | None) -> str | int | None:
    """SL-T for events: a single number when all foundational requirements agree."""
    if sl_t is None:
        return None
    if len(set(sl_t)) == 1:
        return sl_t[0]
    return ",".join(f"{fr}:{v}" for fr, v in zip(FOUNDATIONAL_REQUIREMENTS, sl_t, strict=True))
