"""TCP stream handling shared by the decoders: ordering, bounded buffering, framing, resync.

Every industrial protocol we decode over TCP frames its messages with a length in a fixed header
(MBAP, TPKT, DNP3 link header, ENIP encapsulation, IEC 104 APCI), so one ``StreamFramer`` per
direction serves them all: the protocol supplies ``message_length`` and gets whole messages back.

The common case, a segment holding exactly whole messages with nothing buffered, is parsed in
place without copying. Out-of-order segments are held (bounded) until the hole fills; a hole that
does not fill, or a header that makes no sense, is a counted gap, after which the framer skips
ahead to the next offset where a valid header starts.
"""

from __future__ import annotations

from collections.abc import Callable

# message_length(buffer, offset, available) -> total length of the message starting at offset,
# NEED_MORE if the header is incomplete, INVALID if the bytes there cannot start a message.
NEED_MORE = 0
INVALID = -1
LengthFn = Callable[[bytes, int, int], int]
# on_message(buffer, offset, length, tag): the tag given to the framer, e.g. "sent by the client"
MessageFn = Callable[[bytes, int, int, bool], None]
# on_gap(kind, detail): "stream_gap" (missing bytes), "bad_header" (resync), "oversize"
GapFn = Callable[[str, str], None]

_MAX_OUT_OF_ORDER = 32  # segments held while waiting for a hole to fill
_SEQ_MOD = 1 << 32


class StreamFramer:
    """One direction of one TCP connection.

    ``buf`` (bytes of an incomplete message), ``resync`` (looking for a header after a gap) and
    ``ooo`` (segments held behind a hole) are readable so that a caller can take the common case,
    an in-order segment with nothing pending, without a call into the framer; it then advances
    ``next_seq`` itself.
    """

    __slots__ = (
        "_on_gap",
        "_on_message",
        "_tag",
        "buf",
        "length",
        "limit",
        "next_seq",
        "ooo",
        "ooo_bytes",
        "resync",
    )

    def __init__(
        self, length: LengthFn, on_message: MessageFn, on_gap: GapFn, limit: int, tag: bool = True
    ) -> None:
        self.length = length
        self._on_message = on_message
        self._tag = tag
        self._on_gap = on_gap
        self.limit = limit
        self.next_seq: int | None = None
        self.buf = b""
        self.ooo: dict[int, bytes] = {}
        self.ooo_bytes = 0
        # Picked up mid-stream: the first bytes may be the tail of a message, so look for a header.
        self.resync = False

    def add(self, seq: int, data: bytes) -> None:
        """Add a segment's payload at TCP sequence number ``seq``."""
        expected = self.next_seq
        if expected is None:
            self.next_seq = (seq + len(data)) % _SEQ_MOD
            self._consume(data)
            return
        delta = (seq - expected) % _SEQ_MOD
        if delta == 0:
            n = len(data)
            self.next_seq = (seq + n) % _SEQ_MOD
            if not self.buf and not self.resync and not self.ooo:
                # The common case: the segment starts with a message and holds whole messages.
                length = self.length
                off = 0
                while off < n:
                    size = length(data, off, n - off)
                    if size <= 0 or size > self.limit or off + size > n:
                        break
                    self._on_message(data, off, size, self._tag)
                    off += size
                else:
                    return
                data = data[off:]
            self._consume(data)
            if self.ooo:
                self._drain()
        elif delta >= 1 << 31:
            # Before what we expect: a retransmission, possibly carrying some new bytes.
            overlap = _SEQ_MOD - delta
            if overlap < len(data):
                self.next_seq = (seq + len(data)) % _SEQ_MOD
                self._consume(data[overlap:])
                if self.ooo:
                    self._drain()
        else:
            # After a hole: hold it until the hole fills, within bounds.
            if seq not in self.ooo:
                self.ooo[seq] = data
                self.ooo_bytes += len(data)
            if len(self.ooo) > _MAX_OUT_OF_ORDER or self.ooo_bytes > self.limit:
                self._skip_hole()

    def _drain(self) -> None:
        ooo = self.ooo
        while ooo:
            expected = self.next_seq
            data = ooo.pop(expected, None) if expected is not None else None
            if data is None:
                # Drop held segments that are now entirely behind the stream.
                stale = [s for s in ooo if (s - (expected or 0)) % _SEQ_MOD >= 1 << 31]
                for s in stale:
                    self.ooo_bytes -= len(ooo.pop(s))
                if not stale:
                    return
                continue
            self.ooo_bytes -= len(data)
            self.next_seq = ((expected or 0) + len(data)) % _SEQ_MOD
            self._consume(data)

    def _skip_hole(self) -> None:
        """Give up on a hole: drop the partial message and continue at the earliest held segment."""
        expected = self.next_seq or 0
        first = min(self.ooo, key=lambda s: (s - expected) % _SEQ_MOD)
        missing = (first - expected) % _SEQ_MOD
        self._on_gap("stream_gap", f"{missing} bytes missing from the TCP stream; resynchronising")
        self.buf = b""
        self.resync = True
        self.next_seq = first
        self._drain()

    def finish(self) -> None:
        """The connection ended: skip the holes that never filled (each one counted), decode what
        was held behind them, and report an incomplete last message."""
        while self.ooo:
            self._skip_hole()
        if self.buf:
            self._on_gap("truncated", f"{len(self.buf)} bytes of an incomplete message when the stream ended")
            self.buf = b""

    def gap(self) -> None:
        """The caller knows bytes were lost (e.g. capture drops): resynchronise at the next header."""
        self.buf = b""
        self.resync = True

    def _consume(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = len(buf)
        off = 0
        length = self.length
        while off < end:
            if self.resync:
                off = self._find_header(buf, off, end)
                if off < 0:
                    self.buf = b""
                    return
                self.resync = False
            n = length(buf, off, end - off)
            if n == NEED_MORE:
                break
            if n < 0:
                self._on_gap("bad_header", f"invalid message header at stream offset {off}; resynchronising")
                self.resync = True
                off += 1
                continue
            if n > self.limit:
                self._on_gap("oversize", f"message length {n} exceeds the {self.limit}-byte buffer limit")
                self.resync = True
                off += 1
                continue
            if off + n > end:
                break
            self._on_message(buf, off, n, self._tag)
            off += n
        rest = buf[off:] if off < end else b""
        if len(rest) > self.limit:
            self._on_gap("oversize", f"{len(rest)} bytes buffered without a complete message")
            rest = b""
            self.resync = True
        self.buf = rest

    def _find_header(self, buf: bytes, off: int, end: int) -> int:
        length = self.length
        while off < end:
            if length(buf, off, end - off) != INVALID:
                return off
            off += 1
        return -1
