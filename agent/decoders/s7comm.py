"""S7comm and S7comm-plus over ISO-on-TCP (RFC 1006 TPKT + ISO 8073 COTP class 0, TCP 102).

Checked against RFC 1006, ISO 8073 (X.224) for the COTP TPDUs, and Wireshark's packet-tpkt.c,
packet-cotp.c and packet-s7comm.c (``cotp.*`` / ``s7comm.*`` fields) for S7comm; S7comm-plus against
Thomas Wiens' s7comm_plus dissector and cisagov's ICSNPP s7comm analyzer.

Framing (agent.decoders.cotp): every TPKT packet is one COTP TPDU; data TPDUs are joined into one
TSDU, which carries one S7comm (0x32) or S7comm-plus (0x72) PDU.

TCP 102 is shared with IEC 61850 MMS (agent.decoders.mms), which uses the same TPKT/COTP connection.
The probe on port 102 looks past the CR/CC at the first DT (see agent.decoders.cotp): the registry
holds the connection TPDUs meanwhile and replays them once S7 data shows, so S7 connections keep
them (the TSAPs say which rack, slot and connection resource the client asked for). Should the
data later turn out not to be S7 (the decoder was forced onto a port), the decoder detaches itself
and leaves the flow to ``iso-tsap``. On other ports the probe (``SPEC_ANY_PORT``) requires a DT
carrying an S7comm or S7comm-plus header.

Message model and ``function`` (ranges chosen so the codes of the different message kinds never
collide within a protocol):

* COTP connection TPDUs are ``session``: CR is a request answered by CC (or refused by DR), DR by
  DC; ``function`` is 0x100 | TPDU code (0x1E0 CR, 0x1D0 CC, 0x180 DR, 0x1C0 DC, 0x170 ER).
* S7comm Job (ROSCTR 1) is a request keyed by the PDU reference, answered by Ack (2) or Ack_Data
  (3); ``function`` is the parameter function code (0x04 read var, 0x28 PI service, ...). Jobs
  may come from the PLC (download block, download ended), so the key includes the sender.
* S7comm Userdata (7): type request/response pairs by PDU reference, push (indication) is an
  unsolicited response; ``function`` is 0x10000 | group << 8 | subfunction, group and type in
  current Wireshark numbering (2-bit type, 6-bit group: NC programming is group 0x3f).
* S7comm-plus: requests (opcode 0x31) pair with responses (0x32, 0x02) by sequence number,
  notifications (0x33) are unsolicited responses; ``function`` is the function code (0x054c
  GetMultiVariables, ...) or 0x100 | opcode when there is none (0x133 notification, 0x1FF
  keep-alive). Every S7comm-plus message is ``opaque`` (DOMAIN.md section 5: integrity protected),
  whatever its function: the effect of SetVariable or Invoke depends on object ids (a CPU stop is a
  SetVariable). TLS inside an S7comm-plus connection (TIA Portal V17 and later) is recorded as
  opaque data with ``function`` 0.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.cotp import (
    DC,
    DR,
    DT,
    ER,
    MIN_TPKT,
    CotpDecoder,
    first_data_tpdu,
    message_length,
)
from agent.decoders.message import MessageDecoder
from agent.decoders.s7_szl import IDENTITY_LISTS, SzlParts, szl_contents

if TYPE_CHECKING:
    from agent.flows import Flow

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_HH = struct.Struct("!HH")
_HHH = struct.Struct("!HHH")
_S7 = struct.Struct("!BBHHHH")  # protocol id, ROSCTR, redundancy id, PDU reference, param length, data length
_SEQ = struct.Struct("!I")

MAX_DEFERRED = 8  # COTP connection TPDUs held back while the protocol is not yet known
MAX_ITEMS = 20  # items listed in EVE (the count is always given)
MAX_BLOCKS = 16  # blocks of a PI service listed in EVE

S7COMM_ID = 0x32
S7COMM_PLUS_ID = 0x72
_SEQ_MOD = 1 << 32  # S7comm-plus sequence numbers
_SEQ_HALF = 1 << 31

USERDATA_FUNCTION_BASE = 0x10000
PLUS_OPCODE_FUNCTION_BASE = 0x100

JOB, ACK, ACK_DATA, USERDATA = 1, 2, 3, 7
ROSCTR_NAMES = {JOB: "Job", ACK: "Ack", ACK_DATA: "Ack_Data", USERDATA: "Userdata"}

JOB_FUNCTION_NAMES = {
    0x00: "CPU services", 0x01: "Mode transition", 0xF0: "Setup communication", 0x04: "Read Var",
    0x05: "Write Var", 0x1A: "Request download", 0x1B: "Download block", 0x1C: "Download ended",
    0x1D: "Start upload", 0x1E: "Upload", 0x1F: "End upload", 0x28: "PI-Service", 0x29: "PLC Stop",
}  # fmt: skip
SETUP, READ_VAR, WRITE_VAR, PI_SERVICE, PLC_STOP = 0xF0, 0x04, 0x05, 0x28, 0x29
JOB_OPERATION = {
    SETUP: "session", READ_VAR: "read", WRITE_VAR: "write",
    0x1A: "program", 0x1B: "program", 0x1C: "program",  # download = logic PG -> PLC
    0x1D: "upload", 0x1E: "upload", 0x1F: "upload",  # upload = logic PLC -> PG
    PLC_STOP: "mode",
}  # fmt: skip
# Wireshark names 0x00 and 0x01 but nothing documents what they do: "unknown", without an anomaly.
UNCLASSIFIED_FUNCTIONS = frozenset({0x00, 0x01})

# PI services (Wireshark's pi_service_names). The _N_ prefix marks SINUMERIK NC services.
PI_OPERATION = {
    "_INSE": "program", "_INS2": "program", "_DELE": "program", "_MODU": "program", "_GARB": "program",
    "P_PROGRAM": "mode",
}  # fmt: skip
PI_NC_OPERATION = {"_N_LOGIN_": "auth", "_N_LOGOUT": "auth", "_N_NEWPWD": "auth"}

ERROR_CLASS_NAMES = {0x00: "No error", 0x81: "Application relationship", 0x82: "Object definition",
                     0x83: "No resources available", 0x84: "Error on service processing",
                     0x85: "Error on supplies", 0x87: "Access error"}  # fmt: skip

AREA_NAMES = {0x01: "RECORD", 0x03: "SI200", 0x05: "SF200", 0x06: "AI200", 0x07: "AO", 0x80: "P", 0x81: "I",
              0x82: "Q", 0x83: "M", 0x84: "DB", 0x85: "DI", 0x86: "L", 0x87: "V", 0x1C: "C", 0x1D: "T",
              0x1E: "C200", 0x1F: "T200"}  # fmt: skip
TIMER_COUNTER_AREAS = frozenset({0x1C, 0x1D, 0x1E, 0x1F})  # address is a number, not byte.bit
SYNTAX_S7ANY = 0x10
BIT_LENGTH_SIZES = frozenset({3, 4, 5})  # data transport sizes whose length counts bits
BLOCK_TYPES = {"08": "OB", "09": "CMod", "0A": "DB", "0B": "SDB", "0C": "FC", "0D": "SFC", "0E": "FB",
               "0F": "SFB"}  # fmt: skip

# Userdata: type (2 bits) and function group (6 bits), current Wireshark numbering.
UD_PUSH, UD_REQUEST, UD_RESPONSE = 0, 1, 2
UD_TYPE_NAMES = {UD_PUSH: "push", UD_REQUEST: "request", UD_RESPONSE: "response"}
MODE_TRANSITION = 0x01  # userdata parameter function byte of a mode-transition indication
SYNTAX_EXT = 0x12  # userdata parameter with data unit reference, last-unit flag and error code
SYNTAX_PBC_USEND = 0x13
GROUP_MODE, GROUP_TIS, GROUP_CYCLIC, GROUP_BLOCK, GROUP_CPU = 0x00, 0x01, 0x02, 0x03, 0x04
GROUP_SECURITY, GROUP_PBC, GROUP_TIME, GROUP_DRR, GROUP_NC = 0x05, 0x06, 0x07, 0x20, 0x3F
GROUP_NAMES = {GROUP_MODE: "Mode-transition", GROUP_TIS: "Programmer commands",
               GROUP_CYCLIC: "Cyclic services", GROUP_BLOCK: "Block functions", GROUP_CPU: "CPU functions",
               GROUP_SECURITY: "Security", GROUP_PBC: "PBC BSEND", GROUP_TIME: "Time functions",
               GROUP_DRR: "DR Routing", GROUP_NC: "NC programming"}  # fmt: skip
SUBF_READ_SZL = 0x01
MODE_NAMES = {0: "STOP", 1: "Warm Restart", 2: "RUN", 3: "Hot Restart", 4: "HOLD", 6: "Cold Restart",
              9: "RUN_R (H-System redundant)", 11: "LINK-UP", 12: "UPDATE"}  # fmt: skip
SUBFUNCTION_NAMES: dict[int, dict[int, str]] = {
    GROUP_MODE: MODE_NAMES,  # the subfunction of a mode-transition indication is the new mode
    GROUP_TIS: {0x01: "Block status", 0x02: "Variable status", 0x03: "Output ISTACK", 0x04: "Output BSTACK",
                0x05: "Output LSTACK", 0x06: "Time measurement from to", 0x07: "Force selection",
                0x08: "Modify variable", 0x09: "Force", 0x0A: "Breakpoint", 0x0B: "Exit HOLD",
                0x0C: "Memory reset", 0x0D: "Disable job", 0x0E: "Enable job", 0x0F: "Delete job",
                0x10: "Read job list", 0x11: "Read job", 0x12: "Replace job", 0x13: "Block status v2",
                0x16: "Flash LED"},
    GROUP_CYCLIC: {0x01: "Cyclic transfer", 0x04: "Unsubscribe", 0x05: "Change driven transfer",
                   0x07: "Change driven transfer modify", 0x08: "RDREC"},
    GROUP_BLOCK: {0x01: "List blocks", 0x02: "List blocks of type", 0x03: "Get block info"},
    GROUP_CPU: {0x01: "Read SZL", 0x02: "Message service", 0x03: "Diagnostic message",
                0x05: "ALARM_8 indication", 0x06: "NOTIFY indication", 0x07: "ALARM_8 lock",
                0x08: "ALARM_8 unlock", 0x09: "SCAN indication", 0x0B: "ALARM ack",
                0x0C: "ALARM ack indication", 0x0D: "ALARM lock indication", 0x0E: "ALARM unlock indication",
                0x10: "AR_SEND indication", 0x11: "ALARM_SQ indication", 0x12: "ALARM_S indication",
                0x13: "ALARM query", 0x16: "NOTIFY_8 indication"},
    GROUP_SECURITY: {0x01: "PLC password"},
    GROUP_TIME: {0x01: "Read clock", 0x02: "Set clock", 0x03: "Read clock (following)", 0x04: "Set clock"},
    GROUP_DRR: {0x01: "DRR Init", 0x02: "DRR Finish", 0x03: "DRR Data"},
    GROUP_NC: {0x01: "Request download", 0x02: "Download block", 0x03: "Continue download",
               0x04: "Download ended", 0x06: "Start upload", 0x07: "Upload", 0x08: "Continue upload"},
}  # fmt: skip
# Operation class per (group, subfunction): DOMAIN.md section 5, pinned to current Wireshark numbering.
UD_OPERATION: dict[int, dict[int, str]] = {
    GROUP_TIS: {
        0x01: "diagnostic", 0x02: "read", 0x08: "write", 0x09: "operate", 0x0A: "mode", 0x0C: "mode",
        0x16: "diagnostic",
        # Exit HOLD resumes a program stopped at a breakpoint, like the breakpoint itself.
        0x0B: "mode",
        # Stack read-outs, run-time measurement, force selection (which addresses are forced), the
        # management of test jobs and block status v2: debugging read-outs.
        0x03: "diagnostic", 0x04: "diagnostic", 0x05: "diagnostic", 0x06: "diagnostic", 0x07: "diagnostic",
        0x0D: "diagnostic", 0x0E: "diagnostic", 0x0F: "diagnostic", 0x10: "diagnostic", 0x11: "diagnostic",
        0x12: "diagnostic", 0x13: "diagnostic",
    },
    # RDREC reads a module's data record once; the others set up or feed cyclic transfers.
    GROUP_CYCLIC: {0x08: "read"},
    GROUP_CPU: {
        0x01: "diagnostic", 0x03: "diagnostic", 0x0B: "operate", 0x0C: "operate",
        # Registering for alarms and events, and the PLC's indications to those registered.
        0x02: "subscribe", 0x05: "subscribe", 0x06: "subscribe", 0x09: "subscribe", 0x10: "subscribe",
        0x11: "subscribe", 0x12: "subscribe", 0x16: "subscribe",
        # Locking an alarm changes how it is handled, like acknowledging it.
        0x07: "operate", 0x08: "operate", 0x0D: "operate", 0x0E: "operate",
        0x13: "read",  # an HMI's query of the active alarms
    },
    GROUP_TIME: {0x01: "read", 0x03: "read", 0x02: "time", 0x04: "time"},
}  # fmt: skip
# Groups whose every subfunction has the same class; groups absent from both maps are unknown.
UD_GROUP_OPERATION = {
    GROUP_CYCLIC: "subscribe",
    GROUP_BLOCK: "diagnostic",
    GROUP_SECURITY: "auth",
    GROUP_PBC: "write",  # BSEND puts data into the partner's receive block
    GROUP_DRR: "config",  # engineering tools reading and writing field-device data records
    GROUP_NC: "program",
}
# Mode-transition indications report the PLC's new mode; they command nothing.
MODE_TRANSITION_OPERATION = "diagnostic"
# S7comm-plus
PLUS_REQUEST, PLUS_RESPONSE, PLUS_NOTIFICATION, PLUS_RESPONSE2 = 0x31, 0x32, 0x33, 0x02
PLUS_OPCODE_NAMES = {PLUS_REQUEST: "Request", PLUS_RESPONSE: "Response", PLUS_NOTIFICATION: "Notification",
                     PLUS_RESPONSE2: "Response2"}  # fmt: skip
PLUS_FUNCTION_NAMES = {
    0x04BB: "Explore", 0x04CA: "CreateObject", 0x04D4: "DeleteObject", 0x04F2: "SetVariable",
    0x04FC: "GetVariable", 0x0506: "AddLink", 0x0510: "RemoveLink", 0x051A: "GetLink",
    0x0524: "SetMultiVariables", 0x0542: "SetMultiVariables", 0x054C: "GetMultiVariables",
    0x0556: "BeginSequence", 0x0560: "EndSequence", 0x056B: "Invoke", 0x057C: "SetVarSubStreamed",
    0x0586: "GetVarSubStreamed", 0x0590: "GetVariablesAddress", 0x059A: "Abort", 0x05A9: "Error",
    0x05B3: "InitSsl",
}  # fmt: skip
PLUS_KEEPALIVE = 0xFF
PLUS_VERSIONS = frozenset({1, 2, 3, PLUS_KEEPALIVE})
PLUS_V3 = 3  # integrity part (digest length, digest) in front of the data
PLUS_DIGEST = 32
PLUS_OPERATION = "opaque"


def _dt_carries_s7(payload: bytes) -> bool:
    """A class 0 DT at the start of ``payload`` whose user data begins with an S7comm/S7comm-plus header."""
    n = len(payload)
    if n < 11 or payload[4] != 2 or payload[5] != DT:
        return False
    length = int(_H.unpack_from(payload, 2)[0])
    eot = payload[6] & 0x80
    user = length - 7  # user data bytes in this DT
    if payload[7] == S7COMM_ID:
        if payload[8] not in ROSCTR_NAMES or payload[9] or payload[10]:  # redundancy id is reserved (0)
            return False
        if n < 17:
            return True
        plen, dlen = _HHH.unpack_from(payload, 11)[1:]
        total = (12 if payload[8] in (ACK, ACK_DATA) else 10) + int(plen) + int(dlen)
        return total == user if eot else total > user
    if payload[7] == S7COMM_PLUS_ID:
        version = payload[8]
        if version not in PLUS_VERSIONS:
            return False
        if version == PLUS_KEEPALIVE:
            return user == 4
        dlen = int(_H.unpack_from(payload, 9)[0])
        # A whole PDU has a 4-byte trailer; a fragment (COTP or S7comm-plus) is not longer than that.
        return user <= dlen + 8
    return False


def probe(payload: bytes, to_server: bool) -> bool:
    """On port 102: the first DT after the connection request carries S7comm or S7comm-plus.

    A CR/CC alone does not tell S7 from MMS: the registry holds it until the first DT. A connection
    refused or disconnected before any data (a TSAP scan) is the port's main protocol's, S7's.
    """
    off = first_data_tpdu(payload)
    if off < 0:
        return False
    code = payload[off + 5] & 0xF0
    if code == DT:
        return _dt_carries_s7(payload[off:] if off else payload)
    return code == DR or code == DC or code == ER


def probe_any_port(payload: bytes, to_server: bool) -> bool:
    """On other ports only a DT carrying an S7comm/S7comm-plus header: a CR alone is also RDP's start."""
    return (
        len(payload) >= MIN_TPKT and message_length(payload, 0, len(payload)) > 0 and _dt_carries_s7(payload)
    )


def _ascii(value: bytes) -> str:
    return value.decode("latin-1")


def _ascii_digits(text: str) -> bool:
    # str.isdigit alone accepts Latin-1 superscripts ("\u00b9") that int() refuses.
    return text.isascii() and text.isdigit()


def classify_job(function: int, pi_service: str | None = None) -> str:
    """Operation class of a Job (and its acknowledgement) with parameter function ``function``."""
    operation = JOB_OPERATION.get(function)
    if operation is not None:
        return operation
    if function == PI_SERVICE and pi_service is not None:
        return classify_pi_service(pi_service)
    return "unknown"


def classify_pi_service(name: str) -> str:
    operation = PI_OPERATION.get(name)
    if operation is not None:
        return operation
    if name.startswith("_N_"):
        # SINUMERIK: log in/out and passwords are auth, _N_F_* are part-program file services, the
        # rest (tool management, NC settings) are NC-specific.
        return PI_NC_OPERATION.get(name, "file" if name.startswith("_N_F_") else "vendor")
    return "unknown"


def classify_userdata(group: int, subfunction: int) -> str:
    operation = UD_OPERATION.get(group, {}).get(subfunction)
    if operation is not None:
        return operation
    return UD_GROUP_OPERATION.get(group, "unknown")


def _filename_fields(name: bytes, fields: dict[str, Any]) -> None:
    """Block control file name, e.g. "_0A00001P": identifier, block type, number, filesystem."""
    text = _ascii(name)
    fields["filename"] = text
    if len(text) == 9 and text[0] in "_$" and text[1:3] in BLOCK_TYPES:
        fields["file_identifier"] = text[0]
        fields["block_type"] = BLOCK_TYPES[text[1:3]]
        if _ascii_digits(text[3:8]):
            fields["block_number"] = int(text[3:8])
        fields["dest_filesys"] = text[8]


class _PlusMessages(MessageDecoder):
    """Emits the S7comm-plus messages of a connection read by ``S7commDecoder``.

    A second ``MessageDecoder`` because the protocol name (the EVE object name), counters and
    pending table belong to the instance's class; it frames nothing itself.
    """

    protocol = "s7comm_plus"
    __slots__ = ()

    message_length = staticmethod(message_length)

    def at(self, ts: float, cnt: int, source: int) -> None:
        """Time-stamp the next messages with the packet being parsed by the owning decoder."""
        self._ts = ts
        self._cnt = cnt
        self._source = source


class _Deferred(NamedTuple):
    """A COTP connection TPDU held back until the connection's protocol is known."""

    ts: float
    cnt: int
    source: int
    from_client: bool
    code: int
    fields: dict[str, Any]


_UNDECIDED, _S7COMM, _S7COMM_PLUS, _DETACHED = 0, 1, 2, 3


class S7commDecoder(CotpDecoder):
    """One ISO-on-TCP connection: COTP, then S7comm or S7comm-plus (see the module docstring)."""

    protocol = "s7comm"
    __slots__ = ("_deferred", "_kind", "_plus", "_plus_first", "_szl_parts")

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        # Per direction: the header of an S7comm-plus PDU whose fragments have not all arrived.
        self._plus_first: list[tuple[int, dict[str, Any], int | None] | None] = [None, None]
        self._deferred: list[_Deferred] = []
        self._kind = _UNDECIDED
        self._plus: _PlusMessages | None = None
        self._szl_parts = SzlParts()  # SZL answers in several parts (identity lists only)

    # -- framing ---------------------------------------------------------------------------------

    def continue_on(self, flow: Flow) -> None:
        super().continue_on(flow)
        if self._plus is not None:
            self._plus.continue_on(flow)

    def _on_gap(self, kind: str, detail: str) -> None:
        self._plus_first = [None, None]
        super()._on_gap(kind, detail)

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if self._kind != _DETACHED:
            super().parse(buf, off, length, from_client)

    def _tsdu(self, data: bytes, from_client: bool) -> None:
        first = data[0]
        if self._kind == _UNDECIDED:
            if first == S7COMM_ID:
                self._decide(_S7COMM)
            elif first == S7COMM_PLUS_ID:
                self._decide(_S7COMM_PLUS)
            else:
                # Not S7 (IEC 61850 MMS starts with an ISO session SPDU): leave the flow alone.
                self._kind = _DETACHED
                self._deferred.clear()
                self.flow.app = None
                self.flow.app_proto = "iso-tsap"
                return
        if first == S7COMM_ID:
            self._s7(data, from_client)
        elif first == S7COMM_PLUS_ID:
            self._s7plus(data, from_client)
        elif self._kind == _S7COMM_PLUS:
            self._plus_opaque(data, from_client)
        else:
            self.anomaly("bad_protocol_id", f"COTP data starts with 0x{first:02x}, not S7comm (0x32) or "
                         "S7comm-plus (0x72)")  # fmt: skip

    def _decide(self, kind: int) -> None:
        self._kind = kind
        if kind == _S7COMM_PLUS:
            self.flow.app_proto = "s7comm_plus"
        deferred = self._deferred
        self._deferred = []
        ts, cnt, source = self._ts, self._cnt, self._source
        for d in deferred:
            self._ts, self._cnt, self._source = d.ts, d.cnt, d.source
            self._emit_connection(d.from_client, d.code, d.fields)
        self._ts, self._cnt, self._source = ts, cnt, source

    def close(self, reason: str) -> None:
        if self._kind == _UNDECIDED and self._deferred:
            # Connection TPDUs and no data (a refused connection, a TSAP scan): report them as S7,
            # the port's main protocol.
            self._decide(_S7COMM)
        super().close(reason)
        if self._plus is not None:
            self._plus.close(reason)

    def _emitter(self, plus_pdu: bool) -> MessageDecoder:
        """Who reports a message: S7comm-plus PDUs, and COTP TPDUs of S7comm-plus connections, go to
        the s7comm_plus emitter."""
        if not plus_pdu and self._kind != _S7COMM_PLUS:
            return self
        plus = self._plus
        if plus is None:
            plus = self._plus = _PlusMessages(self.flow, self.ctx, self.initiator_is_client)
        plus.at(self._ts, self._cnt, self._source)
        return plus

    # -- COTP connection TPDUs -------------------------------------------------------------------

    def _connection(self, from_client: bool, code: int, fields: dict[str, Any]) -> None:
        if self._kind != _UNDECIDED:
            self._emit_connection(from_client, code, fields)
        elif len(self._deferred) >= MAX_DEFERRED:
            self.anomaly("unexpected_tpdu", f"more than {MAX_DEFERRED} COTP connection TPDUs before any data")
        else:
            self._deferred.append(_Deferred(self._ts, self._cnt, self._source, from_client, code, fields))

    def _connection_emitter(self) -> MessageDecoder:
        return self._emitter(False)

    # -- S7comm ----------------------------------------------------------------------------------

    def _s7(self, pdu: bytes, from_client: bool) -> None:
        n = len(pdu)
        if n < 10:
            self.anomaly("bad_length", f"S7comm PDU of {n} bytes is shorter than its header")
            return
        _, rosctr, _, pdu_ref, plen, dlen = _S7.unpack_from(pdu)
        hlen = 12 if rosctr == ACK or rosctr == ACK_DATA else 10
        if n < hlen:
            self.anomaly("bad_length", f"S7comm ROSCTR {rosctr} PDU of {n} bytes is shorter than its header")
            return
        if hlen + plen + dlen != n:
            self.anomaly("bad_length", f"S7comm header announces {plen} parameter and {dlen} data bytes, "
                         f"the PDU has {n - hlen}")  # fmt: skip
        p = hlen
        pend = min(p + plen, n)
        dend = min(pend + dlen, n)
        fields: dict[str, Any] = {"rosctr": rosctr, "rosctr_name": ROSCTR_NAMES.get(rosctr, "unknown"),
                                  "pdu_ref": pdu_ref}  # fmt: skip
        if rosctr == JOB:
            self._job(pdu, p, pend, fields, from_client)
        elif rosctr == ACK or rosctr == ACK_DATA:
            self._ack(pdu, p, pend, dend, fields, from_client)
        elif rosctr == USERDATA:
            self._userdata(pdu, p, pend, dend, fields, from_client)
        else:
            self.anomaly("unknown_rosctr", f"S7comm ROSCTR {rosctr} is not defined")
            if from_client:
                self.request(None, 0, "unknown", fields, from_client=True)
            else:
                self.response(None, 0, "unknown", fields, from_client=False)

    def _job(self, pdu: bytes, p: int, pend: int, fields: dict[str, Any], from_client: bool) -> None:
        if pend <= p:
            self.anomaly("bad_length", "S7comm Job without a parameter part")
            return
        func = pdu[p]
        fields["function_code"] = func
        fields["function_name"] = JOB_FUNCTION_NAMES.get(func, "unknown")
        pi_service: str | None = None
        if func == READ_VAR or func == WRITE_VAR:
            self._request_items(pdu, p, pend, fields)
        elif func == SETUP:
            self._setup(pdu, p, pend, fields)
        elif 0x1A <= func <= 0x1F:
            self._block_control(pdu, func, p, pend, fields)
        elif func == PI_SERVICE:
            pi_service = self._pi_service(pdu, p, pend, fields)
        elif func == PLC_STOP:
            pi_service = self._plc_stop(pdu, p, pend, fields)
        operation = classify_job(func, pi_service)
        if operation == "unknown" and func not in UNCLASSIFIED_FUNCTIONS:
            if func == PI_SERVICE:
                if pi_service is not None:
                    self.anomaly("unknown_pi_service", f"S7comm PI service {pi_service!r} is not known")
            else:
                self.anomaly("unknown_function", f"unknown S7comm Job function 0x{func:02x}")
        self.request(
            ("job", from_client, fields["pdu_ref"]), func, operation, fields, from_client=from_client
        )

    def _ack(
        self, pdu: bytes, p: int, pend: int, dend: int, fields: dict[str, Any], from_client: bool
    ) -> None:
        error_class, error_code = pdu[10], pdu[11]
        fields["error_class"] = error_class
        fields["error_class_name"] = ERROR_CLASS_NAMES.get(error_class, "unknown")
        fields["error_code"] = error_code
        key: Hashable = ("job", not from_client, fields["pdu_ref"])
        if pend > p:
            func = pdu[p]
            fields["function_code"] = func
            fields["function_name"] = JOB_FUNCTION_NAMES.get(func, "unknown")
            if func == READ_VAR:
                self._read_response_items(pdu, p, pend, dend, fields)
            elif func == WRITE_VAR:
                self._write_response_items(pdu, p, pend, dend, fields)
            elif func == SETUP:
                self._setup(pdu, p, pend, fields)
            elif func == 0x1D and pend - p >= 8:
                fields["upload_id"] = _I.unpack_from(pdu, p + 4)[0]
            elif (func == 0x1E or func == 0x1B) and dend > pend:
                fields["data_length"] = dend - pend
        else:
            # An Ack (or a parameter-less Ack_Data) answers a Job without repeating its function.
            request = self.pending.peek(key)
            func = request.function if request is not None else 0
        self.response(key, func, classify_job(func), fields, from_client=from_client,
                      exception=error_class != 0 or error_code != 0)  # fmt: skip

    def _setup(self, pdu: bytes, p: int, pend: int, fields: dict[str, Any]) -> None:
        if pend - p < 8:
            self.anomaly("bad_length", "S7comm Setup communication parameter is shorter than 8 bytes")
            return
        calling, called, pdu_length = _HHH.unpack_from(pdu, p + 2)
        fields.update(max_amq_calling=calling, max_amq_called=called, pdu_length=pdu_length)

    def _request_items(self, pdu: bytes, p: int, pend: int, fields: dict[str, Any]) -> None:
        if pend - p < 2:
            self.anomaly("bad_length", "S7comm Read/Write Var without an item count")
            return
        count = pdu[p + 1]
        fields["item_count"] = count
        items: list[dict[str, Any]] = []
        pos = p + 2
        for i in range(count):
            if pos + 3 > pend or pos + 2 + pdu[pos + 1] > pend:
                self.anomaly("bad_length", f"S7comm item {i + 1} of {count} runs past the parameter part")
                break
            spec_len = pdu[pos + 1]
            syntax = pdu[pos + 2]
            if len(items) < MAX_ITEMS:
                if syntax == SYNTAX_S7ANY and spec_len >= 10:
                    items.append(self._s7any(pdu, pos + 3))
                else:
                    items.append({"syntax_id": syntax})
            pos += 2 + spec_len
            if spec_len % 2 == 1 and i < count - 1:
                pos += 1  # fill byte between items
        fields["items"] = items

    @staticmethod
    def _s7any(pdu: bytes, pos: int) -> dict[str, Any]:
        tsize = pdu[pos]
        length, db = _H.unpack_from(pdu, pos + 1)[0], _H.unpack_from(pdu, pos + 3)[0]
        area = pdu[pos + 5]
        address = pdu[pos + 6] << 16 | _H.unpack_from(pdu, pos + 7)[0]
        item: dict[str, Any] = {"area": area, "area_name": AREA_NAMES.get(area, "unknown"), "db": db,
                                "transport_size": tsize, "length": length}  # fmt: skip
        if area in TIMER_COUNTER_AREAS:
            item["number"] = address & 0xFFFF
        else:
            item["address"] = (address & 0x07FFF8) >> 3
            item["bit"] = address & 7
        return item

    def _read_response_items(self, pdu: bytes, p: int, pend: int, dend: int, fields: dict[str, Any]) -> None:
        count = pdu[p + 1] if pend - p >= 2 else 0
        fields["item_count"] = count
        items: list[dict[str, Any]] = []
        pos = pend
        for i in range(count):
            if pos + 1 > dend:
                self.anomaly("bad_length", f"S7comm read response item {i + 1} of {count} is missing")
                break
            code = pdu[pos]
            item: dict[str, Any] = {"return_code": code}
            if pos + 4 <= dend and (code == 0xFF or code == 0x00 or code == 0x0A):
                tsize, length = pdu[pos + 1], _H.unpack_from(pdu, pos + 2)[0]
                if tsize in BIT_LENGTH_SIZES:
                    length = (length + 7) >> 3
                item["transport_size"] = tsize
                item["length"] = length
                pos += 4
                if code == 0xFF or code == 0x00:
                    pos += length + (length % 2 == 1 and i < count - 1)
            else:
                pos += 4
            if len(items) < MAX_ITEMS:
                items.append(item)
        fields["items"] = items

    def _write_response_items(self, pdu: bytes, p: int, pend: int, dend: int, fields: dict[str, Any]) -> None:
        count = pdu[p + 1] if pend - p >= 2 else 0
        fields["item_count"] = count
        fields["items"] = [
            {"return_code": code} for code in pdu[pend : min(dend, pend + count, pend + MAX_ITEMS)]
        ]

    def _block_control(self, pdu: bytes, func: int, p: int, pend: int, fields: dict[str, Any]) -> None:
        # function, function status, 2 bytes (error code in the "ended" functions), 4 bytes (upload
        # id in the upload functions), then a length-prefixed file name except in Upload/End upload.
        if pend - p < 8:
            self.anomaly("bad_length", f"S7comm {JOB_FUNCTION_NAMES[func]} parameter is shorter than 8 bytes")
            return
        if func >= 0x1D:
            fields["upload_id"] = _I.unpack_from(pdu, p + 4)[0]
        if func == 0x1C or func == 0x1F:
            fields["block_error_code"] = _H.unpack_from(pdu, p + 2)[0]
        if func == 0x1E or func == 0x1F:
            return
        if pend - p < 9 or p + 9 + pdu[p + 8] > pend:
            self.anomaly("bad_length", f"S7comm {JOB_FUNCTION_NAMES[func]} file name runs past the parameter")
            return
        _filename_fields(pdu[p + 9 : p + 9 + pdu[p + 8]], fields)

    def _pi_service(self, pdu: bytes, p: int, pend: int, fields: dict[str, Any]) -> str | None:
        # function, 7 unknown bytes, parameter block length and block, service name length and name.
        if pend - p < 10:
            self.anomaly("bad_length", "S7comm PI-Service parameter is shorter than 10 bytes")
            return None
        block_len = _H.unpack_from(pdu, p + 8)[0]
        block = p + 10
        name_at = block + block_len
        if name_at + 1 > pend or name_at + 1 + pdu[name_at] > pend:
            self.anomaly("bad_length", "S7comm PI-Service name runs past the parameter part")
            return None
        service = _ascii(pdu[name_at + 1 : name_at + 1 + pdu[name_at]])
        fields["pi_service"] = service
        if service == "_INSE" or service == "_DELE" or service == "_INS2":
            # block count, one unknown byte, then 8 characters per block: type, number, filesystem.
            count = pdu[block] if block_len >= 1 else 0
            fields["block_count"] = count
            blocks: list[str] = []
            for i in range(min(count, MAX_BLOCKS)):
                at = block + 2 + 8 * i
                if at + 8 > name_at:
                    self.anomaly("bad_length", f"S7comm {service} block {i + 1} of {count} is missing")
                    break
                name = _ascii(pdu[at : at + 8])
                number = name[2:7]
                number = str(int(number)) if _ascii_digits(number) else number
                blocks.append(BLOCK_TYPES.get(name[:2], name[:2]) + number)
            fields["blocks"] = blocks
        elif block_len and (service == "P_PROGRAM" or service == "_MODU" or service == "_GARB"):
            fields["argument"] = _ascii(pdu[block:name_at])
        return service

    def _plc_stop(self, pdu: bytes, p: int, pend: int, fields: dict[str, Any]) -> str | None:
        # function, 5 unknown bytes, service name length and name (P_PROGRAM).
        if pend - p < 7 or p + 7 + pdu[p + 6] > pend:
            self.anomaly("bad_length", "S7comm PLC Stop service name runs past the parameter part")
            return None
        service = _ascii(pdu[p + 7 : p + 7 + pdu[p + 6]])
        fields["pi_service"] = service
        return service

    def _userdata(self, pdu: bytes, p: int, pend: int, dend: int, fields: dict[str, Any],
                  from_client: bool) -> None:  # fmt: skip
        if pend - p < 8:
            self.anomaly("bad_length", f"S7comm Userdata parameter of {pend - p} bytes is shorter than 8")
            return
        error = 0
        # The parameter's function octet: 0x00 (CPU services) except in mode-transition indications.
        fields["function_code"] = pdu[p]
        fields["function_name"] = JOB_FUNCTION_NAMES.get(pdu[p], "unknown")
        if pdu[p] == MODE_TRANSITION:
            ud_type, group, subfunction = UD_PUSH, GROUP_MODE, pdu[p + 6]
        elif pdu[p + 4] == SYNTAX_PBC_USEND:
            ud_type, group, subfunction = UD_PUSH, GROUP_PBC, 0
        else:
            type_group = pdu[p + 5]
            ud_type, group, subfunction = type_group >> 6, type_group & 0x3F, pdu[p + 6]
            fields["seq_num"] = pdu[p + 7]
            if pdu[p + 4] == SYNTAX_EXT and pend - p >= 12:
                fields["data_unit_ref"] = pdu[p + 8]
                fields["last_data_unit"] = pdu[p + 9] == 0
                error = _H.unpack_from(pdu, p + 10)[0]
                fields["error_code"] = error
        names = SUBFUNCTION_NAMES.get(group, {})
        fields.update(type=UD_TYPE_NAMES.get(ud_type, "unknown"), group=group,
                      group_name=GROUP_NAMES.get(group, "unknown"), subfunction=subfunction,
                      subfunction_name=names.get(subfunction, "unknown"))  # fmt: skip
        if dend - pend >= 4:
            fields["return_code"] = pdu[pend]
            if group == GROUP_CPU and subfunction == SUBF_READ_SZL:
                self._szl(pdu, pend, dend, ud_type, fields, from_client)
        if group == GROUP_MODE:
            operation = MODE_TRANSITION_OPERATION
        else:
            operation = classify_userdata(group, subfunction)
            if operation == "unknown":
                if group in UD_OPERATION:
                    self.anomaly("unknown_subfunction", f"unknown S7comm userdata subfunction "
                                 f"0x{subfunction:02x} in group 0x{group:02x}")  # fmt: skip
                else:
                    self.anomaly("unknown_function", f"unknown S7comm userdata function group 0x{group:02x}")
        function = USERDATA_FUNCTION_BASE | group << 8 | subfunction
        pdu_ref = fields["pdu_ref"]
        if ud_type == UD_REQUEST:
            self.request(("ud", from_client, pdu_ref), function, operation, fields, from_client=from_client)
        elif ud_type == UD_RESPONSE:
            self.response(("ud", not from_client, pdu_ref), function, operation, fields,
                          from_client=from_client, exception=error != 0)  # fmt: skip
        else:
            if ud_type != UD_PUSH:
                self.anomaly("unknown_userdata_type", f"S7comm userdata type {ud_type} is not defined")
            self.response(None, function, operation, fields, from_client=from_client)

    def _szl(self, pdu: bytes, d: int, dend: int, ud_type: int, fields: dict[str, Any],
             from_client: bool) -> None:  # fmt: skip
        # Return code, transport size, length, then SZL-ID and index: in every request that asks
        # for a list and in the first (or only) part of a successful response.
        if ud_type == UD_REQUEST:
            if dend - d >= 8:
                fields["szl_id"], fields["szl_index"] = _HH.unpack_from(pdu, d + 4)
            return
        if pdu[d] != 0xFF:
            return
        unit = fields.get("data_unit_ref")
        answer: bytes | None = pdu[d + 4 : dend]
        if unit:
            # One part of a longer answer: identity lists are joined and read with the last part.
            answer = self._szl_parts.add((from_client, unit), pdu[d + 4 : dend], fields["last_data_unit"])
        if answer is None or len(answer) < 4:
            return
        fields["szl_id"], fields["szl_index"] = _HH.unpack_from(answer)
        if answer[1] in IDENTITY_LISTS:
            identity, other = szl_contents(answer)
            fields.update(other)
            if identity:
                fields["identity"] = identity

    # -- S7comm-plus -----------------------------------------------------------------------------

    def _s7plus(self, pdu: bytes, from_client: bool) -> None:
        n = len(pdu)
        version = pdu[1] if n >= 2 else -1
        if version == PLUS_KEEPALIVE:
            fields = {"version": version, "keepalive": True}
            self._plus_emit(PLUS_OPCODE_FUNCTION_BASE | PLUS_KEEPALIVE, fields, None, from_client)
            return
        if n < 5:
            self.anomaly("bad_length", f"S7comm-plus PDU of {n} bytes is shorter than its header")
            return
        dlen = _H.unpack_from(pdu, 2)[0]
        if n < dlen + 4:
            self.anomaly("bad_length", f"S7comm-plus header announces {dlen} data bytes, the PDU has {n - 4}")
            return
        last = n > dlen + 4  # only the last fragment of a PDU carries the 4-byte trailer
        pending = self._plus_first[from_client]
        if pending is None:
            parsed = self._plus_header(pdu, version, dlen)
            if parsed is None:
                return
            if not last:
                self._plus_first[from_client] = parsed
                return
        elif last:
            parsed = pending
            self._plus_first[from_client] = None
            parsed[1]["fragmented"] = True
        else:
            return  # an inner fragment
        function, fields, key = parsed
        self._plus_emit(function, fields, key, from_client)

    def _plus_header(
        self, pdu: bytes, version: int, dlen: int
    ) -> tuple[int, dict[str, Any], int | None] | None:
        """(function, fields, sequence number of a request/response) of an S7comm-plus PDU's first part."""
        end = 4 + dlen
        pos = 4
        fields: dict[str, Any] = {"version": version}
        if version == PLUS_V3:
            # V3 puts the integrity part (digest length, HMAC digest) in front of the data.
            if pdu[4] != PLUS_DIGEST or end < 5 + PLUS_DIGEST + 1:
                self.anomaly("bad_length", f"S7comm-plus V3 integrity part has a digest of {pdu[4]} bytes")
                return None
            fields["integrity"] = True
            pos = 5 + PLUS_DIGEST
        if version not in PLUS_VERSIONS:
            self.anomaly("unknown_version", f"S7comm-plus version 0x{version:02x} is not known")
        opcode = pdu[pos]
        fields["opcode"] = opcode
        fields["opcode_name"] = PLUS_OPCODE_NAMES.get(opcode, "unknown")
        if opcode == PLUS_REQUEST or opcode == PLUS_RESPONSE or opcode == PLUS_RESPONSE2:
            # opcode, 2 reserved, function, 2 reserved, sequence number (a request then a session id)
            if pos + 9 > end:
                self.anomaly("bad_length", "S7comm-plus data part is shorter than its header")
                return None
            function, seq = _H.unpack_from(pdu, pos + 3)[0], _H.unpack_from(pdu, pos + 7)[0]
            fields["function"] = function
            fields["function_name"] = PLUS_FUNCTION_NAMES.get(function, "unknown")
            fields["seq_num"] = seq
            if opcode == PLUS_REQUEST and pos + 13 <= end:
                fields["session_id"] = _I.unpack_from(pdu, pos + 9)[0]
            return function, fields, seq
        if opcode != PLUS_NOTIFICATION:
            self.anomaly("unknown_opcode", f"S7comm-plus opcode 0x{opcode:02x} is not known")
        return PLUS_OPCODE_FUNCTION_BASE | opcode, fields, None

    def _plus_emit(self, function: int, fields: dict[str, Any], seq: int | None, from_client: bool) -> None:
        emitter = self._emitter(True)
        opcode = fields.get("opcode")
        if opcode == PLUS_REQUEST:
            emitter.request(
                ("plus", from_client, seq), function, PLUS_OPERATION, fields, from_client=from_client
            )
        elif opcode == PLUS_RESPONSE or opcode == PLUS_RESPONSE2:
            emitter.response(("plus", not from_client, seq), function, PLUS_OPERATION, fields,
                             from_client=from_client)  # fmt: skip
        elif from_client and opcode != PLUS_NOTIFICATION:
            emitter.request(None, function, PLUS_OPERATION, fields, from_client=True)
        else:
            emitter.response(None, function, PLUS_OPERATION, fields, from_client=from_client)

    def _plus_opaque(self, data: bytes, from_client: bool) -> None:
        """Data of an S7comm-plus connection that is not S7comm-plus: TLS (TIA Portal V17 and later)."""
        fields: dict[str, Any] = {"encrypted": True, "length": len(data)}
        if len(data) >= 3 and 0x14 <= data[0] <= 0x17 and data[1] == 3:
            fields["tls_content_type"] = data[0]
        self._plus_emit(0, fields, None, from_client)


SPEC = ProtocolSpec(
    name="s7comm",
    tcp_ports=frozenset({102}),
    udp_ports=frozenset(),
    probe=probe,
    factory=S7commDecoder,
    probe_any_port=False,
)
# The same decoder found on another port: the probe there needs S7 data, not just a COTP CR.
SPEC_ANY_PORT = ProtocolSpec(
    name="s7comm",
    tcp_ports=frozenset(),
    udp_ports=frozenset(),
    probe=probe_any_port,
    factory=S7commDecoder,
)
