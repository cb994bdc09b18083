"""Policy files: every error class and warning with its message and exact line, normalisation into
the model, and robustness against arbitrary input (hypothesis)."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.policy.loader import load_policy, load_policy_bytes, load_policy_text
from agent.policy.model import Endpoint, Policy, Problem
from agent.ports import CATEGORIES

FIXTURES = Path(__file__).parent / "fixtures"
PLANT = (FIXTURES / "plant.yaml").read_text()
DOCS = Path(__file__).parents[2] / "docs" / "policy.md"


def doc_example() -> str:
    """The complete example of docs/policy.md, so the documentation cannot drift from the code."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1
    return str(blocks[0])


def variant(*edits: tuple[str, str]) -> str:
    text = PLANT
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} is not unique in the fixture"
        text = text.replace(old, new)
    return text


def line_of(text: str, needle: str) -> int:
    lines = text.splitlines()
    exact = [i for i, line in enumerate(lines, 1) if line.strip() == needle.strip()]
    if len(exact) == 1:
        return exact[0]
    found = [i for i, line in enumerate(lines, 1) if needle in line]
    assert len(found) == 1, f"needle {needle!r} is on lines {found}"
    return found[0]


def load(text: str) -> tuple[Policy | None, list[Problem]]:
    return load_policy_text(text, "p.yaml")


def assert_problem(text: str, message: str, needle: str, severity: str = "error") -> list[Problem]:
    policy, problems = load(text)
    line = line_of(text, needle)
    matching = [p for p in problems if p.severity == severity and message in p.message]
    assert matching, f"no {severity} with {message!r} in:\n" + "\n".join(map(str, problems))
    assert line in [p.line for p in matching], f"expected line {line}, got {matching}"
    assert all(p.path == "p.yaml" and p.column >= 1 for p in matching)
    if severity == "error":
        assert policy is None
    return problems


# ----------------------------------------------------------------------------------------------
# Valid policies and normalisation


def test_fixture_loads_without_problems() -> None:
    policy, problems = load(PLANT)
    assert problems == []
    assert policy is not None
    assert [z.id for z in policy.zones] == ["idmz", "supervisory", "cell"]
    assert [c.id for c in policy.conduits] == ["scada-cell", "reports"]


def test_doc_example_is_valid() -> None:
    policy, problems = load(doc_example())
    assert problems == []
    assert policy is not None and policy.system.name == "Riverside water treatment"


def test_normalisation() -> None:
    policy, _ = load(PLANT)
    assert policy is not None
    idmz, supervisory, cell = policy.zones
    assert idmz.purdue_level == 3.5 and idmz.sl_t is None
    assert idmz.networks == (ipaddress.ip_network("10.50.0.0/16"), ipaddress.ip_network("fd00:50::/64"))
    assert supervisory.sl_t == (2,) * 7  # a single level applies to every foundational requirement
    assert cell.sl_t == (2, 2, 3, 1, 2, 1, 2)
    assert cell.macs == frozenset({"aa:bb:cc:00:00:01"})  # lower case, colons
    assert supervisory.assets[0].mac == "00:11:22:33:44:55"
    assert supervisory.assets[0].zone == "supervisory" and supervisory.assets[0].criticality == "medium"
    assert (
        cell.vlans == frozenset({10}) and cell.safety is False and cell.line == line_of(PLANT, "- id: cell")
    )
    (peers,) = supervisory.allow
    assert peers.responder == Endpoint("supervisory", "hmi-1") and peers.protocols == frozenset({"http"})

    polling, changes = policy.conduits[0].flows
    assert polling.initiator == Endpoint("supervisory", "hmi-1")
    assert polling.protocols == frozenset({"modbus"}) and polling.label == "modbus"
    assert polling.ports == frozenset({502})
    assert polling.operations == frozenset({"read", "write"})
    assert polling.function_codes == frozenset({1, 3, 16})
    assert polling.messages_per_second == 50.0
    assert polling.schedule is None and polling.line == line_of(PLANT, "- id: polling")
    assert changes.protocols == CATEGORIES["ot"] and changes.label == "ot"
    assert changes.schedule is not None
    assert changes.schedule.days == frozenset({1, 3})
    assert (changes.schedule.start_minute, changes.schedule.end_minute) == (22 * 60, 6 * 60)
    assert changes.schedule.timezone == "UTC"
    assert policy.conduits[0].sl_t == (3,) * 7 and policy.conduits[0].zones == ("supervisory", "cell")

    d = policy.defaults
    assert (d.intra_zone, d.unknown_hosts, d.alert_fold_seconds, d.timezone) == (
        "check",
        "ignore",
        60.0,
        "Europe/Berlin",
    )
    assert d.audit_operations == frozenset({"program", "upload", "mode", "firmware", "config"})
    assert policy.system.owner == "Plant engineering" and policy.path == "p.yaml"


def test_category_any_and_schedule_defaults() -> None:
    text = variant(
        ("        category: web\n", "        category: any\n        schedule: {days: [sat]}\n"),
        ('hours: "22:00-06:00", timezone: UTC}', 'hours: "06:00-24:00"}'),
    )
    policy, problems = load(text)
    assert problems == [] and policy is not None
    web = policy.conduits[1].flows[0]
    assert web.protocols is None and web.label == "any"
    assert web.schedule is not None and web.schedule.days == frozenset({5})
    assert (web.schedule.start_minute, web.schedule.end_minute) == (0, 24 * 60)
    # A schedule without its own time zone takes defaults.timezone.
    changes = policy.conduits[0].flows[1].schedule
    assert changes is not None and changes.timezone == "Europe/Berlin" and changes.days == frozenset({1, 3})
    assert (changes.start_minute, changes.end_minute) == (6 * 60, 24 * 60)


def test_yaml_typing_does_not_change_text_values() -> None:
    # Unquoted, 12:34:56:12:34:56 is a base-60 integer in YAML 1.1 and 010 is the number 8.
    text = variant(
        ("macs: [AA-BB-CC-00-00-01]", "macs: [12:34:56:12:34:56, aabb.ccdd.eeff, 0A1B2C3D4E5F]"),
        ("  - id: idmz", "  - id: 010"),
        ("zones: [idmz, supervisory]", "zones: [010, supervisory]"),
        ("initiator: idmz", "initiator: 010"),
    )
    policy, problems = load(text)
    assert problems == [] and policy is not None
    assert policy.zones[0].id == "010"
    assert policy.zones[2].macs == frozenset({"12:34:56:12:34:56", "aa:bb:cc:dd:ee:ff", "0a:1b:2c:3d:4e:5f"})


def test_repeated_day_keeps_the_schedule() -> None:
    policy, problems = load(variant(("[tue, thu]", "[tue, tue]")))
    assert problems == [] and policy is not None
    schedule = policy.conduits[0].flows[1].schedule
    assert schedule is not None and schedule.days == frozenset({1})


def test_wide_function_codes_for_protocols_with_sub_codes() -> None:
    text = variant(("protocol: modbus", "protocol: s7comm"), ("[1, 3, 0x10]", "[0x10401, 0x1A]"))
    policy, problems = load(text)
    assert problems == [] and policy is not None
    assert policy.conduits[0].flows[0].function_codes == frozenset({0x10401, 0x1A})


def test_merge_keys_and_anchors() -> None:
    text = variant(
        ("      - id: changes\n", "      - &base\n        id: changes\n"),
        ("      - id: web\n", "      - <<: *base\n        id: web\n"),
    )
    policy, problems = load(text)
    assert problems == [] and policy is not None
    # Explicit keys win over merged ones; the rest (operations, schedule) comes from the anchor.
    web = policy.conduits[1].flows[0]
    assert web.id == "web" and web.initiator == Endpoint("idmz") and web.protocols == CATEGORIES["web"]
    assert web.operations == frozenset({"program", "upload"}) and web.schedule is not None


def test_utf8_bom_and_utf16(tmp_path: Path) -> None:
    for name, data in [("bom.yaml", b"\xef\xbb\xbf" + PLANT.encode()), ("u16.yaml", PLANT.encode("utf-16"))]:
        path = tmp_path / name
        path.write_bytes(data)
        policy, problems = load_policy(str(path))
        assert problems == [] and policy is not None and policy.path == str(path)


# ----------------------------------------------------------------------------------------------
# Errors: one case per error class, each with its message and line

# The flows of conduit 'reports', the last in the fixture.
REPORTS_FLOWS = """    flows:
      - id: web
        initiator: idmz
        responder: supervisory/hist-1
        category: web
        ports: [443]
"""

ERRORS = [
    # version, structure, keys, types
    ("version-missing", [("version: 1\n", "")], "the policy is missing 'version'", "system:"),
    ("version-2", [("version: 1", "version: 2")], "unsupported policy version 2", "version: 2"),
    ("version-text", [("version: 1", 'version: "1"')], "version must be the number 1", "version:"),
    (
        "top-key-typo",
        [("defaults:", "default:")],
        "unknown key 'default' in the policy; did you mean 'defaults'?",
        "default:",
    ),
    (
        "zone-key-typo",
        [("networks: [10.10.10.0/24]", "netwroks: [10.10.10.0/24]")],
        "unknown key 'netwroks' in zone 'cell'; did you mean 'networks'? (allowed: id, name,",
        "netwroks",
    ),
    ("flow-key-typo", [("ports: [502]", "port: [502]")], "did you mean 'ports'?", "port: [502]"),
    (
        "duplicate-key",
        [("  owner: Plant engineering", "  owner: Plant engineering\n  owner: Other  # dup")],
        "duplicate key 'owner' (first at line 6)",
        "# dup",
    ),
    (
        "type-bool",
        [("safety: false", 'safety: "no"')],
        "safety of zone 'cell' must be true or false",
        "safety:",
    ),
    (
        "type-list",
        [("networks: [10.10.10.0/24]", "networks: 10.10.10.0/24")],
        "networks of zone 'cell' must be a list",
        "networks: 10.10.10.0/24",
    ),
    ("type-int", [("vlans: [10]", "vlans: [ten]")], "VLAN of zone 'cell' must be a whole number", "[ten]"),
    ("type-mapping", [("zones:\n", "zones:\n  - just-a-name\n")], "zone #1 must be a mapping", "just-a-name"),
    (
        "type-text",
        [("initiator: idmz", "initiator: [idmz]")],
        "initiator of flow 'web' of conduit 'reports' must be text",
        "[idmz]",
    ),
    ("system-name", [("  name: Test plant\n", "")], "system is missing 'name'", "owner: Plant engineering"),
    (
        "flow-id-missing",
        [("      - id: web\n        initiator: idmz", "      - initiator: idmz")],
        "flow #1 of conduit 'reports' is missing 'id'",
        "- initiator: idmz",
    ),
    ("null-id", [("  - id: cell", "  - id: ~")], "'id' of zone #3 has no value", "- id: ~"),
    (
        "bad-id",
        [("  - id: reports", "  - id: rep/orts")],
        "conduit id: 'rep/orts' may only contain letters, digits",
        "rep/orts",
    ),
    # references
    (
        "conduit-undefined-zone",
        [("zones: [idmz, supervisory]", "zones: [idmz, supervisor]")],
        "conduit 'reports' joins undefined zone 'supervisor'; did you mean 'supervisory'?",
        "supervisor]",
    ),
    (
        "endpoint-undefined-zone",
        [("initiator: idmz", "initiator: dmz")],
        "initiator of flow 'web' of conduit 'reports': undefined zone 'dmz'; did you mean 'idmz'?",
        "initiator: dmz",
    ),
    (
        "endpoint-undefined-asset",
        [("supervisory/hist-1", "supervisory/hist-2")],
        "undefined asset 'hist-2'; did you mean 'hist-1'?",
        "hist-2",
    ),
    (
        "endpoint-asset-elsewhere",
        [("responder: cell/plc-1", "responder: cell/hmi-1")],
        "responder of flow 'polling' of conduit 'scada-cell': "
        "asset 'hmi-1' is in zone 'supervisory', not 'cell'",
        "cell/hmi-1",
    ),
    (
        "endpoint-form",
        [("responder: cell/plc-1", "responder: cell/plc-1/x")],
        "must be a zone id or zone/asset",
        "cell/plc-1/x",
    ),
    (
        "endpoint-outside-conduit",
        [("initiator: idmz", "initiator: cell")],
        "zone 'cell' is not one of the zones conduit 'reports' joins (idmz and supervisory)",
        "initiator: cell",
    ),
    (
        "endpoints-same-zone",
        [("        responder: cell\n", "        responder: supervisory\n")],
        "initiator and responder are both in zone 'supervisory'",
        "responder: supervisory",
    ),
    (
        "conduit-to-itself",
        [("zones: [idmz, supervisory]", "zones: [idmz, idmz]")],
        "conduit 'reports' joins zone 'idmz' to itself",
        "[idmz, idmz]",
    ),
    (
        "conduit-one-zone",
        [("zones: [idmz, supervisory]", "zones: [idmz]")],
        "conduit 'reports' must join exactly two zones, not 1",
        "zones: [idmz]",
    ),
    (
        "conduit-three-zones",
        [("zones: [idmz, supervisory]", "zones: [idmz, supervisory, cell]")],
        "must join exactly two zones, not 3",
        "[idmz, supervisory, cell]",
    ),
    (
        "intra-zone-outside",
        [
            (
                "        initiator: supervisory\n        responder: supervisory/hmi-1",
                "        initiator: cell  # out\n        responder: supervisory/hmi-1",
            )
        ],
        "initiator of flow 'hmi-peers' of zone 'supervisory': 'cell' is outside zone 'supervisory'",
        "# out",
    ),
    # membership and uniqueness across zones
    (
        "overlap",
        [("[10.10.10.0/24]", "[10.10.0.0/16]")],
        "network 10.10.0.0/16 of zone 'cell' overlaps network 10.10.20.0/24 of zone 'supervisory' (line 21)",
        "10.10.0.0/16",
    ),
    (
        "overlap-ipv6",
        [("[10.10.10.0/24]", '[10.10.10.0/24, "fd00::/16"]')],
        "network fd00::/16 of zone 'cell' overlaps network fd00:50::/64 of zone 'idmz'",
        "fd00::/16",
    ),
    (
        "same-vlan",
        [("vlans: [10]", "vlans: [10, 20]")],
        "VLAN 20 of zone 'cell' is already claimed by zone 'supervisory' (line 22)",
        "[10, 20]",
    ),
    (
        "same-mac",
        [("macs: [AA-BB-CC-00-00-01]", "macs: [AA-BB-CC-00-00-01, 0011.2233.4455]")],
        "MAC 00:11:22:33:44:55 of zone 'cell' is already claimed by zone 'supervisory'",
        "0011.2233.4455",
    ),
    (
        "same-asset-ip",
        [("ip: 10.10.10.11", "ip: 10.10.20.21")],
        "ip 10.10.20.21 of asset 'plc-1' (zone 'cell') is already the ip of asset 'hmi-1' "
        "(zone 'supervisory'",
        "name: plc-1",
    ),
    (
        "same-asset-name",
        [("name: plc-1", "name: hist-1")],
        "asset name 'hist-1' is already used in zone 'supervisory' (line 25)",
        "ip: 10.10.10.11",
    ),
    (
        "no-members",
        [('networks: [10.50.0.0/16, "fd00:50::/64"]', "networks: []")],
        "zone 'idmz' has no members: give it at least one of networks, vlans, macs, assets",
        "- id: idmz",
    ),
    (
        "duplicate-zone-id",
        [("  - id: cell\n", "  - id: idmz  # dup\n")],
        "duplicate zone id 'idmz' (first at line 14)",
        "# dup",
    ),
    (
        "duplicate-conduit-id",
        [("  - id: reports", "  - id: scada-cell  # dup")],
        "duplicate conduit id 'scada-cell' (first at line 41)",
        "# dup",
    ),
    (
        "duplicate-flow-id",
        [("      - id: changes", "      - id: polling  # dup")],
        "duplicate flow id 'polling' in conduit 'scada-cell' (first at line 45)",
        "# dup",
    ),
    (
        "duplicate-allow-id",
        [
            (
                "        protocol: http\n",
                "        protocol: http\n      - {id: hmi-peers, "
                "initiator: supervisory, responder: supervisory, protocol: ssh}  # dup\n",
            )
        ],
        "duplicate flow id 'hmi-peers' in zone 'supervisory' (first at line 27)",
        "# dup",
    ),
    # values
    (
        "cidr-host-bits",
        [("[10.10.10.0/24]", "[10.10.10.1/24]")],
        "network of zone 'cell': '10.10.10.1/24' has host bits set; did you mean 10.10.10.0/24?",
        "10.10.10.1/24",
    ),
    ("cidr-bad", [("[10.10.10.0/24]", "[10.10.10.0/33]")], "is not a network in CIDR form", "10.10.10.0/33"),
    (
        "ip-bad",
        [("ip: 10.10.10.11", "ip: 10.10.10.256")],
        "ip of asset 'plc-1' of zone 'cell': '10.10.10.256' is not an IPv4 or IPv6 address",
        "10.10.10.256",
    ),
    ("ip-prefix", [("ip: 10.10.10.11", "ip: 10.10.10.11/24")], "an asset has one address", "10.10.10.11/24"),
    (
        "mac-bad",
        [("AA-BB-CC-00-00-01", "AA-BB-CC-00-00")],
        "'AA-BB-CC-00-00' is not a MAC address",
        "AA-BB-CC-00-00",
    ),
    (
        "vlan-range",
        [("vlans: [10]", "vlans: [4096]")],
        "VLAN of zone 'cell': 4096 is out of range (0-4095)",
        "4096",
    ),
    ("vlan-negative", [("vlans: [10]", "vlans: [-1]")], "-1 is out of range (0-4095)", "[-1]"),
    (
        "protocol-typo",
        [("protocol: modbus", "protocol: modbsu")],
        "unknown protocol 'modbsu'; did you mean 'modbus'?",
        "modbsu",
    ),
    (
        "protocol-unknown",
        [("protocol: modbus", "protocol: zzzz")],
        "unknown protocol 'zzzz' (known: ",
        "zzzz",
    ),
    (
        "category-unknown",
        [("category: web", "category: webb")],
        "category of flow 'web' of conduit 'reports': 'webb' is not valid; did you mean 'web'?",
        "webb",
    ),
    (
        "protocol-and-category",
        [("        category: web\n", "        category: web\n        protocol: http\n")],
        "flow 'web' of conduit 'reports' names both a protocol and a category",
        "category: web",
    ),
    (
        "neither-protocol-nor-category",
        [("        category: web\n", "")],
        "flow 'web' of conduit 'reports' needs a protocol (e.g. modbus) or a category",
        "- id: web",
    ),
    (
        "operation-unknown",
        [("[read, write]", "[read, wrte]")],
        "'wrte' is not valid; did you mean 'write'?",
        "wrte",
    ),
    (
        "port-zero",
        [("ports: [502]", "ports: [0]")],
        "port of flow 'polling' of conduit 'scada-cell': 0 is out of range (1-65535)",
        "ports: [0]",
    ),
    ("port-big", [("ports: [502]", "ports: [65536]")], "65536 is out of range (1-65535)", "65536"),
    (
        "port-name",
        [("ports: [502]", "ports: [modbus]")],
        "port of flow 'polling' of conduit 'scada-cell' must be a whole number, not the text 'modbus'",
        "ports: [modbus]",
    ),
    (
        "function-code-range",
        [("[1, 3, 0x10]", "[1, 3, 256]")],
        "function code of flow 'polling' of conduit 'scada-cell': 256 is out of range (0-255)",
        "[1, 3, 256]",
    ),
    (
        "function-code-category",
        [("operations: [program, upload]", "function_codes: [90]")],
        "function_codes of flow 'changes' of conduit 'scada-cell' need a single protocol, "
        "not the category 'ot'",
        "function_codes: [90]",
    ),
    (
        "schedule-day",
        [("[tue, thu]", "[tue, thursday]")],
        "'thursday' is not valid; did you mean 'thu'?",
        "thursday",
    ),
    (
        "schedule-hours-format",
        [('"22:00-06:00"', '"10pm-6am"')],
        "'10pm-6am' must look like \"08:00-17:30\"",
        "10pm-6am",
    ),
    (
        "schedule-hours-range",
        [('"22:00-06:00"', '"22:00-24:30"')],
        "is not a time range within 00:00-24:00",
        "24:30",
    ),
    (
        "schedule-hours-empty",
        [('"22:00-06:00"', '"08:00-08:00"')],
        "starts and ends at the same time",
        "08:00-08:00",
    ),
    (
        "schedule-timezone",
        [("timezone: UTC}", "timezone: Mars/Olympus}")],
        "'Mars/Olympus' is not a known IANA time zone",
        "Mars/Olympus",
    ),
    (
        "schedule-nothing",
        [('{days: [tue, thu], hours: "22:00-06:00", timezone: UTC}', "{timezone: UTC}")],
        "schedule of flow 'changes' of conduit 'scada-cell' names neither days nor hours",
        "{timezone: UTC}",
    ),
    ("schedule-no-days", [("[tue, thu]", "[]")], "is empty: the flow would never be allowed", "days: []"),
    ("schedule-key", [("{days: [tue, thu]", "{day: [tue, thu]")], "unknown key 'day'", "day: [tue"),
    ("schedule-duplicate-day", [("[tue, thu]", "[tue, tue, thursday]")], "did you mean 'thu'?", "thursday"),
    (
        "empty-restriction",
        [("operations: [read, write]", "operations:  # read, write")],
        "operations of flow 'polling' of conduit 'scada-cell' has no value: leave the key out to allow any",
        "# read, write",
    ),
    (
        "rate-scalar",
        [("rate: {messages_per_second: 50}", "rate: 50")],
        "rate of flow 'polling' of conduit 'scada-cell' must be a mapping such as {messages_per_second: 50}",
        "rate: 50",
    ),
    (
        "rate-zero",
        [("{messages_per_second: 50}", "{messages_per_second: 0}")],
        "must be more than 0",
        "messages_per_second: 0",
    ),
    (
        "rate-infinite",
        [("{messages_per_second: 50}", "{messages_per_second: .inf}")],
        "must be a finite number",
        ".inf",
    ),
    (
        "rate-key",
        [("{messages_per_second: 50}", "{per_second: 50}")],
        "rate of flow 'polling' of conduit 'scada-cell' is missing 'messages_per_second'",
        "per_second: 50",
    ),
    (
        "sl_t-range",
        [("    sl_t: 2", "    sl_t: 5")],
        "sl_t of zone 'supervisory': 5 is out of range (0-4)",
        "sl_t: 5",
    ),
    (
        "sl_t-type",
        [("    sl_t: 2", "    sl_t: high")],
        "sl_t of zone 'supervisory' must be a level 0-4 or a vector {FR1: 2, ..., FR7: 3}",
        "sl_t: high",
    ),
    ("sl_t-missing-fr", [(", FR7: 2}", "}")], "sl_t of zone 'cell' is missing 'FR7'", "FR6: 1}"),
    ("sl_t-unknown-fr", [("FR7: 2}", "FR7: 2, FR8: 1}")], "unknown key 'FR8' in sl_t of zone 'cell'", "FR8"),
    (
        "sl_t-fr-range",
        [("FR3: 3", "FR3: 7")],
        "FR3 of sl_t of zone 'cell': 7 is out of range (0-4)",
        "FR3: 7",
    ),
    (
        "conduit-sl_t",
        [("    sl_t: 3", "    sl_t: [3]")],
        "sl_t of conduit 'scada-cell' must be a level 0-4",
        "sl_t: [3]",
    ),
    (
        "purdue-range",
        [("    purdue_level: 2", "    purdue_level: 6")],
        "purdue_level of zone 'supervisory' must be one of 0, 1, 2, 3, 3.5, 4, 5, not the number 6",
        "purdue_level: 6",
    ),
    (
        "purdue-text",
        [("    purdue_level: 2", "    purdue_level: L2")],
        "not the text 'L2'",
        "purdue_level: L2",
    ),
    ("purdue-between", [("    purdue_level: 2", "    purdue_level: 2.5")], "not the number 2.5", "2.5"),
    (
        "criticality",
        [("criticality: high", "criticality: severe")],
        "criticality of asset 'plc-1' of zone 'cell': 'severe' is not valid",
        "severe",
    ),
    # defaults
    (
        "defaults-fold-negative",
        [("alert_fold_seconds: 60", "alert_fold_seconds: -5")],
        "defaults.alert_fold_seconds: -5 is out of range (0-86400 seconds)",
        "alert_fold_seconds",
    ),
    (
        "defaults-fold-large",
        [("alert_fold_seconds: 60", "alert_fold_seconds: 100000")],
        "out of range",
        "alert_fold_seconds",
    ),
    (
        "defaults-intra-zone",
        [("intra_zone: check", "intra_zone: deny")],
        "defaults.intra_zone: 'deny' is not valid (valid: allow, check)",
        "intra_zone: deny",
    ),
    (
        "defaults-unknown-hosts",
        [("unknown_hosts: ignore", "unknown_hosts: drop")],
        "defaults.unknown_hosts: 'drop' is not valid",
        "unknown_hosts",
    ),
    (
        "defaults-timezone",
        [("timezone: Europe/Berlin", "timezone: Europe/Berln")],
        "'Europe/Berln' is not a known IANA time zone; did you mean 'Europe/Berlin'?",
        "Europe/Berln",
    ),
    (
        "defaults-audit",
        [("  timezone: Europe/Berlin\n", "  timezone: Europe/Berlin\n  audit_operations: [flash]\n")],
        "operation of defaults.audit_operations: 'flash' is not valid",
        "audit_operations",
    ),
    (
        "conduit-flows-empty",
        [(REPORTS_FLOWS, "    flows: []\n")],
        "flows of conduit 'reports' is empty: a conduit must allow at least one flow",
        "flows: []",
    ),
]


@pytest.mark.parametrize(("edits", "message", "needle"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_error(edits: list[tuple[str, str]], message: str, needle: str) -> None:
    assert_problem(variant(*edits), message, needle)


def test_every_error_is_reported_not_just_the_first() -> None:
    text = variant(
        ("vlans: [10]", "vlans: [4096]"), ("ports: [502]", "ports: [0]"), ("category: web", "category: x")
    )
    _, problems = load(text)
    assert len([p for p in problems if p.severity == "error"]) == 3
    assert [p.line for p in problems] == sorted(p.line for p in problems)


# Whole-file problems: not YAML, not a mapping, not text, unreadable, hostile.


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("version: 1\nzones: [a, b\n", "not valid YAML: expected ',' or ']'", 3),
        ("version: 1\nsystem: name: x\n", "not valid YAML: mapping values are not allowed here; quote", 2),
        ("version: 1\nsystem:\n\tname: x\n", "indent with spaces, not tabs", 3),
        ("version: 1\nsystem: {name: \x07}\n", "character U+0007 is not allowed", 2),
        ("version: 1\n---\nversion: 1\n", "not valid YAML: but found another document", 2),
        ("- version: 1\n- zones: []\n", "the policy must be a mapping (key: value), not a list", 1),
        ("just some words\n", "the policy must be a mapping (key: value), not the text 'just some words'", 1),
        ("", "the file is empty", 1),
        ("# only a comment\n", "the file is empty", 1),
        ("version: 1\nsystem: {name: x}\nzones: *nothing\n", "found undefined alias 'nothing'", 3),
        ("version: 1\nsystem: {name: x}\nzones: []\n", "zones is empty: a policy needs at least one zone", 3),
    ],
)
def test_file_errors(text: str, message: str, line: int) -> None:
    policy, problems = load(text)
    assert policy is None
    assert any(message in p.message and p.line == line for p in problems), problems


def test_not_utf8_names_the_line() -> None:
    policy, problems = load_policy_bytes(b"version: 1\nsystem:\n  name: caf\xe9\n", "p.yaml")
    assert policy is None
    assert problems == [Problem("p.yaml", 3, 12, "not UTF-8 text: byte 0xe9 cannot be decoded")]


def test_unreadable_file(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        policy, problems = load_policy(str(path))
        assert policy is None and len(problems) == 1
        assert problems[0].line == 0 and "cannot read the file" in problems[0].message


def test_huge_numbers_do_not_raise() -> None:
    digits = "9" * 5000  # beyond Python's int-to-str conversion limit
    text = variant(
        ("vlans: [10]", f"vlans: [{digits}]"),
        ("sl_t: 2", f"sl_t: {digits}"),
        ("purdue_level: 2", f"purdue_level: {digits}"),
        ("alert_fold_seconds: 60", f"alert_fold_seconds: {digits}"),
    )
    policy, problems = load(text)
    assert policy is None
    assert {p.line for p in problems if "out of range" in p.message or "must be" in p.message} >= {
        line_of(text, "vlans: [9"),
        line_of(text, "sl_t: 9"),
        line_of(text, "purdue_level: 9"),
    }
    assert all(len(p.message) < 400 for p in problems)


def test_alias_bomb_is_refused() -> None:
    # 200 aliases of a conduit with 200 aliases of a flow with 200 operations: 8 million items.
    operations = ", ".join(["read"] * 200)
    flows = "\n".join(["      - *f"] * 199)
    conduits = "\n".join(["  - *c"] * 199)
    text = (
        "version: 1\nsystem: {name: x}\nzones:\n  - {id: a, vlans: [1]}\n  - {id: b, vlans: [2]}\n"
        "conduits:\n  - &c\n    id: c\n    zones: [a, b]\n    flows:\n"
        f"      - &f {{id: f, initiator: a, responder: b, protocol: modbus, operations: [{operations}]}}\n"
        f"{flows}\n{conduits}\n"
    )
    policy, problems = load(text)
    assert policy is None
    assert any("expands to more than" in p.message for p in problems)


def test_deep_nesting_and_recursive_aliases() -> None:
    for text in ["[" * 5000 + "]" * 5000, "a: " + "{b: " * 3000 + "1" + "}" * 3000]:
        policy, problems = load(text)
        assert policy is None and problems
    recursive = variant(("  - id: idmz\n", "  - &z\n    id: idmz\n    <<: *z\n    allow: [*z]\n"))
    policy, problems = load(recursive)
    assert policy is None and problems


# ----------------------------------------------------------------------------------------------
# Warnings: the policy still loads

SIS_CONDUIT = """  - id: enterprise-sis
    zones: [idmz, cell]
    flows:
      - {id: remote, initiator: idmz, responder: cell, protocol: rdp}  # here
"""
UPWARD_CONDUIT = """  - id: cell-up
    zones: [idmz, cell]
    flows:
      - {id: beacon, initiator: cell, responder: idmz, protocol: mqtt}  # here
"""

WARNINGS = [
    (
        "risky-operations",
        [("operations: [read, write]", "operations: [read, write, program]")],
        "flow 'polling' of conduit 'scada-cell' allows program without a schedule",
        "[read, write, program]",
    ),
    (
        "all-operations",
        [("        operations: [read, write]\n", "")],
        "flow 'polling' of conduit 'scada-cell' allows every operation of modbus, including program",
        "- id: polling",
    ),
    (
        "safety-from-enterprise",
        [
            ("purdue_level: 3.5", "purdue_level: 4"),
            ("safety: false", "safety: true"),
            ("        ports: [443]\n", "        ports: [443]\n" + SIS_CONDUIT),
        ],
        "flow 'remote' of conduit 'enterprise-sis' lets zone 'idmz' (Purdue level 4) "
        "reach safety zone 'cell'",
        "# here",
    ),
    (
        # No conduit from level 4 into the safety zone, but a chain of them that never ends in the IDMZ.
        "safety-through-zones",
        [("purdue_level: 3.5", "purdue_level: 4"), ("safety: false", "safety: true")],
        "zone 'idmz' (Purdue level 4) reaches safety zone 'cell' in 2 hops that bypass the IDMZ: "
        "flow 'web' of conduit 'reports' into zone 'supervisory', then flow 'polling' of conduit "
        "'scada-cell' into zone 'cell'",
        "- id: web",
    ),
    (
        "purdue-down",
        [
            ("purdue_level: 3.5", "purdue_level: 5"),
            ("        ports: [443]\n", "        ports: [443]\n" + SIS_CONDUIT),
        ],
        "goes from Purdue level 5 (zone 'idmz') to level 1 (zone 'cell'): "
        "enterprise zones should reach control zones only through the IDMZ",
        "# here",
    ),
    (
        "purdue-up",
        [
            ("purdue_level: 3.5", "purdue_level: 4"),
            ("        ports: [443]\n", "        ports: [443]\n" + UPWARD_CONDUIT),
        ],
        "flow 'beacon' of conduit 'cell-up' goes from Purdue level 1 (zone 'cell') to level 4 (zone 'idmz')",
        "# here",
    ),
    (
        "conduit-sl_t-lower",
        [("    sl_t: 3", "    sl_t: 1")],
        "SL-T of conduit 'scada-cell' (1) is lower than that of zone 'supervisory' (2)",
        "sl_t: 1",
    ),
    (
        "conduit-sl_t-lower-vector",
        [("    sl_t: 3", "    sl_t: 2  # conduit")],
        "SL-T of conduit 'scada-cell' (2) is lower than that of zone 'cell' "
        "(FR1:2,FR2:2,FR3:3,FR4:1,FR5:2,FR6:1,FR7:2) in FR3",
        "# conduit",
    ),
    (
        "asset-outside-networks",
        [("ip: 10.10.20.30", "ip: 10.10.99.30")],
        "asset 'hist-1' (10.10.99.30) is outside the networks of zone 'supervisory' (10.10.20.0/24)",
        "10.10.99.30",
    ),
    (
        "asset-without-address",
        [
            (
                "{name: hist-1, ip: 10.10.20.30, role: historian, criticality: low}",
                "{name: hist-1, role: historian}",
            )
        ],
        "asset 'hist-1' of zone 'supervisory' has neither ip nor mac",
        "{name: hist-1",
    ),
    (
        "zone-placed-by-vlan-alone",
        [
            ("    networks: [10.10.10.0/24]\n", ""),
            (
                "{name: plc-1, ip: 10.10.10.11, role: plc, criticality: high}",
                '{name: plc-1, mac: "00:11:22:33:44:66"}',
            ),
        ],
        "zone 'cell' is placed by VLAN alone: any address seen on VLAN 10 that no network or asset places "
        "will count as a member",
        "vlans: [10]",
    ),
    (
        # Its assets' IPs place only themselves: any other address on the VLAN is still a member.
        "zone-placed-by-vlan-and-asset-ips",
        [("    networks: [10.10.10.0/24]\n", "")],
        "zone 'cell' is placed by VLAN and asset IPs only: any address seen on VLAN 10 that no network "
        "or asset places will count as a member",
        "vlans: [10]",
    ),
    (
        "unused-allow-rules",
        [("intra_zone: check", "intra_zone: allow")],
        "the allow rules of zone 'supervisory' are not used: defaults.intra_zone is 'allow'",
        "- id: hmi-peers",
    ),
]


@pytest.mark.parametrize(
    ("edits", "message", "needle"), [c[1:] for c in WARNINGS], ids=[c[0] for c in WARNINGS]
)
def test_warning(edits: list[tuple[str, str]], message: str, needle: str) -> None:
    problems = assert_problem(variant(*edits), message, needle, severity="warning")
    policy, _ = load(variant(*edits))
    assert policy is not None, "warnings must not refuse the policy"
    assert all(p.severity == "warning" for p in problems)


def test_a_safety_zone_reached_only_through_the_idmz_is_not_warned_about() -> None:
    enterprise = "  - id: corp\n    purdue_level: 4\n    networks: [10.200.0.0/16]\n"
    conduit = (
        "  - id: corp-idmz\n    zones: [corp, idmz]\n    flows:\n"
        "      - {id: replica, initiator: corp, responder: idmz, protocol: http}\n"
    )
    text = variant(
        ("safety: false", "safety: true"),
        ("zones:\n", "zones:\n" + enterprise),
        ("conduits:\n", "conduits:\n" + conduit),
    )
    policy, problems = load(text)
    assert policy is not None
    assert not [p for p in problems if "safety" in p.message], problems
    # The same chain from a level 4 zone that skips the IDMZ is named.
    shortcut = (
        "  - id: corp-scada\n    zones: [corp, supervisory]\n    flows:\n"
        "      - {id: erp, initiator: corp, responder: supervisory, protocol: http}\n"
    )
    _, problems = load(text.replace("conduits:\n", "conduits:\n" + shortcut))
    assert [p.message for p in problems if "reaches safety zone" in p.message] == [
        "zone 'corp' (Purdue level 4) reaches safety zone 'cell' in 2 hops that bypass the IDMZ: flow 'erp' "
        "of conduit 'corp-scada' into zone 'supervisory', then flow 'polling' of conduit 'scada-cell' into "
        "zone 'cell'. A safety system should not be reachable from enterprise levels (ZCR 3.3); end the "
        "chain in a level 3.5 zone"
    ]


def test_a_vlan_zone_with_networks_is_not_warned_about() -> None:
    policy, problems = load(variant())
    assert policy is not None and not [p for p in problems if "will count as a member" in p.message], problems


# ----------------------------------------------------------------------------------------------
# Robustness: whatever the bytes, load_policy answers with a Policy or at least one error

YAML_VALUES = [
    "[]",
    "{}",
    "~",
    "-1",
    "1e999",
    ".nan",
    ".inf",
    "*x",
    "&x",
    "&x [*x]",
    "!!binary AAAA",
    "<<",
    "'",
    '"',
    "99999999999999999999999999",
    "true",
    "[[[[",
    "0x1F",
    "2001-02-30",
    "12:30:00",
    "!!python/object:os.system",
    '"\\e[31m"',
    "!custom x",
    "? [a]",
    "|\n  block",
    "- - -",
    "{a: 1, a: 2}",
    "00:11:22:33:44:55",
    "10.0.0.0/8",
    "'fe80::1%eth0'",
    "\t",
    "\x00",
    "\ufeff",
    "é",
    "zones",
    "::",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = PLANT.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["char", "delete", "duplicate", "splice", "swap"]))
        if kind == "char" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            char = draw(st.characters() | st.sampled_from(list(":-[]{}&*!|>'\"%@#,?\t\n ")))
            lines[i] = lines[i][:j] + char + lines[i][j + 1 :]
        elif kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        else:
            key, sep, _ = lines[i].partition(": ")
            value = draw(st.sampled_from(YAML_VALUES) | st.text(max_size=12))
            lines[i] = f"{key}: {value}\n" if sep else f"{lines[i].rstrip()} {value}\n"
    return "".join(lines)


def check_outcome(policy: Policy | None, problems: list[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    assert (policy is None) == bool(errors)
    for p in problems:
        assert p.severity in ("error", "warning") and p.message and p.line >= 0 and p.column >= 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_text_never_raises(text: str) -> None:
    check_outcome(*load_policy_text(text, "m.yaml"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, len(PLANT)))
def test_random_bytes_never_raise(noise: bytes, at: int) -> None:
    data = PLANT.encode()
    check_outcome(*load_policy_bytes(data[:at] + noise + data[at:], "m.yaml"))
    check_outcome(*load_policy_bytes(noise, "m.yaml"))


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
NAMES = st.sampled_from(["idmz", "cell", "cell/plc-1", "modbus", "ot", "program", "10.0.0.0/8", "mon", "FR1"])
KEYS = st.sampled_from(
    ["id", "zones", "flows", "networks", "assets", "initiator", "protocol", "schedule", "x"]
)
VALUES = st.recursive(
    SCALARS | NAMES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    children: list[tuple[object, object]] = []
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    return [prefix] + [p for key, child in children for p in _paths(child, (*prefix, key))]


PLANT_DOC = yaml.safe_load(PLANT)
PLANT_PATHS = _paths(PLANT_DOC)[1:]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PLANT_PATHS), VALUES)
def test_any_value_in_any_place_never_raises(path: tuple[object, ...], value: object) -> None:
    """Type confusion field by field: each place of the fixture gets an arbitrary YAML value."""
    doc = copy.deepcopy(PLANT_DOC)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    check_outcome(*load_policy_text(yaml.safe_dump(doc, allow_unicode=True), "m.yaml"))
