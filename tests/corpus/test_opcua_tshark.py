"""OPC UA binary against tshark, frame by frame (see ot_oracle): message types and service NodeIds.

Two comparisons over the same captures: the UA TCP message type of every message
(``opcua.transport.type``: HEL, ACK, ERR, RHE, OPN, MSG, CLO) and the numeric encoding NodeId of every
service body tshark can read (``opcua.servicenodeid.numeric``; none for encrypted bodies, where we
report no NodeId either). The captures are those the inventory lists with OPC UA decoded, plus two
on ports tshark does not know (12001 and 48010), which tshark is told to decode as OPC UA and which
we must find by the payload probe alone.
"""

from pathlib import Path

import pytest

from agent.decoders.base import OtMessage
from tests.corpus.ot_oracle import CORPUS, assert_agreement, captures_with, compare_protocol

pytestmark = pytest.mark.corpus

MESSAGE_TYPES = {"HEL": 1, "ACK": 2, "ERR": 3, "RHE": 4, "OPN": 5, "MSG": 6, "CLO": 7}
OTHER_PORTS = {
    "ICS-Security-Tools/OPC/opc-ua-ap-method-wireshark-freeze.pcap": 12001,
    "icsnpp-opcua-binary/pcaps/open62541_client-server_mainloop-not-localhost-non-standard-port.pcap": 48010,
}
DECODE_AS = [arg for port in sorted(set(OTHER_PORTS.values())) for arg in ("-d", f"tcp.port=={port},opcua")]


def _captures() -> list[Path]:
    captures = captures_with("OPCUA")
    if not captures:
        pytest.skip("corpus not available")
    return captures + [CORPUS / "pcaps" / rel for rel in OTHER_PORTS]


def _message_types(values: list[str]) -> list[int]:
    return [MESSAGE_TYPES[v] for v in values[0].split(",") if v] if values else []


def _our_message_type(msg: OtMessage) -> int:
    return MESSAGE_TYPES[msg.fields["message_type"]]


def _service_ids(values: list[str]) -> list[int]:
    return [int(v) for v in values[0].split(",") if v] if values else []


def _our_service_id(msg: OtMessage) -> int | None:
    node = msg.fields.get("service_node_id")
    return node if isinstance(node, int) else None


def test_opcua_message_types_match_tshark() -> None:
    result = compare_protocol(
        "opcua",
        _captures(),
        "opcua",
        _message_types,
        our_code=_our_message_type,
        tshark_field_names=["opcua.transport.type"],
        extra=DECODE_AS,
    )
    assert_agreement(result)


def test_opcua_service_node_ids_match_tshark() -> None:
    result = compare_protocol(
        "opcua",
        _captures(),
        "opcua",
        _service_ids,
        our_code=_our_service_id,
        tshark_field_names=["opcua.servicenodeid.numeric"],
        extra=DECODE_AS,
    )
    assert_agreement(result)
