"""PROFINET over Ethernet (EtherType 0x8892, IEC 61158-6-10): RT cyclic frames, alarms, DCP, PTCP.

The frame id (first two octets) says what a frame is:

* 0x0100-0xFBFF cyclic real-time data: class 3 below 0x8000, class 2 below 0xC000, class 1 above.
  Each frame ends with the APDU status: cycle counter (units of 31.25 us), data status, transfer
  status. ``io``; per frame id the decoder keeps the last counter and time, giving ``interval_s``,
  ``cycle_delta`` (counter ticks since the previous frame) and ``cycle_gap`` (cycles missed, against
  the shortest step seen so far for that frame id: the send cycle times the reduction ratio).
* 0xFC01 / 0xFE01 alarms (high / low priority), RTA-PDUs: DATA carries an alarm notification with
  its alarm type; ACK, NACK and ERR manage the channel (ERR is an abort). ``diagnostic``: the device
  reports a diagnosis, a pulled module, ... (an unsolicited report, not a command).
* 0xFEFC-0xFEFF DCP (agent.decoders.pn_dcp); responses pair with requests by (service, Xid).
* 0x0000-0x00FF and 0xFF00-0xFF7F precision time control (PTCP sync, announce, delay): ``time``.

Anything else (reserved ranges, fragments 0xFF80-0xFF8F, which are not reassembled) is recorded as
``unknown`` with its frame id.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec, link_layer_spec
from agent.decoders.message import MessageDecoder
from agent.decoders.pn_dcp import DcpError, parse_dcp
from agent.flows import Flow
from agent.linklayer import ETH_PROFINET

CYCLE_TICK_S = 31.25e-6
_MAX_FRAME_IDS = 64  # cyclic frame ids tracked per flow
_STATUS = struct.Struct("!HBB")  # cycle counter, data status, transfer status
_RTA = struct.Struct("!HHBBHHH")  # dst/src endpoint, PDU type, add flags, send/ack seq, var part length
_ALARM = struct.Struct("!HHBBHIHHII")  # block type/length/version, alarm type, API, slot, subslot, ids

RTA_PDU_TYPES = {1: "data", 2: "nack", 3: "ack", 4: "err"}
ALARM_TYPES = {
    0x0001: "diagnosis",
    0x0002: "process",
    0x0003: "pull",
    0x0004: "plug",
    0x0005: "status",
    0x0006: "update",
    0x0007: "media_redundancy",
    0x0008: "controlled_by_supervisor",
    0x0009: "released",
    0x000A: "plug_wrong_submodule",
    0x000B: "return_of_submodule",
    0x000C: "diagnosis_disappears",
    0x000D: "multicast_communication_mismatch",
    0x000E: "port_data_change",
    0x000F: "sync_data_changed",
    0x0010: "isochronous_mode_problem",
    0x0011: "network_component_problem",
    0x0012: "time_data_changed",
    0x001E: "upload_and_retrieval",
    0x001F: "pull_module",
}


def rt_class(frame_id: int) -> int:
    """The real-time class of a cyclic frame id (0 when the id is not cyclic data)."""
    if 0x0100 <= frame_id < 0x8000:
        return 3
    if 0x8000 <= frame_id < 0xC000:
        return 2
    if 0xC000 <= frame_id < 0xFC00:
        return 1
    return 0


class _Cycle:
    __slots__ = ("counter", "period", "ts")

    def __init__(self, ts: float, counter: int) -> None:
        self.ts = ts
        self.counter = counter
        self.period = 0  # shortest positive counter step seen: the frame's cycle, in ticks


class ProfinetDecoder(MessageDecoder):
    protocol = "profinet"

    __slots__ = ("cycles",)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.cycles: dict[int, _Cycle] = {}

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if length < 2:
            self.anomaly("truncated", "PROFINET frame without a frame id")
            return
        frame_id = (buf[off] << 8) | buf[off + 1]
        end = off + length
        off += 2
        if rt_class(frame_id):
            self._cyclic(buf, off, end, frame_id, from_client)
        elif 0xFEFC <= frame_id <= 0xFEFF:
            self._dcp(buf, off, end, frame_id, from_client)
        elif frame_id == 0xFC01 or frame_id == 0xFE01:
            self._alarm(buf, off, end, frame_id, from_client)
        elif frame_id < 0x0100 or 0xFF00 <= frame_id < 0xFF80:
            self.request(None, frame_id, "time", {"frame_id": frame_id, "ptcp": True}, from_client)
        else:
            fields: dict[str, Any] = {"frame_id": frame_id}
            if 0xFF80 <= frame_id < 0xFF90:
                # A fragment of a large acyclic frame: what it carries is only known once reassembled.
                fields["fragment"] = True
            self.request(None, frame_id, "unknown", fields, from_client)

    def _cyclic(self, buf: bytes, off: int, end: int, frame_id: int, from_client: bool) -> None:
        if end - off < 4:
            self.anomaly("truncated", f"RT frame 0x{frame_id:04x} without its APDU status")
            return
        counter, data_status, transfer_status = _STATUS.unpack_from(buf, end - 4)
        fields: dict[str, Any] = {
            "frame_id": frame_id,
            "rt_class": rt_class(frame_id),
            "cycle_counter": counter,
            "data_status": data_status,
            "transfer_status": transfer_status,
            "data_len": end - off - 4,
            "primary": bool(data_status & 0x01),
            "data_valid": bool(data_status & 0x04),
            "provider_run": bool(data_status & 0x10),
            "station_ok": bool(data_status & 0x20),
        }
        ts = self._ts
        cycle = self.cycles.get(frame_id)
        if cycle is not None:
            delta = (counter - cycle.counter) & 0xFFFF
            fields["interval_s"] = round(ts - cycle.ts, 6)
            fields["cycle_delta"] = delta
            if delta and (not cycle.period or delta < cycle.period):
                cycle.period = delta
            if cycle.period:
                fields["cycle_gap"] = max(0, round(delta / cycle.period) - 1)
            cycle.ts = ts
            cycle.counter = counter
        elif len(self.cycles) < _MAX_FRAME_IDS:
            self.cycles[frame_id] = _Cycle(ts, counter)
        if transfer_status:
            self.anomaly(
                "transfer_status", f"RT frame 0x{frame_id:04x} transfer status 0x{transfer_status:02x}"
            )
        self.request(None, frame_id, "io", fields, from_client)

    def _dcp(self, buf: bytes, off: int, end: int, frame_id: int, from_client: bool) -> None:
        try:
            is_response, operation, fields = parse_dcp(buf, off, end, frame_id)
        except DcpError as err:
            self.anomaly(err.kind, f"DCP: {err}")
            return
        key = (fields["service_id"], fields["xid"])
        if is_response:
            self.response(
                key, frame_id, operation, fields, from_client, exception=bool(fields.get("not_supported"))
            )
        else:
            # A multicast identify is answered on other flows (each responder's own): not kept pending.
            self.request(None if frame_id == 0xFEFE else key, frame_id, operation, fields, from_client)

    def _alarm(self, buf: bytes, off: int, end: int, frame_id: int, from_client: bool) -> None:
        if end - off < _RTA.size:
            self.anomaly("truncated", "alarm frame shorter than its RTA header")
            return
        dst_ep, src_ep, pdu_type, _flags, send_seq, ack_seq, var_len = _RTA.unpack_from(buf, off)
        kind = pdu_type & 0x0F
        fields: dict[str, Any] = {
            "frame_id": frame_id,
            "priority": "high" if frame_id == 0xFC01 else "low",
            "alarm_dst_endpoint": dst_ep,
            "alarm_src_endpoint": src_ep,
            "pdu_type": RTA_PDU_TYPES.get(kind, str(kind)),
            "send_seq_num": send_seq,
            "ack_seq_num": ack_seq,
        }
        off += _RTA.size
        if off + var_len > end:
            self.anomaly("bad_length", f"alarm VarPartLen {var_len} with {end - off} octets left")
            return
        if kind == 1 and var_len >= _ALARM.size:
            block_type, _len, _vh, _vl, alarm_type, api, slot, subslot, module, submodule = (
                _ALARM.unpack_from(buf, off)
            )
            fields["block_type"] = block_type
            if block_type in (0x0001, 0x0002):  # alarm notification high / low
                fields.update(alarm_type=alarm_type, alarm=ALARM_TYPES.get(alarm_type, "other"), api=api,
                              slot=slot, subslot=subslot, module_ident=module,
                              submodule_ident=submodule)  # fmt: skip
        elif kind == 4 and var_len >= 4:
            fields["pnio_status"] = buf[off : off + 4].hex()
        self.request(None, frame_id, "diagnostic", fields, from_client)
        if kind == 4:
            self.anomaly("alarm_abort", f"RTA error PDU (PNIO status {fields.get('pnio_status', '-')})")


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> ProfinetDecoder:
    return ProfinetDecoder(flow, ctx, initiator_is_client)


SPEC: ProtocolSpec = link_layer_spec("profinet", frozenset({ETH_PROFINET}), _factory)
