"""The pipeline as a whole: the fast path must change nothing but speed."""

import json
from pathlib import Path
from typing import Any

import pytest

from agent.capture.files import ReplaySource
from agent.flows import FlowTable
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = [ROOT / "pcaps" / "demo.pcap", *sorted((ROOT / "pcaps" / "scenarios").glob("*.pcap"))[:3]]


def replay(capture: Path, out: Path, policy: CompiledPolicy | None) -> tuple[list[dict], dict]:
    sink = EveSink(str(out))
    pipeline = Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink], policy=policy)
    source = ReplaySource([str(capture)])
    pipeline.run(source)
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return events[:-1], events[-1]["stats"]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fast_path_gives_the_same_events_as_full_dissection(
    capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = "demo.yaml" if capture.name == "demo.pcap" else "purdue-plant.yaml"
    policy, _ = load_policy(str(ROOT / "rules" / rules))
    assert policy is not None
    fast_events, fast_stats = replay(capture, tmp_path / "fast.json", CompiledPolicy(policy))
    monkeypatch.setattr(FlowTable, "fast_path", lambda self, *args: False)
    full_events, full_stats = replay(capture, tmp_path / "full.json", CompiledPolicy(policy))
    assert fast_events == full_events
    assert fast_stats == full_stats  # layer counts included: the fast path counts what it skips
    assert len(fast_events) > 10


def test_a_connection_cut_by_the_active_timeout_is_still_decoded_and_paired() -> None:
    """Control connections live for days: when the record is cut (active timeout) the decoder goes
    on in the continuation, and a request sent before the cut pairs with its answer after it."""
    from agent.flows import FlowConfig
    from tests.factory import Collector, ListSource, tcp_stream

    def poll(tid: int) -> tuple[tuple[bool, bytes], tuple[bool, bytes]]:
        request = tid.to_bytes(2, "big") + b"\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"
        answer = tid.to_bytes(2, "big") + b"\x00\x00\x00\x05\x01\x03\x02\x00\x2a"
        return (True, request), (False, answer)

    segments = [seg for tid in range(1, 9) for seg in poll(tid)]
    packets = tcp_stream(segments)
    # Handshake, then a poll every 0.5 s answered after 0.3 s: the 10 s active timeout falls between
    # the fourth request (at 9.9 s) and its answer (10.2 s).
    times = [0.0, 0.001, 0.002]
    for i in range(8):
        sent = 8.4 + i * 0.5
        times += [sent, sent + 0.3]
    start = 1_700_000_000.0
    collector = Collector()
    config = PipelineConfig(flows=FlowConfig(active_timeout=10.0), events=EVENTS_ALL)
    pipeline = Pipeline(config, consumers=[collector])
    pipeline.run(ListSource(packets, times=[start + t for t in times]))

    messages = collector.messages
    assert [m.direction for m in messages] == ["request", "response"] * 8
    assert all(m.latency_s is not None and abs(m.latency_s - 0.3) < 1e-6 for m in messages[1::2])
    first, second = collector.flows  # the cut record, then its continuation (ended at shutdown)
    assert first.app_proto == second.app_proto == "modbus"
    assert {m.flow for m in messages[:7]} == {first} and {m.flow for m in messages[7:]} == {second}
    stats = pipeline.decoders.stats["modbus"]
    assert (stats.requests, stats.responses, stats.matched, stats.unanswered) == (8, 8, 8, 0)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """The message records decoders build from now on (each OtMessage's values)."""
    records: list[tuple[object, ...]] = []
    original_new = tuple.__new__

    def counting_new(cls: type, values: tuple[object, ...]) -> tuple[object, ...]:
        records.append(values)
        return original_new(cls, values)

    monkeypatch.setattr("agent.decoders.message._new", counting_new)
    return records


@pytest.mark.parametrize("capture", CAPTURES[:2], ids=lambda p: p.name)
def test_without_a_reader_decoders_count_the_same_and_build_no_records(
    capture: Path, built: list[tuple[object, ...]]
) -> None:
    """No policy, exporter or ``--events all``: nobody reads a message record, so none is built (the
    way Zeek skips an event with no handler), but every counter counts as when one is read."""
    from tests.factory import Collector

    def counts(consumers: list[Collector]) -> dict[str, dict[str, Any]]:
        pipeline = Pipeline(PipelineConfig(), consumers=consumers)
        pipeline.run(ReplaySource([str(capture)]))
        return {name: stats.as_dict() for name, stats in pipeline.decoders.stats.items()}

    collector = Collector()
    read = counts([collector])
    assert sum(stats["messages"] for stats in read.values()) == len(collector.messages) > 100
    assert len(built) == len(collector.messages)
    built.clear()
    unread = counts([])
    assert unread == read
    assert built == []


SCENARIOS = ROOT / "pcaps" / "scenarios"
POLICY_CAPTURES = [
    (ROOT / "pcaps" / "demo.pcap", "demo.yaml"),
    *((p, "purdue-plant.yaml") for p in sorted(SCENARIOS.glob("*.pcap"))),
    *((p, "purdue-plant.yaml") for p in sorted((SCENARIOS / "floods").glob("*.pcap.gz"))),
]


@pytest.mark.parametrize(("capture", "rules"), POLICY_CAPTURES, ids=lambda p: getattr(p, "name", p))
def test_the_policy_and_the_flood_detector_judge_the_same_with_only_the_records_they_read(
    capture: Path, rules: str, built: list[tuple[object, ...]]
) -> None:
    """With a policy, decoders build a record only for the requests the policy's rules restrict or
    audit on that flow (and cyclic I/O for the flood detector), and log control-loop timings straight
    into the loops. Alerts, audits, incidents and loop health must be exactly what they are when
    every record is built, as another reader of records (here a Collector) makes it."""
    from tests.factory import Collector

    policy, _ = load_policy(str(ROOT / "rules" / rules))
    assert policy is not None

    def run(consumers: list[Collector]) -> tuple[list[Any], dict[str, Any]]:
        class Events:
            name = "events"

            def __init__(self) -> None:
                self.events: list[Any] = []

            def emit(self, event: Any) -> None:
                if event.event_type != "stats":
                    fields = json.dumps(event.fields, default=str)
                    self.events.append((event.event_type, event.timestamp, fields))

            def flush(self) -> None: ...
            def close(self) -> None: ...

        sink = Events()
        pipeline = Pipeline(
            PipelineConfig(), sinks=[sink], consumers=consumers, policy=CompiledPolicy(policy)
        )
        pipeline.run(ReplaySource([str(capture)]))
        floods = pipeline.floods
        assert floods is not None
        health = {
            "loops": floods.loop_summary(),
            "latency": {k: (h.counts, round(h.total, 9)) for k, h in floods.latency.items()},
            "unanswered": floods.unanswered,
            "floods": floods.stats(),
            "decoders": {name: stats.as_dict() for name, stats in pipeline.decoders.stats.items()},
        }
        return sink.events, health

    collector = Collector()
    every = run([collector])
    messages = len(collector.messages)
    built.clear()
    assert run([]) == every
    assert messages > 50
    # Every cyclic I/O and EtherNet/IP record is built (the flood detector reads those); of the rest,
    # only the few operations the rules restrict or audit.
    cyclic = sum(m.operation == "io" or m.protocol == "enip" for m in collector.messages)
    assert cyclic <= len(built) <= cyclic + (messages - cyclic) / 2, f"{len(built)} records of {messages}"
