"""PTP over UDP (IEEE 1588; event port 319, general port 320): version, domain, message types.

PTPv2 headers give the message type (low nibble of byte 0), the version (low nibble of byte 1), the
message length (bytes 2-3) and the domain (byte 4). PTPv1 starts with versionPTP = 1 and
versionNetwork = 1 as 16-bit words. PTP over Ethernet (EtherType 0x88F7) is link-layer traffic,
not identified here.
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

MESSAGE_TYPES = {0x0: "sync", 0x1: "delay_req", 0x2: "pdelay_req", 0x3: "pdelay_resp", 0x8: "follow_up",
                 0x9: "delay_resp", 0xA: "pdelay_resp_follow_up", 0xB: "announce", 0xC: "signaling",
                 0xD: "management"}  # fmt: skip


def _version(payload: bytes) -> int:
    if len(payload) >= 34 and payload[1] & 0x0F == 2 and payload[0] & 0x0F in MESSAGE_TYPES:
        length = payload[2] << 8 | payload[3]
        return 2 if 34 <= length <= len(payload) else 0
    if len(payload) >= 40 and payload[:4] == b"\x00\x01\x00\x01":
        return 1
    return 0


def probe(payload: bytes, to_server: bool) -> bool:
    return _version(payload) != 0


class PtpIdentifier(Identifier):
    protocol = "ptp"
    max_packets = 32

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        version = _version(payload)
        if version:
            self.fields["version"] = version
        if version == 2:
            self.fields["domain"] = payload[4]
            self.count("message_types", MESSAGE_TYPES[payload[0] & 0x0F])
        return False


SPEC = ProtocolSpec("ptp", frozenset(), frozenset({319, 320}), probe, PtpIdentifier, probe_any_port=False)
