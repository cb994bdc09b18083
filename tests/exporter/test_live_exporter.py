"""`conduitwatch run` in a network namespace, scraped while it captures: live counters, readiness."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.agent_process import agent_process, stop, wait_capturing
from tests.netns import FOREIGN_IP, NetPair, send_udp
from tests.tooling import require_libpcap

from .helpers import samples, values

pytestmark = pytest.mark.netns
PORT = 10620  # the default port: the agent is alone in its namespace
# The agent's namespace has no proxy: talk to it directly whatever the environment says.
FETCH = (
    "import sys, urllib.request, urllib.error\n"
    "urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))\n"
    "try:\n"
    "    r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code); print(e.read().decode())\n"
)


def fetch(pair: NetPair, path: str) -> tuple[int, str]:
    out = subprocess.run(
        ["ip", "netns", "exec", pair.mon_ns, sys.executable, "-c", FETCH, f"http://127.0.0.1:{PORT}{path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    status, _, body = out.stdout.partition("\n")
    return int(status), body


def test_live_run_is_scraped_while_it_captures(netpair: NetPair) -> None:
    require_libpcap()
    subprocess.run(["ip", "netns", "exec", netpair.mon_ns, "ip", "link", "set", "lo", "up"], check=True)
    cmd = [
        "ip",
        "netns",
        "exec",
        netpair.mon_ns,
        sys.executable,
        "-m",
        "agent.cli",
        "--log-level",
        "info",
        "run",
        "--interface",
        netpair.mon_if,
        "--bpf",
        "udp",
    ]
    with agent_process(cmd) as proc:
        wait_capturing(proc)
        assert "metrics at http://*:10620/metrics" in proc.stderr.readline()
        status, body = fetch(netpair, "/-/ready")
        assert status == 200, body
        send_udp(netpair, 600, ports=[20000, 20001, 20002], dsts=[FOREIGN_IP], rate=5000)
        time.sleep(1.2)
        send_udp(netpair, 10, ports=[20000], dsts=[FOREIGN_IP], rate=5000)  # after a second: totals refresh
        time.sleep(0.5)
        status, body = fetch(netpair, "/metrics")
        assert status == 200
        got = samples(body)
        # The flows are still active: their running totals are published, not only finished flows'.
        assert sum(values(got, "conduitwatch_traffic_packets_total").values()) == 610
        assert 600 < values(got, "conduitwatch_capture_packets_total")[()] <= 610
        assert values(got, "conduitwatch_capture_up") == {(("mode", "live"),): 1.0}
        assert values(got, "conduitwatch_capture_dropped_packets_total")[(("reason", "kernel"),)] == 0
        assert values(got, "conduitwatch_capture_kernel_packets_total")[()] >= 600
        assert values(got, "conduitwatch_flows_active")[()] >= 3  # the second burst may use a new source port
        stop(proc, signal.SIGTERM)
