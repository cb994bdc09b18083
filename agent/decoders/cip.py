"""CIP (Common Industrial Protocol) message parsing for the EtherNet/IP decoder.

Pure functions over bytes: request paths (EPATH), service classification, and the bodies the
monitor cares about (Multiple Service Packet, Unconnected Send, Forward Open/Close, Identity).
They never raise on bad input; a malformed structure comes back as an error string that the
decoder turns into an anomaly.

Numbers follow the CIP Networks Library Vol. 1 (common services, EPATH segments, Connection
Manager) and Vol. 7A (Modbus object), checked against Wireshark's packet-cip.c definitions; the
Logix tag services follow Rockwell's "Logix 5000 Controllers Data Access" manual (1756-PM020);
the Non-Volatile Storage object (class 0xA1, firmware update by ControlFLASH) and the Wall Clock
Time object (class 0x8B) are Rockwell vendor-specific objects documented in product manuals.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from agent.decoders import modbus

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_FWD_OPEN = struct.Struct("<BBIIHHIB3xIHIHB")  # Forward Open up to the connection path size
_LARGE_FWD_OPEN = struct.Struct("<BBIIHHIB3xIIIIB")  # Large Forward Open: 32-bit network parameters
_FWD_OPEN_REPLY = struct.Struct("<IIHHIIIB")  # O->T id, T->O id, serial, vendor, orig. serial, APIs, size
_FWD_CLOSE = struct.Struct("<BBHHIB")  # tick, timeout ticks, serial, vendor, orig. serial, path size
_IDENTITY = struct.Struct("<HHHBBHIB")  # vendor, device type, product code, revision, status, serial, len

MULTIPLE_SERVICE_PACKET = 0x0A
UNCONNECTED_SEND = 0x52
FORWARD_OPEN = 0x54
LARGE_FORWARD_OPEN = 0x5B
FORWARD_CLOSE = 0x4E
GET_ATTRIBUTES_ALL = 0x01

CLASS_IDENTITY = 0x01
CLASS_MESSAGE_ROUTER = 0x02
CLASS_CONNECTION_MANAGER = 0x06
CLASS_FILE = 0x37
CLASS_MODBUS = 0x44
CLASS_PCCC = 0x67
CLASS_SYMBOL = 0x6B
CLASS_NVS = 0xA1

# Common services (Vol. 1 appendix A): (operation, name).
COMMON_SERVICES: dict[int, tuple[str, str]] = {
    0x01: ("read", "Get_Attributes_All"),
    0x02: ("write", "Set_Attributes_All"),
    0x03: ("read", "Get_Attribute_List"),
    0x04: ("write", "Set_Attribute_List"),
    0x05: ("mode", "Reset"),
    0x06: ("mode", "Start"),
    0x07: ("mode", "Stop"),
    0x08: ("config", "Create"),
    0x09: ("config", "Delete"),
    0x0A: ("unknown", "Multiple_Service_Packet"),  # a container: only an empty one is emitted as itself
    0x0D: ("config", "Apply_Attributes"),
    0x0E: ("read", "Get_Attribute_Single"),
    0x10: ("write", "Set_Attribute_Single"),
    0x11: ("diagnostic", "Find_Next_Object_Instance"),
    0x15: ("config", "Restore"),
    0x16: ("config", "Save"),
    0x17: ("diagnostic", "No_Operation"),
    0x18: ("read", "Get_Member"),
    0x19: ("write", "Set_Member"),
    0x1A: ("write", "Insert_Member"),
    0x1B: ("write", "Remove_Member"),
    0x1C: ("unknown", "Group_Sync"),  # named by the spec, but DOMAIN.md gives it no class
}
SET_SERVICES = frozenset({0x02, 0x04, 0x10})
# Setting attributes of these objects reconfigures the device or its network interface.
CONFIG_CLASSES = frozenset({
    CLASS_IDENTITY,
    0x47,  # Device Level Ring
    0x48,  # Quality of Service
    0xF4,  # Port
    0xF5,  # TCP/IP Interface
    0xF6,  # Ethernet Link
})  # fmt: skip
# ... and these set the device clock.
TIME_CLASSES = frozenset({0x43, 0x8B})  # Time Sync (CIP Sync); Logix Wall Clock Time

# Object-specific services (0x4B-0x63) by target class.
CLASS_SERVICES: dict[int, dict[int, tuple[str, str]]] = {
    CLASS_CONNECTION_MANAGER: {
        0x4E: ("session", "Forward_Close"),
        0x52: ("session", "Unconnected_Send"),  # unwrapped: only a bad one is emitted as itself
        0x54: ("session", "Forward_Open"),
        0x56: ("diagnostic", "Get_Connection_Data"),
        0x57: ("diagnostic", "Search_Connection_Data"),
        0x5A: ("session", "Get_Connection_Owner"),
        0x5B: ("session", "Large_Forward_Open"),
    },
    CLASS_PCCC: {0x4B: ("vendor", "Execute_PCCC")},
    CLASS_MODBUS: {
        0x4B: ("read", "Read_Discrete_Inputs"),
        0x4C: ("read", "Read_Coils"),
        0x4D: ("read", "Read_Input_Registers"),
        0x4E: ("read", "Read_Holding_Registers"),
        0x4F: ("write", "Write_Coils"),
        0x50: ("write", "Write_Holding_Registers"),
        0x51: ("unknown", "Modbus_Passthrough"),  # classified by the embedded Modbus function code
    },
    CLASS_FILE: {
        0x4B: ("file", "Initiate_Upload"),
        0x4C: ("file", "Initiate_Download"),
        0x4D: ("file", "Initiate_Partial_Read"),
        0x4E: ("file", "Initiate_Partial_Write"),
        0x4F: ("file", "Upload_Transfer"),
        0x50: ("file", "Download_Transfer"),
        0x51: ("file", "Clear_File"),
    },
    CLASS_NVS: {0x4B: ("firmware", "NVS_Update"), 0x4D: ("firmware", "NVS_Transfer")},
}
# Logix tag services, on a symbolic path or a vendor-specific class.
LOGIX_SERVICES: dict[int, tuple[str, str]] = {
    0x4C: ("read", "Read_Tag"),
    0x4D: ("write", "Write_Tag"),
    0x4E: ("write", "Read_Modify_Write_Tag"),
    0x52: ("read", "Read_Tag_Fragmented"),
    0x53: ("write", "Write_Tag_Fragmented"),
}
GET_INSTANCE_ATTRIBUTE_LIST = 0x55  # Logix tag browse on the Symbol object
# General status codes that are not errors: success and partial transfer (fragmented reads).
OK_STATUS = frozenset({0x00, 0x06})
MAX_DEPTH = 4  # nested Unconnected Send / Multiple Service Packet levels followed


# Extended symbolic segments: bytes per character by format (double/triple byte), numeric symbol sizes.
_EXT_SYMBOL_WIDTH = {1: 2, 2: 3}
_EXT_SYMBOL_NUMERIC = {0xC6: 1, 0xC7: 2, 0xC8: 4}


# Logical segment types 0-4: the Path attribute they set and the EVE field name.
_LOGICAL_NAMES = ("klass", "instance", "member", "connection_point", "attribute")
_LOGICAL_FIELDS = ("class", "instance", "member", "connection_point", "attribute")


def vendor_class(klass: int) -> bool:
    """Class ids the CIP specification leaves to vendors (Vol. 1 table 5-1.1)."""
    return 0x64 <= klass <= 0xC7 or 0x300 <= klass <= 0x4FF


@dataclass(slots=True)
class Path:
    """What a request path addresses; the first class/instance/attribute is the target."""

    klass: int | None = None
    instance: int | None = None
    attribute: int | None = None
    member: int | None = None
    connection_point: int | None = None
    tag: str | None = None
    route: list[dict[str, Any]] | None = None  # port segments: {"port", "link"}
    extra: list[list[Any]] | None = None  # logical segments after the first of their type: [field, value]
    error: str | None = None

    def as_fields(self, out: dict[str, Any]) -> None:
        if self.klass is not None:
            out["class"] = self.klass
        if self.instance is not None:
            out["instance"] = self.instance
        if self.attribute is not None:
            out["attribute"] = self.attribute
        if self.member is not None:
            out["member"] = self.member
        if self.connection_point is not None:
            out["connection_point"] = self.connection_point
        if self.tag is not None:
            out["tag"] = self.tag
        if self.extra is not None:
            out["extra_path"] = self.extra


def parse_path(buf: bytes, off: int, end: int) -> Path:
    """Decode the EPATH ``buf[off:end]`` (Vol. 1 appendix C)."""
    path = Path()
    element_open = False  # the tag's last segment is an element index: "[1" awaiting "]" / ",2"
    while off < end:
        seg = buf[off]
        kind = seg >> 5
        if kind == 1:  # logical
            ltype = (seg >> 2) & 7
            fmt = seg & 3
            if ltype == 5:  # special: electronic key (format 4: 8 bytes of key data)
                if fmt != 0 or off + 10 > end or buf[off + 1] != 4:
                    path.error = "bad electronic key segment"
                    return path
                off += 10
                continue
            if fmt == 0:
                if off + 2 > end:
                    break
                value = buf[off + 1]
                off += 2
            elif fmt == 1:
                if off + 4 > end:
                    break
                value = _U16.unpack_from(buf, off + 2)[0]
                off += 4
            elif fmt == 2 and ltype != 6:
                if off + 6 > end:
                    break
                value = _U32.unpack_from(buf, off + 2)[0]
                off += 6
            else:
                path.error = f"reserved logical segment format 0x{seg:02x}"
                return path
            if ltype == 2 and path.tag is not None:
                # After a symbol, a member segment is an array index of that tag.
                path.tag = f"{path.tag[:-1]},{value}]" if element_open else f"{path.tag}[{value}]"
                element_open = True
                continue
            if ltype < 5:
                name = _LOGICAL_NAMES[ltype]
                if getattr(path, name) is None:
                    setattr(path, name, value)
                else:
                    # Another class/instance/... after the target's: kept in order, so the path is whole.
                    if path.extra is None:
                        path.extra = []
                    path.extra.append([_LOGICAL_FIELDS[ltype], value])
            elif ltype == 7:
                path.error = "extended logical segment is not supported"
                return path
            element_open = False
        elif kind == 4:  # data segments: ANSI extended symbol (Logix tag name) or simple data
            if off + 2 > end:
                break
            size = buf[off + 1]
            if seg == 0x91:
                name = buf[off + 2 : off + 2 + size].decode("latin-1")
                path.tag = name if path.tag is None else f"{path.tag}.{name}"
                off += 2 + size + (size & 1)
            elif seg == 0x80:
                off += 2 + 2 * size
            else:
                path.error = f"unknown data segment 0x{seg:02x}"
                return path
            element_open = False
        elif kind == 0:  # port segment
            port = seg & 0x0F
            start = off
            off += 1
            if port == 0x0F:
                if off + 2 > end:
                    break
                port = _U16.unpack_from(buf, off)[0]
                off += 2
            if off >= end:
                break
            link: int | str
            if seg & 0x10:
                size = buf[off]
                link = buf[off + 1 : off + 1 + size].decode("latin-1")
                off += 1 + size
            else:
                link = buf[off]
                off += 1
            off += (off - start) & 1
            if path.route is None:
                path.route = []
            path.route.append({"port": port, "link": link})
        elif kind == 2:  # network segment: one data byte, or a word count and words
            if off + 2 > end:
                break
            off += 2 + 2 * buf[off + 1] if seg & 0x10 else 2
        elif kind == 3:  # symbolic segment, padded to an even length
            start = off
            size = seg & 0x1F
            if size:
                name = buf[off + 1 : off + 1 + size].decode("latin-1")
                path.tag = name if path.tag is None else f"{path.tag}.{name}"
                off += 1 + size
            else:
                if off + 2 > end:
                    break
                ext = buf[off + 1]
                width = _EXT_SYMBOL_WIDTH.get(ext >> 5)
                if width is not None:
                    off += 2 + width * (ext & 0x1F)
                elif ext in _EXT_SYMBOL_NUMERIC:
                    off += 2 + _EXT_SYMBOL_NUMERIC[ext]
                else:
                    path.error = f"unknown extended symbol format 0x{ext:02x}"
                    return path
            off += (off - start) & 1
            element_open = False
        else:
            path.error = f"segment type 0x{seg:02x} is not valid in a request path"
            return path
    if off > end:
        path.error = "request path segment runs past the path size"
    elif off < end:
        path.error = "request path ends inside a segment"
    return path


def classify(service: int, path: Path, buf: bytes, data: int, end: int) -> tuple[str, str | None]:
    """(operation, service name) of a request; name None for a service we do not know."""
    klass = path.klass
    if service < 0x4B:
        known = COMMON_SERVICES.get(service)
        if known is None:
            return ("vendor", None) if klass is not None and vendor_class(klass) else ("unknown", None)
        if service in SET_SERVICES and klass is not None:
            if klass in CONFIG_CLASSES:
                return "config", known[1]
            if klass in TIME_CLASSES:
                return "time", known[1]
        return known
    if klass is not None:
        table = CLASS_SERVICES.get(klass)
        if table is not None:
            known = table.get(service)
            if known is None:
                return "unknown" if klass < 0x64 else "vendor", None
            if klass == CLASS_MODBUS and service == 0x51:
                if end > data:  # the Modbus PDU: function code and data
                    return modbus.classify(buf[data], buf, data, end), known[1]
                return "unknown", known[1]
            return known
    if path.tag is not None or klass is None or vendor_class(klass):
        known = LOGIX_SERVICES.get(service)
        if known is not None:
            return known
        if service == GET_INSTANCE_ATTRIBUTE_LIST and klass == CLASS_SYMBOL:
            return "read", "Get_Instance_Attribute_List"
        if klass is not None:
            return "vendor", None
    return "unknown", None


def msp_spans(buf: bytes, off: int, end: int) -> list[tuple[int, int]] | str:
    """The embedded services of a Multiple Service Packet body at ``off`` (request or reply)."""
    if end - off < 2:
        return "Multiple Service Packet without a service count"
    count = _U16.unpack_from(buf, off)[0]
    if end - off < 2 + 2 * count:
        return f"Multiple Service Packet offset list for {count} services runs past the message"
    offsets = [off + o for (o,) in struct.iter_unpack("<H", buf[off + 2 : off + 2 + 2 * count])]
    first = off + 2 + 2 * count
    spans = []
    for i, start in enumerate(offsets):
        stop = offsets[i + 1] if i + 1 < count else end
        if not first <= start < stop <= end:
            return f"Multiple Service Packet offset {start - off} of service {i + 1} is out of order or range"
        spans.append((start, stop))
    return spans


def unconnected_send(buf: bytes, off: int, end: int) -> tuple[int, int, Path] | str:
    """(embedded request start, end, route path) of an Unconnected Send request body at ``off``."""
    if end - off < 4:
        return "Unconnected Send shorter than its header"
    size = _U16.unpack_from(buf, off + 2)[0]
    inner = off + 4
    inner_end = inner + size
    route = inner_end + (size & 1)
    if route + 2 > end:
        return f"Unconnected Send embedded message of {size} bytes runs past the message"
    words = buf[route]
    return inner, inner_end, parse_path(buf, route + 2, min(end, route + 2 + 2 * words))


def forward_open(buf: bytes, off: int, end: int, large: bool) -> dict[str, Any] | None:
    """Connection parameters of a (Large) Forward Open request body."""
    layout = _LARGE_FWD_OPEN if large else _FWD_OPEN
    if end - off < layout.size:
        return None
    (_tick, _ticks, ot_id, to_id, serial, vendor, orig_serial, multiplier, ot_rpi, ot_params, to_rpi,
     to_params, transport) = layout.unpack_from(buf, off)  # fmt: skip
    size_bits, type_shift = (0xFFFF, 29) if large else (0x1FF, 13)
    out: dict[str, Any] = {
        "ot_connection_id": ot_id,
        "to_connection_id": to_id,
        "connection_serial": serial,
        "originator_vendor_id": vendor,
        "originator_serial": orig_serial,
        "timeout_multiplier": 4 << multiplier if multiplier <= 7 else None,
        "ot_rpi_us": ot_rpi,
        "to_rpi_us": to_rpi,
        "ot_connection_type": _CONNECTION_TYPES[(ot_params >> type_shift) & 3],
        "to_connection_type": _CONNECTION_TYPES[(to_params >> type_shift) & 3],
        "ot_connection_size": ot_params & size_bits,
        "to_connection_size": to_params & size_bits,
        "transport_class": transport & 0x0F,
        "trigger": _TRIGGERS.get((transport >> 4) & 7, "reserved"),
    }
    words_at = off + layout.size
    if words_at < end:
        target = parse_path(buf, words_at + 1, min(end, words_at + 1 + 2 * buf[words_at]))
        path: dict[str, Any] = {}
        target.as_fields(path)
        if target.route:
            path["route"] = target.route
        out["connection_path"] = path
    return out


_CONNECTION_TYPES = ("null", "multicast", "point_to_point", "reserved")
_TRIGGERS = {0: "cyclic", 1: "change_of_state", 2: "application"}


def forward_open_reply(buf: bytes, off: int, end: int) -> dict[str, Any] | None:
    """The connection the target granted, from a successful (Large) Forward Open reply body."""
    if end - off < _FWD_OPEN_REPLY.size:
        return None
    ot_id, to_id, serial, vendor, orig_serial, ot_api, to_api, _size = _FWD_OPEN_REPLY.unpack_from(buf, off)
    return {"ot_connection_id": ot_id, "to_connection_id": to_id, "connection_serial": serial,
            "originator_vendor_id": vendor, "originator_serial": orig_serial, "ot_api_us": ot_api,
            "to_api_us": to_api}  # fmt: skip


def forward_close(buf: bytes, off: int, end: int) -> dict[str, Any] | None:
    """The connection named by a Forward Close request body."""
    if end - off < _FWD_CLOSE.size:
        return None
    _tick, _ticks, serial, vendor, orig_serial, _words = _FWD_CLOSE.unpack_from(buf, off)
    return {"connection_serial": serial, "originator_vendor_id": vendor, "originator_serial": orig_serial}


def identity(buf: bytes, off: int, end: int) -> dict[str, Any] | None:
    """Identity object attributes 1-7 (+ 8 state when present), the layout of Get_Attributes_All on
    the Identity object and of the ListIdentity item after its socket address."""
    if end - off < _IDENTITY.size:
        return None
    vendor, device_type, product, major, minor, status, serial, name_len = _IDENTITY.unpack_from(buf, off)
    name_at = off + _IDENTITY.size
    if name_at + name_len > end:
        return None
    out: dict[str, Any] = {
        "vendor_id": vendor,
        "device_type": device_type,
        "product_code": product,
        "revision": f"{major}.{minor}",
        "status": status,
        "serial_number": f"0x{serial:08x}",
        "product_name": buf[name_at : name_at + name_len].decode("latin-1"),
    }
    if name_at + name_len < end:
        out["state"] = buf[name_at + name_len]
    return out
