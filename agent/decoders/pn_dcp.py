"""PROFINET DCP (Discovery and basic Configuration Protocol, IEC 61158-6-10), on bytes.

Frame ids 0xFEFC hello, 0xFEFD get/set, 0xFEFE identify request, 0xFEFF identify response. The
header is ServiceID, ServiceType, Xid, ResponseDelay (reserved outside identify), DCPDataLength,
then blocks of Option, Suboption, DCPBlockLength and a value padded to an even length. A get
request lists bare (option, suboption) pairs; responses and hellos prefix each value with a
2-octet BlockInfo, set requests with a 2-octet BlockQualifier.

Classes (DOMAIN.md section 5): identify and hello are ``discovery``, get is ``diagnostic``, set is
``config`` (name of station, IP suite, factory reset, ...), except a set made only of control
Start/Stop/Signal blocks (bracketing a transaction, or flashing the device's LED), which changes
nothing and is ``diagnostic``.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.linklayer import format_mac

SERVICES = {3: "get", 4: "set", 5: "identify", 6: "hello"}
SERVICE_OPERATIONS = {3: "diagnostic", 4: "config", 5: "discovery", 6: "discovery"}

OPT_IP, OPT_DEVICE, OPT_DHCP, OPT_CONTROL, OPT_INITIATIVE, OPT_ALL = 1, 2, 3, 5, 6, 0xFF
# Device properties suboptions
SUB_VENDOR, SUB_NAME, SUB_DEVICE_ID, SUB_ROLE = 1, 2, 3, 4
# Control suboptions
CTRL_START, CTRL_STOP, CTRL_SIGNAL, CTRL_RESPONSE, CTRL_FACTORY_RESET, CTRL_RESET_TO_FACTORY = (
    1,
    2,
    3,
    4,
    5,
    6,
)
_HARMLESS_CONTROL = frozenset(
    {(OPT_CONTROL, CTRL_START), (OPT_CONTROL, CTRL_STOP), (OPT_CONTROL, CTRL_SIGNAL)}
)
_RESETS = frozenset({(OPT_CONTROL, CTRL_FACTORY_RESET), (OPT_CONTROL, CTRL_RESET_TO_FACTORY)})

# DeviceRole bits -> role_hint for the asset inventory
ROLES = ((0x02, "io-controller"), (0x01, "io-device"), (0x04, "io-multidevice"), (0x08, "io-supervisor"))

_HEADER = struct.Struct("!BBIHH")  # service id, service type, xid, response delay, data length
_BLOCK = struct.Struct("!BBH")


class DcpError(ValueError):
    """A malformed DCP PDU; ``kind`` is the anomaly kind."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _block_values(fields: dict[str, Any], identity: dict[str, Any], option: int, sub: int,
                  value: bytes) -> None:  # fmt: skip
    """Record what a block (after BlockInfo/BlockQualifier) says about the device."""
    if option == OPT_DEVICE:
        if sub == SUB_NAME:
            identity["name"] = fields["name_of_station"] = value.decode("latin-1")
        elif sub == SUB_VENDOR:
            identity["product"] = value.decode("latin-1").rstrip(" \0")
        elif sub == SUB_DEVICE_ID and len(value) >= 4:
            vendor_id, device_id = struct.unpack_from("!HH", value)
            identity["vendor_id"] = vendor_id
            identity["product_code"] = device_id
        elif sub == SUB_ROLE and value:
            roles = [name for bit, name in ROLES if value[0] & bit]
            fields["device_role"] = value[0]
            if roles:
                identity["role_hint"] = roles[0]
    elif option == OPT_IP and sub == 2 and len(value) >= 12:
        fields["ip"] = ".".join(str(b) for b in value[0:4])
        fields["netmask"] = ".".join(str(b) for b in value[4:8])
        fields["gateway"] = ".".join(str(b) for b in value[8:12])
    elif option == OPT_IP and sub == 1 and len(value) >= 6:
        identity["mac"] = format_mac(value[:6])


def parse_dcp(buf: bytes, off: int, end: int, frame_id: int) -> tuple[bool, str, dict[str, Any]]:
    """(is_response, operation, fields) of the DCP PDU at ``off``; raises DcpError when malformed."""
    if end - off < 10:
        raise DcpError("truncated", f"DCP header needs 10 octets, {end - off} present")
    service, stype, xid, delay, length = _HEADER.unpack_from(buf, off)
    off += 10
    if off + length > end:
        raise DcpError("bad_length", f"DCPDataLength {length} with {end - off} octets left")
    end = off + length
    is_response = bool(stype & 0x01)
    fields: dict[str, Any] = {"frame_id": frame_id, "service_id": service, "service_type": stype, "xid": xid}
    if service not in SERVICES:
        raise DcpError("unknown_service", f"DCP service id {service}")
    fields["service"] = SERVICES[service]
    if stype & 0x04:
        fields["not_supported"] = True
    if frame_id == 0xFEFE:
        fields["response_delay"] = delay
    options: list[list[int]] = []
    identity: dict[str, Any] = {}
    if service == 3 and not is_response:
        # Get request: bare (option, suboption) pairs.
        if length % 2:
            raise DcpError("bad_length", f"DCP get request of odd length {length}")
        for pos in range(off, end, 2):
            options.append([buf[pos], buf[pos + 1]])
    else:
        # Identify requests carry filters; responses/hello a BlockInfo and set requests a
        # BlockQualifier before each value.
        prefixed = is_response or service in (4, 6)
        while off < end:
            if end - off < 4:
                raise DcpError("truncated", "DCP block header cut short")
            option, sub, blen = _BLOCK.unpack_from(buf, off)
            off += 4
            if off + blen > end:
                raise DcpError("bad_length", f"DCP block {option}/{sub} of {blen} octets past the PDU")
            options.append([option, sub])
            value = buf[off : off + blen]
            if option == OPT_CONTROL and sub == CTRL_RESPONSE and len(value) >= 3:
                fields.setdefault("results", []).append([value[0], value[1], value[2]])
            elif prefixed and blen >= 2:
                if service == 4 and (option, sub) in _RESETS:
                    fields["factory_reset"] = True
                _block_values(fields, identity, option, sub, value[2:])
            elif service == 5 and not is_response and option == OPT_DEVICE and sub == SUB_NAME:
                fields["name_of_station"] = value.decode("latin-1")  # the identify filter
            off += blen + (blen & 1)
    fields["options"] = options
    operation = SERVICE_OPERATIONS[service]
    if service == 4 and not is_response and options and all(tuple(o) in _HARMLESS_CONTROL for o in options):
        operation = "diagnostic"
    if identity and ((is_response and service in (3, 5)) or service == 6):
        # What the sender says about itself (identify/get responses, hello); a set request's values
        # describe the target, not the sender, and stay in the plain fields.
        fields["identity"] = identity
    return is_response, operation, fields
