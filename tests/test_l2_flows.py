"""L2 flows: non-IP frames in the flow table, decoders by EtherType, EVE fields and MAC/VLAN zones."""

import json
from pathlib import Path

from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from agent.flows import FlowConfig
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.model import Asset, Conduit, Defaults, Endpoint, FlowRule, Policy, SystemInfo, Zone
from tests import factory
from tests.decoders.l2frames import GOOSE_GROUP, PUBLISHER, goose

PLC_MAC, STATION_MAC, STRANGER_MAC = "02:00:00:00:00:0b", PUBLISHER, "02:00:00:00:00:99"


def profinet(src: str, dst: str, body: bytes = b"\xfe\xfd\x04\x00\x00\x00\x00\x07\x00\x00\x00\x00") -> Ether:
    return Ether(src=src, dst=dst, type=0x8892) / Raw(body)


def run_to_eve(
    tmp_path: Path, packets: list, config: PipelineConfig | None = None, policy: CompiledPolicy | None = None
) -> tuple[list[dict], Pipeline]:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    pipeline = Pipeline(config or PipelineConfig(events=EVENTS_ALL), sinks=[sink], policy=policy)
    pipeline.run(factory.ListSource(packets))
    sink.close()
    return [json.loads(line) for line in out.read_text().splitlines()], pipeline


def test_l2_flow_is_bidirectional_and_named_by_macs_and_ethertype(tmp_path: Path) -> None:
    packets = [profinet(STATION_MAC, PLC_MAC), profinet(PLC_MAC, STATION_MAC), goose(), goose(vlan=5)]
    events, pipeline = run_to_eve(tmp_path, packets)
    flows = [e for e in events if e["event_type"] == "flow"]
    assert len(flows) == 3 and pipeline.stats.l2_packets == 4
    pn = next(f for f in flows if f["app_proto"] == "profinet")
    assert (pn["src_mac"], pn["dest_mac"], pn["ether_type"], pn["proto"]) == (
        STATION_MAC,
        PLC_MAC,
        0x8892,
        "ETH",
    )
    assert pn["flow"]["pkts_toserver"] == 1 and pn["flow"]["pkts_toclient"] == 1
    assert "src_ip" not in pn and "src_port" not in pn and pn["community_id"] == ""
    tagged = [f for f in flows if f["app_proto"] == "goose"]
    assert sorted(f["vlan"] for f in tagged) == [[], [5]]  # the VLAN is part of the key
    ot = [e for e in events if e["event_type"] == "ot"]
    assert {e["ot"]["protocol"] for e in ot} == {"profinet", "goose"} and ot[0]["src_mac"] == STATION_MAC


def test_l2_events_match_the_published_schema(tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "eve.schema.json").read_text())
    stp = Ether(src=STATION_MAC, dst="01:80:c2:00:00:00", type=38) / Raw(b"\x42\x42\x03" + bytes(35))
    events, _ = run_to_eve(tmp_path, [goose(), stp, *factory.tcp_session()])
    for event in events:
        if event["event_type"] in ("flow", "stats"):  # the event types the schema describes so far
            jsonschema.validate(event, schema)
    stp_flow = next(e for e in events if e["event_type"] == "flow" and e["app_proto"] == "stp")
    assert stp_flow["llc_dsap"] == 0x42 and "ether_type" not in stp_flow


def test_l2_flows_share_the_table_bounds_and_timeouts() -> None:
    publishers = [goose(src=f"02:00:00:00:01:{i:02x}") for i in range(3)]
    pipeline = Pipeline(PipelineConfig(flows=FlowConfig(max_flows=2, other_timeout=1.0)))
    pipeline.run(
        factory.ListSource([*publishers, goose(src="02:00:00:00:01:00")], times=[0.0, 0.1, 0.2, 5.0])
    )
    table = pipeline.flows
    assert (table.created, table.evicted) == (4, 1)  # the third publisher evicted the first
    assert table.timed_out == 2  # 5 s later the other two were idle past 1 s; the first came back


def test_ip_traffic_is_unchanged_beside_l2_flows() -> None:
    messages, _, pipeline = factory.decode([*factory.tcp_session(), goose()])
    assert [m.protocol for m in messages] == ["modbus", "modbus", "goose"]
    assert pipeline.stats.ip_packets == 8 and pipeline.stats.l2_packets == 1


def test_without_decoders_an_l2_flow_is_named_by_its_ethertype(tmp_path: Path) -> None:
    config = PipelineConfig(decoder_names=())
    events, _ = run_to_eve(
        tmp_path, [goose(), Ether(src=PUBLISHER, dst=GOOSE_GROUP, type=0x88E3) / Raw(bytes(40))], config
    )
    assert sorted(e["app_proto"] for e in events if e["event_type"] == "flow") == ["goose", "mrp"]


def make_policy(intra_zone: str = "allow") -> CompiledPolicy:
    goose_only = FlowRule("goose-in-bay", Endpoint("bay"), Endpoint("bay"), frozenset({"goose"}), "goose")
    zones = (
        Zone("cell", vlans=frozenset({10}), assets=(Asset("plc-1", "cell", mac=PLC_MAC, role="plc"),)),
        Zone("bay", macs=frozenset({STATION_MAC}), allow=(goose_only,)),
    )
    conduits = (Conduit("unused", ("cell", "bay"), flows=()),)
    return CompiledPolicy(
        Policy("l2.yaml", SystemInfo("substation"), zones, conduits, Defaults(intra_zone=intra_zone))
    )


def alerts(events: list[dict]) -> list[tuple[str, str | None, str | None]]:
    return [
        (e["alert"]["rule"], e["policy"]["src_zone"], e["policy"]["dest_zone"])
        for e in events
        if e["event_type"] == "alert"
    ]


def test_multicast_stays_in_the_senders_zone(tmp_path: Path) -> None:
    events, _ = run_to_eve(tmp_path, [goose()], policy=make_policy(intra_zone="check"))
    assert alerts(events) == []  # GOOSE to a group address: bay -> bay, allowed by the zone's rule
    (tmp_path / "x").mkdir()
    events, _ = run_to_eve(
        tmp_path / "x", [profinet(STATION_MAC, "01:0e:cf:00:00:00")], policy=make_policy(intra_zone="check")
    )
    assert alerts(events) == [("intra_zone_not_allowed", "bay", "bay")]


def test_unicast_l2_between_zones_needs_a_conduit_and_names_macs(tmp_path: Path) -> None:
    events, _ = run_to_eve(tmp_path, [profinet(STATION_MAC, PLC_MAC)], policy=make_policy())
    assert alerts(events) == [("protocol_not_allowed", "bay", "cell")]  # the conduit allows nothing
    alert = next(e for e in events if e["event_type"] == "alert")
    assert STATION_MAC in alert["alert"]["signature"] and "plc-1" in alert["alert"]["signature"]


def test_vlan_zone_and_unknown_hosts(tmp_path: Path) -> None:
    tagged = Ether(src=STRANGER_MAC, dst=GOOSE_GROUP) / Dot1Q(vlan=10, type=0x88B8) / Raw(bytes(20))
    untagged = profinet(STRANGER_MAC, "01:0e:cf:00:00:00")
    events, _ = run_to_eve(tmp_path, [tagged, untagged], policy=make_policy())
    assert alerts(events) == [("unknown_host", None, None)]  # the tagged frame is in zone cell
