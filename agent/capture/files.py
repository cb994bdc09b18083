"""Offline capture readers: classic pcap and pcapng files, optionally gzip-compressed.

The per-packet path parses plain bytes with precompiled ``struct`` unpackers: the pipeline must
sustain 250,000 packets/s on one core, and readers that issue file reads per record (scapy's
RawPcapReader: about a third of the speed measured here) or build objects per packet would eat
most of that budget. Files are read in large chunks (4 MiB by default) and records are sliced out
of the chunk; a record that straddles a chunk boundary is carried over to the next chunk. Memory
therefore stays bounded by the chunk size plus one record, whatever the size of the capture.

Bad data never raises once a file is open: reading stops at the first record that cannot be
trusted and the reason is kept in ``FileSource.problem`` for the pipeline to report.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import io
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from operator import itemgetter
from types import TracebackType
from typing import Any, NamedTuple

from agent.capture.base import CaptureError
from agent.records import F_TS, CaptureProblem, Frame, SourceInfo

CHUNK_SIZE = 4 << 20
MAP_WINDOW = 16 << 20  # bytes of a memory-mapped file parsed between releases of its pages
# Largest record accepted without question: libpcap's and Wireshark's maximum snapshot length. A
# file that declares a larger snaplen raises the limit up to MAX_RECORD; anything beyond is taken
# for a corrupt length rather than a packet (and would otherwise make us buffer gigabytes).
MAX_CAPLEN = 262144
MAX_RECORD = 16 << 20  # also the largest pcapng block we accept
# When many files are merged every one holds a chunk at once: share this budget between them.
MERGE_BUFFER_BUDGET = 256 << 20
MIN_CHUNK_SIZE = 64 << 10

GZIP_MAGIC = b"\x1f\x8b"
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"  # SHB block type: a palindrome, so the same in both byte orders
# Classic pcap magic as it appears in the file -> (struct byte order, timestamp fraction units).
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
CAPTURE_MAGICS = frozenset({PCAPNG_MAGIC, *PCAP_MAGICS})
# libpcap's LT_LINKTYPE(): the upper bits of the header's network field carry FCS information.
LINKTYPE_MASK = 0x03FFFFFF

PCAP_HEADER_LEN = 24
PCAP_RECORD_HEADER_LEN = 16
SHB_FIXED_LEN = 24  # type, length, byte-order magic, version, section length
SHB_MIN_LEN = 28

BT_IDB = 1
BT_PB = 2  # obsolete Packet Block
BT_SPB = 3
BT_EPB = 6
BT_SHB = 0x0A0D0D0A
BOM_LE = b"\x4d\x3c\x2b\x1a"
BOM_BE = b"\x1a\x2b\x3c\x4d"
OPT_ENDOFOPT = 0
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

# Errors a read can raise: I/O errors, and for gzip a truncated stream (EOFError), a bad header
# or CRC (gzip.BadGzipFile, an OSError) and corrupt deflate data (zlib.error).
READ_ERRORS = (OSError, EOFError, zlib.error)

# What the parsers read from: a chunk of the file, or the whole file memory-mapped.
Buffer = bytes | mmap.mmap
Unpack = Callable[[Buffer, int], tuple[Any, ...]]


class _Layout(NamedTuple):
    """Bound ``unpack_from`` methods for one pcapng byte order (a new section may switch order)."""

    # type, length and the five fixed EPB fields (interface, ts high, ts low, caplen, wire length):
    # one call reads everything an Enhanced Packet Block needs, the common case.
    block: Unpack
    u32: Unpack
    pb: Unpack  # obsolete Packet Block: interface (u16), drops (u16), ts high, ts low, caplen, wire len
    idb: Unpack  # link type, reserved, snaplen
    option: Unpack  # option code, option length
    i64: Unpack
    version: Unpack  # major, minor

    @classmethod
    def of(cls, order: str) -> _Layout:
        return cls(
            *(
                struct.Struct(order + fmt).unpack_from
                for fmt in ("IIIIIII", "I", "HHIIII", "HxxI", "HH", "q", "HH")
            )
        )


LITTLE = _Layout.of("<")
BIG = _Layout.of(">")
BLOCK_PEEK = 28  # bytes _Layout.block reads
EOF_PAD = bytes(BLOCK_PEEK)

# Per-interface state of a pcapng section: global interface index, link type, timestamp divisor,
# timestamp offset (seconds), snaplen (0 = none), record length limit.
Interface = tuple[int, int, float, int, int, int]


def _record_limit(snaplen: int) -> int:
    return min(max(MAX_CAPLEN, snaplen), MAX_RECORD)


def _shb_problem(buf: Buffer, pos: int, blen: int, layout: _Layout) -> str | None:
    """What is wrong with the Section Header Block at ``pos`` (its fixed part is in ``buf``)."""
    if blen < SHB_MIN_LEN or blen & 3 or blen > MAX_RECORD:
        return f"corrupt section header block length {blen}"
    major, minor = layout.version(buf, pos + 12)
    if major != 1:
        return f"unsupported pcapng version {major}.{minor}"
    return None


def _parse_idb(buf: Buffer, pos: int, blen: int, layout: _Layout, index: int) -> tuple[Interface, str]:
    """Decode an Interface Description Block into its ``Interface`` tuple and its name.

    Malformed options are ignored rather than fatal: the fixed fields are enough to read packets.
    The timestamp divisor is a float: packet timestamps are then computed in float arithmetic,
    which is exact for microsecond units and within a nanosecond for finer ones, and 30% faster
    than dividing 64-bit ints.
    """
    linktype, snaplen = layout.idb(buf, pos + 8)
    name = f"if{index}"
    divisor = 1e6  # default if_tsresol: microseconds
    offset = 0
    opt = pos + 16
    opts_end = pos + blen - 4
    while opt + 4 <= opts_end:
        code, olen = layout.option(buf, opt)
        value = opt + 4
        if code == OPT_ENDOFOPT or value + olen > opts_end:
            break
        if code == OPT_IF_NAME and olen:
            name = buf[value : value + olen].rstrip(b"\0").decode("utf-8", "replace") or name
        elif code == OPT_IF_TSRESOL and olen >= 1:
            resol = buf[value]
            divisor = float(1 << (resol & 0x7F) if resol & 0x80 else 10**resol)
        elif code == OPT_IF_TSOFFSET and olen >= 8:
            offset = layout.i64(buf, value)[0]
        opt = value + ((olen + 3) & ~3)
    return (index, linktype, divisor, offset, snaplen, _record_limit(snaplen)), name


def _nothing_more(_size: int) -> bytes:
    """The chunk reader of a memory-mapped file: the map already holds everything."""
    return b""


def _open(path: str) -> tuple[io.FileIO | gzip.GzipFile, Callable[[int], bytes]]:
    """Open ``path`` for binary reading, through gzip when its content starts with the gzip magic.

    Returns the file and the function that reads the next chunk. For gzip that is read1: a
    decompression error inside read() loses everything that call had already decompressed.
    """
    try:
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 - owned and closed by FileSource
        compressed = raw.read(2) == GZIP_MAGIC
    except OSError as e:
        raise CaptureError(path, None, f"cannot open file ({e.strerror or e})") from e
    if not compressed:
        raw.seek(0)
        return raw, raw.read
    raw.close()
    try:
        unzipped = gzip.GzipFile(path, "rb")
    except OSError as e:
        raise CaptureError(path, None, f"cannot open file ({e.strerror or e})") from e
    return unzipped, unzipped.read1


class FileSource:
    """One capture file (pcap or pcapng, plain or gzip-compressed), yielding ``Frame`` tuples.

    The constructor validates the file header and raises ``CaptureError`` when the file cannot be
    read as a capture at all. Iteration never raises on bad data: it stops and sets ``problem``.
    ``info.interfaces`` is filled for pcapng as its Interface Description Blocks are read; the
    interface index of a frame is the position in that list, counted across all sections of the
    file (so it equals the pcapng interface id within the first section).
    """

    def __init__(
        self, path: str, source_index: int, chunk_size: int = CHUNK_SIZE, use_mmap: bool = True
    ) -> None:
        """Open ``path`` and check its file header (``chunk_size``: bytes read at a time).

        An uncompressed regular file is memory-mapped: the parsers then run over the whole file as
        one buffer, which saves the allocation and page faults of a fresh chunk every 4 MiB (half
        the cost of reading a capture of full-size frames). Compressed files, pipes and files that
        cannot be mapped are read in chunks.
        """
        self.info = SourceInfo(name=path, kind="pcap")
        self.problem: CaptureProblem | None = None
        self.packets = 0
        self._path = path
        self._source_index = source_index
        self._chunk_size = max(chunk_size, PCAP_RECORD_HEADER_LEN)
        self._iterator: Generator[Frame, None, None] | None = None
        self._file, self._read = _open(path)
        self._map: mmap.mmap | None = None
        self._released = 0  # mapped bytes before this offset have been handed back (see _release)
        try:
            self._head = self._read_header()
        except BaseException:
            self._file.close()
            raise
        if use_mmap and isinstance(self._file, io.FileIO):
            try:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self._map.madvise(mmap.MADV_SEQUENTIAL)
            except (OSError, ValueError):
                self._map = None  # not a regular file (a pipe, /dev/stdin): chunked reads it is
            else:
                self._read = _nothing_more  # the map holds the whole file

    def _read_exact(self, size: int, what: str) -> bytes:
        data = b""
        try:
            while len(data) < size:
                more = self._read(size - len(data))
                if not more:
                    break
                data += more
        except READ_ERRORS as e:
            raise CaptureError(self._path, len(data), f"cannot read {what} ({e})") from e
        return data

    def _read_header(self) -> bytes:
        """Read and check the file header; returns the bytes the reader starts from."""
        path = self._path
        head = self._read_exact(SHB_FIXED_LEN, "file header")
        if not head:
            raise CaptureError(path, None, "empty file")
        magic = head[:4]
        known = any(m.startswith(magic) for m in CAPTURE_MAGICS)
        if not known:
            raise CaptureError(path, 0, f"not a pcap or pcapng file (starts with 0x{magic.hex()})")
        if len(head) < SHB_FIXED_LEN:
            raise CaptureError(path, 0, f"truncated file header ({len(head)} of {SHB_FIXED_LEN} bytes)")
        if magic == PCAPNG_MAGIC:
            return self._check_section_header(head)
        order, units = PCAP_MAGICS[magic]
        major, minor, _, _, snaplen, network = struct.unpack(order + "HHiIII", head[4:])
        if major != 2:
            raise CaptureError(path, 4, f"unsupported pcap version {major}.{minor}")
        self._record = struct.Struct(order + "IIII")
        self._units = float(units)
        self._linktype = network & LINKTYPE_MASK
        self._limit = _record_limit(snaplen)
        self.info.interfaces.append("if0")
        return b""

    def _check_section_header(self, head: bytes) -> bytes:
        """Validate the leading Section Header Block; returns it whole (the reader re-reads it)."""
        self.info.kind = "pcapng"
        bom = head[8:12]
        if bom not in (BOM_LE, BOM_BE):
            raise CaptureError(self._path, 8, f"invalid pcapng byte-order magic 0x{bom.hex()}")
        layout = LITTLE if bom == BOM_LE else BIG
        blen = layout.u32(head, 4)[0]
        reason = _shb_problem(head, 0, blen, layout)
        if reason:
            raise CaptureError(self._path, 0, reason)
        block = head + self._read_exact(blen - len(head), "section header block")
        if len(block) < blen:
            raise CaptureError(
                self._path, 0, f"truncated section header block ({len(block)} of {blen} bytes)"
            )
        trailer = layout.u32(block, blen - 4)[0]
        if trailer != blen:
            raise CaptureError(
                self._path,
                0,
                f"section header trailing length {trailer} does not match leading length {blen}",
            )
        return block

    def __iter__(self) -> Iterator[Frame]:
        # Like a file object: one pass; iterating again continues where the last pass stopped.
        if self._iterator is None:
            reader = self._read_pcapng if self.info.kind == "pcapng" else self._read_pcap
            self._iterator = reader()
        return self._iterator

    def _release(self, pos: int) -> None:
        """Drop the mapped pages before ``pos`` from this process: they stay in the page cache, but
        no longer count against the agent's memory (a 1 GB capture would otherwise end up resident)."""
        start = self._released
        stop = pos - pos % mmap.PAGESIZE
        if self._map is not None and stop > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)
            self._released = stop

    def close(self) -> None:
        if self._iterator is not None:
            self._iterator.close()
        if self._map is not None:
            # BufferError: something still references the map; it is released when that goes.
            with contextlib.suppress(BufferError):
                self._map.close()
        self._file.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _stop(self, offset: int, reason: str, packets: int) -> None:
        self.problem = CaptureProblem(self._path, offset, reason, packets)

    def _read_pcap(self) -> Generator[Frame, None, None]:
        unpack = self._record.unpack_from
        scale = 1.0 / self._units
        linktype = self._linktype
        limit = self._limit
        source = self._source_index
        read = self._read
        chunk_size = self._chunk_size
        header_len = PCAP_RECORD_HEADER_LEN
        buf: Buffer = self._head
        base = PCAP_HEADER_LEN  # stream offset of buf[0]
        pos = 0
        mapped = self._map is not None
        if self._map is not None:
            buf, base, pos = self._map, 0, PCAP_HEADER_LEN
        end = len(buf)
        count = 0
        eof = False
        try:
            while True:
                want = -1  # length of the incomplete record at pos, -1 while its header is incomplete
                last = end - header_len
                if mapped and last - pos > MAP_WINDOW:
                    last = pos + MAP_WINDOW  # a window at a time, releasing the pages read (below)
                while pos <= last:
                    sec, frac, caplen, wirelen = unpack(buf, pos)
                    if caplen > limit:
                        self._stop(base + pos, f"corrupt record length {caplen} (limit {limit})", count)
                        return
                    start = pos + header_len
                    nxt = start + caplen
                    if nxt > end:
                        want = caplen
                        break
                    count += 1
                    yield (sec + frac * scale, buf[start:nxt], wirelen, 0, linktype, count, source)
                    pos = nxt
                self.packets = count  # per window or chunk, not per packet: it is read at the end
                if mapped and want < 0 and pos <= end - header_len:
                    self._release(pos)
                    continue
                if eof:
                    if pos < end:
                        if want < 0:
                            reason = f"truncated packet record header ({end - pos} of {header_len} bytes)"
                        else:
                            remain = end - pos - header_len
                            reason = f"truncated packet record (header says {want} bytes, {remain} remain)"
                        self._stop(base + pos, reason, count)
                    return
                rest = buf[pos:]
                base += pos
                pos = 0
                try:
                    # A record longer than a chunk is completed in one read, not chunk by chunk.
                    data = read(max(chunk_size, header_len + want - len(rest)))
                except READ_ERRORS as e:
                    self._stop(base, f"read error ({e})", count)
                    return
                eof = not data
                buf = rest + data if rest else data
                end = len(buf)
        finally:
            self.packets = count
            # Release the descriptor as soon as the file is done: a merge may hold many files.
            self._file.close()

    def _read_pcapng(self) -> Generator[Frame, None, None]:
        source = self._source_index
        names = self.info.interfaces
        read = self._read
        chunk_size = self._chunk_size
        layout = LITTLE
        block, u32, pb_fields = layout.block, layout.u32, layout.pb
        # Module constants as locals: the loop runs once per packet.
        shb_type, epb_type, pb_type, idb_type, spb_type = BT_SHB, BT_EPB, BT_PB, BT_IDB, BT_SPB
        max_block = MAX_RECORD
        section: list[Interface] = []  # this section's interfaces by pcapng interface id
        last_ts = 0.0  # Simple Packet Blocks carry no timestamp: they get the previous packet's
        buf: Buffer = self._map if self._map is not None else self._head
        end = len(buf)  # end of the data in buf (buf is padded past it at end of file)
        last = end - BLOCK_PEEK  # the loop reads a block while pos <= last
        mapped = self._map is not None
        base = 0  # stream offset of buf[0]
        pos = 0
        count = 0
        eof = False
        try:
            while True:
                want = -1  # length of the incomplete block at pos, -1 while its header is incomplete
                stop = min(last, pos + MAP_WINDOW) if mapped else last
                while pos <= stop:
                    btype, blen, iface_id, ts_high, ts_low, caplen, wirelen = block(buf, pos)
                    if btype == shb_type:
                        # A new section may switch byte order: decide it before trusting the length.
                        if pos + 12 > end:
                            break
                        bom = buf[pos + 8 : pos + 12]
                        if bom != BOM_LE and bom != BOM_BE:
                            self._stop(base + pos, f"invalid pcapng byte-order magic 0x{bom.hex()}", count)
                            return
                        layout = LITTLE if bom == BOM_LE else BIG
                        block, u32, pb_fields = layout.block, layout.u32, layout.pb
                        blen = u32(buf, pos + 4)[0]
                    if blen < 12 or blen & 3 or blen > max_block:
                        self._stop(base + pos, f"corrupt block length {blen}", count)
                        return
                    nxt = pos + blen
                    if nxt > end:
                        want = blen
                        break
                    if u32(buf, nxt - 4)[0] != blen:
                        trailer = u32(buf, nxt - 4)[0]
                        self._stop(
                            base + pos,
                            f"block trailing length {trailer} does not match leading length {blen}",
                            count,
                        )
                        return
                    if btype == epb_type or btype == pb_type:
                        if blen < 32:
                            self._stop(base + pos, f"packet block too short ({blen} bytes)", count)
                            return
                        if btype == pb_type:
                            iface_id, _, ts_high, ts_low, caplen, wirelen = pb_fields(buf, pos + 8)
                        if iface_id >= len(section):
                            self._stop(base + pos, f"packet names undefined interface {iface_id}", count)
                            return
                        index, linktype, divisor, ts_offset, _, limit = section[iface_id]
                        if caplen > blen - 32 or caplen > limit:
                            self._stop(
                                base + pos, f"corrupt packet length {caplen} in {blen}-byte block", count
                            )
                            return
                        last_ts = (ts_high * 4294967296.0 + ts_low) / divisor + ts_offset
                        count += 1
                        self.packets = count
                        start = pos + 28
                        yield (last_ts, buf[start : start + caplen], wirelen, index, linktype, count, source)
                    elif btype == idb_type:
                        if blen < 20:
                            self._stop(
                                base + pos, f"interface description block too short ({blen} bytes)", count
                            )
                            return
                        iface, name = _parse_idb(buf, pos, blen, layout, len(names))
                        section.append(iface)
                        names.append(name)
                    elif btype == spb_type:
                        if blen < 16 or not section:
                            where = "before any interface" if blen >= 16 else f"too short ({blen} bytes)"
                            self._stop(base + pos, f"simple packet block {where}", count)
                            return
                        index, linktype, _, _, snaplen, _ = section[0]
                        wirelen = u32(buf, pos + 8)[0]
                        # The block holds min(wire length, snaplen) bytes plus padding.
                        caplen = min(wirelen, blen - 16)
                        if snaplen:
                            caplen = min(caplen, snaplen)
                        count += 1
                        self.packets = count
                        start = pos + 12
                        yield (last_ts, buf[start : start + caplen], wirelen, index, linktype, count, source)
                    elif btype == shb_type:
                        shb_reason = _shb_problem(buf, pos, blen, layout)
                        if shb_reason:
                            self._stop(base + pos, shb_reason, count)
                            return
                        section = []
                    pos = nxt
                if mapped and want < 0 and pos <= last:
                    self._release(pos)
                    continue
                if eof:
                    if pos < end:
                        if want < 0:
                            reason = f"truncated block header ({end - pos} bytes)"
                        else:
                            reason = f"truncated block (header says {want} bytes, {end - pos} remain)"
                        self._stop(base + pos, reason, count)
                    return
                rest = buf[pos:end]
                base += pos
                pos = 0
                # From here buf is a copy, not the map: nothing to release, and a block the loop
                # stops short of (a section header too short for its byte-order magic) must end the
                # file below rather than send the loop round again.
                mapped = False
                try:
                    # A block longer than a chunk is completed in one read, not chunk by chunk.
                    data = read(max(chunk_size, want - len(rest)))
                except READ_ERRORS as e:
                    self._stop(base, f"read error ({e})", count)
                    return
                if data:
                    buf = rest + data if rest else data
                    end = len(buf)
                    last = end - BLOCK_PEEK
                else:
                    # The loop reads BLOCK_PEEK bytes at a time: pad so that the last blocks, which
                    # may be shorter, can still be read, and stop at 8 real bytes (a block header).
                    eof = True
                    end = len(rest)
                    buf = rest + EOF_PAD
                    last = end - 8
        finally:
            self._file.close()


def _is_capture(path: str) -> bool:
    """Whether ``path`` starts like a capture, looking inside gzip files (skips e.g. log archives)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a failed open is not a verdict
    except OSError:
        return True  # keep it: opening it again reports why it cannot be read
    with f:
        try:
            magic = f.read(4)
            if magic[:2] == GZIP_MAGIC:
                f.seek(0)
                with gzip.GzipFile(fileobj=f, mode="rb") as unzipped:
                    magic = unzipped.read(4)
        except READ_ERRORS:
            return False
    return magic in CAPTURE_MAGICS


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Replace each directory by the capture files below it (recursively, sorted by path).

    Files in a directory that do not start with a pcap, pcapng or gzip-compressed capture magic are
    skipped (a gzip file counts only if its content starts like a capture); files that cannot be
    opened are kept, as are paths named explicitly, so that the reason is reported when opened.
    """
    expanded: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            expanded.append(path)
            continue
        found = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
        captures = [p for p in found if os.path.isfile(p) and _is_capture(p)]
        if not captures:
            raise CaptureError(path, None, "directory holds no capture files")
        expanded.extend(captures)
    return expanded


class ReplaySource:
    """Several capture files read as one stream, merged in timestamp order.

    Frames with equal timestamps keep file order (heapq.merge is stable), and within one file the
    file's own order is kept even where its timestamps go backwards. Every file stays open while
    the merge runs (one descriptor each), and their chunks share MERGE_BUFFER_BUDGET.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        expanded = expand_paths(paths)
        if not expanded:
            raise CaptureError("", None, "no capture files given")
        chunk_size = max(MIN_CHUNK_SIZE, min(CHUNK_SIZE, MERGE_BUFFER_BUDGET // len(expanded)))
        self.files: list[FileSource] = []
        try:
            for index, path in enumerate(expanded):
                self.files.append(FileSource(path, index, chunk_size))
        except BaseException:
            self.close()
            raise
        self.sources: list[SourceInfo] = [f.info for f in self.files]

    def __iter__(self) -> Iterator[Frame]:
        if len(self.files) == 1:
            return iter(self.files[0])
        return heapq.merge(*self.files, key=itemgetter(F_TS))

    @property
    def problems(self) -> list[CaptureProblem]:
        return [f.problem for f in self.files if f.problem is not None]

    @property
    def packets(self) -> int:
        return sum(f.packets for f in self.files)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
