"""LLDP (IEEE 802.1AB, EtherType 0x88CC): identified, with the fields an inventory wants.

One record per LLDPDU, ``discovery``: chassis id, port id, time to live, system name and
description, and system capabilities (enabled ones). The sender describes itself, so the system
name and a role from its capabilities go under ``identity``. A TLV running past the frame or a
missing mandatory TLV (chassis id, port id, TTL) is an anomaly.
"""

from __future__ import annotations

from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec, link_layer_spec
from agent.decoders.message import MessageDecoder
from agent.flows import Flow
from agent.linklayer import ETH_LLDP, format_mac

END, CHASSIS_ID, PORT_ID, TTL, PORT_DESC, SYSTEM_NAME, SYSTEM_DESC, CAPABILITIES = range(8)
CAPABILITY_NAMES = ((0x0001, "other"), (0x0002, "repeater"), (0x0004, "bridge"), (0x0008, "wlan_ap"),
                    (0x0010, "router"), (0x0020, "telephone"), (0x0040, "docsis"),
                    (0x0080, "station"))  # fmt: skip
_ROLE_BY_CAPABILITY = (("router", "router"), ("bridge", "switch"), ("wlan_ap", "access-point"),
                       ("station", "station"))  # fmt: skip
_MAC_SUBTYPES = {1: 4, 2: 3}  # TLV type -> the id subtype meaning "MAC address" (chassis 4, port 3)


def _identifier(tlv_type: int, value: bytes) -> str:
    subtype = value[0]
    raw = value[1:]
    if subtype == _MAC_SUBTYPES[tlv_type] and len(raw) == 6:
        return format_mac(raw)
    return raw.decode("latin-1")


class LldpDecoder(MessageDecoder):
    protocol = "lldp"

    __slots__ = ()

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        end = off + length
        fields: dict[str, Any] = {}
        while off + 2 <= end:
            header = (buf[off] << 8) | buf[off + 1]
            tlv_type, tlv_len = header >> 9, header & 0x01FF
            off += 2
            if off + tlv_len > end:
                self.anomaly("bad_length", f"LLDP TLV {tlv_type} of {tlv_len} octets runs past the frame")
                return
            value = buf[off : off + tlv_len]
            off += tlv_len
            if tlv_type == END:
                break
            if tlv_type in (CHASSIS_ID, PORT_ID) and tlv_len >= 2:
                fields["chassis_id" if tlv_type == CHASSIS_ID else "port_id"] = _identifier(tlv_type, value)
            elif tlv_type == TTL and tlv_len == 2:
                fields["ttl"] = (value[0] << 8) | value[1]
            elif tlv_type == PORT_DESC:
                fields["port_description"] = value.decode("latin-1")
            elif tlv_type == SYSTEM_NAME:
                fields["system_name"] = value.decode("latin-1")
            elif tlv_type == SYSTEM_DESC:
                fields["system_description"] = value.decode("latin-1")
            elif tlv_type == CAPABILITIES and tlv_len == 4:
                enabled = (value[2] << 8) | value[3]
                fields["capabilities"] = [name for bit, name in CAPABILITY_NAMES if enabled & bit]
        missing = [name for name in ("chassis_id", "port_id", "ttl") if name not in fields]
        if missing:
            self.anomaly("missing_field", "LLDPDU without " + ", ".join(missing))
        identity: dict[str, Any] = {}
        if "system_name" in fields:
            identity["name"] = fields["system_name"]
        for capability, role in _ROLE_BY_CAPABILITY:
            if capability in fields.get("capabilities", ()):
                identity["role_hint"] = role
                break
        if identity:
            fields["identity"] = identity
        self.request(None, 0, "discovery", fields, from_client)


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> LldpDecoder:
    return LldpDecoder(flow, ctx, initiator_is_client)


SPEC: ProtocolSpec = link_layer_spec("lldp", frozenset({ETH_LLDP}), _factory)
