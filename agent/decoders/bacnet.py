"""BACnet/IP (UDP 47808): BVLC (Annex J), NPDU (clause 6), APDU (clause 20) and the common services;
also BACnet/Ethernet (clause 7, 802.2 LLC to LSAP 0x82), whose frames carry the NPDU without a BVLC.

Checked against ASHRAE 135 (BVLL functions, NPCI control octet and network-layer message types,
PDU types and their header bits, tag encoding, service choices, error/reject/abort enumerations)
and Wireshark's packet-bvlc/packet-bacnet/packet-bacapp field definitions (``bvlc.function``,
``bacnet.control``, ``bacapp.type``, ``bacapp.confirmed_service``, ``bacapp.unconfirmed_service``).

Every BVLC datagram becomes one message (or, when it cannot be read at all, one anomaly):

* an APDU: confirmed requests are requests keyed by (invoke id, the requesting side of the flow,
  the routed source and destination network addresses), answered by SimpleACK, ComplexACK, Error,
  Reject or a server Abort with the same key; ``function`` is the service choice (0..255) and the
  operation class follows DOMAIN.md section 5. Unconfirmed requests are unpaired requests with
  ``function`` 0x100 | service choice. Segmented replies keep the request pending until the last
  segment; SegmentACKs are responses that do not consume the request.
* a network-layer message (NPDU control bit 7): an unpaired request, ``function`` 0x200 | type.
* a BVLL management function (no NPDU: BDT/FDT handling, foreign-device registration, results):
  requests and results paired per requesting side, ``function`` 0x300 | BVLC function.

Routed messages are attributed to the routed device: the pairing key carries the NPDU source and
destination specifiers. ``identity`` (an I-Am's device instance and vendor id; the Device object's
name, model, firmware revision, vendor name or id read back in a ReadProperty ACK) goes with
``identity_of`` (CONTRACTS.md) whenever the device is not the datagram's sender: a Forwarded-NPDU
names the B/IP address of the device a BBMD relayed; a router relaying from another BACnet network
adds a source specifier, so the device is ``bacnet:SNET:SADR`` (SADR in hex) and ``identity_via``
names the router's B/IP address when a BBMD relayed that router's datagram (else the router is the
sender). A source specifier that names no single device (network 0 or 0xFFFF, an empty SADR) gives
no identity.

Backup and restore (DOMAIN.md section 6): ReinitializeDevice startBackup / startRestore opens a
backup or restore of that device; until endBackup / endRestore / abortRestore, AtomicReadFile is
``upload`` (the configuration leaving the device) and AtomicWriteFile ``program`` (a configuration
written into it). A commanded WriteProperty (with a priority) is ``operate``.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from agent.decoders.base import DecoderContext, ProtocolSpec, link_layer_spec
from agent.decoders.message import MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE
from agent.linklayer import LLC_BACNET, llc_key

if TYPE_CHECKING:
    from agent.flows import Flow

PORT = 47808
BVLC_TYPE = 0x81  # BACnet/IP (Annex J); 0x82 is BACnet/IPv6 (Annex U), not decoded here
NPDU_VERSION = 1
MAX_TRACKED_DEVICES = 64  # devices per flow with a backup/restore in progress
MAX_LISTED = 16  # objects listed per ReadPropertyMultiple / WritePropertyMultiple
MAX_TAGS = 512  # tags walked per service before giving up

_U16 = struct.Struct("!H")

BVLC_FUNCTIONS = {
    0x00: "bvlc-result", 0x01: "write-bdt", 0x02: "read-bdt", 0x03: "read-bdt-ack",
    0x04: "forwarded-npdu", 0x05: "register-foreign-device", 0x06: "read-fdt", 0x07: "read-fdt-ack",
    0x08: "delete-fdt-entry", 0x09: "distribute-broadcast-to-network", 0x0A: "original-unicast-npdu",
    0x0B: "original-broadcast-npdu", 0x0C: "secure-bvll",
}  # fmt: skip
_NPDU_FUNCTIONS = frozenset({0x04, 0x09, 0x0A, 0x0B})
# BVLL management: requests (with their class) and the replies that answer them.
_BVLL_REQUESTS = {0x01: "config", 0x02: "diagnostic", 0x05: "session", 0x06: "diagnostic", 0x08: "config"}
_BVLL_REPLIES = frozenset({0x00, 0x03, 0x07})
# Fixed BVLC lengths (header included) where the function has no variable part.
_BVLL_FIXED_LENGTH = {0x00: 6, 0x02: 4, 0x05: 6, 0x06: 4, 0x08: 10}

NETWORK_MESSAGES = {
    0x00: "who-is-router-to-network", 0x01: "i-am-router-to-network", 0x02: "i-could-be-router-to-network",
    0x03: "reject-message-to-network", 0x04: "router-busy-to-network", 0x05: "router-available-to-network",
    0x06: "initialize-routing-table", 0x07: "initialize-routing-table-ack",
    0x08: "establish-connection-to-network", 0x09: "disconnect-connection-to-network",
    0x0A: "challenge-request", 0x0B: "security-payload", 0x0C: "security-response",
    0x0D: "request-key-update", 0x0E: "update-key-set", 0x0F: "update-distribution-key",
    0x10: "request-master-key", 0x11: "set-master-key", 0x12: "what-is-network-number",
    0x13: "network-number-is",
}  # fmt: skip
# Router discovery finds the network's shape; the routing table and its connections configure it;
# busy/available report router state; clause 24 security messages are authentication.
NETWORK_OPERATION = {
    0x00: "discovery", 0x01: "discovery", 0x02: "discovery", 0x03: "diagnostic", 0x04: "diagnostic",
    0x05: "diagnostic", 0x06: "config", 0x07: "config", 0x08: "session", 0x09: "session",
    **{t: "auth" for t in range(0x0A, 0x12)}, 0x12: "discovery", 0x13: "discovery",
}  # fmt: skip

# APDU types (high nibble of the first octet).
CONFIRMED, UNCONFIRMED, SIMPLE_ACK, COMPLEX_ACK, SEGMENT_ACK, ERROR, REJECT, ABORT = range(8)
APDU_TYPES = ("confirmed-request", "unconfirmed-request", "simple-ack", "complex-ack", "segment-ack",
              "error", "reject", "abort")  # fmt: skip

CONFIRMED_SERVICES = (
    "acknowledgeAlarm", "confirmedCOVNotification", "confirmedEventNotification", "getAlarmSummary",
    "getEnrollmentSummary", "subscribeCOV", "atomicReadFile", "atomicWriteFile", "addListElement",
    "removeListElement", "createObject", "deleteObject", "readProperty", "readPropertyConditional",
    "readPropertyMultiple", "writeProperty", "writePropertyMultiple", "deviceCommunicationControl",
    "confirmedPrivateTransfer", "confirmedTextMessage", "reinitializeDevice", "vtOpen", "vtClose",
    "vtData", "authenticate", "requestKey", "readRange", "lifeSafetyOperation", "subscribeCOVProperty",
    "getEventInformation", "subscribeCOVPropertyMultiple", "confirmedCOVNotificationMultiple",
    "confirmedAuditNotification", "auditLogQuery",
)  # fmt: skip
UNCONFIRMED_SERVICES = (
    "i-Am", "i-Have", "unconfirmedCOVNotification", "unconfirmedEventNotification",
    "unconfirmedPrivateTransfer", "unconfirmedTextMessage", "timeSynchronization", "who-Has", "who-Is",
    "utcTimeSynchronization", "writeGroup", "unconfirmedCOVNotificationMultiple",
    "unconfirmedAuditNotification", "who-Am-I", "you-Are",
)  # fmt: skip

# Text messages (DOMAIN.md "other") have no class of their own: unknown, so default-deny applies.
CONFIRMED_OPERATION = (
    "operate", "subscribe", "subscribe", "read", "read", "subscribe", "file", "file", "write", "write",
    "config", "config", "read", "read", "read", "write", "write", "mode", "vendor", "unknown", "mode",
    "session", "session", "session", "auth", "auth", "read", "operate", "subscribe", "read",
    "subscribe", "subscribe", "subscribe", "read",
)  # fmt: skip
UNCONFIRMED_OPERATION = (
    "discovery", "discovery", "subscribe", "subscribe", "vendor", "unknown", "time", "discovery",
    "discovery", "time", "write", "subscribe", "subscribe", "discovery", "config",
)  # fmt: skip

# Header octets of each reply type (ComplexACK: 5 when segmented): type, invoke id, then the service
# choice (SimpleACK, ComplexACK, Error), reason (Reject, Abort) or sequence number and window (SegmentACK).
_REPLY_HEADER = (0, 0, 3, 3, 4, 3, 3, 3)

ACKNOWLEDGE_ALARM, ATOMIC_READ_FILE, ATOMIC_WRITE_FILE, DELETE_OBJECT = 0, 6, 7, 11
READ_PROPERTY, READ_PROPERTY_MULTIPLE, WRITE_PROPERTY, WRITE_PROPERTY_MULTIPLE = 12, 14, 15, 16
DEVICE_COMMUNICATION_CONTROL, REINITIALIZE_DEVICE, READ_RANGE, SUBSCRIBE_COV = 17, 20, 26, 5
I_AM, I_HAVE, WHO_HAS, WHO_IS = 0, 1, 7, 8

ERROR_CLASSES = ("device", "object", "property", "resources", "security", "services", "vt",
                 "communication")  # fmt: skip
REJECT_REASONS = ("other", "buffer-overflow", "inconsistent-parameters", "invalid-parameter-data-type",
                  "invalid-tag", "missing-required-parameter", "parameter-out-of-range",
                  "too-many-arguments", "undefined-enumeration", "unrecognized-service")  # fmt: skip
ABORT_REASONS = ("other", "buffer-overflow", "invalid-apdu-in-this-state",
                 "preempted-by-higher-priority-task", "segmentation-not-supported", "security-error",
                 "insufficient-security", "window-size-out-of-range", "application-exceeded-reply-time",
                 "out-of-resources", "tsm-timeout", "apdu-too-long")  # fmt: skip
REINITIALIZE_STATES = ("coldstart", "warmstart", "startbackup", "endbackup", "startrestore", "endrestore",
                       "abortrestore", "activate-changes")  # fmt: skip
SEGMENTATION = ("segmented-both", "segmented-transmit", "segmented-receive", "no-segmentation")
COMMUNICATION_STATES = ("enable", "disable", "disable-initiation")

# Application tag numbers used below.
_APP_UNSIGNED, _APP_CHARACTER_STRING, _APP_ENUMERATED, _APP_OBJECT_ID = 2, 7, 9, 12
DEVICE_OBJECT_TYPE = 8
# Device object properties that identify the device (CONTRACTS.md identity keys), read back in a
# ReadProperty ACK: object-name, firmware-revision, model-name, vendor-identifier, vendor-name.
IDENTITY_PROPERTIES = {77: "name", 44: "revision", 70: "model", 120: "vendor_id", 121: "vendor"}
# Character sets of a CharacterString (clause 20.2.9) that Python decodes; DBCS/JIS are not.
CHARACTER_SETS = {0: "utf-8", 4: "utf-16-be", 5: "latin-1"}
_OPENING, _CLOSING = 6, 7


# -- tag encoding (clause 20.2) ------------------------------------------------------------------


def read_tag(buf: bytes, pos: int, end: int) -> tuple[int, bool, int, int, int] | None:
    """(tag number, context?, kind, value offset, value length) of the tag at ``pos``; None if cut.

    ``kind`` is 0 for a primitive value, 6/7 for a context opening/closing tag. An application
    boolean keeps its value in the length bits: its value length is 0 and the value is ``kind``.
    """
    if pos >= end:
        return None
    octet = buf[pos]
    pos += 1
    number = octet >> 4
    if number == 15:
        if pos >= end:
            return None
        number = buf[pos]
        pos += 1
    context = bool(octet & 0x08)
    lvt = octet & 0x07
    if context and lvt >= _OPENING:
        return number, True, lvt, pos, 0
    if not context and number == 1:  # application boolean
        return 1, False, lvt, pos, 0
    if lvt == 5:
        if pos >= end:
            return None
        lvt = buf[pos]
        pos += 1
        if lvt == 254:
            if pos + 2 > end:
                return None
            lvt = _U16.unpack_from(buf, pos)[0]
            pos += 2
        elif lvt == 255:
            if pos + 4 > end:
                return None
            lvt = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
    if pos + lvt > end:
        return None
    return number, context, 0, pos, lvt


def _name(names: tuple[str, ...], value: int) -> str | int:
    """The enumeration's name, or the number itself past the known names (proprietary values)."""
    return names[value] if value < len(names) else value


def _uint(buf: bytes, pos: int, n: int) -> int:
    return int.from_bytes(buf[pos : pos + n], "big")


def _object_id(buf: bytes, pos: int, fields: dict[str, Any], prefix: str = "") -> None:
    value = _uint(buf, pos, 4)
    fields[prefix + "object_type"] = value >> 22
    fields[prefix + "instance"] = value & 0x3FFFFF


def _skip_constructed(buf: bytes, pos: int, end: int, number: int) -> int:
    """Offset after the closing tag ``number`` matching an opening tag just read; -1 if malformed."""
    depth = 1
    for _ in range(MAX_TAGS):
        tag = read_tag(buf, pos, end)
        if tag is None:
            return -1
        _num, context, kind, vpos, vlen = tag
        pos = vpos + vlen
        if context and kind == _OPENING:
            depth += 1
        elif context and kind == _CLOSING:
            depth -= 1
            if depth == 0:
                return pos if _num == number else -1
    return -1


def _tags(
    buf: bytes, pos: int, end: int, partial: bool = False
) -> list[tuple[int, bool, int, int, int]] | None:
    """The top-level tags of a service (constructed values skipped); None when the encoding is bad.

    ``partial``: the first segment of a segmented message, cut anywhere: the tags up to the cut.
    """
    tags: list[tuple[int, bool, int, int, int]] = []
    while pos < end:
        if len(tags) >= MAX_TAGS:
            return tags if partial else None
        tag = read_tag(buf, pos, end)
        if tag is None:
            return tags if partial else None
        tags.append(tag)
        number, context, kind, vpos, vlen = tag
        if context and kind == _OPENING:
            pos = _skip_constructed(buf, vpos, end, number)
            if pos < 0:
                return tags if partial else None
        elif context and kind == _CLOSING:
            return tags if partial else None  # a closing tag with no opening one
        else:
            pos = vpos + vlen
    return tags


# -- probe ----------------------------------------------------------------------------------------


def probe(payload: bytes, to_server: bool) -> bool:
    """A BACnet/IP BVLC header: with a version-1 NPDU where one is carried, else the datagram's length."""
    n = len(payload)
    if n < 4 or payload[0] != BVLC_TYPE:
        return False
    function = payload[1]
    if function in _NPDU_FUNCTIONS:
        # A wrong BVLC length alone does not make it another protocol (the decoder reports it).
        npdu = 10 if function == 0x04 else 4
        return n > npdu + 1 and payload[npdu] == NPDU_VERSION
    if _U16.unpack_from(payload, 2)[0] != n:
        return False
    fixed = _BVLL_FIXED_LENGTH.get(function)
    if fixed is not None:
        return n == fixed
    return function in BVLC_FUNCTIONS


# -- the decoder ----------------------------------------------------------------------------------


class BacnetDecoder(MessageDecoder):
    protocol = "bacnet"
    __slots__ = ("_backup",)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        # (client side?, routed device) -> "backup" / "restore" in progress on that device.
        self._backup: dict[Hashable, str] = {}

    @staticmethod
    def message_length(buf: bytes, off: int, avail: int) -> int:
        # BACnet/IP is UDP, one BVLC message per datagram; but the registry may find BVLC on a TCP
        # port nobody declared (a tunnelling gateway, a test tool): there the BVLC length frames it.
        if buf[off] != BVLC_TYPE or (avail > 1 and buf[off + 1] not in BVLC_FUNCTIONS):
            return INVALID
        if avail < 4:
            return NEED_MORE
        length = int(_U16.unpack_from(buf, off + 2)[0])
        return length if length >= 4 else INVALID

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        end = off + length
        if length < 4 or buf[off] != BVLC_TYPE:
            self.anomaly(
                "bad_header", f"not a BACnet/IP BVLC header (type 0x{buf[off] if length else 0:02x})"
            )
            return
        function = buf[off + 1]
        bvlc_length = _U16.unpack_from(buf, off + 2)[0]
        if bvlc_length != length:
            # Read what the datagram holds, as Wireshark does: UDP's length is the one that framed it.
            self.anomaly("bad_length", f"BVLC length {bvlc_length} in a {length}-byte datagram")
        fields: dict[str, Any] = {"bvlc_function": function,
                                  "bvlc_name": BVLC_FUNCTIONS.get(function, "unknown")}  # fmt: skip
        if function in _NPDU_FUNCTIONS:
            pos = off + 4
            if function == 0x04:  # Forwarded-NPDU: the B/IP address of the original sender
                if end - pos < 6:
                    self.anomaly("bad_length", "Forwarded-NPDU shorter than its original address")
                    return
                ip = buf[pos : pos + 4]
                fields["original_address"] = (
                    f"{ip[0]}.{ip[1]}.{ip[2]}.{ip[3]}:{_U16.unpack_from(buf, pos + 4)[0]}"
                )
                pos += 6
            self._npdu(buf, pos, end, from_client, fields)
        else:
            self._bvll(function, buf, off, end, from_client, fields)

    # -- BVLL management -------------------------------------------------------------------------

    def _bvll(self, function: int, buf: bytes, off: int, end: int, from_client: bool,
              fields: dict[str, Any]) -> None:  # fmt: skip
        code = 0x300 | function
        fixed = _BVLL_FIXED_LENGTH.get(function)
        if fixed is not None and end - off != fixed:
            self.anomaly("bad_length", f"BVLC function {function} of {end - off} bytes (expected {fixed})")
        operation = _BVLL_REQUESTS.get(function)
        if operation is not None:
            if function == 0x05 and end - off >= 6:
                fields["ttl"] = _U16.unpack_from(buf, off + 4)[0]
            self.request(("bvll", from_client), code, operation, fields, from_client)
        elif function in _BVLL_REPLIES:
            if function == 0x00 and end - off >= 6:
                fields["result_code"] = result = _U16.unpack_from(buf, off + 4)[0]
                exception = result != 0
            else:
                exception = False
            self.response(("bvll", not from_client), code, "diagnostic", fields, from_client, exception)
        elif function == 0x0C:
            self.request(None, code, "opaque", fields, from_client)
        else:
            self.anomaly("unknown_function", f"unknown BVLC function 0x{function:02x}")

    # -- NPDU ------------------------------------------------------------------------------------

    def _npdu(self, buf: bytes, pos: int, end: int, from_client: bool, fields: dict[str, Any]) -> None:
        if end - pos < 2:
            self.anomaly("bad_length", "NPDU shorter than its version and control octets")
            return
        if buf[pos] != NPDU_VERSION:
            self.anomaly("bad_version", f"NPDU version {buf[pos]}")
            return
        control = buf[pos + 1]
        pos += 2
        fields["control"] = control
        if control & 0x50:
            self.anomaly("reserved_bits", f"NPDU control 0x{control:02x} sets reserved bits")
        src: tuple[int, str] | None = None
        dst: tuple[int, str] | None = None
        if control & 0x20:
            dst, pos = self._address(buf, pos, end)
            if dst is None:
                return
            fields["dnet"], fields["dadr"] = dst
        if control & 0x08:
            src, pos = self._address(buf, pos, end)
            if src is None:
                return
            fields["snet"], fields["sadr"] = src
            if src[0] == 0xFFFF or not src[1]:
                self.anomaly("bad_address", "NPDU source specifier with a broadcast network or empty address")
        if control & 0x20:
            if pos >= end:
                self.anomaly("bad_length", "NPDU ends before its hop count")
                return
            fields["hop_count"] = buf[pos]
            pos += 1
        if control & 0x04:
            fields["expecting_reply"] = True
        fields["priority"] = control & 0x03
        if control & 0x80:
            self._network_message(buf, pos, end, from_client, fields)
            return
        if pos >= end:
            self.anomaly("bad_length", "NPDU without an APDU")
            return
        self._apdu(buf, pos, end, from_client, fields, src, dst)

    def _address(self, buf: bytes, pos: int, end: int) -> tuple[tuple[int, str] | None, int]:
        if end - pos < 3:
            self.anomaly("bad_length", "NPDU ends inside a network address")
            return None, pos
        net = _U16.unpack_from(buf, pos)[0]
        size = buf[pos + 2]
        pos += 3
        if pos + size > end:
            self.anomaly("bad_length", f"NPDU address of {size} bytes runs past the message")
            return None, pos
        return (net, buf[pos : pos + size].hex()), pos + size

    def _network_message(self, buf: bytes, pos: int, end: int, from_client: bool,
                         fields: dict[str, Any]) -> None:  # fmt: skip
        if pos >= end:
            self.anomaly("bad_length", "network-layer message without its type")
            return
        kind = buf[pos]
        fields["network_message_type"] = kind
        if kind >= 0x80:
            if end - pos < 3:
                self.anomaly("bad_length", "proprietary network-layer message without its vendor id")
                return
            fields["vendor_id"] = _U16.unpack_from(buf, pos + 1)[0]
            operation = "vendor"
        else:
            name = NETWORK_MESSAGES.get(kind)
            if name is None:
                self.anomaly("unknown_function", f"reserved network-layer message type 0x{kind:02x}")
                operation = "unknown"
            else:
                fields["network_message"] = name
                operation = NETWORK_OPERATION[kind]
                if (kind == 0x00 or kind == 0x13) and end - pos >= 3:
                    fields["network"] = _U16.unpack_from(buf, pos + 1)[0]
                elif kind in (0x01, 0x02, 0x03, 0x04, 0x05) and end - pos >= 3:
                    # The first network number named (after a reject reason in Reject-Message).
                    at = pos + 2 if kind == 0x03 else pos + 1
                    if kind == 0x03:
                        fields["reject_reason"] = buf[pos + 1]
                    if end - at >= 2:
                        fields["network"] = _U16.unpack_from(buf, at)[0]
        self.request(None, 0x200 | kind, operation, fields, from_client)

    # -- APDU ------------------------------------------------------------------------------------

    def _apdu(self, buf: bytes, pos: int, end: int, from_client: bool, fields: dict[str, Any],
              src: tuple[int, str] | None, dst: tuple[int, str] | None) -> None:  # fmt: skip
        first = buf[pos]
        kind = first >> 4
        if kind > ABORT:
            self.anomaly("unknown_pdu_type", f"reserved APDU type {kind}")
            return
        fields["apdu_type"] = kind
        size = end - pos
        if kind == CONFIRMED:
            segmented = bool(first & 0x08)
            header = 6 if segmented else 4
            if size < header:
                self._short(kind, size)
                return
            fields.update(segmented=segmented, more_follows=bool(first & 0x04),
                          segmented_accepted=bool(first & 0x02), max_segments=(buf[pos + 1] >> 4) & 0x07,
                          max_apdu=buf[pos + 1] & 0x0F, invoke_id=buf[pos + 2])  # fmt: skip
            if segmented:
                fields["sequence_number"] = buf[pos + 3]
                fields["window_size"] = buf[pos + 4]
            service = buf[pos + header - 1]
            self._confirmed_request(service, buf, pos + header, end, from_client, fields, src, dst,
                                    continuation=segmented and buf[pos + 3] != 0)  # fmt: skip
        elif kind == UNCONFIRMED:
            if size < 2:
                self._short(kind, size)
                return
            self._unconfirmed_request(buf[pos + 1], buf, pos + 2, end, from_client, fields, src)
        else:
            self._reply(kind, first, buf, pos, end, from_client, fields, src, dst)

    def _short(self, kind: int, size: int) -> None:
        self.anomaly("bad_length", f"{APDU_TYPES[kind]} APDU of {size} bytes is shorter than its header")

    def _confirmed_request(self, service: int, buf: bytes, pos: int, end: int, from_client: bool,
                           fields: dict[str, Any], src: tuple[int, str] | None,
                           dst: tuple[int, str] | None, continuation: bool) -> None:  # fmt: skip
        fields["confirmed_service"] = service
        if service < len(CONFIRMED_SERVICES):
            fields["service"] = CONFIRMED_SERVICES[service]
            operation = CONFIRMED_OPERATION[service]
        else:
            self.anomaly("unknown_function", f"unknown BACnet confirmed service {service}")
            operation = "unknown"
        device = (from_client, dst)
        if not continuation and pos < end:
            partial = bool(fields["more_follows"])
            operation = self._request_parameters(service, buf, pos, end, fields, operation, device, partial)
        key = (fields["invoke_id"], from_client, src, dst)
        # Later segments of a segmented request go to the same transaction: they do not reopen it.
        self.request(None if continuation else key, service, operation, fields, from_client)

    def _unconfirmed_request(self, service: int, buf: bytes, pos: int, end: int, from_client: bool,
                             fields: dict[str, Any], src: tuple[int, str] | None) -> None:  # fmt: skip
        fields["unconfirmed_service"] = service
        if service < len(UNCONFIRMED_SERVICES):
            fields["service"] = UNCONFIRMED_SERVICES[service]
            operation = UNCONFIRMED_OPERATION[service]
        else:
            self.anomaly("unknown_function", f"unknown BACnet unconfirmed service {service}")
            operation = "unknown"
        tags = _tags(buf, pos, end) if pos < end else []
        if tags is None:
            self.anomaly(
                "bad_encoding", f"BACnet {fields.get('service', service)} parameters are not well-formed tags"
            )
        elif service == I_AM:
            self._i_am(buf, tags, fields, src)
        elif service == WHO_IS or service == WHO_HAS:
            for number, context, kind, vpos, vlen in tags:
                if context and kind == 0 and number in (0, 1) and 1 <= vlen <= 4:
                    fields["low_limit" if number == 0 else "high_limit"] = _uint(buf, vpos, vlen)
                elif service == WHO_HAS and context and number == 2 and vlen == 4:
                    _object_id(buf, vpos, fields)
        elif service == I_HAVE and len(tags) >= 2 and all(t[2] == 0 and t[4] == 4 for t in tags[:2]):
            _object_id(buf, tags[0][3], fields, "device_")
            _object_id(buf, tags[1][3], fields)
        self.request(None, 0x100 | service, operation, fields, from_client)

    def _i_am(self, buf: bytes, tags: list[tuple[int, bool, int, int, int]], fields: dict[str, Any],
              src: tuple[int, str] | None) -> None:  # fmt: skip
        expected = (_APP_OBJECT_ID, _APP_UNSIGNED, _APP_ENUMERATED, _APP_UNSIGNED)
        if len(tags) != 4 or any(t[1] or t[0] != n or not 1 <= t[4] <= 4 for t, n in zip(tags, expected)):  # noqa: B905
            self.anomaly(
                "bad_encoding", "I-Am parameters are not object id, max APDU, segmentation, vendor id"
            )
            return
        (_, _, _, opos, olen), (_, _, _, apos, alen), (_, _, _, spos, slen), (_, _, _, vpos, vlen) = tags
        if olen != 4:
            self.anomaly("bad_encoding", "I-Am object identifier is not 4 bytes")
            return
        object_id = _uint(buf, opos, 4)
        instance = object_id & 0x3FFFFF
        segmentation = _uint(buf, spos, slen)
        vendor_id = _uint(buf, vpos, vlen)
        fields.update(object_type=object_id >> 22, device_instance=instance,
                      max_apdu_accepted=_uint(buf, apos, alen),
                      segmentation=_name(SEGMENTATION, segmentation),
                      vendor_id=vendor_id)  # fmt: skip
        if _identity_owner(fields, src):
            fields["identity"] = {"device_instance": instance, "vendor_id": vendor_id}

    def _request_parameters(self, service: int, buf: bytes, pos: int, end: int, fields: dict[str, Any],
                            operation: str, device: Hashable, partial: bool) -> str:  # fmt: skip
        """Fields of a confirmed request's parameters, and its operation class refined by them."""
        tags = _tags(buf, pos, end, partial)
        if tags is None:
            self.anomaly(
                "bad_encoding", f"BACnet {fields.get('service', service)} parameters are not well-formed tags"
            )
            return operation
        if service in (
            READ_PROPERTY,
            WRITE_PROPERTY,
            READ_RANGE,
            READ_PROPERTY_MULTIPLE,
            WRITE_PROPERTY_MULTIPLE,
        ):
            self._object_property(service, buf, tags, fields)
            if service == WRITE_PROPERTY and "write_priority" in fields:
                return "operate"  # a commanded write into the priority array
        elif service in (ATOMIC_READ_FILE, ATOMIC_WRITE_FILE, DELETE_OBJECT) and tags:
            number, context, kind, vpos, vlen = tags[0]
            if not context and number == _APP_OBJECT_ID and vlen == 4:
                _object_id(buf, vpos, fields)
            if service != DELETE_OBJECT:
                state = self._backup.get(device)
                if state == "backup" and service == ATOMIC_READ_FILE:
                    return "upload"
                if state == "restore" and service == ATOMIC_WRITE_FILE:
                    return "program"
        elif service == REINITIALIZE_DEVICE:
            for number, context, kind, vpos, vlen in tags:
                if context and kind == 0 and number == 0 and 1 <= vlen <= 4:
                    requested = _uint(buf, vpos, vlen)
                    fields["reinitialized_state"] = _name(REINITIALIZE_STATES, requested)
                    self._track_backup(device, requested)
                elif context and number == 1:
                    fields["password_present"] = True  # never its value
        elif service == DEVICE_COMMUNICATION_CONTROL:
            for number, context, kind, vpos, vlen in tags:
                if context and kind == 0 and 1 <= vlen <= 4 and number in (0, 1):
                    value = _uint(buf, vpos, vlen)
                    if number == 0:
                        fields["time_duration"] = value
                    else:
                        fields["enable_disable"] = _name(COMMUNICATION_STATES, value)
                elif context and number == 2:
                    fields["password_present"] = True
        elif service == SUBSCRIBE_COV:
            for number, context, kind, vpos, vlen in tags:
                if context and kind == 0 and number == 1 and vlen == 4:
                    _object_id(buf, vpos, fields)
        return operation

    def _track_backup(self, device: Hashable, state: int) -> None:
        backup = self._backup
        if state == 2 or state == 4:  # startbackup, startrestore
            if device not in backup and len(backup) >= MAX_TRACKED_DEVICES:
                del backup[next(iter(backup))]
            backup[device] = "backup" if state == 2 else "restore"
        elif state in (0, 1, 3, 5, 6):  # a restart or the end of the backup/restore ends it
            backup.pop(device, None)

    def _object_property(self, service: int, buf: bytes, tags: list[tuple[int, bool, int, int, int]],
                         fields: dict[str, Any], ack: bool = False) -> None:  # fmt: skip
        """Object id and property of (Read|Write)Property(Multiple) / ReadRange requests and ACKs."""
        if service in (READ_PROPERTY_MULTIPLE, WRITE_PROPERTY_MULTIPLE):
            objects: list[dict[str, Any]] = []
            count = 0
            for number, context, kind, vpos, vlen in tags:
                if context and kind == 0 and number == 0 and vlen == 4:
                    count += 1
                    if len(objects) < MAX_LISTED:
                        entry: dict[str, Any] = {}
                        _object_id(buf, vpos, entry)
                        objects.append(entry)
                elif context and kind == _OPENING and number == 1 and objects and len(objects) == count:
                    prop = self._first_property(buf, vpos, ack)
                    if prop is not None:
                        objects[-1]["property_id"] = prop
            if objects:
                fields.update(objects[0])
                fields["objects"] = objects
                fields["object_count"] = count
            return
        for number, context, kind, vpos, vlen in tags:
            if not context or kind != 0:
                continue
            if number == 0 and vlen == 4:
                _object_id(buf, vpos, fields)
            elif number == 1 and 1 <= vlen <= 4:
                fields["property_id"] = _uint(buf, vpos, vlen)
            elif number == 2 and 1 <= vlen <= 4:
                fields["array_index"] = _uint(buf, vpos, vlen)
            elif number == 4 and vlen == 1 and service == WRITE_PROPERTY and not ack:
                fields["write_priority"] = buf[vpos]

    @staticmethod
    def _first_property(buf: bytes, pos: int, ack: bool) -> int | None:
        """The first property identifier inside a property list ([0] in requests, [2] in RPM ACKs)."""
        tag = read_tag(buf, pos, len(buf))
        if tag is None:
            return None
        number, context, kind, vpos, vlen = tag
        if context and kind == 0 and number == (2 if ack else 0) and 1 <= vlen <= 4:
            return _uint(buf, vpos, vlen)
        return None

    # -- replies ---------------------------------------------------------------------------------

    def _reply(self, kind: int, first: int, buf: bytes, pos: int, end: int, from_client: bool,
               fields: dict[str, Any], src: tuple[int, str] | None,
               dst: tuple[int, str] | None) -> None:  # fmt: skip
        size = end - pos
        minimum = 5 if kind == COMPLEX_ACK and first & 0x08 else _REPLY_HEADER[kind]
        if size < minimum:
            self._short(kind, size)
            return
        invoke_id = buf[pos + 1]
        fields["invoke_id"] = invoke_id
        # The reply travels back: its destination is the requester, its source the responder.
        key = (invoke_id, not from_client, dst, src)
        pending = self.pending.peek(key)
        service = -1
        exception = False
        keep = False
        if kind == SIMPLE_ACK or kind == ERROR:
            service = buf[pos + 2]
            if kind == ERROR:
                exception = True
                self._error(buf, pos + 3, end, fields)
        elif kind == COMPLEX_ACK:
            segmented = bool(first & 0x08)
            fields.update(segmented=segmented, more_follows=bool(first & 0x04))
            header = 2
            if segmented:
                fields["sequence_number"] = buf[pos + 2]
                fields["window_size"] = buf[pos + 3]
                header = 4
            service = buf[pos + header]
            keep = segmented and bool(first & 0x04)  # more segments of this reply follow
            if not (segmented and buf[pos + 2] != 0):
                self._ack_parameters(service, buf, pos + header + 1, end, fields, keep, src)
        elif kind == SEGMENT_ACK:
            fields.update(negative_ack=bool(first & 0x02), sent_by_server=bool(first & 0x01),
                          sequence_number=buf[pos + 2], window_size=buf[pos + 3])  # fmt: skip
            # Either side acknowledges segments: the server those of a request, the client a reply's.
            key = (
                (invoke_id, not from_client, dst, src) if first & 0x01 else (invoke_id, from_client, src, dst)
            )
            pending = self.pending.peek(key)
            keep = True
        elif kind == REJECT:
            exception = True
            reason = buf[pos + 2]
            fields["reject_reason"] = _name(REJECT_REASONS, reason)
        else:  # ABORT
            exception = True
            reason = buf[pos + 2]
            fields["sent_by_server"] = server = bool(first & 0x01)
            fields["abort_reason"] = _name(ABORT_REASONS, reason)
            if not server:  # the client abandons its own transaction
                key = (invoke_id, from_client, src, dst)
                pending = self.pending.peek(key)
        if service >= 0:
            fields["confirmed_service"] = service
            if service < len(CONFIRMED_SERVICES):
                fields["service"] = CONFIRMED_SERVICES[service]
            if pending is not None and pending.function != service:
                self.anomaly("service_mismatch", f"reply for service {service} to a request for service "
                             f"{pending.function} (invoke id {invoke_id})")  # fmt: skip
        function = service if service >= 0 else (pending.function if pending is not None else 0x400 | kind)
        if service >= 0:
            operation = CONFIRMED_OPERATION[service] if service < len(CONFIRMED_OPERATION) else "unknown"
        else:
            operation = "session"  # segment flow control or an abandoned transaction of unknown kind
        self.response(key, function, operation, fields, from_client, exception, keep)

    def _error(self, buf: bytes, pos: int, end: int, fields: dict[str, Any]) -> None:
        """Error class and code: two enumerations, inside an [0] opening tag for some services."""
        values: list[int] = []
        for _ in range(6):
            tag = read_tag(buf, pos, end)
            if tag is None or len(values) == 2:
                break
            number, context, kind, vpos, vlen = tag
            pos = vpos + vlen
            if kind == _OPENING:
                continue
            if number == _APP_ENUMERATED and not context and 1 <= vlen <= 4:
                values.append(_uint(buf, vpos, vlen))
        if len(values) != 2:
            self.anomaly("bad_encoding", "BACnet Error without an error class and code")
            return
        error_class, fields["error_code"] = values
        fields["error_class"] = _name(ERROR_CLASSES, error_class)

    def _ack_parameters(self, service: int, buf: bytes, pos: int, end: int, fields: dict[str, Any],
                        partial: bool, src: tuple[int, str] | None) -> None:  # fmt: skip
        if service not in (READ_PROPERTY, READ_PROPERTY_MULTIPLE, READ_RANGE) or pos >= end:
            return
        tags = _tags(buf, pos, end, partial)
        if tags is None:
            self.anomaly("bad_encoding", f"BACnet {CONFIRMED_SERVICES[service]} ACK is not well-formed tags")
            return
        self._object_property(service, buf, tags, fields, ack=True)
        if (service == READ_PROPERTY and fields.get("object_type") == DEVICE_OBJECT_TYPE
                and fields.get("property_id") in IDENTITY_PROPERTIES):  # fmt: skip
            self._identity_property(buf, tags, fields, src)

    @staticmethod
    def _identity_property(
        buf: bytes,
        tags: list[tuple[int, bool, int, int, int]],
        fields: dict[str, Any],
        src: tuple[int, str] | None,
    ) -> None:
        """A Device object's name, vendor, model or firmware read back: identity of the replying device."""
        value_at = next((t[3] for t in tags if t[1] and t[2] == _OPENING and t[0] == 3), -1)
        tag = read_tag(buf, value_at, len(buf)) if value_at >= 0 else None
        if tag is None:
            return
        number, context, _kind, vpos, vlen = tag
        key = IDENTITY_PROPERTIES[fields["property_id"]]
        value: str | int
        if context:
            return
        if number == _APP_UNSIGNED and key == "vendor_id" and 1 <= vlen <= 4:
            value = _uint(buf, vpos, vlen)
        elif number == _APP_CHARACTER_STRING and vlen >= 1 and key != "vendor_id":
            codec = CHARACTER_SETS.get(buf[vpos])
            if codec is None:
                return
            value = buf[vpos + 1 : vpos + vlen].decode(codec, "replace")
        else:
            return
        if _identity_owner(fields, src):
            fields["identity"] = {"device_instance": fields["instance"], key: value}


def routed_address(network: int, mac_hex: str) -> str:
    """The inventory's address of a device on another BACnet network: ``bacnet:NET:MACHEX``."""
    return f"bacnet:{network}:{mac_hex}"


def _identity_owner(fields: dict[str, Any], src: tuple[int, str] | None) -> bool:
    """Set ``identity_of`` / ``identity_via`` for an identity the message reveals; False when the
    sender is a router relaying from a source that names no single device (no identity then).

    A Forwarded-NPDU's identity is its original B/IP sender's, not the BBMD's that relayed it. A
    routed message's is the device at the source specifier, reached through the router: the original
    B/IP sender when a BBMD forwarded the router's datagram, else the datagram's sender."""
    original = fields.get("original_address")
    relay = original.rpartition(":")[0] if isinstance(original, str) else None
    if src is None:
        if relay is not None:
            fields["identity_of"] = relay
        return True
    network, mac_hex = src
    if not mac_hex or network == 0 or network == 0xFFFF:
        return False
    fields["identity_of"] = routed_address(network, mac_hex)
    if relay is not None:
        fields["identity_via"] = relay
    return True


class BacnetLlcDecoder(BacnetDecoder):
    """BACnet/Ethernet (clause 7): ISO 8802-2 LLC frames to LSAP 0x82, the NPDU right after the LLC
    header, no BVLC. The dissector strips 802.3 padding and the LLC header (agent.linklayer), so one
    frame's payload is one NPDU; the sender is a MAC, and its identity belongs to that MAC."""

    __slots__ = ()

    @staticmethod
    def message_length(buf: bytes, off: int, avail: int) -> int:
        return avail  # never framed: link-layer flows feed whole frames

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        self._npdu(buf, off, off + length, from_client, {})


SPEC = ProtocolSpec(
    name="bacnet",
    tcp_ports=frozenset(),
    udp_ports=frozenset({PORT}),
    probe=probe,
    factory=BacnetDecoder,
)
SPEC_LLC: ProtocolSpec = link_layer_spec("bacnet", frozenset({llc_key(LLC_BACNET)}), BacnetLlcDecoder)
