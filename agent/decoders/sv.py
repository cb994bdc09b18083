"""IEC 61850-9-2 Sampled Values (EtherType 0x88BA, usually VLAN-tagged): header, savPdu, ASDUs.

One record per frame, ``io`` (a merging unit streams samples, thousands a second); ``function`` is
the APPID. The first ASDU's svID and smpCnt are lifted to the top level; every ASDU is listed under
``asdus``. Per svID the decoder keeps the last smpCnt and time, giving ``interval_s`` and
``smp_gap`` (samples missing in between) for the control-health work. smpCnt wraps at the sample
rate (or 65536), so a smaller count is a wrap, not a gap, and yields no ``smp_gap``.
"""

from __future__ import annotations

from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec, link_layer_spec
from agent.decoders.ber import BerError, read_expected, read_tlv, text, unsigned
from agent.decoders.goose import parse_header
from agent.decoders.message import MessageDecoder
from agent.flows import Flow
from agent.linklayer import ETH_SV

_MAX_STREAMS = 64  # svIDs tracked per flow

_UNSIGNED = {0x83: "conf_rev", 0x85: "smp_synch", 0x86: "smp_rate", 0x88: "smp_mod"}
SMP_SYNCH = {0: "none", 1: "local", 2: "global"}  # values above 2 name a PTP grandmaster (Ed.2.1)


def _asdu(buf: bytes, off: int, end: int) -> dict[str, Any]:
    """One ASDU. A merging unit sends thousands a second, so the usual encoding (one-octet tags,
    short-form lengths) is read inline here; any other goes through the general ``read_tlv``."""
    asdu: dict[str, Any] = {}
    while off < end:
        tag = buf[off]
        if off + 2 <= end and buf[off + 1] < 0x80 and tag & 0x1F != 0x1F:
            value = off + 2
            off = value + buf[off + 1]
            if off > end:
                raise BerError("bad_length", f"ASDU element 0x{tag:02x} runs past its ASDU")
        else:
            tag, value, off = read_tlv(buf, off, end)
        if tag == 0x87:
            asdu["seq_data_len"] = off - value
        elif tag == 0x80:
            asdu["sv_id"] = buf[value:off].decode("latin-1")
        elif tag == 0x82:
            if off - value != 2:
                raise BerError("bad_length", f"smpCnt of {off - value} octets (2 expected)")
            asdu["smp_cnt"] = (buf[value] << 8) | buf[value + 1]
        elif tag in _UNSIGNED:
            if not 0 < off - value <= 8:
                raise BerError("bad_integer", f"ASDU element 0x{tag:02x} of {off - value} octets")
            asdu[_UNSIGNED[tag]] = int.from_bytes(buf[value:off], "big")
        elif tag == 0x81:
            asdu["dat_set"] = text(buf, value, off)
    if "sv_id" not in asdu or "smp_cnt" not in asdu:
        raise BerError("missing_field", "ASDU without svID or smpCnt")
    return asdu


def parse_sav_pdu(buf: bytes, off: int, end: int, fields: dict[str, Any]) -> None:
    off, end = read_expected(buf, off, end, 0x60, "a savPdu")
    asdus: list[dict[str, Any]] = []
    while off < end:
        tag, value, off = read_tlv(buf, off, end)
        if tag == 0x80:
            fields["no_asdu"] = unsigned(buf, value, off)
        elif tag == 0x81:
            fields["security"] = True
        elif tag == 0xA2:
            while value < off:
                asdu_off, value = read_expected(buf, value, off, 0x30, "an ASDU")
                asdus.append(_asdu(buf, asdu_off, value))
    if fields.get("no_asdu") != len(asdus):
        raise BerError("bad_count", f"noASDU {fields.get('no_asdu')} with {len(asdus)} ASDUs")
    fields["asdus"] = asdus
    fields["sv_id"] = asdus[0]["sv_id"]
    fields["smp_cnt"] = asdus[0]["smp_cnt"]
    if "conf_rev" in asdus[0]:
        fields["conf_rev"] = asdus[0]["conf_rev"]
    if "smp_synch" in asdus[0]:
        fields["smp_synch"] = asdus[0]["smp_synch"]


class SampledValuesDecoder(MessageDecoder):
    protocol = "sv"

    __slots__ = ("streams",)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.streams: dict[str, tuple[float, int]] = {}  # svID -> (time, smpCnt) of its last ASDU

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        try:
            fields, end = parse_header(buf, off, length)
            parse_sav_pdu(buf, off + 8, end, fields)
        except BerError as err:
            self.anomaly(err.kind, f"Sampled Values: {err}")
            return
        ts = self._ts
        streams = self.streams
        for asdu in fields["asdus"]:
            sv_id = asdu["sv_id"]
            smp_cnt = asdu["smp_cnt"]
            last = streams.get(sv_id)
            if last is not None:
                if sv_id == fields["sv_id"] and "interval_s" not in fields:
                    fields["interval_s"] = round(ts - last[0], 6)
                if smp_cnt > last[1]:
                    asdu["smp_gap"] = smp_cnt - last[1] - 1
            if last is not None or len(streams) < _MAX_STREAMS:
                streams[sv_id] = (ts, smp_cnt)
        first = fields["asdus"][0]
        if "smp_gap" in first:
            fields["smp_gap"] = first["smp_gap"]
        self.request(None, fields["appid"], "io", fields, from_client)


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> SampledValuesDecoder:
    return SampledValuesDecoder(flow, ctx, initiator_is_client)


SPEC: ProtocolSpec = link_layer_spec("sv", frozenset({ETH_SV}), _factory)
