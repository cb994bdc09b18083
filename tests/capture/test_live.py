"""Live capture: a static check that the agent never transmits, and real captures in network namespaces.

The namespace tests build two namespaces joined by a veth pair. The monitored end has no address and
IPv6 disabled, like a mirror port, so it has no reason to send anything; the other end sends test
traffic. LiveSource runs in a subprocess inside the monitored namespace (``ip netns exec``: changing
namespace affects a whole thread, so we do not do it in the pytest process) and prints JSON.
"""

from __future__ import annotations

import ast
import json
import secrets
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.capture.live import (
    PACKET_OUTGOING,
    LiveCaptureError,
    LiveSource,
    build_socket_filter,
    compile_bpf,
)
from agent.records import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW
from tests.netns import (
    FOREIGN_IP,
    MON_IP,
    MON_MAC_FOREIGN,
    NetPair,
    _in_ns,
    _link_json,
    send_udp,
)
from tests.tooling import REQUIRE_ENV, require_libpcap, require_root, require_tool, skip_or_fail

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# ---------------------------------------------------------------------------------------------------
# Static check: nothing in the agent sends.

SOCKET_SEND_METHODS = {"send", "sendto", "sendmsg", "sendall", "sendfile", "sendmmsg"}
SCAPY_SENDERS = {
    "send",
    "sendp",
    "sendpfast",
    "sr",
    "sr1",
    "srp",
    "srp1",
    "srloop",
    "srploop",
    "srflood",
    "srpflood",
    "sr1flood",
    "srp1flood",
    "sndrcv",
    "sndrcvflood",
    "srbt",
    "srbt1",
    "tcpreplay",
}
FORBIDDEN = SOCKET_SEND_METHODS | SCAPY_SENDERS
# The only code allowed to send is on the management side: the syslog output, which checks the
# kernel's route first and refuses to send through a monitored interface (tests/outputs/test_syslog.py).
# (The exporter answers HTTP through the standard library's server, which this scan does not read.)
ALLOWED_DIRS = [REPO / "agent" / "outputs" / "syslog.py"]


def send_calls(code: str, label: str) -> list[str]:
    """Every way ``code`` could transmit: ``.send*`` attributes (called or taken as a bound method), calls
    of bare sender names, scapy sender imports and ``getattr(x, "send...")``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(code, filename=label)):
        name = None
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN and not isinstance(node.ctx, ast.Store):
            name = f".{node.attr}"  # sock.sendto(...), scapy.all.sendp(...), f = sock.send
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            func, args = node.func, node.args
            if func.id in FORBIDDEN:
                name = f"{func.id}()"  # sendp(...) after "from scapy.all import sendp"
            elif (
                func.id == "getattr"
                and len(args) >= 2
                and isinstance(args[1], ast.Constant)
                and args[1].value in FORBIDDEN
            ):
                name = f"getattr(..., {args[1].value!r})"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scapy"):
            names = [alias.name for alias in node.names if alias.name in SCAPY_SENDERS]
            if names:
                name = f"from {node.module} import {', '.join(names)}"
        if name is not None:
            found.append((getattr(node, "lineno", 0), name))
    return [f"{label}:{line}: {name}" for line, name in sorted(found)]


def test_agent_never_sends() -> None:
    assert all(allowed.exists() for allowed in ALLOWED_DIRS), "an exemption names nothing: remove it"
    sources = sorted((REPO / "agent").rglob("*.py"))
    assert REPO / "agent" / "capture" / "live.py" in sources
    offenders = []
    for path in sources:
        if any(path.is_relative_to(allowed) for allowed in ALLOWED_DIRS):
            continue
        offenders.extend(send_calls(path.read_text(), str(path.relative_to(REPO))))
    assert not offenders, "the agent is passive; these would transmit:\n" + "\n".join(offenders)


def test_send_checker_catches_senders() -> None:
    code = (
        "from scapy.all import sendp\n"
        "s.sendto(b'', a)\n"
        "getattr(s, 'sendmsg')(b'')\n"
        "f = s.send\n"
        "srp1(pkt)\n"
        "scapy.sendrecv.sr1(pkt)\n"
        "conn.sendall(b'')\n"
        "sock.recv(1)\n"
        "recvfrom = sock.recvfrom\n"
    )
    found = send_calls(code, "sample.py")
    assert [line.split(": ", 1)[1] for line in found] == [
        "from scapy.all import sendp",
        ".sendto",
        "getattr(..., 'sendmsg')",
        ".send",
        "srp1()",
        ".sr1",
        ".sendall",
    ]


# ---------------------------------------------------------------------------------------------------
# Filter building and argument errors (no privilege needed).


def test_socket_filter_rejects_outgoing_and_caps_snaplen() -> None:
    require_libpcap()
    program = build_socket_filter(None, 96)
    assert program[0][3] == 0xFFFFF004  # ancillary load of skb->pkt_type
    assert program[1] == (0x15, 0, 1, PACKET_OUTGOING)
    assert program[2] == (0x06, 0, 0, 0)
    assert program[-1] == (0x06, 0, 0, 96)
    user = compile_bpf("udp port 502", LINKTYPE_ETHERNET, "eth0")
    combined = build_socket_filter(user, 128)
    assert combined[4:] != user  # accept values capped
    assert all(k <= 128 for code, _jt, _jf, k in combined[4:] if code == 0x06)
    assert [insn[:3] for insn in combined[4:]] == [insn[:3] for insn in user]


def test_bad_bpf_expression_is_a_clear_error() -> None:
    require_libpcap()
    with pytest.raises(LiveCaptureError) as info:
        compile_bpf("udp port nonsense", LINKTYPE_ETHERNET, "eth0")
    message = str(info.value)
    # libpcap's reason, with the expression named once (scapy's own wording repeats it)
    assert message.startswith("eth0: invalid BPF filter expression 'udp port nonsense': ")
    assert message.count("udp port nonsense") == 1 and "Failed to compile" not in message
    assert "nonsense" in message.rsplit(": ", 1)[1]  # libpcap's reason: "unknown port 'nonsense'"
    assert isinstance(info.value, ValueError)


def test_bad_arguments() -> None:
    with pytest.raises(LiveCaptureError, match="snaplen"):
        LiveSource("lo", snaplen=0)
    with pytest.raises(LiveCaptureError, match="block_size"):
        LiveSource("lo", block_size=5000)
    with pytest.raises(LiveCaptureError, match="no such network interface"):
        LiveSource("x" * 20)


def test_tooling_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool("conduitwatch-no-such-tool")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception):
        require_tool("conduitwatch-no-such-tool")
    assert require_tool("sh").endswith("/sh")


# ---------------------------------------------------------------------------------------------------
# Errors that need a packet socket (root), outside any namespace: nothing is captured.


@pytest.mark.netns
def test_missing_interface_is_a_clear_error() -> None:
    require_root()
    with pytest.raises(LiveCaptureError) as info:
        LiveSource("cwnone" + secrets.token_hex(4))
    assert "no such network interface" in str(info.value)


@pytest.mark.netns
def test_bad_bpf_on_live_source() -> None:
    require_root()
    require_libpcap()
    with pytest.raises(LiveCaptureError, match=r"invalid BPF filter expression 'tcp port 99999999'"):
        LiveSource("lo", bpf="tcp port 99999999")


@pytest.mark.netns
def test_without_privilege_is_a_clear_error() -> None:
    require_root()  # to drop to "nobody"
    # Imports first, then drop to nobody (which also drops every capability): the interpreter may live
    # somewhere nobody cannot read (e.g. under /root).
    code = (
        "import json, os\n"
        "from agent.capture.live import LiveSource, LiveCaptureError\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    LiveSource('lo')\n"
        "except LiveCaptureError as e:\n"
        "    print(json.dumps(str(e)))\n"
    )
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    message = json.loads(done.stdout)
    assert message.startswith("lo: permission denied")
    assert "CAP_NET_RAW" in message


# ---------------------------------------------------------------------------------------------------
# Runs LiveSource inside the monitored namespace. Prints "READY" once capturing, then one JSON line.
CAPTURE_SCRIPT = r"""
import json, signal, struct, sys, threading, time
import agent.capture.live as live
from agent.capture.live import LiveSource

args = json.loads(sys.argv[1])
iface = args["iface"]
def sysfs(name):
    try:
        with open(f"/sys/class/net/{iface}/{name}") as f:
            return int(f.read().strip(), 0)
    except OSError:  # the interface is gone
        return -1
if args.get("force_cooked"):
    live.linktype_for_arphrd = lambda arphrd: (113, True)
tx_before, rx_before = sysfs("statistics/tx_packets"), sysfs("statistics/rx_packets")
src = LiveSource(iface, bpf=args.get("bpf"), snaplen=args.get("snaplen", 65535),
                 ring_blocks=args.get("ring_blocks", 64), block_size=args.get("block_size", 1 << 20))
stop_called = []
def stop(*_):
    stop_called.append(time.monotonic())
    src.stop()
signal.signal(signal.SIGINT, stop)   # from the test
signal.signal(signal.SIGALRM, stop)  # linger after the expected count
timer = threading.Timer(args.get("deadline", 20), stop)  # stop() from another thread
timer.daemon = True
timer.start()
promisc_during = bool(sysfs("flags") & 0x100)
print("READY", flush=True)
t0 = time.time()
ports, seqs, frames, problems = {}, {}, [], []
snaplen = args.get("snaplen", 65535)
total = 0; expect = args.get("expect"); keep = args.get("keep", 0)
cnt_ok = True; linktypes = set(); len_ok = True; ts_ok = True; last_ts = 0.0
def frames_of(src):
    # With "chunk", leave the iterator every few frames and start a new one: it must resume where the
    # last one stopped, even in the middle of a ring block.
    chunk = args.get("chunk")
    if not chunk:
        yield from src
        return
    while True:
        got = 0
        for frame in src:
            yield frame
            got += 1
            if got == chunk:
                break
        else:
            return
for ts, data, wirelen, ifidx, linktype, cnt, source in frames_of(src):
    total += 1
    cnt_ok &= cnt == total and ifidx == 0 and source == 0
    linktypes.add(linktype)
    len_ok &= len(data) == min(wirelen, snaplen)
    ts_ok &= t0 - 5 < ts < time.time() + 1 and ts >= last_ts - 0.01
    last_ts = ts
    if len(frames) < keep:
        frames.append(data.hex())
    off = {1: 14, 113: 16, 101: 0}[linktype]
    etype = data[off - 2:off] if off else b"\x08\x00"
    while etype in (b"\x81\x00", b"\x88\xa8"):
        off += 4; etype = data[off - 2:off]
    if etype == b"\x08\x00" and len(data) >= off + 32 and data[off + 9] == 17:
        ihl = (data[off] & 15) * 4
        port = struct.unpack_from(">H", data, off + ihl + 2)[0]
        ports[port] = ports.get(port, 0) + 1
        seqs.setdefault(port, set()).add(struct.unpack_from(">I", data, off + ihl + 8)[0])
        if expect is not None and total == expect:
            signal.setitimer(signal.ITIMER_REAL, args.get("linger", 0.3))
ended = time.monotonic()
timer.cancel()
stats = src.stats()
promisc_end = bool(sysfs("flags") & 0x100)
src.close()
print(json.dumps({
    "total": total, "ports": ports, "distinct": {p: len(s) for p, s in seqs.items()},
    "cnt_ok": cnt_ok, "len_ok": len_ok, "ts_ok": ts_ok, "linktypes": sorted(linktypes),
    "frames": frames, "stats": stats, "stats_after_close": src.stats(),
    "problem": str(src.problem) if src.problem else None, "problems": len(src.problems),
    "info": [src.info.name, src.info.kind, src.info.interfaces, len(src.sources)], "packets": src.packets,
    "stop_latency": ended - stop_called[0] if stop_called else None,
    "tx_before": tx_before, "tx_after": sysfs("statistics/tx_packets"),
    "rx_delta": sysfs("statistics/rx_packets") - rx_before,
    "promisc_during": promisc_during, "promisc_end": promisc_end,
    "promisc_after_close": bool(sysfs("flags") & 0x100),
}), flush=True)
"""

# Test traffic only: the sending namespace is not the agent.
RAW_SENDER = r"""
import json, socket, sys, time
a = json.loads(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((a["iface"], 0))
for frame in a["frames"]:
    s.send(bytes.fromhex(frame))
    time.sleep(0.001)
"""


class Capture:
    def __init__(self, pair: NetPair, **args: Any) -> None:
        args.setdefault("iface", pair.mon_if)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", pair.mon_ns, PYTHON, "-c", CAPTURE_SCRIPT, json.dumps(args)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the script starts capturing before it prints READY
        if line.strip() != "READY":
            self.proc.kill()
            _out, err = self.proc.communicate()
            raise AssertionError(f"capture did not start: {line!r} {err}")

    def result(self, interrupt: bool = False, timeout: float = 30) -> dict[str, Any]:
        if interrupt:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.returncode == 0, err
        result: dict[str, Any] = json.loads(out)
        result["ports"] = {int(k): v for k, v in result["ports"].items()}
        result["distinct"] = {int(k): v for k, v in result["distinct"].items()}
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def send_raw(pair: NetPair, frames: list[bytes]) -> None:
    args = {"iface": pair.src_if, "frames": [f.hex() for f in frames]}
    _in_ns(pair.src_ns, PYTHON, "-c", RAW_SENDER, json.dumps(args))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _udp_ipv4(seq: int, port: int, pad: int = 18) -> bytes:
    payload = struct.pack(">I", seq) + b"\0" * pad
    udp = struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        seq & 0xFFFF,
        0,
        64,
        17,
        0,
        bytes([192, 0, 2, 1]),
        bytes([192, 0, 2, 3]),
    )
    words = struct.unpack(">10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack(">H", ~total & 0xFFFF) + header[12:]
    return header + udp


@pytest.fixture(params=[64, 0], ids=["tpacket_v3", "recvmsg"])
def ring_blocks(request: pytest.FixtureRequest) -> int:
    value: int = request.param
    return value


# ---------------------------------------------------------------------------------------------------
# Captures.

N = 2000


@pytest.mark.netns
def test_captures_every_received_packet_and_sends_nothing(netpair: NetPair, ring_blocks: int) -> None:
    cap = Capture(netpair, expect=N, ring_blocks=ring_blocks)
    try:
        # Half to the monitored end's MAC (PACKET_HOST), half to a foreign MAC (PACKET_OTHERHOST, the
        # mirror-port case).
        send_udp(netpair, N, [41000], [MON_IP, FOREIGN_IP])
        result = cap.result()
    finally:
        cap.kill()
    assert result["ports"] == {41000: N}
    assert result["distinct"] == {41000: N}  # each sequence number once: nothing lost or doubled
    assert result["total"] == N == result["rx_delta"]
    assert result["cnt_ok"] and result["len_ok"] and result["ts_ok"]
    assert result["linktypes"] == [LINKTYPE_ETHERNET]
    assert result["info"] == [netpair.mon_if, "live", [netpair.mon_if], 1]
    assert result["packets"] == N
    stats = result["stats"]
    assert stats["mode"] == ("tpacket_v3" if ring_blocks else "recvmsg")
    assert stats["packets"] == N
    assert stats["kernel_packets"] == N  # tp_packets includes drops
    assert stats["kernel_drops"] == 0
    assert stats["kernel_freeze_q_cnt"] == 0
    assert stats["unread"] == 0  # the iteration ended after the last frame: nothing left in the ring
    assert result["stats_after_close"] == stats  # accumulated, not lost on close
    # Passive: the monitored interface transmitted nothing at all.
    assert result["tx_before"] == result["tx_after"] == 0
    # Promiscuous by socket membership, gone when the socket closes.
    assert result["promisc_during"] and result["promisc_end"]
    assert not result["promisc_after_close"]
    assert _link_json(netpair.mon_ns, netpair.mon_if)["promiscuity"] == 0


@pytest.mark.netns
def test_iteration_resumes_where_it_stopped(netpair: NetPair, ring_blocks: int) -> None:
    cap = Capture(netpair, expect=N, chunk=1, ring_blocks=ring_blocks)  # a new iterator per frame
    try:
        send_udp(netpair, N, [41008], [FOREIGN_IP])
        result = cap.result()
    finally:
        cap.kill()
    assert result["distinct"] == {41008: N}
    assert result["total"] == N
    assert result["cnt_ok"]  # pcap_cnt continues across iterators


@pytest.mark.netns
def test_ring_failure_falls_back_to_recvmsg(netpair: NetPair) -> None:
    # 2 GiB blocks: the kernel refuses the ring at once (block size must fit an int), allocating nothing.
    cap = Capture(netpair, expect=100, block_size=1 << 31)
    try:
        send_udp(netpair, 100, [41009], [FOREIGN_IP])
        result = cap.result()
    finally:
        cap.kill()
    assert result["stats"]["mode"] == "recvmsg"
    assert result["stats"]["ring_error"]
    assert result["distinct"] == {41009: 100}


@pytest.mark.netns
def test_bpf_filter_and_stop_by_signal(netpair: NetPair, ring_blocks: int) -> None:
    require_libpcap()
    cap = Capture(netpair, bpf="udp dst port 41001", ring_blocks=ring_blocks)
    try:
        send_udp(netpair, 1000, [41001, 41002], [FOREIGN_IP])
        time.sleep(0.3)  # > the ring's block retire timeout
        result = cap.result(interrupt=True, timeout=5)  # SIGINT -> stop() in the signal handler
    finally:
        cap.kill()
    assert result["ports"] == {41001: 500}
    assert result["distinct"] == {41001: 500}
    assert result["stats"]["kernel_packets"] == 500  # filtered in the kernel, not in Python
    assert result["stats"]["kernel_drops"] == 0
    assert result["stop_latency"] < 0.5
    assert result["tx_after"] == 0


@pytest.mark.netns
def test_stop_from_another_thread_while_idle(netpair: NetPair) -> None:
    started = time.monotonic()
    cap = Capture(netpair, deadline=0.5)  # threading.Timer calls stop(); no traffic at all
    try:
        result = cap.result(timeout=10)
    finally:
        cap.kill()
    assert result["total"] == 0
    assert result["stop_latency"] < 0.35  # poll timeout is 0.1 s
    assert time.monotonic() - started < 10


@pytest.mark.netns
def test_vlan_tags_are_put_back(netpair: NetPair, ring_blocks: int) -> None:
    require_libpcap()
    dst, src = _mac(MON_MAC_FOREIGN), _mac(netpair.src_mac)
    frames = [
        dst + src + struct.pack(">HH", 0x8100, (3 << 13) | 10) + b"\x08\x00" + _udp_ipv4(1, 41003),
        # QinQ: the kernel strips the outer 802.1ad tag and reports its TPID
        dst + src + struct.pack(">HHHH", 0x88A8, 100, 0x8100, 20) + b"\x08\x00" + _udp_ipv4(2, 41003),
        # Priority tag (VID 0)
        dst + src + struct.pack(">HH", 0x8100, 5 << 13) + b"\x08\x00" + _udp_ipv4(3, 41003),
        dst + src + b"\x08\x00" + _udp_ipv4(4, 41003),
    ]
    # The kernel filters the frame as it sees it, outer tag already removed: the QinQ frame still has
    # its inner tag, so it needs "vlan and"; the singly tagged ones match the plain expression.
    bpf = "udp port 41003 or (vlan and udp port 41003)"
    cap = Capture(netpair, expect=len(frames), keep=10, bpf=bpf, ring_blocks=ring_blocks)
    try:
        send_raw(netpair, frames)
        result = cap.result()
    finally:
        cap.kill()
    assert [bytes.fromhex(f) for f in result["frames"]] == frames  # byte for byte as on the wire
    assert result["len_ok"]


@pytest.mark.netns
def test_snaplen_truncates_but_keeps_wire_length(netpair: NetPair, ring_blocks: int) -> None:
    cap = Capture(netpair, expect=50, snaplen=60, keep=1, ring_blocks=ring_blocks)
    try:
        send_udp(netpair, 50, [41004], [FOREIGN_IP])
        result = cap.result()
    finally:
        cap.kill()
    assert result["total"] == 50
    assert result["len_ok"]  # len(data) == min(wire length, snaplen)
    assert len(bytes.fromhex(result["frames"][0])) == 60


@pytest.mark.netns
def test_cooked_mode_synthesizes_sll_header(netpair: NetPair, ring_blocks: int) -> None:
    """Interfaces without a capturable link header (ppp, ipip, ...) are read SOCK_DGRAM with an SLL
    header. No such interface exists here, so the mapping is forced on the veth."""
    dst, src = _mac(MON_MAC_FOREIGN), _mac(netpair.src_mac)
    frames = [
        dst + src + b"\x08\x00" + _udp_ipv4(1, 41005),
        dst + src + struct.pack(">HH", 0x8100, 7) + b"\x08\x00" + _udp_ipv4(2, 41005),
    ]
    cap = Capture(netpair, expect=2, keep=2, force_cooked=True, ring_blocks=ring_blocks)
    try:
        send_raw(netpair, frames)
        result = cap.result()
    finally:
        cap.kill()
    assert result["linktypes"] == [LINKTYPE_LINUX_SLL]
    plain, tagged = (bytes.fromhex(f) for f in result["frames"])
    otherhost, ether = 3, 1
    sll = struct.pack(">HHH", otherhost, ether, 6) + src + b"\0\0"
    assert plain == sll + b"\x08\x00" + frames[0][14:]
    assert tagged == sll + struct.pack(">HH", 0x8100, 7) + b"\x08\x00" + frames[1][18:]
    assert result["ports"] == {41005: 2}


TUN_WRITER = r"""
import fcntl, json, os, struct, sys, time
a = json.loads(sys.argv[1])
fd = os.open("/dev/net/tun", os.O_RDWR)
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", a["iface"].encode(), IFF_TUN | IFF_NO_PI))
time.sleep(0.2)
for packet in a["packets"]:
    os.write(fd, bytes.fromhex(packet))  # injects the packet as *received* on the tun interface
    time.sleep(0.001)
time.sleep(0.3)
os.close(fd)
"""


@pytest.mark.netns
def test_raw_ip_interface(netpair: NetPair, ring_blocks: int) -> None:
    if not Path("/dev/net/tun").exists():
        skip_or_fail("/dev/net/tun missing")
    tun = "cwt" + netpair.mon_if[3:]
    _in_ns(netpair.mon_ns, "ip", "tuntap", "add", "mode", "tun", "name", tun)
    _in_ns(netpair.mon_ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{tun}.disable_ipv6=1")
    _in_ns(netpair.mon_ns, "ip", "link", "set", tun, "up")
    packets = [_udp_ipv4(i, 41006) for i in range(20)]
    cap = Capture(netpair, iface=tun, expect=len(packets), keep=len(packets), ring_blocks=ring_blocks)
    try:
        args = json.dumps({"iface": tun, "packets": [p.hex() for p in packets]})
        _in_ns(netpair.mon_ns, PYTHON, "-c", TUN_WRITER, args)
        result = cap.result()
    finally:
        cap.kill()
    assert result["linktypes"] == [LINKTYPE_RAW]
    assert [bytes.fromhex(f) for f in result["frames"]] == packets
    assert result["tx_after"] == 0


@pytest.mark.netns
def test_interface_disappearing_ends_capture(netpair: NetPair, ring_blocks: int) -> None:
    cap = Capture(netpair, ring_blocks=ring_blocks)
    try:
        send_udp(netpair, 10, [41007], [FOREIGN_IP])
        time.sleep(0.3)
        _in_ns(netpair.src_ns, "ip", "link", "del", netpair.src_if)  # takes the monitored end with it
        result = cap.result(timeout=5)
    finally:
        cap.kill()
    assert result["total"] == 10
    assert result["problem"] is not None
    assert "interface disappeared" in result["problem"]
    assert result["problems"] == 1
    assert result["stop_latency"] is None  # ended by itself, not by stop()
