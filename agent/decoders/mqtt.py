"""MQTT 3.1, 3.1.1 and 5.0 (TCP 1883; on other ports when the client opens with a CONNECT).

Checked against the OASIS MQTT v3.1.1 and v5.0 standards (fixed header, remaining-length variable
byte integer, variable headers, v5 properties and reason codes), IBM's MQTT v3.1 ("MQIsdp", level 3)
and Wireshark's packet-mqtt field definitions (``mqtt.msgtype``, ``mqtt.qos``, ``mqtt.topic``, ...).

Message model: ``function`` is the control packet type (1 CONNECT ... 15 AUTH).

* CONNECT / CONNACK, PINGREQ / PINGRESP and DISCONNECT are ``session``; AUTH (v5) is ``auth``.
* PUBLISH sent by a client is ``write`` (telemetry into the broker, or a command to whoever
  subscribes); sent by the broker it delivers a subscription, ``subscribe``. With QoS 1 it is
  answered by PUBACK; with QoS 2 by PUBREC, after which the publisher's PUBREL (a request) is
  answered by PUBCOMP. The keys carry the packet id and the publishing side.
* SUBSCRIBE / SUBACK and UNSUBSCRIBE / UNSUBACK are ``subscribe``, paired by packet id.

A packet larger than the stream buffer (a camera image or a firmware file in one PUBLISH) is
decoded from its first bytes (topic, packet id, properties; ``payload_len`` from its remaining
length) and the rest of it is passed over, so that the next packet is framed where it begins.

The protocol level announced in CONNECT decides whether v5 properties follow the variable header;
a flow picked up after its CONNECT is read as 3.1.1. Properties are skipped by their length, never
interpreted; the password and message payloads are never recorded (only their presence and size).
Protocol-state problems use Suricata's MQTT event names (``unintroduced_message``,
``missing_connect``, ``missing_publish``, ``invalid_qos_level``, ``unassigned_msg_type``, ...).
"""

from __future__ import annotations

import struct
from functools import partial
from typing import TYPE_CHECKING, Any

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE, StreamFramer

if TYPE_CHECKING:
    from agent.flows import Flow

PORT = 1883
MAX_LISTED = 32  # topics / reason codes listed per SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK
# Of a packet larger than the stream buffer, this much of its start is kept and decoded (a topic is
# at most 65,535 bytes; v5 properties usually a few dozen).
MAX_HEAD = 70_000

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
MESSAGE_TYPES = ("reserved", "connect", "connack", "publish", "puback", "pubrec", "pubrel", "pubcomp",
                 "subscribe", "suback", "unsubscribe", "unsuback", "pingreq", "pingresp", "disconnect",
                 "auth")  # fmt: skip
# Fixed-header flag bits every packet type but PUBLISH must carry (0b0010 for the three that
# are acknowledged: PUBREL, SUBSCRIBE, UNSUBSCRIBE).
REQUIRED_FLAGS = {
    t: (2 if t in (PUBREL, SUBSCRIBE, UNSUBSCRIBE) else 0) for t in range(1, 16) if t != PUBLISH
}
PROTOCOL_LEVELS = {3: "3.1", 4: "3.1.1", 5: "5.0"}

_U16 = struct.Struct("!H")


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, offset after it) of a variable byte integer; (-1, pos) if cut, (-2, pos) if over 4 bytes."""
    value = 0
    for i in range(4):
        if pos + i >= end:
            return -1, pos
        octet = buf[pos + i]
        value |= (octet & 0x7F) << (7 * i)
        if not octet & 0x80:
            return value, pos + i + 1
    return -2, pos


def message_length(buf: bytes, off: int, avail: int) -> int:
    # Only the remaining length frames a packet: a reserved type or bad flags are the packet's
    # anomalies (as Suricata reports them), not a reason to lose the stream.
    value, after = _varint(buf, off + 1, off + avail)
    if value == -2:
        return INVALID
    if value < 0:
        return NEED_MORE
    return after - off + value


def _connect_level(payload: bytes) -> int:
    """The protocol level of a CONNECT at the start of ``payload``, or 0 if it is not one."""
    end = len(payload)
    if end < 10 or payload[0] != 0x10:
        return 0
    remaining, pos = _varint(payload, 1, end)
    if remaining < 10:
        return 0
    if payload[pos : pos + 6] == b"\x00\x04MQTT" and pos + 6 < end and payload[pos + 6] in (4, 5):
        return payload[pos + 6]
    if payload[pos : pos + 8] == b"\x00\x06MQIsdp" and pos + 8 < end and payload[pos + 8] == 3:
        return 3
    return 0


def probe_any_port(payload: bytes, to_server: bool) -> bool:
    """Elsewhere than 1883 only a client's CONNECT with an MQTT protocol name and level will do."""
    return to_server and _connect_level(payload) != 0


def probe(payload: bytes, to_server: bool) -> bool:
    """On 1883: a CONNECT, or (a capture begun mid-session) a segment of whole well-formed packets."""
    if _connect_level(payload):
        return True
    end = len(payload)
    off = 0
    while off < end:
        first = payload[off]
        kind = first >> 4
        if kind == 0 or (kind != PUBLISH and first & 0x0F != REQUIRED_FLAGS[kind]) or first & 0x06 == 0x06:
            return False
        n = message_length(payload, off, end - off)
        if n <= 0 or off + n > end:
            return False
        off += n
    return end >= 2


class MqttDecoder(MessageDecoder):
    protocol = "mqtt"
    __slots__ = ("_big", "_connected", "_established", "_limit", "_payload_end", "_skip", "_unintroduced",
                 "level")  # fmt: skip

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.level = 4  # until a CONNECT says otherwise
        self._connected = False  # a CONNECT was seen
        self._established = False  # a CONNACK was seen
        self._unintroduced = {True: False, False: False}  # reported once per direction
        # Packets larger than the stream buffer (an image or firmware file in one PUBLISH) are decoded
        # from their start and their remaining bytes skipped, per direction (sent by the client?):
        self._limit = limit = ctx.config.max_stream_buffer
        self._big: dict[bool, tuple[bytes, int] | None] = {True: None, False: None}  # start, size
        self._skip = {True: 0, False: 0}  # bytes of such a packet still to pass over
        self._payload_end = -1  # while decoding such a start: where its payload would end
        if flow.proto == 6:
            # The framers, told their direction, so that a skip knows which stream it applies to.
            length, gap = self._length, self._gap
            self._c2s = StreamFramer(partial(length, True), self.parse, partial(gap, True), limit, True)
            self._s2c = StreamFramer(partial(length, False), self.parse, partial(gap, False), limit, False)

    def _length(self, from_client: bool, buf: bytes, off: int, avail: int) -> int:
        """``message_length``, except inside a packet being skipped.

        A packet larger than the buffer makes the framer report ``oversize`` and then look for the
        next header one byte at a time; those look-ups land here, so counting them down passes over
        exactly the rest of the packet and the next header is found where it really is.
        """
        skip = self._skip[from_client]
        if skip:
            self._skip[from_client] = skip - 1
            return INVALID
        n = message_length(buf, off, avail)
        if n > self._limit:
            self._big[from_client] = (bytes(buf[off : off + min(avail, MAX_HEAD)]), n)
        return n

    def _gap(self, from_client: bool, kind: str, detail: str) -> None:
        big = self._big[from_client]
        self._big[from_client] = None
        if kind == "oversize" and big is not None:
            head, size = big
            self._skip[from_client] = size - 1  # the framer looks on from the packet's second byte
            if head[0] >> 4 == PUBLISH:
                self.stats.buffer_overflows += 1  # counted, but a big PUBLISH is no anomaly
                self._payload_end = size
                try:
                    self.parse(head, 0, len(head), from_client)
                finally:
                    self._payload_end = -1
                return
            detail = f"MQTT {MESSAGE_TYPES[head[0] >> 4]} of {size} bytes skipped (over the stream buffer)"
        elif kind == "stream_gap":
            self._skip[from_client] = 0  # bytes were lost: the count no longer says where the next header is
        self._on_gap(kind, detail)

    message_length = staticmethod(message_length)

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        first = buf[off]
        kind = first >> 4
        flags = first & 0x0F
        _remaining, pos = _varint(buf, off + 1, off + length)
        end = off + length
        fields: dict[str, Any] = {"message_type": kind, "message_name": MESSAGE_TYPES[kind]}
        if kind == 0:
            # Still a message, so that a policy sees (and by default denies) what it cannot classify.
            self.anomaly("unassigned_msg_type", "MQTT control packet type 0 is reserved")
            self.request(None, 0, "unknown", fields, from_client)
            return
        if kind == PUBLISH:
            qos = (flags >> 1) & 3
            fields.update(dup=bool(flags & 8), qos=qos, retain=bool(flags & 1))
            if qos == 3:
                self.anomaly("invalid_qos_level", "MQTT PUBLISH with QoS 3")
        elif flags != REQUIRED_FLAGS[kind]:
            self.anomaly("reserved_bits", f"MQTT {MESSAGE_TYPES[kind]} with fixed-header flags 0x{flags:x}")
        if kind == AUTH and self.level != 5:
            self.anomaly("unassigned_msg_type", "MQTT AUTH before a protocol level 5 CONNECT")
        if kind == CONNECT:
            if self._connected:
                self.anomaly("double_connect", "a second MQTT CONNECT on the same connection")
            self._connected = True
        elif kind == CONNACK:
            if not self._connected:
                self.anomaly("missing_connect", "MQTT CONNACK without a CONNECT")
            self._established = True
        elif not self._established and not self._unintroduced[from_client]:
            # Before the CONNACK nothing but CONNECT may flow (or the capture began mid-session).
            self._unintroduced[from_client] = True
            self.anomaly("unintroduced_message", f"MQTT {MESSAGE_TYPES[kind]} before the session's CONNACK")
        try:
            self._dispatch(kind, buf, pos, end, from_client, fields)
        except _Truncated as cut:
            self.anomaly("malformed_traffic", f"MQTT {MESSAGE_TYPES[kind]}: {cut}")
            # What was read so far still makes a message: the type and flags are known.
            self._emit(kind, fields, from_client)

    # -- the packet types ---------------------------------------------------------------------------

    def _dispatch(self, kind: int, buf: bytes, pos: int, end: int, from_client: bool,
                  fields: dict[str, Any]) -> None:  # fmt: skip
        reader = _Reader(buf, pos, end)
        if kind == CONNECT:
            self._connect(reader, fields)
        elif kind == CONNACK:
            fields["session_present"] = bool(reader.u8() & 1)
            code = reader.u8()
            fields["reason_code" if self.level == 5 else "return_code"] = code
            self._properties(reader, fields)
        elif kind == PUBLISH:
            fields["topic"] = reader.string()
            if fields["qos"]:
                fields["packet_id"] = reader.u16()
            self._properties(reader, fields)
            # A packet over the buffer is decoded from its start: its payload ends beyond it.
            fields["payload_len"] = (self._payload_end if self._payload_end >= 0 else reader.end) - reader.pos
        elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            fields["packet_id"] = reader.u16()
            if kind in (SUBACK, UNSUBACK):
                self._properties(reader, fields)
                codes = reader.rest()
                if codes or kind == SUBACK:
                    fields["reason_codes" if self.level == 5 or kind == UNSUBACK else "return_codes"] = list(
                        codes[:MAX_LISTED]
                    )
            elif self.level == 5 and reader.pos < reader.end:
                fields["reason_code"] = reader.u8()
                if reader.pos < reader.end:
                    self._properties(reader, fields)
        elif kind in (SUBSCRIBE, UNSUBSCRIBE):
            fields["packet_id"] = reader.u16()
            self._properties(reader, fields)
            topics: list[dict[str, Any]] = []
            count = 0
            while reader.pos < reader.end:
                topic = reader.string()
                entry: dict[str, Any] = {"topic": topic}
                if kind == SUBSCRIBE:
                    options = reader.u8()
                    entry["qos"] = options & 3
                    if options & 3 == 3:
                        self.anomaly("invalid_qos_level", f"MQTT SUBSCRIBE to {topic!r} asks for QoS 3")
                count += 1
                if len(topics) < MAX_LISTED:
                    topics.append(entry)
            if not count:
                self.anomaly("malformed_traffic", f"MQTT {MESSAGE_TYPES[kind]} without a topic filter")
            fields["topics"] = topics
            fields["topic_count"] = count
        elif kind in (DISCONNECT, AUTH):
            if reader.pos < reader.end:
                fields["reason_code"] = reader.u8()
                if reader.pos < reader.end:
                    self._properties(reader, fields)
        elif reader.pos != reader.end:  # PINGREQ, PINGRESP
            self.anomaly("bad_length", f"MQTT {MESSAGE_TYPES[kind]} with {reader.end - reader.pos} bytes")
        self._emit(kind, fields, from_client)

    def _connect(self, reader: _Reader, fields: dict[str, Any]) -> None:
        name = reader.string()
        level = reader.u8()
        fields["protocol_name"] = name
        fields["protocol_version"] = level
        if level in PROTOCOL_LEVELS and name == ("MQIsdp" if level == 3 else "MQTT"):
            self.level = level
        else:
            self.anomaly("unknown_protocol_version", f"MQTT CONNECT with protocol {name!r} level {level}")
        flags = reader.u8()
        fields.update(clean_session=bool(flags & 0x02), will=bool(flags & 0x04),
                      username_present=bool(flags & 0x80), password_present=bool(flags & 0x40),
                      keep_alive=reader.u16())  # fmt: skip
        if flags & 0x01:
            self.anomaly("reserved_bits", "MQTT CONNECT flags set the reserved bit")
        if flags & 0x04:
            fields["will_qos"] = (flags >> 3) & 3
            fields["will_retain"] = bool(flags & 0x20)
        self._properties(reader, fields)
        fields["client_id"] = reader.string()
        if flags & 0x04:
            if self.level == 5:
                reader.skip(reader.varint())  # will properties
            fields["will_topic"] = reader.string()
            reader.skip(reader.u16())  # will message
        if flags & 0x80:
            reader.skip(reader.u16())  # user name: presence only
        if flags & 0x40:
            reader.skip(reader.u16())  # password: never read
        if reader.pos != reader.end:
            self.anomaly("bad_length", f"MQTT CONNECT has {reader.end - reader.pos} bytes after its payload")

    def _properties(self, reader: _Reader, fields: dict[str, Any]) -> None:
        if self.level != 5:
            return
        size = reader.varint()
        if size > reader.end - reader.pos:
            raise _Truncated(f"properties of {size} bytes run past the packet")
        fields["properties_len"] = size
        reader.skip(size)

    def _emit(self, kind: int, fields: dict[str, Any], from_client: bool) -> None:
        packet_id = fields.get("packet_id")
        if kind == CONNECT:
            self.request(("connect",), kind, "session", fields, from_client)
        elif kind == CONNACK:
            code = fields.get("reason_code", fields.get("return_code", 0))
            self.response(("connect",), kind, "session", fields, from_client, exception=code != 0)
        elif kind == PUBLISH:
            operation = "write" if from_client else "subscribe"
            qos = fields.get("qos", 0)
            key = ("publish", from_client, packet_id) if packet_id is not None and qos in (1, 2) else None
            self.request(key, kind, operation, fields, from_client)
        elif kind in (PUBACK, PUBREC, PUBCOMP):
            publisher = not from_client  # the ack goes back to whoever published
            key = ("pubrel" if kind == PUBCOMP else "publish", publisher, packet_id)
            missing = packet_id is None or self.pending.peek(key) is None
            if missing:
                self.anomaly(
                    "missing_publish", f"MQTT {MESSAGE_TYPES[kind]} for an unseen packet id {packet_id}"
                )
            self.response(key, kind, "write" if publisher else "subscribe", fields, from_client,
                          exception=fields.get("reason_code", 0) >= 0x80)  # fmt: skip
        elif kind == PUBREL:
            self.request(("pubrel", from_client, packet_id), kind, "write" if from_client else "subscribe",
                         fields, from_client)  # fmt: skip
        elif kind in (SUBSCRIBE, UNSUBSCRIBE):
            self.request(("subscribe", kind, packet_id), kind, "subscribe", fields, from_client)
        elif kind in (SUBACK, UNSUBACK):
            sub_key = ("subscribe", kind - 1, packet_id)
            if self.pending.peek(sub_key) is None:
                name = "missing_subscribe" if kind == SUBACK else "missing_unsubscribe"
                self.anomaly(name, f"MQTT {MESSAGE_TYPES[kind]} for an unseen packet id {packet_id}")
            codes = fields.get("reason_codes") or fields.get("return_codes") or []
            refused = any(c >= 0x80 for c in codes)
            self.response(sub_key, kind, "subscribe", fields, from_client, exception=refused)
        elif kind == PINGREQ:
            self.request(("ping",), kind, "session", fields, from_client)
        elif kind == PINGRESP:
            self.response(("ping",), kind, "session", fields, from_client)
        elif kind == DISCONNECT:
            self.request(None, kind, "session", fields, from_client)
        else:  # AUTH: a challenge/response exchange either side may open
            self.request(None, kind, "auth", fields, from_client)


class _Truncated(Exception):
    """A field runs past the end of its packet (caught in ``parse``; never leaves the decoder)."""


class _Reader:
    """Reads a packet's fields in order, raising ``_Truncated`` when one runs past ``end``."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def u8(self) -> int:
        if self.pos >= self.end:
            raise _Truncated("packet ends early")
        self.pos += 1
        return self.buf[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            raise _Truncated("packet ends early")
        self.pos += 2
        return int(_U16.unpack_from(self.buf, self.pos - 2)[0])

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise _Truncated(f"a {n}-byte field runs past the packet")
        self.pos += n

    def string(self) -> str:
        n = self.u16()
        start = self.pos
        self.skip(n)
        return self.buf[start : start + n].decode("utf-8", "replace")

    def varint(self) -> int:
        value, after = _varint(self.buf, self.pos, self.end)
        if value < 0:
            raise _Truncated("bad variable byte integer")
        self.pos = after
        return value

    def rest(self) -> bytes:
        data = self.buf[self.pos : self.end]
        self.pos = self.end
        return data


SPEC = ProtocolSpec(
    name="mqtt",
    tcp_ports=frozenset({PORT}),
    udp_ports=frozenset(),
    probe=probe,
    factory=MqttDecoder,
    probe_any_port=False,
)
# The same decoder found on another port: only a client's CONNECT is strong enough there.
SPEC_ANY_PORT = ProtocolSpec(
    name="mqtt",
    tcp_ports=frozenset(),
    udp_ports=frozenset(),
    probe=probe_any_port,
    factory=MqttDecoder,
)
