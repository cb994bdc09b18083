"""The asset inventory: identity from the wire, roles with evidence, MACs and vendors, bounds, changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.assets.inventory import AssetInventory, infer_roles, records
from agent.assets.oui import OuiRegistry
from agent.pipeline import Pipeline, PipelineConfig
from tests.assets import traffic
from tests.factory import ListSource

MANUF = """\
00:80:F4\tTelemech\tTelemechanique Electrique
00:00:BC\tRockwell\tRockwell Automation
00:14:22\tDell\tDell Inc.
"""


def run(packets: list[Any], **kwargs: Any) -> tuple[AssetInventory, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    inventory = AssetInventory(
        emit=lambda kind, ts, flow, cnt, src, fields: events.append((kind, fields)), **kwargs
    )
    source = ListSource(packets)
    Pipeline(PipelineConfig(), consumers=[inventory]).run(source)
    return inventory, events


def by_address(inventory: AssetInventory, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "manuf").write_text(MANUF)
    return {r.address: r for r in records(inventory, OuiRegistry(str(tmp_path / "manuf")), ["x.pcap"])}


def test_modbus_device_identification_is_the_servers_identity(tmp_path: Path) -> None:
    inventory, _ = run(traffic.modbus_identification())
    assets = by_address(inventory, tmp_path)
    plc = assets[traffic.PLC]
    assert plc.identity == {
        "vendor": "Schneider Electric",
        "product_code": "BMX P34 2020",
        "revision": "V2.70",
    }
    assert plc.identity_from == "modbus device identification (MEI 14)"
    assert plc.identity_packet is not None and plc.identity_packet["pcap_cnt"] > 0
    assert assets[traffic.HMI].identity == {}
    assert plc.mac == traffic.PLC_MAC and plc.vendor == "Telemechanique Electrique"
    assert assets[traffic.HMI].vendor == "Dell Inc."


def test_roles_come_with_their_evidence(tmp_path: Path) -> None:
    inventory, _ = run(traffic.modbus_identification())
    assets = by_address(inventory, tmp_path)
    plc_roles = {r.role: r.evidence for r in assets[traffic.PLC].roles}
    assert "controller" in plc_roles and "modbus" in plc_roles["controller"]
    hmi_roles = {r.role: r.evidence for r in assets[traffic.HMI].roles}
    assert list(hmi_roles) == ["hmi"] and "modbus write x1" in hmi_roles["hmi"]
    assert assets[traffic.PLC].served == {"modbus": 1} and assets[traffic.HMI].used == {"modbus": 1}


def test_cip_list_identity_names_the_responder(tmp_path: Path) -> None:
    inventory, _ = run(traffic.list_identity())
    adapter = by_address(inventory, tmp_path)[traffic.ADAPTER]
    assert adapter.identity == {
        "vendor_id": 1,
        "device_type": 0x0E,
        "product_code": 0x96,
        "revision": "30.11",
        "serial": "0x60a1b2c3",
        "product": "1769-L33ER/A LOGIX5333ER",
    }
    assert adapter.identity_from == "enip ListIdentity"
    assert adapter.roles[0].role == "controller" and "device type 14" in adapter.roles[0].evidence
    assert adapter.vendor == "Rockwell Automation"


def test_a_changed_firmware_revision_is_an_alert() -> None:
    packets = traffic.modbus_identification(b"V2.70") + traffic.modbus_identification(b"V3.10", sport=40002)
    inventory, events = run(packets, announce=False)
    alerts = [f for kind, f in events if kind == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == [9100303]
    assert "revision 'V2.70' -> 'V3.10'" in alerts[0]["alert"]["signature"]
    assert [f["asset"]["event"] for kind, f in events if kind == "asset"] == ["changed"]
    host = inventory.hosts[bytes([10, 1, 1, 10])]
    assert host.identity["revision"] == "V3.10" and len(host.changes) == 1


def test_new_hosts_are_announced_and_a_baseline_makes_strangers_alerts() -> None:
    inventory, events = run(traffic.modbus_identification(), baseline=frozenset({traffic.HMI}))
    assert sorted(f["asset"]["address"] for kind, f in events if kind == "asset") == [
        traffic.PLC,
        traffic.HMI,
    ]
    alerts = [f for kind, f in events if kind == "alert"]
    assert [(a["alert"]["signature_id"], a["asset"]["address"]) for a in alerts] == [(9100301, traffic.PLC)]
    assert inventory.new_devices == 1


def test_table_is_bounded_and_counts_evictions() -> None:
    inventory, _ = run(traffic.modbus_identification() + traffic.list_identity(), max_assets=2)
    assert len(inventory.hosts) == 2 and inventory.evicted >= 1


def test_a_router_mac_is_nobodys(tmp_path: Path) -> None:
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    from tests.factory import udp

    router = "00:14:22:aa:bb:cc"
    packets = [udp(src=f"10.9.0.{i}", dst="10.1.1.10", sport=4000 + i, dport=161) for i in range(1, 6)]
    for p in packets:
        p[Ether].src = router
        p[IP].ttl = 63
    inventory, _ = run(packets)
    assets = by_address(inventory, tmp_path)
    assert all(assets[f"10.9.0.{i}"].mac == "" for i in range(1, 6))


def test_infer_roles_of_an_engineering_station() -> None:
    from agent.assets.inventory import Host

    host = Host(b"\x0a\x00\x00\x01", 0.0, 0.0, ops_sent={"s7comm program": 5, "s7comm read": 3})
    roles = infer_roles(host)
    assert roles[0].role == "engineering-station" and "s7comm program x5" in roles[0].evidence


def test_s7_identity_lists_without_a_readable_identity_are_noted(tmp_path: Path) -> None:
    from agent.decoders.base import RESPONSE, OtMessage
    from agent.flows import Flow

    ews, plc = bytes([10, 0, 0, 5]), bytes([10, 0, 0, 40])
    flow = Flow((ews, plc, 50000, 102, 6, ()), 1, 4, 1.0, 1, 0, 600.0)
    inventory = AssetInventory()
    fields = {"szl_id": 0x0011, "szl_index": 1}
    inventory.on_message(OtMessage(1.0, flow, 7, 0, "s7comm", False, RESPONSE, 0x4401, "diagnostic", fields))
    [plc_record] = [r for r in records(inventory, None, ["x.pcap"]) if r.address == "10.0.0.40"]
    assert plc_record.identity == {}
    assert (
        plc_record.identity_from
        == "answered s7comm SZL 0x0011 (identity lists, but no identity could be read from them)"
    )


def test_a_link_layer_identity_joins_the_ip_host_with_that_mac() -> None:
    from agent.assets.inventory import Host

    inventory = AssetInventory()
    ip, mac = bytes([10, 0, 0, 7]), bytes.fromhex("00800f0a0b0c")
    inventory.hosts[ip] = Host(ip, 5.0, 9.0, macs={"00:80:0f:0a:0b:0c": 3}, served={"modbus": 2}, flows=2)
    inventory.mac_ips["00:80:0f:0a:0b:0c"] = {ip}
    inventory.hosts[mac] = Host(
        mac,
        1.0,
        6.0,
        served={"profinet": 1},
        flows=1,
        identity_from="profinet identity",
        identity={"name": "plc-cell-3", "vendor_id": 42},
    )
    inventory.hosts[bytes.fromhex("020000000001")] = Host(bytes.fromhex("020000000001"), 2.0, 2.0, flows=1)
    rows = {r.address: r for r in records(inventory, None, [])}
    assert set(rows) == {"10.0.0.7", "02:00:00:00:00:01"}  # the lone L2 device keeps its own row
    merged = rows["10.0.0.7"]
    assert (
        merged.identity == {"name": "plc-cell-3", "vendor_id": 42}
        and merged.identity_from == "profinet identity"
    )
    assert merged.served == {"profinet": 1, "modbus": 2} and merged.flows == 3 and merged.first_seen == 1.0


def test_bacnet_devices_behind_a_router_are_assets_of_their_own(tmp_path: Path) -> None:
    inventory, _ = run(traffic.routed_i_am())
    assets = by_address(inventory, tmp_path)
    first, second = assets["bacnet:5:17"], assets["bacnet:5:18"]
    assert first.identity == {"device_instance": 517, "vendor_id": 42}
    assert second.identity == {"device_instance": 518, "vendor_id": 42}
    # Reached through the router; the BBMD forwarded the router's datagram, so it is no router.
    assert first.via == [traffic.ROUTER] and second.via == [traffic.ROUTER]
    assert first.identity_packet is not None and first.identity_packet["pcap_cnt"] == 2
    assert second.identity_packet is not None and second.identity_packet["pcap_cnt"] == 3
    assert first.mac == "" and first.vlans == [] and first.flows == 0
    # The router keeps its own identity; the devices' are not given to it.
    assert assets[traffic.ROUTER].identity == {"device_instance": 1001, "vendor_id": 42}
    assert assets[traffic.ROUTER].via == [] and not assets[traffic.BBMD].identity
    # Sorted after the hosts, by network number then MAC.
    order = [r.address for r in records(inventory, None, ["x.pcap"])]
    assert order[-2:] == ["bacnet:5:17", "bacnet:5:18"]
    assert inventory.stats()["routed_devices"] == 2


def test_routed_devices_take_the_zone_of_their_router(tmp_path: Path) -> None:
    from agent.policy.engine import CompiledPolicy
    from agent.policy.loader import load_policy_text

    text = "version: 1\nsystem: {name: b}\nzones: [{id: building, networks: ['10.1.3.0/24']}]\nconduits: []\n"
    loaded, problems = load_policy_text(text, "p.yaml")
    assert loaded is not None, problems
    policy = CompiledPolicy(loaded)
    inventory, _ = run(traffic.routed_i_am())
    zones = {r.address: r.zone for r in records(inventory, None, ["x.pcap"], policy)}
    assert zones["bacnet:5:17"] == "building" == zones[traffic.ROUTER]


def test_a_routed_device_changing_identity_is_an_alert_and_new_ones_are_announced() -> None:
    packets = traffic.routed_i_am() + traffic.routed_i_am(vendor_of_second=7)
    inventory, events = run(packets, baseline=frozenset({traffic.ROUTER, traffic.BBMD, "bacnet:5:17"}))
    new = [f["asset"] for kind, f in events if kind == "asset" and f["asset"]["event"] == "new"]
    routed = [a for a in new if a["address"].startswith("bacnet:")]
    assert [(a["address"], a["via"], a["identity"]["device_instance"]) for a in routed] == [
        ("bacnet:5:17", [traffic.ROUTER], 517),
        ("bacnet:5:18", [traffic.ROUTER], 518),
    ]
    alerts = [(f["alert"]["rule"], f["asset"]["address"]) for kind, f in events if kind == "alert"]
    assert ("new_device", "bacnet:5:18") in alerts and ("new_device", "bacnet:5:17") not in alerts
    assert ("identity_changed", "bacnet:5:18") in alerts
    assert inventory.routed["bacnet:5:18"].identity["vendor_id"] == 7


def test_the_routed_device_table_is_bounded_and_counts_evictions() -> None:
    inventory, _ = run(traffic.routed_i_am(), max_assets=1)
    assert list(inventory.routed) == ["bacnet:5:17"]  # the most recently seen one stays
    assert inventory.routed_evicted == 2 and inventory.stats()["routed_evicted"] == 2
