"""Corpus tier: ``policy learn`` -> ``policy validate`` -> replay with the learned policy raises no
alert on any corpus capture with two or more hosts (the draft allows exactly what it was learned from).
"""

from __future__ import annotations

from agent.assets.inventory import is_group
from agent.policy.engine import CompiledPolicy
from agent.policy.learn import draft, learn_result
from agent.policy.loader import load_policy_bytes
from tests.corpus.conftest import Capture
from tests.policy.test_learn import alerts


def test_learned_policy_allows_its_own_capture(corpus_capture: Capture) -> None:
    model, inventory, result = learn_result([str(corpus_capture.file)])
    hosts = {a for zone in model.zones.values() for a in zone.hosts if not is_group(a)}
    if len(hosts) < 2:
        return  # nothing crosses anything: no policy to learn (checked on the others)
    text = draft(model, inventory, [s.name for s in result.sources], ["0" * 64])
    policy, problems = load_policy_bytes(text.encode(), "learned.yaml")
    assert policy is not None, [str(p) for p in problems if p.severity == "error"]
    found = alerts(corpus_capture.file, CompiledPolicy(policy))
    assert [(a["alert"]["rule"], a.get("src_ip"), a.get("dest_ip"), a.get("dest_port")) for a in found] == []
