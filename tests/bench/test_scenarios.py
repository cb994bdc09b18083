"""The labelled scenario captures (bench/scenarios.py, pcaps/scenarios/): deterministic, committed up to
date, well-formed, decoded by our decoders into exactly the labelled operations, and labels that agree
with rules/purdue-plant.yaml (zones, conduits, flow rules, schedule windows).

The policy engine's alerts are not tested here: the labels are its expected output, checked elsewhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.utils import RawPcapReader

from agent.capture.files import ReplaySource
from agent.decoders.base import OPERATIONS
from agent.outputs.eve import flow_header
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from agent.records import Event
from bench import scenarios
from bench.gen_plant import ACK, FIN, SYN
from tests.bench.test_gen_plant import Pkt, dissect
from tests.factory import Collector

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pcaps" / "scenarios"
POLICY = ROOT / scenarios.POLICY
MAX_BYTES = 300_000
NAMES = list(scenarios.SCENARIOS)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenarios")
    scenarios.generate(out, seed=1)
    return out


def labels_of(directory: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((directory / f"{name}.labels.json").read_text())
    return result


def packets(path: Path) -> list[Pkt]:
    return [dissect(frame, meta.sec + meta.usec / 1e6) for frame, meta in RawPcapReader(str(path))]


def expectations(labels: dict[str, Any]) -> list[dict[str, Any]]:
    return [*labels["findings"], *labels["audits"]]


# ------------------------------------------------------------------------------- files and bytes


def test_deterministic_for_a_seed(tmp_path: Path, generated: Path) -> None:
    again = tmp_path / "again"
    other = tmp_path / "other"
    scenarios.generate(again, seed=1)
    scenarios.generate(other, seed=2, only=["historian-write"])
    for name in NAMES:
        for suffix in (".pcap", ".labels.json"):
            assert (again / f"{name}{suffix}").read_bytes() == (generated / f"{name}{suffix}").read_bytes()
    digest = hashlib.sha256((other / "historian-write.pcap").read_bytes()).hexdigest()
    assert digest != hashlib.sha256((generated / "historian-write.pcap").read_bytes()).hexdigest()


def test_committed_captures_are_up_to_date(generated: Path) -> None:
    """pcaps/scenarios is what `python -m bench.scenarios --out pcaps/scenarios` writes (pcaps/README.md)."""
    if not COMMITTED.is_dir():
        pytest.skip("pcaps/scenarios not present")
    expected = sorted(p.name for p in generated.iterdir())
    assert sorted(p.name for p in COMMITTED.iterdir() if p.suffix in (".pcap", ".json")) == expected
    stale = [n for n in expected if (COMMITTED / n).read_bytes() != (generated / n).read_bytes()]
    assert not stale, f"regenerate with: .venv/bin/python -m bench.scenarios --out pcaps/scenarios ({stale})"


@pytest.mark.parametrize("name", NAMES)
def test_small_valid_pcap_with_clean_tcp(generated: Path, name: str) -> None:
    path = generated / f"{name}.pcap"
    assert path.stat().st_size < MAX_BYTES
    reader = RawPcapReader(str(path))
    assert reader.linktype == 1
    reader.close()
    pkts = packets(path)
    assert len(pkts) == labels_of(generated, name)["packets"]
    assert [p.ts for p in pkts] == sorted(p.ts for p in pkts)
    next_seq: dict[tuple[bytes, bytes, int, int], int] = {}
    for p in pkts:
        assert len(p.frame) >= 60
        assert p.ethertype == 0x0800 and p.ip_ok and p.l4_ok, p
        if p.proto != 6:
            continue
        key = (p.src, p.dst, p.sport, p.dport)
        if p.flags & SYN:
            assert key not in next_seq
            next_seq[key] = (p.seq + 1) & 0xFFFFFFFF
        else:
            assert p.seq == next_seq[key], f"sequence hole or overlap in {key}"
            next_seq[key] = (p.seq + len(p.payload) + (p.flags & FIN)) & 0xFFFFFFFF
        if p.flags & ACK:
            assert (next_seq[(p.dst, p.src, p.dport, p.sport)] - p.ack) & 0xFFFFFFFF < 0x80000000


def test_fixed_offset_is_europe_berlin() -> None:
    """The generator hard-codes CEST so that it never depends on the host's tz database; check it."""
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo(scenarios.TIMEZONE)
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    for day in (scenarios.TUESDAY, scenarios.SATURDAY):
        noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=berlin)
        assert noon.utcoffset() == scenarios.LOCAL.utcoffset(None)


# ---------------------------------------------------------------------------------- the labels


def test_every_violation_kind_of_the_brief_is_covered(generated: Path) -> None:
    rules = {name: [f["rule"] for f in labels_of(generated, name)["findings"]] for name in NAMES}
    assert rules["compliant"] == []
    assert labels_of(generated, "compliant")["audits"]
    kinds = Counter(rule for found in rules.values() for rule in found)
    for rule in (
        "operation_not_allowed",
        "outside_schedule",
        "no_conduit",
        "unknown_host",
        "responder_initiated",
        "protocol_not_allowed",
    ):
        assert kinds[rule] > 0, rule
    for name in NAMES:
        labels = labels_of(generated, name)
        assert labels["capture"] == f"{name}.pcap"
        assert labels["policy"] == scenarios.POLICY and labels["seed"] == 1
        for f in labels["findings"]:
            assert f["signature_id"] == scenarios.SIGNATURES[f["rule"]]


@pytest.mark.parametrize("name", NAMES)
def test_labelled_packets_carry_the_labelled_flow(generated: Path, name: str) -> None:
    labels = labels_of(generated, name)
    pkts = packets(generated / f"{name}.pcap")
    for e in expectations(labels):
        cnts = e["pcap_cnts"] + e.get("response_pcap_cnts", [])
        assert cnts and e["first_pcap_cnt"] == min(e["pcap_cnts"]) == e["pcap_cnts"][0]
        assert e["pcap_cnts"] == sorted(e["pcap_cnts"])
        ends = {
            (ipaddress.ip_address(e["src_ip"]).packed, e["src_port"]),
            (ipaddress.ip_address(e["dest_ip"]).packed, e["dest_port"]),
        }
        for cnt in cnts:
            assert 1 <= cnt <= len(pkts)
            p = pkts[cnt - 1]
            assert {(p.src, p.sport), (p.dst, p.dport)} == ends, (name, e["rule"], cnt)
        first = pkts[e["first_pcap_cnt"] - 1]
        stamp = dt.datetime.fromtimestamp(first.ts, dt.UTC).isoformat(timespec="microseconds")
        assert e["first_timestamp"] == stamp
        if e["level"] == "flow":
            # The whole conversation, from the initiator's SYN on.
            assert first.flags & SYN and not first.flags & ACK
            assert first.src == ipaddress.ip_address(e["src_ip"]).packed
            flow_cnts = [i + 1 for i, p in enumerate(pkts) if {(p.src, p.sport), (p.dst, p.dport)} == ends]
            assert e["pcap_cnts"] == flow_cnts
            assert e["operation"] is None
        else:
            assert e["operation"] and e["functions"]


def decode(path: Path) -> tuple[list[Any], list[Any], list[Event]]:
    """Our pipeline over a capture: (OT messages, ended flows, anomaly events)."""

    class Anomalies:
        name = "anomalies"

        def __init__(self) -> None:
            self.events: list[Event] = []

        def emit(self, event: Event) -> None:
            if event.event_type == "anomaly":
                self.events.append(event)

        def flush(self) -> None:
            return None

        def close(self) -> None:
            return None

    collector = Collector()
    sink = Anomalies()
    pipeline = Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink], consumers=[collector])
    with ReplaySource([str(path)]) as source:
        pipeline.run(source)
    return collector.messages, collector.flows, sink.events


FLOW_FIELDS = ("src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto")


@pytest.mark.parametrize("name", NAMES)
def test_captures_decode_to_the_labelled_operations(generated: Path, name: str) -> None:
    labels = labels_of(generated, name)
    messages, flows, anomalies = decode(generated / f"{name}.pcap")
    assert anomalies == []
    # Every flow: the app_proto it must be called and the operations of its requests.
    by_flow: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    by_cnt: dict[int, list[Any]] = defaultdict(list)
    for msg in messages:
        header = flow_header(msg.flow, None)
        if msg.direction == "request":
            by_flow[tuple(header[k] for k in FLOW_FIELDS)][msg.operation] += 1
        by_cnt[msg.pcap_cnt].append(msg)
    decoded = {}
    for flow in flows:
        header = flow_header(flow, None)
        key = tuple(header[k] for k in FLOW_FIELDS)
        decoded[key] = {"vlan": header["vlan"], "operations": dict(by_flow.get(key, {}))}
    expected = {
        tuple(f[k] for k in FLOW_FIELDS): {"vlan": f["vlan"], "operations": f["operations"]}
        for f in labels["flows"]
    }
    assert decoded == expected
    # Every labelled operation: the packets decode to messages of that class and those functions.
    for e in expectations(labels):
        if e["operation"] is None:
            continue
        for cnts, direction in ((e["pcap_cnts"], "request"), (e["response_pcap_cnts"], "response")):
            for cnt in cnts:
                found = [m for m in by_cnt[cnt] if m.direction == direction and m.operation == e["operation"]]
                assert len(found) == 1, (name, e["rule"], e["operation"], cnt, by_cnt[cnt])
        functions = {m.function for cnt in e["pcap_cnts"] for m in by_cnt[cnt]}
        assert sorted(functions) == e["functions"]
        # ... and they are all of them: no packet of the flow outside the label has that operation.
        same_flow = [
            m
            for m in messages
            if flow_header(m.flow, None)["src_port"] == e["src_port"]
            and flow_header(m.flow, None)["src_ip"] == e["src_ip"]
        ]
        labelled = set(e["pcap_cnts"]) | set(e["response_pcap_cnts"])
        assert {m.pcap_cnt for m in same_flow if m.operation == e["operation"]} == labelled


# --------------------------------------------------------------------- labels against the policy


def load_policy() -> dict[str, Any]:
    policy: dict[str, Any] = yaml.safe_load(POLICY.read_text())
    return policy


def zone_of(policy: dict[str, Any], ip: str) -> str | None:
    """docs/policy.md: an asset's IP first, then the longest network containing the address."""
    addr = ipaddress.ip_address(ip)
    for zone in policy["zones"]:
        if any(a.get("ip") == ip for a in zone.get("assets", [])):
            return str(zone["id"])
    best: tuple[int, str] | None = None
    for zone in policy["zones"]:
        for net in zone.get("networks", []):
            network = ipaddress.ip_network(net)
            if addr in network and (best is None or network.prefixlen > best[0]):
                best = (network.prefixlen, zone["id"])
    return best[1] if best else None


def conduits_between(policy: dict[str, Any], a: str | None, b: str | None) -> list[dict[str, Any]]:
    return [c for c in policy.get("conduits", []) if set(c["zones"]) == {a, b}]


def endpoint_matches(endpoint: str, zone: str | None, asset_name: str | None) -> bool:
    zone_id, _, asset = endpoint.partition("/")
    return zone_id == zone and (not asset or asset == asset_name)


def asset_name(policy: dict[str, Any], ip: str) -> str | None:
    for zone in policy["zones"]:
        for a in zone.get("assets", []):
            if a.get("ip") == ip:
                return str(a["name"])
    return None


def in_schedule(schedule: dict[str, Any], stamp: str, default_tz: str) -> bool:
    assert schedule.get("timezone", default_tz) == scenarios.TIMEZONE
    local = dt.datetime.fromisoformat(stamp).astimezone(scenarios.LOCAL)
    start, _, end = schedule["hours"].partition("-")
    minute = local.hour * 60 + local.minute
    lo = int(start[:2]) * 60 + int(start[3:])
    hi = int(end[:2]) * 60 + int(end[3:])
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]
    return day in schedule["days"] and lo <= minute < hi


def test_labels_agree_with_the_policy(generated: Path) -> None:
    policy = load_policy()
    default_tz = policy["defaults"]["timezone"]
    for name in NAMES:
        labels = labels_of(generated, name)
        for f in labels["flows"]:
            assert zone_of(policy, f["src_ip"]) == f["src_zone"], (name, f)
            assert zone_of(policy, f["dest_ip"]) == f["dest_zone"], (name, f)
        for e in expectations(labels):
            where = (name, e["rule"], e["operation"])
            src, dst = e["src_zone"], e["dest_zone"]
            assert zone_of(policy, e["src_ip"]) == src and zone_of(policy, e["dest_ip"]) == dst, where
            joined = conduits_between(policy, src, dst)
            if e["rule"] in ("no_conduit", "unknown_host"):
                assert e["conduit"] is None and not joined, where
                assert (src is None) == (e["rule"] == "unknown_host"), where
                continue
            assert [c["id"] for c in joined] == [e["conduit"]], where
            flows = joined[0]["flows"]
            same_proto = [r for r in flows if r.get("protocol") == e["app_proto"]]
            if e["rule"] == "protocol_not_allowed":
                assert e["flow_rule"] is None and not same_proto, where
                assert all(r.get("category") is None for r in flows), where
                continue
            rule = next(r for r in flows if r["id"] == e["flow_rule"])
            assert rule["protocol"] == e["app_proto"] and e["dest_port"] in rule["ports"], where
            src_asset, dst_asset = asset_name(policy, e["src_ip"]), asset_name(policy, e["dest_ip"])
            if e["rule"] == "responder_initiated":
                assert all(endpoint_matches(r["initiator"], dst, dst_asset) for r in same_proto), where
                assert all(endpoint_matches(r["responder"], src, src_asset) for r in same_proto), where
                continue
            assert endpoint_matches(rule["initiator"], src, src_asset), where
            assert endpoint_matches(rule["responder"], dst, dst_asset), where
            op = e["operation"]
            if e["rule"] == "operation_not_allowed":
                # The flow rule admits the flow, and no rule of the conduit for it allows the operation.
                assert not any(
                    allows(r, op)
                    for r in same_proto
                    if endpoint_matches(r["initiator"], src, src_asset)
                    and endpoint_matches(r["responder"], dst, dst_asset)
                ), where
                continue
            assert op is None or allows(rule, op), where
            if e["rule"] == "outside_schedule":
                assert not in_schedule(rule["schedule"], e["first_timestamp"], default_tz), where
            else:
                assert e["rule"] == "audit" and op in policy["defaults"]["audit_operations"], where
                assert in_schedule(rule["schedule"], e["first_timestamp"], default_tz), where


def allows(rule: dict[str, Any], operation: str) -> bool:
    return "operations" not in rule or operation in rule["operations"]


# ----------------------------------------------------------------------- the policy files' shape

KNOWN = {
    "top": {"version", "system", "defaults", "zones", "conduits"},
    "defaults": {"intra_zone", "unknown_hosts", "audit_operations", "alert_fold_seconds", "timezone"},
    "zone": {
        "id",
        "name",
        "description",
        "owner",
        "location",
        "safety",
        "purdue_level",
        "sl_t",
        "networks",
        "vlans",
        "macs",
        "assets",
        "allow",
        "link",  # capacity, bulk budget and backup windows of the zone's uplink
    },
    "asset": {"name", "ip", "mac", "role", "criticality"},
    "conduit": {"id", "name", "description", "zones", "sl_t", "flows", "link"},
    "flow": {
        "id",
        "initiator",
        "responder",
        "protocol",
        "category",
        "ports",
        "operations",
        "function_codes",
        "schedule",
        "rate",
    },
}
CATEGORIES = {"ot", "remote_access", "file_transfer", "backup", "infrastructure", "web", "any"}


@pytest.mark.parametrize("policy_file", ["rules/purdue-plant.yaml", "rules/demo.yaml"])
def test_policy_files_are_well_formed(policy_file: str) -> None:
    """A structural check of docs/policy.md v1 (the real validator is `conduitwatch policy validate`)."""
    policy = yaml.safe_load((ROOT / policy_file).read_text())
    assert set(policy) <= KNOWN["top"] and policy["version"] == 1 and policy["system"]["name"]
    assert set(policy.get("defaults", {})) <= KNOWN["defaults"]
    zones = {z["id"]: z for z in policy["zones"]}
    assert len(zones) == len(policy["zones"])
    assets = {}
    claimed: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for zone in policy["zones"]:
        assert set(zone) <= KNOWN["zone"], zone["id"]
        assert any(zone.get(k) for k in ("networks", "vlans", "macs", "assets")), zone["id"]
        for a in zone.get("assets", []):
            assert set(a) <= KNOWN["asset"] and a["name"] not in assets
            assets[a["name"]] = zone["id"]
        for net in zone.get("networks", []):
            network = ipaddress.ip_network(net)
            assert not any(network.overlaps(other) for other, _ in claimed), net
            claimed.append((network, zone["id"]))

    def check_endpoint(endpoint: str) -> str:
        zone_id, _, asset = endpoint.partition("/")
        assert zone_id in zones, endpoint
        assert not asset or assets.get(asset) == zone_id, endpoint
        return zone_id

    def check_rules(rules: list[dict[str, Any]], allowed_zones: set[str]) -> None:
        ids = [r["id"] for r in rules]
        assert len(ids) == len(set(ids))
        for r in rules:
            assert set(r) <= KNOWN["flow"], r["id"]
            assert (r.get("protocol") is None) != (r.get("category") is None), r["id"]
            assert r.get("category") in (None, *CATEGORIES), r["id"]
            assert {check_endpoint(r["initiator"]), check_endpoint(r["responder"])} <= allowed_zones, r["id"]
            assert set(r.get("operations", [])) <= OPERATIONS, r["id"]
            if "schedule" in r:
                s = r["schedule"]
                assert set(s) <= {"days", "hours", "timezone"} and set(s["days"]) <= {
                    "mon",
                    "tue",
                    "wed",
                    "thu",
                    "fri",
                    "sat",
                    "sun",
                }
                dt.datetime.strptime(s["hours"].split("-")[0], "%H:%M")
                dt.datetime.strptime(s["hours"].split("-")[1], "%H:%M")

    for zone in policy["zones"]:
        check_rules(zone.get("allow", []), {zone["id"]})
    ids = [c["id"] for c in policy.get("conduits", [])]
    assert len(ids) == len(set(ids))
    for c in policy.get("conduits", []):
        assert set(c) <= KNOWN["conduit"], c["id"]
        a, b = c["zones"]
        assert a in zones and b in zones and a != b, c["id"]
        check_rules(c["flows"], {a, b})
