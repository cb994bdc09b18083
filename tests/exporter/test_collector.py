"""The collector on real replays: what it publishes, that it adds up, and that labels stay bounded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agent.exporter.accounting import TrafficAccounting
from agent.flows import Flow

from .helpers import (
    DEMO,
    DEMO_POLICY,
    PLANT_POLICY,
    SCENARIOS,
    exposition,
    looks_like_address,
    run_with_exporter,
    samples,
    values,
)


def test_demo_traffic_adds_up_to_the_capture() -> None:
    exporter, pipeline = run_with_exporter([DEMO], DEMO_POLICY)
    all_samples = samples(exposition(exporter))
    packets = values(all_samples, "conduitwatch_traffic_packets_total")
    octets = values(all_samples, "conduitwatch_traffic_bytes_total")
    # Every IP packet belongs to exactly one flow, every flow to one (zone pair, protocol).
    assert sum(packets.values()) == pipeline.stats.ip_packets
    assert values(all_samples, "conduitwatch_capture_packets_total")[()] == pipeline.stats.packets
    assert sum(octets.values()) <= pipeline.stats.bytes
    modbus = {(dict(k)["src_zone"], dict(k)["dest_zone"]) for k in packets if dict(k)["protocol"] == "modbus"}
    assert modbus == {("supervisory", "control")}


def test_demo_policy_and_operation_metrics_match_the_detector() -> None:
    exporter, pipeline = run_with_exporter([DEMO], DEMO_POLICY)
    all_samples = samples(exposition(exporter))
    detector = pipeline.policy
    assert detector is not None
    violations = values(all_samples, "conduitwatch_policy_violations_total")
    assert sum(violations.values()) == sum(detector.violations.values()) > 0
    for labels in violations:
        assert dict(labels)["severity"] in {"high", "medium", "low"}
    operations = values(all_samples, "conduitwatch_operations_total")
    requests = sum(st.requests for st in pipeline.decoders.stats.values())
    assert sum(operations.values()) == requests
    info = values(all_samples, "conduitwatch_policy_info")
    ((labels, value),) = info.items()
    assert value == 1 and dict(labels)["zones"] == str(len(detector.compiled.zones))
    assert values(all_samples, "conduitwatch_policy_reload_success") == {(): 1.0}
    # Every policy table's size and evictions, as the stats event reports them.
    stats = detector.stats()
    for metric, counter in (
        ("conduitwatch_policy_alert_folds_open", "alert_folds_open"),
        ("conduitwatch_policy_alert_fold_evictions_total", "alert_fold_evictions"),
        ("conduitwatch_policy_scheduled_flows_followed", "scheduled_flows_followed"),
        ("conduitwatch_policy_scheduled_flow_evictions_total", "scheduled_flow_evictions"),
    ):
        assert values(all_samples, metric) == {(): float(stats[counter])}, metric
    flows = values(all_samples, "conduitwatch_flows_created_total")[()]
    assert flows == pipeline.flows.created
    assert values(all_samples, "conduitwatch_capture_up") == {(("mode", "replay"),): 0.0}


def test_operations_are_counted_without_a_policy() -> None:
    """The exporter counts every request, in tables its decoders hold (no record is built for it):
    without a policy it is the only stage reading messages, and the decoders must still count there
    (they do nothing of the kind when nobody reads)."""
    exporter, pipeline = run_with_exporter([DEMO], None)
    operations = values(samples(exposition(exporter)), "conduitwatch_operations_total")
    requests = sum(st.requests for st in pipeline.decoders.stats.values())
    assert sum(operations.values()) == requests > 100
    assert {dict(k)["conduit"] for k in operations} == {"none"}


def test_audits_by_operation_and_zone_add_up_to_every_occurrence() -> None:
    compliant = [p for p in SCENARIOS if p.name == "compliant.pcap"]
    exporter, pipeline = run_with_exporter(compliant, PLANT_POLICY)
    audits = values(samples(exposition(exporter)), "conduitwatch_audit_events_total")
    assert pipeline.policy is not None and pipeline.policy.audits > 0
    assert sum(audits.values()) == pipeline.policy.audits
    assert {dict(k)["operation"] for k in audits} <= {"program", "upload", "mode", "firmware", "config"}


def test_all_scenarios_in_one_process_stay_small_and_address_free() -> None:
    exporter, _ = run_with_exporter([DEMO, *SCENARIOS], PLANT_POLICY)
    all_samples = samples(exposition(exporter))
    assert len(all_samples) < 5000
    for name, labels in all_samples:
        for key, value in labels:
            assert not looks_like_address(value), (name, key, value)


def _flow(packets: int, octets: int, src_zone: str = "a", dest_zone: str = "b") -> Any:
    flow = Flow((b"\x0a\0\0\1", b"\x0a\0\0\2", 1000, 502, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
    flow.app_proto = "modbus"
    flow.pkts_toserver = packets
    flow.bytes_toserver = octets
    flow.verdict = SimpleNamespace(src_zone=src_zone, dest_zone=dest_zone)
    return flow


def test_traffic_counts_active_flows_and_never_goes_down() -> None:
    accounting = TrafficAccounting()
    active = [_flow(10, 1000)]
    accounting.active_flows = lambda: list(active)
    key = ("a", "b", "modbus")
    assert accounting.totals()[key] == (10, 1000)
    active[0].pkts_toserver = 15
    active[0].bytes_toserver = 1500
    assert accounting.totals()[key] == (15, 1500)
    # A scrape that catches the flow after it left the table but before its end was accounted:
    ended = active.pop()
    assert accounting.totals()[key] == (15, 1500)  # held, not a counter reset
    accounting.on_flow_end(ended, "timeout")
    active.append(_flow(5, 100))
    assert accounting.totals()[key] == (20, 1600)
    # A policy reload moves the active flow to another zone pair: the old pair keeps its total.
    active[0].verdict = SimpleNamespace(src_zone="a", dest_zone="c")
    totals = accounting.totals()
    assert totals[key] == (20, 1600) and totals[("a", "c", "modbus")] == (5, 100)


def test_no_policy_means_zone_none() -> None:
    exporter, _ = run_with_exporter([DEMO], None)
    all_samples = samples(exposition(exporter))
    packets = values(all_samples, "conduitwatch_traffic_packets_total")
    assert {(dict(k)["src_zone"], dict(k)["dest_zone"]) for k in packets} == {("none", "none")}
    assert not values(all_samples, "conduitwatch_policy_violations_total")
