"""Writes the Grafana dashboards of conduitwatch (dashboards/*.json) from the panel lists below.

``python dashboards/generate.py`` rewrites the JSON files; a test checks that the committed files are
what this script produces, so the queries are reviewed here, in one readable place, and the JSON
(uids, ids, grid positions, datasource references) stays consistent by construction.

Every panel queries through the ``$datasource`` variable and filters on ``$instance`` (one or several
sensors). Queries use ``$__rate_interval`` so that they stay right at any scrape interval.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.ports import CATEGORIES

# The backup category as the agent names it (backup protocols and products), and FTP/SFTP transfers.
BACKUP_PROTOCOLS = "|".join(sorted(CATEGORIES["backup"] | {"ftp-data", "sftp"}))

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # noqa: E741 - every query filters on the instance variable
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    kind: str = "timeseries"  # timeseries | stat | table | bargauge
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    instant: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)  # Grafana field overrides


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel | str]  # a str starts a new row with that title
    extra_variables: list[dict[str, Any]] = field(default_factory=list)


def _variables(extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "instance",
            "label": "Sensor",
            "type": "query",
            "datasource": DS,
            "definition": "label_values(conduitwatch_build_info, instance)",
            "query": {"query": "label_values(conduitwatch_build_info, instance)", "refId": "instance"},
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "current": {},
            "refresh": 2,
            "sort": 1,
            "hide": 0,
            "regex": "",
        },
        *extra,
    ]


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "expr": expr,
            "legendFormat": legend,
            "range": not panel.instant,
            "instant": panel.instant,
            **({"format": "table"} if panel.kind == "table" else {}),
        }
        for i, (expr, legend) in enumerate(panel.targets)
    ]
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": panel.overrides},
        "options": panel.options,
    }
    if panel.kind == "timeseries":
        out["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "lineWidth": 1, "spanNulls": True}
        out["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["max", "mean"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}, **panel.options}  # fmt: skip
    if panel.kind == "table":
        out["transformations"] = [{"id": "merge", "options": {}}]
    return out


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    x = y = 0
    row_height = 0
    pid = 1
    for item in dashboard.panels:
        if isinstance(item, str):
            y += row_height
            x, row_height = 0, 0
            panels.append({"id": pid, "type": "row", "title": item, "collapsed": False, "panels": [],
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})  # fmt: skip
            pid += 1
            y += 1
            continue
        if x + item.width > 24:
            y += row_height
            x, row_height = 0, 0
        panels.append(_panel(item, pid, x, y))
        pid += 1
        x += item.width
        row_height = max(row_height, item.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["conduitwatch", "ot", "iec62443"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: one time axis across panels
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "links": [
            {"type": "dashboards", "tags": ["conduitwatch"], "asDropdown": True, "title": "conduitwatch"}
        ],
        "templating": {"list": _variables(dashboard.extra_variables)},
        "annotations": {"list": []},
        "panels": panels,
    }


def _rate(metric: str, by: str, selector: str = "", scale: str = "") -> str:
    sel = f"{{{I}{', ' + selector if selector else ''}}}"
    return f"{scale}sum by ({by}) (rate({metric}{sel}[{RI}]))"


def _column(name: str, title: str, unit: str) -> dict[str, Any]:
    """A table column's own title and unit (a table merges its queries' values as "Value #<refId>")."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": "displayName", "value": title}, {"id": "unit", "value": unit}],
    }


def _quantile(q: str) -> tuple[str, str]:
    expr = (f"histogram_quantile({q}, sum by (le, zone, protocol) "
            f"(rate(conduitwatch_request_latency_seconds_bucket{{{I}, zone=~\"$zone\"}}[{RI}])))")  # fmt: skip
    return expr, f"p{round(float(q) * 100)} {{{{zone}}}} {{{{protocol}}}}"


OVERVIEW = Dashboard(
    uid="conduitwatch-overview",
    title="conduitwatch / Sensor overview",
    description="Is every sensor up, capturing, keeping up with the link, and decoding what it sees?",
    panels=[
        "Sensor health",
        Panel(
            "Sensors scraped",
            [(f'sum(up{{job=~"conduitwatch.*", {I}}})', "up")],
            kind="stat",
            width=4,
            height=4,
            description="Sensors Prometheus reaches (up == 1).",
        ),
        Panel(
            "Capturing",
            [(f"sum(conduitwatch_capture_up{{{I}}})", "capturing")],
            kind="stat",
            width=4,
            height=4,
            description="Sensors whose capture loop runs.",
        ),
        Panel(
            "Policy reload OK",
            [(f"min(conduitwatch_policy_reload_success{{{I}}})", "ok")],
            kind="stat",
            width=4,
            height=4,
            description="0 when a sensor refused its last policy reload.",
        ),
        Panel(
            "Kernel drops (5 min)",
            [
                (
                    f'sum(increase(conduitwatch_capture_dropped_packets_total{{{I}, reason="kernel"}}[5m]))',
                    "drops",
                )
            ],
            kind="stat",
            width=4,
            height=4,
            description="Frames the kernel dropped because the agent fell behind.",
        ),
        Panel(
            "Flow table use",
            [(f"max(conduitwatch_flows_active{{{I}}} / conduitwatch_flows_max{{{I}}})", "use")],
            kind="stat",
            unit="percentunit",
            width=4,
            height=4,
        ),
        Panel(
            "Agent version",
            [(f"conduitwatch_build_info{{{I}}}", "{{instance}} {{version}}")],
            kind="stat",
            width=4,
            height=4,
            instant=True,
            options={"textMode": "name", "reduceOptions": {"calcs": ["lastNotNull"]}},
        ),
        "Throughput and drops",
        Panel(
            "Packets per second",
            [(_rate("conduitwatch_capture_packets_total", "instance"), "{{instance}}")],
            unit="pps",
        ),
        Panel(
            "Bits per second",
            [(_rate("conduitwatch_capture_bytes_total", "instance", scale="8 * "), "{{instance}}")],
            unit="bps",
        ),
        Panel(
            "Dropped frames per second",
            [
                (
                    _rate("conduitwatch_capture_dropped_packets_total", "instance, reason"),
                    "{{instance}} {{reason}}",
                )
            ],
            unit="pps",
            description="kernel: lost before the agent read them; unsupported_link: read but not analysable.",
        ),
        Panel(
            "Flows",
            [
                (f"sum by (instance) (conduitwatch_flows_active{{{I}}})", "{{instance}} active"),
                (
                    _rate("conduitwatch_flows_ended_total", "instance, reason"),
                    "{{instance}} ended: {{reason}}/s",
                ),
            ],
        ),
        "Decoding",
        Panel(
            "Application messages per second",
            [(_rate("conduitwatch_app_messages_total", "protocol, direction"), "{{protocol}} {{direction}}")],
            unit="short",
        ),
        Panel(
            "Decoder anomalies per second",
            [
                (
                    _rate("conduitwatch_decoder_anomalies_total", "protocol")
                    + " or "
                    + _rate("conduitwatch_app_messages_total", "protocol")
                    + " * 0",
                    "{{protocol}}",
                )
            ],
            description="Malformed or odd packets and messages; protocols without anomalies show 0.",
        ),
        "Sensor process",
        Panel(
            "CPU",
            [
                (
                    f'sum by (instance) (rate(process_cpu_seconds_total{{job=~"conduitwatch.*", {I}}}[{RI}]))',
                    "{{instance}}",
                )
            ],
            unit="percentunit",
            description="1.0 = one core: the capture loop runs on one core, so near 1.0 means it is at its limit.",
        ),
        Panel(
            "Resident memory",
            [(f'process_resident_memory_bytes{{job=~"conduitwatch.*", {I}}}', "{{instance}}")],
            unit="bytes",
        ),
    ],
)

ZONES = Dashboard(
    uid="conduitwatch-zones",
    title="conduitwatch / Zones and conduits",
    description="Traffic between the policy's zones, what crosses each conduit, and what violates it.",
    panels=[
        "Traffic between zones",
        Panel(
            "Bits per second by zone pair",
            [
                (
                    _rate("conduitwatch_traffic_bytes_total", "src_zone, dest_zone", scale="8 * "),
                    "{{src_zone}} → {{dest_zone}}",
                )
            ],
            unit="bps",
            width=24,
            description="By initiator and responder zone; counted per flow (active flows included).",
        ),
        Panel(
            "Packets per second by protocol",
            [(_rate("conduitwatch_traffic_packets_total", "protocol"), "{{protocol}}")],
            unit="pps",
        ),
        Panel(
            "Traffic matrix (bytes since the sensor started)",
            [(f"sum by (src_zone, dest_zone) (conduitwatch_traffic_bytes_total{{{I}}})", "")],
            kind="table",
            unit="bytes",
            instant=True,
        ),
        "Conduits",
        Panel(
            "Industrial operations per second by conduit and class",
            [(_rate("conduitwatch_operations_total", "conduit, operation"), "{{conduit}} {{operation}}")],
            description="Requests only; conduit 'none' is traffic inside a zone or with no policy.",
        ),
        Panel(
            "Operations per second by zone acted on and protocol",
            [
                (
                    _rate("conduitwatch_operations_total", "zone, protocol, operation"),
                    "{{zone}} {{protocol}} {{operation}}",
                )
            ],
        ),
        "Violations and audits",
        Panel(
            "Policy violations per second by kind",
            [(_rate("conduitwatch_policy_violations_total", "kind, severity"), "{{kind}} ({{severity}})")],
            description="Every occurrence, including those folded into one alert event.",
        ),
        Panel(
            "Violations since the sensor started",
            [
                (
                    f"sum by (src_zone, dest_zone, kind, severity) (conduitwatch_policy_violations_total{{{I}}})",
                    "",
                )
            ],
            kind="table",
            instant=True,
        ),
        Panel(
            "Audited operations (program, upload, mode, firmware, config)",
            [(f"sum by (zone, operation) (conduitwatch_audit_events_total{{{I}}})", "")],
            kind="table",
            instant=True,
            description="Allowed but always audited (SR 2.8).",
        ),
        Panel(
            "Policy in force",
            [
                (f"conduitwatch_policy_info{{{I}}}", ""),
                (f"time() - conduitwatch_policy_reload_timestamp_seconds{{{I}}}", ""),
            ],
            kind="table",
            instant=True,
            description="Content hash, zones, conduits, and time since the last successful load.",
            overrides=[_column("Value #B", "Since last load", "s")],
        ),
    ],
)

_ZONE_VAR = [{
    "name": "zone", "label": "Zone", "type": "query", "datasource": DS,
    "definition": "label_values(conduitwatch_traffic_packets_total, dest_zone)",
    "query": {"query": "label_values(conduitwatch_traffic_packets_total, dest_zone)", "refId": "zone"},
    "includeAll": True, "allValue": ".*", "multi": True, "current": {}, "refresh": 2, "sort": 1, "hide": 0,
    "regex": "",
}]  # fmt: skip

CONTROL = Dashboard(
    uid="conduitwatch-control-health",
    title="conduitwatch / Control health",
    description="Are the messages that keep the process safe on time? Latency, jitter, retransmissions, losses.",
    extra_variables=_ZONE_VAR,
    panels=[
        "Request and response",
        Panel("Request latency p99", [_quantile("0.99")], unit="s", width=12),
        Panel("Request latency p50", [_quantile("0.5")], unit="s", width=12),
        Panel(
            "Unanswered requests per second",
            [
                (
                    _rate("conduitwatch_unanswered_requests_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
        ),
        Panel(
            "Unanswered requests per second by protocol (decoders)",
            [(_rate("conduitwatch_app_unanswered_requests_total", "protocol"), "{{protocol}}")],
            description="From the decoders' pairing tables, for every protocol, with or without a policy.",
        ),
        "Cyclic traffic",
        Panel(
            "Cyclic inter-arrival jitter (p99)",
            [
                (
                    f'max by (zone, protocol) (conduitwatch_cyclic_interarrival_jitter_seconds{{{I}, zone=~"$zone"}})',
                    "{{zone}} {{protocol}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Cyclic sequence gaps per second",
            [
                (
                    _rate("conduitwatch_cyclic_sequence_gaps_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
        ),
        "TCP on control flows",
        Panel(
            "TCP retransmissions of control flows per second",
            [
                (
                    _rate("conduitwatch_tcp_retransmissions_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
            width=8,
            description="Segments sent again after a timeout or duplicate ACKs, or received out of order: each "
            "is a control loop waiting for data it should already have had.",
        ),
        Panel(
            "TCP duplicate ACKs of control flows per second",
            [
                (
                    _rate("conduitwatch_tcp_duplicate_acks_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
            width=8,
            description="A receiver repeating its last acknowledgement: data was lost or reordered on the way.",
        ),
        Panel(
            "TCP zero windows of control flows per second",
            [
                (
                    _rate("conduitwatch_tcp_zero_windows_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
            width=8,
            description="A device advertising no receive buffer: it cannot keep up with what it is sent.",
        ),
        Panel(
            "Resets of control connections per second",
            [
                (
                    _rate("conduitwatch_tcp_resets_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
            width=24,
        ),
        "Incidents",
        Panel(
            "Active incidents",
            [(f"sum by (kind) (conduitwatch_incidents_active{{{I}}})", "{{kind}}")],
            width=24,
        ),
    ],
)

BACKUP = Dashboard(
    uid="conduitwatch-backup-impact",
    title="conduitwatch / Backup impact",
    description="Bulk and backup load against control latency on one time axis: does a transfer hurt a control loop?",
    extra_variables=_ZONE_VAR,
    panels=[
        "Load",
        Panel(
            "Bulk traffic by zone, direction and category",
            [
                (
                    _rate(
                        "conduitwatch_bulk_bytes_total", "zone, direction, category", 'zone=~"$zone"', "8 * "
                    ),
                    "{{zone}} {{direction}} {{category}}",
                )
            ],
            unit="bps",
            width=24,
            height=7,
        ),
        Panel(
            "Peak 100 ms link utilisation",
            [
                (
                    f'max by (scope, name) (conduitwatch_link_utilisation_peak_ratio{{{I}, view="100ms"}})',
                    "{{scope}} {{name}}",
                )
            ],
            unit="percentunit",
            width=24,
            height=7,
            description="Peak bin in the last completed window: microbursts show here before the average moves.",
        ),
        "Control traffic on the same axis",
        Panel("Request latency p99", [_quantile("0.99")], unit="s", width=24, height=7),
        Panel(
            "Cyclic jitter (p99)",
            [
                (
                    f'max by (zone, protocol) (conduitwatch_cyclic_interarrival_jitter_seconds{{{I}, zone=~"$zone"}})',
                    "{{zone}} {{protocol}}",
                )
            ],
            unit="s",
            width=24,
            height=7,
        ),
        Panel(
            "TCP retransmissions of control flows per second",
            [
                (
                    _rate("conduitwatch_tcp_retransmissions_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
            width=24,
            height=7,
            description="Control packets a full switch queue dropped come back as retransmissions.",
        ),
        Panel(
            "Resets of control connections per second",
            [
                (
                    _rate("conduitwatch_tcp_resets_total", "zone, protocol", 'zone=~"$zone"'),
                    "{{zone}} {{protocol}}",
                )
            ],
            width=24,
            height=7,
        ),
        Panel(
            "Backup and interference incidents",
            [
                (
                    f'sum by (kind) (conduitwatch_incidents_active{{{I}, kind=~"backup_interference|bulk_.*|backup_.*"}})',
                    "{{kind}}",
                )
            ],
            width=24,
            height=5,
        ),
        "Backup traffic seen by the flow table (without the flood detector)",
        Panel(
            "Backup-category protocols between zones",
            [
                (
                    _rate(
                        "conduitwatch_traffic_bytes_total",
                        "src_zone, dest_zone, protocol",
                        f'protocol=~"{BACKUP_PROTOCOLS}"',
                        "8 * ",
                    ),
                    "{{src_zone}} → {{dest_zone}} {{protocol}}",
                )
            ],
            unit="bps",
            width=24,
            height=7,
        ),
    ],
)

DASHBOARDS = (OVERVIEW, ZONES, CONTROL, BACKUP)


def files() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{d.uid}.json": json.dumps(render(d), indent=2, ensure_ascii=False) + "\n" for d in DASHBOARDS}


def main() -> int:
    for name, text in files().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote dashboards/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
