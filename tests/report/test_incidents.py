"""Backup-interference and degradation incidents in the report, from EVE-shaped alert events.

The backup-flood detector raises, updates and clears incidents as alerts with signature ids
9100200-9100299 and ``alert.metadata.incident`` (CONTRACTS.md). The report groups them by incident
id; these synthetic events have exactly that shape.
"""

from __future__ import annotations

from typing import Any

from agent.records import Event
from agent.report import compliance
from agent.report.collect import EventCollector, EvidenceTap, ReportCollector
from agent.report.html import chart_svg
from agent.report.model import findings, load_chart

T0 = 1_700_000_000.0


def incident_alert(ts: float, state: str, cnt: int, incident_id: str = "inc-1", **extra: Any) -> Event:
    incident = {
        "id": incident_id,
        "state": state,
        "started": "2023-11-14T22:13:25.000000+00:00",
        "kind": "backup_interference",
        **extra,
    }
    return Event(
        "alert",
        ts,
        {
            "pcap_filename": "flood.pcap",
            "pcap_cnt": cnt,
            "src_ip": "10.0.3.10",
            "dest_ip": "10.0.1.20",
            "dest_port": 445,
            "proto": "TCP",
            "alert": {
                "signature_id": 9100205,
                "signature": "SMB backup 10.0.3.10 -> 10.0.1.20 at 94 Mbit/s delays "
                "Modbus polling of plc-1 (p99 3 ms -> 41 ms)",
                "category": "Backup interference",
                "severity": 1,
                "metadata": {
                    "iec62443_sr": ["SR 7.1 RE1", "SR 7.2"],
                    "iso27001_annex_a": ["A.8.6", "A.8.13"],
                    "incident": incident,
                },
            },
        },
    )


def collect(*events: Event) -> EventCollector:
    sink = EventCollector()
    for event in events:
        sink.emit(event)
    return sink


def test_raise_update_clear_make_one_incident() -> None:
    sink = collect(
        incident_alert(T0 + 5, "raised", 100, peak_utilisation=0.97),
        incident_alert(T0 + 7, "updated", 180, peak_utilisation=1.02),
        incident_alert(T0 + 12, "cleared", 400, peak_utilisation=0.4),
    )
    alerts, audits, incidents = findings(sink)
    assert alerts == [] and audits == []
    [incident] = incidents
    assert incident["id"] == "I-0001" and incident["incident"] == "inc-1"
    assert incident["kind"] == "backup_interference" and incident["events"] == 3
    assert incident["started"] == "2023-11-14T22:13:25.000000+00:00"
    assert incident["ended"] == "2023-11-14T22:13:32.000000+00:00"
    assert incident["pcap_filename"] == "flood.pcap" and incident["pcap_cnt"] == 100
    assert incident["details"]["peak_utilisation"] == 0.4  # the last word on it
    assert incident["iec62443_sr"] == ["SR 7.1 RE1", "SR 7.2"]


def test_the_detectors_own_object_is_kept_and_flattened() -> None:
    event = incident_alert(T0 + 5, "raised", 100)
    event.fields["floods"] = {
        "link": {"name": "uplink-cr", "capacity_bps": 100_000_000},
        "peak_utilisation": 0.97,
        "transfers": [{"app_proto": "smb", "rate_bps": 94_000_000}],
        "control_flows": [{"protocol": "modbus", "latency_during_ms": {"p99": 41.0}}],
    }
    [incident] = findings(collect(event))[2]
    assert incident["data"]["floods"]["peak_utilisation"] == 0.97
    details = incident["details"]
    assert (
        details["floods.link.name"] == "uplink-cr" and details["floods.transfers[0].rate_bps"] == 94_000_000
    )
    assert details["floods.control_flows[0].latency_during_ms.p99"] == 41.0


def test_an_incident_still_open_has_no_end_and_separate_ids_stay_apart() -> None:
    _a, _b, incidents = findings(
        collect(
            incident_alert(T0 + 1, "raised", 10, "a"),
            incident_alert(T0 + 2, "raised", 20, "b"),
            incident_alert(T0 + 3, "cleared", 30, "a"),
        )
    )
    assert [(i["incident"], i["ended"] is None) for i in incidents] == [("a", False), ("b", True)]


def test_incidents_count_against_sr_7_1_and_annex_a_8_6() -> None:
    _a, _b, incidents = findings(collect(incident_alert(T0 + 5, "raised", 100)))
    rows = {r["id"]: r for r in compliance.table(incidents, {"policy": True})}
    assert rows["SR 7.1"]["status"] == compliance.NON_CONFORMITY and rows["SR 7.1"]["findings"] == ["I-0001"]
    assert rows["A.8.6"]["findings"] == ["I-0001"] and rows["A.8.13"]["findings"] == ["I-0001"]
    assert rows["SR 5.1"]["status"] == compliance.CONFORMITY


def test_policy_alerts_are_findings_not_incidents() -> None:
    event = Event(
        "alert",
        T0,
        {
            "pcap_filename": "x.pcap",
            "pcap_cnt": 3,
            "src_ip": "10.0.0.1",
            "dest_ip": "10.0.0.2",
            "alert": {
                "signature_id": 9100001,
                "signature": "s",
                "count": 1,
                "metadata": {"iec62443_sr": ["SR 5.1"]},
            },
        },
    )
    alerts, _audits, incidents = findings(collect(event))
    assert incidents == [] and [a["id"] for a in alerts] == ["F-0001"]


def test_chart_shades_incidents_over_load_and_latency() -> None:
    tap = EvidenceTap(1)
    frames = [(T0 + s + 0.5, b"", 1250, 0, 1, s + 1, 0) for s in range(20)]
    frames += [(T0 + 10.1, b"", 125_000, 0, 1, 99, 0)]
    list(tap(iter(sorted(frames))))
    collector = ReportCollector()
    collector.latency = {int(T0) + 10: [0.041, 0.041, 1.0], int(T0) + 3: [0.003, 0.003, 1.0]}
    chart = load_chart(tap, collector)
    assert chart["bin_seconds"] == 1 and len(chart["points"]) == 20
    peak = max(chart["points"], key=lambda p: p[1])
    assert peak[0] == 10 and peak[3] == 41.0
    _a, _b, incidents = findings(
        collect(incident_alert(T0 + 5, "raised", 100), incident_alert(T0 + 12, "cleared", 9))
    )
    svg = chart_svg(chart, incidents)
    assert svg.startswith("<svg") and "I-0001" in svg and "<polyline" in svg
    assert svg.count('fill="#f5c6cb"') == 1


def test_bulk_flows_are_spread_over_their_life_in_the_chart() -> None:
    from agent.flows import Flow

    flow = Flow((b"\n\x00\x00\x01", b"\n\x00\x00\x02", 50000, 445, 6, ()), 1, 4, T0 + 2.5, 1, 0, 600.0)
    flow.last_ts = T0 + 4.5
    flow.bytes_toserver, flow.bytes_toclient = 1_900_000, 100_000
    flow.app_proto = "smb"
    collector = ReportCollector()
    collector.on_flow_end(flow, "shutdown")
    assert collector.bulk == {int(T0) + 2: 500_000.0, int(T0) + 3: 1_000_000.0, int(T0) + 4: 500_000.0}
    tap = EvidenceTap(1)
    list(tap(iter([(T0 + 2.6, b"", 1000, 0, 1, 1, 0), (T0 + 4.4, b"", 1000, 0, 1, 2, 0)])))
    chart = load_chart(tap, collector)
    assert [p[2] for p in chart["points"]] == [4.0, 8.0, 4.0]  # Mbit/s
    assert chart["columns"] == ["offset_s", "load_mbit_s", "bulk_mbit_s", "max_control_latency_ms"]
    assert 'fill="#2f5f98"' in chart_svg(chart, [])
