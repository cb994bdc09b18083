"""`conduitwatch run` end to end on a veth pair in network namespaces the test creates."""

import json
import signal
import sys
import time
from pathlib import Path

from tests.agent_process import agent_process, stop, wait_capturing
from tests.netns import FOREIGN_IP, NetPair, _in_ns, send_udp
from tests.tooling import require_libpcap

PYTHON = sys.executable


def test_run_on_mirror_port_reports_flows_and_kernel_counters(netpair: NetPair, tmp_path: Path) -> None:
    require_libpcap()
    out = tmp_path / "eve.json"
    cmd = ["ip", "netns", "exec", netpair.mon_ns, PYTHON, "-m", "agent.cli", "--log-level", "info", "run",
           "--interface", netpair.mon_if, "--bpf", "udp", "--eve", str(out)]  # fmt: skip
    with agent_process(cmd) as proc:
        wait_capturing(proc)
        send_udp(netpair, 600, ports=[20000, 20001, 20002], dsts=[FOREIGN_IP], rate=5000)
        time.sleep(0.5)
        stdout, _stderr = stop(proc, signal.SIGTERM)
    events = [json.loads(x) for x in out.read_text().splitlines()]
    flows = [e for e in events if e["event_type"] == "flow"]
    assert sorted(f["dest_port"] for f in flows) == [20000, 20001, 20002]
    assert sum(f["flow"]["pkts_toserver"] for f in flows) == 600
    assert "pcap_filename" not in flows[0]  # live events name no file
    stats = events[-1]["stats"]
    assert stats["capture"]["packets"] == 600
    assert stats["capture"]["kernel"]["kernel_drops"] == 0
    assert "600 packets" in stdout and "dropped before they could be read" in stdout


def _run_cmd(pair: NetPair, out: Path, *extra: str) -> list[str]:
    return ["ip", "netns", "exec", pair.mon_ns, PYTHON, "-m", "agent.cli", "--log-level", "info", "run",
            "--interface", pair.mon_if, "--web.listen-address", "", "--eve", str(out), *extra]  # fmt: skip


def test_interface_deleted_during_capture_is_one_line_and_exit_1(netpair: NetPair, tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    with agent_process(_run_cmd(netpair, out)) as proc:
        wait_capturing(proc)
        send_udp(netpair, 10, ports=[20010], dsts=[FOREIGN_IP])
        time.sleep(0.3)
        _in_ns(netpair.src_ns, "ip", "link", "del", netpair.src_if)  # takes the monitored end with it
        stdout, stderr = proc.communicate(timeout=10)  # ends by itself: no signal
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("conduitwatch: error:")]
    # An interface has no byte offset: the message must not invent one.
    assert errors == [
        f"conduitwatch: error: {netpair.mon_if}: the interface disappeared during capture (after 10 packets)"
    ]
    assert "capture problem:" in stdout and "10 packets" in stdout  # the summary is still printed
    stats = json.loads(out.read_text().splitlines()[-1])["stats"]
    assert stats["capture"]["problems"] == [errors[0].removeprefix("conduitwatch: error: ")]
    assert stats["capture"]["packets"] == 10


def test_frames_still_queued_at_stop_are_reported(netpair: NetPair, tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    with agent_process(_run_cmd(netpair, out)) as proc:
        wait_capturing(proc)
        # Frozen, the agent reads nothing: the frames wait in its ring. The stop request is then the
        # first thing it handles, so it ends with frames the kernel accepted and nothing analysed.
        proc.send_signal(signal.SIGSTOP)
        send_udp(netpair, 500, ports=[20011], dsts=[FOREIGN_IP])
        time.sleep(0.2)  # past the ring's block retire timeout
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    stats = json.loads(out.read_text().splitlines()[-1])["stats"]
    kernel = stats["capture"]["kernel"]
    assert (kernel["kernel_packets"], kernel["kernel_drops"]) == (500, 0)
    assert kernel["unread"] > 0
    assert stats["capture"]["packets"] + kernel["unread"] == 500  # every accepted frame is accounted for
    assert f"{kernel['unread']:,} still queued when the capture stopped (not analysed)" in stdout
