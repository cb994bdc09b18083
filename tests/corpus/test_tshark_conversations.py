"""Our flow records against tshark's TCP and UDP conversation tables, on selected corpus captures.

Oracle: ``tshark -q -z conv,tcp -z conv,udp`` (tshark 4.0), primary: the same set of conversations
(unordered address+port pairs), the same frame count in each direction, and byte totals within the
table's humanised rounding ("77 kB"). Because the table rounds, tshark's per-frame fields
(addresses, ports, VLAN ids, frame.len) are aggregated here too, which gives exact byte totals per
direction and per VLAN. Our side is the CLI's EVE flow events with timeouts too large to split a
flow, added up by unordered 5-tuple (tshark's A/B order is not our initiator/responder order).

The captures are chosen to be clean for this comparison. Elsewhere in the corpus the two differ
for known reasons: tunnels and PPPoE (tshark keys on the inner addresses, we on the outer or not
at all: nDPI/syslog.pcap); a SYN retransmitted after the RST that refused it (we start a new flow
on a SYN after a RST, tshark keeps one stream: ICS-Security-Tools/ModbusTCP/mb2.pcap); a handshake
or reset connection idle past our handshake (30 s) or closed (10 s) timeouts, which the CLI's
timeout flags do not raise (ICS-Security-Tools/IEC61850/m-send-req.mms.pcap); and tshark's own
splits of one TCP connection without a SYN (its VNC dissector starts a new conversation at frame 5
of nDPI/vnc.pcap). ICMP errors quoting a UDP header are not counted by tshark's conversation taps.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Capture (relative to pcaps/) -> what it brings to the comparison.
CAPTURES = {
    "ICS-Security-Tools/ModbusTCP/ModbusTCP.pcap": "Modbus/TCP, 15k frames, byte totals in kB",
    "zeek/modbus/modbusSmall.pcap": "Modbus/TCP, 16 short connections, plus DNS over UDP",
    "zeek/dnp3/dnp3.pcap": "DNP3 over TCP",
    "ICS-Security-Tools/dnp3/opendnp3-3/conformance/8.11.2.5/dump.pcap": "DNP3 over TCP, BSD loopback link",
    "suricata-verify/dnp3/dnp3-flood/input.pcap": "DNP3 over TCP, raw IPv4 link",
    "ICS-Security-Tools/s7/S7Comm/s7comm_clean.pcap": "S7comm (TPKT/COTP), 15 minutes",
    "icsnpp-s7comm/traces/s7comm_plus.pcap": "S7comm-plus, Linux cooked (SLL) link",
    "icsnpp-enip/traces/enip_cip_example.pcap": "EtherNet/IP: explicit over TCP, CIP I/O over UDP",
    "icsnpp-bacnet/traces/bacnet_example.pcap": "BACnet/IP over UDP, 91 conversations",
    "nDPI/snmp.pcap": "SNMP over UDP, untagged and on two 802.1Q VLANs",
    "suricata-verify/filestore-filecontainer-smb/filecontainer-smb.pcap": "SMB over TCP, all VLAN-tagged",
    "ct-samples/C12.22/C12.22_over_ipv6.pcap": "C12.22 over TCP on IPv6, SLL link",
    "nDPI/ptpv2.pcap": "PTPv2 over UDP on IPv6",
    "icsnpp-opcua-binary/pcaps/open62541_browse_next.pcap": "OPC UA over TCP on IPv4 and IPv6, BSD loopback",
    "ICS-Security-Tools/beckoff/addrouteuse444444444.pcapng": "Beckhoff ADS, pcapng, TCP+UDP, IPv4+IPv6",
}

NO_SPLIT = ["--flow-timeout", "1e9", "--udp-timeout", "1e9", "--active-timeout", "1e9"]

Endpoint = tuple[str, int]
# (proto, lower endpoint, higher endpoint): one conversation whichever way it is read.
ConvKey = tuple[str, Endpoint, Endpoint]
Vlans = tuple[int, ...]

UNITS = {"bytes": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE = r"(\d+) (bytes|kB|MB|GB|TB)"
TABLE_ROW = re.compile(rf"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+{_SIZE}\s+(\d+)\s+{_SIZE}\s+(\d+)\s+{_SIZE}\s")


def _endpoint(address: str, port: int | str) -> Endpoint:
    return ipaddress.ip_address(address).compressed, int(port)


def _key(proto: str, a: Endpoint, b: Endpoint) -> tuple[ConvKey, bool]:
    """The conversation key, and whether a -> b is its low -> high direction."""
    return ((proto, a, b), True) if a <= b else ((proto, b, a), False)


@dataclass
class Directions:
    """Frames and bytes of one conversation, low -> high endpoint (index 0) and back (index 1)."""

    frames: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    # The table's sizes are rounded down to their unit: the true total lies in [low, high].
    bytes_low: list[int] = field(default_factory=lambda: [0, 0])
    bytes_high: list[int] = field(default_factory=lambda: [0, 0])
    instances: int = 0  # table rows (TCP streams) or flow records

    def add(self, forward: bool, frames: int, nbytes: int) -> None:
        i = 0 if forward else 1
        self.frames[i] += frames
        self.bytes[i] += nbytes


def _size_range(value: str, unit: str) -> tuple[int, int]:
    # tshark 4.0 (format_size, SI prefixes) divides and truncates: "77 kB" is 77000..77999 bytes.
    mult = UNITS[unit]
    return int(value) * mult, (int(value) + 1) * mult - 1


def _tshark(tshark: str, path: Path, *args: str) -> str:
    proc = subprocess.run(
        [tshark, "-n", "-r", str(path), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"tshark failed on {path}: {proc.stderr}"
    return proc.stdout


def tshark_table(tshark: str, path: Path) -> dict[ConvKey, Directions]:
    """The TCP and UDP conversation tables, rows of the same address+port pair added up."""
    out = _tshark(tshark, path, "-q", "-z", "conv,tcp", "-z", "conv,udp")
    convs: dict[ConvKey, Directions] = defaultdict(Directions)
    proto = ""
    rows = 0
    for line in out.splitlines():
        if line.endswith(" Conversations"):
            proto = line.split()[0]
            assert proto in ("TCP", "UDP"), line
        if "<->" not in line:
            continue
        m = TABLE_ROW.match(line)
        assert m, f"unparsed conversation row: {line!r}"
        a_addr, a_port = m[1].rsplit(":", 1)  # IPv6 addresses contain colons: the port is the last field
        b_addr, b_port = m[2].rsplit(":", 1)
        key, forward = _key(proto, _endpoint(a_addr, a_port), _endpoint(b_addr, b_port))
        # Columns: "<-" is B -> A, "->" is A -> B, then the total.
        b_to_a, a_to_b = (int(m[3]), m[4], m[5]), (int(m[6]), m[7], m[8])
        assert a_to_b[0] + b_to_a[0] == int(m[9]), line
        conv = convs[key]
        conv.instances += 1
        for frames, value, unit, is_forward in ((*a_to_b, forward), (*b_to_a, not forward)):
            i = 0 if is_forward else 1
            low, high = _size_range(value, unit)
            conv.frames[i] += frames
            conv.bytes_low[i] += low
            conv.bytes_high[i] += high
        rows += 1
    assert rows, f"tshark listed no TCP or UDP conversation in {path}"
    return dict(convs)


FIELDS = ["frame.protocols", "frame.len", "vlan.id", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
          "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport"]  # fmt: skip


def tshark_frames(tshark: str, path: Path) -> dict[tuple[ConvKey, Vlans], Directions]:
    """Exact frames and bytes per conversation and VLAN stack, from tshark's per-frame fields."""
    args = ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]
    for name in FIELDS:
        args += ["-e", name]
    convs: dict[tuple[ConvKey, Vlans], Directions] = defaultdict(Directions)
    for line in _tshark(tshark, path, *args).splitlines():
        layers, length, vlan, ip_src, ip6_src, ip_dst, ip6_dst, tsp, tdp, usp, udp_ = line.split("\t")
        stack = layers.split(":")
        if "tcp" not in stack and "udp" not in stack:
            continue
        if "icmp" in stack or "icmpv6" in stack:
            # An ICMP error quoting a TCP/UDP header: tshark's conversation taps ignore the quote and
            # we count the frame in an ICMP flow, so it belongs to neither side of the comparison.
            continue
        ip_layers = stack.count("ip") + stack.count("ipv6")
        assert ip_layers == 1, f"{path}: tunnelled or nested IP ({layers}); choose another capture"
        proto, sport, dport = ("TCP", tsp, tdp) if "tcp" in stack else ("UDP", usp, udp_)
        key, forward = _key(proto, _endpoint(ip_src or ip6_src, sport), _endpoint(ip_dst or ip6_dst, dport))
        vlans = tuple(int(v) for v in vlan.split(",")) if vlan else ()
        convs[key, vlans].add(forward, 1, int(length))
    return dict(convs)


def our_flows(path: Path, eve: Path) -> dict[tuple[ConvKey, Vlans], Directions]:
    """Our TCP and UDP flow records from the CLI's EVE output, per conversation and VLAN stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "replay", str(path), "--eve", str(eve), "-q", *NO_SPLIT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    convs: dict[tuple[ConvKey, Vlans], Directions] = defaultdict(Directions)
    with eve.open(encoding="utf-8") as f:
        events = [json.loads(line) for line in f]
    for event in events:
        if event["event_type"] != "flow" or event["proto"] not in ("TCP", "UDP"):
            continue
        flow = event["flow"]
        src = _endpoint(event["src_ip"], event["src_port"])
        dst = _endpoint(event["dest_ip"], event["dest_port"])
        key, forward = _key(event["proto"], src, dst)
        conv = convs[key, tuple(event["vlan"])]
        conv.instances += 1
        conv.add(forward, flow["pkts_toserver"], flow["bytes_toserver"])
        conv.add(not forward, flow["pkts_toclient"], flow["bytes_toclient"])
    return dict(convs)


def _without_vlans(convs: dict[tuple[ConvKey, Vlans], Directions]) -> dict[ConvKey, Directions]:
    merged: dict[ConvKey, Directions] = defaultdict(Directions)
    for (key, _vlans), conv in convs.items():
        total = merged[key]
        total.instances += conv.instances
        for i in (0, 1):
            total.add(i == 0, conv.frames[i], conv.bytes[i])
    return dict(merged)


def _show(key: ConvKey) -> str:
    proto, (a, ap), (b, bp) = key
    return f"{proto} {a}:{ap} <-> {b}:{bp}"


@pytest.mark.tool
@pytest.mark.parametrize("capture", list(CAPTURES), ids=list(CAPTURES))
def test_flows_match_tshark_conversations(capture: str, corpus: Path, tshark: str, tmp_path: Path) -> None:
    path = corpus / "pcaps" / capture
    table = tshark_table(tshark, path)
    frames_by_vlan = tshark_frames(tshark, path)
    ours_by_vlan = our_flows(path, tmp_path / "eve.json")
    frames = _without_vlans(frames_by_vlan)
    ours = _without_vlans(ours_by_vlan)

    # The oracle agrees with itself: the per-frame aggregate has the table's conversations and frames.
    assert set(frames) == set(table)
    for key, conv in table.items():
        assert frames[key].frames == conv.frames, _show(key)

    # The same conversations.
    missing = sorted(_show(k) for k in set(table) - set(ours))
    extra = sorted(_show(k) for k in set(ours) - set(table))
    assert not missing and not extra, f"tshark only: {missing[:10]}; ours only: {extra[:10]}"

    for key, theirs in table.items():
        mine = ours[key]
        where = f"{capture}: {_show(key)} (low -> high, high -> low)"
        # Frames per direction, exactly.
        assert mine.frames == theirs.frames, where
        # Bytes: exact against the per-frame sum, within the table's rounding.
        assert mine.bytes == frames[key].bytes, where
        for i in (0, 1):
            assert theirs.bytes_low[i] <= mine.bytes[i] <= theirs.bytes_high[i], where
        if key[0] == "TCP":
            # One flow record per tshark TCP stream: a SYN on a closed connection splits both.
            assert mine.instances == theirs.instances, f"{where}: flow records vs tshark streams"
        else:
            # With these timeouts nothing splits a UDP flow. (tshark may list a UDP pair twice: its
            # SNMP dissector, for one, starts a new conversation at the agent's first response.)
            assert mine.instances == 1, f"{where}: split into {mine.instances} flow records"

    # VLAN ids are part of our flow key: per VLAN stack, the same frames and bytes as tshark's.
    assert set(ours_by_vlan) == set(frames_by_vlan)
    for key, conv in frames_by_vlan.items():
        mine = ours_by_vlan[key]
        assert (mine.frames, mine.bytes) == (conv.frames, conv.bytes), f"{_show(key[0])} vlan {key[1]}"
