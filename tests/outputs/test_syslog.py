"""Syslog output: RFC 5424 over UDP and TCP, CEF bodies, a receiver that is down, a real rsyslog."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.outputs import syslog as syslog_module
from agent.outputs.cef import cef_record
from agent.outputs.syslog import SyslogSink, SyslogTarget
from agent.pipeline import Pipeline, PipelineConfig
from agent.records import Event
from tests import factory
from tests.netns import FOREIGN_IP, NetPair
from tests.tooling import require_tool

ALERT = Event("alert", 1_700_000_000.25, {
    "flow_id": 7, "src_ip": "10.0.0.1", "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 502,
    "proto": "TCP", "app_proto": "modbus",
    "alert": {"signature_id": 9100001, "signature": "a=b | c\\d\nnew line", "category": "Conduit violation",
              "severity": 1, "metadata": {"iec62443_sr": ["SR 5.1"], "iso27001_annex_a": ["A.8.22"]}},
    "policy": {"src_zone": "enterprise", "dest_zone": "control", "conduit": None},
})  # fmt: skip
RFC5424 = re.compile(r"^<(\d+)>1 (\S+) (\S+) conduitwatch (\d+) (\S+) - (.*)$", re.S)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_target_urls() -> None:
    assert str(SyslogTarget("udp://collector")) == "udp://collector:514"
    assert str(SyslogTarget("tcp://10.1.1.1:6514")) == "tcp://10.1.1.1:6514"
    assert str(SyslogTarget("collector:5514")) == "udp://collector:5514"
    for bad in ("http://x", "udp://", "tcp://host:99999"):
        with pytest.raises(ValueError):
            SyslogTarget(bad)


def test_rfc5424_message_carries_the_eve_line() -> None:
    sink = SyslogSink(SyslogTarget("udp://127.0.0.1:9"), facility="local5", hostname="sensor 1")
    match = RFC5424.match(sink.message(ALERT).decode())
    assert match is not None
    pri, ts, host, _pid, msgid, body = match.groups()
    assert int(pri) == 21 * 8 + 2  # local5.crit for a high-severity alert
    assert ts == "2023-11-14T22:13:20.250000Z" and host == "sensor1" and msgid == "alert"
    eve = json.loads(body)
    assert eve["event_type"] == "alert" and eve["alert"]["signature_id"] == 9100001


def test_cef_escapes_header_and_extension() -> None:
    record = {"timestamp": "2023-11-14T22:13:20.250000+00:00", "event_type": "alert", **ALERT.fields}
    line = cef_record(record)
    header, _, extension = line.rpartition("|")
    assert header.startswith("CEF:0|conduitwatch|conduitwatch|")
    assert "|9100001|a=b \\| c\\\\d new line|9" in header
    assert "rt=1700000000250" in extension and "src=10.0.0.1" in extension and "dpt=502" in extension
    assert "cs1Label=srcZone cs1=enterprise" in extension and "cs5=SR 5.1" in extension
    assert "conduit" not in extension  # None is left out, not written as "None"
    # cnt is CEF's repeat count (a folded alert's count), the packet number a labelled custom number.
    assert " cnt=1 " in f" {extension} "
    folded = cef_record({**record, "pcap_cnt": 490, "alert": {**record["alert"], "count": 7}})
    assert "cn1Label=pcapCnt cn1=490" in folded and " cnt=7 " in folded


def test_udp_delivery_one_datagram_per_event() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        sink = SyslogSink(SyslogTarget(f"udp://127.0.0.1:{port}"), event_types=None)
        Pipeline(PipelineConfig(), sinks=[sink]).run(factory.ListSource(factory.tcp_session()))
        sink.close()
        types = [RFC5424.match(receiver.recv(65535).decode()).group(5) for _ in range(2)]  # type: ignore[union-attr]
    assert types == ["flow", "stats"] and sink.stats()["sent"] == 2


def test_tcp_receiver_down_then_up_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(syslog_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr("agent.outputs.backlog.time.monotonic", lambda: now[0])
    port = free_port(socket.SOCK_STREAM)
    sink = SyslogSink(SyslogTarget(f"tcp://127.0.0.1:{port}"), event_types=None)
    for i in range(3):
        sink.emit(Event("stats", float(i), {"stats": {"n": i}}))  # nobody listening: refused, kept
    assert sink.stats()["failures"] >= 1 and sink.stats()["queued"] == 3
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        now[0] += 2  # past the reconnect and retry intervals
        sink.emit(Event("stats", 3.0, {"stats": {"n": 3}}))
        conn, _ = server.accept()
        conn.settimeout(5)
        data = b""
        while data.count(b"conduitwatch") < 4:
            data += conn.recv(65536)
        conn.close()
    sink.close()
    # RFC 6587 octet counting: "LEN SP MSG" back to back.
    frames, rest = [], data
    while rest:
        length, _, rest = rest.partition(b" ")
        frames.append(rest[: int(length)])
        rest = rest[int(length) :]
    assert [json.loads(RFC5424.match(f.decode()).group(6))["stats"]["n"] for f in frames] == [0, 1, 2, 3]  # type: ignore[union-attr]


def test_a_receiver_name_is_looked_up_outside_the_monitoring_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lookup may hang for seconds (a DNS server that does not answer); capture must go on meanwhile.
    answer = threading.Event()
    asked_from: list[threading.Thread] = []
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        asked_from.append(threading.current_thread())
        assert answer.wait(10)
        return real_getaddrinfo("127.0.0.1" if host == "siem.example" else host, port, *args, **kwargs)

    monkeypatch.setattr(syslog_module.socket, "getaddrinfo", slow_getaddrinfo)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(5)
        sink = SyslogSink(SyslogTarget(f"tcp://siem.example:{server.getsockname()[1]}"), event_types=None)
        for _ in range(2):
            sink.emit(ALERT)  # returns while the name is still being looked up
        assert sink.stats()["queued"] == 2 and sink.stats()["sent"] == 0 and sink.stats()["failures"] == 0
        answer.set()
        sink.emit(ALERT)
        server.settimeout(0.05)
        conn = None
        for _ in range(200):  # the lookup's thread answers; the next delivery attempt connects
            sink.flush()
            try:
                conn, _ = server.accept()
                break
            except TimeoutError:
                continue
        assert conn is not None
        with conn:
            conn.settimeout(5)
            data = b""
            while data.count(b"conduitwatch") < 3:
                sink.flush()
                data += conn.recv(65536)
        sink.close()
    assert asked_from and threading.main_thread() not in asked_from
    assert sink.stats()["sent"] == 3 and sink.stats()["connects"] == 1


def test_a_receiver_that_never_answers_the_connect_does_not_stall_monitoring(netpair: NetPair) -> None:
    # FOREIGN_IP is a neighbour whose MAC nobody owns: the SYN goes out and no answer ever comes.
    # A blocking connect would hold up every event (and packet capture with it) until it timed out.
    code = f"""
import json
from agent.outputs.syslog import SyslogSink, SyslogTarget
from agent.records import Event
sink = SyslogSink(SyslogTarget("tcp://{FOREIGN_IP}:601"), event_types=None)
for i in range(3):
    sink.emit(Event("stats", float(i), {{"stats": {{"n": i}}}}))
print(json.dumps(sink.stats()))
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["ip", "netns", "exec", netpair.src_ns, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    # Still connecting: not connected, not failed, every event kept.
    assert stats["connects"] == 0 and stats["failures"] == 0 and stats["queued"] == 3, stats


def test_type_filter() -> None:
    sink = SyslogSink(SyslogTarget("udp://127.0.0.1:9"), event_types=frozenset({"alert"}))
    sink.emit(Event("flow", 1.0, {}))
    assert sink.written == 0
    sink.emit(ALERT)
    assert sink.written == 1
    sink.close()


# -- a real rsyslog ------------------------------------------------------------------------------

RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
*.* action(type="omfile" file="{out}" template="fields")
"""


@pytest.fixture
def rsyslog(tmp_path: Path) -> Any:
    daemon = require_tool("rsyslogd")
    ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port(socket.SOCK_STREAM)}
    out = tmp_path / "received.jsonl"
    (tmp_path / "work").mkdir()
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=tmp_path / "work", out=out, **ports))
    proc = subprocess.Popen([daemon, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # ready when the TCP input accepts connections
        try:
            socket.create_connection(("127.0.0.1", ports["tcp"]), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"rsyslogd did not start: {proc.communicate()[0].decode(errors='replace')}")
    yield ports, out
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def _received(out: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if out.exists():
            lines = out.read_text().splitlines()
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"rsyslog wrote {out.read_text() if out.exists() else 'nothing'}")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_real_rsyslog_parses_what_we_send(rsyslog: Any, transport: str) -> None:
    ports, out = rsyslog
    target = SyslogTarget(f"{transport}://127.0.0.1:{ports[transport]}")
    json_sink = SyslogSink(target, fmt="json", facility="local3", event_types=None, hostname="sensor-a")
    cef_sink = SyslogSink(target, fmt="cef", facility="local3", event_types=None, hostname="sensor-a")
    for sink in (json_sink, cef_sink):
        sink.emit(ALERT)
        sink.close()
    first, second = _received(out, 2)
    for record in (first, second):
        assert record["facility"] == "local3" and record["severity"] == "crit"
        assert (
            record["hostname"] == "sensor-a"
            and record["app"] == "conduitwatch"
            and record["msgid"] == "alert"
        )
        assert record["timestamp"].startswith("2023-11-14T22:13:20.25")
    assert json.loads(first["msg"].strip())["alert"]["signature"] == "a=b | c\\d\nnew line"
    assert second["msg"].strip().startswith("CEF:0|conduitwatch|conduitwatch|")


def test_cli_replay_to_rsyslog(rsyslog: Any, tmp_path: Path) -> None:
    ports, out = rsyslog
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "replay", str(root / "pcaps" / "demo.pcap"),
         "--policy", str(root / "rules" / "demo.yaml"), "-q", "--syslog", f"tcp://127.0.0.1:{ports['tcp']}"],
        capture_output=True, text=True, timeout=120, env=env, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = _received(out, 10)
    alerts = [json.loads(r["msg"].strip()) for r in records if r["msgid"] == "alert"]
    assert len(alerts) >= 10 and all(a["alert"]["signature_id"] >= 9100001 for a in alerts)


def test_never_sends_through_the_monitored_interface() -> None:
    # 127.0.0.1 is routed through lo: with lo "monitored", the sink must refuse before any packet.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        sink = SyslogSink(SyslogTarget(f"tcp://127.0.0.1:{port}"), event_types=None, monitored=("lo",))
        sink.emit(ALERT)
        with pytest.raises(TimeoutError):
            server.accept()  # not even a connection attempt reached the receiver
    assert sink.refused is not None and "monitored interface lo" in sink.refused
    assert sink.stats()["refused"] == 1 and sink.stats()["sent"] == 0
    sink.close()
    # The same receiver through an interface that is not monitored is fine.
    assert SyslogSink(SyslogTarget("udp://127.0.0.1:9"), monitored=("no-such-if0",)).refused is None
