"""S7comm and S7comm-plus, frame by frame, against tshark (see ot_oracle).

S7comm: each PDU is compared as one code combining what tshark shows of it: ROSCTR << 16, plus the
parameter function code for Job and Ack_Data, or (function group << 8 | subfunction) for Userdata.
tshark 4.0 splits the userdata type/group octet 4:4 (type 4 = request, 8 = response, 0 = push,
group in the low nibble) where current Wireshark, and our decoder, split it 2:6 (NC programming is
group 0x3f); the low nibble of our group is tshark's group. A mode-transition indication has its
mode in ``s7comm.param.modetrans.subfunc`` instead of ``s7comm.param.userdata.subfunc``. COTP
connection TPDUs are not S7comm PDUs and are left out.

S7comm-plus: tshark 4.0 has no S7comm-plus dissector (``tshark -G fields`` lists no
``s7comm-plus.*`` field), so tshark cannot give opcode or function. It does reassemble TCP and COTP
and hands the S7comm-plus PDU on as undissected ``data``: the comparison takes the opcode from those
bytes (after the V3 integrity part), which checks our framing, COTP reassembly and frame
attribution against tshark's, and our opcodes against the bytes. S7comm-plus also fragments a PDU
over several TSDUs of its own (a part without trailer is continued by the next one); we report
such a PDU once, at its last part, with the first part's opcode, and so does ``PlusOpcodes``. The
function codes are checked against cisagov ICSNPP's s7comm_plus.log in test_s7comm_expected.py.
"""

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import (
    CORPUS,
    Comparison,
    assert_agreement,
    captures_with,
    compare_protocol,
    our_messages,
    tshark_fields,
)

pytestmark = pytest.mark.corpus

FIELDS = [
    "s7comm.header.rosctr",
    "s7comm.param.func",
    "s7comm.param.userdata.funcgroup",
    "s7comm.param.userdata.subfunc",
    "s7comm.param.modetrans.subfunc",
]


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def s7comm_codes(values: list[str]) -> list[int]:
    """One code per S7comm PDU of the frame, walking tshark's per-field occurrence lists in order."""
    if not values:
        return []
    rosctrs, funcs, groups, subfuncs, modes = (_split(v) for v in values)
    codes = []
    for rosctr in (int(r) for r in rosctrs):
        code = rosctr << 16
        if (rosctr == 1 or rosctr == 3) and funcs:
            code |= int(funcs.pop(0), 16)
        elif rosctr == 7 and groups:
            group = int(groups.pop(0))
            subfunc = modes.pop(0) if group == 0 and modes else subfuncs.pop(0) if subfuncs else "0"
            code |= group << 8 | int(subfunc, 0)
        codes.append(code)
    return codes


def our_s7comm_code(msg: OtMessage) -> int | None:
    fields = msg.fields
    rosctr = fields.get("rosctr")
    if rosctr is None:  # a COTP connection TPDU
        return None
    code = rosctr << 16
    if rosctr == 7:
        return code | (fields["group"] & 0x0F) << 8 | fields["subfunction"]
    if rosctr == 1 or rosctr == 3:
        return code | fields.get("function_code", 0)
    return code


def test_s7comm_codes_match_tshark() -> None:
    captures = captures_with("S7COMM")
    if not captures:
        pytest.skip("corpus not available")
    result = compare_protocol("s7comm", captures, "s7comm", s7comm_codes, our_code=our_s7comm_code,
                              tshark_field_names=FIELDS)  # fmt: skip
    assert_agreement(result)


class PlusOpcodes:
    """Opcodes of the S7comm-plus PDUs tshark leaves undissected after COTP (``data.data``, hex).

    S7comm-plus fragments a PDU over several TSDUs of its own: a part without the 4-byte trailer is
    continued by the next part from the same side, and only the first part has the opcode. This
    follows the s7comm_plus dissector's state machine per TCP stream and side, so it needs the
    frames of one capture in order.
    """

    fields = ("tcp.stream", "tcp.srcport", "data.data")

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], int] = {}  # opcode of a PDU whose last part is still to come

    def __call__(self, values: list[str]) -> list[int]:
        if not values:
            return []
        side = (values[0], values[1])
        opcodes = []
        for hexdata in _split(values[2]):
            pdu = bytes.fromhex(hexdata)
            if len(pdu) < 4 or pdu[0] != 0x72:
                continue
            if pdu[1] == 0xFF:
                opcodes.append(0xFF)
                continue
            last = len(pdu) > 4 + int.from_bytes(pdu[2:4], "big")
            opcode = self.first.pop(side, None)
            if opcode is None:
                opcode = pdu[5 + pdu[4] if pdu[1] == 3 else 4]
            if last:
                opcodes.append(opcode)
            else:
                self.first[side] = opcode
        return opcodes


def our_plus_opcode(msg: OtMessage) -> int | None:
    if "cotp" in msg.fields:
        return None
    if msg.fields.get("keepalive"):
        return 0xFF
    return msg.fields.get("opcode")


def test_s7comm_plus_opcodes_match_the_bytes_tshark_reassembles() -> None:
    captures = captures_with("S7COMM-PLUS")
    if not captures:
        pytest.skip("corpus not available")
    result = Comparison("s7comm_plus")
    for capture in captures:
        one = compare_protocol("s7comm_plus", [capture], "cotp && data", PlusOpcodes(),
                               our_code=our_plus_opcode, tshark_field_names=PlusOpcodes.fields)  # fmt: skip
        result.total += one.total
        result.agreed += one.agreed
        result.disagreements.update(one.disagreements)
    assert_agreement(result)


# Every operation class DOMAIN.md section 5 gives S7comm that occurs in the corpus, each at a frame
# whose tshark decode confirms what it is (``operate``, force and alarm acknowledgement, occurs in
# no capture: tests/decoders/test_s7comm.py builds it).
CLASS_FRAMES = [
    ("icsnpp-s7comm/traces/s7ident.pcap", 8, "s7comm.param.func == 0xf0", "s7comm", "session"),
    ("icsnpp-s7comm/traces/s7ident.pcap", 4, "cotp.type == 0x0e", "s7comm", "session"),
    ("icsnpp-s7comm/traces/s7ident.pcap", 31, "s7comm.param.func == 0x04", "s7comm", "read"),
    ("icsnpp-s7comm/traces/s7comm_plus.pcap", 155, "s7comm.param.func == 0x05", "s7comm", "write"),
    ("ICS-Security-Tools/s7/step7_s300_download.pcapng", 87, "s7comm.param.func == 0x1a", "s7comm",
     "program"),
    ("ICS-Security-Tools/s7/step7_s300_download.pcapng", 93, 's7comm.param.pistart.servicename == "_INSE"',
     "s7comm", "program"),
    ("icsnpp-s7comm/traces/s7ident.pcap", 20, "s7comm.param.func == 0x1d", "s7comm", "upload"),
    ("ICS-Security-Tools/s7/step7_s300_stop.pcapng", 1, "s7comm.param.func == 0x29", "s7comm", "mode"),
    ("ICS-Security-Tools/s7/step7_s300_AuthPassword.pcapng", 1,
     "s7comm.param.userdata.funcgroup == 4 && s7comm.param.userdata.subfunc == 1", "s7comm", "diagnostic"),
    ("ICS-Security-Tools/s7/step7_s300_AuthPassword.pcapng", 3, "s7comm.param.userdata.funcgroup == 5",
     "s7comm", "auth"),
    ("ICS-Security-Tools/s7/step7_s300_download.pcapng", 3,
     "s7comm.param.userdata.funcgroup == 4 && s7comm.param.userdata.subfunc == 2", "s7comm", "subscribe"),
    ("ICS-Security-Tools/s7/s7comm_reading_setting_plc_time.pcap", 43,
     "s7comm.param.userdata.funcgroup == 7 && s7comm.param.userdata.subfunc == 2", "s7comm", "time"),
    ("ICS-Security-Tools/s7/s7comm_reading_setting_plc_time.pcap", 25,
     "s7comm.param.userdata.funcgroup == 7 && s7comm.param.userdata.subfunc == 1", "s7comm", "read"),
    ("icsnpp-s7comm/traces/s7comm_plus.pcap", 7, "cotp && data.data[0] == 0x72", "s7comm_plus", "opaque"),
]  # fmt: skip


@pytest.mark.parametrize(("capture", "frame", "tshark_filter", "protocol", "operation"), CLASS_FRAMES)
def test_operation_classes_on_real_captures(capture: str, frame: int, tshark_filter: str, protocol: str,
                                            operation: str) -> None:  # fmt: skip
    path = CORPUS / "pcaps" / capture
    if not path.exists():
        pytest.skip("corpus not available")
    assert frame in tshark_fields(path, f"frame.number == {frame} && {tshark_filter}", [])
    msgs = our_messages(path, protocol)[frame]
    assert [m.operation for m in msgs] == [operation]
