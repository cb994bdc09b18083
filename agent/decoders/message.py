"""``MessageDecoder``: the per-flow plumbing every message-oriented protocol shares.

A protocol subclasses it and supplies two functions (directions are client/server, worked out by
the registry from the ports, not initiator/responder):

* ``message_length(buf, off, avail)`` (static): frame one message on a TCP stream (see
  ``agent.decoders.stream``); UDP datagrams are one message each and skip framing;
* ``parse(buf, off, length, to_server)``: decode one whole message and call ``self.emit`` /
  ``self.anomaly``.

The base class owns the stream framers (TCP), the pending-request table (pairing, latency,
operation inheritance), the per-protocol counters, and the packet position of the message being
parsed, so protocol modules contain protocol knowledge only.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from agent.decoders.base import (
    REQUEST,
    RESPONSE,
    TAP_LOG_LIMIT,
    Anomaly,
    DecoderContext,
    OtMessage,
    TimingTap,
)
from agent.decoders.pending import Entry, PendingRequests
from agent.decoders.stream import StreamFramer

if TYPE_CHECKING:
    from agent.dissect import Packet
    from agent.flows import Flow

_SEQ = struct.Struct("!I")
# The fields of a message no reader takes a record of (see DecoderContext): a fast path may pass
# this instead of building them. Never written to.
UNREAD: dict[str, Any] = {}
_new = tuple.__new__  # builds a NamedTuple (OtMessage) in C, without its Python __new__
# A timing-tap slot not asked for yet (see MessageDecoder._tap): None means "asked: no tap".
_UNASKED: Any = object()


class MessageDecoder:
    protocol: ClassVar[str] = ""

    __slots__ = (
        "_c2s",
        "_cnt",
        "_epoch",
        "_listening",
        "_name",
        "_op_counts",
        "_read_requests",
        "_read_responses",
        "_request_records",
        "_response_records",
        "_s2c",
        "_source",
        "_tap_back",
        "_tap_forth",
        "_ts",
        "ctx",
        "flow",
        "initiator_is_client",
        "pending",
        "stats",
    )

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        self.flow = flow
        self.ctx = ctx
        self.initiator_is_client = initiator_is_client
        self.stats = ctx.stats_for(self.protocol)
        # A slot copy of the class attribute: read for every message, where the class lookup costs 3% of
        # a Modbus message (callgrind).
        self._name = self.protocol
        # Whether anyone reads messages (see DecoderContext): without a reader, only count. What each
        # reader needs from this flow is asked at the first message (``tune``), when the flow's
        # protocol is settled, and again whenever the context's epoch moves on.
        self._listening = ctx.listening
        self._epoch = -1
        self._request_records: frozenset[str] | None = None
        self._response_records: frozenset[str] | None = None
        self._op_counts: dict[str, int] | None = None
        # Whether read requests / responses become records: a fast path decoding a poll skips its
        # fields when not (after ``tune``).
        self._read_requests = self._read_responses = False
        # The control loops this flow's messages time: the one whose client opened the flow (forth)
        # and the one whose client is the responder (back, rare: e.g. IEC 104 commands both ways).
        self._tap_forth: TimingTap | None = _UNASKED
        self._tap_back: TimingTap | None = _UNASKED
        config = ctx.config
        self.pending = PendingRequests(self.stats, config.request_timeout, config.max_pending)
        self._c2s: StreamFramer | None = None
        self._s2c: StreamFramer | None = None
        if flow.proto == 6:
            limit = config.max_stream_buffer
            self._c2s = StreamFramer(self.message_length, self.parse, self._on_gap, limit, True)
            self._s2c = StreamFramer(self.message_length, self.parse, self._on_gap, limit, False)
        self._ts = 0.0
        self._cnt = 0
        self._source = 0

    # -- to implement ----------------------------------------------------------------------------

    @staticmethod
    def message_length(buf: bytes, off: int, avail: int) -> int:
        """Total length of the message at ``off`` (NEED_MORE / INVALID from agent.decoders.stream)."""
        raise NotImplementedError

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        """Decode one whole message ``buf[off:off+length]``; ``from_client``: sent by the client side."""
        raise NotImplementedError

    # -- FlowDecoder -----------------------------------------------------------------------------

    def feed(self, pkt: Packet, to_server: bool, ts: float, cnt: int, source: int) -> None:
        data = pkt.data
        off = pkt.payload_off
        seq = 0
        if self._c2s is not None:
            # Data on a SYN starts one past the SYN's sequence number (TCP Fast Open).
            seq = (_SEQ.unpack_from(data, pkt.l4_off + 4)[0] + (pkt.tcp_flags >> 1 & 1)) & 0xFFFFFFFF
        self.feed_segment(to_server, seq, data[off : off + pkt.payload_len], ts, cnt, source)

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        self._ts = ts
        self._cnt = cnt
        self._source = source
        from_client = to_server == self.initiator_is_client
        framer = self._c2s if from_client else self._s2c
        if framer is None:
            self.parse(payload, 0, len(payload), from_client)
        elif seq == framer.next_seq and not (framer.buf or framer.resync or framer.ooo):
            # The common case, without the framer's call layers: in order, nothing buffered, and
            # the segment is exactly one message (a poll or its answer).
            n = len(payload)
            if self.message_length(payload, 0, n) == n <= framer.limit:
                framer.next_seq = (seq + n) & 0xFFFFFFFF
                self.parse(payload, 0, n, from_client)
            else:
                framer.add(seq, payload)
        else:
            framer.add(seq, payload)

    def continue_on(self, flow: Flow) -> None:
        self.flow = flow
        self._epoch = -1  # the readers are asked again about the new flow record

    def tune(self) -> None:
        """Ask the readers what they need from this flow (DecoderContext.interest). Callers check
        first that the context's epoch moved on: ``request`` and ``response``, or a fast path before
        it decides to build fields."""
        ctx = self.ctx
        self._epoch = ctx.epoch
        requests, responses, self._op_counts = ctx.interest(self.flow, self._name, self._ts)
        self._request_records, self._response_records = requests, responses
        self._read_requests = requests is None or "read" in requests
        self._read_responses = responses is None or "read" in responses
        self._tap_forth = self._tap_back = _UNASKED

    def _tap(self, client_is_initiator: bool) -> TimingTap | None:
        """The control loop timing the requests of the initiator (or of the responder), asked once."""
        timing_tap = self.ctx.timing_tap
        tap = timing_tap(self.flow, self._name, client_is_initiator) if timing_tap is not None else None
        if client_is_initiator:
            self._tap_forth = tap
        else:
            self._tap_back = tap
        return tap

    def close(self, reason: str) -> None:
        # Decode what waits behind holes that never filled; a partial last message is reported.
        for framer in (self._c2s, self._s2c):
            if framer is not None:
                framer.finish()
        self.pending.close()

    # -- for subclasses --------------------------------------------------------------------------

    def _on_gap(self, kind: str, detail: str) -> None:
        if kind == "stream_gap":
            self.stats.stream_gaps += 1
        elif kind == "oversize":
            self.stats.buffer_overflows += 1
        self.anomaly(kind, detail)

    def request(self, key: Hashable | None, function: int, operation: str, fields: dict[str, Any],
                from_client: bool = True) -> None:  # fmt: skip
        """Emit a request; with a ``key`` it waits in the pending table for its response."""
        ts = self._ts
        cnt = self._cnt
        if key is not None:
            pending = self.pending
            items = pending.items
            if key in items or len(items) >= pending.limit:
                pending.add(key, ts, cnt, operation, function)
            else:  # PendingRequests.add, inlined for the usual case: a new key in a table with room
                items[key] = (ts, cnt, operation, function)
                pending.adds += 1
                if not pending.adds & 0x3F:
                    pending.expire(ts)
        # DecoderContext.message, inlined: this runs for every message.
        stats = self.stats
        stats.requests += 1
        ops = stats.operations
        ops[operation] = ops.get(operation, 0) + 1
        if not self._listening:
            return
        if self._epoch != self.ctx.epoch:
            self.tune()
        counts = self._op_counts
        if counts is not None:
            counts[operation] = counts.get(operation, 0) + 1
        by_initiator = from_client == self.initiator_is_client
        if operation != "io":  # cyclic I/O is no request/response loop
            tap = self._tap_forth if by_initiator else self._tap_back
            if tap is _UNASKED:
                tap = self._tap(by_initiator)
            if tap is not None:
                log = tap.log
                log.append((ts, cnt, function, -1.0))
                if len(log) >= TAP_LOG_LIMIT:
                    tap.digest()
        wanted = self._request_records
        if wanted is None or operation in wanted:
            record = (ts, self.flow, cnt, self._source, self._name, by_initiator, REQUEST, function,
                      operation, fields, 0, None, False)  # fmt: skip
            self.ctx.on_message(_new(OtMessage, record))

    def response(self, key: Hashable | None, function: int, operation: str, fields: dict[str, Any],
                 from_client: bool = False, exception: bool = False,
                 keep: bool = False) -> str:  # fmt: skip
        """Emit a response; a matched request lends it its operation class and latency, returned.

        ``operation`` is used when no request matches (e.g. the capture began after the request).
        ``keep`` leaves the request pending (a multi-part response).
        """
        entry: Entry | None = None
        stats = self.stats
        if key is not None:
            if keep:
                entry = self.pending.items.get(key)
            else:  # PendingRequests.match, inlined: this runs for every response
                entry = self.pending.items.pop(key, None)
                if entry is None:
                    stats.unmatched_responses += 1
                else:
                    stats.matched += 1
        ts = self._ts
        stats.responses += 1
        if entry is None:  # an answer to a request we did not see still shows an operation
            ops = stats.operations
            ops[operation] = ops.get(operation, 0) + 1
            if not self._listening:
                return operation
            request_cnt = 0
            latency: float | None = None
        else:
            request_ts, request_cnt, operation, _ = entry
            if not self._listening:
                return operation
            latency = ts - request_ts
            if not latency > 0.0:
                latency = 0.0
        if self._epoch != self.ctx.epoch:
            self.tune()
        by_initiator = from_client == self.initiator_is_client
        if latency is not None and operation != "io":
            # The loop whose client sent the request: the side this response goes to.
            tap = self._tap_back if by_initiator else self._tap_forth
            if tap is _UNASKED:
                tap = self._tap(not by_initiator)
            if tap is not None:
                tap.log.append((ts, request_cnt, 0, latency))
        wanted = self._response_records
        if exception or wanted is None or operation in wanted:
            record = (ts, self.flow, self._cnt, self._source, self._name, by_initiator, RESPONSE, function,
                      operation, fields, request_cnt, latency, exception)  # fmt: skip
            self.ctx.on_message(_new(OtMessage, record))
        return operation

    def anomaly(self, kind: str, detail: str) -> None:
        self.ctx.anomaly(Anomaly(self._ts, self.flow, self._cnt, self._source, self._name, kind, detail),
                         self.stats)  # fmt: skip
