"""Live capture from a network interface: a TPACKET_V3 mmap ring on an AF_PACKET socket.

Why not scapy's ``sniff()``: it builds a scapy packet per frame and drops about half of the traffic at
10 k packets/s. A TPACKET_V3 ring read in pure Python keeps up with ~0.4 M packets/s without drops: the
kernel writes whole blocks of packets into memory we share with it, so there is one ``poll()`` per block
(not one system call per packet) and per packet we only unpack one header and copy the frame out
(``bench/live_capture.py --drain`` empties a filled ring at 0.7-0.9 M frames/s on a 2-CPU VM). If the
ring cannot be set up (old kernel, no memory for it; or ``ring_blocks=0``) we fall back to one
``recvmsg()`` per packet with a large receive buffer: several times slower, because each packet costs a
system call and two control messages (kernel timestamp, and aux data for the wire length and VLAN tag).

PASSIVE BY CONSTRUCTION. This module never transmits: it calls no send/sendto/sendmsg/sendall and never
writes to the socket or the ring's TX side (we do not even set up a TX ring). A packet socket cannot be
made receive-only (``shutdown(SHUT_WR)`` is not implemented for AF_PACKET), so the guarantee is that no
code path sends; ``tests/capture/test_live.py`` walks the whole ``agent`` package and fails on any send
call. The interface is never reconfigured: promiscuous mode is a socket *membership*
(``PACKET_ADD_MEMBERSHIP``) that the kernel undoes when the socket closes, and the only ioctl used is a
read (``SIOCGIFHWADDR``, to learn the link type).

Only packets *received* on the interface are reported. Frames the host itself transmits on it are
delivered to packet sockets too (as ``PACKET_OUTGOING``); we drop them three times over: the kernel is
asked not to deliver them (``PACKET_IGNORE_OUTGOING``, Linux >= 4.20), a two-instruction BPF prefix
rejects them before they take ring space (older kernels), and the reader skips any that still arrive.
Everything seen on a mirror port arrives as HOST/OTHERHOST/BROADCAST/MULTICAST and is kept.

VLAN tags: the kernel strips the outer 802.1Q/802.1ad tag from every received frame before packet
sockets see it and reports it beside the packet; like libpcap we put it back into the frame, so
frames look as they did on the wire. The consequence for BPF filters is libpcap's on Linux too: the
kernel runs the filter on the frame *without* its outer tag, so write ``udp port 502`` (which then
matches tagged and untagged traffic alike), not ``vlan and udp port 502``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import mmap
import select
import socket
import struct
from collections.abc import Iterator
from typing import Any

from agent.capture.base import CaptureError
from agent.records import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    CaptureProblem,
    Frame,
    SourceInfo,
)

log = logging.getLogger(__name__)

# --- Linux ABI constants (linux/if_packet.h, linux/if_ether.h, asm-generic/socket.h, linux/filter.h).
# Python's socket module does not export most of them.
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS
SIOCGIFHWADDR = 0x8927

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_8021Q = 0x8100

ARPHRD_ETHER = 1
ARPHRD_RAWIP = 519
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE

# Classic BPF opcodes for the prefix we put in front of every filter.
_BPF_LD_W_ABS = 0x20
_BPF_LD_IMM = 0x00
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_SKF_AD_PKTTYPE = (-0x1000 + 4) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_PKTTYPE: ancillary load of pkt_type
_BPF_MAXINSNS = 4096

# --- Ring geometry.
FRAME_SIZE = 2048  # TPACKET_V3 packs packets back to back; this only sets tp_frame_nr's unit
RETIRE_TIMEOUT_MS = 64  # the kernel hands over a partly filled block after this long: bounds latency
POLL_TIMEOUT_MS = 100  # how often the stop flag is checked while no traffic arrives
RCVBUF_BYTES = 64 << 20  # receive buffer for the recvmsg fallback
MAX_SNAPLEN = 262144

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 from offset 8:
# block_status, num_pkts, offset_to_first_pkt.
_BLOCK_HDR = struct.Struct("=III")
_BLOCK_STATUS_OFF = 8
_U32 = struct.Struct("=I")
# struct tpacket3_hdr (48 bytes, TPACKET_ALIGN'ed) followed by struct sockaddr_ll. We unpack only what we
# use: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status (6I, 0-23), tp_mac (H, 24), skip
# tp_net and hv1.tp_rxhash (6x), hv1.tp_vlan_tci (I, 32), hv1.tp_vlan_tpid (H, 36), skip the padding,
# sockaddr_ll's family/protocol/ifindex/hatype (20x), sll_pkttype (B, 58).
_TP3_HDR = struct.Struct("=6IH6xIH20xB")
_SLL_OFF = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
# sockaddr_ll from sll_protocol: protocol (network order, kept as bytes), ifindex, hatype, pkttype,
# halen, addr[8].
_SOCKADDR_LL = struct.Struct("=2siHBB8s")
_TPACKET_REQ3 = struct.Struct("=7I")
_PACKET_MREQ = struct.Struct("=iHH8s")
_IFREQ_HWADDR = struct.Struct("=16sH14x")
_TPACKET_STATS_V3 = struct.Struct("=III")
_TPACKET_STATS = struct.Struct("=II")
_TPACKET_AUXDATA = struct.Struct("=IIIHHHH")
_TIMESPEC = struct.Struct("=qq")
_VLAN_TAG = struct.Struct(">HH")
_SLL_HDR = struct.Struct(">HHH8s")  # + 2 bytes of protocol = the 16-byte LINKTYPE_LINUX_SLL header
_SLL_HDR_LEN = 16
_SOCK_FILTER = struct.Struct("=HBBI")


class LiveCaptureError(CaptureError, ValueError):
    """A live capture cannot be started: no such interface, no permission, bad filter or parameters.

    It is a ``CaptureError`` so the CLI reports it like an unreadable file (one line, exit code 2);
    it is also a ``ValueError`` because it is about the caller's arguments. The message has no byte
    offset, which would be meaningless for an interface.
    """

    def __init__(self, source: str, reason: str) -> None:
        Exception.__init__(self, f"{source}: {reason}")
        self.source = source
        self.offset = 0
        self.reason = reason


def linktype_for_arphrd(arphrd: int) -> tuple[int, bool]:
    """Map the interface's ARPHRD_* type to (LINKTYPE_*, cooked).

    ``cooked`` means the link-layer header cannot be captured as is, so the socket is SOCK_DGRAM and
    every frame gets a synthesized 16-byte Linux "cooked" (SLL) header, as libpcap does.
    """
    if arphrd in (ARPHRD_ETHER, ARPHRD_LOOPBACK):  # loopback frames carry a (zero) Ethernet header
        return LINKTYPE_ETHERNET, False
    if arphrd in (ARPHRD_NONE, ARPHRD_RAWIP):  # tun, wireguard, rmnet: the frame starts with IP
        return LINKTYPE_RAW, False
    return LINKTYPE_LINUX_SLL, True


def compile_bpf(expression: str, linktype: int, source: str) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump filter expression to classic BPF instructions (code, jt, jf, k) via libpcap.

    scapy is the bridge to libpcap; it is imported only here because importing it takes about a second.
    A "dead" pcap handle of the right link type is used, so compiling needs no privilege and opens
    nothing.
    """
    try:
        from scapy.arch.common import compile_filter, free_filter
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise LiveCaptureError(source, f"cannot compile BPF filter {expression!r}: {exc}") from exc
    try:
        program: Any = compile_filter(expression, linktype=linktype)
    except ImportError as exc:  # scapy raises this when libpcap itself is missing
        raise LiveCaptureError(source, f"cannot compile BPF filter {expression!r}: {exc}") from exc
    except Exception as exc:  # scapy's Scapy_Exception carries libpcap's explanation
        detail = str(exc)
        # scapy says "Failed to compile filter expression '<expr>' (<libpcap's reason>)": we name the
        # expression ourselves, so keep only the reason.
        prefix = f"Failed to compile filter expression {expression!r} ("
        if detail.startswith(prefix) and detail.endswith(")"):
            detail = detail[len(prefix) : -1]
        raise LiveCaptureError(source, f"invalid BPF filter expression {expression!r}: {detail}") from exc
    try:
        count = int(program.bf_len)
        raw = ctypes.string_at(ctypes.addressof(program.bf_insns.contents), count * _SOCK_FILTER.size)
    finally:
        free_filter(program)
    return [_SOCK_FILTER.unpack_from(raw, i * _SOCK_FILTER.size) for i in range(count)]


def build_socket_filter(
    user_program: list[tuple[int, int, int, int]] | None, snaplen: int
) -> list[tuple[int, int, int, int]]:
    """The program attached to the socket: reject outgoing packets, then the user's filter.

    The user's accept values (``ret #k``, k > 0) are capped at ``snaplen`` so the kernel truncates
    frames before they take ring space. Jumps in classic BPF are relative, so prepending keeps the
    user's program valid; ``ld #0`` restores the accumulator the user's program may expect to be 0.
    """
    prefix = [
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE),
        (_BPF_JEQ_K, 0, 1, PACKET_OUTGOING),  # outgoing: fall into "ret #0"; else skip it
        (_BPF_RET_K, 0, 0, 0),
        (_BPF_LD_IMM, 0, 0, 0),
    ]
    if user_program is None:
        return [*prefix, (_BPF_RET_K, 0, 0, snaplen)]
    body = [
        (code, jt, jf, min(k, snaplen) if code == _BPF_RET_K and k else k) for code, jt, jf, k in user_program
    ]
    return prefix + body


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    insns = b"".join(_SOCK_FILTER.pack(*insn) for insn in program)
    buf = ctypes.create_string_buffer(insns, len(insns))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } with native alignment;
    # the kernel copies the instructions during the call, so ``buf`` only has to outlive it.
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class LiveSource:
    """Frames received on one network interface, read from a TPACKET_V3 ring (or recvmsg fallback).

    Iterate it to get ``Frame`` tuples; ``stop()`` (safe from a signal handler or another thread) ends
    the iteration within ``POLL_TIMEOUT_MS``. Call ``close()`` from the iterating thread once the
    iteration has ended (or use the source as a context manager). ``ring_blocks=0`` disables the ring.
    """

    def __init__(
        self,
        interface: str,
        source_index: int = 0,
        bpf: str | None = None,
        promisc: bool = True,
        snaplen: int = 65535,
        ring_blocks: int = 64,
        block_size: int = 1 << 20,
    ) -> None:
        self.interface = interface
        self.source_index = source_index
        self.bpf = bpf
        self.info = SourceInfo(name=interface, kind="live", interfaces=[interface])
        self.sources: list[SourceInfo] = [self.info]  # what agent.pipeline's Source protocol reads
        self.problem: CaptureProblem | None = None  # set when the interface disappears mid-capture
        self.mode = ""  # "tpacket_v3" or "recvmsg" once open
        self.ring_error: str | None = None  # why the ring could not be used, if it could not

        if not 0 < snaplen <= MAX_SNAPLEN:
            raise LiveCaptureError(interface, f"snaplen must be in 1..{MAX_SNAPLEN}, not {snaplen}")
        if ring_blocks < 0:
            raise LiveCaptureError(interface, f"ring_blocks must be >= 0, not {ring_blocks}")
        if ring_blocks and (block_size < FRAME_SIZE or block_size % mmap.PAGESIZE):
            raise LiveCaptureError(
                interface, f"block_size must be a multiple of {mmap.PAGESIZE} bytes, not {block_size}"
            )
        name_bytes = interface.encode()
        if not name_bytes or len(name_bytes) >= 16 or b"\0" in name_bytes or b"/" in name_bytes:
            raise LiveCaptureError(interface, "no such network interface")
        self._snaplen = snaplen
        self._ring_blocks = ring_blocks
        self._block_size = block_size

        self._stopped = False
        self._count = 0  # frames yielded so far: the last pcap_cnt
        self._outgoing = 0
        self._socket_errors = 0
        self._down = False  # the socket reported the interface down: watch for it disappearing
        self._k_packets = 0
        self._k_drops = 0
        self._k_freeze = 0
        # Where a ring iteration left off (block index, byte offset, packets left, block still ours), so
        # a new iterator resumes there instead of repeating or losing packets.
        self._cursor = (0, 0, 0, False)
        self._ifindex = 0
        self._sock: socket.socket | None = None
        self._ring: mmap.mmap | None = None
        self._poller: select.poll | None = None

        arphrd = self._read_arphrd(interface)
        self.linktype, self._cooked = linktype_for_arphrd(arphrd)
        # Where to put a VLAN tag back: after the MAC addresses, or after the SLL header's first 14 bytes.
        self._vlan_at = {LINKTYPE_ETHERNET: 12, LINKTYPE_LINUX_SLL: 14}.get(self.linktype, -1)
        # In cooked mode we prepend a 16-byte header, so the kernel keeps 16 bytes less of each packet.
        self._kernel_snaplen = max(1, snaplen - _SLL_HDR_LEN) if self._cooked else snaplen
        program = build_socket_filter(
            compile_bpf(bpf, self.linktype, interface) if bpf is not None else None, self._kernel_snaplen
        )
        if len(program) > _BPF_MAXINSNS:
            raise LiveCaptureError(interface, f"BPF filter {bpf!r} compiles to too many instructions")

        sock = self._new_socket(self._cooked)
        try:
            if ring_blocks:
                try:
                    self._ring = self._setup_ring(sock)
                    self.mode = "tpacket_v3"
                except OSError as exc:
                    # A socket whose ring set-up failed half way is in an unknown state: start afresh.
                    self.ring_error = f"{exc.strerror or exc}"
                    log.warning("%s: TPACKET_V3 ring unavailable (%s); using recvmsg", interface, exc)
                    sock.close()
                    sock = self._new_socket(self._cooked)
            if self._ring is None:
                self._setup_recv(sock)
                self.mode = "recvmsg"
            _attach_filter(sock, program)
            with contextlib.suppress(OSError):  # Linux < 4.20: the BPF prefix and the reader still drop them
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self._ifindex = socket.if_nametoindex(interface)
            if promisc:
                mreq = _PACKET_MREQ.pack(self._ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            # Binding with ETH_P_ALL is what starts delivery. Everything above was set up on a socket
            # opened with protocol 0, which receives nothing: so no packet from another interface, or
            # one that the filter would reject, can sit in the queue when capture starts.
            sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            self._release(sock)
            raise self._os_error(exc) from exc
        except BaseException:
            self._release(sock)
            raise
        self._sock = sock
        if self._ring is not None:
            self._poller = select.poll()
            self._poller.register(sock.fileno(), select.POLLIN | select.POLLERR)

    # --- set-up -------------------------------------------------------------------------------------

    def _os_error(self, exc: OSError) -> LiveCaptureError:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return LiveCaptureError(
                self.interface, "permission denied: live capture needs root or the CAP_NET_RAW capability"
            )
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            return LiveCaptureError(self.interface, "no such network interface")
        return LiveCaptureError(self.interface, f"cannot capture: {exc.strerror or exc}")

    def _new_socket(self, cooked: bool = False) -> socket.socket:
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        try:
            return socket.socket(socket.AF_PACKET, kind, 0)
        except OSError as exc:
            raise self._os_error(exc) from exc

    def _read_arphrd(self, interface: str) -> int:
        """The interface's ARPHRD_* type, asked of the kernel (so it is right in any network namespace)."""
        sock = self._new_socket()
        try:
            ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, _IFREQ_HWADDR.pack(interface.encode(), 0))
        except OSError as exc:
            raise self._os_error(exc) from exc
        finally:
            sock.close()
        family: int = _IFREQ_HWADDR.unpack(ifreq)[1]
        return family

    def _setup_ring(self, sock: socket.socket) -> mmap.mmap:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frames = self._block_size // FRAME_SIZE * self._ring_blocks
        req = _TPACKET_REQ3.pack(
            self._block_size, self._ring_blocks, FRAME_SIZE, frames, RETIRE_TIMEOUT_MS, 0, 0
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        # Python dup()s the descriptor for the mapping; close() unmaps before closing the socket.
        return mmap.mmap(
            sock.fileno(),
            self._block_size * self._ring_blocks,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )

    def _setup_recv(self, sock: socket.socket) -> None:
        try:  # root may exceed net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # kernel receive time, not ours
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # wire length and the stripped VLAN tag
        sock.settimeout(POLL_TIMEOUT_MS / 1000)

    # --- reading ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        if self._sock is None:
            return iter(())
        if self._ring is not None:
            return self._ring_frames(self._ring)
        return self._recv_frames(self._sock)

    def _ring_frames(self, ring: mmap.mmap) -> Iterator[Frame]:
        # Everything used per packet is a local: attribute look-ups cost more than the rest of the loop.
        hdr_from = _TP3_HDR.unpack_from
        block_from = _BLOCK_HDR.unpack_from
        set_status = _U32.pack_into
        assert self._poller is not None
        poll = self._poller.poll
        block_size = self._block_size
        n_blocks = self._ring_blocks
        linktype = self.linktype
        source = self.source_index
        cooked = self._cooked
        vlan_flag = TP_STATUS_VLAN_VALID
        block, pos, left, held = self._cursor
        cnt = self._count
        try:
            while not self._stopped:
                base = block * block_size
                if not held:
                    status, left, first = block_from(ring, base + _BLOCK_STATUS_OFF)
                    if not status & TP_STATUS_USER:
                        events = poll(POLL_TIMEOUT_MS)
                        if events and events[0][1] & select.POLLERR:
                            self._on_socket_error()
                        elif not events and self._down:
                            self._check_gone()
                        continue
                    held = True
                    pos = base + first
                # Reading a block the kernel marked TP_STATUS_USER needs no lock: it does not touch the
                # block again until we write TP_STATUS_KERNEL back. A C reader would put a read barrier
                # between the status load and the packet loads; Python cannot. On x86 loads are not
                # reordered; on weakly ordered CPUs (ARM) the kernel's write barrier plus the many
                # instructions between our two loads make a stale read theoretical, not impossible.
                while left:
                    left -= 1
                    next_off, sec, nsec, snap, wirelen, tp_status, mac, tci, tpid, pkttype = hdr_from(
                        ring, pos
                    )
                    start = pos + mac
                    hdr_pos = pos
                    pos += next_off
                    if pkttype == PACKET_OUTGOING:
                        self._outgoing += 1
                        continue
                    data = ring[start : start + snap]  # copies: the block goes back to the kernel
                    if cooked or tp_status & vlan_flag:  # rare: keep it out of the common path
                        sll = self._sll_from_ring(ring, hdr_pos + _SLL_OFF) if cooked else None
                        data, wirelen = self._rebuild(data, wirelen, sll, tp_status, tci, tpid)
                    cnt += 1
                    yield (sec + nsec * 1e-9, data, wirelen, 0, linktype, cnt, source)
                    if self._stopped:  # also guards against touching the ring after close()
                        return
                set_status(ring, base + _BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
                held = False
                block = (block + 1) % n_blocks
                self._count = cnt
        finally:
            if held and not left and self._ring is ring:
                # Left right after a block's last packet: hand the block back now, or the next iterator
                # would see it still marked for us and read it again.
                set_status(ring, block * block_size + _BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
                held = False
                block = (block + 1) % n_blocks
            self._cursor = (block, pos, left, held)
            self._count = cnt

    @staticmethod
    def _sll_from_ring(ring: mmap.mmap, off: int) -> bytes:
        """The LINKTYPE_LINUX_SLL header for the packet whose sockaddr_ll is at ``off``."""
        protocol, _ifindex, hatype, pkttype, halen, addr = _SOCKADDR_LL.unpack_from(ring, off + 2)
        halen = min(halen, 8)
        # Only halen bytes of the address are written by the kernel; the rest may be stale ring data.
        header: bytes = _SLL_HDR.pack(pkttype, hatype, halen, addr[:halen]) + protocol
        return header

    def _rebuild(
        self, data: bytes, wirelen: int, sll: bytes | None, tp_status: int, tci: int, tpid: int
    ) -> tuple[bytes, int]:
        """Prepend the cooked header and put the stripped VLAN tag back, as libpcap does."""
        if sll is not None:
            data = sll + data
            wirelen += _SLL_HDR_LEN  # like libpcap: the synthetic header counts in both lengths
        at = self._vlan_at
        if tp_status & TP_STATUS_VLAN_VALID and at >= 0 and len(data) >= at:
            if not tp_status & TP_STATUS_VLAN_TPID_VALID:  # kernels before 3.14 report no TPID
                tpid = ETH_P_8021Q
            data = (data[:at] + _VLAN_TAG.pack(tpid, tci & 0xFFFF) + data[at:])[: self._snaplen]
            wirelen += 4
        return data, wirelen

    def _recv_frames(self, sock: socket.socket) -> Iterator[Frame]:
        recvmsg = sock.recvmsg
        bufsize = self._kernel_snaplen
        ancsize = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_TPACKET_AUXDATA.size)
        linktype = self.linktype
        source = self.source_index
        cooked = self._cooked
        while not self._stopped:
            try:
                data, ancdata, _flags, addr = recvmsg(bufsize, ancsize)
            except TimeoutError:
                if self._down:
                    self._check_gone()
                continue
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    self._on_socket_error(exc.errno)
                    continue
                raise
            # addr is (ifname, protocol, pkttype, hatype, hwaddr)
            if addr[2] == PACKET_OUTGOING:
                self._outgoing += 1
                continue
            ts = 0.0
            wirelen = len(data)
            tp_status = tci = tpid = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    ts = sec + nsec * 1e-9
                elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                    tp_status, wirelen, _snap, _mac, _net, tci, tpid = _TPACKET_AUXDATA.unpack_from(payload)
            if cooked or tp_status & TP_STATUS_VLAN_VALID:
                sll = None
                if cooked:
                    hwaddr = bytes(addr[4])[:8]
                    sll = _SLL_HDR.pack(addr[2], addr[3], len(hwaddr), hwaddr) + struct.pack(">H", addr[1])
                data, wirelen = self._rebuild(data, wirelen, sll, tp_status, tci, tpid)
            self._count += 1
            yield (ts, data, wirelen, 0, linktype, self._count, source)

    def _on_socket_error(self, err: int | None = None) -> None:
        """The socket reported an error: the interface went down, or went away for good."""
        if err is None and self._sock is not None:
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # reading clears it
        self._socket_errors += 1
        if self._check_gone():
            return
        # Merely down: the kernel resumes delivery when it comes back up, so keep waiting. The kernel
        # reports only the first of "down" then "unregistered", so keep checking while idle.
        self._down = True
        log.warning("%s: %s; waiting for it to come back", self.interface, errno.errorcode.get(err or 0, err))

    def _check_gone(self) -> bool:
        """End the capture, recording a problem, if our interface (by index: renames are fine) is gone."""
        try:
            socket.if_indextoname(self._ifindex)
            return False
        except OSError:
            pass
        # Unregistered: the kernel unbound the socket and nothing will ever arrive again.
        self.problem = CaptureProblem(
            source=self.interface,
            offset=None,  # an interface has no byte offset
            reason="the interface disappeared during capture",
            packets_read=self._count,
        )
        self._stopped = True
        return True

    # --- control ------------------------------------------------------------------------------------

    @property
    def problems(self) -> list[CaptureProblem]:
        """Like ReplaySource.problems: what the pipeline reports after flushing its outputs."""
        return [self.problem] if self.problem is not None else []

    @property
    def packets(self) -> int:
        """Frames yielded so far (up to the last completed ring block while an iterator is running)."""
        return self._count

    def stop(self) -> None:
        """End the iteration within POLL_TIMEOUT_MS. Only sets a flag: safe in a signal handler."""
        self._stopped = True

    def stats(self) -> dict[str, int | str]:
        """Counters so far. ``kernel_packets`` counts what passed the filter *including* kernel drops.

        ``unread`` is what passed the filter, was not dropped and was not read: once the iteration has
        ended, the frames still queued in the ring (or socket) when the capture stopped, which nothing
        analysed. While an iterator runs it also counts the ring block being read.
        """
        self._read_kernel_stats()
        unread = self._k_packets - self._k_drops - self._count - self._outgoing
        counters: dict[str, int | str] = {
            "mode": self.mode,
            "packets": self._count,
            "kernel_packets": self._k_packets,
            "kernel_drops": self._k_drops,
            "unread": max(0, unread),
            "kernel_freeze_q_cnt": self._k_freeze,
            "outgoing_ignored": self._outgoing,
            "socket_errors": self._socket_errors,
        }
        if self.ring_error is not None:
            counters["ring_error"] = self.ring_error
        return counters

    def _read_kernel_stats(self) -> None:
        if self._sock is None:
            return
        # The kernel zeroes its counters on every read, so we accumulate. TPACKET_V3 sockets return
        # tpacket_stats_v3 (12 bytes), others tpacket_stats (8 bytes).
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS_V3.size)
        if len(raw) >= _TPACKET_STATS_V3.size:
            packets, drops, freeze = _TPACKET_STATS_V3.unpack_from(raw)
        else:
            packets, drops = _TPACKET_STATS.unpack_from(raw)
            freeze = 0
        self._k_packets += packets
        self._k_drops += drops
        self._k_freeze += freeze

    def close(self) -> None:
        """Stop, keep the final kernel counters, release the ring and the socket (ending promiscuity)."""
        self._stopped = True
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._read_kernel_stats()
        sock, self._sock = self._sock, None
        self._poller = None
        self._release(sock)

    def _release(self, sock: socket.socket) -> None:
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()  # first: the mapping holds a dup of the socket's descriptor
        sock.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
