"""DNP3 (IEEE 1815) over TCP and UDP 20000: link frames, transport reassembly, application layer.

The three layers as the standard stacks them:

* link: a 10-byte header (0x05 0x64, length, control, destination, source, header CRC) followed by
  the user data in blocks of up to 16 bytes, each followed by its own CRC-16/DNP. Over TCP the
  length field frames the stream (10 + data + 2 per block, data = length - 5); a UDP datagram holds
  one or more whole frames. A CRC mismatch drops the frame, as a DNP3 device would.
* transport: one byte (FIN, FIR, 6-bit sequence) opens each frame's user data; the segments of one
  application fragment are joined per direction and link address pair, within bounds.
* application: control (FIR, FIN, CON, UNS, 4-bit sequence), function code, the internal
  indications (IIN) on responses, then object headers (group, variation, qualifier, range or count),
  each followed by its objects. The objects are walked only far enough to list the headers, which
  is what classifies a Write (g50 time, g80 IIN, g70 file, ...).

Function codes and operation classes follow DOMAIN.md section 5, checked against IEEE 1815-2012 and
Wireshark's packet-dnp field definitions; object sizes against IEEE 1815-2012 and opendnp3's object
model. A response pairs with its request by the application sequence number of the master/outstation
address pair; the later fragments of a multi-fragment response carry the next sequence numbers and
take the class of the same request.
"""

from __future__ import annotations

import functools
import struct
import sys
from array import array
from typing import TYPE_CHECKING, Any

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE

if TYPE_CHECKING:
    from agent.flows import Flow

HEADER_LEN = 10
BLOCK = 16  # user data bytes per CRC block
MIN_LENGTH = 5  # the length field counts control, destination and source, then the user data
# A fragment longer than 64 maximum-size transport segments (249 application bytes each) cannot
# be told apart from a replay of the 6-bit transport sequence: broken or hostile.
MAX_FRAGMENT = 64 * 249
MAX_PARTIAL = 16  # fragments being reassembled at once per flow (multi-drop behind one connection)
MAX_CONTINUATIONS = 16  # multi-fragment responses in progress per flow
MAX_OBJECT_HEADERS = 256  # walked per fragment
MAX_LISTED_OBJECTS = 32  # object headers listed in the EVE record

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ADDRS = struct.Struct("<HH")  # destination, source
_UINT = {1: _U8, 2: _U16, 4: _U32}


def _crc_byte_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA6BC if c & 1 else c >> 1  # 0xA6BC is the polynomial 0x3D65 bit-reversed
        table.append(c)
    return tuple(table)


_CRC_BYTE = _crc_byte_table()
# Two bytes per step: the register is 16 bits wide, so once a little-endian word is XORed into it
# the next register value depends on that XOR alone. Every frame's header and blocks are checked,
# so halving the Python-level steps is worth a 128 KiB table, built on first use.
_CRC_WORD: array[int] | None = None


def _crc_word_table() -> array[int]:
    """W[lo | hi << 8] = (B[lo] >> 8) ^ B[hi ^ (B[lo] & 0xFF)], with B the byte table.

    Built a row (one ``hi``) at a time with byte-string operations in C: the row's indexes are the
    low bytes of B XORed with ``hi``, and each byte of B's entries is gathered with
    ``bytes.translate``. About 1 ms, where one Python expression per entry took 30 ms: a start-up
    cost that every capture with DNP3 in it paid.
    """
    global _CRC_WORD
    if _CRC_WORD is None:
        low_of = bytes(c & 0xFF for c in _CRC_BYTE)
        high_of = bytes(c >> 8 for c in _CRC_BYTE)
        index = int.from_bytes(low_of, "little")  # B[lo] & 0xFF, lo = 0..255
        carried = int.from_bytes(high_of, "little")  # B[lo] >> 8, XORed into each entry's low byte
        ones = int.from_bytes(b"\x01" * 256, "little")
        out = bytearray(2 * 65536)
        for hi in range(256):
            idx = (index ^ hi * ones).to_bytes(256, "little")
            row = 512 * hi
            out[row : row + 512 : 2] = (int.from_bytes(idx.translate(low_of), "little") ^ carried).to_bytes(
                256, "little"
            )
            out[row + 1 : row + 512 : 2] = idx.translate(high_of)
        table = array("H")
        table.frombytes(bytes(out))  # little-endian pairs
        if sys.byteorder == "big":
            table.byteswap()
        _CRC_WORD = table
    return _CRC_WORD


_WORDS = tuple(struct.Struct(f"<{n}H") for n in range(BLOCK // 2 + 1))


def crc16_dnp(buf: bytes, off: int, n: int) -> int:
    """CRC-16/DNP of ``buf[off:off+n]`` for ``n`` <= 16 (poly 0x3D65 reflected, init 0, xor out 0xFFFF)."""
    crc = 0
    table = _CRC_WORD or _crc_word_table()
    for word in _WORDS[n >> 1].unpack_from(buf, off):
        crc = table[crc ^ word]
    if n & 1:
        crc = (crc >> 8) ^ _CRC_BYTE[(crc ^ buf[off + n - 1]) & 0xFF]
    return crc ^ 0xFFFF


def frame_length(length_field: int) -> int:
    """Bytes on the wire of a link frame whose length field is ``length_field`` (>= 5)."""
    data = length_field - MIN_LENGTH
    return HEADER_LEN + data + 2 * ((data + BLOCK - 1) // BLOCK)


def message_length(buf: bytes, off: int, avail: int) -> int:
    # Reject on the bytes already there, so that resynchronising does not stop at a partial header.
    if buf[off] != 0x05 or (avail > 1 and buf[off + 1] != 0x64) or (avail > 2 and buf[off + 2] < MIN_LENGTH):
        return INVALID
    if avail < HEADER_LEN:
        return NEED_MORE
    # The header CRC is what makes the length trustworthy, and resynchronisation reliable.
    if crc16_dnp(buf, off, 8) != _U16.unpack_from(buf, off + 8)[0]:
        return INVALID
    return frame_length(buf[off + 2])


def probe(payload: bytes, to_server: bool) -> bool:
    """A link header with start bytes, a plausible length and a good header CRC (2^-32 by chance)."""
    return len(payload) >= HEADER_LEN and message_length(payload, 0, len(payload)) > 0


# Link layer control byte and function codes (IEEE 1815-2012, data link layer).
DIR, PRM, FCB, FCV = 0x80, 0x40, 0x20, 0x10
PRIMARY_FUNCTIONS = frozenset({0, 1, 2, 3, 4, 9})  # reset link, reset process, test, user data x2, status
SECONDARY_FUNCTIONS = frozenset({0, 1, 11, 14, 15})  # ack, nack, link status, not functioning, unsupported
USER_DATA_FUNCTIONS = (3, 4)
BROADCAST = 0xFFFD  # 0xFFFD-0xFFFF: broadcast destinations, never answered with a response

# Transport and application control bits.
TR_FIN, TR_FIR = 0x80, 0x40
AL_FIR, AL_FIN, AL_CON, AL_UNS = 0x80, 0x40, 0x20, 0x10

FC_CONFIRM = 0
FC_WRITE = 2
FC_RESPONSE = 129
FC_UNSOLICITED_RESPONSE = 130
FC_AUTH_RESPONSE = 131
RESPONSE_FUNCTIONS = (FC_RESPONSE, FC_UNSOLICITED_RESPONSE, FC_AUTH_RESPONSE)

OPERATION_BY_FUNCTION = {
    0: "session",
    1: "read", 28: "read",
    2: "write",
    **{fc: "operate" for fc in range(3, 13)},  # select, operate, direct operate (no ack), freezes
    13: "mode", 14: "mode", 16: "mode", 17: "mode", 18: "mode",
    15: "config", 19: "config", 21: "config", 22: "config",
    20: "subscribe",
    23: "time", 24: "time",
    25: "file", 26: "file", 27: "file", 29: "file", 30: "file",
    31: "program",  # activate configuration: DOMAIN.md says to treat it as a program change
    32: "auth", 33: "auth",
}  # fmt: skip
# Requests that are not paired: those the outstation does not answer (confirm, the "no ack"
# operate/freezes, auth no-ack), and the authentication request (32), which an authentication
# response (131) answers. Secure authentication wraps a critical request: the outstation challenges
# it (131), the master replies (32), then the outstation answers the critical request itself (129),
# which must still find that request pending.
UNPAIRED_FUNCTIONS = frozenset({0, 6, 8, 10, 12, 32, 33})
# Requests whose object headers carry no object values (only index or size prefixes); the freezes
# at a time (11, 12) are the exception for their g50 time object.
HEADER_ONLY_FUNCTIONS = frozenset({1, 7, 8, 9, 10, 11, 12, 15, 16, 17, 18, 19, 20, 21, 22})
FREEZE_AT_TIME = (11, 12)
# Object groups that make a Write something more specific, most significant first: authentication
# keys, file transport, device attributes and deadbands (settings), time, the IIN (clearing the
# restart indication acknowledges a restart).
WRITE_GROUP_OPERATIONS = (
    (120, "auth"), (70, "file"), (0, "config"), (34, "config"), (50, "time"), (80, "session"),
)  # fmt: skip
FILE_GROUP = 70

IIN_INDICATORS = (
    (0x0100, "all_stations"), (0x0200, "class_1_events"), (0x0400, "class_2_events"),
    (0x0800, "class_3_events"), (0x1000, "need_time"), (0x2000, "local_control"),
    (0x4000, "device_trouble"), (0x8000, "device_restart"), (0x0001, "no_func_code_support"),
    (0x0002, "object_unknown"), (0x0004, "parameter_error"), (0x0008, "event_buffer_overflow"),
    (0x0010, "already_executing"), (0x0020, "config_corrupt"), (0x0040, "reserved_2"), (0x0080, "reserved_1"),
)  # fmt: skip
# IIN2 bits saying the request was not carried out: function unsupported, object unknown,
# parameter error, operation already executing.
IIN_REQUEST_ERRORS = 0x0001 | 0x0002 | 0x0004 | 0x0010


@functools.lru_cache(maxsize=256)
def _iin_indicators(iin: int) -> tuple[str, ...]:
    """Names of the internal indication bits set in ``iin`` (a device repeats the same few values)."""
    return tuple(name for bit, name in IIN_INDICATORS if iin & bit)


# The link and application control bytes as EVE objects, one per byte value, built once: copied per
# message rather than built from eight bit tests each time.
_LINK_CONTROL = tuple(
    {
        "dir": bool(c & DIR),
        "prm": bool(c & PRM),
        "fcb": bool(c & FCB),
        "fcv": bool(c & FCV),
        "function": c & 0x0F,
    }
    for c in range(256)
)
_APPLICATION_CONTROL = tuple(
    {"fir": bool(c & AL_FIR), "fin": bool(c & AL_FIN), "con": bool(c & AL_CON), "uns": bool(c & AL_UNS),
     "sequence": c & 0x0F}
    for c in range(256)
)  # fmt: skip

# Link control bytes of user data that ``_link_checks`` has nothing to say about: primary, function
# 3 (confirmed, FCV set) or 4 (unconfirmed, FCV clear), any DIR and FCB.
_PLAIN_USER_DATA = frozenset(
    c for c in range(256) if c & PRM and ((c & 0x0F == 3 and c & FCV) or (c & 0x0F == 4 and not c & FCV))
)

# Qualifier: index/size prefix code (bits 4-6) and range specifier code (bits 0-3).
INDEX_WIDTH = (0, 1, 2, 4)  # prefix codes 0-3
SIZE_WIDTH = {4: 1, 5: 2, 6: 4}  # prefix codes 4-6: each object starts with its size
RANGE_WIDTH = {0: 1, 1: 2, 2: 4, 3: 1, 4: 2, 5: 4}  # start/stop indexes or virtual addresses
COUNT_WIDTH = {7: 1, 8: 2, 9: 4, 11: 1}  # object count (11: free format)
NO_RANGE = 6
RESERVED_RANGE_CODES = frozenset({10, 12, 13, 14, 15})

# Bytes per object of the fixed-size objects (IEEE 1815-2012 annex A).
OBJECT_SIZES = {
    (1, 2): 1, (2, 1): 1, (2, 2): 7, (2, 3): 3, (3, 2): 1, (4, 1): 1, (4, 2): 7, (4, 3): 3,
    (10, 2): 1, (11, 1): 1, (11, 2): 7, (12, 1): 11, (12, 2): 11, (13, 1): 1, (13, 2): 7,
    (20, 1): 5, (20, 2): 3, (20, 3): 5, (20, 4): 3, (20, 5): 4, (20, 6): 2, (20, 7): 4, (20, 8): 2,
    (21, 1): 5, (21, 2): 3, (21, 3): 5, (21, 4): 3, (21, 5): 11, (21, 6): 9, (21, 7): 11, (21, 8): 9,
    (21, 9): 4, (21, 10): 2, (21, 11): 4, (21, 12): 2,
    **{(group, v): size for group in (22, 23)
       for v, size in ((1, 5), (2, 3), (3, 5), (4, 3), (5, 11), (6, 9), (7, 11), (8, 9))},
    (30, 1): 5, (30, 2): 3, (30, 3): 4, (30, 4): 2, (30, 5): 5, (30, 6): 9,
    (31, 1): 5, (31, 2): 3, (31, 3): 11, (31, 4): 9, (31, 5): 4, (31, 6): 2, (31, 7): 5, (31, 8): 9,
    **{(group, v): size for group in (32, 33, 42, 43)
       for v, size in ((1, 5), (2, 3), (3, 11), (4, 9), (5, 5), (6, 9), (7, 11), (8, 15))},
    (34, 1): 2, (34, 2): 4, (34, 3): 4,
    (40, 1): 5, (40, 2): 3, (40, 3): 5, (40, 4): 9, (41, 1): 5, (41, 2): 3, (41, 3): 5, (41, 4): 9,
    (50, 1): 6, (50, 2): 10, (50, 3): 6, (50, 4): 11, (51, 1): 6, (51, 2): 6, (52, 1): 2, (52, 2): 2,
    (101, 1): 2, (101, 2): 4, (101, 3): 8, (102, 1): 1,
    (120, 3): 6, (120, 4): 2, (121, 1): 7, (122, 1): 7, (122, 2): 13,
}  # fmt: skip
# Bit-packed objects: bits per object, the header's objects packed into whole bytes.
PACKED_BITS = {(1, 1): 1, (3, 1): 2, (10, 1): 1, (12, 3): 1, (80, 1): 1}
DEVICE_ATTRIBUTES = 0  # g0: each object is data type, length, value
OCTET_STRING_GROUPS = range(110, 114)  # octet strings and virtual terminal: the variation is the size


def classify(fc: int, groups: set[int]) -> str:
    """Operation class of a request with function code ``fc`` carrying objects of ``groups``."""
    if fc == FC_WRITE:
        for group, specific in WRITE_GROUP_OPERATIONS:
            if group in groups:
                return specific
    elif fc == 1 and FILE_GROUP in groups:
        return "file"  # reading a file's data blocks (g70v5) polled after Open File
    return OPERATION_BY_FUNCTION.get(fc, "unknown")


class _Partial:
    """An application fragment being put together from transport segments."""

    __slots__ = ("data", "next_seq", "segments")

    def __init__(self, data: bytes, seq: int) -> None:
        self.data = bytearray(data)
        self.next_seq = (seq + 1) & 0x3F
        self.segments = 1


class Dnp3Decoder(MessageDecoder):
    protocol = "dnp3"
    # _partial: (from_client, source, destination) -> fragment being reassembled;
    # _continuations: (master, outstation) -> (next application sequence, operation class) of a
    # multi-fragment response whose first fragment matched a request.
    __slots__ = ("_continuations", "_partial")

    message_length = staticmethod(message_length)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self._partial: dict[tuple[bool, int, int], _Partial] = {}
        self._continuations: dict[tuple[int, int], tuple[int, str]] = {}

    def close(self, reason: str) -> None:
        self._partial.clear()
        self._continuations.clear()
        super().close(reason)

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if self.flow.proto == 6:
            # The stream framer hands over exactly one frame whose header it has checked.
            self._frame(buf, off, length, from_client)
            return
        end = off + length
        start = off
        while off < end:
            n = message_length(buf, off, end - off)
            if n == INVALID:
                self.anomaly("bad_header", f"no valid DNP3 link header (0x0564, length >= 5, header CRC) "
                             f"at datagram offset {off - start}")  # fmt: skip
                return
            if n == NEED_MORE or off + n > end:
                self.anomaly("truncated_frame", f"DNP3 frame at datagram offset {off - start} runs past "
                             f"the end of the datagram")  # fmt: skip
                return
            self._frame(buf, off, n, from_client)
            off += n

    # -- link layer ------------------------------------------------------------------------------

    def _frame(self, buf: bytes, off: int, n: int, from_client: bool) -> None:
        control = buf[off + 3]
        dst, src = _ADDRS.unpack_from(buf, off + 4)
        if (control not in _PLAIN_USER_DATA or buf[off + 2] == MIN_LENGTH) and not self._link_checks(
            buf, off, control
        ):
            return  # not user data, or nothing to decode (the checks have said why)
        pos = off + HEADER_LEN
        end = off + n
        chunks = []
        while pos < end:
            size = min(BLOCK, end - pos - 2)
            if crc16_dnp(buf, pos, size) != _U16.unpack_from(buf, pos + size)[0]:
                self._bad_crc(src, dst, pos - off)
                return
            chunks.append(buf[pos : pos + size])
            pos += size + 2
        # (joining one block hands back that block itself, without a copy)
        self._transport(b"".join(chunks), src, dst, control, from_client)

    def _link_checks(self, buf: bytes, off: int, control: int) -> bool:
        """Report what is wrong with a frame's link control and length; True when its user data
        is still to be decoded (a frame with a wrong FCV bit, say, is recorded all the same)."""
        function = control & 0x0F
        primary = control & PRM
        if function not in (PRIMARY_FUNCTIONS if primary else SECONDARY_FUNCTIONS):
            kind = "primary" if primary else "secondary"
            self.anomaly("unknown_link_function", f"DNP3 link {kind} function {function} is not defined")
        data_len = buf[off + 2] - MIN_LENGTH
        if not primary or function not in USER_DATA_FUNCTIONS:
            if data_len:
                kind = "primary" if primary else "secondary"
                self.anomaly("unexpected_link_data", f"DNP3 link {kind} function {function} carries data")
            return False
        if not data_len:
            self.anomaly("bad_length", "DNP3 user data frame with no user data")
            return False
        if bool(control & FCV) != (function == 3):
            # Confirmed user data must be frame-count checked and unconfirmed must not (IEEE 1815-2012):
            # a device discards the frame, but what it tried to say is still worth recording.
            self.anomaly(
                "bad_link_control", f"DNP3 link function {function} with FCV={int(bool(control & FCV))}"
            )
        return True

    def _bad_crc(self, src: int, dst: int, at: int) -> None:
        self.anomaly("bad_crc", f"DNP3 frame from {src} to {dst}: CRC mismatch in the data block at frame "
                     f"byte {at}; frame dropped")  # fmt: skip

    # -- transport layer -------------------------------------------------------------------------

    def _transport(self, user: bytes, src: int, dst: int, control: int, from_client: bool) -> None:
        th = user[0]
        seq = th & 0x3F
        key = (from_client, src, dst)
        partials = self._partial
        if th & TR_FIR:
            dropped = partials.pop(key, None)
            if dropped is not None:
                self.anomaly("transport_incomplete", f"DNP3 fragment from {src} to {dst} abandoned after "
                             f"{dropped.segments} segments: a new one began")  # fmt: skip
            if th & TR_FIN:
                self._application(user[1:], src, dst, control, 1, from_client)
                return
            if len(partials) >= MAX_PARTIAL:
                oldest = next(iter(partials))
                del partials[oldest]
                self.anomaly("transport_evicted", f"more than {MAX_PARTIAL} DNP3 fragments in reassembly; "
                             f"the oldest (from {oldest[1]} to {oldest[2]}) was dropped")  # fmt: skip
            partials[key] = _Partial(user[1:], seq)
            return
        partial = partials.get(key)
        if partial is None:
            self.anomaly("transport_orphan", f"DNP3 transport segment {seq} from {src} to {dst} without "
                         f"a first segment")  # fmt: skip
            return
        if seq != partial.next_seq:
            if seq == (partial.next_seq - 1) & 0x3F:
                return  # a repeated segment (link-layer retry): the transport function discards it
            del partials[key]
            self.anomaly("transport_sequence", f"DNP3 transport segment {seq} from {src} to {dst}, expected "
                         f"{partial.next_seq}; fragment dropped")  # fmt: skip
            return
        partial.data += user[1:]
        partial.segments += 1
        partial.next_seq = (seq + 1) & 0x3F
        if len(partial.data) > MAX_FRAGMENT:
            del partials[key]
            self.anomaly("fragment_too_long", f"DNP3 fragment from {src} to {dst} exceeds {MAX_FRAGMENT} "
                         f"bytes; dropped")  # fmt: skip
            return
        if th & TR_FIN:
            del partials[key]
            self._application(bytes(partial.data), src, dst, control, partial.segments, from_client)

    # -- application layer -----------------------------------------------------------------------

    def _application(self, data: bytes, src: int, dst: int, control: int, segments: int,
                     from_client: bool) -> None:  # fmt: skip
        if len(data) < 2:
            self.anomaly("short_fragment", f"DNP3 application fragment of {len(data)} bytes from {src}")
            return
        ac, fc = data[0], data[1]
        fields: dict[str, Any] = {"src": src, "dst": dst}
        if self._listening:  # the decoded control bytes only for a reader (see DecoderContext)
            # the link control of the frame that completed the fragment (copies: each message owns its
            # fields)
            fields["link_control"] = _LINK_CONTROL[control].copy()
            fields["application_control"] = _APPLICATION_CONTROL[ac].copy()
        fields["function_code"] = fc
        if segments > 1:
            fields["transport_segments"] = segments
        if fc in RESPONSE_FUNCTIONS or (fc not in OPERATION_BY_FUNCTION and not control & DIR):
            self._response(data, fc, ac, src, dst, fields, from_client)
        else:
            self._request(data, fc, ac, src, dst, fields, from_client)

    def _request(self, data: bytes, fc: int, ac: int, src: int, dst: int, fields: dict[str, Any],
                 from_client: bool) -> None:  # fmt: skip
        groups = self._objects(data, 2, fc, False, fields)
        operation = classify(fc, groups)
        if operation == "unknown":
            self.anomaly("unknown_function", f"unknown DNP3 application function code {fc}")
        if ac & (AL_FIR | AL_FIN) != AL_FIR | AL_FIN:
            self.anomaly("bad_app_control", f"DNP3 request (function {fc}) without both FIR and FIN set")
        if ac & AL_UNS and fc != FC_CONFIRM:
            self.anomaly("bad_app_control", f"DNP3 request (function {fc}) with the UNS bit set")
        answered = fc not in UNPAIRED_FUNCTIONS and dst < BROADCAST
        self.request((src, dst, ac & 0x0F) if answered else None, fc, operation, fields, from_client)

    def _response(self, data: bytes, fc: int, ac: int, src: int, dst: int, fields: dict[str, Any],
                  from_client: bool) -> None:  # fmt: skip
        iin = 0
        if len(data) >= 4:
            iin = data[2] << 8 | data[3]
            if self._listening:
                fields["iin"] = {"value": iin, "indicators": list(_iin_indicators(iin))}
            self._objects(data, 4, fc, True, fields)
        else:
            fields["objects"] = []
            self.anomaly("short_fragment", f"DNP3 response (function {fc}) without internal indications")
        if fc == FC_UNSOLICITED_RESPONSE:
            if not ac & AL_UNS:
                self.anomaly("bad_app_control", "DNP3 unsolicited response without the UNS bit")
            self.response(None, fc, "subscribe", fields, from_client)
            return
        if fc != FC_RESPONSE:
            # 131 (authentication challenge, reply or status) leaves any request pending, see
            # UNPAIRED_FUNCTIONS; any other code here is undefined.
            operation = "auth" if fc == FC_AUTH_RESPONSE else "unknown"
            if operation == "unknown":
                self.anomaly("unknown_function", f"unknown DNP3 application function code {fc}")
            self.response(None, fc, operation, fields, from_client)
            return
        if ac & AL_UNS:
            self.anomaly("bad_app_control", "DNP3 solicited response with the UNS bit set")
        seq = ac & 0x0F
        pair = (dst, src)
        exception = bool(iin & IIN_REQUEST_ERRORS)
        continuation = None if ac & AL_FIR else self._continuations.get(pair)
        if continuation is not None and continuation[0] == seq:
            operation = self.response(None, fc, continuation[1], fields, from_client, exception)
        else:
            operation = self.response((dst, src, seq), fc, "unknown", fields, from_client, exception)
        continuations = self._continuations
        if ac & AL_FIN:
            continuations.pop(pair, None)
            return
        if pair not in continuations and len(continuations) >= MAX_CONTINUATIONS:
            del continuations[next(iter(continuations))]
        continuations[pair] = ((seq + 1) & 0x0F, operation)

    def _objects(self, data: bytes, pos: int, fc: int, response: bool, fields: dict[str, Any]) -> set[int]:
        """List the object headers in ``fields["objects"]``; return the groups seen.

        Stops, with an anomaly, at the first header it cannot step over: the rest of the fragment
        cannot be located without knowing that object's size.
        """
        end = len(data)
        objects: list[dict[str, Any]] = []
        listed = MAX_LISTED_OBJECTS if self._listening else 0  # headers to list (see DecoderContext)
        groups: set[int] = set()
        headers = 0
        header_only = not response and fc in HEADER_ONLY_FUNCTIONS
        while pos < end:
            if headers == MAX_OBJECT_HEADERS:
                self.anomaly(
                    "too_many_objects", f"DNP3 fragment with more than {MAX_OBJECT_HEADERS} object headers"
                )
                break
            if end - pos < 3:
                self._bad_object(fc, "object header truncated")
                break
            group, variation, qualifier = data[pos], data[pos + 1], data[pos + 2]
            pos += 3
            headers += 1
            groups.add(group)
            obj: dict[str, Any] = {"group": group, "variation": variation, "qualifier": qualifier}
            if len(objects) < listed:
                objects.append(obj)
            prefix, code = qualifier >> 4 & 0x07, qualifier & 0x0F
            if qualifier & 0x80 or prefix == 7 or code in RESERVED_RANGE_CODES:
                self.anomaly(
                    "bad_qualifier", f"DNP3 g{group}v{variation}: reserved qualifier 0x{qualifier:02x}"
                )
                break
            if code == NO_RANGE:
                obj["all"] = True
                continue
            width = RANGE_WIDTH.get(code)
            if width is not None:
                if end - pos < 2 * width:
                    self._bad_object(fc, f"g{group}v{variation} range truncated")
                    break
                start = _UINT[width].unpack_from(data, pos)[0]
                stop = _UINT[width].unpack_from(data, pos + width)[0]
                pos += 2 * width
                if stop < start:
                    self.anomaly(
                        "bad_range", f"DNP3 g{group}v{variation}: range stop {stop} below start {start}"
                    )
                    break
                obj["range"] = [start, stop]
                count = stop - start + 1
            else:
                width = COUNT_WIDTH[code]
                if end - pos < width:
                    self._bad_object(fc, f"g{group}v{variation} count truncated")
                    break
                count = _UINT[width].unpack_from(data, pos)[0]
                pos += width
                obj["count"] = count
            pos = self._skip_objects(data, pos, fc, group, variation, prefix, code, count, header_only)
            if pos < 0:
                break
        fields["objects"] = objects
        if headers > len(objects):
            fields["objects_omitted"] = headers - len(objects)
        return groups

    def _skip_objects(self, data: bytes, pos: int, fc: int, group: int, variation: int, prefix: int,
                      code: int, count: int, header_only: bool) -> int:  # fmt: skip
        """Offset after the ``count`` objects of one header, or -1 (anomaly reported)."""
        end = len(data)
        size_width = SIZE_WIDTH.get(prefix)
        if code == 11 and 1 <= prefix <= 3:
            size_width = INDEX_WIDTH[prefix]  # free format: prefix codes 1-3 give the size field's width
        if size_width is not None:
            # Each object starts with its own size (file transfer, authentication, data sets, ...).
            unpack = _UINT[size_width].unpack_from
            for _ in range(count):
                if end - pos < size_width:
                    break
                pos += size_width + unpack(data, pos)[0]
                if pos > end:
                    break
            else:
                return pos
            self._bad_object(fc, f"g{group}v{variation} object sizes run past the fragment")
            return -1
        index = INDEX_WIDTH[prefix]
        if header_only and not (group == 50 and fc in FREEZE_AT_TIME):
            need = count * index
        elif (bits := PACKED_BITS.get((group, variation))) is not None:
            if index:
                self._bad_object(fc, f"bit-packed g{group}v{variation} with an index prefix")
                return -1
            need = (count * bits + 7) // 8
        elif (size := OBJECT_SIZES.get((group, variation))) is not None:
            need = count * (index + size)
        elif group in OCTET_STRING_GROUPS:
            need = count * (index + variation)  # variation 0: empty strings
        elif group == DEVICE_ATTRIBUTES and variation:
            for _ in range(count):
                pos += index + 2
                if pos > end:
                    break
                pos += data[pos - 1]
                if pos > end:
                    break
            else:
                return pos
            self._bad_object(fc, f"g0v{variation} device attributes run past the fragment")
            return -1
        else:
            self.anomaly("unknown_object", f"DNP3 object g{group}v{variation} has no known size; the rest of "
                         f"the fragment is not walked")  # fmt: skip
            return -1
        if need > end - pos:
            self._bad_object(fc, f"{count} g{group}v{variation} objects need {need} bytes, {end - pos} left")
            return -1
        return pos + need

    def _bad_object(self, fc: int, detail: str) -> None:
        self.anomaly("bad_object", f"DNP3 function {fc}: {detail}")


SPEC = ProtocolSpec(
    name="dnp3",
    tcp_ports=frozenset({20000}),
    udp_ports=frozenset({20000}),
    probe=probe,
    factory=Dnp3Decoder,
)
