"""Every EVE line the corpus produces, all event types on, validates against docs/eve.schema.json.

The captures are replayed per source project in one process each (as an auditor replays a
directory), with every decoder and ``--events all``, and each event goes through the same JSON
encoding as the EVE file before it is validated.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from agent.capture.files import ReplaySource
from agent.outputs.eve import eve_record
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from agent.records import Event
from tests.corpus.conftest import load_inventory
from tests.outputs.schema import validator

SOURCES = sorted({c.source for c in load_inventory()})


class SchemaSink:
    name = "schema"

    def __init__(self) -> None:
        self.check = validator()
        self.types: Counter[str] = Counter()
        self.errors: list[str] = []

    def emit(self, event: Event) -> None:
        record: dict[str, Any] = json.loads(json.dumps(eve_record(event), ensure_ascii=False))
        self.types[event.event_type] += 1
        if len(self.errors) < 5:
            for error in self.check.iter_errors(record):
                self.errors.append(f"{record.get('pcap_filename')}#{record.get('pcap_cnt')} "
                                   f"{event.event_type}: {error.message} at {list(error.path)}")  # fmt: skip

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("source", SOURCES)
def test_every_event_of_the_corpus_matches_the_schema(source: str) -> None:
    captures = [str(c.file) for c in load_inventory() if c.source == source and c.supported]
    if not captures:
        pytest.skip(f"no capture of a supported link type under {source}")
    sink = SchemaSink()
    replay = ReplaySource(captures)
    try:
        Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(replay)
    finally:
        replay.close()
    assert not sink.errors, "\n".join(sink.errors)
    assert sink.types["stats"] == 1 and sum(sink.types.values()) > 1  # something besides the stats
