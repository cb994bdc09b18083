"""ISO transport on TCP (RFC 1006 TPKT + ISO 8073 COTP class 0): what S7comm and IEC 61850 MMS share.

Checked against RFC 1006, ISO 8073 (X.224) for the TPDUs, and Wireshark's packet-tpkt.c and
packet-cotp.c (``cotp.*`` fields).

Every TPKT packet is one COTP TPDU. Data TPDUs (DT) without the last-data-unit bit are buffered per
direction and joined with the following DT into one TSDU, which ``CotpDecoder`` hands to its
protocol's ``_tsdu``. The connection TPDUs (CR, CC, DR, DC, ER) are ``session`` messages:
CR is a request answered by CC (or refused by DR), DR by DC; ``function`` is 0x100 | TPDU code
(0x1E0 CR, 0x1D0 CC, 0x180 DR, 0x1C0 DC, 0x170 ER) in every protocol on this transport.

TCP 102 carries both S7comm and MMS, and a CR/CC says nothing about which: the probes of both look
past the connection TPDUs at the first DT (``first_data_tpdu``), so the registry holds a new
connection's CR and CC until its first data shows the protocol, then replays them to the decoder.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from agent.decoders.message import MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE

if TYPE_CHECKING:
    from agent.decoders.base import DecoderContext
    from agent.flows import Flow

_H = struct.Struct("!H")
_SEQ_MOD = 1 << 32

TPKT_VERSION = 3
MIN_TPKT = 7  # RFC 1006: header (4) + the smallest TPDU (class 0 DT: LI, code, TPDU-NR/EOT)
MAX_TSDU = 1 << 16  # a TSDU reassembled from DTs; S7 PDUs are a few KiB, MMS PDUs at most 64 KiB

# COTP TPDU codes (high nibble of the second octet; CR/CC carry the credit in the low nibble).
CR, CC, DR, DC, DT, ER = 0xE0, 0xD0, 0x80, 0xC0, 0xF0, 0x70
COTP_NAMES = {CR: "CR", CC: "CC", DR: "DR", DC: "DC", DT: "DT", ER: "ER", 0x10: "ED", 0x20: "EA", 0x50: "RJ",
              0x60: "AK"}  # fmt: skip
CONNECTION_TPDUS = frozenset({CR, CC, DR, DC, ER})
# The S7 convention for a 2-byte called TSAP: connection resource, then rack * 32 + slot.
TSAP_CONNECTION_TYPES = {1: "PG", 2: "OP", 3: "S7 basic"}
COTP_FUNCTION_BASE = 0x100


def message_length(buf: bytes, off: int, avail: int) -> int:
    """One TPKT packet: version 3, reserved 0, length covering a COTP TPDU with a sane LI."""
    if avail < 6:
        header_ok = buf[off] == TPKT_VERSION and (avail < 2 or buf[off + 1] == 0)
        return NEED_MORE if header_ok else INVALID
    if buf[off] != TPKT_VERSION or buf[off + 1] != 0:
        return INVALID
    length = _H.unpack_from(buf, off + 2)[0]
    li = buf[off + 4]
    if length < MIN_TPKT or li < 2 or 5 + li > length or buf[off + 5] & 0xF0 not in COTP_NAMES:
        return INVALID
    return int(length)


def first_data_tpdu(sample: bytes) -> int:
    """Offset of the first TPKT in ``sample`` that is not a CR or CC, or -1.

    -1 when the sample is not TPKT/COTP, or holds only whole CR/CC packets so far (a probe cannot
    decide yet: the registry holds the packets and asks again with the next one).
    """
    off = 0
    n = len(sample)
    while off < n:
        length = message_length(sample, off, n - off)
        if length <= 0:
            return -1
        code = sample[off + 5] & 0xF0
        if code != CR and code != CC:
            return off if off + MIN_TPKT <= n else -1
        off += length
    return -1


def tsap(value: bytes) -> str:
    """Wireshark shows a TSAP as text when it is printable (S7comm-plus's "SIMATIC-ROOT-ES"), else hex."""
    if len(value) > 2 and all(0x20 <= b < 0x7F for b in value):
        return value.decode("ascii")
    return value.hex()


class CotpDecoder(MessageDecoder):
    """A TPKT/COTP connection: framing, DT reassembly and connection TPDUs for a protocol above it.

    Subclasses implement ``_tsdu`` (one reassembled TSDU); ``_connection`` may hold connection
    TPDUs back (S7comm does until it knows S7comm from S7comm-plus).
    """

    __slots__ = ("_frags", "dst_tsap", "src_tsap")

    message_length = staticmethod(message_length)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        # Per direction, indexed by from_client: DT user data waiting for the last data unit
        # (None: an oversized TSDU is being skipped up to its last DT).
        self._frags: list[bytes | None] = [b"", b""]
        # The TSAPs of the connection request: calling (client) and called (server) TSAP.
        self.src_tsap: str | None = None
        self.dst_tsap: str | None = None

    # -- to implement ----------------------------------------------------------------------------

    def _tsdu(self, data: bytes, from_client: bool) -> None:
        """One whole TSDU (never empty) sent by the client or the server."""
        raise NotImplementedError

    def _connection(self, from_client: bool, code: int, fields: dict[str, Any]) -> None:
        """A decoded connection TPDU; by default reported at once."""
        self._emit_connection(from_client, code, fields)

    def _connection_emitter(self) -> MessageDecoder:
        """Who reports connection TPDUs (S7comm-plus connections report them as s7comm_plus)."""
        return self

    # -- framing ---------------------------------------------------------------------------------

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        from_client = to_server == self.initiator_is_client
        framer = self._c2s if from_client else self._s2c
        if framer is not None and framer.next_seq is not None:
            # A segment after a hole that starts with a TPKT header: the missing bytes are lost
            # (captures filtered to S7 packets drop the rest), so decode from here at once instead
            # of holding it for a retransmission that will not come.
            ahead = (seq - framer.next_seq) % _SEQ_MOD
            if 0 < ahead < _SEQ_MOD >> 1 and message_length(payload, 0, len(payload)) > 0:
                self._ts = ts
                self._cnt = cnt
                self._source = source
                self._on_gap(
                    "stream_gap", f"{ahead} bytes missing from the TCP stream; resuming at a TPKT header"
                )
                framer.gap()
                framer.next_seq = seq
        super().feed_segment(to_server, seq, payload, ts, cnt, source)

    def _on_gap(self, kind: str, detail: str) -> None:
        # A half-reassembled TSDU cannot be completed across lost bytes.
        self._frags = [b"", b""]
        super()._on_gap(kind, detail)

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        li = buf[off + 4]  # message_length checked 2 <= li <= length - 5
        code = buf[off + 5] & 0xF0
        if code == DT:
            self._dt(buf[off + 5 + li : off + length], buf[off + 6] & 0x80 != 0, from_client)
        elif code in CONNECTION_TPDUS:
            self._connection_tpdu(buf, off + 5, off + 5 + li, code, from_client)
        else:
            self.anomaly("unexpected_tpdu", f"COTP {COTP_NAMES[code]} TPDU is not used in class 0 over TCP")

    def _dt(self, data: bytes, eot: bool, from_client: bool) -> None:
        held = self._frags[from_client]
        if not eot:
            if held is None:
                return
            if len(held) + len(data) > MAX_TSDU:
                self.stats.buffer_overflows += 1
                self.anomaly("oversize", f"COTP data units exceed {MAX_TSDU} bytes without a last data unit")
                self._frags[from_client] = None
                return
            self._frags[from_client] = held + data
            return
        self._frags[from_client] = b""
        if held is None:
            return  # the last DT of a skipped oversized TSDU
        if held:
            data = held + data
        if data:
            self._tsdu(data, from_client)

    # -- connection TPDUs ------------------------------------------------------------------------

    def _connection_tpdu(self, buf: bytes, pos: int, end: int, code: int, from_client: bool) -> None:
        cotp: dict[str, Any] = {"type": COTP_NAMES[code]}
        fields: dict[str, Any] = {"cotp": cotp}
        # The length indicator counts the code, the references and class, reason or cause.
        fixed = 6 if code == CR or code == CC or code == DR else 5 if code == DC else 4
        if end - pos < fixed:
            self.anomaly("bad_length", f"COTP {COTP_NAMES[code]} TPDU has a length indicator of {end - pos}")
            return
        cotp["dst_ref"] = _H.unpack_from(buf, pos + 1)[0]
        if code == ER:
            cotp["cause"] = buf[pos + 3]
        else:
            cotp["src_ref"] = _H.unpack_from(buf, pos + 3)[0]
        if code == CR or code == CC:
            cotp["class"] = buf[pos + 5] >> 4
            self._cotp_parameters(buf, pos + 6, end, cotp, fields)
        elif code == DR:
            cotp["reason"] = buf[pos + 5]
        self._connection(from_client, code, fields)

    def _cotp_parameters(self, buf: bytes, pos: int, end: int, cotp: dict[str, Any],
                         fields: dict[str, Any]) -> None:  # fmt: skip
        tsaps: dict[str, Any] = {}
        while pos + 2 <= end:
            code, length = buf[pos], buf[pos + 1]
            value = buf[pos + 2 : pos + 2 + length]
            if len(value) < length:
                self.anomaly("bad_length", f"COTP parameter 0x{code:02x} runs past the TPDU")
                break
            if code == 0xC0 and length == 1 and value[0] < 32:
                cotp["tpdu_size"] = 1 << value[0]
            elif code == 0xC1:
                tsaps["src_tsap"] = tsap(value)
            elif code == 0xC2:
                tsaps["dst_tsap"] = tsap(value)
                if length == 2:
                    tsaps["connection_type"] = TSAP_CONNECTION_TYPES.get(value[0], value[0])
                    tsaps["rack"] = value[1] >> 5
                    tsaps["slot"] = value[1] & 0x1F
            pos += 2 + length
        if tsaps:
            fields["tsap"] = tsaps

    def _emit_connection(self, from_client: bool, code: int, fields: dict[str, Any]) -> None:
        tsaps = fields.get("tsap")
        if tsaps is not None and (code == CR or self.src_tsap is None):
            self.src_tsap = tsaps.get("src_tsap", self.src_tsap)
            self.dst_tsap = tsaps.get("dst_tsap", self.dst_tsap)
        emitter = self._connection_emitter()
        function = COTP_FUNCTION_BASE | code
        # Keys name the side that sent the request: the connection and its disconnection.
        if code == CR:
            emitter.request(("cr", from_client), function, "session", fields, from_client=from_client)
        elif code == CC:
            emitter.response(("cr", not from_client), function, "session", fields, from_client=from_client)
        elif code == DR and emitter.pending.peek(("cr", not from_client)) is not None:
            # Refusing a connection request (wrong TSAP, no resources): an error response to the CR.
            emitter.response(("cr", not from_client), function, "session", fields, from_client=from_client,
                             exception=True)  # fmt: skip
        elif code == DR:
            emitter.request(("dr", from_client), function, "session", fields, from_client=from_client)
        elif code == DC:
            emitter.response(("dr", not from_client), function, "session", fields, from_client=from_client)
        else:
            emitter.response(None, function, "session", fields, from_client=from_client, exception=True)
