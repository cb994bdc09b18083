"""Policy reload under live traffic, in network namespaces the test creates (root, iproute2).

`conduitwatch run --policy P` watches a veth; packets flow while the test swaps in a valid policy
(SIGHUP), then an invalid one (refused: the valid one keeps judging). Every flow is judged by the
policy in force when it started, and none is left unjudged.
"""

import json
import signal
import sys
import time
from pathlib import Path

from tests.agent_process import agent_process, stop, wait_capturing
from tests.netns import FOREIGN_IP, SRC_IP, NetPair, send_udp
from tests.tooling import require_libpcap

POLICY = """\
version: 1
system: {{name: reload test}}
zones:
  - id: sender
    assets: [{{name: src, ip: {src}}}]
  - id: receiver
    assets: [{{name: dst, ip: {dst}}}]
conduits:
{conduits}
"""
NO_CONDUITS = "  []\n"
ALLOW_ALL = """\
  - id: sender-receiver
    zones: [sender, receiver]
    flows:
      - {id: anything, initiator: sender, responder: receiver, category: any}
"""


def write(path: Path, conduits: str) -> None:
    path.write_text(POLICY.format(src=SRC_IP, dst=FOREIGN_IP, conduits=conduits))


def test_reload_valid_then_invalid_policy_under_traffic(netpair: NetPair, tmp_path: Path) -> None:
    require_libpcap()
    policy = tmp_path / "policy.yaml"
    write(policy, NO_CONDUITS)
    out = tmp_path / "eve.json"
    agent = [sys.executable, "-m", "agent.cli", "--log-level", "info", "run", "--interface", netpair.mon_if]
    cmd = [
        "ip",
        "netns",
        "exec",
        netpair.mon_ns,
        *agent,
        "--bpf",
        "udp",
        "--policy",
        str(policy),
        "--eve",
        str(out),
    ]
    with agent_process(cmd) as proc:
        wait_capturing(proc)
        send_udp(netpair, 300, ports=[10001, 10002, 10003], dsts=[FOREIGN_IP], rate=3000)  # judged by v1
        write(policy, ALLOW_ALL)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        send_udp(netpair, 300, ports=[10011, 10012, 10013], dsts=[FOREIGN_IP], rate=3000)  # by v2
        policy.write_text(
            "version: 1\nsystem: {name: broken}\nzones:\n  - id: a\n    networks: [10.0.0.300/24]\n"
        )
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        send_udp(netpair, 300, ports=[10021, 10022, 10023], dsts=[FOREIGN_IP], rate=3000)  # still v2
        time.sleep(0.3)
        _stdout, stderr = stop(proc, signal.SIGTERM)
    assert "policy reloaded (SIGHUP)" in stderr
    assert "refused" in stderr and "policy.yaml:5:" in stderr  # the bad CIDR, with its line
    events = [json.loads(line) for line in out.read_text().splitlines()]
    alerts = [e for e in events if e["event_type"] == "alert"]
    assert sorted(e["dest_port"] for e in alerts) == [10001, 10002, 10003]  # only the flows under v1
    assert all(e["alert"]["rule"] == "no_conduit" for e in alerts)
    stats = events[-1]["stats"]
    assert stats["capture"]["packets"] == 900
    flows = [e for e in events if e["event_type"] == "flow"]
    assert len(flows) == 9 and sum(f["flow"]["pkts_toserver"] for f in flows) == 900
    assert stats["policy"]["flows_checked"] >= 9  # every flow judged (re-judged at its end after a reload)
    assert stats["policy"]["generation"] == 2  # v1, then v2; the invalid file never took over
