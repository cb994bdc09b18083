"""Live-capture throughput: how many packets/s LiveSource takes from a veth without drops.

``sudo .venv/bin/python -m bench.live_capture --rates 10000,100000,300000 --seconds 3 [--recvmsg]``

Builds two throwaway network namespaces joined by a veth pair (TEST-NET-1 addresses, IPv6 off, the
monitored end without an address), replays 60-byte UDP frames into it from the sending namespace with
tcpreplay at each rate, and has LiveSource count them in the other namespace. Prints one line per rate:
packets sent, received, kernel drops, and the rate the reader actually achieved. Needs root, ``ip`` and
``tcpreplay``. Sender and reader share the machine's CPUs: on a 2-CPU box tcpreplay's busy-wait pacing
takes one, so the numbers are a lower bound for a dedicated sensor.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

READER = r"""
import json, signal, sys, time
from agent.capture.live import LiveSource
a = json.loads(sys.argv[1])
def rx():
    with open(f"/sys/class/net/{a['iface']}/statistics/rx_packets") as f:
        return int(f.read())
rx0 = rx()
src = LiveSource(a["iface"], ring_blocks=a["ring_blocks"])
signal.signal(signal.SIGINT, lambda *_: src.stop())
print("READY", flush=True)
if a["drain"]:
    sys.stdin.readline()  # let the ring fill first, then time how fast we empty it
n = 0; first = last = 0.0
for frame in src:
    if not n:
        first = time.perf_counter()
    n += 1
    if n == a["expect"]:
        break
last = time.perf_counter()
stats = src.stats()
src.close()
result = {"received": n, "seconds": last - first if n else 0.0, "stats": stats, "arrived": rx() - rx0}
print(json.dumps(result), flush=True)
"""


def run(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout


def write_pcap(path: Path, count: int, dst_mac: bytes, src_mac: bytes) -> None:
    """``count`` distinct 60-byte Ethernet/IPv4/UDP frames (to a MAC nobody owns, as on a mirror port)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(count):
        payload = struct.pack(">I", i) + b"\0" * 14
        udp = struct.pack(">HHHH", 40000, 41000, 8 + len(payload), 0) + payload
        ip = struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            i & 0xFFFF,
            0,
            64,
            17,
            0,
            bytes([192, 0, 2, 1]),
            bytes([192, 0, 2, 3]),
        )
        frame = dst_mac + src_mac + b"\x08\x00" + ip + udp
        out.append(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def measure(
    mon_ns: str,
    src_ns: str,
    mon_if: str,
    src_if: str,
    pcap: Path,
    per_loop: int,
    rate: int,
    seconds: float,
    ring_blocks: int,
    drain: bool,
) -> dict[str, object]:
    loops = max(1, round((rate if rate > 0 else 1_000_000) * seconds / per_loop))
    total = loops * per_loop
    args = json.dumps({"iface": mon_if, "ring_blocks": ring_blocks, "expect": total, "drain": drain})
    reader = subprocess.Popen(
        ["ip", "netns", "exec", mon_ns, sys.executable, "-c", READER, args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "READY":
        raise SystemExit("reader did not start")
    pacing = ["--topspeed"] if rate <= 0 else [f"--pps={rate}"]
    started = time.perf_counter()
    run("tcpreplay", "-q", "--preload-pcap", "-i", src_if, *pacing, f"--loop={loops}", str(pcap), ns=src_ns)
    send_seconds = time.perf_counter() - started
    try:
        out, _ = reader.communicate(
            "go\n", timeout=2 + (30 if drain else 0)
        )  # done already unless packets were lost
    except subprocess.TimeoutExpired:
        reader.send_signal(signal.SIGINT)
        out, _ = reader.communicate(timeout=10)
    result: dict[str, object] = json.loads(out)
    result.update(sent=total, send_seconds=send_seconds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates", default="10000,100000,200000,400000", help="packets/s; 0 = tcpreplay --topspeed"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--recvmsg", action="store_true", help="measure the recvmsg fallback, not the ring")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="read only after the sender is done: measures the reader alone (keep rate x seconds below"
        " the ring's capacity, ~450 k of these frames with the default 64 MiB ring)",
    )
    opts = parser.parse_args()
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")

    suffix = secrets.token_hex(3)
    mon_ns, src_ns, mon_if, src_if = f"cwbmon-{suffix}", f"cwbsrc-{suffix}", f"cwbm{suffix}", f"cwbs{suffix}"
    created = []
    try:
        for ns in (mon_ns, src_ns):
            run("ip", "netns", "add", ns)
            created.append(ns)
        run(
            "ip",
            "link",
            "add",
            src_if,
            "netns",
            src_ns,
            "type",
            "veth",
            "peer",
            "name",
            mon_if,
            "netns",
            mon_ns,
        )
        for ns, ifname in ((mon_ns, mon_if), (src_ns, src_if)):
            run("sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1", ns=ns)
            run("ip", "link", "set", ifname, "up", ns=ns)
        src_mac = json.loads(run("ip", "-j", "link", "show", src_if, ns=src_ns))[0]["address"]
        per_loop = 1000
        with tempfile.TemporaryDirectory() as tmp:
            pcap = Path(tmp) / "udp60.pcap"
            write_pcap(pcap, per_loop, bytes.fromhex("020000000003"), bytes.fromhex(src_mac.replace(":", "")))
            mode = "recvmsg" if opts.recvmsg else "tpacket_v3"
            for rate in (int(r) for r in opts.rates.split(",")):
                ring_blocks = 0 if opts.recvmsg else 64
                r = measure(
                    mon_ns,
                    src_ns,
                    mon_if,
                    src_if,
                    pcap,
                    per_loop,
                    rate,
                    opts.seconds,
                    ring_blocks,
                    opts.drain,
                )
                stats = r["stats"]
                assert isinstance(stats, dict)
                seconds = float(r["seconds"])  # type: ignore[arg-type]
                received = int(r["received"])  # type: ignore[call-overload]
                sent = int(r["sent"])  # type: ignore[call-overload]
                send_rate = sent / float(r["send_seconds"])  # type: ignore[arg-type]
                print(
                    f"{mode:10} target {rate or 'max':>7} pps: sent {sent} at {send_rate:,.0f} pps, "
                    f"arrived on the interface {r['arrived']}, "
                    f"received {received} ({received / sent:.2%}), kernel drops {stats['kernel_drops']}, "
                    f"reader {received / seconds if seconds else 0:,.0f} pps",
                    flush=True,
                )
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
