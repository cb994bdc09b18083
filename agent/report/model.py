"""The report as one JSON-ready document (docs/report.schema.json); HTML and CSV render from it.

Everything is sorted and every number rounded the same way, so the same inputs give the same bytes.
Times are packet times; the one wall-clock value, ``generated_at``, is a parameter.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.outputs.eve import format_timestamp
from agent.pipeline import LINKTYPE_NAMES
from agent.policy.engine import RULES as POLICY_RULES
from agent.report import compliance
from agent.report.collect import NO_ZONE, EventCollector, EvidenceTap, ReportCollector

if TYPE_CHECKING:
    from agent.analysis import Analysis
    from agent.assets.inventory import AssetRecord
    from agent.policy.engine import CompiledPolicy

SCHEMA_VERSION = 1
INCIDENT_SIDS = range(9100200, 9100300)  # backup floods and control health (CONTRACTS.md)
MAX_OCCURRENCES = 20  # packets listed per finding; the count covers them all
CHART_POINTS = 600
CHART_COLUMNS = [
    "offset_s",
    "load_mbit_s",
    "bulk_mbit_s",
    "max_control_latency_ms",
]  # the chart downsamples longer captures to this many bins


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _ts(value: float) -> str:
    return format_timestamp(value)


# ---------------------------------------------------------------------------------------------
# evidence


def evidence(
    analysis: Analysis, tap: EvidenceTap, policy_path: str | None, policy: CompiledPolicy | None
) -> dict[str, Any]:
    problems: dict[str, list[str]] = {}
    for problem in analysis.problems:
        problems.setdefault(problem.source, []).append(problem.detail)
    captures = []
    for index, info in enumerate(analysis.sources):
        seen = tap.files[index]
        size = os.path.getsize(info.name) if os.path.isfile(info.name) else 0
        captures.append(
            {
                "name": info.name,
                "sha256": sha256_file(info.name) if os.path.isfile(info.name) else "",
                "bytes": size,
                "format": info.kind,
                "packets": analysis.file_packets[index],
                "first_packet": _ts(seen.first_ts) if seen.packets else None,
                "last_packet": _ts(seen.last_ts) if seen.packets else None,
                "duration_s": round(seen.last_ts - seen.first_ts, 6) if seen.packets else 0.0,
                "link_types": [
                    {"linktype": lt, "name": LINKTYPE_NAMES.get(lt, f"linktype {lt}"), "packets": n}
                    for lt, n in sorted(seen.link_types.items())
                ],
                "damage": problems.get(info.name, []),
            }
        )
    pipeline = analysis.pipeline
    stats = analysis.stats
    app = {name: st.as_dict() for name, st in sorted(pipeline.decoders.stats.items())}
    gaps = {name: d["stream_gaps"] for name, d in app.items() if d["stream_gaps"]}
    policy_info = None
    if policy is not None and policy_path is not None:
        p = policy.policy
        policy_info = {
            "path": policy_path,
            "sha256": sha256_file(policy_path),
            "system": p.system.name,
            "owner": p.system.owner,
            "zones": len(p.zones),
            "conduits": len(p.conduits),
        }
    table = pipeline.flows
    return {
        "tool": {"name": "conduitwatch", "version": __version__},
        "captures": captures,
        "policy": policy_info,
        "totals": {
            "packets": stats.packets,
            "bytes": stats.bytes,
            "first_packet": _ts(stats.first_ts) if stats.packets and stats.first_ts else None,
            "last_packet": _ts(stats.last_ts) if stats.packets else None,
            "flows": table.created,
            "flows_evicted": table.evicted,
            "malformed_packets": stats.malformed,
            "unsupported_link_packets": stats.unsupported_link,
        },
        "decoder_anomalies": dict(sorted(pipeline.dissector.anomalies.items())),
        "application_anomalies": {n: d["anomalies"] for n, d in app.items() if d["anomalies"]},
        "stream_gaps": gaps,
    }


# ---------------------------------------------------------------------------------------------
# zones


def zone_model(collector: ReportCollector, policy: CompiledPolicy | None) -> dict[str, Any]:
    matrix = []
    used: dict[str, int] = {}
    uncovered = []
    for (src, dst), pair in sorted(collector.pairs.items()):
        matrix.append(
            {
                "src_zone": src,
                "dest_zone": dst,
                "flows": pair.flows,
                "packets": pair.packets,
                "bytes": pair.bytes,
                "protocols": dict(sorted(pair.protocols.items())),
                "operations": dict(sorted(pair.operations.items())),
                "conduits": dict(sorted(pair.conduits.items())),
            }
        )
        for conduit, n in pair.conduits.items():
            used[conduit] = used.get(conduit, 0) + n
        for protocol, n in sorted(pair.uncovered.items()):
            uncovered.append({"src_zone": src, "dest_zone": dst, "protocol": protocol, "flows": n})
    zones = []
    unused = []
    if policy is not None:
        p = policy.policy
        for z in p.zones:
            zones.append(
                {
                    "id": z.id,
                    "name": z.name,
                    "purdue_level": z.purdue_level,
                    "safety": z.safety,
                    "sl_t": list(z.sl_t) if z.sl_t else None,
                    "networks": [str(n) for n in z.networks],
                    "vlans": sorted(z.vlans),
                }
            )
        for c in p.conduits:
            if c.id not in used:
                unused.append({"id": c.id, "zones": list(c.zones), "flows": [f.id for f in c.flows]})
    return {
        "zones": zones,
        "conduits": []
        if policy is None
        else [
            {
                "id": c.id,
                "zones": list(c.zones),
                "sl_t": list(c.sl_t) if c.sl_t else None,
                "flows_seen": used.get(c.id, 0),
            }
            for c in policy.policy.conduits
        ],
        "matrix": matrix,
        "unused_conduits": unused,
        "uncovered": uncovered,
        "pairs_dropped": collector.pairs_dropped,
    }


# ---------------------------------------------------------------------------------------------
# findings


def _wireshark_filter(fields: dict[str, Any]) -> str:
    src, dst = fields.get("src_ip"), fields.get("dest_ip")
    if not src or not dst:
        return ""
    family = "ipv6" if ":" in str(src) else "ip"
    text = f"{family}.addr == {src} && {family}.addr == {dst}"
    proto = str(fields.get("proto", "")).lower()
    if proto in ("tcp", "udp") and "dest_port" in fields:
        # The responder port only: a finding merges every flow between the two hosts on that service.
        text += f" && {proto}.port == {fields['dest_port']}"
    return text


def _key(event_type: str, fields: dict[str, Any]) -> tuple[Any, ...]:
    body = fields.get(event_type, {})
    policy = fields.get("policy") or {}
    return (
        event_type,
        body.get("signature_id"),
        body.get("signature"),
        fields.get("src_ip"),
        fields.get("dest_ip"),
        fields.get("dest_port"),
        policy.get("conduit"),
        policy.get("operation"),
    )


def _refs(metadata: dict[str, Any], *keys: str) -> list[str]:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, list):
            return sorted(str(v) for v in value)
    return []


def findings(
    events: EventCollector,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(violations and other alerts, audits, incidents), each merged from its folded events."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    incident_events: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for event_type, ts, fields in events.events:
        body = fields.get(event_type, {})
        sid = body.get("signature_id")
        metadata = body.get("metadata") or {}
        incident = metadata.get("incident") if isinstance(metadata, dict) else None
        if event_type == "alert" and (isinstance(incident, dict) or sid in INCIDENT_SIDS):
            ident = (
                str(incident.get("id"))
                if isinstance(incident, dict) and "id" in incident
                else (f"{sid}:{fields.get('src_ip')}:{fields.get('dest_ip')}")
            )
            incident_events.setdefault(ident, []).append((ts, fields))
            continue
        key = _key(event_type, fields)
        record = merged.get(key)
        occurrence = {
            "pcap_filename": fields.get("pcap_filename", ""),
            "pcap_cnt": fields.get("pcap_cnt", 0),
            "timestamp": _ts(ts),
        }
        count = int(body.get("count", 1) or 1)
        if record is None:
            policy = fields.get("policy") or {}
            record = merged[key] = {
                "kind": event_type,
                "rule": body.get("rule", ""),
                "signature_id": sid,
                "severity": body.get("severity"),
                "category": body.get("category", ""),
                "signature": body.get("signature", ""),
                "src_ip": fields.get("src_ip", ""),
                "dest_ip": fields.get("dest_ip", ""),
                "dest_port": fields.get("dest_port"),
                "proto": fields.get("proto", ""),
                "app_proto": fields.get("app_proto", ""),
                "src_zone": policy.get("src_zone"),
                "dest_zone": policy.get("dest_zone"),
                "conduit": policy.get("conduit"),
                "policy_rule": policy.get("rule"),
                "operation": policy.get("operation"),
                "count": 0,
                "first_seen": body.get("first_seen") or _ts(ts),
                "last_seen": body.get("last_seen") or _ts(ts),
                "occurrences": [],
                "more_occurrences": 0,
                "wireshark_filter": _wireshark_filter(fields),
                "iec62443_sr": _refs(metadata, "iec62443_sr"),
                "iso27001": _refs(metadata, "iso27001_annex_a", "iso27001"),
            }
        record["count"] += count
        record["first_seen"] = min(record["first_seen"], body.get("first_seen") or _ts(ts))
        record["last_seen"] = max(record["last_seen"], body.get("last_seen") or _ts(ts))
        if len(record["occurrences"]) < MAX_OCCURRENCES:
            record["occurrences"].append(occurrence)
        else:
            record["more_occurrences"] += 1
    alerts: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    for record in merged.values():
        record["occurrences"].sort(key=lambda o: (o["timestamp"], o["pcap_filename"], o["pcap_cnt"]))
        (audits if record["kind"] == "audit" else alerts).append(record)

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["first_seen"],
            r["signature_id"] or 0,
            r["src_ip"],
            r["dest_ip"],
            str(r["dest_port"]),
            r["signature"],
        )

    alerts.sort(key=order)
    audits.sort(key=order)
    for i, r in enumerate(alerts, 1):
        r["id"] = f"F-{i:04d}"
    for i, r in enumerate(audits, 1):
        r["id"] = f"A-{i:04d}"
    return alerts, audits, _incidents(incident_events)


_NOT_DETECTOR_DATA = frozenset({"alert", "policy", "asset", "tcp", "flow"})
MAX_DETAILS = 48  # flattened values per incident in the tables; "data" keeps them all


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if len(out) >= MAX_DETAILS:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    elif isinstance(value, list):
        if value and all(isinstance(v, str | int | float) for v in value):
            out[prefix] = ", ".join(str(v) for v in value)
        else:
            for i, item in enumerate(value[:5]):
                _flatten(f"{prefix}[{i}]", item, out)
    elif isinstance(value, str | int | float | bool) or value is None:
        out[prefix] = value


def _incidents(grouped: dict[str, list[tuple[float, dict[str, Any]]]]) -> list[dict[str, Any]]:
    out = []
    for ident, items in grouped.items():
        items.sort(key=lambda item: item[0])
        first_fields = items[0][1]
        last_fields = items[-1][1]
        body = last_fields.get("alert", {})
        metadata = body.get("metadata") or {}
        found = metadata.get("incident")
        incident: dict[str, Any] = found if isinstance(found, dict) else {}
        states = [(it[1].get("alert", {}).get("metadata") or {}).get("incident", {}) for it in items]
        cleared = next(
            (
                _ts(ts)
                for (ts, _f), st in zip(items, states, strict=True)
                if isinstance(st, dict) and st.get("state") == "cleared"
            ),
            None,
        )
        details = {
            k: v
            for k, v in sorted(incident.items())
            if k not in ("id", "state") and isinstance(v, str | int | float | bool)
        }
        # The detector's own object beside ``alert`` (e.g. ``floods``: link, peak utilisation,
        # transfers, control flows with latency before/during): kept whole, and flattened for tables.
        data = {k: v for k, v in last_fields.items() if isinstance(v, dict) and k not in _NOT_DETECTOR_DATA}
        for name, value in data.items():
            _flatten(name, value, details)
        out.append(
            {
                "incident": ident,
                "kind": str(incident.get("kind") or body.get("rule") or body.get("category") or ""),
                "signature_id": body.get("signature_id"),
                "severity": body.get("severity"),
                # The raise says what happened; the later events' sentences say how it went on.
                "signature": first_fields.get("alert", {}).get("signature", "") or body.get("signature", ""),
                "last_signature": body.get("signature", ""),
                "started": str(incident.get("started") or _ts(items[0][0])),
                "ended": cleared,
                "state": str(incident.get("state", "")),
                "events": len(items),
                "pcap_filename": first_fields.get("pcap_filename", ""),
                "pcap_cnt": first_fields.get("pcap_cnt", 0),
                "details": details,
                "data": data,
                "iec62443_sr": _refs(metadata, "iec62443_sr"),
                "iso27001": _refs(metadata, "iso27001_annex_a", "iso27001"),
            }
        )
    out.sort(key=lambda r: (r["started"], r["signature_id"] or 0, r["incident"]))
    for i, r in enumerate(out, 1):
        r["id"] = f"I-{i:04d}"
    return out


def integrity_findings(collector: ReportCollector, policy: CompiledPolicy | None) -> list[dict[str, Any]]:
    """SR 3.1: cleartext industrial protocols on conduits whose SL-T asks for integrity (FR3 >= 2)."""
    if policy is None:
        return []
    conduit_sl = {c.id: c.sl_t for c in policy.policy.conduits}
    out = []
    for (src, dst), pair in sorted(collector.pairs.items()):
        if not pair.cleartext_ot or src == dst or NO_ZONE in (src, dst):
            continue
        for conduit in sorted(pair.conduits):
            sl_t = conduit_sl.get(conduit) or (policy.zones[dst].sl_t if dst in policy.zones else None)
            if sl_t is None or sl_t[2] < 2:
                continue
            protocols = ", ".join(f"{p} ({n} requests)" for p, n in sorted(pair.cleartext_ot.items()))
            out.append(
                {
                    "src_zone": src,
                    "dest_zone": dst,
                    "conduit": conduit,
                    "sl_t_fr3": sl_t[2],
                    "signature": f"cleartext {protocols} from {src} to {dst} over conduit {conduit}, "
                    f"whose SL-T for FR3 (system integrity) is {sl_t[2]}",
                    "iec62443_sr": ["SR 3.1"],
                    "iso27001": ["A.8.20"],
                }
            )
    for i, r in enumerate(out, 1):
        r["id"] = f"R-{i:04d}"
    return out


# ---------------------------------------------------------------------------------------------
# chart


def load_chart(tap: EvidenceTap, collector: ReportCollector) -> dict[str, Any]:
    """Wire load, bulk (backup and file-transfer) load and control latency per bin (one second,
    wider for long captures)."""
    seconds = sorted(set(tap.load) | set(collector.latency) | set(collector.bulk))
    if not seconds:
        return {"bin_seconds": 1, "start": None, "points": [], "columns": CHART_COLUMNS}
    start, end = seconds[0], seconds[-1]
    width = max(1, -(-(end - start + 1) // CHART_POINTS))
    bins: dict[int, list[float]] = {}
    for second, nbytes in tap.load.items():
        bins.setdefault((second - start) // width, [0.0, 0.0, 0.0])[0] += nbytes
    for second, bulk in collector.bulk.items():
        bins.setdefault((second - start) // width, [0.0, 0.0, 0.0])[1] += bulk
    for second, (peak, _total, _count) in collector.latency.items():
        b = bins.setdefault((second - start) // width, [0.0, 0.0, 0.0])
        b[2] = max(b[2], peak)
    points = [
        [i * width, round(b[0] * 8 / width / 1e6, 6), round(b[1] * 8 / width / 1e6, 6), round(b[2] * 1000, 3)]
        for i, b in sorted(bins.items())
    ]
    return {"bin_seconds": width, "start": _ts(start), "points": points, "columns": CHART_COLUMNS}


def drift_findings(alerts: list[dict[str, Any]], zones: dict[str, Any]) -> list[str]:
    """The policy findings about traffic no rule allowed, between the zone pairs of ``uncovered``."""
    pairs = {(u["src_zone"], u["dest_zone"]) for u in zones["uncovered"]}
    return [
        f["id"]
        for f in alerts
        if f["rule"] in POLICY_RULES
        and f["policy_rule"] is None
        and (f["src_zone"] or NO_ZONE, f["dest_zone"] or NO_ZONE) in pairs
    ]


def build(
    analysis: Analysis,
    tap: EvidenceTap,
    collector: ReportCollector,
    events: EventCollector,
    assets: list[AssetRecord],
    oui_missing: str,
    policy_path: str | None,
    policy: CompiledPolicy | None,
    generated_at: str,
) -> dict[str, Any]:
    alerts, audits, incidents = findings(events)
    integrity = integrity_findings(collector, policy)
    basis = {
        "policy": policy is not None,
        "time_sync": collector.time_sync > 0,
        "backup": collector.backup_flows > 0,
        "remote_access": collector.remote_access > 0,
    }
    cited = alerts + integrity + [dict(i, id=i["id"]) for i in incidents]
    zones = zone_model(collector, policy)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated_at,
        "evidence": evidence(analysis, tap, policy_path, policy),
        "zone_model": zones,
        "findings": alerts,
        "integrity_findings": integrity,
        "audits": audits,
        "incidents": incidents,
        "load_chart": load_chart(tap, collector),
        "assets": [a.as_dict() for a in assets],
        "assets_note": oui_missing,
        "compliance": compliance.table(
            cited, basis, drift_findings(alerts, zones), sum(u["flows"] for u in zones["uncovered"])
        ),
        "limits": {
            "events_dropped": events.dropped,
            "chart_bins_dropped": tap.bins_dropped,
            "zone_pairs_dropped": collector.pairs_dropped,
        },
    }
