import json
from pathlib import Path

from scapy.packet import Raw

from agent.outputs.eve import EveSink, format_timestamp
from agent.pipeline import Pipeline, PipelineConfig
from agent.records import Event
from tests import factory
from tests.outputs.schema import validate_eve_file


def run_to_eve(tmp_path: Path, packets: list) -> list[dict]:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    Pipeline(PipelineConfig(), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_timestamp_is_iso8601_utc_with_microseconds() -> None:
    assert format_timestamp(1_700_000_000.5) == "2023-11-14T22:13:20.500000+00:00"


def test_flow_event_fields(tmp_path: Path) -> None:
    events = run_to_eve(tmp_path, factory.tcp_session(vlan=20))
    flow, stats = events
    assert flow["event_type"] == "flow" and stats["event_type"] == "stats"
    for key in ("timestamp", "flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto",
                "vlan", "community_id", "pcap_filename", "pcap_cnt"):  # fmt: skip
        assert key in flow, key
    assert list(flow)[:3] == ["timestamp", "flow_id", "event_type"]
    assert (flow["src_ip"], flow["src_port"], flow["dest_ip"], flow["dest_port"]) == (
        factory.CLIENT, 40000, factory.SERVER, 502)  # fmt: skip
    assert flow["proto"] == "TCP" and flow["app_proto"] == "modbus" and flow["vlan"] == [20]
    assert flow["pcap_filename"] == "test.pcap" and flow["pcap_cnt"] == 8  # the last packet of the flow
    assert flow["flow"]["pkts_toserver"] == 5 and flow["flow"]["pkts_toclient"] == 3
    assert flow["flow"]["state"] == "closed" and flow["flow"]["reason"] == "shutdown"
    assert flow["tcp"]["syn"] and flow["tcp"]["fin"] and flow["tcp"]["state"] == "closed"
    assert flow["timestamp"] == flow["flow"]["start"]
    assert stats["stats"]["capture"]["packets"] == 8
    assert stats["stats"]["flow"] == {"created": 1, "ended": 1, "timed_out": 0, "evicted": 0, "active": 0,
                                      "max": 100000}  # fmt: skip


def test_icmp_flow_has_type_not_ports(tmp_path: Path) -> None:
    flow = run_to_eve(tmp_path, [factory.icmp_echo(), factory.icmp_echo(reply=True)])[0]
    assert "src_port" not in flow and flow["proto"] == "ICMP"
    assert flow["icmp_type"] == 8 and flow["flow"]["pkts_toclient"] == 1


def test_output_is_deterministic(tmp_path: Path) -> None:
    packets = factory.tcp_session() + [factory.udp(sport=p) for p in range(1000, 1010)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_to_eve(tmp_path / "a", packets) == run_to_eve(tmp_path / "b", packets)


def test_events_match_the_published_schema(tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "eve.schema.json").read_text())
    packets = [*factory.tcp_session(vlan=3), factory.icmp_echo(), factory.udp6()]
    for event in run_to_eve(tmp_path, packets):
        jsonschema.validate(event, schema)


def test_every_event_type_matches_the_schema(tmp_path: Path) -> None:
    """The demo and every bundled scenario, with every event type on, validate line by line."""
    from agent.capture.files import ReplaySource
    from agent.policy.reload import compile_policy

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "eve.json"
    scenarios = root / "pcaps" / "scenarios"
    captures = [
        root / "pcaps" / "demo.pcap",
        *sorted(scenarios.glob("*.pcap")),
        *sorted(scenarios.glob("floods/*.gz")),
    ]
    seen: set[str] = set()
    for capture in captures:
        out.unlink(missing_ok=True)
        sink = EveSink(str(out))
        labels = capture.parent / (capture.name.removesuffix(".gz").removesuffix(".pcap") + ".labels.json")
        policy = json.loads(labels.read_text())["policy"] if labels.exists() else "rules/demo.yaml"
        compiled, _ = compile_policy(str(root / policy))
        source = ReplaySource([str(capture)])
        Pipeline(PipelineConfig(events="all"), sinks=[sink], policy=compiled).run(source)
        sink.close()
        source.close()
        seen |= validate_eve_file(out)
    assert {"flow", "stats", "ot", "alert", "audit"} <= seen, seen
    # A decode anomaly too (a truncated IPv4 header), with no flow fields.
    sink = EveSink(str(tmp_path / "anomaly.json"))
    truncated = factory.eth() / Raw(b"\x45" + bytes(9))  # an IPv4 header cut at 10 bytes
    truncated.type = 0x0800
    Pipeline(PipelineConfig(), sinks=[sink]).run(factory.ListSource([truncated]))
    sink.close()
    assert "anomaly" in validate_eve_file(tmp_path / "anomaly.json")


def test_a_full_disk_is_counted_not_raised(tmp_path: Path) -> None:
    sink = EveSink("/dev/full", line_buffered=True)
    Pipeline(PipelineConfig(), sinks=[sink]).run(factory.ListSource(factory.tcp_session()))
    sink.close()
    stats = sink.stats()
    assert stats["events"] == 2 and stats["failures"] >= 1 and stats["sent"] == 0 and stats["queued"] == 2


def test_batched_lines_are_counted_as_events(tmp_path: Path) -> None:
    # Replays write lines in batches; the counters (stats, exporter) still count events, not writes.
    full = EveSink("/dev/full")
    ok = EveSink(str(tmp_path / "eve.json"))
    pipeline = Pipeline(PipelineConfig(), sinks=[full, ok])
    for i in range(3):
        pipeline.emit(Event("stats", float(i), {"stats": {}}))
    # Not written yet (a batch is written at 64 KiB): waiting all the same.
    assert ok.stats()["sent"] == 0 and ok.stats()["queued"] == 3
    full.close()
    ok.close()
    assert full.stats()["events"] == 3 and full.stats()["queued"] == 3 and full.stats()["sent"] == 0
    assert ok.stats()["sent"] == 3 and ok.stats()["queued"] == 0


def test_reopen_after_rotation_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "eve.json"
    sink = EveSink(str(path), line_buffered=True)
    pipeline = Pipeline(PipelineConfig(), sinks=[sink])
    pipeline.emit(Event("stats", 1.0, {"stats": {}}))
    path.rename(tmp_path / "eve.json.1")  # what logrotate does
    pipeline.emit(Event("stats", 2.0, {"stats": {}}))  # still into the moved file, as tail -F expects
    sink.reopen()
    pipeline.emit(Event("stats", 3.0, {"stats": {}}))
    sink.close()
    rotated = (tmp_path / "eve.json.1").read_text().splitlines()
    assert len(rotated) == 2 and len(path.read_text().splitlines()) == 1 and sink.reopened == 1


def test_the_event_types_syslog_may_name_are_the_schemas() -> None:
    from agent.outputs.eve import EVENT_TYPES

    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "eve.schema.json").read_text())
    assert set(schema["properties"]["event_type"]["enum"]) == EVENT_TYPES
