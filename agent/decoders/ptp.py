"""IEEE 1588 PTP (v2): over Ethernet (EtherType 0x88F7) and over UDP 319 (event) / 320 (general).

Identified with its header: message type, version, domain, sequence id, source clock identity.
Clock synchronisation is ``time``; a management message that sets or commands something (action
SET or COMMAND) reconfigures a clock and is ``config``. ``function`` is the message type.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.flows import Flow
from agent.linklayer import ETH_PTP

MESSAGE_TYPES = {0x0: "sync", 0x1: "delay_req", 0x2: "pdelay_req", 0x3: "pdelay_resp", 0x8: "follow_up",
                 0x9: "delay_resp", 0xA: "pdelay_resp_follow_up", 0xB: "announce", 0xC: "signaling",
                 0xD: "management"}  # fmt: skip
MANAGEMENT = 0xD
MANAGEMENT_ACTIONS = {0: "get", 1: "set", 2: "response", 3: "command", 4: "acknowledge"}
HEADER_LEN = 34
_HEADER = struct.Struct("!BBHB")  # transportSpecific|messageType, version, length, domain


def probe(payload: bytes, from_initiator: bool) -> bool:
    """PTPv2 on UDP 319/320: version 2 and a message length that fits the datagram."""
    if len(payload) < HEADER_LEN or payload[1] & 0x0F != 2:
        return False
    length = (payload[2] << 8) | payload[3]
    return HEADER_LEN <= length <= len(payload) and payload[0] & 0x0F in MESSAGE_TYPES


class PtpDecoder(MessageDecoder):
    protocol = "ptp"

    __slots__ = ()

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if length < HEADER_LEN:
            self.anomaly("truncated", f"PTP header needs {HEADER_LEN} octets, {length} present")
            return
        first, version, msg_len, domain = _HEADER.unpack_from(buf, off)
        message_type = first & 0x0F
        if msg_len < HEADER_LEN or msg_len > length:
            self.anomaly("bad_length", f"PTP messageLength {msg_len} with {length} octets")
            return
        fields: dict[str, Any] = {
            "message_type": message_type,
            "message": MESSAGE_TYPES.get(message_type, "reserved"),
            "version": version & 0x0F,
            "domain": domain,
            "sequence_id": (buf[off + 30] << 8) | buf[off + 31],
            "clock_identity": buf[off + 20 : off + 28].hex(),
        }
        operation = "time"
        if message_type == MANAGEMENT and msg_len >= 47:
            action = buf[off + 46] & 0x0F
            fields["action"] = MANAGEMENT_ACTIONS.get(action, str(action))
            if action in (1, 3):
                operation = "config"
        self.request(None, message_type, operation, fields, from_client)


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> PtpDecoder:
    return PtpDecoder(flow, ctx, initiator_is_client)


# On UDP the probe confirms the port; on Ethernet the EtherType decides, as for the other L2 protocols.
SPEC = ProtocolSpec("ptp", frozenset(), frozenset({319, 320}), probe, _factory, probe_any_port=False,
                    ethertypes=frozenset({ETH_PTP}))  # fmt: skip
