"""Request/response latency from tshark's own decoding, for protocols where tshark pairs nothing itself.

tshark 4.0 has a pairing field for Modbus/TCP (``modbus.response_time``) and EtherNet/IP
(``enip.time``), but none for S7comm or DNP3 (``tshark -G fields``: no request frame, response frame
or time field in either dissector). So the pairing is done here, from the fields tshark decodes, by
each protocol's own rule, independently of our decoders:

* S7comm: a Job (``s7comm.header.rosctr`` 1) is answered by the Ack or Ack_Data (2, 3) that comes
  back on the same TCP stream with the same ``s7comm.header.pduref``; a Userdata request
  (``s7comm.param.userdata.type`` 4, NC request 7) by the Userdata response (8, NC response 11) with
  the same PDU reference. Pushes (0, 3) answer nothing.
* DNP3: a request (``dnp3.al.func`` 1-127 except 0 confirm and the no-acknowledgement functions 6, 8,
  10, 12, and the authentication error 33) is answered by the first-fragment response (func 129, FIR
  set in ``dnp3.al.ctl``) that comes back on the same TCP/UDP stream with the same application
  sequence number (``dnp3.al.ctl`` & 0x0F). Link addresses are not part of the key: tshark reports them
  per link frame while the application fields come per completed fragment, so the two lists do not
  line up; every corpus stream carries one master/outstation pair.

Latency = the response frame's time - the request frame's time (``frame.time_epoch``), one value per
response frame (its first paired message), as for the Modbus and EtherNet/IP fields.
"""

from __future__ import annotations

from pathlib import Path

from tests.corpus.ot_oracle import tshark_fields

S7_JOB, S7_ACK, S7_ACK_DATA, S7_USERDATA = "1", "2", "3", "7"
S7_UD_REQUESTS = frozenset({4, 7})
S7_UD_RESPONSES = frozenset({8, 11})
DNP3_RESPONSE = 129
# Requests a DNP3 outstation never answers: confirm, the no-ack variants of operate and freeze, and
# the authentication error (IEEE 1815-2012 table 4-1).
DNP3_UNANSWERED = frozenset({0, 6, 8, 10, 12, 33})


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _common(row: list[str]) -> tuple[float, str, str, str]:
    """(time, stream, source, destination) of a frame's row (fields in ``_COMMON`` order)."""
    ts, tcp_stream, udp_stream, src, dst, src6, dst6 = row[:7]
    stream = f"t{tcp_stream}" if tcp_stream else f"u{udp_stream}"
    return float(ts), stream, src or src6, dst or dst6


_COMMON = ["frame.time_epoch", "tcp.stream", "udp.stream", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst"]


def s7comm_latencies(path: Path) -> dict[int, float]:
    fields = [*_COMMON, "s7comm.header.rosctr", "s7comm.header.pduref", "s7comm.param.userdata.type"]
    rows = tshark_fields(path, "s7comm", fields)
    pending: dict[tuple[str, str, str, str, str], float] = {}
    out: dict[int, float] = {}
    for frame in sorted(rows):
        row = rows[frame] + [""] * (len(fields) - len(rows[frame]))
        ts, stream, src, dst = _common(row)
        types = iter(_split(row[9]))
        for rosctr, ref in zip(_split(row[7]), _split(row[8]), strict=False):
            if rosctr == S7_USERDATA:
                ud_type = int(next(types, "-1"), 0)
                family = "userdata"
                request, response = ud_type in S7_UD_REQUESTS, ud_type in S7_UD_RESPONSES
            else:
                family = "job"
                request, response = rosctr == S7_JOB, rosctr in (S7_ACK, S7_ACK_DATA)
            if request:
                pending[(stream, src, dst, ref, family)] = ts
            elif response:
                sent = pending.pop((stream, dst, src, ref, family), None)
                if sent is not None and frame not in out:
                    out[frame] = ts - sent
    return out


def dnp3_latencies(path: Path, display_filter: str = "dnp3.al.func") -> dict[int, float]:
    fields = [*_COMMON, "dnp3.al.func", "dnp3.al.ctl"]
    rows = tshark_fields(path, display_filter, fields)
    pending: dict[tuple[str, str, str, int], float] = {}
    out: dict[int, float] = {}
    for frame in sorted(rows):
        row = rows[frame] + [""] * (len(fields) - len(rows[frame]))
        ts, stream, src, dst = _common(row)
        for func_text, ctl_text in zip(_split(row[7]), _split(row[8]), strict=False):
            func, ctl = int(func_text, 0), int(ctl_text, 0)
            seq = ctl & 0x0F
            if func < 128 and func not in DNP3_UNANSWERED:
                pending[(stream, src, dst, seq)] = ts
            elif func == DNP3_RESPONSE and ctl & 0x80:
                sent = pending.pop((stream, dst, src, seq), None)
                if sent is not None and frame not in out:
                    out[frame] = ts - sent
    return out
