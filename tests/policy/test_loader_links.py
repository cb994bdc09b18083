"""The optional ``link`` of zones and conduits (capacity, bulk budget, backup windows): values in the
model, and every error with its message and line."""

from __future__ import annotations

import pytest

from agent.policy.loader import load_policy_text
from agent.policy.model import Link, Policy, Problem

BASE = """\
version: 1
system: {name: t}
zones:
  - id: a
    networks: [10.0.0.0/24]
    link: LINK_A
  - id: b
    networks: [10.0.1.0/24]
conduits:
  - id: c
    zones: [a, b]
    link: LINK_C
    flows:
      - {id: r, initiator: a, responder: b, protocol: modbus, operations: [read]}
"""


def load(link_a: str = "null", link_c: str = "null") -> tuple[Policy | None, list[Problem]]:
    return load_policy_text(BASE.replace("LINK_A", link_a).replace("LINK_C", link_c), "p.yaml")


def test_links_in_the_model() -> None:
    policy, problems = load(
        '{capacity: 100 Mbit/s, bulk_budget: 30%, backup_windows: [{days: [sat], hours: "01:00-04:00"}]}',
        "{capacity: 1000000000, bulk_budget: 200 Mbit/s}",
    )
    assert policy is not None, problems
    link = policy.zones[0].link
    assert isinstance(link, Link) and link.line == 6
    assert (link.capacity_bps, link.bulk_budget_share, link.budget_bps()) == (100e6, 0.3, 30e6)
    (window,) = link.backup_windows
    assert (window.days, window.start_minute, window.end_minute, window.timezone) == (
        frozenset({5}),
        60,
        240,
        "UTC",
    )
    conduit_link = policy.conduits[0].link
    assert (
        conduit_link is not None and conduit_link.budget_bps() == 200e6 and conduit_link.capacity_bps == 1e9
    )
    assert policy.zones[1].link is None


@pytest.mark.parametrize(
    ("link_a", "link_c", "line", "message"),
    [
        ("{capacity: fast}", "null", 6, "capacity of link of zone 'a': 'fast' must be bits per second"),
        ("{capacity: 0}", "null", 6, "must be more than 0 bits per second"),
        ("{capacity: .nan}", "null", 6, "must be a finite number"),
        ("{bulk_budget: 30%}", "null", 6, "is a share of the capacity, but no capacity is given"),
        ("{capacity: 10 Mbit/s, bulk_budget: 130%}", "null", 6, "must be more than 0% and at most 100%"),
        ("{capacity: 10 Mbit/s, burst: 1}", "null", 6, "unknown key 'burst' in link of zone 'a'"),
        ("{backup_windows: [{hours: 25:00-26:00}]}", "null", 6, "is not a time range within 00:00-24:00"),
        ("null", "[100 Mbit/s]", 12, "link of conduit 'c' must be a mapping"),
        ("null", "{capacity: 100 Mbit/h}", 12, "capacity of link of conduit 'c'"),
    ],
)
def test_link_errors_name_file_and_line(link_a: str, link_c: str, line: int, message: str) -> None:
    policy, problems = load(link_a, link_c)
    assert policy is None
    errors = [p for p in problems if p.severity == "error" and message in p.message]
    assert errors, "\n".join(map(str, problems))
    assert errors[0].line == line and errors[0].path == "p.yaml"


def test_link_warnings() -> None:
    policy, problems = load("{capacity: 10 Mbit/s, bulk_budget: 20 Mbit/s}", "{}")
    assert policy is not None
    warnings = [str(p) for p in problems if p.severity == "warning"]
    assert any("above the link capacity" in w and "p.yaml:6:" in w for w in warnings)
    assert any("link of conduit 'c' says nothing" in w and "p.yaml:12:" in w for w in warnings)
