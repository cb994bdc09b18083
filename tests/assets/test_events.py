"""Asset events on the EVE output: their schema, and ``conduitwatch run`` emitting them live."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.assets.inventory import AssetInventory, pipeline_emitter
from agent.outputs.eve import EveSink
from agent.pipeline import Pipeline, PipelineConfig
from tests.assets import traffic
from tests.factory import ListSource
from tests.netns import FOREIGN_IP, SRC_IP, NetPair, send_udp
from tests.tooling import require_libpcap

ROOT = Path(__file__).resolve().parents[2]


def schema() -> dict:
    return json.loads((ROOT / "docs" / "eve.schema.json").read_text())


def test_asset_events_match_the_published_schema(tmp_path: Path) -> None:
    import jsonschema

    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    inventory = AssetInventory()
    pipeline = Pipeline(PipelineConfig(replay=False), sinks=[sink], consumers=[inventory])
    inventory.emit = pipeline_emitter(pipeline)
    pipeline.run(
        ListSource(traffic.modbus_identification(b"V1") + traffic.modbus_identification(b"V2", 40002))
    )
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assets = [e for e in events if e["event_type"] == "asset"]
    assert [(e["asset"]["event"], e["asset"]["address"]) for e in assets] == [
        ("new", traffic.HMI), ("new", traffic.PLC), ("changed", traffic.PLC)]  # fmt: skip
    assert assets[0]["asset"]["mac"] == traffic.HMI_MAC
    assert assets[2]["asset"]["identity"]["revision"] == "V2"
    for event in assets:
        jsonschema.validate(event, schema())
    [alert] = [e for e in events if e["event_type"] == "alert"]
    assert alert["alert"]["signature_id"] == 9100303 and alert["src_ip"] == traffic.HMI


def test_run_reports_new_hosts_live(netpair: NetPair, tmp_path: Path) -> None:
    require_libpcap()
    import jsonschema

    out = tmp_path / "eve.json"
    cmd = ["ip", "netns", "exec", netpair.mon_ns, sys.executable, "-m", "agent.cli", "--log-level", "info",
           "run",
           "--interface", netpair.mon_if, "--bpf", "udp", "--eve", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "capturing on" in line, line
        send_udp(netpair, 50, ports=[20000, 20001], dsts=[FOREIGN_IP], rate=5000)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    events = [json.loads(x) for x in out.read_text().splitlines()]
    assets = [e for e in events if e["event_type"] == "asset"]
    assert sorted(e["asset"]["address"] for e in assets) == sorted([SRC_IP, FOREIGN_IP])
    for event in assets:
        jsonschema.validate(event, schema())


def test_asset_events_of_devices_behind_a_bacnet_router_match_the_schema(tmp_path: Path) -> None:
    import jsonschema

    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    inventory = AssetInventory(baseline=frozenset({traffic.ROUTER, traffic.BBMD, "bacnet:5:17"}))
    pipeline = Pipeline(PipelineConfig(replay=False), sinks=[sink], consumers=[inventory])
    inventory.emit = pipeline_emitter(pipeline)
    pipeline.run(ListSource(traffic.routed_i_am() + traffic.routed_i_am(vendor_of_second=7)))
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    for event in events:
        jsonschema.validate(event, schema())
    routed = [e for e in events if e["event_type"] == "asset" and "via" in e["asset"]]
    assert [(e["asset"]["event"], e["asset"]["address"]) for e in routed] == [
        ("new", "bacnet:5:17"), ("new", "bacnet:5:18"), ("changed", "bacnet:5:18")]  # fmt: skip
    assert all(e["asset"]["via"] == [traffic.ROUTER] and e["src_ip"] == traffic.ROUTER for e in routed[:2])
    alerts = [
        (e["alert"]["signature_id"], e["asset"]["address"]) for e in events if e["event_type"] == "alert"
    ]
    assert alerts == [(9100301, "bacnet:5:18"), (9100302, "bacnet:5:18")]
