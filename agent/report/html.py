"""The report as one self-contained HTML page: no script, no external asset, prints on A4.

Rendered from the JSON document only (agent.report.model), so both always say the same thing.
Every value from the captures or the policy is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

SECTIONS = (
    ("evidence", "1. Evidence"),
    ("zones", "2. Zones and conduits"),
    ("findings", "3. Findings"),
    ("audits", "4. Audited operations"),
    ("incidents", "5. Backup interference and degradation"),
    ("assets", "6. Asset inventory"),
    ("compliance", "7. Compliance"),
)

_CSS = """
@page { size: A4; margin: 14mm 12mm; }
body { font: 10pt/1.35 "DejaVu Sans", Arial, sans-serif; color: #111; margin: 0 auto; max-width: 1100px;
       padding: 0 12px; }
h1 { font-size: 18pt; margin: 12px 0 4px; }
h2 { font-size: 13pt; border-bottom: 2px solid #345; margin-top: 22px; page-break-after: avoid; }
h3 { font-size: 11pt; margin: 14px 0 4px; page-break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 8.5pt; }
th, td { border: 1px solid #bbb; padding: 2px 4px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #e8edf2; }
tr { page-break-inside: avoid; }
thead { display: table-header-group; }
.num { text-align: right; white-space: nowrap; }
.id { white-space: nowrap; }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; }
.muted { color: #555; }
.status-conformity { background: #dff0d8; }
.status-non-conformity { background: #f8d7da; }
.status-not-passively-observable { background: #eee; }
.sev-1 { border-left: 4px solid #b00; }
.sev-2 { border-left: 4px solid #d80; }
.sev-3 { border-left: 4px solid #aaa; }
nav ol { columns: 2; font-size: 9pt; }
section { page-break-before: auto; }
svg { max-width: 100%; height: auto; }
@media print { nav { display: none; } a { color: inherit; text-decoration: none; } }
"""


def _e(value: Any) -> str:
    if value is None:
        return ""
    return escape(str(value), quote=True)


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(
    head: list[str],
    rows: list[list[str]],
    numeric: frozenset[int] = frozenset(),
    row_class: list[str] | None = None,
) -> str:
    """Cells are HTML already (escaped by the caller)."""
    if not rows:
        return '<p class="muted">None.</p>'
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        out.append(f"<tr{cls}>")
        out.extend(
            f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(row)
        )
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{_e(k)}&nbsp;{_num(v)}" for k, v in counts.items())


def _evidence(doc: dict[str, Any]) -> str:
    ev = doc["evidence"]
    rows = []
    for c in ev["captures"]:
        links = ", ".join(f"{_e(lt['name'])} ({_num(lt['packets'])})" for lt in c["link_types"])
        damage = "<br>".join(_e(d) for d in c["damage"]) or "none"
        rows.append(
            [
                _e(c["name"]),
                f'<span class="mono">{_e(c["sha256"])}</span>',
                _num(c["bytes"]),
                _num(c["packets"]),
                f"{_e(c['first_packet'])}<br>{_e(c['last_packet'])}",
                f"{c['duration_s']:.3f}",
                links,
                damage,
            ]
        )
    parts = [
        _table(
            [
                "capture",
                "SHA-256",
                "bytes",
                "packets",
                "first / last packet",
                "span (s)",
                "link types",
                "damage or gaps",
            ],
            rows,
            frozenset({2, 3, 5}),
        )
    ]
    policy = ev["policy"]
    t = ev["totals"]
    facts = [
        ("tool", f"{ev['tool']['name']} {ev['tool']['version']}"),
        (
            "policy",
            f"{policy['path']} (system {policy['system']}; {policy['zones']} zones, "
            f"{policy['conduits']} conduits)"
            if policy
            else "none given: traffic not judged",
        ),
        ("policy SHA-256", policy["sha256"] if policy else "-"),
        ("packets / bytes", f"{t['packets']:,} / {t['bytes']:,}"),
        ("flows", f"{t['flows']:,} ({t['flows_evicted']:,} evicted from a full table)"),
        ("malformed packets", f"{t['malformed_packets']:,}"),
        ("decoder anomalies", ", ".join(f"{k} {v}" for k, v in ev["decoder_anomalies"].items()) or "none"),
        (
            "application anomalies",
            "; ".join(
                f"{p}: " + ", ".join(f"{k} {v}" for k, v in a.items())
                for p, a in ev["application_anomalies"].items()
            )
            or "none",
        ),
        ("TCP stream gaps", ", ".join(f"{k} {v}" for k, v in ev["stream_gaps"].items()) or "none"),
        ("generated at", doc["generated_at"]),
    ]
    parts.append(_table(["item", "value"], [[_e(k), _e(v)] for k, v in facts]))
    return "".join(parts)


def _zones(doc: dict[str, Any]) -> str:
    zm = doc["zone_model"]
    parts = []
    if zm["zones"]:
        rows = [
            [
                _e(z["id"]),
                _e(z["name"]),
                _e(z["purdue_level"]),
                "yes" if z["safety"] else "",
                _e(",".join(map(str, z["sl_t"])) if z["sl_t"] else ""),
                _e(", ".join(z["networks"])),
                _e(", ".join(map(str, z["vlans"]))),
            ]
            for z in zm["zones"]
        ]
        parts.append("<h3>Declared zones</h3>")
        parts.append(
            _table(["zone", "name", "Purdue level", "safety", "SL-T (FR1-7)", "networks", "VLANs"], rows)
        )
    parts.append("<h3>Observed zone x zone traffic (initiator &rarr; responder)</h3>")
    if not zm["zones"]:
        parts.append(
            '<p class="muted">No policy given: networks (VLAN, else /24 or /64) stand in for zones, '
            "and no traffic is judged.</p>"
        )
    rows = [
        [
            _e(m["src_zone"]),
            _e(m["dest_zone"]),
            _num(m["flows"]),
            _num(m["bytes"]),
            _counts(m["protocols"]),
            _counts(m["operations"]),
            _counts(m["conduits"]) or '<span class="muted">none</span>',
        ]
        for m in zm["matrix"]
    ]
    parts.append(
        _table(
            [
                "from",
                "to",
                "flows",
                "bytes",
                "protocols (flows)",
                "operation classes (requests)",
                "conduits used (flows)",
            ],
            rows,
            frozenset({2, 3}),
        )
    )
    parts.append("<h3>Conduits never used</h3>")
    parts.append(
        _table(
            ["conduit", "zones", "flow rules"],
            [
                [_e(c["id"]), _e(" - ".join(c["zones"])), _e(", ".join(c["flows"]))]
                for c in zm["unused_conduits"]
            ],
        )
    )
    parts.append("<h3>Traffic no conduit covers</h3>")
    parts.append(
        _table(
            ["from", "to", "protocol", "flows"],
            [
                [_e(u["src_zone"]), _e(u["dest_zone"]), _e(u["protocol"]), _num(u["flows"])]
                for u in zm["uncovered"]
            ],
            frozenset({3}),
        )
    )
    return "".join(parts)


def _occurrences(f: dict[str, Any]) -> str:
    shown = "<br>".join(
        f"{_e(o['pcap_filename'])} #{_e(o['pcap_cnt'])} @ {_e(o['timestamp'])}" for o in f["occurrences"]
    )
    if f["more_occurrences"]:
        shown += f"<br>... {f['more_occurrences']} more events"
    return f'<span class="mono">{shown}</span>'


def _finding_rows(items: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    rows, classes = [], []
    for f in items:
        where = f"{_e(f['src_zone'])} &rarr; {_e(f['dest_zone'])}" + (
            f"<br>conduit {_e(f['conduit'])}" if f["conduit"] else ""
        )
        refs = _e(", ".join(f["iec62443_sr"] + f["iso27001"]))
        rows.append(
            [
                f'<a id="{_e(f["id"])}"></a><span class="id">{_e(f["id"])}</span>',
                _e(f["signature_id"]),
                _e(f["category"]),
                _e(f["signature"]),
                where,
                _num(f["count"]),
                _occurrences(f),
                f'<span class="mono">{_e(f["wireshark_filter"])}</span>',
                refs,
            ]
        )
        classes.append(f"sev-{f['severity']}" if f.get("severity") in (1, 2, 3) else "")
    return rows, classes


_FINDING_HEAD = [
    "id",
    "signature",
    "category",
    "what happened",
    "zones",
    "count",
    "capture #packet @ time",
    "Wireshark filter",
    "SR / Annex A",
]


def _findings(doc: dict[str, Any]) -> str:
    rows, classes = _finding_rows(doc["findings"])
    parts = [_table(_FINDING_HEAD, rows, frozenset({5}), classes)]
    if doc["integrity_findings"]:
        parts.append("<h3>Communication integrity (SR 3.1)</h3>")
        parts.append(
            _table(
                ["id", "what", "SL-T FR3"],
                [
                    [
                        f'<a id="{_e(r["id"])}"></a><span class="id">{_e(r["id"])}</span>',
                        _e(r["signature"]),
                        _e(r["sl_t_fr3"]),
                    ]
                    for r in doc["integrity_findings"]
                ],
            )
        )
    return "".join(parts)


def _audits(doc: dict[str, Any]) -> str:
    rows, classes = _finding_rows(doc["audits"])
    return _table(_FINDING_HEAD, rows, frozenset({5}), classes)


def chart_svg(
    chart: dict[str, Any], incidents: list[dict[str, Any]], width: int = 760, height: int = 240
) -> str:
    """Bulk load (bars, left axis) and control latency (line, right axis) over packet time."""
    points = chart["points"]
    if not points:
        return '<p class="muted">No traffic to chart.</p>'
    left, right, top, bottom = 56, 56, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    span: float = max(points[-1][0] + chart["bin_seconds"], 1)
    max_load = max(p[1] for p in points) or 1.0
    max_lat = max(p[3] for p in points) or 1.0

    def x(offset: float) -> float:
        return left + plot_w * offset / span

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="bulk load and control latency over time">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>',
    ]
    start = chart["start"] or ""
    for inc in incidents:
        s, e = _offset(inc["started"], start), _offset(inc["ended"] or "", start)
        if s is None:
            continue
        end = e if e is not None else span
        out.append(
            f'<rect x="{x(s):.1f}" y="{top}" width="{max(x(end) - x(s), 1.5):.1f}" height="{plot_h}" '
            f'fill="#f5c6cb" opacity="0.6"><title>{_e(inc["id"])} {_e(inc["kind"])}</title></rect>'
        )
    bar_w = max(plot_w * chart["bin_seconds"] / span, 0.5)
    for offset, load, bulk, _lat in points:
        for value, colour in ((load, "#b9cde5"), (min(bulk, load) if load else bulk, "#2f5f98")):
            h = plot_h * value / max_load
            if h > 0:
                out.append(
                    f'<rect x="{x(offset):.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                    f'height="{h:.1f}" fill="{colour}"/>'
                )
    line = [
        f"{x(o + chart['bin_seconds'] / 2):.1f},{top + plot_h - plot_h * lat / max_lat:.1f}"
        for o, _l, _b, lat in points
        if lat > 0
    ]
    if line:
        out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#c0392b" stroke-width="1.5"/>')
    out.append(f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{max_load:.2f}</text>')
    out.append(f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>')
    out.append(
        f'<text x="{width - right + 4}" y="{top + 10}" font-size="10" fill="#c0392b">{max_lat:.1f}</text>'
    )
    out.append(f'<text x="{left}" y="{height - 18}" font-size="10">0 s</text>')
    out.append(
        f'<text x="{left + plot_w}" y="{height - 18}" font-size="10" text-anchor="end">{span} s</text>'
    )
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" font-size="10" text-anchor="middle">'
        f"packet time from {_e(start)}; bars: wire load, dark: backup and file transfers, Mbit/s (left); "
        f"line: max control latency ms (right); bins of {chart['bin_seconds']} s</text>"
    )
    out.append("</svg>")
    return "".join(out)


def _offset(ts: str, start: str) -> float | None:
    from datetime import datetime

    if not ts or not start:
        return None
    try:
        return float((datetime.fromisoformat(ts) - datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return None


def _incidents(doc: dict[str, Any]) -> str:
    parts = [chart_svg(doc["load_chart"], doc["incidents"])]
    rows = []
    for i in doc["incidents"]:
        details = ", ".join(f"{_e(k)}={_e(v)}" for k, v in i["details"].items())
        rows.append(
            [
                f'<a id="{_e(i["id"])}"></a><span class="id">{_e(i["id"])}</span>',
                _e(i["kind"]),
                _e(i["signature"]),
                _e(i["started"]),
                _e(i["ended"] or "still active at the end"),
                _num(i["events"]),
                f"{_e(i['pcap_filename'])} #{_e(i['pcap_cnt'])}",
                details,
                _e(", ".join(i["iec62443_sr"] + i["iso27001"])),
            ]
        )
    parts.append(
        _table(
            ["id", "kind", "what", "started", "cleared", "events", "first packet", "details", "SR / Annex A"],
            rows,
            frozenset({5}),
        )
    )
    return "".join(parts)


def _assets(doc: dict[str, Any]) -> str:
    rows = []
    for a in doc["assets"]:
        ident = "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in a["identity"].items())
        if a["identity_source"]:
            ident += f'<br><span class="muted">{_e(a["identity_source"])}</span>'
        roles = "<br>".join(f"<b>{_e(r['role'])}</b>: {_e(r['evidence'])}" for r in a["roles"])
        address = _e(a["address"])
        if a["via"]:  # a device on another BACnet network: its address says nothing without the router
            address += f'<br><span class="muted">via {_e(", ".join(a["via"]))}</span>'
        rows.append(
            [
                address,
                _e(a["mac"]),
                _e(a["vendor"]),
                _e(",".join(map(str, a["vlans"]))),
                _e(a["zone"]),
                roles,
                _e(" ".join(a["protocols_served"])),
                _e(" ".join(a["protocols_used"])),
                ident,
                f"{_e(a['first_seen'])}<br>{_e(a['last_seen'])}",
            ]
        )
    note = f'<p class="muted">{_e(doc["assets_note"])}</p>' if doc["assets_note"] else ""
    return note + _table(
        [
            "address",
            "MAC",
            "vendor (IEEE OUI)",
            "VLAN",
            "zone",
            "role and evidence",
            "serves",
            "uses",
            "identity from the wire",
            "first / last seen",
        ],
        rows,
    )


def _compliance(doc: dict[str, Any]) -> str:
    rows, classes = [], []
    for c in doc["compliance"]:
        links = ", ".join(f'<a href="#{_e(f)}">{_e(f)}</a>' for f in c["findings"])
        rows.append(
            [_e(c["framework"]), _e(c["id"]), _e(c["title"]), _e(c["status"]), _e(c["reason"]), links]
        )
        classes.append("status-" + c["status"].replace(" ", "-"))
    return _table(["framework", "item", "title", "status", "basis", "findings"], rows, row_class=classes)


def render(doc: dict[str, Any]) -> str:
    ev = doc["evidence"]
    title = "conduitwatch evidence report"
    names = ", ".join(c["name"] for c in ev["captures"])
    bodies = {
        "evidence": _evidence,
        "zones": _zones,
        "findings": _findings,
        "audits": _audits,
        "incidents": _incidents,
        "assets": _assets,
        "compliance": _compliance,
    }
    counts = (
        f"{len(doc['findings'])} findings, {len(doc['audits'])} audited operations, "
        f"{len(doc['incidents'])} incidents, {len(doc['assets'])} assets"
    )
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><p>{_e(names)}<br>{_e(counts)}<br>"
        f'<span class="muted">generated {_e(doc["generated_at"])} by conduitwatch '
        f"{_e(ev['tool']['version'])}</span></p>",
        "<nav><ol>",
        *(f'<li><a href="#{sid}">{_e(t[3:])}</a></li>' for sid, t in SECTIONS),
        "</ol></nav>",
    ]
    for sid, heading in SECTIONS:
        out.append(f'<section id="{sid}"><h2>{_e(heading)}</h2>{bodies[sid](doc)}</section>')
    out.append("</body></html>\n")
    return "\n".join(out)
