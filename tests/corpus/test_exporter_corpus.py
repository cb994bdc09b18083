"""The whole corpus and every bundled scenario replayed in one process, with the exporter attached.

Issue 7's cardinality acceptance: the exposition stays under 5,000 series and no label value is an
address, however many hosts the captures hold, because labels come from the policy and fixed enums.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus.conftest import corpus_missing, load_inventory
from tests.exporter.helpers import (
    DEMO,
    PLANT_POLICY,
    SCENARIOS,
    exposition,
    looks_like_address,
    run_with_exporter,
    samples,
    values,
)


def test_corpus_and_scenarios_in_one_process_stay_bounded() -> None:
    if corpus_missing():
        pytest.skip(str(corpus_missing()))
    captures: list[Path] = [c.file for c in load_inventory()]
    exporter, pipeline = run_with_exporter([*captures, DEMO, *SCENARIOS], PLANT_POLICY)
    all_samples = samples(exposition(exporter))
    assert pipeline.stats.packets > 100_000  # the corpus really went through
    assert len(all_samples) < 5000, len(all_samples)
    for name, labels in all_samples:
        for key, value in labels:
            assert not looks_like_address(value), (name, key, value)
    # Many protocols decoded, all under their names; zones only the policy's (or "none").
    zones = {dict(k)["src_zone"] for k in values(all_samples, "conduitwatch_traffic_packets_total")}
    assert "none" in zones and len(zones) <= 9
