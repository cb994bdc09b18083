"""IEC 61850 MMS decoder: OSI upper layers, MMS PDUs and services, pairing, classes, probes, robustness.

Traffic is built here from the specifications (ISO 8327 session SPDUs, ISO 8823 presentation PPDUs,
ISO 8650 ACSE APDUs and ISO 9506-2 MMS PDUs, BER-encoded by the small helpers below).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders import cotp, mms, s7comm
from agent.decoders.base import OPERATIONS, DecoderConfig, DecoderContext, OtMessage
from agent.dissect import Packet
from agent.flows import Flow
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig
from tests import factory

# -- BER and the layers, from the specifications ---------------------------------------------------


def tlv(tag: int | bytes, *content: bytes) -> bytes:
    """A BER element with a definite length (short or long form)."""
    body = b"".join(content)
    head = tag if isinstance(tag, bytes) else bytes([tag])
    n = len(body)
    if n < 0x80:
        return head + bytes([n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return head + bytes([0x80 | len(size)]) + size + body


def ctx(number: int, *content: bytes, constructed: bool = True) -> bytes:
    """A context-specific element [number], in the high-tag form above 30."""
    first = (0xA0 if constructed else 0x80) | min(number, 0x1F)
    return tlv(bytes([first]) if number < 0x1F else bytes([first | 0x1F, number]), *content)


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def vstring(text: str, tag: int = 0x1A) -> bytes:
    return tlv(tag, text.encode())


def domain_name(domain: str, item: str) -> bytes:
    return ctx(1, vstring(domain), vstring(item))


def vmd_name(item: str) -> bytes:
    return ctx(0, item.encode(), constructed=False)


def list_of_variable(*names: bytes) -> bytes:
    return ctx(0, *(tlv(0x30, ctx(0, name)) for name in names))


def confirmed_request(invoke: int, service: bytes) -> bytes:
    return ctx(0, integer(invoke), service)


def confirmed_response(invoke: int, service: bytes) -> bytes:
    return ctx(1, integer(invoke), service)


READ = ctx(4, ctx(1, list_of_variable(domain_name("IED1LD0", "MMXU1$MX$TotW"), vmd_name("x"))))
READ_RESPONSE = ctx(4, ctx(1, ctx(5, b"\x2a", constructed=False), ctx(0, b"\x0a", constructed=False)))
WRITE = ctx(
    5,
    list_of_variable(domain_name("IED1LD0", "CSWI1$CO$Pos$Oper")),
    ctx(0, ctx(3, b"\x01", constructed=False)),
)
WRITE_RESPONSE = ctx(5, ctx(1, constructed=False))
IDENTIFY = ctx(2, constructed=False)
IDENTIFY_RESPONSE = ctx(2, ctx(0, b"ACME", constructed=False), ctx(1, b"Relay 7", constructed=False),
                        ctx(2, b"4.2.1", constructed=False))  # fmt: skip
GET_NAME_LIST = ctx(1, ctx(0, ctx(0, b"\x09", constructed=False)), ctx(1, ctx(0, constructed=False)))
INITIATE_REQUEST = ctx(8, ctx(0, b"\x7d\x00", constructed=False), ctx(1, b"\x05", constructed=False),
                       ctx(2, b"\x05", constructed=False),
                       ctx(4, ctx(0, b"\x01", constructed=False)))  # fmt: skip
INITIATE_RESPONSE = ctx(9, ctx(1, b"\x05", constructed=False), ctx(2, b"\x05", constructed=False),
                        ctx(4, ctx(0, b"\x01", constructed=False)))  # fmt: skip
CONCLUDE_REQUEST = ctx(11, constructed=False)
CONCLUDE_RESPONSE = ctx(12, constructed=False)
REPORT = ctx(
    3, ctx(0, ctx(1, vmd_name("RPT")), ctx(0, vstring("LLN0$BR$brcb01"), ctx(4, b"\x00", constructed=False)))
)


def service_error(error_class: int, code: int) -> bytes:
    return ctx(0, ctx(error_class, bytes([code]), constructed=False))


def pdv(apdu: bytes, context_id: int = 3) -> bytes:
    """Presentation fully-encoded user data: one PDV list, single-ASN1-type."""
    return tlv(0x61, tlv(0x30, integer(context_id), ctx(0, apdu)))


def external(apdu: bytes) -> bytes:
    """ACSE user information: one EXTERNAL with indirect reference 3 (MMS) and the PDU."""
    return ctx(30, tlv(0x28, integer(3), ctx(0, apdu)))


MMS_CONTEXT = tlv(0x06, b"\x28\xca\x22\x02\x03")  # 1.0.9506.2.3


def aarq(apdu: bytes) -> bytes:
    return tlv(0x60, ctx(0, b"\x07\x80", constructed=False), ctx(1, MMS_CONTEXT), external(apdu))


def aare(apdu: bytes, result: int = 0) -> bytes:
    return tlv(0x61, ctx(1, MMS_CONTEXT), ctx(2, integer(result)), external(apdu))


def spdu(code: int, *parameters: bytes) -> bytes:
    body = b"".join(parameters)
    return (
        bytes([code, len(body)]) + body
        if len(body) < 0xFF
        else bytes([code, 0xFF]) + struct.pack("!H", len(body)) + body
    )


def user_data(ppdu: bytes) -> bytes:
    return (
        bytes([193, len(ppdu)]) + ppdu
        if len(ppdu) < 0xFF
        else bytes([193, 0xFF]) + struct.pack("!H", len(ppdu)) + ppdu
    )


def cp(apdu: bytes) -> bytes:
    """Presentation CP-type: mode normal, normal-mode parameters with the context list and user data."""
    contexts = ctx(
        4, tlv(0x30, integer(1), tlv(0x06, b"\x52\x01\x00\x01")), tlv(0x30, integer(3), MMS_CONTEXT)
    )
    return tlv(0x31, ctx(0, ctx(0, b"\x01", constructed=False)), ctx(2, contexts, pdv(aarq(apdu), 1)))


def cpa(apdu: bytes) -> bytes:
    return tlv(0x31, ctx(0, ctx(0, b"\x01", constructed=False)), ctx(2, pdv(aare(apdu), 1)))


def dt(data: bytes, eot: bool = True) -> bytes:
    return cotp_tpkt(bytes([2, 0xF0, 0x80 if eot else 0x00]) + data)


def cotp_tpkt(tpdu: bytes) -> bytes:
    return struct.pack("!BBH", 3, 0, 4 + len(tpdu)) + tpdu


def connect(apdu: bytes = INITIATE_REQUEST) -> bytes:
    return dt(spdu(13, b"\x05\x06\x13\x01\x00\x16\x01\x02", b"\x14\x02\x00\x02", user_data(cp(apdu))))


def accept(apdu: bytes = INITIATE_RESPONSE) -> bytes:
    return dt(spdu(14, b"\x05\x06\x13\x01\x00\x16\x01\x02", b"\x14\x02\x00\x02", user_data(cpa(apdu))))


def data(apdu: bytes) -> bytes:
    """GIVE TOKENS + DATA TRANSFER, then the presentation user data."""
    return dt(b"\x01\x00\x01\x00" + pdv(apdu))


def cr() -> bytes:
    return cotp_tpkt(b"\x11\xe0\x00\x00\x00\x01\x00\xc0\x01\x0a\xc1\x02\x00\x01\xc2\x02\x00\x01")


def cc() -> bytes:
    return cotp_tpkt(b"\x11\xd0\x00\x01\x00\x02\x00\xc0\x01\x0a\xc1\x02\x00\x01\xc2\x02\x00\x01")


ASSOCIATION = [(True, cr()), (False, cc()), (True, connect()), (False, accept())]


def decode(segments: list[tuple[bool, bytes]], dport: int = 102, **kwargs: Any):
    return factory.decode(factory.tcp_stream(segments, dport=dport, **kwargs))


def mms_messages(msgs: list[OtMessage]) -> list[OtMessage]:
    return [m for m in msgs if m.protocol == "mms" and "pdu" in m.fields]


def events(anomalies: list) -> list[str]:
    return [a.fields["anomaly"]["event"] for a in anomalies]


# -- association and services ----------------------------------------------------------------------


def test_association_through_every_layer() -> None:
    msgs, anomalies, _ = decode(ASSOCIATION)
    assert not anomalies
    assert [(m.fields.get("cotp", {}).get("type"), m.function, m.direction) for m in msgs] == [
        ("CR", 0x1E0, "request"), ("CC", 0x1D0, "response"), (None, 0x108, "request"),
        (None, 0x109, "response"),
    ]  # fmt: skip
    request, response = msgs[2:]
    assert request.fields["session"] == {"spdu": "CN"} and response.fields["session"] == {"spdu": "AC"}
    assert request.fields["acse"] == {"apdu": "AARQ", "application_context": "1.0.9506.2.3"}
    assert response.fields["acse"]["result"] == 0 and request.fields["pres_context_id"] == 1
    assert request.fields["pdu_type"] == "initiate-RequestPDU" and request.fields["version"] == 1
    assert request.fields["local_detail"] == 32000 and request.fields["max_serv_outstanding_calling"] == 5
    assert response.request_cnt == request.pcap_cnt and response.operation == "session"


def test_read_request_and_response_pair_by_invoke_id() -> None:
    msgs, anomalies, _ = decode([*ASSOCIATION, (True, data(confirmed_request(7, READ))),
                                 (False, data(confirmed_response(7, READ_RESPONSE)))])  # fmt: skip
    assert not anomalies
    read, answer = mms_messages(msgs)[2:]
    assert (read.function, read.operation, read.direction) == (4, "read", "request")
    assert read.fields == {
        "pres_context_id": 3, "pdu": 0, "pdu_type": "confirmed-RequestPDU", "invoke_id": 7, "service": 4,
        "service_name": "read", "variable_count": 2, "domain_id": "IED1LD0", "item_id": "MMXU1$MX$TotW",
    }  # fmt: skip
    assert (answer.function, answer.operation, answer.request_cnt) == (4, "read", read.pcap_cnt)
    assert answer.fields["result_count"] == 2 and answer.fields["failure_count"] == 1
    assert answer.latency_s == pytest.approx(0.01)


def test_write_of_a_control_object() -> None:
    msgs, _, _ = decode([*ASSOCIATION, (True, data(confirmed_request(8, WRITE))),
                         (False, data(confirmed_response(8, WRITE_RESPONSE)))])  # fmt: skip
    write, answer = mms_messages(msgs)[2:]
    assert (write.operation, write.fields["item_id"], write.fields["variable_count"]) == (
        "write", "CSWI1$CO$Pos$Oper", 1)  # fmt: skip
    assert answer.operation == "write" and answer.fields["failure_count"] == 0


def test_identify_response_carries_the_device_identity() -> None:
    msgs, _, _ = decode([*ASSOCIATION, (True, data(confirmed_request(1, IDENTIFY))),
                         (False, data(confirmed_response(1, IDENTIFY_RESPONSE)))])  # fmt: skip
    request, response = mms_messages(msgs)[2:]
    assert request.operation == "discovery" and "identity" not in request.fields
    assert response.fields["identity"] == {"vendor": "ACME", "model": "Relay 7", "revision": "4.2.1"}
    assert response.to_server is False


def test_get_name_list_fields() -> None:
    msgs, _, _ = decode([(True, data(confirmed_request(2, GET_NAME_LIST)))])
    (request,) = mms_messages(msgs)
    assert (request.operation, request.fields["object_class"], request.fields["object_scope"]) == (
        "discovery", "domain", "vmd")  # fmt: skip


def test_information_report_is_an_unsolicited_read() -> None:
    msgs, anomalies, _ = decode([(False, data(REPORT))])
    assert not anomalies
    (report,) = mms_messages(msgs)
    assert (report.function, report.direction, report.operation, report.request_cnt) == (
        0x200,
        "response",
        "read",
        0,
    )
    assert report.fields["service_name"] == "informationReport"
    assert report.fields["variable_list_name"] == "RPT" and report.fields["result_count"] == 2


def test_confirmed_error_answers_its_request_with_an_exception() -> None:
    error = ctx(2, ctx(0, b"\x09", constructed=False), ctx(2, service_error(7, 3)))
    msgs, _, _ = decode([(True, data(confirmed_request(9, WRITE))), (False, data(error))])
    request, answer = mms_messages(msgs)
    assert (answer.function, answer.exception, answer.operation, answer.request_cnt) == (
        0x102, True, "write", request.pcap_cnt)  # fmt: skip
    assert answer.fields["error_class"] == "access" and answer.fields["error_code"] == 3
    assert answer.fields["service_name"] == "write"


def test_reject_of_a_confirmed_request() -> None:
    reject = ctx(4, ctx(0, b"\x05", constructed=False), ctx(1, b"\x01", constructed=False))
    msgs, _, _ = decode([(True, data(confirmed_request(5, READ))), (False, data(reject))])
    request, answer = mms_messages(msgs)
    assert (answer.function, answer.exception, answer.request_cnt) == (0x104, True, request.pcap_cnt)
    assert answer.fields["reject_pdu"] == "confirmed-requestPDU" and answer.fields["reject_code"] == 1


def test_cancel_pairs_by_the_invoke_id_it_names() -> None:
    cancel, cancelled = ctx(5, b"\x05", constructed=False), ctx(6, b"\x05", constructed=False)
    msgs, _, _ = decode([(True, data(cancel)), (False, data(cancelled))])
    request, answer = mms_messages(msgs)
    assert (request.function, answer.function, answer.request_cnt) == (0x105, 0x106, request.pcap_cnt)
    assert request.operation == "session" and request.fields["invoke_id"] == 5


def test_requests_from_both_sides_do_not_collide() -> None:
    # ICCP, and a VMD's DownloadSegment requests: both peers send confirmed requests with invoke id 1.
    segment = ctx(27, b"LD1", constructed=False)
    msgs, _, _ = decode([(True, data(confirmed_request(1, READ))),
                         (False, data(confirmed_request(1, segment))),
                         (True, data(confirmed_response(1, ctx(27, ctx(0, b"\x00", constructed=False))))),
                         (False, data(confirmed_response(1, READ_RESPONSE)))])  # fmt: skip
    read, download, download_answer, read_answer = mms_messages(msgs)
    assert download.operation == "program" and download.fields["domain_id"] == "LD1"
    assert download_answer.request_cnt == download.pcap_cnt and download_answer.operation == "program"
    assert read_answer.request_cnt == read.pcap_cnt and read_answer.operation == "read"


def test_release_through_session_finish_and_disconnect() -> None:
    rlrq = tlv(0x62, ctx(0, b"\x00", constructed=False), external(CONCLUDE_REQUEST))
    rlre = tlv(0x63, ctx(0, b"\x00", constructed=False), external(CONCLUDE_RESPONSE))
    msgs, anomalies, _ = decode([(True, dt(spdu(9, user_data(pdv(rlrq, 1))))),
                                 (False, dt(spdu(10, user_data(pdv(rlre, 1)))))])  # fmt: skip
    assert not anomalies
    request, response = mms_messages(msgs)
    assert (request.function, response.function, response.request_cnt) == (0x10B, 0x10C, request.pcap_cnt)
    assert (
        request.fields["acse"] == {"apdu": "RLRQ", "reason": 0} and request.fields["session"]["spdu"] == "FN"
    )


def test_refused_session_and_rejected_association() -> None:
    refuse = dt(spdu(12, b"\x32\x01\x02"))  # reason code 2
    msgs, _, _ = decode([(True, connect()), (False, refuse)])
    request, answer = [m for m in msgs if m.protocol == "mms"]
    assert (answer.function, answer.exception, answer.request_cnt) == (0x80C, True, request.pcap_cnt)
    assert answer.fields["session"] == {"spdu": "RF", "reason": 2}
    rejected = dt(
        spdu(14, user_data(tlv(0x31, ctx(2, pdv(tlv(0x61, ctx(1, MMS_CONTEXT), ctx(2, integer(1))), 1)))))
    )
    msgs, _, _ = decode([(True, connect()), (False, rejected)])
    answer = msgs[-1]
    assert (answer.function, answer.exception, answer.fields["acse"]["result"]) == (0x401, True, 1)


def test_bare_mms_on_cotp() -> None:
    # Some implementations put MMS straight into COTP data, without session and presentation.
    msgs, _, _ = decode(
        [(True, cr()), (True, dt(INITIATE_REQUEST)), (True, dt(confirmed_request(3, IDENTIFY)))]
    )
    assert [m.function for m in mms_messages(msgs)] == [0x108, 2]


def test_high_tag_services() -> None:
    file_open = ctx(72, ctx(0, vstring("COMTRADE/fault1.cfg", 0x19)), ctx(1, b"\x00", constructed=False))
    obtain = ctx(46, ctx(1, vstring("cfg.cid", 0x19)), ctx(2, vstring("/tmp/cfg.cid", 0x19)))
    file_delete = ctx(76, vstring("old.bin", 0x19))
    msgs, anomalies, _ = decode([(True, data(confirmed_request(1, file_open))),
                                 (True, data(confirmed_request(2, obtain))),
                                 (True, data(confirmed_request(3, file_delete)))])  # fmt: skip
    assert not anomalies
    opened, obtained, deleted = mms_messages(msgs)
    assert (opened.function, opened.operation, opened.fields["file_name"]) == (
        72,
        "file",
        "COMTRADE/fault1.cfg",
    )
    assert (obtained.fields["file_name"], obtained.fields["destination_file"]) == ("cfg.cid", "/tmp/cfg.cid")
    assert deleted.fields["file_name"] == "old.bin"


def test_named_variable_lists() -> None:
    define = ctx(
        11, domain_name("LD0", "LLN0$DS1"), list_of_variable(domain_name("LD0", "A"), domain_name("LD0", "B"))
    )
    delete = ctx(13, ctx(1, domain_name("LD0", "LLN0$DS1")))
    attributes = ctx(12, domain_name("LD0", "LLN0$DS1"))
    msgs, _, _ = decode([(True, data(confirmed_request(1, define))),
                         (True, data(confirmed_request(2, delete))),
                         (True, data(confirmed_request(3, attributes)))])  # fmt: skip
    defined, deleted, described = mms_messages(msgs)
    assert (defined.operation, defined.fields["variable_list_name"], defined.fields["variable_count"]) == (
        "config", "LD0/LLN0$DS1", 2)  # fmt: skip
    assert (deleted.operation, deleted.fields["variable_list_name"]) == ("config", "LD0/LLN0$DS1")
    assert described.operation == "discovery"


@pytest.mark.parametrize(("service", "operation"), [
    (0, "diagnostic"), (1, "discovery"), (2, "discovery"), (4, "read"), (5, "write"), (6, "discovery"),
    (11, "config"), (12, "discovery"), (13, "config"), (19, "session"), (26, "program"), (29, "upload"),
    (36, "program"), (40, "mode"), (41, "mode"), (43, "mode"), (52, "operate"), (62, "operate"), (63, "read"),
    (72, "file"), (73, "file"), (77, "file"), (46, "file"),
])  # fmt: skip
def test_operation_classes(service: int, operation: str) -> None:
    msgs, _, _ = decode([(True, data(confirmed_request(1, ctx(service, constructed=False))))])
    (request,) = mms_messages(msgs)
    assert (request.function, request.operation) == (service, operation)


def test_every_service_has_a_known_operation_class() -> None:
    assert set(mms.SERVICE_OPERATION) == set(mms.SERVICE_NAMES) == set(range(78))
    assert set(mms.SERVICE_OPERATION.values()) <= OPERATIONS


# -- anomalies -------------------------------------------------------------------------------------


def test_element_running_past_its_container_is_an_anomaly() -> None:
    bad = b"\x01\x00\x01\x00" + b"\x61\x08\x30\x06\x02\x01\x03\xa0\x7f\xa0"
    msgs, anomalies, _ = decode([(True, dt(bad))])
    assert not mms_messages(msgs) and events(anomalies) == ["bad_length"]


def test_indefinite_length_and_unknown_pdu_and_service() -> None:
    indefinite = b"\x01\x00\x01\x00" + b"\x61\x80\x30\x06\x02\x01\x03\xa0\x01\x00\x00\x00"
    unknown_pdu = ctx(14, b"\x00", constructed=False)
    unknown_service = confirmed_request(1, ctx(90, constructed=False))
    msgs, anomalies, _ = decode(
        [(True, dt(indefinite)), (True, data(unknown_pdu)), (True, data(unknown_service))]
    )
    assert events(anomalies) == ["bad_length", "unknown_pdu", "unknown_service"]
    (request,) = mms_messages(msgs)
    assert (request.function, request.operation, request.fields["service_name"]) == (90, "unknown", "unknown")


def test_session_length_beyond_the_tsdu() -> None:
    msgs, anomalies, _ = decode([*ASSOCIATION, (True, dt(b"\x0d\x40\x05\x06"))])
    assert len(msgs) == 4 and events(anomalies) == ["bad_length"]


def test_broken_service_details_still_report_the_service() -> None:
    broken_read = ctx(4, ctx(1, ctx(0, tlv(0x30, ctx(0, ctx(7, b""))))))  # an object name with tag [7]
    msgs, anomalies, _ = decode([(True, data(confirmed_request(4, broken_read)))])
    (request,) = mms_messages(msgs)
    assert request.operation == "read" and events(anomalies) == ["bad_pdu"]


# -- probes and the shared port --------------------------------------------------------------------


def test_probes_tell_mms_from_s7comm() -> None:
    s7_job = dt(b"\x32\x01\x00\x00\x00\x01\x00\x08\x00\x00\xf0\x00\x00\x01\x00\x01\x01\xe0")
    assert mms.probe(cr() + connect(), True) and mms.probe(data(confirmed_request(1, READ)), True)
    assert mms.probe(dt(INITIATE_REQUEST), True)  # bare MMS
    assert not mms.probe(cr(), True) and not mms.probe(cc(), False)  # undecided: held by the registry
    assert not mms.probe(s7_job, True) and not mms.probe(cr() + s7_job, True)
    assert s7comm.probe(cr() + s7_job, True)
    for mms_data in (connect(), accept(), data(REPORT), dt(INITIATE_REQUEST)):
        assert not s7comm.probe(mms_data, True) and not s7comm.probe_any_port(mms_data, True)
    assert not mms.probe(b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01", True)  # Modbus
    assert not mms.probe(dt(b"\x0d\x40\x05\x06"), True)  # session length beyond the data


def test_split_connect_is_recognised_by_its_first_part() -> None:
    whole = cr() + connect()
    head = whole[: len(cr()) + 20]
    first_dt_part = dt(
        spdu(13, b"\x05\x06\x13\x01\x00\x16\x01\x02", user_data(cp(INITIATE_REQUEST)))[:30], eot=False
    )
    assert mms.probe(cr() + first_dt_part, True) and mms.probe(head, True)


@pytest.mark.parametrize("split_headers", [False, True])
def test_connection_starting_with_cr_is_named_by_its_first_data(split_headers: bool) -> None:
    def segments(stream: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
        if not split_headers:
            return stream
        # Each TPKT header in a segment of its own, as some stacks send it: six packets before the DT.
        return [part for side, payload in stream for part in ((side, payload[:4]), (side, payload[4:]))]

    s7_setup = dt(b"\x32\x01\x00\x00\x00\x01\x00\x08\x00\x00\xf0\x00\x00\x01\x00\x01\x01\xe0")
    for stream, name in ((ASSOCIATION, "mms"), ([(True, cr()), (False, cc()), (True, s7_setup)], "s7comm")):
        collector = factory.Collector()
        packets = factory.tcp_stream(segments(stream), dport=102)
        Pipeline(PipelineConfig(), consumers=[collector]).run(factory.ListSource(packets))
        assert collector.flows[0].app_proto == name
        assert [m.fields["cotp"]["type"] for m in collector.messages[:2]] == ["CR", "CC"]
        assert {m.protocol for m in collector.messages} == {name}


def test_connection_with_no_data_keeps_the_port_name() -> None:
    # CR and CC alone cannot tell S7comm from MMS: no decoder claims the connection (a refusal, DR,
    # is S7's: tests/decoders/test_s7comm.py).
    collector = factory.Collector()
    packets = factory.tcp_stream([(True, cr()), (False, cc())], dport=102)
    Pipeline(PipelineConfig(), consumers=[collector]).run(factory.ListSource(packets))
    assert collector.flows[0].app_proto == "iso-tsap" and not collector.messages


# -- EVE -------------------------------------------------------------------------------------------


def test_eve_object(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    identify = [
        (True, data(confirmed_request(1, IDENTIFY))),
        (False, data(confirmed_response(1, IDENTIFY_RESPONSE))),
    ]
    packets = factory.tcp_stream([*ASSOCIATION, *identify], dport=102)
    Pipeline(PipelineConfig(events=EVENTS_ALL), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    ot = [e for e in map(json.loads, out.read_text().splitlines()) if e["event_type"] == "ot"]
    assert [e["app_proto"] for e in ot] == ["mms"] * 6
    assert ot[-1]["mms"]["identity"]["vendor"] == "ACME" and ot[-1]["ot"]["operation"] == "discovery"
    assert ot[-1]["ot"]["request_pcap_cnt"] == ot[-2]["pcap_cnt"]


# -- robustness ------------------------------------------------------------------------------------


class Harness:
    """The decoder with a fake flow and context, fed TCP segments directly."""

    def __init__(self, limit: int = 4096) -> None:
        self.config = DecoderConfig(max_stream_buffer=limit, max_pending=64)
        self.messages: list[OtMessage] = []
        context = DecoderContext(self.config, self.messages.append, lambda a: None)
        flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 102, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
        self.decoder = mms.MmsDecoder(flow, context, True)
        self.seq = {True: 1000, False: 5000}
        self.cnt = 0

    def feed(self, segments: list[tuple[bool, bytes]]) -> None:
        for to_server, payload in segments:
            self.cnt += 1
            pkt = Packet()
            pkt.data = bytes(4) + struct.pack("!I", self.seq[to_server]) + bytes(12) + payload
            pkt.l4_off, pkt.payload_off, pkt.payload_len = 0, 20, len(payload)
            self.seq[to_server] = (self.seq[to_server] + len(payload)) & 0xFFFFFFFF
            self.decoder.feed(pkt, to_server, float(self.cnt), self.cnt, 0)
            self.check_bounds()

    def check_bounds(self) -> None:
        decoder = self.decoder
        for framer in (decoder._c2s, decoder._s2c):
            assert framer is not None and len(framer.buf) <= self.config.max_stream_buffer
        assert all(f is None or len(f) <= cotp.MAX_TSDU for f in decoder._frags)
        assert len(decoder.pending) <= self.config.max_pending
        assert all(m.operation in OPERATIONS for m in self.messages)


NAME_LIST_TSDU = b"\x01\x00\x01\x00" + pdv(confirmed_request(2, GET_NAME_LIST))
VALID_STREAM = [
    *ASSOCIATION, (True, data(confirmed_request(7, READ))),
    (False, data(confirmed_response(7, READ_RESPONSE))),
    (True, data(confirmed_request(8, WRITE))), (False, data(REPORT)),
    (False, data(confirmed_response(1, IDENTIFY_RESPONSE))), (True, data(CONCLUDE_REQUEST)),
    (True, dt(NAME_LIST_TSDU[:13], eot=False) + dt(NAME_LIST_TSDU[13:])),  # two DTs, one TSDU
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=700)), min_size=1, max_size=10))
def test_random_streams_never_raise_and_stay_bounded(segments: list[tuple[bool, bytes]]) -> None:
    harness = Harness()
    harness.feed([(True, cr()), *segments])
    harness.decoder.close("shutdown")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_frames_never_raise(draw: st.DataObject) -> None:
    harness = Harness()
    for to_server, segment in VALID_STREAM:
        frame = bytearray(segment)
        for _ in range(draw.draw(st.integers(0, 4))):
            frame[draw.draw(st.integers(0, len(frame) - 1))] = draw.draw(st.integers(0, 255))
        harness.feed([(to_server, bytes(frame))])
    harness.decoder.close("shutdown")
    assert len(harness.decoder.pending) == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_random_tsdus_never_raise(tsdu: bytes) -> None:
    # Straight into the upper layers, past the COTP framing: session, presentation, ACSE, MMS.
    harness = Harness()
    harness.feed([(True, dt(tsdu)), (False, dt(b"\x01\x00\x01\x00" + tsdu)), (True, dt(b"\xa0" + tsdu))])
    assert mms.probe(dt(tsdu), True) in (True, False)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x03\x00", b"\x03\x00\x00\x20\x02\xf0\x80"]))
def test_probes_never_raise_on_any_first_payload(tail: bytes, head: bytes) -> None:
    # The registry runs both port-102 probes on whatever a new connection sends first.
    for sample in (head + tail, cr() + head + tail):
        assert mms.probe(sample, True) in (True, False)
        assert s7comm.probe(sample, True) in (True, False)
        assert cotp.first_data_tpdu(sample) < len(sample)


def test_the_valid_stream_decodes_without_anomalies() -> None:
    # The mutation test's starting point is itself clean (so mutations are what it exercises).
    anomalies: list[object] = []
    context = DecoderContext(DecoderConfig(), lambda m: None, anomalies.append)
    flow = Flow((b"\xc0\x00\x02\x0a", b"\xc0\x00\x02\x14", 40000, 102, 6, ()), 1, 4, 0.0, 1, 0, 60.0)
    decoder = mms.MmsDecoder(flow, context, True)
    seq = {True: 1000, False: 5000}
    for to_server, payload in VALID_STREAM:
        decoder.feed_segment(to_server, seq[to_server], payload, 1.0, 1, 0)
        seq[to_server] += len(payload)
    assert anomalies == []
