"""Typed records: the only contract between pipeline stages.

Two kinds of record live here.

* ``Frame`` is what every capture source yields, one per packet. It is a plain tuple because it is
  built for every packet and a tuple is the cheapest typed container CPython has (a NamedTuple or
  dataclass costs 3-10x more to construct). Use the ``F_*`` index constants, or unpack it.

* Everything that outlives one packet (flows, application messages, alerts, anomalies) is a slotted
  dataclass that the stage producing it owns and hands on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (timestamp seconds, frame bytes, wire length, interface index, link type, pcap_cnt, source index)
#
# * interface index: position in the source's interface table (pcapng interface id; 0 elsewhere).
# * link type: LINKTYPE_* number (tcpdump.org/linktypes.html), per interface for pcapng.
# * pcap_cnt: 1-based number of the packet within its file (within the live session for live capture).
# * source index: position of the file (or live interface) in the run's list of sources, so that
#   events can name ``pcap_filename`` when several files are merged.
Frame = tuple[float, bytes, int, int, int, int, int]
F_TS, F_DATA, F_WIRELEN, F_IFACE, F_LINKTYPE, F_CNT, F_SOURCE = range(7)

# Link types we dissect (others are counted and skipped with one warning).
LINKTYPE_NULL = 0  # BSD loopback, 4-byte host-order address family
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_DLT_RAW_12 = 12  # DLT_RAW as written by some BSD/Linux tools
LINKTYPE_DLT_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_LOOP = 108  # OpenBSD loopback, network-order address family
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_DLT_RAW_12,
        LINKTYPE_DLT_RAW_14,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)


@dataclass(slots=True)
class SourceInfo:
    """One capture source of a run: a file or a live interface."""

    name: str  # path as given on the command line, or interface name
    kind: str  # "pcap", "pcapng", "live"
    interfaces: list[str] = field(default_factory=list)  # names by interface index


@dataclass(slots=True)
class CaptureProblem:
    """A capture that could not be read to its end: reported, never raised through the pipeline."""

    source: str
    offset: int | None  # byte offset (of the uncompressed stream) where reading stopped; None: live
    reason: str
    packets_read: int

    def __str__(self) -> str:
        return f"{self.source}: {self.detail}"

    @property
    def detail(self) -> str:
        """The reason, where reading stopped (a file's byte offset; an interface has none) and how far."""
        at = "" if self.offset is None else f" at byte offset {self.offset}"
        return f"{self.reason}{at} (after {self.packets_read} packets)"


@dataclass(slots=True)
class Event:
    """An EVE-shaped event on its way to the sinks.

    ``fields`` holds everything except the common header, which sinks add from the other members.
    Builders fill ``fields`` by hand: ``dataclasses.asdict`` is ~30x slower.
    """

    event_type: str
    timestamp: float
    fields: dict[str, Any]
