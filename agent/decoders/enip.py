"""EtherNet/IP encapsulation (TCP/UDP 44818) with CIP inside, and CIP class 0/1 I/O (UDP 2222).

One ``ProtocolSpec`` serves all three ports: they carry the same Common Packet Format (CPF) items,
the EVE object is ``enip`` either way, and a UDP datagram says by its first bytes which kind it is
(an I/O datagram starts with an item count and a sequenced address item, type 0x8002, where an
encapsulation header has its length). Class 0/1 I/O messages are operation ``io`` with no pairing.

Explicit messaging is decoded down to each CIP service: Multiple Service Packet (0x0A) and
Unconnected Send (0x52 on the Connection Manager) are unwrapped, and one message is emitted per
embedded service, so every service gets its own operation class (DOMAIN.md section 5). The
message's ``function`` is the CIP service code (without the reply bit) when it carries CIP, the
encapsulation command otherwise, and the CPF connected data item type 0x00B1 for I/O.

Pairing: unconnected requests (SendRRData) by sender context, connected ones (SendUnitData) by
connection id and CIP sequence count, with the position inside a Multiple Service Packet; the
other encapsulation commands by command and sender context. A connected reply travels on the
T->O connection id while its request used the O->T id: Forward Open replies tell which ids belong
together; without one, a reply's id is tied to the connection of the only outstanding request
with its sequence count.

Numbers follow the EtherNet/IP specification (CIP Networks Library Vol. 2, chapter 2-3) and
Wireshark's packet-enip.c field definitions.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from agent.decoders import cip
from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE

if TYPE_CHECKING:
    from agent.flows import Flow

_HEADER = struct.Struct("<HHII8sI")  # command, length, session handle, status, sender context, options
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_HH = struct.Struct("<HH")
_IH = struct.Struct("<IH")
_II = struct.Struct("<II")
_SOCKADDR = struct.Struct(">HH4s8x")  # sin_family, sin_port, sin_addr (big-endian, unlike the rest)
_SERVICE_ITEM = struct.Struct("<HH16s")  # ListServices item: version, capability flags, name

HEADER_LEN = 24
NOP = 0x0000
SEND_RR_DATA = 0x006F
SEND_UNIT_DATA = 0x0070
LIST_IDENTITY = 0x0063
LIST_SERVICES = 0x0004
LIST_INTERFACES = 0x0064
REGISTER_SESSION = 0x0065
UNREGISTER_SESSION = 0x0066

# Encapsulation commands: (operation, name). SendRRData/SendUnitData carry CIP and are classified
# by the CIP service inside; their own class is used only when no CIP can be read.
COMMANDS: dict[int, tuple[str, str]] = {
    NOP: ("session", "NOP"),
    LIST_SERVICES: ("discovery", "ListServices"),
    LIST_IDENTITY: ("discovery", "ListIdentity"),
    LIST_INTERFACES: ("discovery", "ListInterfaces"),
    REGISTER_SESSION: ("session", "RegisterSession"),
    UNREGISTER_SESSION: ("session", "UnRegisterSession"),
    SEND_RR_DATA: ("unknown", "SendRRData"),
    SEND_UNIT_DATA: ("unknown", "SendUnitData"),
    0x0072: ("unknown", "IndicateStatus"),
    0x0073: ("unknown", "Cancel"),
    0x00C8: ("session", "StartDTLS"),
}
# Commands that are never answered (Vol. 2 2-4): no pairing.
UNANSWERED = frozenset({NOP, UNREGISTER_SESSION})

# CPF item types.
ITEM_IDENTITY = 0x000C
ITEM_CONNECTED_ADDRESS = 0x00A1
ITEM_CONNECTED_DATA = 0x00B1
ITEM_UNCONNECTED_DATA = 0x00B2
ITEM_LIST_SERVICES = 0x0100
ITEM_SEQUENCED_ADDRESS = 0x8002
MAX_ITEMS = 16  # CPF items read per message; real messages have 2-4

GET_ATTRIBUTE_LIST = 0x03
SET_ATTRIBUTE_LIST = 0x04

MAX_CONNECTIONS = 64  # T->O -> O->T connection id pairs remembered per flow
_NO_PATH = cip.Path()
_TARGET_FIELDS = ("class", "instance", "attribute", "tag")  # copied from a request into its reply


def message_length(buf: bytes, off: int, avail: int) -> int:
    """Encapsulation framing: 24-byte header + length. Commands are below 0x100 and the options
    field must be zero (Vol. 2 2-3.2), which also lets the framer find a header after a gap."""
    if avail >= 2 and buf[off + 1]:
        return INVALID
    if avail < HEADER_LEN:
        return NEED_MORE
    if _U32.unpack_from(buf, off + 20)[0]:
        return INVALID
    return HEADER_LEN + int(_U16.unpack_from(buf, off + 2)[0])


def _is_io(buf: bytes, off: int, length: int) -> bool:
    """A class 0/1 I/O datagram: CPF with a sequenced address item first."""
    return length >= 14 and _HH.unpack_from(buf, off) == (2, ITEM_SEQUENCED_ADDRESS) and buf[off + 4] == 8


def _plausible(command: int, length: int, status: int) -> bool:
    """Whether a header's length fits its command (Vol. 2 2-4): the probe's guard against other
    protocols whose first bytes happen to look like a header (e.g. DCE/RPC over UDP)."""
    if command == REGISTER_SESSION:
        return length == 4
    if command == UNREGISTER_SESSION:
        return length == 0
    if command == LIST_IDENTITY or command == LIST_SERVICES or command == LIST_INTERFACES:
        return length == 0 or length >= 2  # a request is empty, a reply starts with an item count
    if command == SEND_RR_DATA or command == SEND_UNIT_DATA:
        return length >= 8 or status != 0  # interface handle, timeout, item count
    return True


def probe(payload: bytes, to_server: bool) -> bool:
    """An I/O datagram whose two CPF items exactly fill it, or encapsulation messages with zero
    options and lengths that fit their commands, one command known (NOP aside) and one whole."""
    n = len(payload)
    if _is_io(payload, 0, n):
        if n < 18:
            return False
        data_type, data_len = _HH.unpack_from(payload, 14)
        return bool(data_type == ITEM_CONNECTED_DATA and 18 + data_len == n)
    off = 0
    known = False
    whole = 0
    while off + HEADER_LEN <= n:
        command, length, _session, status, _context, options = _HEADER.unpack_from(payload, off)
        if command > 0xFF or options or not _plausible(command, length, status):
            return False
        # NOP proves nothing: an all-zero payload is a train of NOPs.
        known = known or (command in COMMANDS and command != NOP)
        off += HEADER_LEN + length
        whole += off <= n
    # The last message may still be arriving (TCP), but one must be whole.
    return known and whole > 0


def _items(buf: bytes, off: int, end: int) -> list[tuple[int, int, int]] | str:
    """CPF items at ``off`` as (type, data start, data end), or what is wrong with them."""
    if end - off < 2:
        return "no CPF item count"
    count = _U16.unpack_from(buf, off)[0]
    if count > MAX_ITEMS:
        return f"CPF item count {count} is implausible"
    items: list[tuple[int, int, int]] = []
    pos = off + 2
    for _ in range(count):
        if pos + 4 > end:
            return f"CPF declares {count} items but the message ends after {len(items)}"
        item_type, item_len = _HH.unpack_from(buf, pos)
        if pos + 4 + item_len > end:
            return f"CPF item 0x{item_type:04x} of {item_len} bytes runs past the message"
        items.append((item_type, pos + 4, pos + 4 + item_len))
        pos += 4 + item_len
    return items


class EnipDecoder(MessageDecoder):
    protocol = "enip"
    # _requests: pairing key -> (ts, service, class, operation, request cip fields), for replies whose
    # layout depends on the request and for copying its target into the reply. It follows the base
    # class's pending table (same keys, timeout and limit), which counts what is dropped.
    # _connections: T->O connection id -> O->T connection id.
    __slots__ = ("_connections", "_requests")

    message_length = staticmethod(message_length)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self._requests: dict[tuple[Hashable, ...], tuple[float, int, int | None, str, dict[str, Any]]] = {}
        self._connections: dict[int, int] = {}

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if self.flow.proto == 17 and _is_io(buf, off, length):
            self._io(buf, off, off + length, from_client)
            return
        if length < HEADER_LEN:
            self.anomaly("bad_length", f"datagram of {length} bytes is shorter than the encapsulation header")
            return
        if self.flow.proto == 17 and message_length(buf, off, length) == INVALID:  # TCP: framer checked
            self.anomaly("bad_header", "datagram is neither an encapsulation message nor class 0/1 I/O")
            return
        command, enc_len, session, status, context, options = _HEADER.unpack_from(buf, off)
        end = off + HEADER_LEN + enc_len
        if end != off + length:
            # Only a UDP datagram can disagree (TCP is framed by this length).
            self.anomaly("bad_length", f"encapsulation length {enc_len} does not match the "
                         f"{length - HEADER_LEN} bytes after the header")  # fmt: skip
            end = min(end, off + length)
        hdr: dict[str, Any] = {
            "command": command,
            "length": enc_len,
            "session_handle": session,
            "status": status,
            "sender_context": context.hex(),
            "options": options,
        }
        if options:
            self.anomaly("bad_options", f"encapsulation options 0x{options:08x} are not zero")
        body = off + HEADER_LEN
        if command == SEND_RR_DATA or command == SEND_UNIT_DATA:
            self._send_data(buf, body, end, hdr, context, from_client)
            return
        known = COMMANDS.get(command)
        if known is None:
            self.anomaly("unknown_command", f"unknown encapsulation command 0x{command:04x}")
            operation = "unknown"
        else:
            operation = known[0]
        key = None if command in UNANSWERED else ("e", command, context)
        if from_client:
            if command == REGISTER_SESSION and end - body >= 4:
                hdr["protocol_version"], hdr["option_flags"] = _HH.unpack_from(buf, body)
            self.request(key, command, operation, hdr, from_client=True)
            return
        if status == 0 and end > body:
            self._reply_body(command, buf, body, end, hdr)
        self.response(key, command, operation, hdr, from_client=False, exception=status != 0)

    # -- encapsulation replies -------------------------------------------------------------------

    def _reply_body(self, command: int, buf: bytes, body: int, end: int, hdr: dict[str, Any]) -> None:
        if command == REGISTER_SESSION:
            if end - body >= 4:
                hdr["protocol_version"], hdr["option_flags"] = _HH.unpack_from(buf, body)
            return
        if command not in (LIST_IDENTITY, LIST_SERVICES, LIST_INTERFACES):
            return
        items = _items(buf, body, end)
        if isinstance(items, str):
            self.anomaly("bad_cpf", items)
            return
        if command == LIST_INTERFACES:
            hdr["interfaces"] = len(items)
            return
        for item_type, start, stop in items:
            if command == LIST_IDENTITY and item_type == ITEM_IDENTITY:
                ident = self._list_identity_item(buf, start, stop)
                if ident is not None:
                    hdr["identity"] = ident
            elif command == LIST_SERVICES and item_type == ITEM_LIST_SERVICES and stop - start >= 20:
                version, flags, name = _SERVICE_ITEM.unpack_from(buf, start)
                hdr.setdefault("services", []).append({
                    "version": version, "capability_flags": flags,
                    "name": name.split(b"\0", 1)[0].decode("latin-1")})  # fmt: skip

    def _list_identity_item(self, buf: bytes, start: int, stop: int) -> dict[str, Any] | None:
        # Encapsulation protocol version, socket address, then the Identity object's attributes.
        ident = cip.identity(buf, start + 18, stop) if stop - start >= 18 else None
        if ident is None:
            self.anomaly("bad_length", "ListIdentity item is too short for the identity attributes")
            return None
        _family, port, addr = _SOCKADDR.unpack_from(buf, start + 2)
        return {"protocol_version": _U16.unpack_from(buf, start)[0],
                "socket_address": ".".join(str(b) for b in addr), "socket_port": port, **ident}  # fmt: skip

    # -- SendRRData / SendUnitData ---------------------------------------------------------------

    def _send_data(self, buf: bytes, body: int, end: int, hdr: dict[str, Any], context: bytes,
                   from_client: bool) -> None:  # fmt: skip
        command = hdr["command"]
        base: tuple[Hashable, ...] = ("u", context)
        items = _items(buf, body + 6, end) if end - body >= 6 else "no interface handle and timeout"
        if isinstance(items, str):
            self.anomaly("bad_cpf", items)
            self._bare(base, command, hdr, from_client)
            return
        hdr["interface_handle"], hdr["timeout"] = _IH.unpack_from(buf, body)
        connection_id: int | None = None
        data: tuple[int, int, int] | None = None
        for item in items:
            item_type = item[0]
            if item_type == ITEM_CONNECTED_ADDRESS and item[2] - item[1] == 4:
                connection_id = _U32.unpack_from(buf, item[1])[0]
            elif (item_type == ITEM_UNCONNECTED_DATA or item_type == ITEM_CONNECTED_DATA) and data is None:
                data = item
        if data is None:
            if hdr["status"] == 0:
                self.anomaly("bad_cpf", f"{COMMANDS[command][1]} without a CIP data item")
            self._bare(base, command, hdr, from_client)
            return
        item_type, start, stop = data
        if item_type == ITEM_CONNECTED_DATA:
            if stop - start < 2 or connection_id is None:
                self.anomaly("bad_cpf", "connected data item without a connection id or sequence count")
                self._bare(base, command, hdr, from_client)
                return
            sequence = _U16.unpack_from(buf, start)[0]
            start += 2
            hdr["connection_id"] = connection_id
            hdr["cip_sequence"] = sequence
            is_reply = stop > start and buf[start] & 0x80
            base = ("c", self._connection_pair(connection_id, bool(is_reply), sequence), sequence)
        if stop - start < 2:
            self.anomaly("bad_length", "CIP message shorter than its header")
            self._bare(base, command, hdr, from_client)
            return
        self._cip(buf, start, stop, hdr, base, from_client, (), None, None, 0)

    def _connection_pair(self, connection_id: int, is_reply: bool, sequence: int) -> int | None:
        """The O->T id naming the connection a connected message belongs to (None: not known)."""
        if not is_reply:
            return connection_id
        ot = self._connections.get(connection_id)
        if ot is None:
            # No Forward Open seen for this T->O id: if exactly one outstanding request has this
            # sequence count, its connection is this reply's.
            candidates = {k[1] for k in self._requests if k[0] == "c" and k[2] == sequence}
            found = candidates.pop() if len(candidates) == 1 else None
            if isinstance(found, int):
                ot = found
                self._remember_connection(connection_id, ot)
        return ot

    def _remember_connection(self, to_id: int, ot_id: int) -> None:
        connections = self._connections
        if to_id not in connections and len(connections) >= MAX_CONNECTIONS:
            del connections[next(iter(connections))]
            self.anomaly("connection_table_full", f"more than {MAX_CONNECTIONS} CIP connections on one flow; "
                         "forgetting the oldest")  # fmt: skip
        connections[to_id] = ot_id

    def _bare(self, key: tuple[Hashable, ...], command: int, hdr: dict[str, Any], from_client: bool) -> None:
        """A SendRRData/SendUnitData whose CIP cannot be read (errors, malformed CPF)."""
        if from_client:
            self.request(key, command, "unknown", hdr, from_client=True)
        else:
            self.response(key, command, "unknown", hdr, from_client=False, exception=hdr["status"] != 0)

    # -- CIP -------------------------------------------------------------------------------------

    def _cip(self, buf: bytes, start: int, stop: int, hdr: dict[str, Any], key: tuple[Hashable, ...],
             from_client: bool, via: tuple[int, ...], index: int | None, route: list[dict[str, Any]] | None,
             depth: int) -> None:  # fmt: skip
        """One CIP message ``buf[start:stop]``; containers recurse, every leaf is emitted."""
        if buf[start] & 0x80:
            self._cip_reply(buf, start, stop, hdr, key, from_client, via, index, depth)
            return
        service = buf[start]
        path_end = start + 2 + 2 * buf[start + 1]
        if path_end > stop:
            self.anomaly("bad_path", f"CIP request path of {buf[start + 1]} words runs past the message")
            path_end = stop
        path = cip.parse_path(buf, start + 2, path_end)
        if path.error is not None:
            self.anomaly("bad_path", f"CIP request path: {path.error}")
        fields: dict[str, Any] = {"service": service}
        if via:
            fields["via"] = list(via)
        if index is not None:
            fields["index"] = index
        if route:
            fields["route_path"] = route
        nested = depth < cip.MAX_DEPTH
        if service == cip.MULTIPLE_SERVICE_PACKET and nested:
            spans = cip.msp_spans(buf, path_end, stop)
            if isinstance(spans, str):
                self.anomaly("bad_msp", spans)
            elif spans:
                for i, (a, b) in enumerate(spans):
                    if b - a < 2:
                        self.anomaly("bad_msp", f"Multiple Service Packet service {i + 1} is too short")
                        continue
                    self._cip(buf, a, b, hdr, (*key, i), from_client, (*via, service), i, route, depth + 1)
                return
            else:
                self.anomaly("bad_msp", "Multiple Service Packet with no services")
        if service == cip.UNCONNECTED_SEND and path.klass == cip.CLASS_CONNECTION_MANAGER and nested:
            inner = cip.unconnected_send(buf, path_end, stop)
            if isinstance(inner, str):
                self.anomaly("bad_unconnected_send", inner)
            elif inner[1] - inner[0] < 2:
                self.anomaly("bad_unconnected_send", "Unconnected Send embeds an empty message")
            else:
                a, b, route_path = inner
                if route_path.error is not None:
                    self.anomaly("bad_path", f"Unconnected Send route path: {route_path.error}")
                self._cip(buf, a, b, hdr, key, from_client, (*via, service), index, route_path.route,
                          depth + 1)  # fmt: skip
                return
        path.as_fields(fields)
        operation, name = cip.classify(service, path, buf, path_end, stop)
        if name is not None:
            fields["service_name"] = name
        elif operation == "unknown":  # an unnamed service on a vendor's class is "vendor", not news
            self.anomaly("unknown_service", f"unknown CIP service 0x{service:02x} on class "
                         f"{'-' if path.klass is None else hex(path.klass)}")  # fmt: skip
        self._request_details(service, path.klass, buf, path_end, stop, fields)
        msg_fields = dict(hdr)
        msg_fields["cip"] = fields
        self._remember_request(key, service, path.klass, operation, fields)
        self.request(key, service, operation, msg_fields, from_client=from_client)

    def _request_details(self, service: int, klass: int | None, buf: bytes, data: int, end: int,
                         fields: dict[str, Any]) -> None:  # fmt: skip
        if service == GET_ATTRIBUTE_LIST or service == SET_ATTRIBUTE_LIST:
            # A count, then attribute ids (Get) or id/value pairs whose sizes only the class knows (Set).
            if end - data < 2:
                self.anomaly("bad_length", "attribute list request without a count")
                return
            count = _U16.unpack_from(buf, data)[0]
            fields["attribute_count"] = count
            if service == GET_ATTRIBUTE_LIST:
                if end - data < 2 + 2 * count:
                    self.anomaly("bad_length", f"attribute list of {count} ids runs past the request")
                    count = (end - data - 2) // 2
                fields["attributes"] = [
                    a for (a,) in struct.iter_unpack("<H", buf[data + 2 : data + 2 + 2 * count])
                ]
        elif klass == cip.CLASS_CONNECTION_MANAGER:
            if service == cip.FORWARD_OPEN or service == cip.LARGE_FORWARD_OPEN:
                params = cip.forward_open(buf, data, end, service == cip.LARGE_FORWARD_OPEN)
                if params is None:
                    self.anomaly("bad_length", "Forward Open request is too short")
                    return
                if params["timeout_multiplier"] is None:
                    self.anomaly("bad_forward_open", "Forward Open connection timeout multiplier is reserved")
                fields["forward_open"] = params
            elif service == cip.FORWARD_CLOSE:
                params = cip.forward_close(buf, data, end)
                if params is None:
                    self.anomaly("bad_length", "Forward Close request is too short")
                    return
                fields["forward_close"] = params
        elif klass == cip.CLASS_PCCC and service == 0x4B and end > data:
            # Requestor id (its length first), then the PCCC command, status, TNS and function.
            cmd_at = data + buf[data]
            if cmd_at + 4 <= end:
                pccc = {"command": buf[cmd_at], "tns": _U16.unpack_from(buf, cmd_at + 2)[0]}
                if cmd_at + 4 < end:
                    pccc["function"] = buf[cmd_at + 4]
                fields["pccc"] = pccc
        elif klass == cip.CLASS_MODBUS and service == 0x51 and end > data:
            fields["modbus_function"] = buf[data]
        elif (service == 0x4C or service == 0x52) and "tag" in fields and end - data >= 2:
            fields["elements"] = _U16.unpack_from(buf, data)[0]
        elif (service == 0x4D or service == 0x53) and "tag" in fields and end - data >= 4:
            fields["data_type"], fields["elements"] = _HH.unpack_from(buf, data)

    def _remember_request(self, key: tuple[Hashable, ...], service: int, klass: int | None, operation: str,
                          fields: dict[str, Any]) -> None:  # fmt: skip
        requests = self._requests
        requests.pop(key, None)
        horizon = self._ts - self.ctx.config.request_timeout
        while requests:
            oldest = next(iter(requests))
            if requests[oldest][0] > horizon and len(requests) < self.ctx.config.max_pending:
                break
            del requests[oldest]
        requests[key] = (self._ts, service, klass, operation, fields)

    def _cip_reply(self, buf: bytes, start: int, stop: int, hdr: dict[str, Any],
                   key: tuple[Hashable, ...], from_client: bool, via: tuple[int, ...], index: int | None,
                   depth: int) -> None:  # fmt: skip
        service = buf[start] & 0x7F
        if stop - start < 4:
            self.anomaly("bad_length", "CIP reply shorter than its 4-byte header")
            return
        status = buf[start + 2]
        words = buf[start + 3]
        data = start + 4 + 2 * words
        if data > stop:
            self.anomaly("bad_length", f"CIP reply additional status of {words} words runs past the message")
            data = stop
        fields: dict[str, Any] = {"service": service, "status": status}
        if words:
            # Whole words only: a reply cut inside its additional status (reported above) keeps the
            # words that are there.
            end = start + 4 + 2 * ((data - start - 4) // 2)
            fields["ext_status"] = [v for (v,) in struct.iter_unpack("<H", buf[start + 4 : end])]
        if via:
            fields["via"] = list(via)
        if index is not None:
            fields["index"] = index
        if service == cip.MULTIPLE_SERVICE_PACKET and depth < cip.MAX_DEPTH and data < stop:
            spans = cip.msp_spans(buf, data, stop)
            if isinstance(spans, str):
                self.anomaly("bad_msp", spans)
            else:
                for i, (a, b) in enumerate(spans):
                    if b - a < 4:
                        self.anomaly("bad_msp", f"Multiple Service Packet reply {i + 1} is too short")
                        continue
                    self._cip(buf, a, b, hdr, (*key, i), from_client, (*via, service), i, None, depth + 1)
                if spans:
                    return
        request = self._requests.pop(key, None)
        msg_fields = dict(hdr)
        if request is None:
            operation, name = cip.classify(service, _NO_PATH, buf, stop, stop)
        else:
            _ts, req_service, klass, operation, req_fields = request
            for target in _TARGET_FIELDS:
                if target in req_fields:
                    fields[target] = req_fields[target]
            if req_service == service:
                name = req_fields.get("service_name")
                if status in cip.OK_STATUS:
                    self._reply_details(service, klass, buf, data, stop, fields, msg_fields)
            else:  # e.g. an Unconnected Send that failed on the way: the router's own reply
                name = cip.classify(service, cip.Path(klass=klass), buf, stop, stop)[1]
        if name is not None:
            fields["service_name"] = name
        msg_fields["cip"] = fields
        self.response(key, service, operation, msg_fields, from_client=from_client,
                      exception=status not in cip.OK_STATUS)  # fmt: skip

    def _reply_details(self, service: int, klass: int | None, buf: bytes, data: int, end: int,
                       fields: dict[str, Any], msg_fields: dict[str, Any]) -> None:  # fmt: skip
        if klass == cip.CLASS_CONNECTION_MANAGER and (service == cip.FORWARD_OPEN
                                                       or service == cip.LARGE_FORWARD_OPEN):  # fmt: skip
            granted = cip.forward_open_reply(buf, data, end)
            if granted is None:
                self.anomaly("bad_length", "Forward Open reply is too short")
                return
            fields["forward_open"] = granted
            self._remember_connection(granted["to_connection_id"], granted["ot_connection_id"])
        elif klass == cip.CLASS_IDENTITY and service == cip.GET_ATTRIBUTES_ALL:
            ident = cip.identity(buf, data, end)
            if ident is not None:
                msg_fields["identity"] = ident
        elif (service == 0x4C or service == 0x52) and "tag" in fields and end - data >= 2:
            fields["data_type"] = _U16.unpack_from(buf, data)[0]

    # -- class 0/1 I/O ---------------------------------------------------------------------------

    def _io(self, buf: bytes, off: int, end: int, from_client: bool) -> None:
        items = _items(buf, off, end)
        if isinstance(items, str):
            self.anomaly("bad_cpf", items)
            return
        fields: dict[str, Any] = {}
        for item_type, start, stop in items:
            if item_type == ITEM_SEQUENCED_ADDRESS and stop - start == 8:
                fields["connection_id"], fields["sequence"] = _II.unpack_from(buf, start)
            elif item_type == ITEM_CONNECTED_DATA:
                fields["data_length"] = stop - start
        if len(fields) != 3:
            self.anomaly("bad_cpf", "I/O datagram without a sequenced address and a connected data item")
        self.request(None, ITEM_CONNECTED_DATA, "io", fields, from_client=from_client)


SPEC = ProtocolSpec(
    name="enip",
    tcp_ports=frozenset({44818}),
    udp_ports=frozenset({44818, 2222}),
    probe=probe,
    factory=EnipDecoder,
)
