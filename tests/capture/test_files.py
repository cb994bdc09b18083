"""Tests of the offline capture readers (agent/capture/files.py).

Captures are built byte by byte with struct so that every field, including the broken ones, is
under the test's control; scapy's writers serve as an independent second writer.
"""

from __future__ import annotations

import csv
import gzip
import os
import signal
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.capture.base import CaptureError
from agent.capture.files import FileSource, ReplaySource, expand_paths
from agent.records import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    Frame,
)

# ---------------------------------------------------------------------------------------------
# Capture builders


def frame_bytes(i: int, size: int = 60) -> bytes:
    """Distinct, recognisable packet bytes (no need for valid protocol headers here)."""
    return bytes([i & 0xFF]) * size


def pcap_header(order: str = "<", nano: bool = False, linktype: int = 1, snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(sec: int, frac: int, data: bytes, wirelen: int | None = None, order: str = "<") -> bytes:
    wire = len(data) if wirelen is None else wirelen
    return struct.pack(order + "IIII", sec, frac, len(data), wire) + data


def make_pcap(
    packets: Sequence[tuple[int, int, bytes]], order: str = "<", nano: bool = False, linktype: int = 1
) -> bytes:
    return pcap_header(order, nano, linktype) + b"".join(
        pcap_record(sec, frac, data, order=order) for sec, frac, data in packets
    )


def ng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += bytes(-len(body) % 4)
    blen = len(body) + 12
    return struct.pack(order + "II", btype, blen) + body + struct.pack(order + "I", blen)


def ng_option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def ng_options(options: Sequence[tuple[int, bytes]], order: str = "<") -> bytes:
    if not options:
        return b""
    return b"".join(ng_option(code, value, order) for code, value in options) + ng_option(0, b"", order)


def ng_shb(order: str = "<", options: Sequence[tuple[int, bytes]] = ()) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_options(options, order)
    return ng_block(0x0A0D0D0A, body, order)


def ng_idb(
    linktype: int,
    order: str = "<",
    snaplen: int = 0,
    name: str | None = None,
    tsresol: int | None = None,
    tsoffset: int | None = None,
) -> bytes:
    options: list[tuple[int, bytes]] = []
    if name is not None:
        options.append((2, name.encode()))
    if tsresol is not None:
        options.append((9, bytes([tsresol])))
    if tsoffset is not None:
        options.append((14, struct.pack(order + "q", tsoffset)))
    body = struct.pack(order + "HHI", linktype, 0, snaplen) + ng_options(options, order)
    return ng_block(1, body, order)


def ng_epb(iface: int, ts: int, data: bytes, order: str = "<", wirelen: int | None = None) -> bytes:
    wire = len(data) if wirelen is None else wirelen
    body = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), wire) + data
    return ng_block(6, body, order)


def ng_pb(iface: int, ts: int, data: bytes, order: str = "<") -> bytes:
    body = struct.pack(order + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data
    return ng_block(2, body, order)


def ng_spb(data: bytes, wirelen: int, order: str = "<") -> bytes:
    return ng_block(3, struct.pack(order + "I", wirelen) + data, order)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def read_all(
    path: str, source_index: int = 0, chunk_size: int | None = None
) -> tuple[FileSource, list[Frame]]:
    src = FileSource(path, source_index) if chunk_size is None else FileSource(path, source_index, chunk_size)
    frames = list(src)
    assert src.packets == len(frames)
    return src, frames


T0 = 1_700_000_000
PACKETS = [(T0, 1, frame_bytes(1, 60)), (T0, 999_999, frame_bytes(2, 1514)), (T0 + 5, 0, frame_bytes(3, 42))]


# ---------------------------------------------------------------------------------------------
# Classic pcap


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    units = 1e9 if nano else 1e6
    path = write(tmp_path / "a.pcap", make_pcap(PACKETS, order, nano, LINKTYPE_LINUX_SLL))
    src, frames = read_all(path, source_index=3)
    assert src.problem is None
    assert src.info.name == path
    assert src.info.kind == "pcap"
    assert src.info.interfaces == ["if0"]
    assert frames == [
        (sec + frac / units, data, len(data), 0, LINKTYPE_LINUX_SLL, n, 3)
        for n, (sec, frac, data) in enumerate(PACKETS, 1)
    ]


def test_pcap_wire_length_and_fcs_bits_in_linktype(tmp_path: Path) -> None:
    # Upper bits of the network field: FCS length 4 present (libpcap LT_FCS_LENGTH_PRESENT).
    header = pcap_header(linktype=LINKTYPE_ETHERNET | 0x04000000 | (4 << 28))
    path = write(tmp_path / "fcs.pcap", header + pcap_record(T0, 0, frame_bytes(1, 64), wirelen=1518))
    _, frames = read_all(path)
    assert [(f[2], f[4]) for f in frames] == [(1518, LINKTYPE_ETHERNET)]


def test_pcap_truncated_record_keeps_earlier_frames(tmp_path: Path) -> None:
    data = make_pcap(PACKETS)
    cut = len(data) - 20  # last record: 16-byte header + 42 bytes, of which 22 remain
    path = write(tmp_path / "t.pcap", data[:cut])
    src, frames = read_all(path)
    assert [f[1] for f in frames] == [p[2] for p in PACKETS[:2]]
    assert src.problem is not None
    assert src.problem.offset == 24 + 16 + 60 + 16 + 1514
    assert src.problem.reason == "truncated packet record (header says 42 bytes, 22 remain)"
    assert src.problem.packets_read == 2
    assert src.problem.source == path


def test_pcap_truncated_record_header(tmp_path: Path) -> None:
    data = make_pcap(PACKETS[:1]) + pcap_record(T0, 2, b"x")[:7]
    src, frames = read_all(write(tmp_path / "t.pcap", data))
    assert len(frames) == 1
    assert src.problem is not None
    assert src.problem.offset == 24 + 16 + 60
    assert src.problem.reason == "truncated packet record header (7 of 16 bytes)"


def test_pcap_corrupt_record_length(tmp_path: Path) -> None:
    data = make_pcap(PACKETS[:1]) + struct.pack("<IIII", T0, 0, 0xFFFFFFFF, 60) + frame_bytes(9)
    src, frames = read_all(write(tmp_path / "c.pcap", data))
    assert len(frames) == 1
    assert src.problem is not None
    assert src.problem.offset == 24 + 16 + 60
    assert src.problem.reason.startswith("corrupt record length 4294967295")


def test_pcap_record_above_snaplen_but_within_limit_is_read(tmp_path: Path) -> None:
    # Some writers declare a small snaplen and still store longer records; libpcap and Wireshark
    # read them, and so do we (up to 256 KiB).
    data = pcap_header(snaplen=128) + pcap_record(T0, 0, frame_bytes(1, 9000))
    src, frames = read_all(write(tmp_path / "s.pcap", data))
    assert src.problem is None
    assert len(frames[0][1]) == 9000


# ---------------------------------------------------------------------------------------------
# pcapng


def two_section_pcapng() -> tuple[bytes, list[Frame], dict[str, int]]:
    """A pcapng exercising every block type we read; returns bytes, expected frames, offsets."""
    le, be = "<", ">"
    ts_ns = T0 * 10**9 + 123_456_789
    ts_2 = T0 * 1024 + 512  # 1/1024 s units
    parts = [
        ng_shb(le, [(4, b"conduitwatch test")]),  # shb_userappl
        ng_idb(LINKTYPE_ETHERNET, le, name="eth0", tsresol=9),  # nanoseconds
        ng_idb(LINKTYPE_LINUX_SLL, le, snaplen=100, tsresol=0x80 | 10, tsoffset=100),  # 2^-10 s
        ng_epb(0, ts_ns, frame_bytes(1, 61), le, wirelen=1000),
        ng_block(5, bytes(20), le),  # Interface Statistics Block: skipped
        ng_epb(1, ts_2, frame_bytes(2, 30), le),
        ng_spb(frame_bytes(3, 50), 50, le),  # interface 0, 50 bytes + 2 padding
        ng_pb(1, ts_2 + 1024, frame_bytes(4, 17), le),
        ng_block(0x00000BAD, b"custom", le),  # custom block: skipped
        # Second section, big-endian: a fresh interface table.
        ng_shb(be),
        ng_idb(LINKTYPE_RAW, be, snaplen=90),  # default microseconds
        ng_epb(0, T0 * 10**6 + 7, frame_bytes(5, 40), be),
        ng_spb(frame_bytes(6, 90), 1500, be),  # wire 1500, only 90 captured
    ]
    expected: list[Frame] = [
        (ts_ns / 1e9, frame_bytes(1, 61), 1000, 0, LINKTYPE_ETHERNET, 1, 0),
        (ts_2 / 1024 + 100, frame_bytes(2, 30), 30, 1, LINKTYPE_LINUX_SLL, 2, 0),
        (ts_2 / 1024 + 100, frame_bytes(3, 50), 50, 0, LINKTYPE_ETHERNET, 3, 0),
        ((ts_2 + 1024) / 1024 + 100, frame_bytes(4, 17), 17, 1, LINKTYPE_LINUX_SLL, 4, 0),
        ((T0 * 10**6 + 7) / 1e6, frame_bytes(5, 40), 40, 2, LINKTYPE_RAW, 5, 0),
        ((T0 * 10**6 + 7) / 1e6, frame_bytes(6, 90), 1500, 2, LINKTYPE_RAW, 6, 0),
    ]
    offsets = {"first_epb": sum(map(len, parts[:3])), "end": sum(map(len, parts))}
    return b"".join(parts), expected, offsets


def test_pcapng_sections_interfaces_and_block_types(tmp_path: Path) -> None:
    data, expected, _ = two_section_pcapng()
    src, frames = read_all(write(tmp_path / "a.pcapng", data))
    assert src.problem is None
    assert src.info.kind == "pcapng"
    assert src.info.interfaces == ["eth0", "if1", "if2"]
    assert frames == expected


@pytest.mark.parametrize("chunk_size", [16, 29, 64, 1000])
def test_records_spanning_chunk_boundaries(tmp_path: Path, chunk_size: int) -> None:
    ng_data, expected, _ = two_section_pcapng()
    ng_path = write(tmp_path / "a.pcapng", ng_data)
    assert read_all(ng_path, chunk_size=chunk_size)[1] == expected
    pcap_path = write(tmp_path / "a.pcap", make_pcap(PACKETS * 20))
    assert read_all(pcap_path, chunk_size=chunk_size)[1] == read_all(pcap_path)[1]


def test_pcapng_undefined_interface(tmp_path: Path) -> None:
    head = ng_shb() + ng_idb(LINKTYPE_ETHERNET)
    data = head + ng_epb(0, 1, b"ok") + ng_epb(1, 2, b"bad")
    src, frames = read_all(write(tmp_path / "u.pcapng", data))
    assert len(frames) == 1
    assert src.problem is not None
    assert src.problem.offset == len(head) + len(ng_epb(0, 1, b"ok"))
    assert src.problem.reason == "packet names undefined interface 1"


def test_pcapng_new_section_forgets_interfaces(tmp_path: Path) -> None:
    data = ng_shb() + ng_idb(LINKTYPE_ETHERNET) + ng_epb(0, 1, b"a") + ng_shb() + ng_epb(0, 2, b"b")
    src, frames = read_all(write(tmp_path / "s.pcapng", data))
    assert len(frames) == 1
    assert src.problem is not None
    assert "undefined interface 0" in src.problem.reason


@pytest.mark.parametrize(
    ("length", "reason"),
    [
        (0xFFFFFFFF, "corrupt block length 4294967295"),
        (30, "corrupt block length 30"),
        (8, "corrupt block length 8"),
    ],
)
def test_pcapng_bad_block_length(tmp_path: Path, length: int, reason: str) -> None:
    head = ng_shb() + ng_idb(LINKTYPE_ETHERNET) + ng_epb(0, 1, b"ok")
    bad = bytearray(ng_epb(0, 2, frame_bytes(2)))
    bad[4:8] = struct.pack("<I", length)
    src, frames = read_all(write(tmp_path / "b.pcapng", head + bytes(bad)))
    assert len(frames) == 1
    assert src.problem is not None
    assert (src.problem.offset, src.problem.reason) == (len(head), reason)


def test_pcapng_mismatching_trailing_length(tmp_path: Path) -> None:
    head = ng_shb() + ng_idb(LINKTYPE_ETHERNET)
    bad = bytearray(ng_epb(0, 2, frame_bytes(2)))
    bad[-4:] = struct.pack("<I", 4)
    src, frames = read_all(write(tmp_path / "m.pcapng", head + bytes(bad) + ng_epb(0, 3, b"x")))
    assert frames == []
    assert src.problem is not None
    assert src.problem.offset == len(head)
    assert src.problem.reason == f"block trailing length 4 does not match leading length {len(bad)}"


def test_pcapng_truncated_block(tmp_path: Path) -> None:
    data, _, offsets = two_section_pcapng()
    src, frames = read_all(write(tmp_path / "t.pcapng", data[: offsets["first_epb"] + 40]))
    assert frames == []
    assert src.problem is not None
    assert src.problem.offset == offsets["first_epb"]
    assert src.problem.reason == "truncated block (header says 96 bytes, 40 remain)"
    # Truncated inside a block header.
    src, frames = read_all(write(tmp_path / "h.pcapng", data[: offsets["first_epb"] + 5]))
    assert src.problem is not None
    assert src.problem.reason == "truncated block header (5 bytes)"


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: a reader that loops for ever is interrupted after ``seconds``."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("cut", range(8, 12))
def test_pcapng_ending_in_a_section_header_cut_before_its_byte_order_ends(tmp_path: Path, cut: int) -> None:
    """8 to 11 bytes of a new section header at the end of a memory-mapped file: too short for its
    byte-order magic. Reported as a truncated header (it used to loop for ever; hypothesis found it)."""
    data, expected, _ = two_section_pcapng()
    with deadline(20):
        src, frames = read_all(write(tmp_path / "s.pcapng", data + ng_shb()[:cut]))
    assert frames == expected
    assert src.problem is not None
    assert (src.problem.offset, src.problem.reason) == (len(data), f"truncated block header ({cut} bytes)")


def test_pcapng_packet_length_beyond_block(tmp_path: Path) -> None:
    head = ng_shb() + ng_idb(LINKTYPE_ETHERNET)
    bad = bytearray(ng_epb(0, 2, frame_bytes(2, 40)))
    bad[20:24] = struct.pack("<I", 41)  # captured length one byte more than the block holds
    src, frames = read_all(write(tmp_path / "p.pcapng", head + bytes(bad)))
    assert frames == []
    assert src.problem is not None
    assert src.problem.reason == "corrupt packet length 41 in 72-byte block"


# ---------------------------------------------------------------------------------------------
# Files that are not captures


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a pcap or pcapng file (starts with 0x47455420)"),
        (pcap_header()[:10], "truncated file header (10 of 24 bytes)"),
        (b"\xd4\xc3", "truncated file header (2 of 24 bytes)"),
        (ng_shb()[:20], "truncated file header (20 of 24 bytes)"),
        (ng_shb()[:24] + b"\0\0", "truncated section header block (26 of 28 bytes)"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1), "unsupported pcap version 3.0"),
        (ng_shb()[:8] + b"\0\0\0\0" + ng_shb()[12:], "invalid pcapng byte-order magic 0x00000000"),
    ],
)
def test_not_a_capture(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path / "x.pcap", content)
    with pytest.raises(CaptureError) as info:
        FileSource(path, 0)
    assert info.value.reason == reason
    assert info.value.source == path


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open file") as info:
        FileSource(str(tmp_path / "missing.pcap"), 0)
    assert "byte offset" not in str(info.value)  # a file that cannot be opened has no position to give
    with pytest.raises(CaptureError, match="cannot open file"):
        FileSource(str(tmp_path), 0)


# ---------------------------------------------------------------------------------------------
# gzip


def test_gzip_detected_by_content(tmp_path: Path) -> None:
    ng_data, expected, _ = two_section_pcapng()
    ng_path = write(tmp_path / "no-extension", gzip.compress(ng_data))
    src, frames = read_all(ng_path)
    assert (src.info.kind, frames, src.problem) == ("pcapng", expected, None)
    pcap_path = write(tmp_path / "capture.pcap", gzip.compress(make_pcap(PACKETS)))
    assert read_all(pcap_path)[1] == read_all(write(tmp_path / "plain.pcap", make_pcap(PACKETS)))[1]


def test_gzip_offsets_are_uncompressed(tmp_path: Path) -> None:
    data = make_pcap(PACKETS)
    src, frames = read_all(write(tmp_path / "t.pcap.gz", gzip.compress(data[:-20])))
    assert len(frames) == 2
    assert src.problem is not None
    assert src.problem.offset == 24 + 16 + 60 + 16 + 1514


def test_gzip_stream_ending_early_is_a_problem(tmp_path: Path) -> None:
    packets = [(T0 + i, 0, os.urandom(200)) for i in range(2000)]  # incompressible
    compressed = gzip.compress(make_pcap(packets))
    src, frames = read_all(
        write(tmp_path / "cut.pcap.gz", compressed[: len(compressed) // 2]), chunk_size=4096
    )
    assert 0 < len(frames) < len(packets)
    assert [f[1] for f in frames] == [p[2] for p in packets[: len(frames)]]
    assert src.problem is not None
    assert "read error" in src.problem.reason
    assert src.problem.offset == 24 + len(frames) * 216


def test_gzip_crc_error_is_a_problem(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(make_pcap(PACKETS)))
    compressed[-8] ^= 0xFF  # CRC32 of the member
    src, frames = read_all(write(tmp_path / "crc.pcap.gz", bytes(compressed)))
    assert len(frames) == len(PACKETS)
    assert src.problem is not None
    assert "CRC check failed" in src.problem.reason


def test_gzip_not_a_capture(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
        FileSource(write(tmp_path / "log.gz", gzip.compress(b"hello world\n" * 10)), 0)
    with pytest.raises(CaptureError, match="cannot read file header"):
        FileSource(write(tmp_path / "bad.gz", b"\x1f\x8b" + bytes(30)), 0)


# ---------------------------------------------------------------------------------------------
# Several files


def test_merge_in_time_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.pcap", make_pcap([(T0, 0, b"a1"), (T0 + 2, 0, b"a2"), (T0 + 4, 0, b"a3")]))
    b_data = ng_shb() + ng_idb(LINKTYPE_RAW, name="tap1")
    b_data += b"".join(ng_epb(0, (T0 + s) * 10**6, tag) for s, tag in [(1, b"b1"), (2, b"b2"), (5, b"b3")])
    b = write(tmp_path / "b.pcapng", b_data)
    replay = ReplaySource([a, b])
    frames = list(replay)
    assert [(f[1], f[5], f[6]) for f in frames] == [
        (b"a1", 1, 0),
        (b"b1", 1, 1),
        (b"a2", 2, 0),  # equal timestamps: the earlier file first
        (b"b2", 2, 1),
        (b"a3", 3, 0),
        (b"b3", 3, 1),
    ]
    assert [s.name for s in replay.sources] == [a, b]
    assert replay.sources[1].interfaces == ["tap1"]
    assert [f.info for f in replay.files] == replay.sources
    assert replay.packets == 6
    assert replay.problems == []


def test_merge_collects_problems(tmp_path: Path) -> None:
    good = write(tmp_path / "good.pcap", make_pcap(PACKETS))
    bad = write(tmp_path / "bad.pcap", make_pcap(PACKETS)[:-1])
    with ReplaySource([good, bad]) as replay:
        frames = list(replay)
    assert len(frames) == 5
    assert [p.source for p in replay.problems] == [bad]
    assert replay.packets == 5


def test_single_file_is_iterated_directly(tmp_path: Path) -> None:
    replay = ReplaySource([write(tmp_path / "a.pcap", make_pcap(PACKETS))])
    assert iter(replay) is iter(replay.files[0])
    assert len(list(replay)) == 3


def test_replay_open_errors_propagate(tmp_path: Path) -> None:
    good = write(tmp_path / "good.pcap", make_pcap(PACKETS))
    with pytest.raises(CaptureError, match="empty file"):
        ReplaySource([good, write(tmp_path / "empty.pcap", b"")])
    with pytest.raises(CaptureError):
        ReplaySource([])


def test_expand_paths(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    files = {
        "d/b.pcap": make_pcap(PACKETS),
        "d/a.pcapng": two_section_pcapng()[0],
        "d/sub/c.cap.gz": gzip.compress(make_pcap(PACKETS, nano=True)),
        "d/README.txt": b"not a capture",
        "d/notes.gz": gzip.compress(b"not a capture either"),
        "d/tiny": b"\xd4",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    explicit = str(tmp_path / "d" / "README.txt")
    got = expand_paths([str(tmp_path / "d"), explicit])
    d = str(tmp_path / "d")
    assert got == [
        os.path.join(d, "a.pcapng"),
        os.path.join(d, "b.pcap"),
        os.path.join(d, "sub", "c.cap.gz"),
        explicit,
    ]
    replay = ReplaySource([d])
    assert len(list(replay)) == 12
    assert [s.kind for s in replay.sources] == ["pcapng", "pcap", "pcap"]


def test_expand_paths_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no capture files"):
        expand_paths([str(tmp_path)])
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CaptureError, match="no capture files"):
        ReplaySource([str(tmp_path)])


def test_close_stops_iteration(tmp_path: Path) -> None:
    src = FileSource(write(tmp_path / "a.pcap", make_pcap(PACKETS)), 0)
    it = iter(src)
    next(it)
    src.close()
    assert list(it) == []
    assert src.packets == 1


# ---------------------------------------------------------------------------------------------
# scapy as an independent writer


def test_scapy_written_captures(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter, PcapWriter

    pkts = []
    for i in range(5):
        pkt = Ether() / IP(dst="10.0.0.1") / UDP(dport=502) / (b"x" * i)
        pkt.time = T0 + i * 0.25
        pkts.append(pkt)
    for name, writer in [("s.pcap", PcapWriter), ("s.pcapng", PcapNgWriter)]:
        path = str(tmp_path / name)
        w = writer(path)  # link type taken from the first packet
        w.write(pkts)
        w.close()
        src, frames = read_all(path)
        assert src.problem is None
        assert [f[1] for f in frames] == [bytes(p) for p in pkts]
        assert [f[0] for f in frames] == pytest.approx([float(p.time) for p in pkts], abs=1e-6)
        assert {f[4] for f in frames} == {LINKTYPE_ETHERNET}


# ---------------------------------------------------------------------------------------------
# Robustness: any damage is a CaptureError from the constructor or a problem, never an exception


def _valid_samples() -> list[bytes]:
    pcap = make_pcap([(T0 + i, i, frame_bytes(i, 20 + i)) for i in range(6)], order=">", nano=True)
    return [pcap, two_section_pcapng()[0]]


SAMPLES = _valid_samples()


def _mutate(data: bytes, edits: list[tuple[int, int]], keep: float) -> bytes:
    buf = bytearray(data)
    for index, value in edits:
        buf[index % len(buf)] = value
    return bytes(buf[: int(len(buf) * keep)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(range(len(SAMPLES))),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    keep=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
    compress=st.sampled_from(["no", "before", "after"]),
    chunk_size=st.sampled_from([16, 50, 4 << 20]),
)
def test_damaged_captures_never_raise(
    sample: int, edits: list[tuple[int, int]], keep: float, compress: str, chunk_size: int
) -> None:
    data = SAMPLES[sample]
    if compress == "before":  # damage the compressed stream itself
        data = _mutate(gzip.compress(data), edits, keep)
    else:
        data = _mutate(data, edits, keep)
        if compress == "after":
            data = gzip.compress(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz")
        Path(path).write_bytes(data)
        try:
            src = FileSource(path, 0, chunk_size)
        except CaptureError:
            event("refused by the constructor")
            return
        with src:
            frames = list(src)
        assert src.packets == len(frames)
        for n, frame in enumerate(frames, 1):
            ts, payload, _, iface, _, count, source = frame
            assert isinstance(ts, float)
            assert isinstance(payload, bytes)
            assert (count, source) == (n, 0)
            assert 0 <= iface < len(src.info.interfaces)
        if src.problem is not None:
            assert src.problem.packets_read == len(frames)
        event("read with a problem" if src.problem else "read to the end")


# ---------------------------------------------------------------------------------------------
# Real captures


def corpus_dir() -> Path:
    override = os.environ.get("CONDUITWATCH_CORPUS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


# tshark's encapsulation names in INVENTORY.tsv -> LINKTYPE_* numbers.
TSHARK_LINKTYPES = {"ether": LINKTYPE_ETHERNET, "linux-sll": LINKTYPE_LINUX_SLL, "null": LINKTYPE_NULL}
TSHARK_LINKTYPES["rawip4"] = LINKTYPE_IPV4


def corpus_rows() -> Iterator[dict[str, str]]:
    with open(corpus_dir() / "INVENTORY.tsv", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t")


@pytest.mark.corpus
def test_corpus_packet_counts() -> None:
    """Every corpus capture gives tshark's packet count (reading all ~550 files takes a second)."""
    if not (corpus_dir() / "INVENTORY.tsv").is_file():
        pytest.skip(f"no corpus at {corpus_dir()}")
    mismatches = []
    for row in corpus_rows():
        src, frames = read_all(str(corpus_dir() / "pcaps" / row["path"]))
        expected_linktype = TSHARK_LINKTYPES.get(row["linktype"])
        linktypes = {f[4] for f in frames}
        if len(frames) != int(row["packets"]) or (
            expected_linktype is not None and linktypes != {expected_linktype}
        ):
            mismatches.append((row["path"], len(frames), row["packets"], linktypes, src.problem))
    assert mismatches == []


# ---------------------------------------------------------------------------------------------
# Memory-mapped reading, a window at a time


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_mapped_windows_read_the_same_frames_as_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import agent.capture.files as files

    monkeypatch.setattr(files, "MAP_WINDOW", 300)  # many windows, records straddling their ends
    sizes = [60, 1514, 42, 200, 999, 64] * 20
    if kind == "pcap":
        data = make_pcap([(T0 + i, i, frame_bytes(i, n)) for i, n in enumerate(sizes)])
    else:
        data = (
            ng_shb()
            + ng_idb(1)
            + b"".join(ng_epb(0, (T0 + i) * 10**6, frame_bytes(i, n)) for i, n in enumerate(sizes))
        )
    path = write(tmp_path / f"c.{kind}", data + b"\x00" * 5)  # and a truncated tail
    mapped = FileSource(path, 0)
    chunked = FileSource(path, 0, chunk_size=1000, use_mmap=False)
    assert mapped._map is not None and chunked._map is None
    assert list(mapped) == list(chunked) and len(list(FileSource(path, 0, use_mmap=False))) == len(sizes)
    assert mapped.problem is not None and chunked.problem is not None
    assert (mapped.problem.offset, mapped.problem.packets_read) == (
        chunked.problem.offset,
        chunked.problem.packets_read,
    )
    assert mapped._released > 0  # pages already parsed were handed back
