"""IEC 60870-5-104 (TCP 2404): APCI framing and sequence numbers, ASDU header, command qualifiers.

Checked against IEC 60870-5-104 (APCI, section 5), IEC 60870-5-101 section 7 (type identifications,
cause of transmission, information element formats) and Wireshark's packet-iec104.c field
definitions (``iec60870_104.*`` / ``iec60870_asdu.*``).

Message model (the framework has requests and responses only, IEC 104 has more roles):

* U-frames are ``session``; an ``act`` is a request, its ``con`` the paired response (TESTFR may be
  started by either station, so the pairing key remembers who sent the ``act``).
* S-frames acknowledge the peer's I-frames: an unpaired response of class ``session``, whichever
  station sends it.
* I-frames carry one ASDU; ``function`` is its type identification and the operation class
  follows DOMAIN.md section 5. The cause of transmission decides the role: activation and
  deactivation (COT 6/8) are requests keyed by (type id, common address, first IOA), answered by
  the confirmation (COT 7/9) or a negative mirror (COT 44-47) with the same key; a read command
  (C_RD_NA_1, COT 5) is answered by the monitor-direction ASDU the station returns with COT 5 for
  that address. Activation termination (COT 10) follows an already answered command and is an
  unpaired response. Everything else (spontaneous, periodic, interrogated reports and the like)
  is a request when the controlling station (the client) sends it and an unpaired response when
  the controlled station (the server) does: monitor-direction data is a report, never a request.
* For S- and U-frames ``function`` is 0x100 plus the first control octet (0x101 S, 0x107 STARTDT
  act, 0x10B STARTDT con, ...), so APCI codes never collide with type ids (0..255).

Per direction the decoder follows N(S) (a jump is a ``sequence_gap``) and the peer's N(R), and
records on each message how many I-frames it acknowledged (``acked``, for the w check) and, on
I-frames, how many of the sender's I-frames are still unacknowledged (``unacked``, for the k check).

Malformed APDUs that still show a start octet and a length are decoded as far as they go, with an
anomaly, the way Wireshark shows them; bytes that cannot start an APDU are skipped by the framer.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE

if TYPE_CHECKING:
    from agent.flows import Flow

START = 0x68
MIN_APDU = 4  # the four control octets
MAX_APDU = 253  # 104 section 5.1: the APDU length field is at most 253
SEQ_MOD = 1 << 15  # N(S) and N(R) are 15-bit counters
ASDU_HEADER = 6  # type id, VSQ, COT, originator address, common address (2 octets in 104)
IOA_LEN = 3

_H = struct.Struct("<H")
_h = struct.Struct("<h")
_f = struct.Struct("<f")
_I = struct.Struct("<I")

# U-format control octet -> function name (104 section 5.3); exactly one function bit is set.
U_FUNCTIONS = {
    0x07: "startdt_act",
    0x0B: "startdt_con",
    0x13: "stopdt_act",
    0x23: "stopdt_con",
    0x43: "testfr_act",
    0x83: "testfr_con",
}
_U_CON_TO_ACT = {0x0B: 0x07, 0x23: 0x13, 0x83: 0x43}
S_FUNCTION = 0x101
U_FUNCTION_BASE = 0x100

TYPE_NAMES = {
    1: "M_SP_NA_1", 2: "M_SP_TA_1", 3: "M_DP_NA_1", 4: "M_DP_TA_1", 5: "M_ST_NA_1", 6: "M_ST_TA_1",
    7: "M_BO_NA_1", 8: "M_BO_TA_1", 9: "M_ME_NA_1", 10: "M_ME_TA_1", 11: "M_ME_NB_1", 12: "M_ME_TB_1",
    13: "M_ME_NC_1", 14: "M_ME_TC_1", 15: "M_IT_NA_1", 16: "M_IT_TA_1", 17: "M_EP_TA_1", 18: "M_EP_TB_1",
    19: "M_EP_TC_1", 20: "M_PS_NA_1", 21: "M_ME_ND_1",
    30: "M_SP_TB_1", 31: "M_DP_TB_1", 32: "M_ST_TB_1", 33: "M_BO_TB_1", 34: "M_ME_TD_1", 35: "M_ME_TE_1",
    36: "M_ME_TF_1", 37: "M_IT_TB_1", 38: "M_EP_TD_1", 39: "M_EP_TE_1", 40: "M_EP_TF_1", 41: "S_IT_TC_1",
    45: "C_SC_NA_1", 46: "C_DC_NA_1", 47: "C_RC_NA_1", 48: "C_SE_NA_1", 49: "C_SE_NB_1", 50: "C_SE_NC_1",
    51: "C_BO_NA_1", 58: "C_SC_TA_1", 59: "C_DC_TA_1", 60: "C_RC_TA_1", 61: "C_SE_TA_1", 62: "C_SE_TB_1",
    63: "C_SE_TC_1", 64: "C_BO_TA_1", 70: "M_EI_NA_1",
    81: "S_CH_NA_1", 82: "S_RP_NA_1", 83: "S_AR_NA_1", 84: "S_KR_NA_1", 85: "S_KS_NA_1", 86: "S_KC_NA_1",
    87: "S_ER_NA_1", 88: "S_UC_NA_1", 90: "S_US_NA_1", 91: "S_UQ_NA_1", 92: "S_UR_NA_1", 93: "S_UK_NA_1",
    94: "S_UA_NA_1", 95: "S_UF_NA_1",
    100: "C_IC_NA_1", 101: "C_CI_NA_1", 102: "C_RD_NA_1", 103: "C_CS_NA_1", 105: "C_RP_NA_1",
    107: "C_TS_TA_1", 110: "P_ME_NA_1", 111: "P_ME_NB_1", 112: "P_ME_NC_1", 113: "P_AC_NA_1",
    120: "F_FR_NA_1", 121: "F_SR_NA_1", 122: "F_SC_NA_1", 123: "F_LS_NA_1", 124: "F_AF_NA_1",
    125: "F_SG_NA_1", 126: "F_DR_TA_1", 127: "F_SC_NB_1",
}  # fmt: skip

# DOMAIN.md section 5. 41 S_IT_TC_1 (IEC 60870-5-7 security statistics) is a monitor-direction
# integrated total, so a report like 1-40. 104 C_TS_NA_1 and 106 C_CD_NA_1 exist only in IEC 101:
# in 104 they are unknown, like the reserved ranges 22-29, 42-44, 52-57, 65-69, 71-80, 96-99, ...
OPERATION_BY_TYPE: dict[int, str] = {
    **{t: "read" for t in (*range(1, 22), *range(30, 42), 100, 101, 102)},
    **{t: "operate" for t in (45, 46, 47, 51, 58, 59, 60, 64)},
    **{t: "write" for t in (48, 49, 50, 61, 62, 63)},
    103: "time",
    70: "diagnostic",
    107: "diagnostic",
    105: "mode",
    **{t: "config" for t in range(110, 114)},
    **{t: "file" for t in range(120, 128)},
    **{t: "auth" for t in range(81, 96)},
}

# Octets of one information element (without its IOA), IEC 60870-5-101 7.3; types whose elements
# have a variable length (F_SG_NA_1, the IEC 62351-5 S_* types) are absent and not length-checked.
ELEMENT_SIZE = {
    1: 1, 2: 4, 3: 1, 4: 4, 5: 2, 6: 5, 7: 5, 8: 8, 9: 3, 10: 6, 11: 3, 12: 6, 13: 5, 14: 8, 15: 5,
    16: 8, 17: 6, 18: 7, 19: 7, 20: 5, 21: 2, 30: 8, 31: 8, 32: 9, 33: 12, 34: 10, 35: 10, 36: 12,
    37: 12, 38: 10, 39: 11, 40: 11, 41: 13,
    45: 1, 46: 1, 47: 1, 48: 3, 49: 3, 50: 5, 51: 4, 58: 8, 59: 8, 60: 8, 61: 10, 62: 10, 63: 12, 64: 11,
    70: 1, 100: 1, 101: 1, 102: 0, 103: 7, 105: 1, 107: 9, 110: 3, 111: 3, 112: 5, 113: 1,
    120: 6, 121: 7, 122: 4, 123: 5, 124: 4, 126: 13, 127: 16,
}  # fmt: skip

# Causes of transmission (101 7.2.3 and IEC 60870-5-7 for 14-16); 48-63 are for special use.
# 0, 17-19, 42 and 43 are undefined.
COT_ACT, COT_ACTCON, COT_DEACT, COT_DEACTCON, COT_ACTTERM, COT_REQ = 6, 7, 8, 9, 10, 5
_REQUEST_COTS = frozenset({COT_ACT, COT_DEACT})
_CONFIRM_COTS = frozenset({COT_ACTCON, COT_DEACTCON, 44, 45, 46, 47})  # 44-47: unknown type/COT/CA/IOA
VALID_COTS = frozenset({*range(1, 17), *range(20, 42), *range(44, 64)})
_MONITOR_TYPES = frozenset(range(1, 45))  # 101 7.2.1.1: <1..44> process information in monitor direction
C_RD_NA_1 = 102

# Command qualifiers of the first information object: type ids per qualifier layout.
_SCO = frozenset({45, 58})
_DCO = frozenset({46, 59})
_RCO = frozenset({47, 60})
_SETPOINT_NVA = frozenset({48, 61})
_SETPOINT_SVA = frozenset({49, 62})
_SETPOINT_FLOAT = frozenset({50, 63})
_BITSTRING = frozenset({51, 64})
_QUALIFIER_FIELDS = {100: "qoi", 101: "qcc", 105: "qrp", 70: "coi", 113: "qpa"}


def message_length(buf: bytes, off: int, avail: int) -> int:
    """Start octet 0x68 and an APDU length of 4..253; the control field is checked by ``parse``."""
    if buf[off] != START:
        return INVALID
    if avail < 2:
        return NEED_MORE
    length = buf[off + 1]
    if length < MIN_APDU or length > MAX_APDU:
        return INVALID
    return length + 2


def _well_formed(buf: bytes, off: int, length: int) -> bool:
    """Strict APCI check for the probe: a valid U/S control field, or an I-frame with a known ASDU."""
    c1 = buf[off + 2]
    if c1 & 1 == 0:
        if length < 2 + MIN_APDU + ASDU_HEADER or buf[off + 4] & 1:
            return False
        return buf[off + 6] in OPERATION_BY_TYPE and buf[off + 8] & 0x3F in VALID_COTS
    if length != 2 + MIN_APDU:
        return False
    if c1 & 3 == 1:
        return c1 == 1 and buf[off + 3] == 0 and buf[off + 4] & 1 == 0
    return c1 in U_FUNCTIONS and buf[off + 3] == 0 and buf[off + 4] == 0 and buf[off + 5] == 0


def probe(payload: bytes, to_server: bool) -> bool:
    """One or more whole, well-formed APDUs filling the payload exactly."""
    end = len(payload)
    if end < 2 + MIN_APDU:
        return False
    off = 0
    while off < end:
        n = message_length(payload, off, end - off)
        if n <= 0 or off + n > end or not _well_formed(payload, off, n):
            return False
        off += n
    return True


def classify(type_id: int) -> str:
    return OPERATION_BY_TYPE.get(type_id, "unknown")


def cp56time(buf: bytes, off: int) -> str:
    """CP56Time2a (101 7.2.6.18) as ISO 8601 local time of the station (no zone is carried)."""
    ms = _H.unpack_from(buf, off)[0]
    year = 2000 + (buf[off + 6] & 0x7F)
    month = buf[off + 5] & 0x0F
    day = buf[off + 4] & 0x1F
    hour = buf[off + 3] & 0x1F
    minute = buf[off + 2] & 0x3F
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{ms // 1000:02d}.{ms % 1000:03d}"


class Iec104Decoder(MessageDecoder):
    protocol = "iec104"
    # Per direction, indexed by int(from_client): the N(S) expected next, and the N(R) last
    # received from the peer (None until seen: a capture may start mid-connection).
    __slots__ = ("acked", "next_tx")

    message_length = staticmethod(message_length)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.next_tx: list[int | None] = [None, None]
        self.acked: list[int | None] = [None, None]

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        c1 = buf[off + 2]
        if c1 & 1 == 0:
            self._i_frame(buf, off, length, from_client)
        elif c1 & 3 == 1:
            self._s_frame(buf, off, length, from_client)
        else:
            self._u_frame(buf, off, length, from_client)

    # -- APCI ------------------------------------------------------------------------------------

    def _u_frame(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        c1 = buf[off + 2]
        function = U_FUNCTION_BASE | c1
        name = U_FUNCTIONS.get(c1)
        fields: dict[str, Any] = {"apci_type": "U"}
        if length != 2 + MIN_APDU:
            self.anomaly("bad_length", f"IEC 104 U-frame with APDU length {length - 2} (must be 4)")
        if name is None:
            self.anomaly("bad_u_function", f"IEC 104 U-frame control octet 0x{c1:02x} is not one function")
            operation = "unknown"
        else:
            fields["u_function"] = name
            operation = "session"
            if buf[off + 3] or buf[off + 4] or buf[off + 5]:
                self.anomaly("bad_control_field", "IEC 104 U-frame with non-zero control octets 2-4")
        if name is not None and name.endswith("_act"):
            self.request(("U", c1, from_client), function, operation, fields, from_client)
        elif name is not None:
            self.response(("U", _U_CON_TO_ACT[c1], not from_client), function, operation, fields, from_client)
        elif from_client:
            self.request(None, function, operation, fields, from_client)
        else:
            self.response(None, function, operation, fields, from_client)

    def _s_frame(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        nr = _H.unpack_from(buf, off + 4)[0] >> 1
        fields: dict[str, Any] = {"apci_type": "S", "rx_seq": nr}
        if length != 2 + MIN_APDU:
            self.anomaly("bad_length", f"IEC 104 S-frame with APDU length {length - 2} (must be 4)")
        if buf[off + 2] != 1 or buf[off + 3] or buf[off + 4] & 1:
            self.anomaly("bad_control_field", "IEC 104 S-frame with reserved control bits set")
        self._acknowledge(from_client, nr, fields)
        self.response(None, S_FUNCTION, "session", fields, from_client)

    def _sequence(self, from_client: bool, ns: int, nr: int, fields: dict[str, Any]) -> None:
        side = int(from_client)
        expected = self.next_tx[side]
        if expected is not None and ns != expected:
            self.anomaly("sequence_gap", f"IEC 104 N(S) {ns} from the {_side(from_client)}, "
                         f"expected {expected}")  # fmt: skip
            self.acked[side] = None  # the outstanding window is unknown after a jump
        elif expected is None and ns == 0 and self.acked[side] is None:
            self.acked[side] = 0  # the connection's first I-frame: nothing was outstanding before
        self.next_tx[side] = (ns + 1) % SEQ_MOD
        self._acknowledge(from_client, nr, fields)
        acked = self.acked[side]
        if acked is not None:
            fields["unacked"] = (ns + 1 - acked) % SEQ_MOD

    def _acknowledge(self, from_client: bool, nr: int, fields: dict[str, Any]) -> None:
        """N(R) from one side acknowledges the other side's I-frames up to nr - 1."""
        peer = int(not from_client)
        sent = self.next_tx[peer]
        before = self.acked[peer]
        if sent is not None:
            ahead = (nr - sent) % SEQ_MOD
            if before is not None and (nr - before) % SEQ_MOD > (sent - before) % SEQ_MOD:
                self.anomaly("bad_ack", f"IEC 104 N(R) {nr} from the {_side(from_client)} is outside the "
                             f"unacknowledged range {before}..{sent}")  # fmt: skip
            elif before is None and 0 < ahead < SEQ_MOD // 2:
                self.anomaly("bad_ack", f"IEC 104 N(R) {nr} from the {_side(from_client)} acknowledges "
                             f"I-frames not yet sent (next N(S) {sent})")  # fmt: skip
            elif before is not None:
                fields["acked"] = (nr - before) % SEQ_MOD
        self.acked[peer] = nr

    # -- ASDU ------------------------------------------------------------------------------------

    def _i_frame(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        ns = _H.unpack_from(buf, off + 2)[0] >> 1
        nr = _H.unpack_from(buf, off + 4)[0] >> 1
        fields: dict[str, Any] = {"apci_type": "I", "tx_seq": ns, "rx_seq": nr}
        if buf[off + 4] & 1:
            self.anomaly("bad_control_field", "IEC 104 I-frame with the reserved bit of N(R) set")
        self._sequence(from_client, ns, nr, fields)
        a = off + 2 + MIN_APDU
        end = off + length
        size = end - a
        if size < ASDU_HEADER:
            self._truncated(buf, a, size, from_client, fields)
            return
        type_id = buf[a]
        vsq = buf[a + 1]
        cause = buf[a + 2]
        objects = vsq & 0x7F
        sq = bool(vsq & 0x80)
        cot = cause & 0x3F
        negative = bool(cause & 0x40)
        ca = _H.unpack_from(buf, a + 4)[0]
        fields.update(type_id=type_id, sq=sq, objects=objects, cot=cot, negative=negative,
                      test=bool(cause & 0x80), originator=buf[a + 3], common_address=ca)  # fmt: skip
        name = TYPE_NAMES.get(type_id)
        if name is not None:
            fields["type_name"] = name
        operation = classify(type_id)
        if operation == "unknown":
            self._unknown_type(type_id)
        if cot not in VALID_COTS:
            self.anomaly("bad_cot", f"IEC 104 cause of transmission {cot} is not defined")
        body = a + ASDU_HEADER
        ioa = buf[body] | buf[body + 1] << 8 | buf[body + 2] << 16 if end - body >= IOA_LEN else None
        if ioa is not None:
            fields["ioa"] = ioa
        element = ELEMENT_SIZE.get(type_id)
        if element is not None:
            if sq:  # one IOA, then the elements
                expected = IOA_LEN + objects * element if objects else 0
            else:
                expected = objects * (IOA_LEN + element)
            if end - body != expected:
                self.anomaly("bad_length", f"IEC 104 {name} with {objects} objects needs {expected} octets "
                             f"of information objects, has {end - body}")  # fmt: skip
            if ioa is not None and end - body >= IOA_LEN + element:
                self._element(type_id, buf, body + IOA_LEN, fields)
        self._emit(type_id, cot, negative, ca, ioa, operation, fields, from_client)

    def _truncated(self, buf: bytes, a: int, size: int, from_client: bool, fields: dict[str, Any]) -> None:
        """An I-frame too short for the ASDU header: report what is there, unpaired."""
        self.anomaly("truncated_asdu", f"IEC 104 I-frame with {size} ASDU octets (the header needs 6)")
        type_id = 0
        operation = "unknown"
        if size >= 1:
            type_id = buf[a]
            fields["type_id"] = type_id
            operation = classify(type_id)
            if operation == "unknown":
                self._unknown_type(type_id)
        if size >= 2:
            fields["sq"] = bool(buf[a + 1] & 0x80)
            fields["objects"] = buf[a + 1] & 0x7F
        if from_client:
            self.request(None, type_id, operation, fields, from_client)
        else:
            self.response(None, type_id, operation, fields, from_client)

    def _unknown_type(self, type_id: int) -> None:
        self.anomaly("unknown_type_id", f"IEC 104 type identification {type_id} is not defined for 104")

    def _element(self, type_id: int, buf: bytes, e: int, fields: dict[str, Any]) -> None:
        """Qualifier and value of the first information element of commands and parameters."""
        if type_id in _SCO:
            fields["sco_on"] = bool(buf[e] & 1)
            self._qualifier_of_command(buf[e], fields)
        elif type_id in _DCO or type_id in _RCO:
            state = buf[e] & 3
            fields["dco_on" if type_id in _DCO else "rco_up"] = state
            if state == 0 or state == 3:
                self.anomaly("bad_command_state", f"IEC 104 {TYPE_NAMES[type_id]} with state {state}, "
                             "which is not permitted")  # fmt: skip
            self._qualifier_of_command(buf[e], fields)
        elif type_id in _SETPOINT_NVA or type_id in _SETPOINT_SVA:
            raw = _h.unpack_from(buf, e)[0]
            fields["value"] = raw / 32768 if type_id in _SETPOINT_NVA else raw
            self._qualifier_of_setpoint(buf[e + 2], fields)
        elif type_id in _SETPOINT_FLOAT:
            value = _f.unpack_from(buf, e)[0]
            fields["value"] = value if math.isfinite(value) else None  # EVE is strict JSON: no NaN
            self._qualifier_of_setpoint(buf[e + 4], fields)
        elif type_id in _BITSTRING:
            fields["bitstring"] = _I.unpack_from(buf, e)[0]
        elif type_id == 103:
            fields["cp56time"] = cp56time(buf, e)
        else:
            qualifier = _QUALIFIER_FIELDS.get(type_id)
            if qualifier is not None:
                fields[qualifier] = buf[e]

    @staticmethod
    def _qualifier_of_command(octet: int, fields: dict[str, Any]) -> None:
        fields["qu"] = (octet >> 2) & 0x1F
        fields["se"] = "select" if octet & 0x80 else "execute"

    @staticmethod
    def _qualifier_of_setpoint(octet: int, fields: dict[str, Any]) -> None:
        fields["ql"] = octet & 0x7F
        fields["se"] = "select" if octet & 0x80 else "execute"

    def _emit(self, type_id: int, cot: int, negative: bool, ca: int, ioa: int | None, operation: str,
              fields: dict[str, Any], from_client: bool) -> None:  # fmt: skip
        """Request or response by cause of transmission and sender (see the module docstring)."""
        key = (type_id, ca, ioa)
        if cot in _REQUEST_COTS:
            self.request(key, type_id, operation, fields, from_client)
        elif cot in _CONFIRM_COTS:
            self.response(key, type_id, operation, fields, from_client, exception=negative or cot >= 44)
        elif cot == COT_ACTTERM:
            self.response(None, type_id, operation, fields, from_client, exception=negative)
        elif cot == COT_REQ and type_id == C_RD_NA_1:
            self.request((C_RD_NA_1, ca, ioa), type_id, operation, fields, from_client)
        elif cot == COT_REQ and not from_client and type_id in _MONITOR_TYPES:
            self.response((C_RD_NA_1, ca, ioa), type_id, operation, fields, from_client, exception=negative)
        elif from_client:
            self.request(None, type_id, operation, fields, from_client)
        else:
            self.response(None, type_id, operation, fields, from_client, exception=negative)


def _side(from_client: bool) -> str:
    return "client" if from_client else "server"


SPEC = ProtocolSpec(
    name="iec104",
    tcp_ports=frozenset({2404}),
    udp_ports=frozenset(),
    probe=probe,
    factory=Iec104Decoder,
)
