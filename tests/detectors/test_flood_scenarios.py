"""The flood detector against the labelled flood scenarios (bench/flood_scenarios.py, pcaps/scenarios/floods).

Acceptance of the backup-flood issue, in packet time: every labelled incident is raised within 2 s of
its onset and cleared within 5 s of its end; nothing else is raised; the latency percentiles the
agent measures per control loop agree with the delays the generator injected within 1 ms.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.capture.files import ReplaySource
from agent.capture.pacing import paced
from agent.dissect import format_ip
from agent.pipeline import Pipeline, PipelineConfig
from agent.policy.reload import compile_policy
from agent.records import Event
from bench import flood_scenarios

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pcaps" / "scenarios" / "floods"
POLICY = ROOT / flood_scenarios.POLICY
NAMES = list(flood_scenarios.SCENARIOS)
MAX_BYTES = 3_000_000


class Events:
    name = "test"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cyclic: list[dict[str, Any]] = []  # the cyclic streams as their flows ended

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def incidents(self) -> list[Event]:
        return [
            e
            for e in self.events
            if e.event_type == "alert" and 9100200 <= e.fields["alert"]["signature_id"] <= 9100299
        ]


class CyclicProbe:
    """A consumer ahead of the flood detector: what each cyclic stream measured when its flow ended."""

    def __init__(self, pipeline: Pipeline, into: list[dict[str, Any]]) -> None:
        self.pipeline, self.into = pipeline, into

    def on_flow_end(self, flow: Any, _reason: str) -> None:
        assert self.pipeline.floods is not None
        for key, stream in self.pipeline.floods.cyclic.get(flow, {}).items():
            self.into.append({"connection_id": key[1], "zone": stream.zone, "protocol": stream.protocol,
                              "period": stream.period, "period_source": stream.period_source,
                              "jitter": stream.jitter(), "gaps": stream.gaps})  # fmt: skip


def replay(path: Path, realtime: bool = False) -> tuple[Events, Pipeline]:
    compiled, problems = compile_policy(str(POLICY))
    assert compiled is not None, problems
    sink = Events()
    pipeline = Pipeline(PipelineConfig(), sinks=[sink], policy=compiled)
    pipeline.consumers.insert(0, CyclicProbe(pipeline, sink.cyclic))
    source = ReplaySource([str(path)])
    try:
        pipeline.run(source, paced(source, lambda: False) if realtime else None)
    finally:
        source.close()
    return sink, pipeline


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[Events, Pipeline, dict[str, Any]]]:
    out = {}
    for name in NAMES:
        labels = json.loads((COMMITTED / f"{name}.labels.json").read_text())
        sink, pipeline = replay(COMMITTED / labels["capture"])
        out[name] = (sink, pipeline, labels)
    return out


def _ts(event: Event) -> float:
    return event.timestamp


def _matches(event: Event, expect: dict[str, Any]) -> bool:
    alert = event.fields["alert"]
    if alert["rule"] != expect["kind"]:
        return False
    details = event.fields["floods"]
    if "client_ip" in expect:
        return bool(
            details["client_ip"] == expect["client_ip"] and details["server_ip"] == expect["server_ip"]
        )
    return bool(details["link"]["scope"] == expect["scope"] and details["link"]["name"] == expect["name"])


# ------------------------------------------------------------------------------------------ files


def test_committed_scenarios_are_up_to_date(tmp_path: Path) -> None:
    """pcaps/scenarios/floods is what `python -m bench.flood_scenarios --out pcaps/scenarios/floods`
    writes."""
    flood_scenarios.generate(tmp_path, seed=1)
    expected = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in COMMITTED.iterdir()) == expected
    stale = [n for n in expected if (COMMITTED / n).read_bytes() != (tmp_path / n).read_bytes()]
    assert not stale, (
        f"regenerate with: python -m bench.flood_scenarios --out pcaps/scenarios/floods ({stale})"
    )


@pytest.mark.parametrize("name", NAMES)
def test_small_capture_with_full_wire_lengths(name: str) -> None:
    path = COMMITTED / f"{name}.pcap.gz"
    assert path.stat().st_size < MAX_BYTES
    data = gzip.decompress(path.read_bytes())
    off, truncated, wire = 24, 0, 0
    while off < len(data):
        _, _, caplen, wirelen = struct.unpack_from("<IIII", data, off)
        truncated += caplen < wirelen
        wire += wirelen
        off += 16 + caplen
    assert off == len(data)
    labels = json.loads((COMMITTED / f"{name}.labels.json").read_text())
    if any(r["kind"] != "control_degradation" for r in labels["raises"]) or name == "floods-normal-day":
        assert truncated > 0  # bulk frames are cut to their headers, their wire length is kept


def test_switch_queue_drops_and_retransmits_control_requests() -> None:
    labels = json.loads((COMMITTED / "floods-uplink-saturation.labels.json").read_text())
    assert sum(loop["retransmissions"] for loop in labels["loops"]) > 0
    for loop in labels["loops"]:
        during, before = loop["latency_during_flood_s"], loop["latency_s"]
        assert during["p50"] > 0.015 > before["p50"]  # requests wait behind the backup in the uplink queue


@pytest.mark.parametrize("name", NAMES)
def test_the_agent_counts_the_retransmissions_the_queue_caused(runs: Any, name: str) -> None:
    """Every request the uplink queue dropped and the HMI sent again is a TCP retransmission of its
    control flow, counted per loop and per (zone, protocol); nothing else is."""
    _sink, pipeline, labels = runs[name]
    assert pipeline.floods is not None
    loops = {(format_ip(lp.client), format_ip(lp.server)): lp for lp in pipeline.floods.loops.values()}
    for want in labels["loops"]:
        assert loops[(want["client_ip"], want["server_ip"])].retransmissions == want["retransmissions"]
    counts = {key: c.as_dict() for key, c in pipeline.floods.tcp_counts.items()}
    total = sum(x["retransmissions"] for x in labels["loops"])
    assert sum(c["retransmissions"] for c in counts.values()) == total
    assert total > 0 or name != "floods-uplink-saturation"
    assert not any(c["duplicate_acks"] or c["zero_windows"] for c in counts.values())
    modbus_zones = {zone for zone, protocol in counts if protocol == "modbus"}
    # Every scenario polls the filtration cell over Modbus except the cyclic one (EtherNet/IP I/O only).
    assert modbus_zones == (set() if name == "floods-cyclic-io" else {"cell-filtration"})


def test_flow_records_and_stats_carry_the_tcp_counts(runs: Any) -> None:
    """The EVE flow record of each control flow says how many of its segments were sent again, the
    stats event has the zone totals, and both validate against docs/eve.schema.json."""
    from agent.outputs.eve import eve_record
    from tests.outputs.schema import validator

    sink, _pipeline, labels = runs["floods-uplink-saturation"]
    records = [eve_record(e) for e in sink.events if e.event_type in ("flow", "stats")]
    for record in records:
        errors = list(validator().iter_errors(json.loads(json.dumps(record))))
        assert not errors, errors[0].message
    control = {(r["src_ip"], r["dest_ip"]): r["tcp"] for r in records
               if r["event_type"] == "flow" and r.get("dest_port") == 502}  # fmt: skip
    assert {k: v["retransmissions"] for k, v in control.items()} == {
        (x["client_ip"], x["server_ip"]): x["retransmissions"] for x in labels["loops"]
    }
    assert all(v["duplicate_acks"] == v["zero_windows"] == 0 for v in control.values())
    bulk = [r["tcp"] for r in records if r["event_type"] == "flow" and r.get("dest_port") == 445]
    assert bulk and not any("retransmissions" in t for t in bulk)  # only control flows are watched
    (stats,) = [r["stats"] for r in records if r["event_type"] == "stats"]
    assert stats["floods"]["tcp"] == {
        "cell-filtration": {"modbus": {"retransmissions": 6, "duplicate_acks": 0, "zero_windows": 0}}
    }


def test_queue_model() -> None:
    queue = flood_scenarios.Queue(rate_bps=8_000_000, slots=2)  # 1 byte per µs
    assert queue.offer(0, 1000) == 1000
    assert queue.offer(0, 1000) == 2000
    assert queue.offer(10, 60) is None  # two packets queued: no buffer left, even for a small one
    assert queue.offer(1000, 60) == 2060  # the first has left: the new one waits behind the second
    assert queue.drops == 1


# ------------------------------------------------------------------------------------- incidents


@pytest.mark.parametrize("name", NAMES)
def test_labelled_incidents_raised_within_2s_and_cleared_within_5s(runs: Any, name: str) -> None:
    sink, _pipeline, labels = runs[name]
    incidents = sink.incidents()
    for expect in labels["raises"]:
        mine = [e for e in incidents if _matches(e, expect)]
        raised = [e for e in mine if e.fields["alert"]["metadata"]["incident"]["state"] == "raised"]
        assert len(raised) == 1, (expect, [e.fields["alert"]["signature"] for e in mine])
        delay = _ts(raised[0]) - expect["onset_s"]
        assert 0 <= delay <= expect.get("detect_within_s", 2.0), (expect["kind"], delay)
        incident_id = raised[0].fields["alert"]["metadata"]["incident"]["id"]
        assert all(e.fields["alert"]["metadata"]["incident"]["id"] == incident_id for e in mine)
        cleared = [e for e in mine if e.fields["alert"]["metadata"]["incident"]["state"] == "cleared"]
        if expect["end_s"] is None:
            assert not cleared
            continue
        assert len(cleared) == 1, expect
        lag = _ts(cleared[0]) - expect["end_s"]
        assert 0 <= lag <= 5.0, (expect["kind"], lag)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_else_is_raised(runs: Any, name: str) -> None:
    sink, _pipeline, labels = runs[name]
    raised = [e for e in sink.incidents() if e.fields["alert"]["metadata"]["incident"]["state"] == "raised"]
    unexpected = [
        e.fields["alert"]["signature"] for e in raised if not any(_matches(e, x) for x in labels["raises"])
    ]
    assert not unexpected
    assert not {e.fields["alert"]["rule"] for e in raised} & set(labels["never"])


def test_degrading_plc_is_never_blamed_on_a_backup(runs: Any) -> None:
    sink, _pipeline, _labels = runs["floods-plc-degrading"]
    rules = [e.fields["alert"]["rule"] for e in sink.incidents()]
    assert "control_degradation" in rules
    assert "backup_interference" not in rules and "bulk_over_budget" not in rules


def test_interference_names_the_transfer_the_loops_and_the_numbers(runs: Any) -> None:
    sink, _pipeline, labels = runs["floods-uplink-saturation"]
    (event,) = [
        e
        for e in sink.incidents()
        if e.fields["alert"]["rule"] == "backup_interference"
        and e.fields["alert"]["metadata"]["incident"]["state"] == "raised"
    ]
    alert, details = event.fields["alert"], event.fields["floods"]
    assert alert["signature_id"] == 9100205 and alert["severity"] == 1
    assert "SR 7.1 RE1" in alert["metadata"]["iec62443_sr"] and "SR 7.2" in alert["metadata"]["iec62443_sr"]
    assert {"A.8.6", "A.8.13"} <= set(alert["metadata"]["iso27001_annex_a"])
    (transfer,) = details["transfers"]
    assert (transfer["src_ip"], transfer["dest_ip"], transfer["dest_port"]) == (
        "10.31.200.30",
        "10.31.100.10",
        445,
    )
    assert transfer["app_proto"] == "smb" and transfer["rate_bps"] > 60e6
    assert details["link"] == {"scope": "zone", "name": "supervisory", "direction": "out",
                               "capacity_bps": 100e6, "bulk_budget_bps": 30e6}  # fmt: skip
    assert details["peak_utilisation"] > 1.0  # offered load before the queue: the microbursts show
    loops = {(c["client_ip"], c["server_ip"]): c for c in details["control_flows"]}
    assert set(loops) == {(x["client_ip"], x["server_ip"]) for x in labels["loops"]}
    for c in loops.values():
        assert c["latency_during_ms"]["p50"] > 2 * c["latency_before_ms"]["p99"]
        # The sensor sees requests before the queue: polling stays on schedule unless a request is lost.
        assert c["jitter_during_ms"] >= 0 and c["jitter_before_ms"] >= 0
    assert "10.31.200.30" in alert["signature"] and "10.31.10.11" in alert["signature"]


@pytest.mark.parametrize("name", NAMES)
def test_latency_percentiles_agree_with_injected_delays(runs: Any, name: str) -> None:
    _sink, pipeline, labels = runs[name]
    assert pipeline.floods is not None
    measured = {(x["client_ip"], x["server_ip"]): x for x in pipeline.floods.loop_summary()}
    for loop in labels["loops"]:
        got = measured[(loop["client_ip"], loop["server_ip"])]
        want = loop["latency_s"]
        assert got["samples"] == want["samples"] == loop["requests"]
        for q in ("p50", "p95", "p99"):
            assert abs(got[q] - want[q]) <= 0.001, (q, got[q], want[q])


def test_cyclic_io_jitter_and_losses_are_what_was_injected(runs: Any) -> None:
    """CIP class-1 I/O set up by a Forward Open: each stream is judged against the interval the drive
    granted (not the one asked for, nor the median seen), its jitter over the last 10 s and the frames
    missing from its sequence are the generator's."""
    sink, pipeline, labels = runs["floods-cyclic-io"]
    streams = {s["connection_id"]: s for s in sink.cyclic}
    assert len(labels["cyclic"]) == 2 and set(streams) == {c["connection_id"] for c in labels["cyclic"]}
    for want in labels["cyclic"]:
        got = streams[want["connection_id"]]
        assert (got["zone"], got["protocol"]) == (want["zone"], want["protocol"])
        assert got["period_source"] == "forward_open" and got["period"] == want["period_s"]
        assert want["period_s"] != want["requested_rpi_s"]
        assert got["gaps"] == want["missing"] > 0
        assert abs(got["jitter"] - want["jitter_p99_s"]) <= 1e-6, (got["jitter"], want["jitter_p99_s"])
    assert pipeline.floods is not None
    assert pipeline.floods.sequence_gaps == {
        ("cell-filtration", "enip"): sum(c["missing"] for c in labels["cyclic"])
    }
    worst = max(c["jitter_p99_s"] for c in labels["cyclic"])
    (jitter,) = pipeline.floods.jitter_by_zone().values()  # the streams ended with the replay
    assert abs(jitter - worst) <= 1e-6


@pytest.mark.parametrize("name", ["floods-cyclic-io", "floods-plc-unresponsive"])
def test_the_control_health_scenarios_break_no_conduit_rule(runs: Any, name: str) -> None:
    """The scanner's session, Forward Open and UDP 2222 I/O to its drive are what rule drive-io allows
    (the port's guess, enip-io, becomes enip once decoded); a reset or silence is no violation."""
    sink, _pipeline, _labels = runs[name]
    assert [e.fields["alert"]["signature"] for e in sink.events if e.event_type == "alert"
            and e.fields["alert"]["signature_id"] < 9100200] == []  # fmt: skip


def test_an_unresponsive_plc_leaves_unanswered_requests_and_a_reset_connection(runs: Any) -> None:
    _sink, pipeline, labels = runs["floods-plc-unresponsive"]
    assert pipeline.floods is not None
    (loop,) = [x for x in labels["loops"] if "unanswered" in x]
    assert loop["unanswered"] > 0 and loop["resets"] == 1
    assert pipeline.floods.unanswered == {("cell-filtration", "modbus"): loop["unanswered"]}
    assert pipeline.floods.resets == {("cell-filtration", "modbus"): loop["resets"]}


# ----------------------------------------------------------------------------------- packet time


def _clip(source: Path, target: Path, start: float, end: float) -> None:
    """The packets of ``source`` between ``start`` and ``end`` (packet time) as a new capture."""
    data = gzip.decompress(source.read_bytes())
    out, off = [data[:24]], 24
    while off < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, off)
        if start <= sec + usec / 1e6 < end:
            out.append(data[off : off + 16 + caplen])
        off += 16 + caplen
    target.write_bytes(b"".join(out))


def _comparable(events: list[Event]) -> list[tuple[Any, ...]]:
    return [(e.event_type, e.timestamp, json.dumps(e.fields, sort_keys=True, default=str)) for e in events]


def test_realtime_replay_gives_the_same_alerts(tmp_path: Path) -> None:
    labels = json.loads((COMMITTED / "floods-uplink-saturation.labels.json").read_text())
    clip = tmp_path / "clip.pcap"
    _clip(
        COMMITTED / labels["capture"],
        clip,
        labels["raises"][0]["onset_s"] - 1,
        labels["raises"][0]["end_s"] + 4,
    )
    fast, _ = replay(clip)
    slow, _ = replay(clip, realtime=True)
    assert fast.incidents()
    assert _comparable(fast.incidents()) == _comparable(slow.incidents())


# --------------------------------------------------------------------------------------- metrics


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_metrics_use_the_contract_names_and_no_addresses(runs: Any) -> None:
    _sink, pipeline, _labels = runs["floods-uplink-saturation"]
    registry = CollectorRegistry()

    class Adapter:
        def collect(self) -> Any:
            return pipeline.floods.collect_metrics()

    registry.register(Adapter())  # type: ignore[arg-type]
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    for name in ("conduitwatch_bulk_bytes", "conduitwatch_link_utilisation_peak_ratio",
                 "conduitwatch_request_latency_seconds", "conduitwatch_cyclic_interarrival_jitter_seconds",
                 "conduitwatch_unanswered_requests", "conduitwatch_incidents_active",
                 "conduitwatch_incidents", "conduitwatch_tcp_retransmissions",
                 "conduitwatch_tcp_duplicate_acks", "conduitwatch_tcp_zero_windows"):  # fmt: skip
        assert name in families, name
    for family in families.values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le":
                    assert not _is_address(value), (family.name, label, value)
    bulk = {
        s.labels["zone"] + "/" + s.labels["direction"]: s.value
        for s in families["conduitwatch_bulk_bytes"].samples
        if s.name.endswith("_total") and s.labels["category"] == "backup"
    }
    assert bulk["supervisory/out"] > 5 * 90e6 / 8 * 0.8
    total = {
        s.labels["kind"]: s.value
        for s in families["conduitwatch_incidents"].samples
        if s.name.endswith("_total")
    }
    assert total["backup_interference"] == 1 and total["bulk_into_control_zone"] == 0
    retransmissions = {(s.labels["zone"], s.labels["protocol"]): s.value
                       for s in families["conduitwatch_tcp_retransmissions"].samples
                       if s.name.endswith("_total")}  # fmt: skip
    assert retransmissions == {("cell-filtration", "modbus"): 6}
    hist = [s for s in families["conduitwatch_request_latency_seconds"].samples if s.name.endswith("_count")]
    assert {(s.labels["zone"], s.labels["protocol"]) for s in hist} == {("cell-filtration", "modbus")}


def test_cli_replay_with_a_bin_size(tmp_path: Path) -> None:
    """End to end: `conduitwatch replay --policy ... --bin-size` writes one incident, raised then cleared."""
    eve = tmp_path / "eve.json"
    capture = COMMITTED / "floods-safety-crossing.pcap.gz"
    cmd = [sys.executable, "-m", "agent.cli", "replay", str(capture), "--policy", str(POLICY),
           "--bin-size", "0.05", "--eve", str(eve), "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    events = [json.loads(line) for line in eve.read_text().splitlines()]
    mine = [e for e in events if e["event_type"] == "alert" and e["alert"]["signature_id"] == 9100201]
    assert [e["alert"]["metadata"]["incident"]["state"] for e in mine] == ["raised", "cleared"]
    assert len({e["alert"]["metadata"]["incident"]["id"] for e in mine}) == 1
    assert mine[0]["floods"]["transfers"][0]["dest_ip"] == "10.31.50.60"
    assert mine[0]["src_ip"] == "10.31.200.30" and mine[0]["app_proto"] == "smb"
    stats = next(e for e in events if e["event_type"] == "stats")["stats"]
    assert stats["floods"]["incidents"]["bulk_into_control_zone"] == 1


def test_long_flows_continued_by_the_flow_table_stay_measured() -> None:
    """A backup longer than the flow table's active timeout goes on in a new flow record: its bytes
    keep counting (the totals match a run without the split) and its incident stays one."""
    from agent.flows import FlowConfig

    compiled, _ = compile_policy(str(POLICY))
    totals = []
    for active_timeout in (3600.0, 2.0):
        sink = Events()
        pipeline = Pipeline(PipelineConfig(flows=FlowConfig(active_timeout=active_timeout)), sinks=[sink],
                            policy=compiled)  # fmt: skip
        source = ReplaySource([str(COMMITTED / "floods-safety-crossing.pcap.gz")])
        pipeline.run(source)
        source.close()
        assert pipeline.floods is not None
        totals.append(dict(pipeline.floods.bulk_bytes))
        states = [e.fields["alert"]["metadata"]["incident"]["state"] for e in sink.incidents()]
        assert states == ["raised", "cleared"]
    assert totals[0] == totals[1] and totals[0]
