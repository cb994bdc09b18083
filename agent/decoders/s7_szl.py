"""S7comm SZL (system status list) contents that identify a CPU, for the asset inventory.

An SZL answer carries its SZL-ID and index, the length of one data record, the number of records,
then the records. Two partial lists say who the CPU is (field names as in Wireshark's
``s7comm.szl.xy11.0001.*`` and ``s7comm.szl.001c.*``):

* module identification, xy11 (0x0011 all records, 0x0111 one): 28-byte records of index, order
  number (MlfB, 20 characters), module type id, and two version words. Index 1 is the module (its
  order number is the ``model``), 6 the basic hardware, 7 the basic firmware, whose version words
  read "V" major, minor, patch (the ``revision``).
* component identification, xy1C (0x001C all, 0x011C one): 34-byte records of index and 32 bytes:
  1 the automation system's name (``name``), 2 the module's name, 7 the module type name
  (``product``; the module's name when there is none), 5 the serial number, 9 the manufacturer id
  (the PROFIBUS/PROFINET vendor id, 42 for Siemens: ``vendor_id``), 3 the plant designation and
  11 the location, which are not identity but are kept beside it.

Answers too long for one PDU come in parts sharing a data unit reference, each behind its own
return code, transport size and length; ``SzlParts`` joins them (only for these lists, bounded) and
reads the whole only if its length is what the list header announced, so a part lost in a capture
gap (the parts are whole PDUs, numbered only by that reference) never shifts the records.
"""

from __future__ import annotations

import struct
from typing import Any

VENDOR = "Siemens"
MODULE_IDENTIFICATION = 0x11
COMPONENT_IDENTIFICATION = 0x1C
IDENTITY_LISTS = frozenset({MODULE_IDENTIFICATION, COMPONENT_IDENTIFICATION})
MAX_LIST_BYTES = 4096  # an identity list is a few hundred bytes; a longer one is not joined
MAX_JOINS = 4  # answers being joined per connection

_HHHH = struct.Struct("!HHHH")
_H = struct.Struct("!H")
_MODULE_RECORD = 28
_COMPONENT_RECORD = 34


def _text(raw: bytes) -> str:
    """A fixed-size character field: up to the first NUL, padding blanks stripped."""
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def szl_contents(data: bytes) -> tuple[dict[str, str | int], dict[str, Any]]:
    """(identity, other fields) from an SZL answer's data, which starts at the SZL-ID.

    Records of an unexpected length, or cut short, are ignored: nothing here raises.
    """
    identity: dict[str, str | int] = {}
    other: dict[str, Any] = {}
    if len(data) < 8:
        return identity, other
    szl_id, _index, record_length, count = _HHHH.unpack_from(data)
    other["szl_record_length"], other["szl_record_count"] = record_length, count
    part = szl_id & 0xFF
    if part == MODULE_IDENTIFICATION and record_length == _MODULE_RECORD:
        _module_records(data, count, identity)
    elif part == COMPONENT_IDENTIFICATION and record_length == _COMPONENT_RECORD:
        _component_records(data, count, identity, other)
    if identity:
        identity["vendor"] = VENDOR
    return identity, other


def _records(data: bytes, count: int, size: int) -> list[tuple[int, bytes]]:
    whole = min(count, (len(data) - 8) // size)
    return [
        (_H.unpack_from(data, at)[0], data[at + 2 : at + size]) for at in range(8, 8 + whole * size, size)
    ]


def _module_records(data: bytes, count: int, identity: dict[str, str | int]) -> None:
    hardware = ""
    for index, body in _records(data, count, _MODULE_RECORD):
        order_number = _text(body[:20])
        major_word, minor_word = _H.unpack_from(body, 22)[0], _H.unpack_from(body, 24)[0]
        if index == 1 and order_number:
            identity["model"] = order_number
        elif index == 6 and order_number:
            hardware = order_number
        elif index == 7 and major_word >> 8 == ord("V"):
            identity["revision"] = f"V{major_word & 0xFF}.{minor_word >> 8}.{minor_word & 0xFF}"
    if hardware and "model" not in identity:
        identity["model"] = hardware


def _component_records(
    data: bytes, count: int, identity: dict[str, str | int], other: dict[str, Any]
) -> None:
    module_name = ""
    for index, body in _records(data, count, _COMPONENT_RECORD):
        if index == 1:
            text = _text(body[:24])
            if text:
                identity["name"] = text
        elif index == 2:
            module_name = _text(body[:24])
        elif index == 3:
            other["plant_designation"] = _text(body)
        elif index == 5:
            text = _text(body[:24])
            if text:
                identity["serial"] = text
        elif index == 7:
            text = _text(body)
            if text:
                identity["product"] = text
        elif index == 9:
            identity["vendor_id"] = _H.unpack_from(body)[0]
        elif index == 11:
            other["location"] = _text(body)
    if module_name and "product" not in identity:
        identity["product"] = module_name


class SzlParts:
    """Joins the parts of SZL answers split over several PDUs, per (direction, data unit reference)."""

    __slots__ = ("dropped", "joins")

    def __init__(self) -> None:
        self.joins: dict[tuple[bool, int], bytearray] = {}
        self.dropped = 0

    def add(self, key: tuple[bool, int], payload: bytes, last: bool) -> bytes | None:
        """The whole answer once ``last`` arrives, else None. A first part starts with the SZL-ID;
        only identity lists are joined, so an answer whose first part was not seen is skipped."""
        joined = self.joins.get(key)
        if joined is None:
            if last or len(payload) < 8 or payload[1] not in IDENTITY_LISTS:
                return None
            if len(self.joins) >= MAX_JOINS:
                del self.joins[next(iter(self.joins))]
                self.dropped += 1
            self.joins[key] = bytearray(payload)
            return None
        joined += payload
        if last:
            del self.joins[key]
            _id, _index, record_length, count = (
                _HHHH.unpack_from(joined) if len(joined) >= 8 else (0, 0, 0, 0)
            )
            if len(joined) != 8 + record_length * count:
                self.dropped += 1  # a part went missing (a capture gap): the records would be misread
                return None
            return bytes(joined)
        if len(joined) > MAX_LIST_BYTES:
            del self.joins[key]
            self.dropped += 1
        return None
