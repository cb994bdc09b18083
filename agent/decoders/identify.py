"""Identification of IT and backup protocols: name the flow, keep a few flow-level fields, stop.

These are not message decoders: an SMB or TLS flow produces no ``OtMessage``. A protocol module
gives a ``ProtocolSpec`` (port + payload probe, as the industrial decoders do) whose per-flow object
is an ``Identifier``: it looks at the first payload of the flow, fills a small dict of fields
(version, SNI, command counts, ...) and then detaches itself (``flow.app = None``), so the rest of
a bulk transfer costs the pipeline one attribute test per packet. Every identifier also stops
after a packet budget, whatever it has found by then.

The fields travel with the flow's name: ``flow.app_proto`` becomes an ``Identified`` string that
carries them, because a flow has no other place for them once its identifier has gone. Anything
holding the flow (the flow event, the bulk-traffic detector) reads them with ``flow_fields``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from agent.decoders.base import DecoderContext

if TYPE_CHECKING:
    from agent.dissect import Packet
    from agent.flows import Flow

_SEQ = struct.Struct("!I")
_SEQ_MOD = 1 << 32

# What a message framer returns besides a length: not enough bytes for the header, or no header.
NEED_MORE = 0
INVALID = -1
_MAX_CARRY = 512  # bytes of a message header split across segments kept for the next segment


class Identified(str):
    """A flow's ``app_proto`` name carrying the fields its identifier found.

    It compares, hashes and serialises as the plain name, so the policy, the port tables and JSON
    output see no difference; ``objects`` maps an EVE object name ("tls", "smb") to its fields and
    is updated in place while the identifier still looks at the flow.
    """

    objects: dict[str, dict[str, Any]]


def identified(name: str, objects: dict[str, dict[str, Any]]) -> Identified:
    result = Identified(name)
    result.objects = objects
    return result


def flow_fields(flow: Flow) -> dict[str, dict[str, Any]] | None:
    """The identification fields of ``flow`` by EVE object name, or None when it has none."""
    name = flow.app_proto
    return name.objects if isinstance(name, Identified) else None


class Identifier:
    """Per-flow identification state (a ``FlowDecoder``); subclasses implement ``inspect``.

    ``protocol`` names the flow event's object holding ``fields``; ``max_packets`` bounds how many
    payload packets are looked at before giving up on finding more.
    """

    protocol: ClassVar[str] = ""
    max_packets: ClassVar[int] = 16

    __slots__ = ("budget", "ctx", "fields", "finished", "flow", "initiator_is_client", "started")

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        self.flow = flow
        self.ctx = ctx
        self.initiator_is_client = initiator_is_client
        self.fields: dict[str, Any] = {}
        self.budget = self.max_packets
        self.finished = False
        self.started = False

    # -- to implement ----------------------------------------------------------------------------

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        """Look at one payload (TCP sequence number, 0 for UDP); True when nothing more is needed."""
        raise NotImplementedError

    # -- FlowDecoder -----------------------------------------------------------------------------

    def continue_on(self, flow: Flow) -> None:
        self.flow = flow

    def feed(self, pkt: Packet, to_server: bool, ts: float, cnt: int, source: int) -> None:
        data = pkt.data
        off = pkt.payload_off
        seq = _SEQ.unpack_from(data, pkt.l4_off + 4)[0] if self.flow.proto == 6 else 0
        self.feed_segment(to_server, seq, data[off : off + pkt.payload_len], ts, cnt, source)

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        if self.finished or not payload:
            return
        if not self.started:
            # The registry names the flow after building us: attach the fields to that name.
            self.started = True
            self.rename(self.flow.app_proto)
        try:
            done = self.inspect(to_server == self.initiator_is_client, seq, payload, ts)
        except (IndexError, ValueError, struct.error, UnicodeDecodeError):
            # Defence in depth (the parsers check their bounds; property tests hold them to it): bytes
            # that break a parser end the looking, visibly, never the pipeline.
            self.fields["malformed"] = True
            done = True
        self.budget -= 1
        if done or self.budget <= 0:
            self.finish()

    def close(self, reason: str) -> None:
        self.finished = True

    # -- for subclasses --------------------------------------------------------------------------

    def finish(self) -> None:
        """Stop looking: the flow drops its decoder, its fields stay on its name."""
        self.finished = True
        if self.flow.app is self:
            self.flow.app = None

    def rename(self, name: str) -> None:
        """Call the flow ``name`` (e.g. an ONC-RPC flow that turns out to be NFS), keeping the fields."""
        self.flow.app_proto = identified(name, {self.protocol: self.fields})

    def count(self, key: str, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` in the dict field ``key``."""
        counts = self.fields.get(key)
        if counts is None:
            counts = self.fields[key] = {}
        counts[name] = counts.get(name, 0) + n


# framer(buffer, offset, available, from_client) -> total length of the message that starts at
# offset (after looking at its header), NEED_MORE when its header is not all there, INVALID if the
# bytes there do not start a message.
Framer = Callable[[bytes, int, int, bool], int]


class StreamWalker:
    """Follows the message boundaries of one direction of a length-framed TCP stream.

    Only message headers are looked at: the body of a 64 KiB write spanning 45 segments costs one
    subtraction per segment. A hole or a header that makes no sense loses the framing; the walker
    then looks for a valid header at the start of later segments (where writers usually begin a
    message). No reassembly: at most a split header (``_MAX_CARRY`` bytes) is kept.
    """

    __slots__ = ("carry", "lost", "next_seq", "skip")

    def __init__(self) -> None:
        self.next_seq = -1
        self.skip = 0  # bytes of the current message still to come
        self.carry = b""
        self.lost = False

    def skip_within(self, seq: int, n: int) -> bool:
        """Consume ``n`` bytes at ``seq`` if they continue the stream inside the current message's
        body (True): the usual segment of a bulk transfer, which has no header to look at."""
        if seq != self.next_seq or n > self.skip:
            return False
        self.skip -= n
        self.next_seq = (seq + n) % _SEQ_MOD
        return True

    def walk(self, seq: int, data: bytes, framer: Framer, from_client: bool) -> None:
        n = len(data)
        expected = self.next_seq
        if expected >= 0 and seq != expected:
            delta = (seq - expected) % _SEQ_MOD
            if delta >= 1 << 31:  # a retransmission, possibly with some new bytes at its end
                overlap = _SEQ_MOD - delta
                if overlap >= n:
                    return
                data = data[overlap:]
                n -= overlap
                seq = expected
            else:  # bytes were lost
                self.lost = True
                self.skip = 0
                self.carry = b""
        if self.skip_within(seq, n):
            return
        self.next_seq = (seq + n) % _SEQ_MOD
        skip = self.skip
        if self.carry:
            data = self.carry + data
            n = len(data)
            self.carry = b""
        off = skip
        if self.lost:
            # Only a message starting this segment is trusted after a loss.
            size = framer(data, off, n - off, from_client)
            if size <= 0:
                self.skip = 0
                return
            self.lost = False
            off += size
        while off < n:
            size = framer(data, off, n - off, from_client)
            if size == NEED_MORE:
                if n - off > _MAX_CARRY:
                    self.lost = True
                else:
                    self.carry = data[off:]
                break
            if size < 0:
                self.lost = True
                break
            off += size
        self.skip = off - n if off > n else 0


class FramedIdentifier(Identifier):
    """An identifier of a length-framed TCP protocol (SMB, NDMP, iSCSI, ONC-RPC): each direction is
    followed message by message with its own ``StreamWalker``; ``walk`` hands every message header
    found to ``message(buf, off, avail, from_client)``."""

    __slots__ = ("c2s", "s2c")

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.c2s = StreamWalker()
        self.s2c = StreamWalker()

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        # A segment inside a long message body (a 64 KiB SMB write spans 45 segments: in a backup that
        # is nearly every segment) is skipped by its walker directly, without the inspect and walk
        # call layers. Segments near the end of the budget take the general path, which marks the
        # counts partial and stops.
        walker = self.c2s if to_server == self.initiator_is_client else self.s2c
        if payload and self.budget > 1 and self.started and walker.skip_within(seq, len(payload)):
            self.budget -= 1
            return
        Identifier.feed_segment(self, to_server, seq, payload, ts, cnt, source)

    def walk(self, from_client: bool, seq: int, payload: bytes, message: Framer) -> None:
        (self.c2s if from_client else self.s2c).walk(seq, payload, message, from_client)
