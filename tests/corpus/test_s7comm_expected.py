"""S7comm and S7comm-plus against the peer outputs EXPECTED.tsv lists for their captures.

* cisagov ICSNPP s7comm (Zeek) btest baselines, icsnpp-s7comm/baseline/analyzer.s7ident and
  analyzer.s7comm_plus: one s7comm.log / s7comm_plus.log line per PDU, one cotp.log line per TPKT,
  conn.log services. Compared message by message in capture order, with two documented differences:

  - ICSNPP reads the S7comm PDU reference little-endian (``pdu_reference`` 1 for the bytes 01 00);
    Wireshark and the S7 header are big-endian, so the baseline's value is ours byte-swapped.
  - The s7ident baseline has no line for the four Ack PDUs (ROSCTR 2, error class 0xd2, code 0x41)
    that answer its four Start upload jobs (tshark frames 21, 23, 26, 29): ICSNPP logs Job,
    Ack_Data and Userdata only. We report them, as errors answering those jobs.
* nDPI's per-flow report of nDPI/s7comm.pcap: its one S7Comm flow is our one s7comm flow.
"""

from collections import Counter
from typing import Any

import pytest

from tests.corpus.expected import EXPECTED, PCAPS, ndpi_counts, zeek_log
from tests.corpus.ot_oracle import collect

pytestmark = pytest.mark.corpus

BASELINE = EXPECTED / "icsnpp-s7comm" / "baseline"
TRACES = PCAPS / "icsnpp-s7comm" / "traces"
UD_TYPE_BITS = {"push": 0, "request": 1, "response": 2}


def _client_port(flow: Any) -> int:
    return int(flow.sport if flow.dport == 102 else flow.dport)


def _is_orig(msg: Any) -> str:
    """Zeek's is_orig: sent by the client (Zeek flips a connection first seen from port 102; our
    ``to_server`` is relative to the flow's first packet)."""
    return "T" if msg.to_server == (msg.flow.dport == 102) else "F"


def _cotp_code(msg: Any) -> str:
    """ICSNPP's cotp.log pdu_code (the TPDU code's high nibble) of the TPKT carrying ``msg``."""
    return f"0x{(msg.function & 0xFF) >> 4:02x}" if "cotp" in msg.fields else "0x0f"


def _swap16(value: int) -> int:
    return (value & 0xFF) << 8 | value >> 8


def icsnpp_s7comm_line(msg: Any) -> tuple[str, ...]:
    """Our S7comm message in the shape of an ICSNPP s7comm.log line."""
    f = msg.fields
    rosctr = f["rosctr"]
    if rosctr == 7:
        function = f"0x{UD_TYPE_BITS[f['type']] << 6 | f['group']:02x}"  # the raw type/group octet
        subfunction = f"0x{f['subfunction']:02x}"
    else:
        function, subfunction = f"0x{f['function_code']:02x}", "-"
    if rosctr == 3:
        error = (f["error_class_name"], f"0x{f['error_code']:02x}")
    elif rosctr == 7 and f["type"] == "response":
        error = ("No error" if f["error_code"] == 0 else "error", f"0x{f['error_code']:02x}")
    else:
        error = ("-", "-")
    return (
        _is_orig(msg),
        str(rosctr),
        str(_swap16(f["pdu_ref"])),
        function,
        subfunction,
        *error,
    )


def expected_s7comm_lines(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    keys = ("is_orig", "rosctr_code", "pdu_reference", "function_code", "subfunction_code", "error_class",
            "error_code")  # fmt: skip
    return [tuple(row[k] for k in keys) for row in rows]


def test_s7ident_matches_icsnpp() -> None:
    collector = collect(TRACES / "s7ident.pcap")
    s7 = [m for m in collector.messages if m.protocol == "s7comm" and "rosctr" in m.fields]
    acks = [m for m in s7 if m.fields["rosctr"] == 2]
    assert [(m.fields["error_class"], m.fields["error_code"], m.operation, m.exception) for m in acks] == [
        (0xD2, 0x41, "upload", True)
    ] * 4
    assert all(m.request_cnt and m.function == 0x1D for m in acks)  # each answers its Start upload
    expected = expected_s7comm_lines(zeek_log(BASELINE / "analyzer.s7ident" / "s7comm.log"))
    assert [icsnpp_s7comm_line(m) for m in s7 if m.fields["rosctr"] != 2] == expected

    # cotp.log: the CR and CC, then one DT per S7comm PDU (none is split over several DTs here).
    cotp = Counter(
        (r["is_orig"], r["pdu_code"]) for r in zeek_log(BASELINE / "analyzer.s7ident" / "cotp.log")
    )
    ours = Counter((_is_orig(m), _cotp_code(m)) for m in collector.messages if m.protocol == "s7comm")
    assert (
        ours
        == Counter({k: v for k, v in cotp.items()})
        == Counter({("T", "0x0e"): 1, ("F", "0x0d"): 1, ("T", "0x0f"): 11, ("F", "0x0f"): 11})
    )
    cr = next(m for m in collector.messages if m.fields.get("cotp", {}).get("type") == "CR")
    assert cr.fields["tsap"] == {"src_tsap": "0100", "dst_tsap": "0101", "connection_type": "PG", "rack": 0,
                                 "slot": 1}  # fmt: skip


def test_s7comm_plus_trace_matches_icsnpp() -> None:
    collector = collect(TRACES / "s7comm_plus.pcap")
    baseline = BASELINE / "analyzer.s7comm_plus"
    conns = {row["uid"]: row for row in zeek_log(baseline / "conn.log")}
    by_port: dict[int, list[Any]] = {}
    for msg in collector.messages:
        by_port.setdefault(_client_port(msg.flow), []).append(msg)
    services = {_client_port(flow): flow.app_proto for flow in collector.flows}
    assert {int(c["id.orig_p"]): c["service"] for c in conns.values()} == {
        54670: "cotp,s7comm",
        49154: "cotp,s7comm-plus",
        49155: "-",
    }
    assert (services[54670], services[49154]) == ("s7comm", "s7comm_plus")
    assert services[49155] not in ("s7comm", "s7comm_plus")  # one keep-alive byte, no TPKT

    s7_rows = zeek_log(baseline / "s7comm.log")
    assert {r["id.orig_p"] for r in s7_rows} == {"54670"}
    s7 = [m for m in by_port[54670] if "rosctr" in m.fields]
    assert [icsnpp_s7comm_line(m) for m in s7] == expected_s7comm_lines(s7_rows)

    plus_rows = zeek_log(baseline / "s7comm_plus.log")
    assert {r["id.orig_p"] for r in plus_rows} == {"49154"}
    expected = [(r["is_orig"], r["version"], r["opcode"], r["function_code"]) for r in plus_rows]
    ours = [
        (
            _is_orig(m),
            str(m.fields["version"]),
            f"0x{m.fields['opcode']:02x}",
            f"0x{m.fields['function']:04x}" if "function" in m.fields else "-",
        )
        for m in by_port[49154]
        if m.protocol == "s7comm_plus"
    ]
    assert ours == expected
    assert all(m.operation == "opaque" for m in by_port[49154])

    # cotp.log: one line per TPKT; every TPKT of these connections is one whole PDU or a CR/CC.
    cotp = Counter((r["id.orig_p"], r["is_orig"], r["pdu_code"]) for r in zeek_log(baseline / "cotp.log"))
    ours_cotp = Counter(
        (
            str(port),
            _is_orig(m),
            _cotp_code(m),
        )
        for port, msgs in by_port.items()
        for m in msgs
    )
    assert ours_cotp == cotp


NDPI_CAPTURE = PCAPS / "nDPI" / "s7comm.pcap"
NDPI_REPORT = EXPECTED / "nDPI" / "s7comm.pcap.out"


def test_ndpi_s7comm_flow_is_ours() -> None:
    if not NDPI_REPORT.exists():
        pytest.skip("corpus not available")
    expected = {(str(sport), str(dport)) for _, sport, _, dport in ndpi_counts(NDPI_REPORT, "S7Comm")}
    assert expected == {("4185", "102")}
    collector = collect(NDPI_CAPTURE)
    assert {(str(f.sport), str(f.dport)) for f in collector.flows if f.app_proto == "s7comm"} == expected
