"""IEC 61850 / ISO 9506 MMS over the OSI upper layers on ISO-on-TCP (TCP 102, shared with S7comm).

Checked against ISO 8327-1 / X.225 (session SPDU codes and parameters), ISO 8823 / X.226
(presentation CP, CPA and user-data PPDUs), ISO 8650 / X.227 (ACSE APDUs), ISO 9506-2 (the MMS
ASN.1) and Wireshark's packet-ses.c, pres.asn, acse.asn and mms.asn (``mms.*`` fields: the service
values below are the ASN.1 context tags, which is what Wireshark shows as
``mms.confirmedServiceRequest``).

Layers, per TSDU (see agent.decoders.cotp for TPKT/COTP):

* session: GIVE TOKENS (or PLEASE TOKENS) concatenated with DATA TRANSFER carries the presentation
  data after the DT's parameters; CONNECT, ACCEPT, FINISH and DISCONNECT carry it in their User Data
  parameter (PGI 193, or 194 Extended User Data). REFUSE, ABORT, ABORT ACCEPT and NOT FINISHED are
  reported as session messages of their own.
* presentation: CP and CPA are SETs whose normal-mode parameters end in the user data; the other
  SPDUs carry the user data alone. Fully-encoded user data is a list of PDVs, each with its
  presentation context id and one APDU.
* ACSE (AARQ, AARE, RLRQ, RLRE, ABRT: BER application class) wraps the MMS initiate and conclude
  PDUs in its user information; MMS PDUs (BER context class) travel directly in data transfer.
  The tag class tells the two apart, so a capture that starts after the presentation connection
  (no context definitions seen) is still decoded.
* Some implementations put MMS directly in COTP data without session and presentation; such a
  bare MMS PDU is decoded too.

BER is decoded strictly: an element whose length runs past its container, an indefinite length or
an absurd tag is an anomaly, and nothing is read past the TSDU. Only fixed paths are descended
(no recursion into MMS Data), so the work per message is bounded by its size.

Message model and ``function`` (ranges never collide):

* confirmed-Request / confirmed-Response: the confirmed service tag (4 read, 5 write, 1 getNameList,
  2 identify, 72 fileOpen, ...), paired by invoke id. Either peer may send requests (ICCP, and the
  VMD's DownloadSegment requests), so the key includes the sender.
* other MMS PDUs: 0x100 | PDU tag (0x102 confirmed-Error, 0x104 reject, 0x105-0x107 cancel,
  0x108-0x10A initiate, 0x10B-0x10D conclude); errors and rejects are exception responses to the
  request they name. Unconfirmed PDUs: 0x200 | service (0x200 informationReport), unsolicited
  responses.
* ACSE APDUs without an MMS PDU inside: 0x400 | APDU tag (0x400 AARQ ... 0x404 ABRT); session SPDUs
  without one: 0x800 | SPDU code (0x80C REFUSE, 0x819 ABORT); COTP connection TPDUs 0x100 | code
  as in agent.decoders.cotp.

Operation classes (DOMAIN.md section 5 has no MMS table; these follow its vocabulary): read and
write for variable access (and the journal, alarm summaries and operator-station input/output);
discovery for the services that list or describe objects (getNameList, identify,
get*Attributes, getCapabilityList); config for defining, deleting or renaming variables, lists,
types, semaphores, events and journals; program for domain download and deletion and program
invocations; upload for domain upload; mode for starting, stopping, resuming, resetting and killing
program invocations; file for the file services and obtainFile; operate for triggerEvent and
acknowledgeEventNotification (an alarm acknowledgement, as in S7comm); session for initiate,
conclude, cancel, semaphore take/relinquish (tokens granting exclusive use, like a connection) and
everything below MMS; diagnostic for status and the *Status services. informationReport (IEC 61850
reports, spontaneous or periodic data from the IED) is ``read``, like IEC 104's ``M_*`` reports;
eventNotification likewise; unsolicitedStatus is ``diagnostic``.

A device's identify response carries vendor, model and revision: ``fields["identity"]``.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.decoders.base import ProtocolSpec
from agent.decoders.cotp import DT, CotpDecoder, first_data_tpdu, message_length

_H = struct.Struct("!H")

MAX_TEXT = 256  # characters of a name or string kept for EVE
MAX_PDVS = 4  # presentation data values decoded per PPDU (MMS sends one)
MAX_NAMES = 16  # file name components joined

# -- session (X.225) -----------------------------------------------------------------------------
GIVE_TOKENS = DATA_TRANSFER = 1  # the same code: GT first in a basic concatenation, then DT
PLEASE_TOKENS, NOT_FINISHED, FINISH, DISCONNECT, REFUSE = 2, 8, 9, 10, 12
CONNECT, ACCEPT, ABORT, ABORT_ACCEPT = 13, 14, 25, 26
SPDU_NAMES = {DATA_TRANSFER: "DT", PLEASE_TOKENS: "PT", NOT_FINISHED: "NF", FINISH: "FN", DISCONNECT: "DN",
              REFUSE: "RF", CONNECT: "CN", ACCEPT: "AC", ABORT: "AB", ABORT_ACCEPT: "AA"}  # fmt: skip
USER_DATA_PGI, EXTENDED_USER_DATA_PGI, REASON_CODE_PI = 193, 194, 50

# -- BER classes (high three bits of the identifier octet) -----------------------------------------
UNIVERSAL, UNIVERSAL_CONSTRUCTED = 0x00, 0x20
APPLICATION_CONSTRUCTED = 0x60
CONTEXT, CONTEXT_CONSTRUCTED = 0x80, 0xA0
INTEGER, OCTETS_OID, SEQUENCE, SET, EXTERNAL = 2, 6, 16, 17, 8
FAILURE = 0x80  # [0] IMPLICIT DataAccessError: a failed item in read and write results

# -- ACSE (X.227) --------------------------------------------------------------------------------
AARQ, AARE, RLRQ, RLRE, ABRT = 0, 1, 2, 3, 4
ACSE_NAMES = {AARQ: "AARQ", AARE: "AARE", RLRQ: "RLRQ", RLRE: "RLRE", ABRT: "ABRT"}
USER_INFORMATION = 30

# -- MMS (ISO 9506-2) ----------------------------------------------------------------------------
CONFIRMED_REQUEST, CONFIRMED_RESPONSE, CONFIRMED_ERROR, UNCONFIRMED, REJECT = 0, 1, 2, 3, 4
CANCEL_REQUEST, CANCEL_RESPONSE, CANCEL_ERROR = 5, 6, 7
INITIATE_REQUEST, INITIATE_RESPONSE, INITIATE_ERROR = 8, 9, 10
CONCLUDE_REQUEST, CONCLUDE_RESPONSE, CONCLUDE_ERROR = 11, 12, 13
PDU_NAMES = {
    CONFIRMED_REQUEST: "confirmed-RequestPDU", CONFIRMED_RESPONSE: "confirmed-ResponsePDU",
    CONFIRMED_ERROR: "confirmed-ErrorPDU", UNCONFIRMED: "unconfirmed-PDU", REJECT: "rejectPDU",
    CANCEL_REQUEST: "cancel-RequestPDU", CANCEL_RESPONSE: "cancel-ResponsePDU",
    CANCEL_ERROR: "cancel-ErrorPDU",
    INITIATE_REQUEST: "initiate-RequestPDU", INITIATE_RESPONSE: "initiate-ResponsePDU",
    INITIATE_ERROR: "initiate-ErrorPDU", CONCLUDE_REQUEST: "conclude-RequestPDU",
    CONCLUDE_RESPONSE: "conclude-ResponsePDU", CONCLUDE_ERROR: "conclude-ErrorPDU",
}  # fmt: skip
PDU_FUNCTION_BASE = 0x100
UNCONFIRMED_FUNCTION_BASE = 0x200
ACSE_FUNCTION_BASE = 0x400
SESSION_FUNCTION_BASE = 0x800

SERVICE_NAMES = {
    0: "status", 1: "getNameList", 2: "identify", 3: "rename", 4: "read", 5: "write",
    6: "getVariableAccessAttributes", 7: "defineNamedVariable", 8: "defineScatteredAccess",
    9: "getScatteredAccessAttributes", 10: "deleteVariableAccess", 11: "defineNamedVariableList",
    12: "getNamedVariableListAttributes", 13: "deleteNamedVariableList", 14: "defineNamedType",
    15: "getNamedTypeAttributes", 16: "deleteNamedType", 17: "input", 18: "output", 19: "takeControl",
    20: "relinquishControl", 21: "defineSemaphore", 22: "deleteSemaphore", 23: "reportSemaphoreStatus",
    24: "reportPoolSemaphoreStatus", 25: "reportSemaphoreEntryStatus", 26: "initiateDownloadSequence",
    27: "downloadSegment", 28: "terminateDownloadSequence", 29: "initiateUploadSequence", 30: "uploadSegment",
    31: "terminateUploadSequence", 32: "requestDomainDownload", 33: "requestDomainUpload",
    34: "loadDomainContent", 35: "storeDomainContent", 36: "deleteDomain", 37: "getDomainAttributes",
    38: "createProgramInvocation", 39: "deleteProgramInvocation", 40: "start", 41: "stop", 42: "resume",
    43: "reset", 44: "kill", 45: "getProgramInvocationAttributes", 46: "obtainFile",
    47: "defineEventCondition", 48: "deleteEventCondition", 49: "getEventConditionAttributes",
    50: "reportEventConditionStatus", 51: "alterEventConditionMonitoring", 52: "triggerEvent",
    53: "defineEventAction", 54: "deleteEventAction", 55: "getEventActionAttributes",
    56: "reportEventActionStatus", 57: "defineEventEnrollment", 58: "deleteEventEnrollment",
    59: "alterEventEnrollment", 60: "reportEventEnrollmentStatus", 61: "getEventEnrollmentAttributes",
    62: "acknowledgeEventNotification", 63: "getAlarmSummary", 64: "getAlarmEnrollmentSummary",
    65: "readJournal", 66: "writeJournal", 67: "initializeJournal", 68: "reportJournalStatus",
    69: "createJournal", 70: "deleteJournal", 71: "getCapabilityList", 72: "fileOpen", 73: "fileRead",
    74: "fileClose", 75: "fileRename", 76: "fileDelete", 77: "fileDirectory",
}  # fmt: skip
_CLASSES = {
    "read": (4, 17, 63, 64, 65),
    "write": (5, 18, 66),
    "discovery": (1, 2, 6, 9, 12, 15, 37, 45, 49, 55, 61, 71),
    "diagnostic": (0, 23, 24, 25, 50, 56, 60, 68),
    "config": (3, 7, 8, 10, 11, 13, 14, 16, 21, 22, 47, 48, 51, 53, 54, 57, 58, 59, 67, 69, 70),
    "program": (26, 27, 28, 32, 34, 36, 38, 39),
    "upload": (29, 30, 31, 33, 35),
    "mode": (40, 41, 42, 43, 44),
    "operate": (52, 62),
    "session": (19, 20),
    "file": (46, 72, 73, 74, 75, 76, 77),
}
SERVICE_OPERATION = {service: operation for operation, services in _CLASSES.items() for service in services}
INFORMATION_REPORT, UNSOLICITED_STATUS, EVENT_NOTIFICATION = 0, 1, 2
UNCONFIRMED_NAMES = {INFORMATION_REPORT: "informationReport", UNSOLICITED_STATUS: "unsolicitedStatus",
                     EVENT_NOTIFICATION: "eventNotification"}  # fmt: skip
UNCONFIRMED_OPERATION = {
    INFORMATION_REPORT: "read",
    UNSOLICITED_STATUS: "diagnostic",
    EVENT_NOTIFICATION: "read",
}
ERROR_CLASS_NAMES = {0: "vmd-state", 1: "application-reference", 2: "definition", 3: "resource", 4: "service",
                     5: "service-preempt", 6: "time-resolution", 7: "access", 8: "initiate", 9: "conclude",
                     10: "cancel", 11: "file", 12: "others"}  # fmt: skip
REJECT_PDU_NAMES = {1: "confirmed-requestPDU", 2: "confirmed-responsePDU", 3: "confirmed-errorPDU",
                    4: "unconfirmedPDU", 5: "pdu-error", 6: "cancel-requestPDU", 7: "cancel-responsePDU",
                    8: "cancel-errorPDU", 9: "conclude-requestPDU", 10: "conclude-responsePDU",
                    11: "conclude-errorPDU"}  # fmt: skip
OBJECT_CLASS_NAMES = {0: "namedVariable", 1: "scatteredAccess", 2: "namedVariableList", 3: "namedType",
                      4: "semaphore", 5: "eventCondition", 6: "eventAction", 7: "eventEnrollment",
                      8: "journal", 9: "domain", 10: "programInvocation", 11: "operatorStation"}  # fmt: skip
OBJECT_SCOPES = {0: "vmd", 1: "domain", 2: "aa"}
# Services whose request is (or starts with) a domain or program invocation name.
DOMAIN_NAME_FIRST = frozenset({26, 28, 32, 33, 34, 35})  # [0] IMPLICIT Identifier inside a SEQUENCE
DOMAIN_NAME_ONLY = frozenset({27, 29, 36, 37})  # the request is the Identifier itself
PROGRAM_NAME_FIRST = frozenset({38, 40, 41, 42, 43, 44})
PROGRAM_NAME_ONLY = frozenset({39, 45})


class _Malformed(Exception):
    """Bytes that break the encoding; ``kind`` is the anomaly kind."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """One BER element at ``pos`` inside ``[pos, end)``: (class bits, tag number, value start, value end)."""
    if pos + 2 > end:
        raise _Malformed("bad_length", "a BER element is cut short")
    first = buf[pos]
    length = buf[pos + 1]
    if first & 0x1F != 0x1F and length < 0x80:  # the common case: one tag octet, short length
        if pos + 2 + length > end:
            raise _Malformed("bad_length", f"a BER element of {length} bytes runs past its container")
        return first & 0xE0, first & 0x1F, pos + 2, pos + 2 + length
    pos += 1
    number = first & 0x1F
    if number == 0x1F:  # high tag number form: base-128 digits (MMS needs two at most)
        number = 0
        for _ in range(3):
            if pos >= end:
                raise _Malformed("bad_length", "a BER tag is cut short")
            octet = buf[pos]
            pos += 1
            number = number << 7 | octet & 0x7F
            if not octet & 0x80:
                break
        else:
            raise _Malformed("bad_pdu", "a BER tag number longer than three octets")
    if pos >= end:
        raise _Malformed("bad_length", "a BER length is cut short")
    length = buf[pos]
    pos += 1
    if length & 0x80:
        octets = length & 0x7F
        if octets == 0:
            raise _Malformed("bad_length", "indefinite BER length")
        if octets > 3 or pos + octets > end:
            raise _Malformed("bad_length", f"a BER length of {octets} octets does not fit")
        length = int.from_bytes(buf[pos : pos + octets], "big")
        pos += octets
    if pos + length > end:
        raise _Malformed("bad_length", f"a BER element of {length} bytes runs past its container")
    return first & 0xE0, number, pos, pos + length


def _children(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside a constructed value; the list is bounded by its bytes (two per element)."""
    out = []
    while pos < end:
        element = _tlv(buf, pos, end)
        out.append(element)
        pos = element[3]
    return out


def _count(buf: bytes, pos: int, end: int, first: int = -1) -> tuple[int, int]:
    """How many elements a constructed value holds, and how many of them have identifier ``first``."""
    total = tagged = 0
    while pos < end:
        if buf[pos] == first:
            tagged += 1
        pos = _tlv(buf, pos, end)[3]
        total += 1
    return total, tagged


def _int(buf: bytes, start: int, end: int) -> int:
    if not 0 < end - start <= 5:
        raise _Malformed("bad_length", f"a BER integer of {end - start} bytes")
    return int.from_bytes(buf[start:end], "big", signed=True)


def _text(buf: bytes, start: int, end: int) -> str:
    return buf[start : min(end, start + MAX_TEXT)].decode("latin-1")


def _oid(buf: bytes, start: int, end: int) -> str:
    """Dotted form of an OBJECT IDENTIFIER (at most 16 arcs)."""
    arcs: list[int] = []
    value = 0
    for i in range(start, min(end, start + 64)):
        value = value << 7 | buf[i] & 0x7F
        if not buf[i] & 0x80:
            if not arcs:
                first = min(value // 40, 2)
                arcs += [first, value - 40 * first]
            else:
                arcs.append(value)
            value = 0
            if len(arcs) >= 16:
                break
    return ".".join(map(str, arcs))


def _spdu_header(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Start and end of the parameters of the SPDU at ``pos`` (one-octet length, or 0xFF and two)."""
    if pos + 2 > end:
        raise _Malformed("bad_length", "session SPDU header cut short")
    length = data[pos + 1]
    start = pos + 2
    if length == 0xFF:
        if pos + 4 > end:
            raise _Malformed("bad_length", "session SPDU length cut short")
        length = _H.unpack_from(data, pos + 2)[0]
        start = pos + 4
    if start + length > end:
        raise _Malformed("bad_length", f"session {SPDU_NAMES.get(data[pos], data[pos])} SPDU announces "
                         f"{length} bytes of parameters, {end - start} follow")  # fmt: skip
    return start, start + length


def _session_parameters(data: bytes, pos: int, end: int) -> tuple[tuple[int, int] | None, int | None]:
    """The user data (start, end) and reason code among an SPDU's PGI/PI units."""
    user: tuple[int, int] | None = None
    reason: int | None = None
    while pos < end:
        start, stop = _spdu_header(data, pos, end)
        code = data[pos]
        if code == USER_DATA_PGI or code == EXTENDED_USER_DATA_PGI:
            user = (start, stop)
        elif code == REASON_CODE_PI and stop > start:
            reason = data[start]
        pos = stop
    return user, reason


def _object_name(buf: bytes, element: tuple[int, int, int, int], fields: dict[str, Any]) -> None:
    """ObjectName: vmd-specific [0], domain-specific [1] {domainId, itemId}, aa-specific [2]."""
    cls, number, start, end = element
    if number == 1 and cls == CONTEXT_CONSTRUCTED:
        parts = _children(buf, start, end)
        if len(parts) != 2:
            raise _Malformed("bad_pdu", "a domain-specific name is not a domain id and an item id")
        fields["domain_id"] = _text(buf, parts[0][2], parts[0][3])
        fields["item_id"] = _text(buf, parts[1][2], parts[1][3])
    elif (number == 0 or number == 2) and cls == CONTEXT:
        fields["scope"] = "vmd" if number == 0 else "aa"
        fields["item_id"] = _text(buf, start, end)
    else:
        raise _Malformed("bad_pdu", f"an object name with tag [{number}]")


def _file_name(buf: bytes, start: int, end: int) -> str:
    """FileName: a SEQUENCE OF GraphicString, joined."""
    return "".join(_text(buf, s, e) for _, _, s, e in _children(buf, start, end)[:MAX_NAMES])[:MAX_TEXT]


class MmsDecoder(CotpDecoder):
    """One ISO-on-TCP connection carrying MMS (see the module docstring)."""

    protocol = "mms"
    __slots__ = ()

    def _tsdu(self, data: bytes, from_client: bool) -> None:
        try:
            first = data[0]
            if first in SPDU_NAMES:
                self._spdu(data, from_client)
            elif first & 0xC0 == CONTEXT:
                self._mms(data, 0, len(data), from_client, {})  # bare MMS on COTP
            else:
                self.anomaly(
                    "unknown_spdu", f"COTP data starts with 0x{first:02x}: no session SPDU or MMS PDU"
                )
        except _Malformed as exc:
            self.anomaly(exc.kind, str(exc))

    # -- session ---------------------------------------------------------------------------------

    def _spdu(self, data: bytes, from_client: bool) -> None:
        n = len(data)
        code = data[0]
        start, end = _spdu_header(data, 0, n)
        if code == GIVE_TOKENS or code == PLEASE_TOKENS:
            # Category 0 tokens, then the DT whose user information is the rest of the TSDU.
            if end == n:
                return  # a token exchange alone
            if data[end] == DATA_TRANSFER:
                end = _spdu_header(data, end, n)[1]
            # else a DT sent alone (no tokens in front): its user information follows at once.
            if end < n:
                self._user_data(data, end, n, from_client, {})
            return
        user, reason = _session_parameters(data, start, end)
        session: dict[str, Any] = {"spdu": SPDU_NAMES[code]}
        if reason is not None:
            session["reason"] = reason
        fields: dict[str, Any] = {"session": session}
        if user is not None and user[1] > user[0] and code in (CONNECT, ACCEPT, FINISH, DISCONNECT):
            if code == CONNECT or code == ACCEPT:
                self._connect_ppdu(data, user[0], user[1], from_client, fields)
            else:
                self._user_data(data, user[0], user[1], from_client, fields)
            return
        self._session_message(code, from_client, fields)

    def _session_message(self, code: int, from_client: bool, fields: dict[str, Any]) -> None:
        """An SPDU that carries no MMS PDU: connection, refusal, release or abort of the session."""
        function = SESSION_FUNCTION_BASE | code
        if code == CONNECT:
            self.request(("i", from_client), function, "session", fields, from_client=from_client)
        elif code == ACCEPT or code == REFUSE:
            self.response(("i", not from_client), function, "session", fields, from_client=from_client,
                          exception=code == REFUSE)  # fmt: skip
        elif code == FINISH:
            self.request(("z", from_client), function, "session", fields, from_client=from_client)
        elif code == DISCONNECT or code == NOT_FINISHED:
            self.response(("z", not from_client), function, "session", fields, from_client=from_client,
                          exception=code == NOT_FINISHED)  # fmt: skip
        else:  # abort, abort accept, a DT without presentation data
            self.request(None, function, "session", fields, from_client=from_client)

    # -- presentation ----------------------------------------------------------------------------

    def _connect_ppdu(
        self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]
    ) -> None:
        """CP-type / CPA-PPDU: a SET whose normal-mode parameters [2] end in the user data."""
        cls, number, s, e = _tlv(data, start, end)
        if cls != UNIVERSAL_CONSTRUCTED or number != SET:
            raise _Malformed("bad_pdu", f"presentation connect PPDU is not a SET (tag {cls | number:#x})")
        for cls, number, ms, me in _children(data, s, e):
            if cls == CONTEXT_CONSTRUCTED and number == 2:
                for element in _children(data, ms, me):
                    if element[0] == APPLICATION_CONSTRUCTED and element[1] == 1:
                        self._pdvs(data, element[2], element[3], from_client, fields)
                        return
        self._session_message(CONNECT if fields["session"]["spdu"] == "CN" else ACCEPT, from_client, fields)

    def _user_data(
        self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]
    ) -> None:
        """User-data: fully-encoded [APPLICATION 1], a list of PDVs (simply-encoded names no context)."""
        cls, number, s, e = _tlv(data, start, end)
        if cls == APPLICATION_CONSTRUCTED and number == 1:
            self._pdvs(data, s, e, from_client, fields)
        else:
            raise _Malformed(
                "bad_pdu", f"presentation user data with tag {cls | number:#x}, not fully encoded"
            )

    def _pdvs(self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]) -> None:
        for cls, number, s, e in _children(data, start, end)[:MAX_PDVS]:
            if cls != UNIVERSAL_CONSTRUCTED or number != SEQUENCE:
                raise _Malformed("bad_pdu", "a presentation data value list is not a SEQUENCE")
            context_id = None
            apdu: tuple[int, int] | None = None
            for pcls, pnumber, ps, pe in _children(data, s, e):
                if pcls == UNIVERSAL and pnumber == INTEGER:
                    context_id = _int(data, ps, pe)
                elif (pnumber == 0 and pcls == CONTEXT_CONSTRUCTED) or (pnumber == 1 and pcls == CONTEXT):
                    apdu = (ps, pe)  # single-ASN1-type or octet-aligned
            if apdu is None or apdu[0] == apdu[1]:
                raise _Malformed("bad_pdu", "a presentation data value without an APDU")
            pdv_fields = dict(fields)
            if context_id is not None:
                pdv_fields["pres_context_id"] = context_id
            if data[apdu[0]] & 0xC0 == 0x40:  # application class: an ACSE APDU
                self._acse(data, apdu[0], apdu[1], from_client, pdv_fields)
            else:
                self._mms(data, apdu[0], apdu[1], from_client, pdv_fields)

    # -- ACSE ------------------------------------------------------------------------------------

    def _acse(self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]) -> None:
        cls, number, s, e = _tlv(data, start, end)
        name = ACSE_NAMES.get(number)
        if cls != APPLICATION_CONSTRUCTED or name is None:
            raise _Malformed("bad_pdu", f"ACSE APDU with tag {cls | number:#x}")
        acse: dict[str, Any] = {"apdu": name}
        fields["acse"] = acse
        mms: tuple[int, int] | None = None
        for ecls, enumber, es, ee in _children(data, s, e):
            if ecls == CONTEXT_CONSTRUCTED and enumber == 1 and number <= AARE:
                inner = _tlv(data, es, ee)
                if inner[0] == UNIVERSAL and inner[1] == OCTETS_OID:
                    acse["application_context"] = _oid(data, inner[2], inner[3])
            elif ecls == CONTEXT_CONSTRUCTED and enumber == 2 and number == AARE:
                inner = _tlv(data, es, ee)
                acse["result"] = _int(data, inner[2], inner[3])
            elif ecls == CONTEXT and enumber == 0 and number >= RLRQ:
                acse["reason" if number != ABRT else "abort_source"] = _int(data, es, ee)
            elif ecls == CONTEXT_CONSTRUCTED and enumber == USER_INFORMATION:
                mms = self._external(data, es, ee)
        if mms is not None:
            self._mms(data, mms[0], mms[1], from_client, fields)
            return
        function = ACSE_FUNCTION_BASE | number
        if number == AARQ or number == RLRQ:
            key = ("i" if number == AARQ else "z", from_client)
            self.request(key, function, "session", fields, from_client=from_client)
        elif number == AARE or number == RLRE:
            key = ("i" if number == AARE else "z", not from_client)
            self.response(key, function, "session", fields, from_client=from_client,
                          exception=number == AARE and acse.get("result", 0) != 0)  # fmt: skip
        else:
            self.request(None, function, "session", fields, from_client=from_client)

    @staticmethod
    def _external(data: bytes, start: int, end: int) -> tuple[int, int] | None:
        """The encoding of the first EXTERNAL in ACSE user information: single-ASN1-type or octets."""
        for cls, number, s, e in _children(data, start, end)[:1]:
            if cls != UNIVERSAL_CONSTRUCTED or number != EXTERNAL:
                raise _Malformed("bad_pdu", "ACSE user information is not an EXTERNAL")
            for ecls, enumber, es, ee in _children(data, s, e):
                if (enumber == 0 and ecls == CONTEXT_CONSTRUCTED) or (enumber == 1 and ecls == CONTEXT):
                    return (es, ee) if ee > es else None
        return None

    # -- MMS -------------------------------------------------------------------------------------

    def _mms(self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]) -> None:
        cls, pdu, s, e = _tlv(data, start, end)
        name = PDU_NAMES.get(pdu)
        if cls & 0xC0 != CONTEXT or name is None:
            self.anomaly("unknown_pdu", f"MMS PDU with tag {cls | pdu:#x} [{pdu}] is not defined")
            return
        fields["pdu"] = pdu
        fields["pdu_type"] = name
        if pdu == CONFIRMED_REQUEST or pdu == CONFIRMED_RESPONSE:
            self._confirmed(data, s, e, pdu == CONFIRMED_REQUEST, from_client, fields)
        elif pdu == UNCONFIRMED:
            self._unconfirmed(data, s, e, from_client, fields)
        elif pdu == CONFIRMED_ERROR or pdu == CANCEL_ERROR:
            invoke_id = None
            for ecls, enumber, es, ee in _children(data, s, e):
                if enumber == 0 and ecls == CONTEXT:
                    invoke_id = _int(data, es, ee)
                elif ecls == CONTEXT_CONSTRUCTED and enumber == (2 if pdu == CONFIRMED_ERROR else 1):
                    self._service_error(data, es, ee, fields)
            if invoke_id is None:
                raise _Malformed("bad_pdu", f"MMS {name} without an invoke id")
            fields["invoke_id"] = invoke_id
            key = ("c" if pdu == CONFIRMED_ERROR else "x", not from_client, invoke_id)
            request = self.pending.peek(key)
            if request is not None and request.function < PDU_FUNCTION_BASE:
                fields["service"] = request.function
                fields["service_name"] = SERVICE_NAMES.get(request.function, "unknown")
            self.response(key, PDU_FUNCTION_BASE | pdu, "unknown", fields, from_client=from_client,
                          exception=True)  # fmt: skip
        elif pdu == REJECT:
            self._reject(data, s, e, from_client, fields)
        elif pdu == CANCEL_REQUEST or pdu == CANCEL_RESPONSE:
            if cls != CONTEXT:
                raise _Malformed("bad_pdu", f"MMS {name} is not a primitive invoke id")
            invoke_id = fields["invoke_id"] = _int(data, s, e)
            function = PDU_FUNCTION_BASE | pdu
            if pdu == CANCEL_REQUEST:
                self.request(
                    ("x", from_client, invoke_id), function, "session", fields, from_client=from_client
                )
            else:
                self.response(("x", not from_client, invoke_id), function, "session", fields,
                              from_client=from_client)  # fmt: skip
        elif pdu == INITIATE_REQUEST or pdu == INITIATE_RESPONSE:
            self._initiate(data, s, e, cls, fields)
            function = PDU_FUNCTION_BASE | pdu
            if pdu == INITIATE_REQUEST:
                self.request(("i", from_client), function, "session", fields, from_client=from_client)
            else:
                self.response(("i", not from_client), function, "session", fields, from_client=from_client)
        elif pdu == CONCLUDE_REQUEST:
            self.request(
                ("z", from_client), PDU_FUNCTION_BASE | pdu, "session", fields, from_client=from_client
            )
        else:  # initiate-Error, conclude-Response, conclude-Error
            if pdu != CONCLUDE_RESPONSE and cls == CONTEXT_CONSTRUCTED:
                self._service_error(data, s, e, fields)
            error_key = ("i" if pdu == INITIATE_ERROR else "z", not from_client)
            self.response(error_key, PDU_FUNCTION_BASE | pdu, "session", fields, from_client=from_client,
                          exception=pdu != CONCLUDE_RESPONSE)  # fmt: skip

    def _confirmed(self, data: bytes, start: int, end: int, is_request: bool, from_client: bool,
                   fields: dict[str, Any]) -> None:  # fmt: skip
        parts = _children(data, start, end)
        pdu_type = fields["pdu_type"]
        if not parts or parts[0][0] != UNIVERSAL or parts[0][1] != INTEGER:
            raise _Malformed("bad_pdu", f"MMS {pdu_type} does not start with an invoke id")
        invoke_id = fields["invoke_id"] = _int(data, parts[0][2], parts[0][3])
        key = ("c", from_client, invoke_id) if is_request else ("c", not from_client, invoke_id)
        # The service follows the invoke id (and a request's list of modifiers, a SEQUENCE).
        index = 2 if is_request and len(parts) > 2 and parts[1][0] == UNIVERSAL_CONSTRUCTED else 1
        if len(parts) <= index or parts[index][0] & 0xC0 != CONTEXT:
            # Still a request or response (seen from broken servers): pair it, say what is wrong.
            self.anomaly("bad_pdu", f"MMS {pdu_type} {invoke_id} carries no confirmed service")
            function = PDU_FUNCTION_BASE | fields["pdu"]
            if is_request:
                self.request(key, function, "unknown", fields, from_client=from_client)
            else:
                self.response(key, function, "unknown", fields, from_client=from_client)
            return
        cls, service, s, e = parts[index]
        name = SERVICE_NAMES.get(service)
        fields["service"] = service
        fields["service_name"] = name or "unknown"
        operation = SERVICE_OPERATION.get(service, "unknown")
        if name is None:
            self.anomaly("unknown_service", f"MMS confirmed service [{service}] is not defined")
        try:
            if is_request:
                self._request_details(data, service, cls, s, e, fields)
            else:
                self._response_details(data, service, cls, s, e, fields)
        except _Malformed as exc:  # the service is known: report the message with what was decoded
            self.anomaly(exc.kind, f"MMS {fields['service_name']}: {exc}")
        if is_request:
            self.request(key, service, operation, fields, from_client=from_client)
        else:
            self.response(key, service, operation, fields, from_client=from_client)

    def _request_details(
        self, data: bytes, service: int, cls: int, s: int, e: int, fields: dict[str, Any]
    ) -> None:
        constructed = cls == CONTEXT_CONSTRUCTED
        if service == 5 and constructed:  # write: the variable access specification comes first
            self._variable_access(data, _tlv(data, s, e), fields)
        elif service == 4 and constructed:  # read: [1] holds it
            for ecls, enumber, es, ee in _children(data, s, e):
                if enumber == 1 and ecls == CONTEXT_CONSTRUCTED:
                    self._variable_access(data, _tlv(data, es, ee), fields)
        elif service == 1 and constructed:
            for ecls, enumber, es, ee in _children(data, s, e):
                inner = _tlv(data, es, ee) if ecls == CONTEXT_CONSTRUCTED else None
                if enumber == 0 and inner is not None:
                    fields["object_class"] = OBJECT_CLASS_NAMES.get(_int(data, inner[2], inner[3]), "unknown")
                elif enumber == 1 and inner is not None:
                    fields["object_scope"] = OBJECT_SCOPES.get(inner[1], "unknown")
                    if inner[1] == 1:
                        fields["domain_id"] = _text(data, inner[2], inner[3])
        elif service == 6 and constructed:
            choice = _tlv(data, s, e)
            if choice[1] == 0 and choice[0] == CONTEXT_CONSTRUCTED:
                _object_name(data, _tlv(data, choice[2], choice[3]), fields)
        elif (service == 11 or service == 12) and constructed:
            name: dict[str, Any] = {}
            _object_name(data, _tlv(data, s, e), name)
            fields["variable_list_name"] = _reference(name)
            if service == 11:
                for _, _, es, ee in _children(data, s, e)[1:2]:
                    fields["variable_count"] = _count(data, es, ee)[0]
        elif service == 13 and constructed:
            for ecls, enumber, es, ee in _children(data, s, e):
                if enumber == 1 and ecls == CONTEXT_CONSTRUCTED:
                    names = _children(data, es, ee)
                    fields["variable_count"] = len(names)
                    if names:
                        name = {}
                        _object_name(data, names[0], name)
                        fields["variable_list_name"] = _reference(name)
                elif enumber == 2 and ecls == CONTEXT:
                    fields["domain_id"] = _text(data, es, ee)
        elif service in SERVICE_FILE_NAMES and constructed:
            self._file_request(data, service, s, e, fields)
        elif service in DOMAIN_NAME_ONLY or service in PROGRAM_NAME_ONLY:
            if not constructed:
                fields["domain_id" if service in DOMAIN_NAME_ONLY else "program_invocation"] = _text(
                    data, s, e
                )
        elif (service in DOMAIN_NAME_FIRST or service in PROGRAM_NAME_FIRST) and constructed:
            parts = _children(data, s, e)
            if parts and parts[0][1] == 0 and parts[0][0] == CONTEXT:
                key = "domain_id" if service in DOMAIN_NAME_FIRST else "program_invocation"
                fields[key] = _text(data, parts[0][2], parts[0][3])

    @staticmethod
    def _file_request(data: bytes, service: int, s: int, e: int, fields: dict[str, Any]) -> None:
        if service == 76:  # fileDelete: the FileName itself
            fields["file_name"] = _file_name(data, s, e)
            return
        source, destination = SERVICE_FILE_NAMES[service]
        for ecls, enumber, es, ee in _children(data, s, e):
            if ecls == CONTEXT_CONSTRUCTED and enumber == source:
                fields["file_name"] = _file_name(data, es, ee)
            elif ecls == CONTEXT_CONSTRUCTED and enumber == destination:
                fields["destination_file"] = _file_name(data, es, ee)

    def _response_details(self, data: bytes, service: int, cls: int, s: int, e: int,
                          fields: dict[str, Any]) -> None:  # fmt: skip
        if cls != CONTEXT_CONSTRUCTED:
            return
        if service == 2:  # identify: vendorName [0], modelName [1], revision [2]
            identity: dict[str, Any] = {}
            for ecls, enumber, es, ee in _children(data, s, e):
                key = IDENTITY_KEYS.get(enumber) if ecls == CONTEXT else None
                if key is not None:
                    identity[key] = _text(data, es, ee)
            if identity:
                fields["identity"] = identity
        elif service == 4:  # read: [1] listOfAccessResult, a failure is [0] DataAccessError
            for ecls, enumber, es, ee in _children(data, s, e):
                if enumber == 1 and ecls == CONTEXT_CONSTRUCTED:
                    fields["result_count"], fields["failure_count"] = _count(data, es, ee, FAILURE)
        elif service == 5:  # write: failure [0] or success [1] per variable
            fields["result_count"], fields["failure_count"] = _count(data, s, e, FAILURE)
        elif service == 1:  # getNameList: [0] listOfIdentifier, [1] moreFollows
            for ecls, enumber, es, ee in _children(data, s, e):
                if enumber == 0 and ecls == CONTEXT_CONSTRUCTED:
                    fields["name_count"] = _count(data, es, ee)[0]
                elif enumber == 1 and ecls == CONTEXT and ee > es:
                    fields["more_follows"] = data[es] != 0

    def _variable_access(self, data: bytes, spec: tuple[int, int, int, int], fields: dict[str, Any]) -> None:
        """VariableAccessSpecification: listOfVariable [0] (first variable's name) or variableListName [1]."""
        cls, number, s, e = spec
        if cls != CONTEXT_CONSTRUCTED or number > 1:
            raise _Malformed("bad_pdu", f"a variable access specification with tag {cls | number:#x}")
        if number == 1:
            name: dict[str, Any] = {}
            _object_name(data, _tlv(data, s, e), name)
            fields["variable_list_name"] = _reference(name)
            return
        fields["variable_count"] = _count(data, s, e)[0]
        if s < e:
            first = _tlv(data, s, e)
            specification = _tlv(data, first[2], first[3])
            if specification[1] == 0 and specification[0] == CONTEXT_CONSTRUCTED:  # name [0] ObjectName
                _object_name(data, _tlv(data, specification[2], specification[3]), fields)

    def _unconfirmed(
        self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]
    ) -> None:
        parts = _children(data, start, end)
        if not parts or parts[0][0] & 0xC0 != CONTEXT:
            raise _Malformed("bad_pdu", "MMS unconfirmed-PDU without a service")
        cls, service, s, e = parts[0]
        name = UNCONFIRMED_NAMES.get(service)
        if name is None:
            self.anomaly("unknown_service", f"MMS unconfirmed service [{service}] is not defined")
        fields["service"] = service
        fields["service_name"] = name or "unknown"
        if service == INFORMATION_REPORT and cls == CONTEXT_CONSTRUCTED:
            elements = _children(data, s, e)
            if elements:
                self._variable_access(data, elements[0], fields)
            if len(elements) > 1:
                fields["result_count"] = _count(data, elements[1][2], elements[1][3])[0]
        operation = UNCONFIRMED_OPERATION.get(service, "unknown")
        self.response(None, UNCONFIRMED_FUNCTION_BASE | service, operation, fields, from_client=from_client)

    def _reject(self, data: bytes, start: int, end: int, from_client: bool, fields: dict[str, Any]) -> None:
        invoke_id = None
        for cls, number, s, e in _children(data, start, end):
            if number == 0 and cls == CONTEXT:
                invoke_id = fields["invoke_id"] = _int(data, s, e)
            elif cls == CONTEXT and number in REJECT_PDU_NAMES:
                fields["reject_pdu"] = REJECT_PDU_NAMES[number]
                fields["reject_code"] = _int(data, s, e)
        # A rejected confirmed request is answered; other rejects stand alone.
        key = ("c", not from_client, invoke_id) if invoke_id is not None else None
        if fields.get("reject_pdu") != "confirmed-requestPDU":
            key = None
        self.response(
            key, PDU_FUNCTION_BASE | REJECT, "unknown", fields, from_client=from_client, exception=True
        )

    @staticmethod
    def _service_error(data: bytes, start: int, end: int, fields: dict[str, Any]) -> None:
        for cls, number, s, e in _children(data, start, end):
            if number == 0 and cls == CONTEXT_CONSTRUCTED:
                inner = _tlv(data, s, e)
                fields["error_class"] = ERROR_CLASS_NAMES.get(inner[1], "unknown")
                fields["error_code"] = _int(data, inner[2], inner[3])
            elif number == 1 and cls == CONTEXT:
                fields["additional_code"] = _int(data, s, e)

    @staticmethod
    def _initiate(data: bytes, start: int, end: int, cls: int, fields: dict[str, Any]) -> None:
        if cls != CONTEXT_CONSTRUCTED:
            raise _Malformed("bad_pdu", f"MMS {fields['pdu_type']} is not a SEQUENCE")
        for ecls, number, s, e in _children(data, start, end):
            if ecls == CONTEXT and number in INITIATE_FIELDS:
                fields[INITIATE_FIELDS[number]] = _int(data, s, e)
            elif ecls == CONTEXT_CONSTRUCTED and number == 4:  # the detail: version number first
                detail = _children(data, s, e)
                if detail and detail[0][1] == 0 and detail[0][0] == CONTEXT:
                    fields["version"] = _int(data, detail[0][2], detail[0][3])


IDENTITY_KEYS = {0: "vendor", 1: "model", 2: "revision"}
INITIATE_FIELDS = {0: "local_detail", 1: "max_serv_outstanding_calling", 2: "max_serv_outstanding_called",
                   3: "data_structure_nesting_level"}  # fmt: skip
# File services: the context tags of the file name and of a second (destination or new) name.
SERVICE_FILE_NAMES = {46: (1, 2), 72: (0, -1), 75: (0, 1), 76: (-1, -1), 77: (0, -1)}


def _reference(name: dict[str, Any]) -> str:
    """An object name as IEC 61850 writes a reference: domain/item, or the item alone."""
    domain = name.get("domain_id")
    return f"{domain}/{name['item_id']}" if domain is not None else str(name.get("item_id", ""))


def _looks_like_session(data: bytes, whole: bool) -> bool:
    """The first SPDU of an MMS connection's TSDU: its code and a length that fits."""
    code = data[0]
    if code not in SPDU_NAMES or len(data) < 2:
        return False
    length = data[1]
    header = 2
    if length == 0xFF:
        if len(data) < 4:
            return False
        length = _H.unpack_from(data, 2)[0]
        header = 4
    if code == GIVE_TOKENS or code == PLEASE_TOKENS:
        # Basic concatenation: an empty GT/PT, then the DT (also empty), then presentation data.
        return length == 0 and len(data) >= 4 and data[2] == DATA_TRANSFER and data[3] == 0
    return header + length == len(data) if whole else header + length > len(data)


def _looks_like_mms(data: bytes, whole: bool) -> bool:
    """A bare MMS PDU: a context tag 0..13 whose BER length fits the data."""
    n = len(data)
    if n < 2 or data[0] & 0xC0 != CONTEXT or data[0] & 0x1F > CONCLUDE_ERROR:
        return False
    length = data[1]
    header = 2
    if length & 0x80:
        octets = length & 0x7F
        if not 0 < octets <= 3 or n < 2 + octets:
            return False
        length = int.from_bytes(data[2 : 2 + octets], "big")
        header += octets
    return header + length == n if whole else header + length > n


def probe(payload: bytes, to_server: bool) -> bool:
    """On port 102: the first DT after the connection request carries an ISO session SPDU or MMS.

    S7comm's DTs start with 0x32 or 0x72, neither a session SPDU code nor a context tag; a CR/CC
    alone is undecided (the registry holds it until the first DT, see agent.decoders.cotp).
    """
    off = first_data_tpdu(payload)
    if off < 0 or payload[off + 5] & 0xF0 != DT:
        return False
    length = message_length(payload, off, len(payload) - off)
    data = payload[off + 5 + payload[off + 4] : off + length]
    if not data:
        return False
    # A whole TSDU: the last data unit, and all of it in the sample.
    whole = payload[off + 6] & 0x80 != 0 and off + length <= len(payload)
    return _looks_like_session(data, whole) or _looks_like_mms(data, whole)


SPEC = ProtocolSpec(
    name="mms",
    tcp_ports=frozenset({102}),
    udp_ports=frozenset(),
    probe=probe,
    factory=MmsDecoder,
    # A CR is also RDP's start, and a few bytes of session header are weak evidence off port 102:
    # other ports need an operator's --ports mms=PORT.
    probe_any_port=False,
)
