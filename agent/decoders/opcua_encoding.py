"""Readers for the OPC UA binary encoding (OPC 10000-6 section 5.2), just enough to walk messages.

The decoder needs a few values deep inside service bodies (a request's handle after a variable
length NodeId, the attribute ids of a Write, the method ids of a Call, the application description
in a GetEndpoints response), and getting there means stepping over every built-in type that may
come before them, Variants and DataValues included. Each reader takes ``(buf, pos, end)`` and
returns the new position (and a value where one is wanted); bytes that cannot be what the
encoding says raise ``Malformed``, which the decoder turns into an anomaly. Nesting (Variants in
Variants, inner DiagnosticInfos) is cut off at ``MAX_DEPTH`` and strings are cut at ``MAX_TEXT``
characters, so hostile input costs at most a pass over its own bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
U32X2 = struct.Struct("<II")

MAX_DEPTH = 8
MAX_TEXT = 512  # characters kept of a decoded string (URIs, names); the rest is skipped

# Fixed sizes of the built-in types (OPC 10000-6 table 1) that need no further reading.
FIXED_SIZE = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 4, 11: 8, 13: 8, 14: 16, 19: 4}
STRING_LIKE = frozenset({12, 15, 16})  # String, ByteString, XmlElement: Int32 length + bytes

NodeId = tuple[int, int | str]  # (namespace index, identifier)


class Malformed(Exception):
    """The bytes do not decode as the OPC UA binary encoding says they must."""


def u32(buf: bytes, pos: int, end: int) -> int:
    if pos + 4 > end:
        raise Malformed(f"UInt32 at {pos} runs past the message")
    return int(U32.unpack_from(buf, pos)[0])


def _length(buf: bytes, pos: int, end: int) -> int:
    """A String/ByteString/array length prefix: -1 means null; anything else must fit."""
    if pos + 4 > end:
        raise Malformed(f"length at {pos} runs past the message")
    n = int(I32.unpack_from(buf, pos)[0])
    if n < -1 or pos + 4 + max(n, 0) > end:
        raise Malformed(f"length {n} at {pos} does not fit the message")
    return n


def skip_string(buf: bytes, pos: int, end: int) -> int:
    """Step over a String, ByteString or XmlElement."""
    n = _length(buf, pos, end)
    return pos + 4 + max(n, 0)


def string(buf: bytes, pos: int, end: int) -> tuple[str | None, int]:
    n = _length(buf, pos, end)
    if n < 0:
        return None, pos + 4
    text = bytes(buf[pos + 4 : pos + 4 + min(n, MAX_TEXT)]).decode("utf-8", "replace")
    return text, pos + 4 + n


def array_length(buf: bytes, pos: int, end: int) -> int:
    """An array's element count (a null array is empty); every element takes at least one byte."""
    n = _length(buf, pos, end)
    if n > end - pos - 4:
        raise Malformed(f"array of {n} elements at {pos} cannot fit the message")
    return max(n, 0)


def skip_array(buf: bytes, pos: int, end: int, skip: Callable[[bytes, int, int], int]) -> int:
    n = array_length(buf, pos, end)
    pos += 4
    for _ in range(n):
        pos = skip(buf, pos, end)
    return pos


def node_id(buf: bytes, pos: int, end: int) -> tuple[NodeId, int]:
    """A NodeId in any of its six encodings; string/GUID/opaque identifiers come back as text."""
    if pos >= end:
        raise Malformed(f"NodeId at {pos} runs past the message")
    form = buf[pos] & 0x0F
    if form == 0:  # two-byte: namespace 0, identifier 0-255
        if pos + 2 > end:
            raise Malformed("two-byte NodeId runs past the message")
        return (0, buf[pos + 1]), pos + 2
    if form == 1:  # four-byte: one-byte namespace, UInt16 identifier
        if pos + 4 > end:
            raise Malformed("four-byte NodeId runs past the message")
        return (buf[pos + 1], int(U16.unpack_from(buf, pos + 2)[0])), pos + 4
    if pos + 3 > end:
        raise Malformed(f"NodeId at {pos} runs past the message")
    ns = int(U16.unpack_from(buf, pos + 1)[0])
    if form == 2:
        return (ns, u32(buf, pos + 3, end)), pos + 7
    if form == 3:
        text, after = string(buf, pos + 3, end)
        return (ns, f"s={text or ''}"), after
    if form == 4:
        if pos + 19 > end:
            raise Malformed("GUID NodeId runs past the message")
        return (ns, "g=" + bytes(buf[pos + 3 : pos + 19]).hex()), pos + 19
    if form == 5:
        after = skip_string(buf, pos + 3, end)
        return (ns, "b=" + bytes(buf[pos + 7 : min(after, pos + 7 + 32)]).hex()), after
    raise Malformed(f"NodeId encoding {form} is not defined")


def expanded_node_id(buf: bytes, pos: int, end: int) -> tuple[NodeId, int]:
    """An ExpandedNodeId: a NodeId whose flags may add a namespace URI and a server index."""
    if pos >= end:
        raise Malformed(f"ExpandedNodeId at {pos} runs past the message")
    flags = buf[pos]
    node, pos = node_id(buf, pos, end)
    if flags & 0x80:
        pos = skip_string(buf, pos, end)
    if flags & 0x40:
        pos += 4
        if pos > end:
            raise Malformed("ExpandedNodeId server index runs past the message")
    return node, pos


def skip_node_id(buf: bytes, pos: int, end: int) -> int:
    return node_id(buf, pos, end)[1]


def skip_expanded_node_id(buf: bytes, pos: int, end: int) -> int:
    return expanded_node_id(buf, pos, end)[1]


def format_node_id(node: NodeId) -> str:
    ns, ident = node
    text = f"i={ident}" if isinstance(ident, int) else ident
    return f"ns={ns};{text}" if ns else text


def localized_text(buf: bytes, pos: int, end: int) -> tuple[str | None, int]:
    """The text of a LocalizedText (its locale is skipped)."""
    if pos >= end:
        raise Malformed(f"LocalizedText at {pos} runs past the message")
    mask = buf[pos]
    pos += 1
    text = None
    if mask & 0x01:
        pos = skip_string(buf, pos, end)
    if mask & 0x02:
        text, pos = string(buf, pos, end)
    return text, pos


def skip_localized_text(buf: bytes, pos: int, end: int) -> int:
    return localized_text(buf, pos, end)[1]


def skip_qualified_name(buf: bytes, pos: int, end: int) -> int:
    return skip_string(buf, pos + 2, end)


def skip_extension_object(buf: bytes, pos: int, end: int) -> int:
    pos = skip_node_id(buf, pos, end)
    if pos >= end:
        raise Malformed("ExtensionObject encoding byte runs past the message")
    encoding = buf[pos]
    if encoding == 0:
        return pos + 1
    if encoding in (1, 2):
        return skip_string(buf, pos + 1, end)
    raise Malformed(f"ExtensionObject body encoding {encoding} is not defined")


def skip_diagnostic_info(buf: bytes, pos: int, end: int, depth: int = 0) -> int:
    if depth > MAX_DEPTH:
        raise Malformed("DiagnosticInfo nested too deeply")
    if pos >= end:
        raise Malformed(f"DiagnosticInfo at {pos} runs past the message")
    mask = buf[pos]
    pos += 1
    # symbolic id, namespace URI, locale, localized text: Int32 indexes into the string table
    pos += 4 * ((mask & 0x01) + (mask >> 1 & 1) + (mask >> 2 & 1) + (mask >> 3 & 1))
    if mask & 0x10:
        pos = skip_string(buf, pos, end)
    if mask & 0x20:
        pos += 4
    if pos > end:
        raise Malformed("DiagnosticInfo runs past the message")
    if mask & 0x40:
        pos = skip_diagnostic_info(buf, pos, end, depth + 1)
    return pos


def skip_data_value(buf: bytes, pos: int, end: int, depth: int = 0) -> int:
    if pos >= end:
        raise Malformed(f"DataValue at {pos} runs past the message")
    mask = buf[pos]
    pos += 1
    if mask & 0x01:
        pos = skip_variant(buf, pos, end, depth + 1)
    # status code 4, source timestamp 8, server timestamp 8, two picosecond counts of 2
    pos += 4 * (mask >> 1 & 1) + 8 * (mask >> 2 & 1) + 8 * (mask >> 3 & 1) + 2 * (mask >> 4 & 1)
    pos += 2 * (mask >> 5 & 1)
    if pos > end:
        raise Malformed("DataValue runs past the message")
    return pos


def _skip_builtin(buf: bytes, pos: int, end: int, type_id: int, depth: int) -> int:
    size = FIXED_SIZE.get(type_id)
    if size is not None:
        pos += size
        if pos > end:
            raise Malformed(f"value of built-in type {type_id} runs past the message")
        return pos
    if type_id in STRING_LIKE:
        return skip_string(buf, pos, end)
    if type_id == 17:
        return skip_node_id(buf, pos, end)
    if type_id == 18:
        return skip_expanded_node_id(buf, pos, end)
    if type_id == 20:
        return skip_qualified_name(buf, pos, end)
    if type_id == 21:
        return skip_localized_text(buf, pos, end)
    if type_id == 22:
        return skip_extension_object(buf, pos, end)
    if type_id == 23:
        return skip_data_value(buf, pos, end, depth + 1)
    if type_id == 24:
        return skip_variant(buf, pos, end, depth + 1)
    if type_id == 25:
        return skip_diagnostic_info(buf, pos, end, depth + 1)
    raise Malformed(f"built-in type {type_id} is not defined")


def skip_variant(buf: bytes, pos: int, end: int, depth: int = 0) -> int:
    if depth > MAX_DEPTH:
        raise Malformed("Variant nested too deeply")
    if pos >= end:
        raise Malformed(f"Variant at {pos} runs past the message")
    mask = buf[pos]
    pos += 1
    type_id = mask & 0x3F
    if type_id == 0:  # a null Variant has no value
        return pos
    if not mask & 0x80:
        return _skip_builtin(buf, pos, end, type_id, depth)
    n = array_length(buf, pos, end)
    pos += 4
    size = FIXED_SIZE.get(type_id)
    if size is not None:  # the common case of numeric arrays: one step
        pos += n * size
        if pos > end:
            raise Malformed("Variant array runs past the message")
    else:
        for _ in range(n):
            pos = _skip_builtin(buf, pos, end, type_id, depth)
    if mask & 0x40:  # array dimensions: an Int32 array
        dims = array_length(buf, pos, end)
        pos += 4 + 4 * dims
        if pos > end:
            raise Malformed("Variant array dimensions run past the message")
    return pos


def skip_request_header(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(requestHandle, position after the RequestHeader)."""
    pos = skip_node_id(buf, pos, end)  # authenticationToken
    handle = u32(buf, pos + 8, end)  # after the timestamp
    pos = skip_string(buf, pos + 16, end)  # returnDiagnostics, then auditEntryId
    return handle, skip_extension_object(buf, pos + 4, end)  # timeoutHint, additionalHeader


def skip_response_header(buf: bytes, pos: int, end: int) -> int:
    """Position after a ResponseHeader (timestamp, handle and serviceResult are fixed: 16 bytes)."""
    pos = skip_diagnostic_info(buf, pos + 16, end)
    pos = skip_array(buf, pos, end, skip_string)  # stringTable
    return skip_extension_object(buf, pos, end)
