"""The plant-traffic generator: exact counts, determinism, valid pcap, clean TCP streams, and correct
Modbus MBAP lengths, DNP3 CRCs, SMB2 WRITE framing and IP/TCP/UDP checksums, checked by an independent
parser here and, when tshark is installed, by tshark itself."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.utils import RawPcapReader

from bench import gen_plant
from tests.tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = tmp_path_factory.mktemp("gen") / "demo.pcap"
    meta = gen_plant.generate(path, 6000, seed=1, profile="demo")
    return path, meta


@pytest.fixture(scope="module")
def bench_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    # 30k packets of the bench profile span ~2.5 s: enough for the SMB2 session and many 64 KiB writes.
    # Seed 793 starts the SMB2 client's sequence numbers 1.35 MB below 2**32, so the stream wraps.
    path = tmp_path_factory.mktemp("gen") / "bench.pcap"
    meta = gen_plant.generate(path, 30_000, seed=793, profile="bench")
    return path, meta


# ------------------------------------------------------------------- an independent little dissector


def crc_dnp_bitwise(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def rfc1071(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    s = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@dataclass
class Pkt:
    ts: float
    frame: bytes
    vlans: list[int]
    ethertype: int
    proto: int = 0
    src: bytes = b""
    dst: bytes = b""
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    payload: bytes = b""
    l4_ok: bool = True
    ip_ok: bool = True


def dissect(frame: bytes, ts: float) -> Pkt:
    et = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    vlans = []
    while et in (0x8100, 0x88A8):
        vlans.append(struct.unpack_from("!H", frame, off)[0] & 0x0FFF)
        et = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    p = Pkt(ts, frame, vlans, et)
    if et == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        p.ip_ok = rfc1071(frame[off : off + ihl]) == 0xFFFF
        p.proto = frame[off + 9]
        p.src, p.dst = frame[off + 12 : off + 16], frame[off + 16 : off + 20]
        l4, end = off + ihl, off + total
    elif et == 0x86DD:
        p.proto = frame[off + 6]
        p.src, p.dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
        l4, end = off + 40, off + 40 + struct.unpack_from("!H", frame, off + 4)[0]
    else:
        return p
    seg = frame[l4:end]
    pseudo = p.src + p.dst + struct.pack("!HH", p.proto, len(seg))
    p.l4_ok = rfc1071(pseudo + seg) == 0xFFFF
    p.sport, p.dport = struct.unpack_from("!HH", seg)
    if p.proto == 6:
        p.seq, p.ack = struct.unpack_from("!II", seg, 4)
        p.flags = seg[13]
        p.payload = seg[(seg[12] >> 4) * 4 :]
    elif p.proto == 17:
        p.payload = seg[8:]
    return p


def read(path: Path) -> Iterator[Pkt]:
    for frame, meta in RawPcapReader(str(path)):
        yield dissect(frame, meta.sec + meta.usec / 1e6)


# ------------------------------------------------------------------------------------------ tests


def test_crc16_dnp_check_value() -> None:
    assert gen_plant.crc16_dnp(b"123456789") == 0xEA82
    assert crc_dnp_bitwise(b"123456789") == 0xEA82
    for data in (b"", b"\x05\x64\x05\xc0\x01\x00\x00\x04", bytes(range(16))):
        assert gen_plant.crc16_dnp(data) == crc_dnp_bitwise(data)


def test_valid_pcap_with_exact_count(demo: tuple[Path, dict[str, object]]) -> None:
    path, meta = demo
    head = path.read_bytes()[:24]
    assert struct.unpack("<IHHiIII", head) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    reader = RawPcapReader(str(path))
    assert reader.linktype == 1
    last = 0.0
    count = 0
    total = 0
    for frame, m in reader:
        ts = m.sec + m.usec / 1e6
        assert ts >= last
        assert m.caplen == m.wirelen == len(frame) >= 60
        last = ts
        count += 1
        total += len(frame)
    assert count == meta["packets"] == 6000
    assert total == meta["frame_bytes"]
    assert path.stat().st_size < 2_000_000


@pytest.mark.parametrize("packets", [1, 2, 7, 333, 2500])
def test_any_packet_count_is_exact(tmp_path: Path, packets: int) -> None:
    out = tmp_path / "n.pcap"
    meta = gen_plant.generate(out, packets, seed=2)
    assert meta["packets"] == packets
    assert sum(1 for _ in RawPcapReader(str(out))) == packets


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.pcap"
        gen_plant.generate(out, 4000, seed=seed)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_bundled_demo_capture_is_reproducible(demo: tuple[Path, dict[str, object]]) -> None:
    """pcaps/demo.pcap is exactly what `python -m bench.gen_plant --demo` writes (see pcaps/README.md)."""
    bundled = ROOT / "pcaps" / "demo.pcap"
    if not bundled.exists():
        pytest.skip("pcaps/demo.pcap not present")
    assert bundled.read_bytes() == demo[0].read_bytes()


def test_checksums_and_clean_tcp_streams(bench_small: tuple[Path, dict[str, object]]) -> None:
    path, _ = bench_small
    next_seq: dict[tuple[bytes, bytes, int, int], int] = {}
    wrapped = False
    for p in read(path):
        if p.ethertype not in (0x0800, 0x86DD):
            continue
        assert p.ip_ok, p
        assert p.l4_ok, p
        if p.proto != 6:
            continue
        key = (p.src, p.dst, p.sport, p.dport)
        if p.flags & gen_plant.SYN:
            assert key not in next_seq
            next_seq[key] = (p.seq + 1) & 0xFFFFFFFF
        else:
            assert p.seq == next_seq[key], f"sequence hole or overlap in {key}"
            wrapped |= p.dport == 445 and p.seq < 1 << 20
            next_seq[key] = (p.seq + len(p.payload) + (p.flags & gen_plant.FIN)) & 0xFFFFFFFF
        if p.flags & gen_plant.ACK:
            peer = next_seq[(p.dst, p.src, p.dport, p.sport)]
            assert (peer - p.ack) & 0xFFFFFFFF < 0x80000000, "ACK of data not yet sent"
    assert wrapped, "the SMB2 stream no longer wraps its sequence space: pick another seed for bench_small"


def test_mix_of_the_bench_profile(bench_small: tuple[Path, dict[str, object]]) -> None:
    _, meta = bench_small
    mix = meta["mix"]
    assert isinstance(mix, dict)
    for label in ("modbus", "dnp3", "dnp3_qinq", "smb2_bulk", "http", "dns", "arp"):
        assert mix[label]["packets"] > 0, label
    assert 700 < float(meta["avg_frame_bytes"]) < 1200  # type: ignore[arg-type]
    assert 0.15 < float(meta["vlan_tagged_share"]) < 0.5  # type: ignore[arg-type]


def test_modbus_mbap_lengths(demo: tuple[Path, dict[str, object]]) -> None:
    path, _ = demo
    pending: dict[tuple[bytes, int, int], int] = {}
    seen = Counter[int]()
    for p in read(path):
        if p.proto != 6 or 502 not in (p.sport, p.dport) or not p.payload:
            continue
        data = p.payload
        tid, proto, length, _unit, fc = struct.unpack_from(">HHHBB", data)
        assert proto == 0
        assert length == len(data) - 6
        seen[fc] += 1
        if p.dport == 502:  # request
            qty = struct.unpack_from(">H", data, 10)[0]
            if fc == 3:
                assert len(data) == 12 and 1 <= qty <= 125
            else:
                assert fc == 16
                assert data[12] == 2 * qty == len(data) - 13
            pending[(p.src, p.sport, tid)] = qty
        else:
            qty = pending.pop((p.dst, p.dport, tid))
            if fc == 3:
                assert data[8] == 2 * qty == len(data) - 9
            elif fc == 16:
                assert struct.unpack_from(">H", data, 10)[0] == qty and len(data) == 12
            else:
                assert fc == 0x83 and len(data) == 9
    assert seen[3] > 1000 and seen[16] > 0


def test_dnp3_frames_and_crcs(demo: tuple[Path, dict[str, object]]) -> None:
    path, _ = demo
    frames = 0
    qinq = 0
    for p in read(path):
        if p.proto != 6 or 20000 not in (p.sport, p.dport) or not p.payload:
            continue
        data = p.payload
        i = 0
        while i < len(data):
            assert data[i : i + 2] == b"\x05\x64"
            user = data[i + 2] - 5
            assert struct.unpack_from("<H", data, i + 8)[0] == crc_dnp_bitwise(data[i : i + 8])
            i += 10
            while user > 0:
                n = min(16, user)
                assert struct.unpack_from("<H", data, i + n)[0] == crc_dnp_bitwise(data[i : i + n])
                i += n + 2
                user -= n
            frames += 1
        assert i == len(data)
        qinq += len(p.vlans) == 2
    assert frames > 100 and qinq > 0


def test_smb2_writes(bench_small: tuple[Path, dict[str, object]]) -> None:
    path, _ = bench_small
    commands = Counter[int]()
    for p in read(path):
        if p.proto == 6 and p.dport == 445 and p.payload[4:8] == b"\xfeSMB":
            assert struct.unpack_from(">I", p.payload)[0] >= 64
            commands[struct.unpack_from("<H", p.payload, 16)[0]] += 1
    assert [c for c in (0, 1, 3, 5, 9) if commands[c] == 0] == []
    assert commands[9] > 50


@pytest.mark.tool
def test_tshark_decodes_without_complaint(demo: tuple[Path, dict[str, object]]) -> None:
    tshark = require_tool("tshark")
    path, _ = demo
    checks = [
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ]
    fields = ["-T", "fields", "-E", "separator=/t", "-e", "frame.protocols", "-e", "_ws.expert.severity"]
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), *checks, *fields],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    stacks = Counter[str]()
    worst = 0
    for line in out.stdout.splitlines():
        protocols, _, severities = line.partition("\t")
        stacks[protocols] += 1
        assert "_ws.malformed" not in protocols, line
        worst = max([worst, *(int(v) for v in severities.split(",") if v)])
    # Expert severities: chat 0x200000, note 0x400000, warning 0x600000 (bad checksum, TCP anomalies), error.
    assert worst < 0x600000
    assert sum(stacks.values()) == 6000

    def count(suffix: str) -> int:
        return sum(n for stack, n in stacks.items() if stack.endswith(suffix))

    assert count("vlan:ethertype:ip:tcp:mbtcp:modbus") > 1000
    assert count("vlan:ethertype:ip:tcp:dnp3") > 100
    assert count("ieee8021ad:ethertype:vlan:ethertype:ip:tcp:dnp3") > 0
    assert count("ip:tcp:nbss:smb2:data") > 0  # WRITE requests, reassembled from 1460-byte segments
    for proto in ("udp:dns", "udp:ntp", "ipv6:udp:syslog", "ethertype:arp", "tcp:http"):
        assert any(proto in stack for stack in stacks), proto
