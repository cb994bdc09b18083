"""Incidents: a condition with a duration, reported as raise, update and clear events of one id.

A SOC wants one incident for a backup that floods an uplink for twenty minutes, not an alert per
second. Each incident keeps the flow its events are attached to (EVE events carry a flow header) and
the fields of its alert; ``agent.detectors.floods`` decides when a condition starts, changes or ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.flows import Flow
from agent.outputs.eve import format_timestamp

# kind -> (signature_id, severity 1 high .. 3 low, category, 62443-3-3 SRs, ISO/IEC 27001:2022 Annex A)
KINDS: dict[str, tuple[int, int, str, tuple[str, ...], tuple[str, ...]]] = {
    "bulk_into_control_zone": (9100201, 1, "Bulk traffic in a control zone", ("SR 5.1", "SR 5.2", "SR 7.1"),
                               ("A.8.20", "A.8.22", "A.8.6")),
    "bulk_over_budget": (9100202, 2, "Bulk load over budget", ("SR 7.1", "SR 7.2"), ("A.8.6",)),
    "backup_outside_window": (9100203, 2, "Backup outside its window", ("SR 7.2", "SR 7.1"),
                              ("A.8.13", "A.8.6")),
    "control_degradation": (9100204, 2, "Control traffic degraded", ("SR 7.1", "SR 6.2"),
                            ("A.8.6", "A.8.16")),
    "backup_interference": (9100205, 1, "Backup interference with control traffic",
                            ("SR 7.1 RE1", "SR 7.2"), ("A.8.6", "A.8.13")),
}  # fmt: skip

# emit(event_type, timestamp, flow, pcap_cnt, source index, fields): the pipeline's detection emitter
EmitFn = Callable[[str, float, Flow, int, int, dict[str, Any]], None]


@dataclass(slots=True)
class Incident:
    id: str
    kind: str
    key: tuple[Any, ...]
    started: float
    flow: Flow  # the flow the events are attached to (a transfer, a control flow)
    last_update: float
    updates: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # detector state for the incident


class Incidents:
    """Open incidents by (kind, key); counts by kind for the metrics."""

    def __init__(self, emit: EmitFn, max_open: int = 10_000) -> None:
        self.emit = emit
        self.max_open = max_open
        self.open: dict[tuple[str, tuple[Any, ...]], Incident] = {}
        self.total: dict[str, int] = {kind: 0 for kind in KINDS}
        self.dropped = 0  # incidents not opened because max_open were open

    def get(self, kind: str, key: tuple[Any, ...]) -> Incident | None:
        return self.open.get((kind, key))

    def active(self, kind: str) -> list[Incident]:
        return [i for i in list(self.open.values()) if i.kind == kind]

    def active_counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in KINDS}
        for incident in list(self.open.values()):
            counts[incident.kind] += 1
        return counts

    def raise_(self, kind: str, key: tuple[Any, ...], ts: float, flow: Flow, signature: str,
               details: dict[str, Any]) -> Incident | None:  # fmt: skip
        if len(self.open) >= self.max_open:
            self.dropped += 1
            return None
        material = repr((kind, key, round(ts, 6))).encode()
        incident_id = hashlib.blake2b(material, digest_size=8).hexdigest()
        incident = Incident(incident_id, kind, key, ts, flow, ts)
        self.open[(kind, key)] = incident
        self.total[kind] += 1
        self._event(incident, "raised", ts, signature, details)
        return incident

    def update(self, incident: Incident, ts: float, signature: str, details: dict[str, Any]) -> None:
        incident.updates += 1
        incident.last_update = ts
        self._event(incident, "updated", ts, signature, details)

    def clear(self, incident: Incident, ts: float, signature: str, details: dict[str, Any]) -> None:
        self.open.pop((incident.kind, incident.key), None)
        self._event(incident, "cleared", ts, signature, details)

    def _event(
        self, incident: Incident, state: str, ts: float, signature: str, details: dict[str, Any]
    ) -> None:
        sid, severity, category, srs, iso = KINDS[incident.kind]
        meta: dict[str, Any] = {"id": incident.id, "kind": incident.kind, "state": state,
                                "started": format_timestamp(incident.started)}  # fmt: skip
        if state == "cleared":
            meta["ended"] = format_timestamp(ts)
            meta["duration_s"] = round(ts - incident.started, 3)
        fields: dict[str, Any] = {
            "alert": {
                "signature_id": sid,
                "signature": signature,
                "category": category,
                "severity": severity,
                "rule": incident.kind,
                "metadata": {"iec62443_sr": list(srs), "iso27001_annex_a": list(iso), "incident": meta},
            },
            "floods": details,
        }
        flow = incident.flow
        self.emit("alert", ts, flow, flow.last_cnt, flow.last_source, fields)
