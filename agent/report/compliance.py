"""The compliance table: what the captures show for each IEC 62443-3-3 SR and ISO/IEC 27001:2022
Annex A control that DOMAIN.md (sections 2 and 3) names as passively evidenced.

Every alert names the SRs and controls it concerns (``alert.metadata``), so a finding counts against
exactly the items it cites: non-conformity, linked to the findings. An item without findings is a
conformity only when these inputs could have shown a breach (a policy to check against, the
decoders that see the operations); otherwise a passive capture cannot say, and the table says so.

The items about drift between the declared model and the wire (SR 7.6, A.8.9) also count the policy
findings about traffic no rule allowed (section 2's "traffic no conduit covers"): those alerts cite
the segmentation SRs they breach, and the same traffic is drift from the declared configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.text import count_of

CONFORMITY = "conformity"
NON_CONFORMITY = "non-conformity"
NOT_OBSERVABLE = "not passively observable"


@dataclass(frozen=True, slots=True)
class Item:
    framework: str  # "IEC 62443-3-3" or "ISO/IEC 27001:2022"
    id: str  # "SR 5.1", "A.8.20"
    title: str
    # What must hold for silence to mean conformity: "policy", "always", "time_sync", "backup",
    # "remote_access", or "" (never observable passively).
    basis: str
    conforms: str  # what a conformity means here, in one sentence
    unobservable: str  # why a passive capture cannot decide it (when the basis is missing)
    drift: bool = False  # traffic no conduit covers is a breach of it (see the module docstring)


_NEEDS_POLICY = "no policy was given: without the declared zones and conduits the traffic cannot be judged"

ITEMS: tuple[Item, ...] = (
    Item(
        "IEC 62443-3-3",
        "SR 1.13",
        "Access via untrusted networks",
        "policy",
        "every remote-access session seen ran over a conduit that allows it",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 2.1",
        "Authorization enforcement",
        "policy",
        "every industrial operation seen was one its conduit allows",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 2.8",
        "Auditable events",
        "always",
        "the sensor recorded every always-audited operation it saw (program, upload, mode, firmware, config)",
        "",
    ),
    Item(
        "IEC 62443-3-3",
        "SR 2.11",
        "Timestamps",
        "time_sync",
        "time synchronisation traffic (NTP/PTP) was seen",
        "no NTP or PTP traffic in the captures; clocks may "
        "be synchronised on a path the capture does not cover",
    ),
    Item(
        "IEC 62443-3-3",
        "SR 3.1",
        "Communication integrity",
        "policy",
        "no cleartext industrial protocol crosses a conduit whose SL-T for FR3 is 2 or more",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 3.4",
        "Software and information integrity",
        "always",
        "no device announced a changed identity or firmware revision",
        "",
    ),
    Item(
        "IEC 62443-3-3",
        "SR 5.1",
        "Network segmentation",
        "policy",
        "every host belongs to a zone and zones talk only over conduits",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 5.2",
        "Zone boundary protection",
        "policy",
        "only flows a conduit allows crossed zone boundaries (deny by default)",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 5.3",
        "General purpose person-to-person communication restrictions",
        "",
        "",
        "person-to-person protocols (mail, chat) are not identified by this version",
    ),
    Item(
        "IEC 62443-3-3",
        "SR 6.2",
        "Continuous monitoring",
        "",
        "",
        "a replay of captures cannot show that monitoring runs continuously; live mode's metrics can",
    ),
    Item(
        "IEC 62443-3-3",
        "SR 7.1",
        "Denial of service protection",
        "policy",
        "no rate budget was exceeded and no bulk-overload or interference incident was raised",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 7.3",
        "Control system backup",
        "backup",
        "backup traffic was seen",
        "no backup traffic in the captures",
    ),
    Item(
        "IEC 62443-3-3",
        "SR 7.6",
        "Network and security configuration settings",
        "policy",
        "the observed traffic matches the declared zone/conduit model (no uncovered traffic)",
        _NEEDS_POLICY,
        drift=True,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 7.7",
        "Least functionality",
        "policy",
        "no protocol was used that its conduit does not allow",
        _NEEDS_POLICY,
    ),
    Item(
        "IEC 62443-3-3",
        "SR 7.8",
        "Control system component inventory",
        "always",
        "the inventory lists every device seen; none is outside the declared zones",
        "",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.5.9",
        "Inventory of information and other associated assets",
        "always",
        "the passive inventory lists every device seen",
        "",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.5.28",
        "Collection of evidence",
        "always",
        "every capture is identified by its SHA-256 and the report is reproducible",
        "",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.6",
        "Capacity management",
        "policy",
        "no rate budget was exceeded and no bulk-overload incident was raised",
        _NEEDS_POLICY,
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.9",
        "Configuration management",
        "policy",
        "no drift between the declared model and the observed traffic, no identity change",
        _NEEDS_POLICY,
        drift=True,
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.13",
        "Information backup",
        "backup",
        "backups were seen and none interfered with control traffic",
        "no backup traffic in the captures",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.15",
        "Logging",
        "always",
        "audited operations are recorded as events with capture, packet and time",
        "",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.16",
        "Monitoring activities",
        "",
        "",
        "a replay cannot show that monitoring is continuous",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.17",
        "Clock synchronisation",
        "time_sync",
        "time synchronisation traffic (NTP/PTP) was seen",
        "no NTP or PTP traffic in the captures",
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.20",
        "Networks security",
        "policy",
        "all traffic between zones conformed to the conduits",
        _NEEDS_POLICY,
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.21",
        "Security of network services",
        "policy",
        "every service used is one its conduit allows",
        _NEEDS_POLICY,
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.22",
        "Segregation of networks",
        "policy",
        "zones were kept apart except over their conduits",
        _NEEDS_POLICY,
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.32",
        "Change management",
        "policy",
        "program, configuration and mode changes happened only where and when allowed",
        _NEEDS_POLICY,
    ),
    Item(
        "ISO/IEC 27001:2022",
        "A.8.34",
        "Protection of information systems during audit testing",
        "always",
        "the evidence comes from a passive replay that never touches the plant",
        "",
    ),
)


def _normalise(ref: str) -> str:
    """ "SR 7.1 RE1" -> "SR 7.1"; "A.8.6" and "8.6" -> "A.8.6"."""
    ref = ref.strip()
    if ref.upper().startswith("SR"):
        return "SR " + ref[2:].strip().split()[0]
    if ref[:1].isdigit():
        ref = "A." + ref
    return ref.split()[0]


def cited(finding: dict[str, Any]) -> set[str]:
    refs = [*finding.get("iec62443_sr", ()), *finding.get("iso27001", ())]
    return {_normalise(r) for r in refs if isinstance(r, str) and r.strip()}


def table(
    findings: list[dict[str, Any]],
    basis: dict[str, bool],
    drift: Sequence[str] = (),
    drift_flows: int = 0,
) -> list[dict[str, Any]]:
    """One row per item. ``findings``: records with ``id``, ``iec62443_sr``, ``iso27001`` lists;
    ``basis``: which kinds of evidence these inputs hold (policy, time_sync, backup, ...);
    ``drift_flows``: flows no conduit covers, ``drift``: the findings that flagged them."""
    by_ref: dict[str, list[str]] = {}
    for finding in findings:
        for ref in cited(finding):
            by_ref.setdefault(ref, []).append(finding["id"])
    rows = []
    for item in ITEMS:
        citing = set(by_ref.get(item.id, ()))
        uncovered = item.drift and drift_flows > 0
        linked = sorted(citing | set(drift) if uncovered else citing)
        if uncovered:
            reason = f"{count_of(drift_flows, 'flow')} no conduit covers (section 2)"
            if drift:
                reason += f", flagged by {count_of(len(set(drift)), 'finding')}"
            if citing:
                reason = f"{count_of(len(citing), 'finding')} cite it; {reason}"
            status = NON_CONFORMITY
        elif linked:
            status, reason = NON_CONFORMITY, f"{count_of(len(linked), 'finding')} cite it"
        elif item.basis and (item.basis == "always" or basis.get(item.basis, False)):
            status, reason = CONFORMITY, item.conforms
        else:
            status, reason = NOT_OBSERVABLE, item.unobservable
        rows.append(
            {
                "framework": item.framework,
                "id": item.id,
                "title": item.title,
                "status": status,
                "reason": reason,
                "findings": linked,
            }
        )
    return rows
