"""S7comm / S7comm-plus decoder: TPKT/COTP framing, fields, pairing, classes, anomalies, robustness."""

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import cotp, s7comm
from agent.decoders.base import DecoderConfig, DecoderContext, OtMessage
from agent.dissect import Packet
from agent.flows import Flow
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory

# -- packet builders ---------------------------------------------------------------------------------


def tpkt(tpdu: bytes) -> bytes:
    return struct.pack("!BBH", 3, 0, 4 + len(tpdu)) + tpdu


def dt(data: bytes, eot: bool = True) -> bytes:
    return tpkt(bytes([2, 0xF0, 0x80 if eot else 0x00]) + data)


def connection_tpdu(code: int, src_tsap: bytes = b"\x01\x00", dst_tsap: bytes = b"\x01\x02", dst_ref: int = 0,
                    src_ref: int = 1) -> bytes:  # fmt: skip
    """CR/CC with TPDU size and TSAP parameters; DR with a reason; DC."""
    body = bytes([code]) + struct.pack("!HH", dst_ref, src_ref)
    if code in (0xE0, 0xD0):
        body += b"\x00\xc0\x01\x0a" + b"\xc1" + bytes([len(src_tsap)]) + src_tsap
        body += b"\xc2" + bytes([len(dst_tsap)]) + dst_tsap
    elif code == 0x80:
        body += b"\x80"  # reason: normal disconnect initiated by the session entity
    return tpkt(bytes([len(body)]) + body)


CR = connection_tpdu(0xE0)
CC = connection_tpdu(0xD0, dst_ref=1, src_ref=5)


def s7(
    rosctr: int, pdu_ref: int, param: bytes = b"", data: bytes = b"", error: tuple[int, int] = (0, 0)
) -> bytes:
    header = struct.pack("!BBHHHH", 0x32, rosctr, 0, pdu_ref, len(param), len(data))
    if rosctr in (2, 3):
        header += bytes(error)
    return header + param + data


def job(param: bytes, pdu_ref: int = 1, data: bytes = b"") -> bytes:
    return dt(s7(1, pdu_ref, param, data))


def ack_data(param: bytes, pdu_ref: int = 1, data: bytes = b"", error: tuple[int, int] = (0, 0)) -> bytes:
    return dt(s7(3, pdu_ref, param, data, error))


def userdata(ud_type: int, group: int, subfunction: int, pdu_ref: int = 7, data: bytes = b"", seq: int = 0,
             ext: tuple[int, int, int] | None = None) -> bytes:  # fmt: skip
    """Userdata with a short parameter, or with ``ext`` = (data unit ref, last data unit, error code)."""
    type_group = ud_type << 6 | group
    if ext is None:
        param = b"\x00\x01\x12\x04\x11" + bytes([type_group, subfunction, seq])
    else:
        param = b"\x00\x01\x12\x08\x12" + bytes([type_group, subfunction, seq, ext[0], ext[1]])
        param += struct.pack("!H", ext[2])
    return dt(s7(7, pdu_ref, param, data))


def s7any(area: int, db: int, address: int, bit: int = 0, tsize: int = 2, length: int = 1) -> bytes:
    """An S7ANY item; timers and counters (areas 0x1c-0x1f) put their number where the bit address is."""
    raw = address if area in (0x1C, 0x1D, 0x1E, 0x1F) else address << 3 | bit
    return b"\x12\x0a\x10" + struct.pack("!BHHB", tsize, length, db, area) + raw.to_bytes(3, "big")


SETUP = b"\xf0\x00" + struct.pack("!HHH", 1, 1, 480)
READ_DB = b"\x04\x02" + s7any(0x84, 5, 12, tsize=2, length=4) + s7any(0x1D, 0, 3, tsize=0x1D, length=1)
READ_RESP = b"\xff\x04\x00\x20" + b"\x01\x02\x03\x04" + b"\x0a\x00\x00\x00"


def szl(szl_id: int, index: int) -> bytes:
    return b"\xff\x09" + struct.pack("!HHH", 4, szl_id, index)


def pi_service(name: bytes, block: bytes = b"") -> bytes:
    return b"\x28" + bytes(6) + b"\xfd" + struct.pack("!H", len(block)) + block + bytes([len(name)]) + name


def block_control(function: int, filename: bytes = b"_0800001P", upload_id: int = 0) -> bytes:
    return bytes([function, 0, 0, 0]) + struct.pack("!I", upload_id) + bytes([len(filename)]) + filename


PLC_STOP = b"\x29" + bytes(5) + b"\x09P_PROGRAM"
MODU = pi_service(b"_MODU", b"EP")  # copy RAM to ROM
BLOCK = b"\x00\x04\x00\xfb\xaa\xbb"  # a block's bytes in a Download block Ack_Data
READ_ACK = b"\x04\x00"


def plus(version: int, opcode: int, function: int = 0x04CA, seq: int = 1, body: bytes = b"",
         trailer: bool = True) -> bytes:  # fmt: skip
    """An S7comm-plus PDU; V3 gets its integrity part (digest length 32 and a digest) in front."""
    data = bytes([opcode])
    if opcode in (0x31, 0x32):
        data += b"\x00\x00" + struct.pack("!H", function) + b"\x00\x00" + struct.pack("!H", seq)
    if opcode == 0x31:
        data += struct.pack("!I", 0x70000021) + b"\x36"
    data += body
    if version == 3:
        data = bytes([32]) + bytes(range(32)) + data
    pdu = b"\x72" + bytes([version]) + struct.pack("!H", len(data)) + data
    return pdu + (b"\x72" + bytes([version]) + b"\x00\x00" if trailer else b"")


Ports = dict[str, tuple[int, ...]]


def decode(segments: list[tuple[bool, bytes]], dport: int = 102, ports: Ports | None = None, **kwargs: Any):
    return factory.decode(factory.tcp_stream(segments, dport=dport, **kwargs), ports=ports)


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


def s7_messages(msgs: list[OtMessage]) -> list[OtMessage]:
    return [m for m in msgs if "rosctr" in m.fields]


# -- COTP connection ---------------------------------------------------------------------------------


def test_connection_tpdus_wait_for_s7_data_and_carry_the_tsaps() -> None:
    msgs, anomalies, _ = decode([(True, CR), (False, CC), (True, job(SETUP)), (False, ack_data(SETUP))])
    assert not anomalies
    cr, cc, setup, setup_ack = msgs
    assert (cr.pcap_cnt, cc.pcap_cnt, setup.pcap_cnt) == (4, 5, 6)  # reported with their own packets
    assert cr.fields == {
        "cotp": {"type": "CR", "dst_ref": 0, "src_ref": 1, "class": 0, "tpdu_size": 1024},
        "tsap": {"src_tsap": "0100", "dst_tsap": "0102", "connection_type": "PG", "rack": 0, "slot": 2},
    }
    assert (cr.direction, cr.operation, cr.function, cr.to_server) == ("request", "session", 0x1E0, True)
    assert (cc.direction, cc.function, cc.request_cnt, cc.fields["cotp"]["type"]) == (
        "response",
        0x1D0,
        4,
        "CC",
    )
    assert cc.latency_s == pytest.approx(0.01)
    assert setup.fields == {"rosctr": 1, "rosctr_name": "Job", "pdu_ref": 1, "function_code": 0xF0,
                            "function_name": "Setup communication", "max_amq_calling": 1, "max_amq_called": 1,
                            "pdu_length": 480}  # fmt: skip
    assert (setup.operation, setup_ack.operation, setup_ack.request_cnt) == ("session", "session", 6)


def test_tsaps_are_recorded_on_the_decoder() -> None:
    harness = Harness()
    harness.feed([(True, connection_tpdu(0xE0, b"SIMATIC-ROOT-HMI", b"SIMATIC-ROOT-ES")), (False, CC)])
    assert not harness.messages  # held back: S7comm-plus or MMS?
    harness.feed([(True, dt(plus(1, 0x31, 0x04CA, seq=1)))])
    assert (harness.decoder.src_tsap, harness.decoder.dst_tsap) == ("SIMATIC-ROOT-HMI", "SIMATIC-ROOT-ES")
    assert [m.protocol for m in harness.messages] == ["s7comm_plus"] * 3
    assert harness.messages[0].fields["tsap"] == {
        "src_tsap": "SIMATIC-ROOT-HMI",
        "dst_tsap": "SIMATIC-ROOT-ES",
    }


def test_refused_connection_without_data_is_reported_at_close() -> None:
    refused = connection_tpdu(0x80, dst_ref=1, src_ref=0)
    msgs, anomalies, _ = decode([(True, CR), (False, refused)])
    assert not anomalies
    assert [(m.protocol, m.direction, m.fields["cotp"]["type"], m.exception) for m in msgs] == [
        ("s7comm", "request", "CR", False),
        ("s7comm", "response", "DR", True),
    ]
    assert msgs[1].request_cnt == msgs[0].pcap_cnt and msgs[1].fields["cotp"]["reason"] == 0x80


def test_disconnect_request_and_confirm() -> None:
    msgs, _, _ = decode([(True, CR), (False, CC), (True, job(SETUP)), (True, connection_tpdu(0x80)),
                         (False, connection_tpdu(0xC0))])  # fmt: skip
    dr, dc = msgs[-2:]
    assert (dr.direction, dr.function, dc.direction, dc.function) == ("request", 0x180, "response", 0x1C0)
    assert dc.request_cnt == dr.pcap_cnt and all(m.operation == "session" for m in (dr, dc))


def test_other_data_on_port_102_is_left_alone() -> None:
    # The same CR/CC, then an ISO session CONNECT SPDU (0x0d) too short for its length: neither S7 nor
    # MMS (tests/decoders/test_mms.py has the real thing), so no decoder and the port's name.
    session_connect = dt(b"\x0d\xb2\x05\x06\x13\x01\x00\x16\x01\x02\x14\x02\x00\x02")
    packets = factory.tcp_stream([(True, CR), (False, CC), (True, session_connect), (False, dt(b"\x0e\x86"))],
                                 dport=102)  # fmt: skip
    msgs, anomalies, _ = factory.decode(packets)
    assert not msgs and not anomalies
    collector = factory.Collector()
    Pipeline(PipelineConfig(), consumers=[collector]).run(factory.ListSource(packets))
    assert collector.flows[0].app_proto == "iso-tsap"


# -- S7comm jobs -------------------------------------------------------------------------------------


def test_read_var_items_and_response() -> None:
    msgs, anomalies, _ = decode([(True, job(READ_DB, pdu_ref=0x0100)),
                                 (False, ack_data(b"\x04\x02", pdu_ref=0x0100, data=READ_RESP))])  # fmt: skip
    assert not anomalies
    req, resp = msgs
    assert req.fields["item_count"] == 2
    assert req.fields["items"] == [
        {"area": 0x84, "area_name": "DB", "db": 5, "transport_size": 2, "length": 4, "address": 12, "bit": 0},
        {"area": 0x1D, "area_name": "T", "db": 0, "transport_size": 0x1D, "length": 1, "number": 3},
    ]
    assert (req.function, req.operation, req.fields["pdu_ref"]) == (4, "read", 0x0100)
    assert resp.fields["items"] == [{"return_code": 0xFF, "transport_size": 4, "length": 4},
                                    {"return_code": 0x0A, "transport_size": 0, "length": 0}]  # fmt: skip
    assert (resp.operation, resp.request_cnt, resp.exception) == ("read", req.pcap_cnt, False)
    assert resp.fields["error_class"] == 0 and resp.fields["error_class_name"] == "No error"


def test_write_var_and_response_return_codes() -> None:
    param = b"\x05\x01" + s7any(0x82, 0, 4, bit=3, tsize=1)
    msgs, anomalies, _ = decode([(True, job(param, data=b"\x00\x03\x00\x01\x01")),
                                 (False, ack_data(b"\x05\x01", data=b"\x05"))])  # fmt: skip
    assert not anomalies
    item = {"area": 0x82, "area_name": "Q", "db": 0, "transport_size": 1, "length": 1, "address": 4, "bit": 3}
    assert msgs[0].fields["items"] == [item]
    assert msgs[1].fields["items"] == [{"return_code": 5}] and msgs[1].operation == "write"


def test_upload_and_download_block_fields() -> None:
    msgs, anomalies, _ = decode([
        (True, job(block_control(0x1D, b"_0A00042A", upload_id=0))),
        (False, ack_data(b"\x1d\x00\x00\x00" + struct.pack("!I", 7), pdu_ref=1)),
        (True, job(b"\x1e\x00\x00\x00" + struct.pack("!I", 7), pdu_ref=2)),
        (True, job(block_control(0x1A, b"_0E00010P"), pdu_ref=3)),
    ])  # fmt: skip
    assert not anomalies
    start, start_ack, upload, download = msgs
    assert start.fields | {} == {"rosctr": 1, "rosctr_name": "Job", "pdu_ref": 1, "function_code": 0x1D,
                                 "function_name": "Start upload", "upload_id": 0, "filename": "_0A00042A",
                                 "file_identifier": "_", "block_type": "DB", "block_number": 42,
                                 "dest_filesys": "A"}  # fmt: skip
    assert start.operation == "upload" and start_ack.fields["upload_id"] == 7
    assert upload.fields["upload_id"] == 7 and upload.operation == "upload"
    assert (download.operation, download.fields["block_type"], download.fields["block_number"]) == (
        "program",
        "FB",
        10,
    )


def test_download_blocks_are_jobs_sent_by_the_plc() -> None:
    # In a download the PLC asks the programming device for the block: the Job comes from the server.
    msgs, _, _ = decode([(True, job(block_control(0x1A), pdu_ref=1)), (False, ack_data(b"\x1a", pdu_ref=1)),
                         (False, job(block_control(0x1B), pdu_ref=1)),
                         (True, ack_data(b"\x1b\x00", pdu_ref=1, data=BLOCK))])  # fmt: skip
    assert [(m.direction, m.to_server, m.function, m.request_cnt) for m in msgs] == [
        ("request", True, 0x1A, 0),
        ("response", False, 0x1A, msgs[0].pcap_cnt),
        ("request", False, 0x1B, 0),
        ("response", True, 0x1B, msgs[2].pcap_cnt),
    ]
    assert msgs[3].fields["data_length"] == 6 and all(m.operation == "program" for m in msgs)


def test_pi_services_and_plc_stop() -> None:
    insert = pi_service(b"_INSE", b"\x02\x00" + b"0800001P" + b"0C00012P")
    msgs, anomalies, _ = decode([(True, job(insert)), (True, job(pi_service(b"P_PROGRAM"), pdu_ref=2)),
                                 (True, job(PLC_STOP, pdu_ref=3)), (True, job(MODU, 4))])  # fmt: skip
    assert not anomalies
    assert msgs[0].fields["pi_service"] == "_INSE" and msgs[0].fields["blocks"] == ["OB1", "FC12"]
    assert msgs[0].fields["block_count"] == 2
    assert [m.operation for m in msgs] == ["program", "mode", "mode", "program"]
    assert msgs[2].fields["pi_service"] == "P_PROGRAM" and msgs[2].function == 0x29
    assert msgs[3].fields["argument"] == "EP"


def test_block_numbers_with_non_ascii_digits_stay_text() -> None:
    # "\xb9" (superscript one) passes str.isdigit() but not int(): found by the mutation test.
    insert = pi_service(b"_INSE", b"\x01\x00" + b"08\xb90001P")
    msgs, _, _ = decode([(True, job(insert))])
    assert msgs[0].fields["blocks"] == ["OB\xb90001"]


def test_ack_with_error_answers_its_job() -> None:
    upload = job(block_control(0x1D, b"_0B00000A"), pdu_ref=0x600)
    refused = dt(s7(2, 0x600, error=(0xD2, 0x41)))
    msgs, anomalies, _ = decode([(True, upload), (False, refused)])
    assert not anomalies
    ack = msgs[1]
    assert ack.fields == {"rosctr": 2, "rosctr_name": "Ack", "pdu_ref": 0x600, "error_class": 0xD2,
                          "error_class_name": "unknown", "error_code": 0x41}  # fmt: skip
    assert (ack.function, ack.operation, ack.exception, ack.request_cnt) == (
        0x1D,
        "upload",
        True,
        msgs[0].pcap_cnt,
    )


def test_ack_data_with_header_error_is_an_exception() -> None:
    msgs, _, _ = decode([(True, job(PLC_STOP)), (False, ack_data(b"\x29", error=(0x85, 0x00)))])
    assert msgs[1].exception and msgs[1].fields["error_class_name"] == "Error on supplies"
    assert msgs[1].operation == "mode"


def test_unanswered_jobs_are_counted() -> None:
    _, _, pipeline = decode([(True, job(SETUP)), (True, job(READ_DB, pdu_ref=2))])
    stats = pipeline.decoders.stats["s7comm"]
    assert stats.requests == 2 and stats.unanswered == 2


# -- userdata ------------------------------------------------------------------------------------


def test_szl_read_pairs_and_shows_the_szl_id() -> None:
    msgs, anomalies, _ = decode([(True, userdata(1, 4, 1, pdu_ref=0x500, data=szl(0x0424, 0))),
                                 (False, userdata(2, 4, 1, pdu_ref=0x500, data=szl(0x0424, 0) + bytes(20),
                                                  ext=(0, 0, 0)))])  # fmt: skip
    assert not anomalies
    req, resp = msgs
    assert req.fields == {"rosctr": 7, "rosctr_name": "Userdata", "pdu_ref": 0x500, "function_code": 0,
                          "function_name": "CPU services", "seq_num": 0,
                          "type": "request", "group": 4, "group_name": "CPU functions", "subfunction": 1,
                          "subfunction_name": "Read SZL", "return_code": 0xFF, "szl_id": 0x0424,
                          "szl_index": 0}  # fmt: skip
    assert (req.function, req.operation) == (0x10401, "diagnostic")
    assert resp.fields["last_data_unit"] and resp.fields["szl_id"] == 0x0424
    assert (resp.direction, resp.request_cnt, resp.exception) == ("response", req.pcap_cnt, False)


def test_userdata_error_code_makes_an_exception() -> None:
    password = userdata(1, 5, 1, data=b"\xff\x09\x00\x08" + b"12345678")
    msgs, _, _ = decode(
        [(True, password), (False, userdata(2, 5, 1, ext=(0, 0, 0xD602), data=b"\x0a\x00\x00\x00"))]
    )
    assert msgs[0].operation == "auth" and msgs[1].exception and msgs[1].fields["error_code"] == 0xD602


def test_pushes_are_unsolicited_responses() -> None:
    mode_transition = dt(s7(7, 0, b"\x01\x00\x10\x10\x00\x00\x02\x00"))  # the PLC is now in RUN
    diag = userdata(0, 4, 3, pdu_ref=0, data=b"\xff\x09\x00\x14" + bytes(20))
    nc = userdata(0, 0x3F, 2, pdu_ref=0, data=b"\xff\x09\x00\x02\x00\x00")
    msgs, anomalies, _ = decode([(False, mode_transition), (False, diag), (False, nc)])
    assert not anomalies
    assert [(m.direction, m.request_cnt, m.fields["type"], m.operation) for m in msgs] == [
        ("response", 0, "push", "diagnostic"),
        ("response", 0, "push", "diagnostic"),
        ("response", 0, "push", "program"),
    ]
    assert msgs[0].fields["group_name"] == "Mode-transition" and msgs[0].fields["subfunction_name"] == "RUN"
    assert msgs[2].fields["group"] == 0x3F and msgs[2].function == 0x13F02  # current Wireshark numbering


# -- operation classes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "operation"),
    [
        (job(SETUP), "session"),
        (job(READ_DB), "read"),
        (job(b"\x05\x01" + s7any(0x83, 0, 1), data=b"\x00\x04\x00\x08\x01"), "write"),
        (job(block_control(0x1B)), "program"),
        (job(block_control(0x1C)), "program"),
        (job(b"\x1f\x00\x00\x00" + struct.pack("!I", 1)), "upload"),
        (job(pi_service(b"_DELE", b"\x01\x00" + b"0A00003P")), "program"),
        (job(pi_service(b"_GARB")), "program"),
        (job(pi_service(b"_N_F_DELE")), "file"),  # SINUMERIK: delete a part-program file
        (job(pi_service(b"_N_LOGIN_")), "auth"),
        (job(pi_service(b"_N_TMCRTO")), "vendor"),  # SINUMERIK tool management
        (job(PLC_STOP), "mode"),
        (job(b"\x00\x01"), "unknown"),  # "CPU services": named by Wireshark, meaning unknown
        (userdata(1, 1, 0x01), "diagnostic"),  # block status
        (userdata(1, 1, 0x02), "read"),  # variable status
        (userdata(1, 1, 0x08), "write"),  # modify variable
        (userdata(1, 1, 0x09), "operate"),  # force
        (userdata(1, 1, 0x0A), "mode"),  # breakpoint
        (userdata(1, 1, 0x0C), "mode"),  # memory reset
        (userdata(1, 1, 0x0E), "diagnostic"),  # enable (test) job
        (userdata(1, 1, 0x16), "diagnostic"),  # flash LED
        (userdata(1, 2, 0x01), "subscribe"),  # cyclic transfer
        (userdata(1, 2, 0x08), "read"),  # RDREC
        (userdata(1, 3, 0x01), "diagnostic"),  # list blocks
        (userdata(1, 4, 0x02), "subscribe"),  # message service
        (userdata(1, 4, 0x0B), "operate"),  # alarm acknowledge
        (userdata(0, 4, 0x0C), "operate"),  # alarm acknowledge indication
        (userdata(1, 4, 0x13), "read"),  # alarm query
        (userdata(1, 5, 0x01), "auth"),  # PLC password
        (userdata(1, 6, 0x01), "write"),  # PBC BSEND
        (userdata(1, 7, 0x01), "read"),  # read clock
        (userdata(1, 7, 0x02), "time"),  # set clock
        (userdata(1, 7, 0x04), "time"),
        (userdata(1, 0x20, 0x01), "config"),  # data record routing
        (userdata(1, 0x3F, 0x01), "program"),  # NC program download
    ],
)
def test_operation_classes(segment: bytes, operation: str) -> None:
    msgs, _, _ = decode([(True, segment)])
    assert msgs[0].operation == operation


# -- anomalies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "kind"),
    [
        (job(b"\x77"), "unknown_function"),
        (job(pi_service(b"_HACK")), "unknown_pi_service"),
        (dt(s7(5, 1, b"\x04\x00")), "unknown_rosctr"),
        (userdata(1, 0x11, 1), "unknown_function"),
        (userdata(1, 1, 0x30), "unknown_subfunction"),
        (dt(s7(1, 1, SETUP) + b"\x00\x00"), "bad_length"),  # two bytes more than the header says
        (job(b"\x04\x03" + s7any(0x84, 1, 0)), "bad_length"),  # three items announced, one present
        (tpkt(b"\x02\x60\x00"), "unexpected_tpdu"),  # AK is not used in class 0
        (dt(plus(3, 0x31, 0x054C)[:5] + bytes(10)), "bad_length"),  # V3 digest length 0
    ],
)
def test_anomalies(segment: bytes, kind: str) -> None:
    _, anomalies, _ = decode([(True, job(SETUP)), (True, segment)])
    assert events(anomalies) == [kind]


def test_unknown_operations_are_still_reported() -> None:
    msgs, _, _ = decode([(True, job(b"\x77")), (True, userdata(1, 0x11, 1))])
    assert [(m.operation, m.function) for m in msgs] == [("unknown", 0x77), ("unknown", 0x11101)]


def test_data_that_is_not_s7_after_s7_is_an_anomaly() -> None:
    msgs, anomalies, _ = decode([(True, job(SETUP)), (True, dt(b"\x99\x01\x02"))])
    assert len(msgs) == 1 and events(anomalies) == ["bad_protocol_id"]


# -- framing -----------------------------------------------------------------------------------------


def test_tpkts_split_across_segments_and_batched_in_one() -> None:
    two = job(SETUP) + job(READ_DB, pdu_ref=2)
    msgs, anomalies, _ = decode(
        [(True, CR), (False, CC), (True, two[:3]), (True, two[3:30]), (True, two[30:])]
    )
    assert not anomalies
    assert [(m.function, m.pcap_cnt) for m in s7_messages(msgs)] == [(0xF0, 7), (0x04, 8)]


def test_cotp_data_units_are_reassembled_into_one_pdu() -> None:
    pdu = s7(1, 9, READ_DB)
    segments = [(True, dt(pdu[:5], eot=False)), (True, dt(b"", eot=False)), (True, dt(pdu[5:20], eot=False)),
                (True, dt(pdu[20:]))]  # fmt: skip
    msgs, anomalies, _ = decode(segments)
    assert not anomalies
    assert len(msgs) == 1 and msgs[0].pcap_cnt == 7 and msgs[0].fields["item_count"] == 2


def test_segment_after_a_hole_is_decoded_at_once() -> None:
    # Captures filtered to S7 packets lose the segments in between: resume at the next TPKT header.
    packets = factory.tcp_stream([(True, job(SETUP)), (True, job(READ_DB, 2)), (True, job(READ_DB, 3))],
                                 dport=102)  # fmt: skip
    del packets[4]
    msgs, anomalies, pipeline = factory.decode(packets)
    assert [m.fields["pdu_ref"] for m in msgs] == [1, 3]
    assert events(anomalies) == ["stream_gap"] and pipeline.decoders.stats["s7comm"].stream_gaps == 1


def test_oversized_cotp_reassembly_is_dropped() -> None:
    chunk = dt(b"\x32" + bytes(60000), eot=False)
    msgs, anomalies, pipeline = decode([(True, job(SETUP)), (True, chunk), (True, chunk), (True, dt(b"\x00")),
                                        (True, job(READ_DB, pdu_ref=2))])  # fmt: skip
    assert events(anomalies) == ["oversize"] and pipeline.decoders.stats["s7comm"].buffer_overflows == 1
    assert [m.function for m in msgs] == [0xF0, 0x04]


def test_capture_starting_with_the_server_keeps_roles() -> None:
    msgs, _, _ = decode([(False, ack_data(SETUP)), (True, job(READ_DB, 2)), (False, ack_data(READ_ACK, 2))],
                        handshake=False)  # fmt: skip
    assert [(m.direction, m.to_server) for m in msgs] == [("response", True), ("request", False),
                                                          ("response", True)]  # fmt: skip
    assert msgs[2].request_cnt == msgs[1].pcap_cnt


# -- S7comm-plus -------------------------------------------------------------------------------------


def test_s7comm_plus_v3_requests_responses_and_notifications() -> None:
    msgs, anomalies, pipeline = decode([
        (True, CR), (False, CC),
        (True, dt(plus(3, 0x31, 0x054C, seq=0x1D))),
        (False, dt(plus(3, 0x32, 0x054C, seq=0x1D))),
        (False, dt(plus(3, 0x33, body=b"\x00\x01\x02"))),
        (True, dt(b"\x72\xff\x05\x00")),  # keep-alive
    ])  # fmt: skip
    assert not anomalies
    cr, cc, req, resp, notification, keepalive = msgs
    assert {m.protocol for m in msgs} == {"s7comm_plus"} and cc.request_cnt == cr.pcap_cnt
    assert req.fields == {"version": 3, "integrity": True, "opcode": 0x31, "opcode_name": "Request",
                          "function": 0x054C, "function_name": "GetMultiVariables", "seq_num": 0x1D,
                          "session_id": 0x70000021}  # fmt: skip
    assert (req.function, req.operation, resp.request_cnt) == (0x054C, "opaque", req.pcap_cnt)
    assert (notification.direction, notification.function, notification.request_cnt) == ("response", 0x133, 0)
    assert keepalive.fields == {"version": 0xFF, "keepalive": True} and keepalive.function == 0x1FF
    assert all(m.operation == "opaque" for m in msgs[2:])
    assert pipeline.decoders.stats["s7comm_plus"].matched == 2


def test_s7comm_plus_fragments_are_one_message_and_tls_is_opaque() -> None:
    whole = plus(2, 0x31, 0x04CA, seq=3, body=bytes(300))
    first, second = whole[:150], b"\x72\x02" + struct.pack("!H", len(whole) - 150 - 4) + whole[150:]
    first = b"\x72\x02" + struct.pack("!H", len(first) - 4) + first[4:]  # a part without trailer
    msgs, anomalies, _ = decode([(True, dt(first)), (True, dt(second)),
                                 (True, dt(b"\x17\x03\x03\x00\x20" + bytes(32)))])  # fmt: skip
    assert not anomalies
    created, tls = msgs
    assert (created.function, created.fields["fragmented"], created.pcap_cnt) == (0x04CA, True, 5)
    assert (
        tls.fields == {"encrypted": True, "length": 37, "tls_content_type": 0x17}
        and tls.operation == "opaque"
    )


def test_s7comm_plus_flow_is_named_so() -> None:
    packets = factory.tcp_stream([(True, dt(plus(1, 0x31, 0x04CA)))], dport=102)
    collector = factory.Collector()
    Pipeline(PipelineConfig(), consumers=[collector]).run(factory.ListSource(packets))
    assert collector.flows[0].app_proto == "s7comm_plus"


# -- probes and ports --------------------------------------------------------------------------------


def test_probes() -> None:
    # CR/CC alone do not tell S7 from MMS: undecided (the registry holds them) until the first DT.
    assert not s7comm.probe(CR, True) and not s7comm.probe(CC, False)
    assert s7comm.probe(CR + job(SETUP), True) and not s7comm.probe(CR + dt(b"\x0d\xb2\x05\x06"), True)
    assert s7comm.probe(connection_tpdu(0x80), False)  # refused before any data: the port's main protocol
    assert s7comm.probe(job(SETUP), True) and s7comm.probe(dt(plus(3, 0x33)), False)
    assert not s7comm.probe_any_port(CR, True)  # RDP starts with a CR too
    assert s7comm.probe_any_port(job(SETUP), True) and s7comm.probe_any_port(dt(plus(1, 0x31, 0x04CA)), True)
    assert not s7comm.probe(dt(b"\x0d\xb2\x05\x06"), True)  # ISO session (MMS)
    assert not s7comm.probe(dt(s7(9, 1, SETUP)), True)  # no such ROSCTR
    assert not s7comm.probe_any_port(dt(s7(1, 1, SETUP) + b"\x00"), True)  # lengths disagree
    assert not s7comm.probe(b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01", True)  # Modbus
    assert not s7comm.probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", True)  # TLS client hello
    rdp_cr = tpkt(b"\x0e\xe0\x00\x00\x00\x00\x00" + b"Cookie: mstshash=a\r\n")
    assert not s7comm.probe(rdp_cr, True) and not s7comm.probe_any_port(rdp_cr, True)


def test_s7_on_another_port_is_found_but_a_bare_cr_is_not() -> None:
    msgs, _, _ = decode([(True, job(SETUP)), (False, ack_data(SETUP))], dport=10102)
    assert [m.protocol for m in msgs] == ["s7comm", "s7comm"] and msgs[1].request_cnt == msgs[0].pcap_cnt
    rdp = tpkt(b"\x0e\xe0\x00\x00\x00\x00\x00" + b"Cookie: mstshash=a\r\n")
    msgs, _, _ = decode([(True, rdp), (False, connection_tpdu(0xD0))], dport=3389)
    assert not msgs
    msgs, _, _ = decode([(True, CR), (False, CC), (True, job(SETUP))], dport=1102, ports={"s7comm": (1102,)})
    assert [m.function for m in msgs] == [0x1E0, 0x1D0, 0xF0]


# -- EVE -------------------------------------------------------------------------------------------


def test_eve_objects(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    packets = factory.tcp_stream([(True, CR), (False, CC), (True, job(READ_DB)), (True, dt(plus(1, 0x31)))],
                                 dport=102)  # fmt: skip
    Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    ot = [e for e in map(json.loads, out.read_text().splitlines()) if e["event_type"] == "ot"]
    assert ot[0]["s7comm"]["tsap"]["dst_tsap"] == "0102" and ot[0]["ot"]["function"] == 0x1E0
    assert ot[2]["s7comm"]["items"][0]["db"] == 5
    assert ot[2]["ot"] == {"protocol": "s7comm", "operation": "read", "direction": "request", "function": 4}
    assert ot[3]["s7comm_plus"]["function_name"] == "CreateObject" and ot[3]["ot"]["operation"] == "opaque"


# -- robustness ------------------------------------------------------------------------------------------


class Harness:
    """The decoder with a fake flow and context, fed TCP segments directly."""

    def __init__(self, limit: int = 4096) -> None:
        self.config = DecoderConfig(max_stream_buffer=limit)
        self.messages: list[OtMessage] = []
        ctx = DecoderContext(self.config, self.messages.append, lambda a: None)
        flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 102, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
        self.decoder = s7comm.S7commDecoder(flow, ctx, True)
        self.seq = {True: 1000, False: 5000}
        self.cnt = 0

    def feed(self, segments: list[tuple[bool, bytes]]) -> None:
        for to_server, payload in segments:
            self.cnt += 1
            pkt = Packet()
            pkt.data = bytes(4) + struct.pack("!I", self.seq[to_server]) + bytes(12) + payload
            pkt.l4_off, pkt.payload_off, pkt.payload_len = 0, 20, len(payload)
            self.decoder.feed(pkt, to_server, float(self.cnt), self.cnt, 0)
            self.seq[to_server] += len(payload)
            self.check_bounds()

    def check_bounds(self) -> None:
        decoder = self.decoder
        for framer in (decoder._c2s, decoder._s2c):
            assert framer is not None and len(framer.buf) <= self.config.max_stream_buffer
        assert all(f is None or len(f) <= cotp.MAX_TSDU for f in decoder._frags)
        assert len(decoder._deferred) <= s7comm.MAX_DEFERRED


VALID_STREAM = [
    (True, CR), (False, CC), (True, job(SETUP)), (False, ack_data(SETUP)), (True, job(READ_DB, 2)),
    (False, ack_data(b"\x04\x02", 2, READ_RESP)), (True, userdata(1, 4, 1, data=szl(0x11, 0))),
    (True, job(pi_service(b"_INSE", b"\x01\x00" + b"0800001P"), 3)), (False, dt(plus(3, 0x33, body=b"\x01"))),
    (True, dt(s7(1, 4, READ_DB)[:9], eot=False) + dt(s7(1, 4, READ_DB)[9:])),
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=700)), min_size=1, max_size=10))
def test_random_streams_never_raise_and_stay_bounded(segments: list[tuple[bool, bytes]]) -> None:
    harness = Harness()
    harness.feed([(True, CR), *segments])
    harness.decoder.close("shutdown")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise(data: st.DataObject) -> None:
    harness = Harness()
    for to_server, segment in VALID_STREAM:
        frame = bytearray(segment)
        for _ in range(data.draw(st.integers(0, 4))):
            frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
        harness.feed([(to_server, bytes(frame))])
    harness.decoder.close("shutdown")
    assert len(harness.decoder.pending) == 0


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_random_payload_through_the_pipeline(payload: bytes) -> None:
    decode([(True, CR), (False, payload), (True, job(SETUP)), (True, payload)])
