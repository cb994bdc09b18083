"""Rate budgets: a rule's ``messages_per_second`` counts the requests of every flow the rule allows."""

import struct
from dataclasses import replace

from agent.policy.engine import CompiledPolicy
from tests.policy.test_engine import HMI, PLC, TUESDAY_10H, make_policy, mbap, modbus, record_readers, run

__all__ = ["record_readers"]  # the fixture running every test with and without a full record reader


def reads(count: int) -> list[bytes]:
    return [mbap(100 + i, bytes([3]) + struct.pack("!HH", 0, 4)) for i in range(count)]


def rated(per_second: float = 10.0, rule_id: str = "hmi-polling") -> CompiledPolicy:
    """The test policy with a budget of ``per_second`` on the HMI's polling rule (renamed ``rule_id``)."""
    policy = make_policy().policy
    scada, *others = policy.conduits
    hmi, *rest = scada.flows
    budgeted = replace(hmi, id=rule_id, messages_per_second=per_second)
    return CompiledPolicy(replace(policy, conduits=(replace(scada, flows=(budgeted, *rest)), *others)))


def rate_alerts(alerts: list[dict]) -> list[tuple[str, int, int, str]]:
    return [(a["src_ip"], a["src_port"], a["alert"]["count"], a["policy"]["rule"]) for a in alerts]


def test_one_flow_above_its_rules_budget_is_rate_exceeded() -> None:
    alerts, _, pipeline = run(modbus(HMI, PLC, *reads(12)), policy=rated())
    assert rate_alerts(alerts) == [(HMI, 40000, 1, "hmi-polling"), (HMI, 40000, 1, "hmi-polling")]
    first = alerts[0]["alert"]
    assert first["rule"] == "rate_exceeded" and first["signature_id"] == 9100008
    assert first["signature"] == (
        "hmi-1 10.10.20.21 (supervisory) sent more than 10 modbus messages a second "
        "to plc-1 10.10.10.11 (cell)"
    )
    # the 11th request (the 3 handshake packets, then request and reply for each) is the first over
    assert alerts[0]["pcap_cnt"] == 3 + 2 * 10 + 1
    assert pipeline.policy is not None and pipeline.policy.stats()["violations"] == {"rate_exceeded": 2}


def test_two_flows_together_above_the_rules_budget_are_rate_exceeded() -> None:
    """8 requests on each of two connections within one second: 16 against a budget of 10."""
    packets = modbus(HMI, PLC, *reads(8)) + modbus(HMI, PLC, *reads(8), sport=40001)
    alerts, _, pipeline = run(packets, policy=rated())
    # The 11th request is the second connection's 3rd; its 4th to 8th fold into one event.
    assert rate_alerts(alerts) == [(HMI, 40001, 1, "hmi-polling"), (HMI, 40001, 5, "hmi-polling")]
    assert alerts[1]["alert"]["folded"]
    assert pipeline.policy is not None and pipeline.policy.stats()["violations"] == {"rate_exceeded": 6}


def test_flows_within_the_rules_budget_raise_nothing() -> None:
    # 5 + 5 requests within one second: exactly the budget.
    packets = modbus(HMI, PLC, *reads(5)) + modbus(HMI, PLC, *reads(5), sport=40001)
    alerts, _, _ = run(packets, policy=rated())
    assert alerts == []
    # 8 + 8, the second connection after the first one's window has closed: two windows of 8.
    first, second = modbus(HMI, PLC, *reads(8)), modbus(HMI, PLC, *reads(8), sport=40001)
    times = [TUESDAY_10H + i * 0.01 for i in range(len(first))]
    times += [TUESDAY_10H + 1.5 + i * 0.01 for i in range(len(second))]
    alerts, _, _ = run(first + second, policy=rated(), times=times)
    assert alerts == []


def test_a_reload_keeps_the_window_of_a_rule_it_keeps_and_drops_the_others() -> None:
    """8 requests, a reload, 8 more within the same second: the same rule (same conduit, same id,
    new objects) goes on counting; a rule the new policy does not have starts from nothing."""
    packets = modbus(HMI, PLC, *reads(8)) + modbus(HMI, PLC, *reads(8), sport=40001)
    reload_at = 3 + 2 * 8  # the first connection's packets
    alerts, _, _ = run(packets, policy=rated(), reload=(reload_at, rated()))
    assert [a["alert"]["rule"] for a in alerts] == ["rate_exceeded", "rate_exceeded"]
    assert sum(a["alert"]["count"] for a in alerts) == 6
    alerts, _, pipeline = run(packets, policy=rated(), reload=(reload_at, rated(rule_id="hmi-polling-2")))
    assert alerts == []
    assert pipeline.policy is not None and list(pipeline.policy.rate_windows) == [
        ("conduit", "scada-cell", "hmi-polling-2")
    ]
