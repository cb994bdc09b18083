"""OPC UA binary (UA TCP, "opc.tcp", TCP 4840 and found by probe elsewhere), OPC 10000-6.

Every message starts with an 8-byte header: a 3-letter type (HEL, ACK, ERR, RHE for the transport;
OPN, MSG, CLO on a secure channel), a chunk type (F final, C continued, A abort) and the total size.
Secure channel messages then carry the channel id and either the asymmetric security header (OPN:
security policy URI, certificates) or the token id (MSG, CLO), the sequence header (sequence
number, request id) and the service body, which starts with the encoding NodeId of the service
type. Service ids and their operation classes follow DOMAIN.md section 5, checked against the OPC
Foundation's NodeIds.csv and Wireshark's opcua_serviceids.h.

Security: with SignAndEncrypt everything after the token id (sequence header included) is
ciphertext, and an OPN is encrypted whenever its policy is not None. The mode of a channel whose
OPN we cannot read is not on the wire, so each message's body is tested: a body that starts with a
known service NodeId is readable (None or Sign); anything else on a secured channel is ``opaque``,
counted like any message and never an anomaly.

Pairing: a response matches its request by request id and requestHandle (both in every readable
request and response); ACK answers HEL; an encrypted OPN response answers the encrypted OPN request.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from agent.decoders import opcua_encoding as enc
from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.decoders.opcua_encoding import Malformed
from agent.decoders.stream import INVALID, NEED_MORE

if TYPE_CHECKING:
    from agent.flows import Flow

_HEADER = struct.Struct("<3scI")
_U32X5 = struct.Struct("<IIIII")

NONE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#None"
# Smallest size of each message type (header plus its fixed fields); HEL/ACK/ERR/RHE are never chunked.
MIN_SIZE = {b"HEL": 32, b"ACK": 28, b"ERR": 16, b"RHE": 16, b"OPN": 24, b"MSG": 16, b"CLO": 16}
TRANSPORT_TYPES = frozenset({b"HEL", b"ACK", b"ERR", b"RHE"})
MAX_MESSAGE_SIZE = 1 << 26  # beyond any negotiated buffer: a header claiming more is not OPC UA
SECURITY_MODES = {0: "Invalid", 1: "None", 2: "Sign", 3: "SignAndEncrypt"}
REQUEST_TYPES = {0: "issue", 1: "renew"}
APPLICATION_TYPES = {0: "server", 1: "client", 2: "client_and_server", 3: "discovery_server"}
IDENTITY_TOKENS = {321: "anonymous", 324: "username", 327: "x509", 940: "issued"}
# Signature bytes at the end of every chunk of a signed channel, by policy (HMAC-SHA1 or -SHA256).
SIGNATURE_SIZE = {
    "http://opcfoundation.org/UA/SecurityPolicy#Basic128Rsa15": 20,
    "http://opcfoundation.org/UA/SecurityPolicy#Basic256": 20,
    "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256": 32,
    "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep": 32,
    "http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss": 32,
}

# Request encoding ids (DefaultBinary) -> (service name, operation class). ServiceFault (397)
# answers any request.
SERVICES: dict[int, tuple[str, str]] = {
    446: ("OpenSecureChannel", "session"), 452: ("CloseSecureChannel", "session"),
    461: ("CreateSession", "session"), 467: ("ActivateSession", "session"),
    473: ("CloseSession", "session"), 479: ("Cancel", "session"),
    422: ("FindServers", "discovery"), 428: ("GetEndpoints", "discovery"),
    12208: ("FindServersOnNetwork", "discovery"),
    437: ("RegisterServer", "config"), 12211: ("RegisterServer2", "config"),
    488: ("AddNodes", "config"), 494: ("AddReferences", "config"),
    500: ("DeleteNodes", "config"), 506: ("DeleteReferences", "config"),
    631: ("Read", "read"), 664: ("HistoryRead", "read"), 527: ("Browse", "read"),
    533: ("BrowseNext", "read"), 554: ("TranslateBrowsePathsToNodeIds", "read"),
    560: ("RegisterNodes", "read"), 566: ("UnregisterNodes", "read"),
    615: ("QueryFirst", "read"), 621: ("QueryNext", "read"),
    787: ("CreateSubscription", "subscribe"), 793: ("ModifySubscription", "subscribe"),
    799: ("SetPublishingMode", "subscribe"), 826: ("Publish", "subscribe"),
    832: ("Republish", "subscribe"), 841: ("TransferSubscriptions", "subscribe"),
    847: ("DeleteSubscriptions", "subscribe"), 751: ("CreateMonitoredItems", "subscribe"),
    763: ("ModifyMonitoredItems", "subscribe"), 769: ("SetMonitoringMode", "subscribe"),
    775: ("SetTriggering", "subscribe"), 781: ("DeleteMonitoredItems", "subscribe"),
    673: ("Write", "write"), 700: ("HistoryUpdate", "write"),
    712: ("Call", "operate"),
    410: ("TestStack", "diagnostic"), 416: ("TestStackEx", "diagnostic"),
}  # fmt: skip
SERVICE_FAULT = 397
OPEN_SECURE_CHANNEL, CLOSE_SECURE_CHANNEL = 446, 452
CREATE_SESSION, ACTIVATE_SESSION, GET_ENDPOINTS = 461, 467, 428
WRITE, CALL = 673, 712
# Response encoding id -> request encoding id: the next DataType after the request's three ids,
# except for the two services added later (their ids were allocated one after the other).
RESPONSES = {request + 3: request for request in SERVICES if request < 10000} | {12209: 12208, 12212: 12211}
VALUE_ATTRIBUTE = 13
# Namespace-0 methods whose Call is not an "operate" on the process (NodeIds.csv).
METHOD_OPERATIONS = {
    11492: "subscribe",  # Server.GetMonitoredItems
    12873: "subscribe",  # Server.ResendData
    12749: "subscribe",  # Server.SetSubscriptionDurable
    3875: "subscribe",  # ConditionType.ConditionRefresh
    12912: "subscribe",  # ConditionType.ConditionRefresh2
    12886: "mode",  # Server.RequestServerStateChange
}
MODE_METHODS = frozenset(f"i={m}" for m, operation in METHOD_OPERATIONS.items() if operation == "mode")
MAX_LISTED = 32  # attribute ids, methods, endpoints kept per message
MAX_REASSEMBLIES = 16  # chunked messages being put together per direction
MAX_CHUNKS = 4096  # chunk bodies kept per message (a peer's MaxChunkCount is usually far lower)


def message_length(buf: bytes, off: int, avail: int) -> int:
    if avail < 8:
        return NEED_MORE
    kind, chunk, size = _HEADER.unpack_from(buf, off)
    minimum = MIN_SIZE.get(kind)
    if minimum is None or chunk not in b"FCA" or size < minimum or size > MAX_MESSAGE_SIZE:
        return INVALID
    if chunk != b"F" and kind in TRANSPORT_TYPES:
        return INVALID
    return int(size)


def probe(payload: bytes, to_server: bool) -> bool:
    """A UA TCP header (known type, chunk type, plausible size) and, for a Hello, its fixed fields.

    Three letters from a small set, a chunk letter and a size no smaller than the type's fixed part
    are improbable by chance; a Hello must also have protocol version 0 and an endpoint URL that
    fits the message.
    """
    if message_length(payload, 0, len(payload)) <= 0:
        return False
    if payload[:3] == b"HEL" and len(payload) >= 32:
        size = _HEADER.unpack_from(payload, 0)[2]
        url_len = enc.I32.unpack_from(payload, 28)[0]
        return bool(enc.U32.unpack_from(payload, 8)[0] == 0 and -1 <= url_len <= size - 32)
    return True


class _Reassembly:
    """The chunks of one message received so far.

    Bodies are kept up to the stream buffer limit and MAX_CHUNKS; past that only the chunks are
    counted: the first chunk alone names the service and carries the handle, which is enough to
    classify and pair the message, so a large message is still reported (marked ``truncated``).
    """

    __slots__ = ("chunks", "count", "size", "truncated")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.count = 0
        self.size = 0
        self.truncated = False


class OpcUaDecoder(MessageDecoder):
    protocol = "opcua"
    __slots__ = ("_chunks", "_opaque_chunks", "security_mode", "security_policy")

    message_length = staticmethod(message_length)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.security_policy: str | None = None  # from the OPN's asymmetric header
        self.security_mode: str | None = None  # from the OPN body, else inferred from MSG bodies
        # (from_client, request id) -> chunks of a message under reassembly
        self._chunks: dict[tuple[bool, int], _Reassembly] = {}
        self._opaque_chunks = {True: 0, False: 0}  # C chunks of encrypted messages, per direction

    # -- framing and dispatch --------------------------------------------------------------------

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        kind, chunk, _size = _HEADER.unpack_from(buf, off)
        end = off + length
        fields: dict[str, Any] = {"message_type": kind.decode(), "chunk_type": chunk.decode(),
                                  "message_size": length}  # fmt: skip
        try:
            if kind in TRANSPORT_TYPES:
                self._transport(kind, buf, off + 8, end, from_client, fields)
            elif kind == b"OPN":
                self._open(buf, off + 8, end, from_client, fields)
            else:
                self._symmetric(kind, chunk, buf, off + 8, end, from_client, fields)
        except Malformed as e:
            self.anomaly("malformed", f"OPC UA {kind.decode()}: {e}")

    # -- HEL, ACK, ERR, RHE ----------------------------------------------------------------------

    def _transport(self, kind: bytes, buf: bytes, pos: int, end: int, from_client: bool,
                   fields: dict[str, Any]) -> None:  # fmt: skip
        if kind == b"HEL" or kind == b"ACK":
            version, receive, send, max_message, max_chunks = _U32X5.unpack_from(buf, pos)
            fields.update(protocol_version=version, receive_buffer_size=receive, send_buffer_size=send,
                          max_message_size=max_message, max_chunk_count=max_chunks)  # fmt: skip
            if kind == b"HEL":
                fields["endpoint_url"] = enc.string(buf, pos + 20, end)[0]
                self.request("hello", 0, "session", fields, from_client)
            else:
                self.response("hello", 0, "session", fields, from_client)
        elif kind == b"ERR":
            fields["error"] = enc.u32(buf, pos, end)
            fields["reason"] = enc.string(buf, pos + 4, end)[0]
            # An Error answers a Hello it rejects; later ones close the connection unasked.
            key = "hello" if self.pending.peek("hello") else None
            self.response(key, 0, "session", fields, from_client, exception=True)
        else:  # ReverseHello: a server that dialled out offers itself to the client
            fields["server_uri"], pos = enc.string(buf, pos, end)
            fields["endpoint_url"] = enc.string(buf, pos, end)[0]
            self.request(None, 0, "session", fields, from_client)

    # -- OPN -------------------------------------------------------------------------------------

    def _open(self, buf: bytes, pos: int, end: int, from_client: bool, fields: dict[str, Any]) -> None:
        fields["secure_channel_id"] = enc.u32(buf, pos, end)
        policy, pos = enc.string(buf, pos + 4, end)
        pos = enc.skip_string(buf, pos, end)  # sender certificate
        pos = enc.skip_string(buf, pos, end)  # receiver certificate thumbprint
        fields["security_policy_uri"] = policy
        if policy is not None:
            self.security_policy = policy
        expected = OPEN_SECURE_CHANNEL if from_client else OPEN_SECURE_CHANNEL + 3
        service = _body_service(buf, pos, end)
        if service != expected and service != SERVICE_FAULT:
            # Asymmetrically encrypted (any policy but None): the message type still says what it
            # is, and one OPN is outstanding at a time, so the pair still matches.
            fields["encrypted"] = True
            self._emit("opn", expected, "session", fields, from_client, from_client)
            return
        self._service(buf, pos, end, from_client, fields)

    # -- MSG, CLO --------------------------------------------------------------------------------

    def _symmetric(self, kind: bytes, chunk: bytes, buf: bytes, pos: int, end: int, from_client: bool,
                   fields: dict[str, Any]) -> None:  # fmt: skip
        channel, token = enc.U32X2.unpack_from(buf, pos)
        fields["secure_channel_id"] = channel
        fields["token_id"] = token
        pos += 8
        if chunk != b"F" or self._chunks:
            request_id = enc.u32(buf, pos + 4, end)
            pending = self._chunks.get((from_client, request_id))
            if (pending is not None or chunk != b"F") and self._chunk(
                pending, chunk, request_id, buf, pos, end, from_client, fields
            ):
                return
        if chunk == b"A" and self.security_policy == NONE_POLICY:
            # An abort whose earlier chunks we did not see: a channel event of an unknown service.
            fields["request_id"] = enc.u32(buf, pos + 4, end)
            fields["aborted"] = True
            fields["error"] = enc.u32(buf, pos + 8, end)
            fields["reason"] = enc.string(buf, pos + 12, end)[0]
            self._emit(None, 0, "session", fields, from_client, from_client, exception=True)
            return
        if not self._readable(buf, pos, end):
            fields["encrypted"] = True
            if chunk == b"C":
                self._opaque_chunks[from_client] += 1
                return
            chunks = self._opaque_chunks[from_client]
            if chunks:
                fields["chunks"] = chunks + 1
                self._opaque_chunks[from_client] = 0
            if chunk == b"A":
                fields["aborted"] = True
            # CloseSecureChannel is the only CLO; the rest are services nobody can see.
            if kind == b"CLO":
                self._emit(None, CLOSE_SECURE_CHANNEL, "session", fields, from_client, from_client)
            else:
                self._emit(None, 0, "opaque", fields, from_client, from_client)
            return
        if self.security_policy is not None and self.security_policy != NONE_POLICY:
            self.security_mode = "Sign"
        if kind == b"CLO":
            fields["request_id"] = enc.u32(buf, pos + 4, end)
        self._service(buf, pos, end, from_client, fields)

    def _readable(self, buf: bytes, pos: int, end: int) -> bool:
        """Whether the body after the token id is plaintext (see the module docstring)."""
        if self.security_policy == NONE_POLICY:
            return True
        service = _body_service(buf, pos, end)
        # Either kind of message counts on either side: the side on the server port may be the one
        # that sends requests (reverse connect, or a capture whose roles the ports do not tell).
        if service not in SERVICES and service not in RESPONSES and service != SERVICE_FAULT:
            if self.security_policy is not None and self.security_mode is None:
                self.security_mode = "SignAndEncrypt"
            return False
        return True

    # -- chunk reassembly ------------------------------------------------------------------------

    def _chunk(self, pending: _Reassembly | None, chunk: bytes, request_id: int, buf: bytes, pos: int,
               end: int, from_client: bool, fields: dict[str, Any]) -> bool:  # fmt: skip
        """Handle a chunk of a multi-chunk message; True when nothing more is to be done with it.

        ``pos`` is at the sequence header. The first chunk's body is checked for readability like
        any body; later chunks continue it. The final chunk's body is rebuilt from all of them.
        """
        key = (from_client, request_id)
        if pending is None:
            if chunk == b"A" or not self._readable(buf, pos, end):
                return False  # an abort with nothing buffered, or an encrypted chunk: handled whole
            if len(self._chunks) >= MAX_REASSEMBLIES:
                # Messages whose final chunk never came (a peer may interleave a few, not this many).
                oldest = next(iter(self._chunks))
                del self._chunks[oldest]
                self.stats.buffer_overflows += 1
                self.anomaly("reassembly_overflow", "too many OPC UA messages in reassembly; oldest dropped")
            pending = self._chunks[key] = _Reassembly()
            first = bytes(buf[pos : max(end - self._signature_size(), pos)])
            pending.chunks.append(first)
            pending.count = 1
            pending.size = len(first)
            return True
        body_start = pos + 8
        if chunk == b"A":
            del self._chunks[key]
            fields["request_id"] = request_id
            fields["aborted"] = True
            fields["chunks"] = pending.count + 1
            fields["error"] = enc.u32(buf, body_start, end)
            fields["reason"] = enc.string(buf, body_start + 4, end)[0]
            first = pending.chunks[0]
            # The first chunk says which service was aborted and which request it belonged to.
            self._service(first, 0, len(first), from_client, fields, aborted=True)
            return True
        pending.count += 1
        if not pending.truncated:
            piece = bytes(buf[body_start : max(end - self._signature_size(), body_start)])
            if pending.size + len(piece) > self.ctx.config.max_stream_buffer or pending.count > MAX_CHUNKS:
                pending.truncated = True  # counted once per message; see _Reassembly
                self.stats.buffer_overflows += 1
            else:
                pending.chunks.append(piece)
                pending.size += len(piece)
        if chunk == b"C":
            return True
        del self._chunks[key]
        fields["chunks"] = pending.count
        if pending.truncated:
            fields["truncated"] = True
        whole = b"".join(pending.chunks)
        self._service(whole, 0, len(whole), from_client, fields, partial=pending.truncated)
        return True

    def _signature_size(self) -> int:
        """Signature bytes ending each non-final chunk of a signed channel (none in a final one
        matter: they follow the body)."""
        return SIGNATURE_SIZE.get(self.security_policy or "", 0)

    # -- service bodies --------------------------------------------------------------------------

    def _service(self, buf: bytes, pos: int, end: int, from_client: bool, fields: dict[str, Any],
                 aborted: bool = False, partial: bool = False) -> None:  # fmt: skip
        """Decode from the sequence header on: sequence number, request id, service type, header."""
        if pos + 8 > end:
            raise Malformed("sequence header runs past the message")
        sequence, request_id = enc.U32X2.unpack_from(buf, pos)
        fields["sequence_number"] = sequence
        fields["request_id"] = request_id
        (ns, ident), pos = enc.expanded_node_id(buf, pos + 8, end)
        service = ident if ns == 0 and isinstance(ident, int) else -1
        fields["service_node_id"] = ident if isinstance(ident, int) else enc.format_node_id((ns, ident))
        # The type says request or response; the TCP side only decides for types we do not know.
        if service in SERVICES or (from_client and service not in RESPONSES and service != SERVICE_FAULT):
            self._request_body(service, buf, pos, end, fields, aborted or partial, from_client, aborted)
        else:
            self._response_body(service, buf, pos, end, fields, aborted or partial, from_client, aborted)

    def _request_body(self, service: int, buf: bytes, pos: int, end: int, fields: dict[str, Any],
                      incomplete: bool, from_client: bool, aborted: bool) -> None:  # fmt: skip
        """``incomplete``: only part of the body is here (aborted, or cut by the reassembly bound),
        so the details are read as far as they go and their end is no anomaly."""
        known = SERVICES.get(service)
        operation = known[1] if known else "unknown"
        if known is None:
            self.anomaly("unknown_service", f"OPC UA request type {fields['service_node_id']} is unknown")
        else:
            fields["service"] = known[0] + "Request"
        handle = None
        try:
            handle, pos = enc.skip_request_header(buf, pos, end)
            fields["request_handle"] = handle
            operation = self._request_details(service, buf, pos, end, fields, operation)
        except Malformed as e:
            operation = _operation_so_far(service, fields, operation)
            if not incomplete or handle is None:
                self.anomaly("malformed", f"OPC UA {fields.get('service', 'request')}: {e}")
        if aborted:
            self._emit(None, max(service, 0), operation, fields, from_client, True, exception=True)
            return
        # CloseSecureChannel has no response: the server closes the connection.
        key = None if service == CLOSE_SECURE_CHANNEL else (fields["request_id"], handle)
        self._emit(key, max(service, 0), operation, fields, from_client, True)

    def _response_body(self, service: int, buf: bytes, pos: int, end: int, fields: dict[str, Any],
                       incomplete: bool, from_client: bool, aborted: bool) -> None:  # fmt: skip
        request = RESPONSES.get(service)
        if request is not None:
            name, operation = SERVICES[request]
            fields["service"] = name + "Response"
        elif service == SERVICE_FAULT:
            fields["service"] = "ServiceFault"
            operation = "unknown"
        else:
            operation = "unknown"
            self.anomaly("unknown_service", f"OPC UA response type {fields['service_node_id']} is unknown")
        handle = None
        exception = aborted or service == SERVICE_FAULT
        try:
            handle = enc.u32(buf, pos + 8, end)
            result = enc.u32(buf, pos + 12, end)
            fields["request_handle"] = handle
            fields["service_result"] = result
            exception = exception or bool(result & 0x80000000)  # severity Bad
            if request is not None:
                self._response_details(request, buf, enc.skip_response_header(buf, pos, end), end, fields)
        except Malformed as e:
            if not incomplete or handle is None:
                self.anomaly("malformed", f"OPC UA {fields.get('service', 'response')}: {e}")
        key = (fields["request_id"], handle)
        self._emit(key, max(service, 0), operation, fields, from_client, False, exception)

    def _request_details(self, service: int, buf: bytes, pos: int, end: int, fields: dict[str, Any],
                         operation: str) -> str:  # fmt: skip
        """Fields of the request bodies that matter for classification and evidence; its operation."""
        if service == WRITE:
            return self._write(buf, pos, end, fields)
        if service == CALL:
            return self._call(buf, pos, end, fields)
        if service == OPEN_SECURE_CHANNEL:
            # clientProtocolVersion, requestType, securityMode
            request_type, mode = enc.U32X2.unpack_from(buf, pos + 4) if pos + 12 <= end else (-1, -1)
            fields["request_type"] = REQUEST_TYPES.get(request_type, str(request_type))
            fields["security_mode"] = self.security_mode = SECURITY_MODES.get(mode, str(mode))
        elif service == CREATE_SESSION:
            identity = _application_description(buf, pos, end)[0]
            if identity:
                fields["identity"] = identity
        elif service == ACTIVATE_SESSION:
            self._activate_session(buf, pos, end, fields)
        return operation

    def _write(self, buf: bytes, pos: int, end: int, fields: dict[str, Any]) -> str:
        """Write of Value (attribute 13) is a data write; of any other attribute, configuration."""
        count = enc.array_length(buf, pos, end)
        pos += 4
        attributes: list[int] = []
        config = False
        fields["nodes"] = count
        fields["attribute_ids"] = attributes
        for _ in range(count):
            pos = enc.skip_node_id(buf, pos, end)
            attribute = enc.u32(buf, pos, end)
            config = config or attribute != VALUE_ATTRIBUTE
            if attribute not in attributes and len(attributes) < MAX_LISTED:
                attributes.append(attribute)
            pos = enc.skip_string(buf, pos + 4, end)  # index range
            pos = enc.skip_data_value(buf, pos, end)
        return "config" if config else "write"

    def _call(self, buf: bytes, pos: int, end: int, fields: dict[str, Any]) -> str:
        """A Call operates on the process unless every method is a known server housekeeping one."""
        count = enc.array_length(buf, pos, end)
        pos += 4
        methods: list[str] = []
        operations: set[str] = set()
        fields["methods"] = methods
        for _ in range(count):
            pos = enc.skip_node_id(buf, pos, end)  # object
            (ns, ident), pos = enc.node_id(buf, pos, end)
            if len(methods) < MAX_LISTED:
                methods.append(enc.format_node_id((ns, ident)))
            known = METHOD_OPERATIONS.get(ident) if ns == 0 and isinstance(ident, int) else None
            operations.add(known or "operate")
            pos = enc.skip_array(buf, pos, end, enc.skip_variant)  # input arguments
        if "mode" in operations:
            return "mode"
        return "subscribe" if operations == {"subscribe"} else "operate"

    def _activate_session(self, buf: bytes, pos: int, end: int, fields: dict[str, Any]) -> None:
        pos = enc.skip_string(buf, pos, end)  # client signature: algorithm
        pos = enc.skip_string(buf, pos, end)  # ... and signature
        count = enc.array_length(buf, pos, end)  # client software certificates
        pos += 4
        for _ in range(count):
            pos = enc.skip_string(buf, enc.skip_string(buf, pos, end), end)
        pos = enc.skip_array(buf, pos, end, enc.skip_string)  # locale ids
        (ns, ident), pos = enc.node_id(buf, pos, end)  # user identity token's type
        token = IDENTITY_TOKENS.get(ident) if ns == 0 and isinstance(ident, int) else None
        fields["identity_token"] = token or enc.format_node_id((ns, ident))
        if token == "username" and pos + 5 <= end and buf[pos] == 1:
            # body: policyId, userName, password (encrypted or not: never kept), algorithm
            after_policy = enc.skip_string(buf, pos + 5, end)
            fields["user_name"] = enc.string(buf, after_policy, end)[0]

    def _response_details(self, request: int, buf: bytes, pos: int, end: int, fields: dict[str, Any]) -> None:
        if request == GET_ENDPOINTS:
            self._endpoints(buf, pos, end, fields)
        elif request == CREATE_SESSION:
            pos = enc.skip_node_id(buf, pos, end)  # session id
            pos = enc.skip_node_id(buf, pos, end)  # authentication token
            pos = enc.skip_string(buf, pos + 8, end)  # after the revised timeout: server nonce
            pos = enc.skip_string(buf, pos, end)  # server certificate
            self._endpoints(buf, pos, end, fields)
        elif request == OPEN_SECURE_CHANNEL and pos + 24 <= end:
            # serverProtocolVersion, then the token: channel id, token id, createdAt, revisedLifetime
            fields["revised_lifetime"] = enc.U32.unpack_from(buf, pos + 20)[0]

    def _endpoints(self, buf: bytes, pos: int, end: int, fields: dict[str, Any]) -> None:
        """An EndpointDescription array: the server's identity and the security it offers."""
        count = enc.array_length(buf, pos, end)
        pos += 4
        offered: list[dict[str, Any]] = []
        fields["endpoints"] = offered
        for _ in range(count):
            url, pos = enc.string(buf, pos, end)
            identity, pos = _application_description(buf, pos, end)
            if identity and "identity" not in fields:
                fields["identity"] = identity
            pos = enc.skip_string(buf, pos, end)  # server certificate
            mode = enc.u32(buf, pos, end)
            policy, pos = enc.string(buf, pos + 4, end)
            pos = enc.skip_array(buf, pos, end, _skip_user_token_policy)
            pos = enc.skip_string(buf, pos, end) + 1  # transport profile, security level
            if len(offered) < MAX_LISTED:
                offered.append({"endpoint_url": url, "security_mode": SECURITY_MODES.get(mode, str(mode)),
                                "security_policy_uri": policy})  # fmt: skip
        if pos > end:
            raise Malformed("EndpointDescription runs past the message")

    # -- emitting --------------------------------------------------------------------------------

    def _emit(self, key: Hashable | None, function: int, operation: str, fields: dict[str, Any],
              from_client: bool, is_request: bool, exception: bool = False) -> None:  # fmt: skip
        """A request or response sent by either side; the channel's security goes along."""
        if self.security_policy is not None and "security_policy_uri" not in fields:
            fields["security_policy_uri"] = self.security_policy
        if self.security_mode is not None and "security_mode" not in fields:
            fields["security_mode"] = self.security_mode
        if is_request:
            self.request(key, function, operation, fields, from_client)
        else:
            self.response(key, function, operation, fields, from_client, exception)


def _application_description(buf: bytes, pos: int, end: int) -> tuple[dict[str, Any], int]:
    """The identity keys of CONTRACTS.md from an ApplicationDescription, and the position after it."""
    uri, pos = enc.string(buf, pos, end)
    product, pos = enc.string(buf, pos, end)
    name, pos = enc.localized_text(buf, pos, end)
    kind = enc.u32(buf, pos, end)
    pos = enc.skip_string(buf, pos + 4, end)  # gateway server URI
    pos = enc.skip_string(buf, pos, end)  # discovery profile URI
    pos = enc.skip_array(buf, pos, end, enc.skip_string)  # discovery URLs
    identity: dict[str, Any] = {}
    if uri:
        identity["application_uri"] = uri
    if product:
        identity["product"] = product
    if name:
        identity["name"] = name
    if identity and kind in APPLICATION_TYPES:
        identity["device_type"] = APPLICATION_TYPES[kind]
    return identity, pos


def _operation_so_far(service: int, fields: dict[str, Any], operation: str) -> str:
    """The class that the decodable part of a Write or Call already decides, when the rest is not."""
    if service == WRITE and any(a != VALUE_ATTRIBUTE for a in fields.get("attribute_ids", ())):
        return "config"
    if service == CALL and any(m in MODE_METHODS for m in fields.get("methods", ())):
        return "mode"
    return operation


def _body_service(buf: bytes, pos: int, end: int) -> int | None:
    """The numeric namespace-0 type id of the body after the sequence header at ``pos`` (-1 for
    another kind of NodeId), or None when the bytes there do not decode (ciphertext)."""
    try:
        (ns, ident), _ = enc.expanded_node_id(buf, pos + 8, end)
    except Malformed:
        return None
    return ident if ns == 0 and isinstance(ident, int) else -1


def _skip_user_token_policy(buf: bytes, pos: int, end: int) -> int:
    pos = enc.skip_string(buf, pos, end)  # policy id
    pos = enc.skip_string(buf, pos + 4, end)  # after the token type: issued token type
    pos = enc.skip_string(buf, pos, end)  # issuer endpoint URL
    return enc.skip_string(buf, pos, end)  # security policy URI


SPEC = ProtocolSpec(
    name="opcua",
    tcp_ports=frozenset({4840}),
    udp_ports=frozenset(),
    probe=probe,
    factory=OpcUaDecoder,
)
