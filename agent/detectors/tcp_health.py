"""TCP retransmissions, duplicate ACKs and zero windows of control flows.

A ``TcpHealth`` hangs on the ``tcp`` slot of a control TCP flow (the flood detector attaches it when
the flow starts); the flow table feeds it every segment of that flow, from the fast path and the full
path alike, including pure ACKs that carry no payload (the decoders never see those). Other flows keep
``tcp`` at None and pay one attribute test per packet.

The rules follow Wireshark's SEQ/ACK analysis closely enough that per-flow counts can be compared with
tshark's ``tcp.analysis.*`` flags (tests/corpus/test_tcp_health_tshark.py), with one simplification: the
sender's "next expected sequence number" is the highest sequence number plus length seen in that
direction, and every data segment that starts before it, or that the receiver has acknowledged
already, is a retransmission. tshark splits those
further by timing (fast retransmission after duplicate ACKs, out-of-order within an RTT, spurious when
already acknowledged); here they are all one count, since each of them means the control loop lost
time waiting for data it should already have had.

Sequence numbers are compared modulo 2**32 (RFC 1982 serial arithmetic), so a connection that wraps
its sequence space keeps being judged correctly.
"""

from __future__ import annotations

from struct import Struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.dissect import Packet

_M32 = 0xFFFFFFFF
_HALF = 0x80000000
_SYN_FIN = 0x03
_SYN_FIN_RST = 0x07
_ACK = 0x10
_ACK_SYN_FIN_RST = 0x17
_U16 = Struct("!H")

# What the last segment of a direction was, for the rules that look at the other direction's last one.
_PLAIN = 0
_KEEPALIVE = 1  # 0 or 1 byte one below the next expected sequence number: a probe, not lost data
_WINDOW_PROBE = 2  # 1 byte at the next expected sequence number while the peer advertises window 0


class TcpCounts:
    """The counts of all control flows of one (zone, protocol): what the metrics publish."""

    __slots__ = ("duplicate_acks", "flows", "key", "retransmissions", "zero_windows")

    def __init__(self, key: tuple[str, str] = ("", "")) -> None:
        self.key = key  # (zone, protocol) it is published under
        self.retransmissions = 0
        self.duplicate_acks = 0
        self.zero_windows = 0
        self.flows = 0  # connections counted here, less those moved to their decoded protocol

    def counted(self) -> bool:
        return bool(self.retransmissions or self.duplicate_acks or self.zero_windows)

    def as_dict(self) -> dict[str, int]:
        return {
            "retransmissions": self.retransmissions,
            "duplicate_acks": self.duplicate_acks,
            "zero_windows": self.zero_windows,
        }


class TcpHealth:
    """Per-flow sequence state of both directions (``_ts`` towards the server, ``_tc`` towards the
    client) and counts. Small on purpose: four integers a direction, no per-segment history; plain
    attributes rather than per-direction lists, which cost twice as much on every segment.
    """

    __slots__ = (
        "ack_tc",
        "ack_ts",
        "counts",
        "duplicate_acks",
        "judged",
        "kind_tc",
        "kind_ts",
        "next_tc",
        "next_ts",
        "retransmissions",
        "window_tc",
        "window_ts",
        "zero_windows",
    )

    def __init__(self, counts: TcpCounts) -> None:
        self.counts = counts  # shared by the flows of a zone and protocol
        # Per direction: highest sequence number + length (+1 for SYN/FIN) sent, -1 before the first
        # segment; the last segment's acknowledgement number (-1: none yet), window and kind.
        self.next_ts = self.next_tc = -1
        self.ack_ts = self.ack_tc = -1
        self.window_ts = self.window_tc = -1
        self.kind_ts = self.kind_tc = _PLAIN
        self.retransmissions = 0
        self.duplicate_acks = 0
        self.zero_windows = 0
        self.judged = 0  # of the retransmissions, those a control loop's health judgement has taken

    def continuation(self) -> TcpHealth:
        """The state for the next record of a long flow (active timeout): same sequence state, counts
        from zero, so each flow record reports what happened during it."""
        nxt = TcpHealth(self.counts)
        nxt.next_ts, nxt.ack_ts, nxt.window_ts, nxt.kind_ts = (
            self.next_ts,
            self.ack_ts,
            self.window_ts,
            self.kind_ts,
        )
        nxt.next_tc, nxt.ack_tc, nxt.window_tc, nxt.kind_tc = (
            self.next_tc,
            self.ack_tc,
            self.window_tc,
            self.kind_tc,
        )
        return nxt

    def packet(self, pkt: Packet, to_server: bool, wirelen: int) -> None:
        """A dissected TCP segment (the flow table's full path: handshake, FIN, RST, first packets)."""
        seq, ack, window = pkt.tcp_header()
        length = segment_length(pkt) if len(pkt.data) < wirelen else pkt.payload_len
        self.segment(to_server, pkt.tcp_flags, seq, ack, window, length)

    def segment(self, to_server: bool, flags: int, seq: int, ack: int, window: int, length: int) -> None:
        """Judge one segment; ``length`` is its TCP payload length as the IP header declares it.

        The usual segments of a polling loop are checked first and alone: new data in order (a
        request, a response), or an ACK of new data. Neither is a probe, a duplicate or a zero window;
        only an ACK the receiver already sent for the data makes it a retransmission. Everything else
        (handshake, FIN/RST, repeated ACKs, probes, data out of order) goes to ``_judge``.
        """
        if window and flags & _ACK_SYN_FIN_RST == _ACK:
            # Sequence numbers above 2**30 are two-digit ints in CPython, whose arithmetic allocates:
            # the usual case is settled with comparisons (the peer has acknowledged exactly up to
            # this new data), the modular arithmetic kept for the rest.
            if to_server:
                if seq == self.next_ts:
                    if length > 1:
                        acked = self.ack_tc
                        if acked != seq and acked >= 0 and (acked - seq - length) & _M32 < _HALF:
                            self.retransmissions += 1
                            self.counts.retransmissions += 1
                        end = seq + length
                        self.next_ts = end if end <= _M32 else end & _M32
                    elif length or ack == self.ack_ts:
                        self._judge(to_server, flags, seq, ack, window, length)
                        return
                    self.ack_ts = ack
                    self.window_ts = window
                    self.kind_ts = _PLAIN
                    return
            elif seq == self.next_tc:
                if length > 1:
                    acked = self.ack_ts
                    if acked != seq and acked >= 0 and (acked - seq - length) & _M32 < _HALF:
                        self.retransmissions += 1
                        self.counts.retransmissions += 1
                    end = seq + length
                    self.next_tc = end if end <= _M32 else end & _M32
                elif length or ack == self.ack_tc:
                    self._judge(to_server, flags, seq, ack, window, length)
                    return
                self.ack_tc = ack
                self.window_tc = window
                self.kind_tc = _PLAIN
                return
        self._judge(to_server, flags, seq, ack, window, length)

    def _judge(self, to_server: bool, flags: int, seq: int, ack: int, window: int, length: int) -> None:
        """Every segment the first branch of ``segment`` does not settle."""
        if to_server:
            nxt, last_ack, last_window = self.next_ts, self.ack_ts, self.window_ts
            peer_ack, peer_window, peer_kind = self.ack_tc, self.window_tc, self.kind_tc
        else:
            nxt, last_ack, last_window = self.next_tc, self.ack_tc, self.window_tc
            peer_ack, peer_window, peer_kind = self.ack_ts, self.window_ts, self.kind_ts
        plain = not flags & _SYN_FIN_RST
        kind = _PLAIN
        if nxt >= 0:
            if length == 1 and seq == nxt and peer_window == 0:
                kind = _WINDOW_PROBE
            elif length <= 1 and plain and seq == (nxt - 1) & _M32:
                kind = _KEEPALIVE
        if window == 0 and plain and kind != _WINDOW_PROBE:
            self.zero_windows += 1
            self.counts.zero_windows += 1
        if (
            length == 0
            and plain
            and window
            and kind == _PLAIN
            and seq == nxt
            and ack == last_ack
            and window == last_window
            and peer_kind != _KEEPALIVE  # the answer to a keep-alive repeats itself by design
        ):
            # Nothing new: no data, the same acknowledgement and the same window as the last segment
            # this side sent (a changed window is a window update, not a duplicate).
            self.duplicate_acks += 1
            self.counts.duplicate_acks += 1
        if kind != _KEEPALIVE and (
            # Starts before what this side already sent: the data (or SYN/FIN) is sent again ...
            (nxt >= 0 and (length or flags & _SYN_FIN) and 0 < (nxt - seq) & _M32 < _HALF)
            # ... or the receiver has acknowledged all of it already (the original went by unseen:
            # a mirror that reorders or drops; tshark calls it a spurious retransmission).
            or (length and peer_ack >= 0 and (peer_ack - seq - length) & _M32 < _HALF)
        ):
            self.retransmissions += 1
            self.counts.retransmissions += 1
        end = (seq + length + (1 if flags & _SYN_FIN else 0)) & _M32
        if kind != _WINDOW_PROBE and (nxt < 0 or 0 < (end - nxt) & _M32 < _HALF):
            nxt = end
        if flags & _ACK:
            last_ack = ack
        if to_server:
            self.next_ts, self.ack_ts, self.window_ts, self.kind_ts = nxt, last_ack, window, kind
        else:
            self.next_tc, self.ack_tc, self.window_tc, self.kind_tc = nxt, last_ack, window, kind


def segment_length(pkt: Packet) -> int:
    """TCP payload length from the IP header's length field, for a frame cut short by the capture's
    snap length (an uncut frame's bytes are the truth: a length field beyond them is bogus); the
    captured payload when the field is 0 (TSO)."""
    data = pkt.data
    l3 = pkt.l3_off
    if pkt.ip_version == 4:
        total = _U16.unpack_from(data, l3 + 2)[0]
        declared = l3 + total - pkt.payload_off
    else:
        total = _U16.unpack_from(data, l3 + 4)[0]
        declared = l3 + 40 + total - pkt.payload_off
    return declared if total and declared >= 0 else pkt.payload_len
