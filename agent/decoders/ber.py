"""A strict, minimal BER (X.690) reader for the IEC 61850 PDUs (GOOSE, Sampled Values).

Only what those PDUs use: one- or multi-byte tags, definite lengths in short or long form (at most
four length octets). Indefinite lengths, lengths running past their enclosing element and
oversized integers raise ``BerError``, which the decoders turn into an ``Anomaly``: a malformed
PDU is never half-trusted.
"""

from __future__ import annotations


class BerError(ValueError):
    """A malformed BER element; ``kind`` is the anomaly kind, the message says where and why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def read_tlv(buf: bytes, off: int, end: int) -> tuple[int, int, int]:
    """(tag, value offset, value end) of the element at ``off``, which must end by ``end``.

    A multi-byte tag is returned as its octets joined big-endian (e.g. 0x9F21).
    """
    if off + 2 > end:
        raise BerError("truncated", f"BER element at offset {off} has no room for tag and length")
    tag = buf[off]
    off += 1
    if tag & 0x1F == 0x1F:  # high tag number: continuation octets with bit 8 set
        for _ in range(3):
            if off >= end:
                raise BerError("truncated", "BER tag runs past the PDU")
            octet = buf[off]
            tag = (tag << 8) | octet
            off += 1
            if not octet & 0x80:
                break
        else:
            raise BerError("bad_tag", "BER tag longer than four octets")
        if off >= end:
            raise BerError("truncated", "BER element has no length")
    first = buf[off]
    off += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise BerError("bad_length", f"indefinite BER length at offset {off - 1} (not allowed here)")
    else:
        count = first & 0x7F
        if count > 4:
            raise BerError("bad_length", f"BER length of {count} octets at offset {off - 1}")
        if off + count > end:
            raise BerError("truncated", "BER length octets run past the PDU")
        length = int.from_bytes(buf[off : off + count], "big")
        off += count
    value_end = off + length
    if value_end > end:
        raise BerError(
            "bad_length",
            f"BER element tag 0x{tag:02x} claims {length} octets, only {end - off} remain in its parent",
        )
    return tag, off, value_end


def read_expected(buf: bytes, off: int, end: int, tag: int, name: str) -> tuple[int, int]:
    """(value offset, value end) of the element at ``off``, which must be ``name`` with ``tag``."""
    found, value, value_end = read_tlv(buf, off, end)
    if found != tag:
        raise BerError("bad_pdu", f"tag 0x{found:02x} where {name} (0x{tag:02x}) was expected")
    return value, value_end


def unsigned(buf: bytes, off: int, end: int) -> int:
    """An INTEGER whose values are unsigned in practice (counters, revisions): at most 9 octets."""
    if end - off > 9 or end == off:
        raise BerError("bad_integer", f"INTEGER of {end - off} octets at offset {off}")
    return int.from_bytes(buf[off:end], "big")


def signed(buf: bytes, off: int, end: int) -> int:
    if end - off > 8 or end == off:
        raise BerError("bad_integer", f"INTEGER of {end - off} octets at offset {off}")
    return int.from_bytes(buf[off:end], "big", signed=True)


def boolean(buf: bytes, off: int, end: int) -> bool:
    if end - off != 1:
        raise BerError("bad_boolean", f"BOOLEAN of {end - off} octets at offset {off}")
    return buf[off] != 0


def text(buf: bytes, off: int, end: int) -> str:
    """A VisibleString (undecodable octets are replaced, never raised)."""
    return buf[off:end].decode("latin-1")


def count_elements(buf: bytes, off: int, end: int) -> int:
    """How many elements a constructed value holds (each checked against its parent's end)."""
    count = 0
    while off < end:
        _tag, _value_off, off = read_tlv(buf, off, end)
        count += 1
    return count
