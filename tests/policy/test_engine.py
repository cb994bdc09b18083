"""The compiled policy and the detector, on traffic built with scapy and a policy built in code."""

import ipaddress
import json
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.decoders.base import OPERATIONS
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_DEFAULT, Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.model import (
    Asset,
    Conduit,
    Defaults,
    Endpoint,
    FlowRule,
    Policy,
    Schedule,
    SystemInfo,
    Zone,
)
from agent.records import Frame
from tests import factory

CELL, SCADA, EWS_NET, ENTERPRISE = "10.10.10.0/24", "10.10.20.0/24", "10.10.40.0/24", "10.50.0.0/16"
PLC, HMI, HISTORIAN, EWS, LAPTOP, ROGUE = (
    "10.10.10.11",
    "10.10.20.21",
    "10.10.20.30",
    "10.10.40.5",
    "10.50.1.9",
    "172.31.0.5",
)
TUESDAY_10H = datetime(2024, 3, 5, 10, 0, tzinfo=UTC).timestamp()
TUESDAY_20H = datetime(2024, 3, 5, 20, 0, tzinfo=UTC).timestamp()


def mbap(tid: int, pdu: bytes) -> bytes:
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, 1) + pdu


READ = mbap(1, bytes([3]) + struct.pack("!HH", 0, 4))
WRITE = mbap(2, bytes([16]) + struct.pack("!HHB", 0, 1, 2) + b"\x00\x01")
PROGRAM = mbap(3, bytes([90, 0x2B, 0x30]))


def make_policy(**defaults: object) -> CompiledPolicy:
    def net(text: str) -> tuple[ipaddress.IPv4Network, ...]:
        return (ipaddress.ip_network(text),)

    zones = (
        Zone("cell", purdue_level=1.0, sl_t=(2,) * 7, networks=net(CELL), vlans=frozenset({10}),
             assets=(Asset("plc-1", "cell", ip=PLC, role="plc"),)),
        Zone("supervisory", purdue_level=2.0, networks=net(SCADA),
             assets=(Asset("hmi-1", "supervisory", ip=HMI), Asset("historian", "supervisory", ip=HISTORIAN))),
        Zone("engineering", purdue_level=2.0, networks=net(EWS_NET),
             assets=(Asset("ews-1", "engineering", ip=EWS),)),
        Zone("enterprise", purdue_level=4.0, networks=net(ENTERPRISE)),
    )  # fmt: skip
    modbus = frozenset({"modbus"})
    conduits = (
        Conduit("scada-cell", ("supervisory", "cell"), sl_t=(2,) * 7, flows=(
            FlowRule("hmi-polling", Endpoint("supervisory", "hmi-1"), Endpoint("cell"), modbus, "modbus",
                     ports=frozenset({502}), operations=frozenset({"read", "write", "diagnostic"})),
            FlowRule("historian-reads", Endpoint("supervisory", "historian"), Endpoint("cell"), modbus,
                     "modbus", operations=frozenset({"read"})),
        )),
        Conduit("ews-cell", ("engineering", "cell"), flows=(
            FlowRule("logic", Endpoint("engineering", "ews-1"), Endpoint("cell"), modbus, "modbus",
                     operations=frozenset({"read", "write", "program", "upload", "mode"}),
                     schedule=Schedule(frozenset({1, 3}), 8 * 60, 12 * 60, "UTC")),
        )),
    )  # fmt: skip
    policy = Policy("test.yaml", SystemInfo("test plant"), zones, conduits, Defaults(**defaults))  # type: ignore[arg-type]
    return CompiledPolicy(policy)


# Whether a stage that reads every record runs beside the policy (as the report does): the verdicts
# must be the same when the decoders build only the records the policy asks for (record_interest).
EVERY_RECORD = True


@pytest.fixture(autouse=True, params=["every record", "only the records the policy reads"])
def record_readers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "EVERY_RECORD", request.param == "every record")


def run(
    packets: list, start: float = TUESDAY_10H, policy: CompiledPolicy | None = None, tmp: Path | None = None,
    reload: tuple[int, CompiledPolicy] | None = None, times: list[float] | None = None,
):  # fmt: skip
    """Replay ``packets`` with the policy; ``reload``: swap in another policy before that frame;
    ``times``: each packet's timestamp (default: 10 ms apart from ``start``)."""
    consumers = [factory.Collector()] if EVERY_RECORD else []
    events: list[dict] = []

    class Sink:
        name = "memory"

        def emit(self, event: object) -> None:
            events.append({"event_type": event.event_type, **event.fields})  # type: ignore[attr-defined]

        def flush(self) -> None: ...
        def close(self) -> None: ...

    pipeline = Pipeline(PipelineConfig(events=EVENTS_DEFAULT), sinks=[Sink()], consumers=consumers,
                        policy=policy or make_policy())  # fmt: skip
    source = factory.ListSource(packets, start=start, times=times)
    if reload is not None:
        at, new_policy = reload
        detector = pipeline.policy
        assert detector is not None
        source = SwapAt(source, at, lambda: detector.swap(new_policy))  # type: ignore[assignment]
    pipeline.run(source)
    alerts = [e for e in events if e["event_type"] == "alert"]
    audits = [e for e in events if e["event_type"] == "audit"]
    return alerts, audits, pipeline


def modbus(client: str, server: str, *payloads: bytes, sport: int = 40000, dport: int = 502) -> list:
    segments = []
    for i, p in enumerate(payloads):
        segments.append((True, p))
        segments.append((False, mbap(i + 1, bytes([p[7], 0]))))  # a short reply, enough to keep pairing
    return factory.tcp_stream(segments, client=client, server=server, sport=sport, dport=dport)


def test_zone_lookup_asset_prefix_vlan() -> None:
    cp = make_policy()
    assert cp.zone_of(ipaddress.ip_address(PLC).packed, (), None)[1].name == "plc-1"  # type: ignore[union-attr]
    assert cp.zone_of(ipaddress.ip_address("10.10.10.99").packed, (), None) == ("cell", None)
    assert cp.zone_of(ipaddress.ip_address("192.168.1.1").packed, (10,), None) == ("cell", None)
    assert cp.zone_of(ipaddress.ip_address("192.168.1.1").packed, (), None) == (None, None)


def test_compliant_polling_raises_nothing() -> None:
    alerts, audits, pipeline = run(modbus(HMI, PLC, READ, WRITE, READ))
    assert alerts == [] and audits == []
    assert pipeline.policy is not None and pipeline.policy.flows_checked == 1


def test_historian_writing_is_operation_not_allowed() -> None:
    alerts, _, _ = run(modbus(HISTORIAN, PLC, READ, WRITE))
    (alert,) = alerts
    assert alert["alert"]["signature_id"] == 9100003 and alert["alert"]["rule"] == "operation_not_allowed"
    assert alert["policy"] == {"src_zone": "supervisory", "dest_zone": "cell", "conduit": "scada-cell",
                               "rule": "historian-reads", "operation": "write", "sl_t": 2,
                               "src_asset": "historian", "dest_asset": "plc-1"}  # fmt: skip
    assert "historian 10.10.20.30 (supervisory) performed modbus write" in alert["alert"]["signature"]
    assert alert["alert"]["metadata"]["iec62443_sr"] == ["SR 2.1", "SR 5.2"]
    assert alert["src_ip"] == HISTORIAN and alert["dest_port"] == 502 and alert["pcap_cnt"] == 6


def test_program_download_from_hmi_and_audit() -> None:
    alerts, audits, _ = run(modbus(HMI, PLC, PROGRAM))
    assert [a["alert"]["rule"] for a in alerts] == ["operation_not_allowed"]
    assert audits == []  # denied: the alert is the record; audits list what a rule allowed


def test_engineering_inside_and_outside_change_window() -> None:
    alerts, audits, _ = run(modbus(EWS, PLC, PROGRAM), start=TUESDAY_10H)
    assert alerts == [] and [(a["policy"]["operation"], a["policy"]["rule"]) for a in audits] == [
        ("program", "logic")
    ]
    assert audits[0]["audit"]["signature"].startswith(
        "ews-1 10.10.40.5 (engineering) performed modbus program"
    )
    alerts, _, _ = run(modbus(EWS, PLC, PROGRAM), start=TUESDAY_20H)
    assert [a["alert"]["rule"] for a in alerts] == ["outside_schedule"]
    assert "outside the window of rule logic (tue,thu 08:00-12:00 UTC)" in alerts[0]["alert"]["signature"]


def test_no_conduit_unknown_host_and_protocol_not_allowed() -> None:
    alerts, _, _ = run(modbus(LAPTOP, PLC, READ))
    assert [(a["alert"]["rule"], a["policy"]["src_zone"], a["policy"]["conduit"]) for a in alerts] == [
        ("no_conduit", "enterprise", None)
    ]
    alerts, _, _ = run(modbus(ROGUE, PLC, READ))
    assert [(a["alert"]["rule"], a["policy"]["src_zone"]) for a in alerts] == [("unknown_host", None)]
    telnet = factory.tcp_stream([(True, b"login: ")], client=HMI, server=PLC, dport=23)
    alerts, _, _ = run(telnet)
    assert [a["alert"]["rule"] for a in alerts] == ["protocol_not_allowed"]


def test_flow_opened_by_the_responder_side() -> None:
    alerts, _, _ = run(factory.tcp_stream([(True, READ)], client=PLC, server=HMI, dport=502))
    assert [a["alert"]["rule"] for a in alerts] == ["responder_initiated"]
    # Picked up mid-stream, the capture cannot tell who opened it: no direction alert.
    alerts, _, _ = run(factory.tcp_stream([(True, READ)], client=PLC, server=HMI, dport=502, handshake=False))
    assert "responder_initiated" not in [a["alert"]["rule"] for a in alerts]


def test_repeats_are_folded_but_counted() -> None:
    writes = [mbap(10 + i, bytes([16]) + struct.pack("!HHB", 0, 1, 2) + b"\x00\x01") for i in range(50)]
    alerts, _, pipeline = run(modbus(HISTORIAN, PLC, *writes))
    assert len(alerts) == 2  # the first occurrence, then one folded event for the other 49
    assert (
        alerts[0]["alert"]["count"] == 1
        and alerts[1]["alert"]["count"] == 49
        and alerts[1]["alert"]["folded"]
    )
    # The folded event spans the 49 repeats: it starts after the occurrence reported at once.
    first, folded = alerts[0]["alert"], alerts[1]["alert"]
    assert first["first_seen"] == first["last_seen"] < folded["first_seen"] < folded["last_seen"]
    assert pipeline.policy is not None
    assert pipeline.policy.stats()["violations"] == {"operation_not_allowed": 50}


def test_audited_operations_inside_a_zone_allowed_by_default() -> None:
    """``intra_zone: allow`` needs no rule, but a program download inside the zone is still audited."""
    other_plc = "10.10.10.12"
    alerts, audits, _ = run(modbus(other_plc, PLC, READ, PROGRAM, READ))
    assert alerts == []
    assert [(a["audit"]["count"], a["policy"]["operation"]) for a in audits] == [(1, "program")]
    policy = audits[0]["policy"]
    assert (policy["src_zone"], policy["dest_zone"], policy["rule"], policy["conduit"]) == (
        "cell",
        "cell",
        None,
        None,
    )
    assert audits[0]["audit"]["signature"].startswith(f"{other_plc} (cell) performed modbus program")
    # Checked against the zone's rules instead, the flow is a violation: alerted, not audited.
    alerts, audits, _ = run(modbus(other_plc, PLC, PROGRAM), policy=make_policy(intra_zone="check"))
    assert [a["alert"]["rule"] for a in alerts] == ["intra_zone_not_allowed"] and audits == []


def test_fold_window_elapsing_starts_a_new_alert() -> None:
    packets = modbus(HISTORIAN, PLC, WRITE, WRITE)
    alerts, _, _ = run(packets, policy=make_policy(alert_fold_seconds=0.001))
    assert [a["alert"]["count"] for a in alerts] == [1, 1]


def test_reload_swaps_policy_for_live_flows() -> None:
    cp = make_policy()
    alerts, _, pipeline = run(modbus(HISTORIAN, PLC, READ), policy=cp)
    assert alerts == [] and pipeline.policy is not None
    before = pipeline.policy.generation
    pipeline.policy.swap(make_policy())
    assert pipeline.policy.generation == before + 1


def test_alerts_in_eve_file(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    Pipeline(PipelineConfig(), sinks=[sink], policy=make_policy()).run(
        factory.ListSource(modbus(HISTORIAN, PLC, WRITE), start=TUESDAY_10H)
    )
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    alert = next(e for e in events if e["event_type"] == "alert")
    assert alert["timestamp"].startswith("2024-03-05T10:00:00") and alert["pcap_filename"] == "test.pcap"
    assert events[-1]["stats"]["policy"]["violations"] == {"operation_not_allowed": 1}


def test_s7comm_plus_is_in_the_policy_vocabulary_under_the_decoders_name() -> None:
    from agent.policy.loader import KNOWN_PROTOCOLS
    from agent.ports import CATEGORIES

    assert "s7comm_plus" in KNOWN_PROTOCOLS and "s7comm_plus" in CATEGORIES["ot"]


class Ends:
    """A consumer keeping the flows that ended (and reading no records)."""

    def __init__(self) -> None:
        self.flows: list = []

    def on_flow_end(self, flow: object, reason: str) -> None:
        self.flows.append(flow)


def test_the_policy_reads_the_operations_its_rules_restrict_schedule_or_audit() -> None:
    ends = Ends()
    packets = modbus(HMI, PLC, READ) + modbus(HISTORIAN, PLC, READ) + modbus(EWS, PLC, READ)
    pipeline = Pipeline(PipelineConfig(), consumers=[ends], policy=make_policy())
    pipeline.run(factory.ListSource(packets, start=TUESDAY_10H))
    looks = {flow.verdict.rules[0].id: flow.verdict.looks for flow in ends.flows}
    # Allowed silently: the classes a rule allows with no code list, schedule or rate, unless audited.
    assert looks["hmi-polling"] == OPERATIONS - {"read", "write", "diagnostic"}
    assert looks["historian-reads"] == OPERATIONS - {"read"}
    assert looks["logic"] == OPERATIONS  # every class it allows is scheduled; the others are denied
    # Denied, audited or scheduled classes are looked at; rules allowing every class look at the audited.
    policy = make_policy()
    modbus_only = frozenset({"modbus"})
    open_rule = FlowRule("any", Endpoint("supervisory", "hmi-1"), Endpoint("cell"), modbus_only, "modbus")
    assert policy.looked_at([open_rule]) == policy.audited
    reads = replace(open_rule, operations=frozenset({"read"}))
    scheduled_writes = replace(open_rule, operations=frozenset({"write"}),
                               schedule=Schedule(frozenset({1}), 8 * 60, 12 * 60, "UTC"))  # fmt: skip
    for rules, looked_at in (
        ([replace(reads, messages_per_second=5.0)], OPERATIONS),  # a rate is counted on every read
        ([replace(reads, function_codes=frozenset({3}))], OPERATIONS),  # the code decides
        ([reads, scheduled_writes], OPERATIONS - {"read"}),
    ):
        assert policy.looked_at(rules) == looked_at


class SwapAt:
    """A source that calls ``swap`` before its ``at``-th frame: a policy reload under traffic."""

    def __init__(self, inner: factory.ListSource, at: int, swap: Callable[[], None]) -> None:
        self.inner, self.at, self.swap, self.sources = inner, at, swap, inner.sources

    def __iter__(self) -> Iterator[Frame]:
        for i, frame in enumerate(self.inner):
            if i == self.at:
                self.swap()
            yield frame


def test_a_reload_makes_live_flows_ask_again_what_the_policy_reads() -> None:
    """HMI writes are allowed, then a reload allows it reads only: the writes after the reload, on the
    same connection, are alerts (the decoders stop skipping their records)."""
    writes = [mbap(10 + i, bytes([16]) + struct.pack("!HHB", 0, 1, 2) + b"\x00\x01") for i in range(6)]
    packets = modbus(HMI, PLC, *writes)
    lenient = make_policy().policy
    scada, *others = lenient.conduits
    hmi, *rest = scada.flows
    assert hmi.id == "hmi-polling"
    reads_only = replace(scada, flows=(replace(hmi, operations=frozenset({"read"})), *rest))
    # the reload comes after the handshake and 3 writes with their replies
    strict = CompiledPolicy(replace(lenient, conduits=(reads_only, *others)))
    alerts, _, pipeline = run(packets, reload=(3 + 2 * 3, strict))
    assert [(a["alert"]["rule"], a["policy"]["operation"], a["alert"]["count"]) for a in alerts] == [
        ("operation_not_allowed", "write", 1),
        ("operation_not_allowed", "write", 2),
    ]
    assert pipeline.policy is not None and pipeline.policy.stats()["violations"] == {
        "operation_not_allowed": 3
    }


def test_after_a_reload_requests_count_under_the_new_verdict() -> None:
    """The exporter's per-flow table is chosen when the decoder asks the readers again after a
    reload; the policy must have judged the flow again by then, also when another stage reads every
    record (the policy is asked all the same), or requests would go on counting under the old
    conduit."""
    from agent.exporter.accounting import OperationAccounting

    lenient = make_policy().policy
    scada, *others = lenient.conduits
    renamed = CompiledPolicy(replace(lenient, conduits=(replace(scada, id="scada-cell-2"), *others)))
    writes = [mbap(10 + i, bytes([16]) + struct.pack("!HHB", 0, 1, 2) + b"\x00\x01") for i in range(6)]
    consumers = [factory.Collector()] if EVERY_RECORD else []
    pipeline = Pipeline(PipelineConfig(), consumers=consumers, policy=make_policy())
    accounting = OperationAccounting()
    pipeline.decoders.interest = accounting.wrap(pipeline.decoders.interest)
    pipeline.decoders.listening = True
    detector = pipeline.policy
    assert detector is not None
    source = SwapAt(factory.ListSource(modbus(HMI, PLC, *writes), start=TUESDAY_10H), 3 + 2 * 3,
                    lambda: detector.swap(renamed))  # fmt: skip
    pipeline.run(source)  # type: ignore[arg-type]
    assert accounting.counts == {
        ("scada-cell", "cell", "modbus", "write"): 3,
        ("scada-cell-2", "cell", "modbus", "write"): 3,
    }


def changed_zone(zone_id: str, **changes: object) -> CompiledPolicy:
    """make_policy() with one zone's fields replaced."""
    policy = make_policy().policy
    zones = tuple(replace(z, **changes) if z.id == zone_id else z for z in policy.zones)  # type: ignore[arg-type]
    return CompiledPolicy(replace(policy, zones=zones))


FRAME_SRC_MAC = "02:00:00:00:00:01"  # the source MAC of every frame factory.tcp_stream builds


def test_an_asset_declared_by_mac_alone_is_named_on_ip_traffic() -> None:
    hmi_by_mac = Asset("hmi-1", "supervisory", mac=FRAME_SRC_MAC)
    historian = Asset("historian", "supervisory", ip=HISTORIAN, mac="02:00:00:00:00:33")
    cp = changed_zone("supervisory", assets=(hmi_by_mac, historian))
    # Its MAC names it whichever step placed the address: a network, or the MAC itself.
    assert cp.zone_of(ipaddress.ip_address("10.10.20.77").packed, (), FRAME_SRC_MAC) == (
        "supervisory",
        hmi_by_mac,
    )
    assert cp.zone_of(ipaddress.ip_address(ROGUE).packed, (), FRAME_SRC_MAC) == ("supervisory", hmi_by_mac)
    # The zone still comes first: on an address another zone's network places, the MAC names nobody.
    assert cp.zone_of(ipaddress.ip_address("10.10.10.99").packed, (), FRAME_SRC_MAC) == ("cell", None)
    # An asset with an ip is that ip: its MAC on another address (it routes, or forwards) is not it.
    assert cp.zone_of(ipaddress.ip_address("10.10.20.99").packed, (), "02:00:00:00:00:33") == (
        "supervisory",
        None,
    )
    # The rule whose initiator is supervisory/hmi-1 allows its polling.
    alerts, _, _ = run(modbus("10.10.20.77", PLC, READ, WRITE), policy=cp)
    assert alerts == []
    alerts, _, _ = run(modbus("10.10.20.77", PLC, PROGRAM), policy=cp)
    assert [(a["alert"]["rule"], a["policy"]["src_asset"], a["policy"]["rule"]) for a in alerts] == [
        ("operation_not_allowed", "hmi-1", "hmi-polling")
    ]


SSDP = factory.udp(HMI, "239.255.255.250", sport=50000, dport=1900, data=b"M-SEARCH * HTTP/1.1\r\n\r\n")
DHCP_INFORM = factory.udp(HMI, "255.255.255.255", sport=68, dport=67, data=bytes(240))


def test_ip_multicast_and_broadcast_stay_in_the_senders_zone() -> None:
    alerts, _, _ = run([SSDP, DHCP_INFORM])
    assert alerts == []  # intra-zone traffic of supervisory, allowed by defaults.intra_zone
    alerts, _, _ = run([SSDP, DHCP_INFORM], policy=make_policy(intra_zone="check"))
    assert [(a["alert"]["rule"], a["policy"]["src_zone"], a["policy"]["dest_zone"]) for a in alerts] == [
        ("intra_zone_not_allowed", "supervisory", "supervisory"),
        ("intra_zone_not_allowed", "supervisory", "supervisory"),
    ]
    # A sender in no zone is still a host in no zone.
    rogue = factory.udp(
        ROGUE, "239.255.255.250", sport=50000, dport=1900, data=b"M-SEARCH * HTTP/1.1\r\n\r\n"
    )
    alerts, _, _ = run([rogue])
    assert [(a["alert"]["rule"], a["policy"]["src_zone"], a["policy"]["dest_zone"]) for a in alerts] == [
        ("unknown_host", None, None)
    ]


def test_group_destinations_by_address_family_and_longest_prefix() -> None:
    v6 = ipaddress.ip_network("fd00:20::/64")
    cp = changed_zone("supervisory", networks=(ipaddress.ip_network(SCADA), v6))
    mdns6 = ipaddress.ip_address("ff02::fb").packed
    assert cp.dest_zone_of(mdns6, (), None, "supervisory") == ("supervisory", None)
    for group in ("224.0.0.251", "239.255.255.250", "255.255.255.255"):
        assert cp.dest_zone_of(ipaddress.ip_address(group).packed, (), None, "cell") == ("cell", None)
    # Not group addresses: 240/4 is reserved, x.x.x.255 a subnet's broadcast, which its network places.
    for other in ("240.0.0.1", "10.10.20.255", "192.168.1.255"):
        addr = ipaddress.ip_address(other).packed
        assert cp.dest_zone_of(addr, (), None, "cell") == cp.zone_of(addr, (), None)
    # A zone whose networks include the group address keeps it: longest prefix wins.
    groups = Zone("groups", networks=(ipaddress.ip_network("239.255.0.0/16"),))
    policy = make_policy().policy
    cp = CompiledPolicy(replace(policy, zones=(*policy.zones, groups)))
    assert cp.dest_zone_of(ipaddress.ip_address("239.255.255.250").packed, (), None, "cell") == (
        "groups",
        None,
    )
    assert cp.dest_zone_of(ipaddress.ip_address("239.1.1.1").packed, (), None, "cell") == ("cell", None)
    alerts, _, _ = run([SSDP], policy=cp)
    assert [(a["alert"]["rule"], a["policy"]["dest_zone"]) for a in alerts] == [("no_conduit", "groups")]
