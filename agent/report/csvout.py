"""The report's tables as CSV files for spreadsheets (one file a table, UTF-8, header row first)."""

from __future__ import annotations

import csv
import io
from typing import Any

from agent.assets.cli import CSV_COLUMNS as ASSET_COLUMNS


def _text(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([["" if v is None else str(v) for v in r] for r in rows])
    return out.getvalue()


def _pairs(counts: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


def _findings(items: list[dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [
            "id",
            "kind",
            "signature_id",
            "severity",
            "category",
            "signature",
            "src_ip",
            "dest_ip",
            "dest_port",
            "src_zone",
            "dest_zone",
            "conduit",
            "operation",
            "count",
            "first_seen",
            "last_seen",
            "packets",
            "wireshark_filter",
            "iec62443_sr",
            "iso27001",
        ]
    ]
    for f in items:
        packets = " ".join(f"{o['pcap_filename']}#{o['pcap_cnt']}" for o in f["occurrences"])
        rows.append(
            [
                f["id"],
                f["kind"],
                f["signature_id"],
                f["severity"],
                f["category"],
                f["signature"],
                f["src_ip"],
                f["dest_ip"],
                f["dest_port"],
                f["src_zone"],
                f["dest_zone"],
                f["conduit"],
                f["operation"],
                f["count"],
                f["first_seen"],
                f["last_seen"],
                packets,
                f["wireshark_filter"],
                " ".join(f["iec62443_sr"]),
                " ".join(f["iso27001"]),
            ]
        )
    return rows


def tables(doc: dict[str, Any], asset_rows: list[list[str]]) -> dict[str, str]:
    """File name -> CSV text."""
    ev = doc["evidence"]
    evidence = [
        [
            "capture",
            "sha256",
            "bytes",
            "packets",
            "first_packet",
            "last_packet",
            "duration_s",
            "link_types",
            "damage",
        ]
    ]
    for c in ev["captures"]:
        evidence.append(
            [
                c["name"],
                c["sha256"],
                c["bytes"],
                c["packets"],
                c["first_packet"],
                c["last_packet"],
                c["duration_s"],
                " ".join(f"{lt['name']}={lt['packets']}" for lt in c["link_types"]),
                " | ".join(c["damage"]),
            ]
        )
    matrix = [["src_zone", "dest_zone", "flows", "packets", "bytes", "protocols", "operations", "conduits"]]
    for m in doc["zone_model"]["matrix"]:
        matrix.append(
            [
                m["src_zone"],
                m["dest_zone"],
                m["flows"],
                m["packets"],
                m["bytes"],
                _pairs(m["protocols"]),
                _pairs(m["operations"]),
                _pairs(m["conduits"]),
            ]
        )
    incidents = [
        [
            "id",
            "incident",
            "kind",
            "signature_id",
            "signature",
            "started",
            "ended",
            "events",
            "pcap_filename",
            "pcap_cnt",
            "details",
        ]
    ]
    for i in doc["incidents"]:
        incidents.append(
            [
                i["id"],
                i["incident"],
                i["kind"],
                i["signature_id"],
                i["signature"],
                i["started"],
                i["ended"],
                i["events"],
                i["pcap_filename"],
                i["pcap_cnt"],
                _pairs(i["details"]),
            ]
        )
    integrity = [
        ["id", "src_zone", "dest_zone", "conduit", "sl_t_fr3", "signature", "iec62443_sr", "iso27001"]
    ]
    for r in doc["integrity_findings"]:
        integrity.append(
            [
                r["id"],
                r["src_zone"],
                r["dest_zone"],
                r["conduit"],
                r["sl_t_fr3"],
                r["signature"],
                " ".join(r["iec62443_sr"]),
                " ".join(r["iso27001"]),
            ]
        )
    compliance = [["framework", "id", "title", "status", "reason", "findings"]]
    for c in doc["compliance"]:
        compliance.append(
            [c["framework"], c["id"], c["title"], c["status"], c["reason"], " ".join(c["findings"])]
        )
    assert asset_rows[0] == list(ASSET_COLUMNS)
    return {
        "evidence.csv": _text(evidence),
        "zone_matrix.csv": _text(matrix),
        "findings.csv": _text(_findings(doc["findings"])),
        "integrity.csv": _text(integrity),
        "audits.csv": _text(_findings(doc["audits"])),
        "incidents.csv": _text(incidents),
        "assets.csv": _text(asset_rows),
        "compliance.csv": _text(compliance),
    }
