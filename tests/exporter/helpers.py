"""Shared pieces of the exporter tests: an in-process run with the exporter attached, exposition parsing."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.capture.files import ReplaySource
from agent.exporter import Exporter
from agent.pipeline import Pipeline, PipelineConfig
from agent.policy.reload import PolicyReloader, compile_policy

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pcaps" / "demo.pcap"
DEMO_POLICY = ROOT / "rules" / "demo.yaml"
PLANT_POLICY = ROOT / "rules" / "purdue-plant.yaml"
# The policy scenarios and the backup-flood scenarios (pcaps/scenarios/floods/*.pcap.gz).
SCENARIOS = sorted((ROOT / "pcaps" / "scenarios").glob("*.pcap")) + sorted(
    (ROOT / "pcaps" / "scenarios" / "floods").glob("*.pcap.gz")
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def run_with_exporter(captures: list[Path], policy: Path | None) -> tuple[Exporter, Pipeline]:
    """Replay ``captures`` in this process with an exporter attached (its server is not started)."""
    exporter = Exporter("127.0.0.1:0", "/metrics", None, "replay", str(policy) if policy else None)
    compiled = None
    if policy is not None:
        compiled, problems = compile_policy(str(policy))
        assert compiled is not None, problems
    pipeline = Pipeline(PipelineConfig(), consumers=exporter.consumers(), policy=compiled)
    reloader = None
    if policy is not None and pipeline.policy is not None:
        reloader = PolicyReloader(str(policy), pipeline.policy)
    exporter.attach(pipeline, reloader)
    pipeline.run(ReplaySource([str(c) for c in captures]))
    return exporter, pipeline


def exposition(exporter: Exporter) -> str:
    return generate_latest(exporter.registry).decode()


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def values(all_samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in all_samples.items() if n == name}


_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.I)


def looks_like_address(value: str) -> bool:
    """An IPv4/IPv6 address or network, or a MAC address."""
    if _MAC.match(value):
        return True
    for candidate in (value, value.split("/")[0]):
        try:
            ipaddress.ip_address(candidate)
            return True
        except ValueError:
            pass
    return False
