"""IEC 61850-8-1 GOOSE (EtherType 0x88B8, tagged or not): header, goosePdu, and cyclic bookkeeping.

A GOOSE publisher repeats its dataset forever: a new state (stNum + 1, sqNum back to 0) is sent
at once and then retransmitted at growing intervals up to a heartbeat, each message promising the
next within ``timeAllowedtoLive``. Every message is one ``io`` record (DOMAIN.md section 5: GOOSE
is cyclic I/O); ``function`` is the APPID, so a policy rule can restrict APPIDs.

For the control-health work each record also says, per control block (APPID and gocbRef) of the
publisher's L2 flow: ``interval_s`` since the previous message, ``state_change`` (stNum moved: an
event) or a retransmission, ``st_gap``/``sq_gap`` (messages missing in between), and ``ttl_ratio``
(the interval over the time-to-live the previous message promised; above 1 the subscriber has
already declared the publisher lost). Counters running backwards are anomalies: a replayed or
duplicated publisher looks exactly like that.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec, link_layer_spec
from agent.decoders.ber import (
    BerError,
    boolean,
    count_elements,
    read_expected,
    read_tlv,
    signed,
    text,
    unsigned,
)
from agent.decoders.message import MessageDecoder
from agent.flows import Flow
from agent.linklayer import ETH_GOOSE

_HEADER = struct.Struct("!HHHH")  # APPID, length (from APPID on), reserved 1, reserved 2
_SIMULATED = 0x8000  # reserved 1, bit 15: the simulation bit of IEC 61850-8-1 Ed.2
_MAX_BLOCKS = 64  # control blocks tracked per publisher flow; more are counted, not tracked
_HALF = 1 << 31  # sqNum/stNum are 32-bit counters: a "step" beyond half the range is a regression

# goosePdu [APPLICATION 1] context tags, [0] to [10] in order, then allData [11] (constructed).
GOCB_REF, TAL, DAT_SET, GO_ID, T, ST_NUM, SQ_NUM, SIMULATION, CONF_REV, NDS_COM, NUM_ENTRIES = range(
    0x80, 0x8B
)
ALL_DATA = 0xAB


def utc_time(buf: bytes, off: int, end: int) -> str:
    """IEC 61850 UtcTime: seconds (4 octets), fraction of a second (3 octets), time quality."""
    if end - off != 8:
        raise BerError("bad_time", f"UtcTime of {end - off} octets (8 expected)")
    seconds = int.from_bytes(buf[off : off + 4], "big")
    micros = int.from_bytes(buf[off + 4 : off + 7], "big") * 1_000_000 >> 24
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


# goosePdu tag -> (field name, reader of its value). SIMULATION is "test" in Ed.1, "simulation" in Ed.2.
_FIELDS: dict[int, tuple[str, Callable[[bytes, int, int], Any]]] = {
    GOCB_REF: ("gocb_ref", text), TAL: ("time_allowed_to_live", signed), DAT_SET: ("dat_set", text),
    GO_ID: ("go_id", text), T: ("t", utc_time), ST_NUM: ("st_num", unsigned), SQ_NUM: ("sq_num", unsigned),
    SIMULATION: ("simulation", boolean), CONF_REV: ("conf_rev", unsigned), NDS_COM: ("nds_com", boolean),
    NUM_ENTRIES: ("num_dat_set_entries", signed), ALL_DATA: ("all_data_count", count_elements),
}  # fmt: skip
MANDATORY = [_FIELDS[tag][0] for tag in (GOCB_REF, TAL, DAT_SET, T, ST_NUM, SQ_NUM, CONF_REV, NUM_ENTRIES)]


def parse_header(buf: bytes, off: int, length: int) -> tuple[dict[str, Any], int]:
    """The 8-octet GOOSE/SV header: (fields, end of the APDU as the length field says)."""
    if length < 8:
        raise BerError("truncated", f"{length} octets: no room for the 8-octet header")
    appid, declared, reserved1, reserved2 = _HEADER.unpack_from(buf, off)
    if declared < 8 or declared > length:
        raise BerError("bad_length", f"length field {declared} with {length} octets in the frame")
    fields: dict[str, Any] = {"appid": appid, "length": declared, "simulated": bool(reserved1 & _SIMULATED)}
    if reserved1 & ~_SIMULATED & 0xFFFF or reserved2:
        fields["reserved1"] = reserved1
        fields["reserved2"] = reserved2
    return fields, off + declared


class _Block:
    """The last message seen of one GOOSE control block."""

    __slots__ = ("sq_num", "st_num", "tal_ms", "ts")

    def __init__(self, ts: float, st_num: int, sq_num: int, tal_ms: int) -> None:
        self.ts = ts
        self.st_num = st_num
        self.sq_num = sq_num
        self.tal_ms = tal_ms


class GooseDecoder(MessageDecoder):
    protocol = "goose"

    __slots__ = ("blocks", "untracked")

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.blocks: dict[tuple[int, str], _Block] = {}
        self.untracked = 0  # messages of control blocks beyond _MAX_BLOCKS (no interval fields)

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        try:
            fields, end = parse_header(buf, off, length)
            self.parse_pdu(buf, off + 8, end, fields)
        except BerError as err:
            self.anomaly(err.kind, f"GOOSE: {err}")
            return
        missing = [name for name in MANDATORY if name not in fields]
        if missing:
            self.anomaly("missing_field", "goosePdu without " + ", ".join(missing))
        if "st_num" in fields and "sq_num" in fields:
            self._track(fields)
        self.request(None, fields["appid"], "io", fields, from_client)

    @staticmethod
    def parse_pdu(buf: bytes, off: int, end: int, fields: dict[str, Any]) -> None:
        """The goosePdu at ``off`` into ``fields`` (raises BerError; shared with R-GOOSE)."""
        off, end = read_expected(buf, off, end, 0x61, "a goosePdu")
        while off < end:
            tag, value, off = read_tlv(buf, off, end)
            field = _FIELDS.get(tag)
            if field is not None:
                name, read = field
                fields[name] = read(buf, value, off)
            else:
                fields.setdefault("unknown_tags", []).append(tag)

    def _track(self, fields: dict[str, Any]) -> None:
        st_num: int = fields["st_num"]
        sq_num: int = fields["sq_num"]
        tal_ms: int = fields.get("time_allowed_to_live", 0)
        key = (fields["appid"], fields.get("gocb_ref", ""))
        ts = self._ts
        block = self.blocks.get(key)
        if block is None:
            if len(self.blocks) >= _MAX_BLOCKS:
                self.untracked += 1
                return
            self.blocks[key] = _Block(ts, st_num, sq_num, tal_ms)
            return
        interval = ts - block.ts
        fields["interval_s"] = round(interval, 6)
        if block.tal_ms > 0:
            fields["ttl_ratio"] = round(interval * 1000.0 / block.tal_ms, 4)
        st_step = (st_num - block.st_num) & 0xFFFFFFFF
        if st_step == 0:
            fields["state_change"] = False
            sq_step = (sq_num - block.sq_num) & 0xFFFFFFFF
            if sq_step == 0 or sq_step >= _HALF:
                self.anomaly("sqnum_regression", f"sqNum {sq_num} after {block.sq_num} with stNum {st_num}")
            else:
                fields["sq_gap"] = sq_step - 1
        elif st_step < _HALF:
            fields["state_change"] = True
            fields["st_gap"] = st_step - 1
        else:
            self.anomaly("stnum_regression", f"stNum {st_num} after {block.st_num}")
        block.ts = ts
        block.st_num = st_num
        block.sq_num = sq_num
        block.tal_ms = tal_ms


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> GooseDecoder:
    return GooseDecoder(flow, ctx, initiator_is_client)


SPEC: ProtocolSpec = link_layer_spec("goose", frozenset({ETH_GOOSE}), _factory)
