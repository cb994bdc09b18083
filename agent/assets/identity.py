"""Device identity read from the wire, in one vocabulary whatever protocol revealed it.

Decoders written for the asset inventory put a dict under ``fields["identity"]`` with the keys of
CONTRACTS.md. Older decoders expose the same facts under their own names: the EtherNet/IP decoder
uses ``fields["identity"]`` with CIP attribute names (``product_name``, ``serial_number``) and the
Modbus decoder lists MEI device identification objects under ``fields["objects"]``. This module maps
all of them onto the contract keys, so the inventory and the tests treat every protocol alike.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from agent.decoders.base import RESPONSE, OtMessage

IDENTITY_KEYS = (
    "vendor",
    "vendor_id",
    "product",
    "product_code",
    "model",
    "revision",
    "serial",
    "name",
    "device_instance",
    "application_uri",
    "device_type",
    "role_hint",
)
# Other spellings of the contract keys (CIP attribute names, Modbus MEI object names).
ALIASES = {
    "product_name": "product",
    "serial_number": "serial",
    "vendor_name": "vendor",
    "model_name": "model",
    "user_application_name": "name",
}
MAX_TEXT = 128  # identity strings come from the wire: bounded and printable before they are kept

# CIP Identity object device types (device profiles) that say what a device is for.
CIP_DEVICE_ROLES = {
    0x0C: "communications-adapter",
    0x0E: "controller",
    0x18: "hmi",
    0x2C: "network-switch",
    0x07: "io-device",
    0x23: "io-device",
    0x2A: "io-device",
    0x02: "drive",
    0x13: "drive",
    0x25: "drive",
}


def clean_text(value: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in value).strip()
    return text[:MAX_TEXT]


def normalise(raw: dict[str, Any]) -> dict[str, str | int]:
    """The contract keys present in ``raw`` (under their own name or an alias), values cleaned."""
    out: dict[str, str | int] = {}
    for key, value in raw.items():
        name = ALIASES.get(key, key)
        if name not in IDENTITY_KEYS or (name in out and key != name):
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[name] = value
        elif isinstance(value, str):
            text = clean_text(value)
            if text:
                out[name] = text
    return out


def message_identity(msg: OtMessage) -> tuple[dict[str, str | int], str] | None:
    """(identity of the device that SENT ``msg``, what revealed it), or None if it reveals none."""
    fields = msg.fields
    ident = fields.get("identity")
    if isinstance(ident, dict):
        found = normalise(ident)
        if found:
            how = "ListIdentity" if msg.protocol == "enip" and "socket_address" in ident else "identity"
            return found, f"{msg.protocol} {how}"
    if msg.protocol == "modbus" and msg.direction == RESPONSE:
        objects = fields.get("objects")
        if isinstance(objects, dict):
            found = normalise(objects)
            if found:
                return found, "modbus device identification (MEI 14)"
    return None


ROUTED_PREFIX = "bacnet:"  # a device on another BACnet network, reached through a router


def identity_owner(fields: dict[str, Any]) -> bytes | str | None:
    """The address whose identity a message reveals when it is not its sender's: ``identity_of``
    (CONTRACTS.md). An IP address (bytes) for the original B/IP sender of a BACnet Forwarded-NPDU
    that a BBMD relayed; the text ``bacnet:NET:MACHEX`` for a device on another BACnet network whose
    I-Am a router relayed (it has no IP or MAC of its own on the captured link)."""
    text = fields.get("identity_of")
    if not isinstance(text, str):
        return None
    if text.startswith(ROUTED_PREFIX):
        return text
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        return None


def identity_via(fields: dict[str, Any]) -> bytes | None:
    """The router a routed identity came through when it is not the message's sender: a BBMD
    forwarded the router's datagram, and ``identity_via`` is the router's B/IP address."""
    text = fields.get("identity_via")
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        return None
