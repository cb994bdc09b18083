"""Routable GOOSE and SV (IEC 61850-90-5) over UDP 102: identified, the PDU decoded where found.

A session protocol data unit starts with a session identifier (0xA0 tunnelled frame, 0xA1 GOOSE,
0xA2 SV, 0xA3 management), a length indicator and the common session header (parameter 0x80:
SPDU length and number, version); security information and the payload follow. That much
identifies R-GOOSE/R-SV, so the flow is named ``rgoose`` and every SPDU is an ``io`` record with
its SPDU number. The payload's goosePdu (tag 0x61) or savPdu (0x60) is looked for after the
header and, when its BER length closes within the datagram, decoded as on Ethernet, so stNum,
sqNum or smpCnt are there for the health work. Signed or encrypted payloads stay undecoded.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.ber import BerError, read_tlv
from agent.decoders.goose import GooseDecoder
from agent.decoders.message import MessageDecoder
from agent.decoders.sv import parse_sav_pdu
from agent.flows import Flow

PORT = 102
SESSION_IDS = {0xA0: "tunnelled", 0xA1: "goose", 0xA2: "sv", 0xA3: "management"}
COMMON_HEADER = 0x80
_COMMON = struct.Struct("!BBIIH")  # parameter id, length, SPDU length, SPDU number, version
_PDU_TAGS = {0xA1: 0x61, 0xA2: 0x60}  # session id -> the APDU tag its payload carries


def probe(payload: bytes, from_initiator: bool) -> bool:
    """A 90-5 session header: known session id, then the common header parameter 0x80."""
    if len(payload) < 2 + _COMMON.size or payload[0] not in SESSION_IDS or payload[2] != COMMON_HEADER:
        return False
    spdu_len: int = struct.unpack_from("!I", payload, 4)[0]
    return spdu_len <= len(payload)


class RoutableGooseDecoder(MessageDecoder):
    protocol = "rgoose"

    __slots__ = ()

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        end = off + length
        if length < 2 + _COMMON.size or buf[off] not in SESSION_IDS or buf[off + 2] != COMMON_HEADER:
            self.anomaly("bad_header", "not an IEC 61850-90-5 session header")
            return
        session_id = buf[off]
        _param, _plen, spdu_len, spdu_num, version = _COMMON.unpack_from(buf, off + 2)
        fields: dict[str, Any] = {
            "session_id": session_id,
            "kind": SESSION_IDS[session_id],
            "spdu_length": spdu_len,
            "spdu_number": spdu_num,
            "version": version,
        }
        pdu_tag = _PDU_TAGS.get(session_id)
        if pdu_tag is not None:
            self._find_pdu(buf, off + 2 + _COMMON.size, end, pdu_tag, fields)
        self.request(None, session_id, "io", fields, from_client)

    @staticmethod
    def _find_pdu(buf: bytes, start: int, end: int, tag: int, fields: dict[str, Any]) -> None:
        """Decode the first element with ``tag`` that is well formed and ends inside the datagram."""
        pos = buf.find(bytes([tag]), start, end)
        while pos >= 0:
            try:
                _tag, _value, pdu_end = read_tlv(buf, pos, end)
                pdu: dict[str, Any] = {}
                if tag == 0x61:
                    GooseDecoder.parse_pdu(buf, pos, pdu_end, pdu)
                else:
                    parse_sav_pdu(buf, pos, pdu_end, pdu)
                fields.update(pdu)
                return
            except BerError:
                pos = buf.find(bytes([tag]), pos + 1, end)


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> RoutableGooseDecoder:
    return RoutableGooseDecoder(flow, ctx, initiator_is_client)


# Only on UDP 102: TCP 102 is ISO-TSAP (S7comm, MMS); the probe rejects anything else.
SPEC = ProtocolSpec("rgoose", frozenset(), frozenset({PORT}), probe, _factory, probe_any_port=False)
