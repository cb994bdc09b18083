"""Network namespaces with a veth pair, created by the tests that need them (root and iproute2).

The monitored end has no address and no IPv6, like a mirror port; the sending end has a TEST-NET-1
address and static neighbours, so the only frames on the link are the test's own.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.tooling import require_root, require_tool, skip_or_fail

PYTHON = sys.executable


MON_MAC_FOREIGN = "02:00:00:00:00:03"  # the mirror-port case: frames for some other host
SRC_IP, MON_IP, FOREIGN_IP = "192.0.2.1", "192.0.2.2", "192.0.2.3"


@dataclass
class NetPair:
    mon_ns: str  # the namespace of the monitored interface
    src_ns: str  # the namespace that sends test traffic
    mon_if: str
    src_if: str
    mon_mac: str
    src_mac: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _in_ns(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *args], capture_output=True, text=True, check=True, timeout=30
    )


@pytest.fixture
def netpair() -> Iterator[NetPair]:
    require_root()
    require_tool("ip")
    suffix = secrets.token_hex(3)
    pair = NetPair(f"cwmon-{suffix}", f"cwsrc-{suffix}", f"cwm{suffix}", f"cws{suffix}", "", "")
    created: list[str] = []
    try:
        for ns in (pair.mon_ns, pair.src_ns):
            made = _ip("netns", "add", ns, check=False)
            if made.returncode:
                skip_or_fail(f"cannot create network namespaces: {made.stderr.strip()}")
            created.append(ns)
        # Created directly inside the namespaces: the veth never exists in the host namespace.
        _ip(
            "link",
            "add",
            pair.src_if,
            "netns",
            pair.src_ns,
            "type",
            "veth",
            "peer",
            "name",
            pair.mon_if,
            "netns",
            pair.mon_ns,
        )
        for ns, ifname in ((pair.mon_ns, pair.mon_if), (pair.src_ns, pair.src_if)):
            # Before "up": no IPv6 link-local address, so no DAD, router or MLD solicitations from either
            # end, and the only frames on the link are the test's.
            _in_ns(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1")
        _in_ns(pair.mon_ns, "ip", "link", "set", pair.mon_if, "up")  # no address: a mirror port has none
        _in_ns(pair.src_ns, "ip", "addr", "add", f"{SRC_IP}/24", "dev", pair.src_if)
        _in_ns(pair.src_ns, "ip", "link", "set", pair.src_if, "up")
        pair.mon_mac = _link_json(pair.mon_ns, pair.mon_if)["address"]
        pair.src_mac = _link_json(pair.src_ns, pair.src_if)["address"]
        # Static neighbours: the sender never ARPs, and the monitored end (which has no address and
        # would not answer) is never asked. FOREIGN_IP goes to a MAC nobody owns, as on a mirror port.
        for ip_addr, mac in ((MON_IP, pair.mon_mac), (FOREIGN_IP, MON_MAC_FOREIGN)):
            _in_ns(
                pair.src_ns,
                "ip",
                "neigh",
                "add",
                ip_addr,
                "lladdr",
                mac,
                "dev",
                pair.src_if,
                "nud",
                "permanent",
            )
        yield pair
    finally:
        for ns in created:  # deleting a namespace deletes the veth end in it, and so the pair
            _ip("netns", "del", ns, check=False)


def _link_json(ns: str, ifname: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(_in_ns(ns, "ip", "-d", "-j", "link", "show", ifname).stdout)
    return data[0]


UDP_SENDER = r"""
import json, socket, struct, sys, time
a = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pad = b"\0" * a.get("pad", 32)
sent = 0; t0 = time.monotonic()
for i in range(a["count"]):
    dst = a["dsts"][i % len(a["dsts"])]
    port = a["ports"][i % len(a["ports"])]
    s.sendto(struct.pack(">I", i) + pad, (dst, port))
    sent += 1
    if sent % 100 == 0:  # pace to a moderate rate
        delay = t0 + sent / a["rate"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
print(sent)
"""


def send_udp(pair: NetPair, count: int, ports: list[int], dsts: list[str], rate: int = 10000) -> None:
    args = {"count": count, "ports": ports, "dsts": dsts, "rate": rate}
    _in_ns(pair.src_ns, PYTHON, "-c", UDP_SENDER, json.dumps(args))
