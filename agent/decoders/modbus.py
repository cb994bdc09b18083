"""Modbus/TCP (MBAP framing, TCP 502), with MEI device identification and Schneider UMAS.

Function codes and their operation classes follow DOMAIN.md section 5 (checked against the Modbus
Application Protocol Specification v1.1b3 and Wireshark's packet-mbtcp field definitions).
"""

from __future__ import annotations

import struct
from typing import Any

from agent.decoders.base import ProtocolSpec
from agent.decoders.message import UNREAD, MessageDecoder
from agent.decoders.stream import INVALID, NEED_MORE

_MBAP = struct.Struct("!HHHB")  # transaction id, protocol id, length, unit id
_MBAP_FC = struct.Struct("!HHHBBB")  # the same, then the function code and the PDU's first byte
_HH = struct.Struct("!HH")
_READ_REQUEST = struct.Struct("!HHHBBHH")  # MBAP, function code, start address, quantity
_HHHH = struct.Struct("!HHHH")
_HHH = struct.Struct("!HHH")

MAX_LENGTH = 260  # MBAP length: unit id + PDU (253) with slack for devices that pad

OPERATION_BY_FUNCTION = {
    1: "read", 2: "read", 3: "read", 4: "read", 24: "read",
    5: "write", 6: "write", 15: "write", 16: "write", 22: "write", 23: "write",
    7: "diagnostic", 11: "diagnostic", 12: "diagnostic", 17: "diagnostic",
    20: "file", 21: "file",
    **{fc: "vendor" for fc in (*range(65, 73), *range(100, 111))},
}  # fmt: skip
# Diagnostics (FC 8) sub-functions that are not plain diagnostics.
DIAGNOSTIC_SUBFUNCTION_OPERATION = {
    0x01: "mode",
    0x04: "mode",
    0x03: "config",
    0x0A: "config",
    0x14: "config",
}
UMAS = 90
UMAS_OPERATION = {
    0x10: "session", 0x11: "session",
    0x20: "read", 0x22: "read", 0x24: "read",
    0x23: "write", 0x25: "write",
    0x30: "program", 0x31: "program", 0x32: "program",  # PC -> PLC (UMAS calls it "upload")
    0x33: "upload", 0x34: "upload", 0x35: "upload",  # PLC -> PC (UMAS calls it "download")
    0x40: "mode", 0x41: "mode",
    0x58: "diagnostic",
}  # fmt: skip
EXCEPTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 8, 0x0A, 0x0B})
DEVICE_ID_OBJECTS = {0: "vendor_name", 1: "product_code", 2: "revision", 3: "vendor_url", 4: "product_name",
                     5: "model_name", 6: "user_application_name"}  # fmt: skip


def message_length(buf: bytes, off: int, avail: int) -> int:
    if avail < 8:
        return NEED_MORE
    length: int  # declared: unpack_from is untyped, and int() around it would be a call per message
    proto_id, length = _HH.unpack_from(buf, off + 2)
    if proto_id != 0 or length < 2 or length > MAX_LENGTH:
        return INVALID
    return 6 + length


def probe(payload: bytes, to_server: bool) -> bool:
    """The segment is exactly one or more whole MBAP frames (protocol id 0, lengths adding up).

    That is strong enough to tell Modbus from other traffic on 502 or elsewhere without requiring
    a known function code (unknown codes are Modbus anomalies, not another protocol).
    """
    end = len(payload)
    off = 0
    while off < end:
        n = message_length(payload, off, end - off)
        if n <= 0 or off + n > end:
            return False
        off += n
    return end >= 8


def classify(fc: int, pdu: bytes, off: int, end: int) -> str:
    """Operation class of a request PDU whose function code byte is at ``off``."""
    operation = OPERATION_BY_FUNCTION.get(fc)
    if operation is not None:
        return operation
    if fc == 8:
        sub = _HH.unpack_from(pdu, off + 1)[0] if end - off >= 3 else -1
        return DIAGNOSTIC_SUBFUNCTION_OPERATION.get(sub, "diagnostic")
    if fc == 43:
        mei = pdu[off + 1] if end - off >= 2 else -1
        return "diagnostic" if mei == 14 else "vendor"
    if fc == UMAS:
        # 0x5A, session key, UMAS function code
        return UMAS_OPERATION.get(pdu[off + 2], "vendor") if end - off >= 3 else "vendor"
    return "unknown"


class ModbusDecoder(MessageDecoder):
    protocol = "modbus"
    __slots__ = ()

    message_length = staticmethod(message_length)

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        """The polling exchange in one step: an in-order segment that is exactly one read request
        (function 1-4, 12 bytes) or one read-registers answer is framed and decoded here; anything
        else takes the general path (MessageDecoder.feed_segment), which handles it identically."""
        self._ts = ts
        self._cnt = cnt
        self._source = source
        if self._listening and self._epoch != self.ctx.epoch:
            self.tune()  # what the readers want may have changed: before a fast path chooses fields
        # Both directions test what MessageDecoder.feed_segment tests for its common case: in order,
        # nothing buffered, held or lost (inline: a method call would cost 5% of a message).
        if to_server == self.initiator_is_client:
            framer = self._c2s
            if (
                len(payload) == 12
                and framer is not None
                and seq == framer.next_seq
                and not (framer.buf or framer.resync or framer.ooo)
            ):
                tid, proto_id, length, unit, fc, address, quantity = _READ_REQUEST.unpack_from(payload)
                # (a quantity out of range is an anomaly: the general path reports it)
                if (
                    not proto_id
                    and length == 6
                    and 1 <= fc <= 4
                    and 1 <= quantity <= (2000 if fc <= 2 else 125)
                ):
                    framer.next_seq = (seq + 12) & 0xFFFFFFFF
                    fields = {"transaction_id": tid, "unit_id": unit, "function_code": fc, "address": address,
                              "quantity": quantity} if self._read_requests else UNREAD  # fmt: skip
                    self.request((tid, unit), fc, "read", fields)
                    return
        else:
            framer = self._s2c
            n = len(payload)
            if (
                n >= 10
                and framer is not None
                and seq == framer.next_seq
                and not (framer.buf or framer.resync or framer.ooo)
            ):
                tid, proto_id, length, unit, fc, b0 = _MBAP_FC.unpack_from(payload)
                if not proto_id and length + 6 == n and 3 <= fc <= 4 and n == 9 + b0:
                    framer.next_seq = (seq + n) & 0xFFFFFFFF
                    fields = {"transaction_id": tid, "unit_id": unit, "function_code": fc, "byte_count": b0,
                              "values_count": b0 // 2} if self._read_responses else UNREAD  # fmt: skip
                    self.response((tid, unit), fc, "read", fields)
                    return
        MessageDecoder.feed_segment(self, to_server, seq, payload, ts, cnt, source)

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        tid, _proto, _mbap_len, unit = _MBAP.unpack_from(buf, off)
        end = off + length
        pdu = off + 7  # function code
        fc = buf[pdu]
        fields: dict[str, Any] = {"transaction_id": tid, "unit_id": unit, "function_code": fc & 0x7F}
        key = (tid, unit)
        if from_client:
            if fc <= 6 and fc and end - pdu == 5:
                # The polling case (read coils/inputs/registers, write single), decoded in place.
                address, value = _HH.unpack_from(buf, pdu + 1)
                fields["address"] = address
                if fc <= 4:
                    fields["quantity"] = value
                    if not 1 <= value <= (2000 if fc <= 2 else 125):
                        self.anomaly("bad_quantity", f"Modbus function {fc} asks for {value} items")
                    self.request(key, fc, "read", fields)
                else:
                    fields["value"] = value
                    self.request(key, fc, "write", fields)
                return
            operation = OPERATION_BY_FUNCTION.get(fc) or classify(fc, buf, pdu, end)
            if operation == "unknown":
                self.anomaly("unknown_function", f"unknown Modbus function code {fc}")
            self._request_fields(fc, buf, pdu, end, fields)
            self.request(key, fc, operation, fields)
            return
        if fc & 0x80:
            code = buf[pdu + 1] if end > pdu + 1 else -1
            fields["exception_code"] = code
            if code not in EXCEPTION_CODES:
                self.anomaly("bad_exception_code", f"Modbus exception code {code} is not defined")
            self.response(key, fc & 0x7F, classify(fc & 0x7F, buf, pdu, end), fields, exception=True)
            return
        if 3 <= fc <= 4:
            # Read registers, the polling answer, in place: byte count, then two bytes a register.
            byte_count = buf[pdu + 1] if end - pdu >= 2 else -1
            fields["byte_count"] = byte_count
            if end - pdu == 2 + byte_count:
                fields["values_count"] = byte_count // 2
            else:
                self.anomaly("bad_length", f"Modbus function {fc} response: byte count {byte_count}, "
                             f"{end - pdu - 2} data bytes")  # fmt: skip
            self.response(key, fc, "read", fields)
            return
        self._response_fields(fc, buf, pdu, end, fields)
        self.response(key, fc, OPERATION_BY_FUNCTION.get(fc) or classify(fc, buf, pdu, end), fields)

    def _request_fields(self, fc: int, buf: bytes, pdu: int, end: int, fields: dict[str, Any]) -> None:
        size = end - pdu
        if fc in (1, 2, 3, 4, 5, 6):
            if size != 5:
                self._bad_length(fc, size)
                return
            address, value = _HH.unpack_from(buf, pdu + 1)
            fields["address"] = address
            fields["quantity" if fc <= 4 else "value"] = value
            if fc <= 4 and not 1 <= value <= (2000 if fc <= 2 else 125):
                self.anomaly("bad_quantity", f"Modbus function {fc} asks for {value} items")
        elif fc in (15, 16):
            if size < 6:
                self._bad_length(fc, size)
                return
            address, quantity = _HH.unpack_from(buf, pdu + 1)
            byte_count = buf[pdu + 5]
            fields.update(address=address, quantity=quantity, byte_count=byte_count, values_count=quantity)
            expected = (quantity + 7) // 8 if fc == 15 else quantity * 2
            if byte_count != expected or size != 6 + byte_count:
                self.anomaly("bad_length", f"Modbus function {fc}: byte count {byte_count} does not fit "
                             f"quantity {quantity} and frame size")  # fmt: skip
        elif fc == 22 and size == 7:
            address, and_mask, or_mask = _HHH.unpack_from(buf, pdu + 1)
            fields.update(address=address, and_mask=and_mask, or_mask=or_mask)
        elif fc == 23 and size >= 10:
            read_address, read_quantity, write_address, write_quantity = _HHHH.unpack_from(buf, pdu + 1)
            fields.update(read_address=read_address, read_quantity=read_quantity, address=write_address,
                          quantity=write_quantity, values_count=write_quantity)  # fmt: skip
        elif fc == 8 and size >= 3:
            fields["subfunction"] = _HH.unpack_from(buf, pdu + 1)[0]
        elif fc == 43 and size >= 2:
            fields["mei_type"] = buf[pdu + 1]
            if buf[pdu + 1] == 14 and size >= 4:
                fields["read_device_id"] = buf[pdu + 2]
                fields["object_id"] = buf[pdu + 3]
        elif fc == UMAS and size >= 3:
            fields["umas"] = {"session": buf[pdu + 1], "function_code": buf[pdu + 2]}

    def _response_fields(self, fc: int, buf: bytes, pdu: int, end: int, fields: dict[str, Any]) -> None:
        size = end - pdu
        if fc in (1, 2, 3, 4, 23):
            byte_count = buf[pdu + 1] if size >= 2 else -1
            fields["byte_count"] = byte_count
            if size != 2 + byte_count:
                self.anomaly("bad_length", f"Modbus function {fc} response: byte count {byte_count}, "
                             f"{size - 2} data bytes")  # fmt: skip
            elif fc in (3, 4, 23):
                fields["values_count"] = byte_count // 2
        elif fc in (5, 6, 15, 16):
            if size != 5:
                self._bad_length(fc, size)
                return
            address, value = _HH.unpack_from(buf, pdu + 1)
            fields["address"] = address
            fields["quantity" if fc >= 15 else "value"] = value
        elif fc == 43 and size >= 2:
            fields["mei_type"] = buf[pdu + 1]
            if buf[pdu + 1] == 14:
                self._device_identification(buf, pdu, end, fields)
        elif fc == UMAS and size >= 3:
            fields["umas"] = {"session": buf[pdu + 1], "status": buf[pdu + 2]}

    def _device_identification(self, buf: bytes, pdu: int, end: int, fields: dict[str, Any]) -> None:
        # MEI 14 response: read code, conformity, more follows, next object id, object count, objects.
        if end - pdu < 7:
            self._bad_length(43, end - pdu)
            return
        fields["read_device_id"] = buf[pdu + 2]
        fields["conformity_level"] = buf[pdu + 3]
        count = buf[pdu + 6]
        pos = pdu + 7
        objects: dict[str, str] = {}
        for _ in range(count):
            if pos + 2 > end or pos + 2 + buf[pos + 1] > end:
                self.anomaly("bad_length", "Modbus device identification object runs past the frame")
                break
            obj_id, obj_len = buf[pos], buf[pos + 1]
            value = buf[pos + 2 : pos + 2 + obj_len].decode("latin-1")
            objects[DEVICE_ID_OBJECTS.get(obj_id, f"object_{obj_id}")] = value
            pos += 2 + obj_len
        fields["objects"] = objects

    def _bad_length(self, fc: int, size: int) -> None:
        self.anomaly("bad_length", f"Modbus function {fc}: PDU of {size} bytes")


SPEC = ProtocolSpec(
    name="modbus",
    tcp_ports=frozenset({502}),
    udp_ports=frozenset(),
    probe=probe,
    factory=ModbusDecoder,
)
