from agent.pipeline import Pipeline, PipelineConfig
from agent.summary import TrafficSummary, render
from tests import factory


def run(packets: list) -> tuple[TrafficSummary, Pipeline]:
    summary = TrafficSummary()
    pipeline = Pipeline(PipelineConfig(), consumers=[summary])
    pipeline.run(factory.ListSource(packets))
    return summary, pipeline


def text(summary: TrafficSummary, pipeline: Pipeline, top: int = 10) -> str:
    table = pipeline.flows
    operations = {name: st.operations for name, st in pipeline.decoders.stats.items()}
    return render(summary, pipeline.stats, {"created": table.created, "evicted": table.evicted},
                  pipeline.dissector.anomalies, [], top=top, operations=operations)  # fmt: skip


def test_counts_by_protocol_network_pair_and_operation() -> None:
    packets = factory.tcp_session(vlan=10) + [factory.udp(sport=p, dst="198.51.100.7") for p in range(3)]
    summary, pipeline = run(packets)
    assert summary.by_protocol["modbus"].flows == 1 and summary.by_protocol["modbus"].packets == 8
    # Port 20000 but no DNP3 payload: not called DNP3 once the payload is probed.
    assert sum(t.flows for p, t in summary.by_protocol.items() if p != "modbus") == 3
    assert summary.by_network_pair[("vlan 10", "vlan 10")].flows == 1
    assert summary.by_network_pair[("192.0.2.0/24", "198.51.100.0/24")].packets == 3
    assert pipeline.decoders.stats["modbus"].operations == {"read": 1}
    report = text(summary, pipeline)
    assert report.splitlines()[0].startswith("11 packets")
    assert "modbus       read 1" in report


def test_long_tables_are_cut_with_a_total_row() -> None:
    summary, pipeline = run([factory.udp(sport=1, dst=f"198.51.{i}.1") for i in range(15)])
    report = text(summary, pipeline, top=5)
    assert "... 10 more" in report


def test_same_input_same_text() -> None:
    packets = [factory.udp(sport=p, dst=f"198.51.{p}.1") for p in range(12)]
    a, b = run(packets), run(packets)
    strip = lambda s: s.split("\n", 1)[1]  # noqa: E731 - the first line has the wall-clock rate
    assert strip(text(*a)) == strip(text(*b))


def test_flood_incidents_are_summarised_by_kind() -> None:
    from pathlib import Path

    from agent.capture.files import ReplaySource
    from agent.pipeline import Pipeline, PipelineConfig
    from agent.policy.reload import compile_policy
    from agent.summary import TrafficSummary, render

    root = Path(__file__).resolve().parents[1]
    compiled, _ = compile_policy(str(root / "rules" / "purdue-plant.yaml"))
    summary = TrafficSummary()
    pipeline = Pipeline(PipelineConfig(), consumers=[summary], policy=compiled)
    source = ReplaySource([str(root / "pcaps" / "scenarios" / "floods" / "floods-uplink-saturation.pcap.gz")])
    stats = pipeline.run(source)
    source.close()
    assert pipeline.floods is not None
    text = render(summary, stats, {"created": 1, "evicted": 0}, {}, [], policy=pipeline.policy,
                  incidents=pipeline.floods.stats()["incidents"])  # fmt: skip
    line = next(x for x in text.splitlines() if x.startswith("backup floods and control health"))
    assert "backup_interference 1" in line and "bulk_over_budget 1" in line
    quiet = render(summary, stats, {"created": 1, "evicted": 0}, {}, [], incidents={"bulk_over_budget": 0})
    assert "backup floods and control health: no incident" in quiet
