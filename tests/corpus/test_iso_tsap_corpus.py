"""TCP 102 carries S7comm and IEC 61850 MMS: every connection of every such capture gets the right name.

Oracle: tshark's protocol stack per frame (``frame.protocols``). A TCP connection on which tshark
dissects S7comm is an S7 connection (ours: ``s7comm``, or ``s7comm_plus`` when the connection turns
out to carry S7comm-plus); one on which it dissects the ISO session layer or MMS is an MMS
connection (ours: ``mms``). tshark has no S7comm-plus dissector: those connections (COTP data
starting with 0x72) must not be called ``mms``. This covers connections that start with a COTP CR,
which is the same for both protocols (the registry holds it until the first data), and captures
that start mid-connection.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from agent.capture.files import ReplaySource
from agent.dissect import format_ip
from agent.flows import Flow
from agent.pipeline import Pipeline, PipelineConfig
from tests.corpus.ot_oracle import CORPUS, captures_with, tshark_fields

pytestmark = pytest.mark.corpus

S7_NAMES = frozenset({"s7comm", "s7comm_plus"})
Conversation = frozenset[tuple[str, int]]


def _captures() -> list[Path]:
    return sorted(set(captures_with("S7COMM") + captures_with("S7COMM-PLUS") + captures_with("MMS")))


class _Flows:
    def __init__(self) -> None:
        self.names: dict[Conversation, set[str]] = defaultdict(set)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        if flow.proto == 6 and 102 in (flow.sport, flow.dport):
            key = frozenset({(format_ip(flow.src), flow.sport), (format_ip(flow.dst), flow.dport)})
            self.names[key].add(flow.app_proto)


def tshark_kinds(path: Path) -> dict[Conversation, set[str]]:
    """Per TCP connection on port 102: "s7" and/or "mms" as tshark dissects its frames."""
    fields = ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport", "frame.protocols"]
    kinds: dict[Conversation, set[str]] = defaultdict(set)
    for values in tshark_fields(path, "tcp.port == 102 && (s7comm || ses || mms)", fields).values():
        src, src6, sport, dst, dst6, dport, stack = values
        layers = stack.split(":")
        key = frozenset({(src or src6, int(sport)), (dst or dst6, int(dport))})
        if "s7comm" in layers:
            kinds[key].add("s7")
        if "ses" in layers or "mms" in layers:
            kinds[key].add("mms")
    return kinds


def plus_connections(path: Path) -> set[Conversation]:
    """Connections whose COTP data tshark leaves undissected and that starts with S7comm-plus's 0x72."""
    fields = ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "data.data"]
    found = set()
    for src, sport, dst, dport, data in tshark_fields(
        path, "tcp.port == 102 && cotp && data", fields
    ).values():
        if data.startswith("72"):
            found.add(frozenset({(src, int(sport)), (dst, int(dport))}))
    return found


@pytest.mark.parametrize("capture", _captures(), ids=lambda p: str(p.relative_to(CORPUS / "pcaps")))
def test_port_102_connections_are_named_by_their_payload(capture: Path) -> None:
    theirs = tshark_kinds(capture)
    flows = _Flows()
    source = ReplaySource([str(capture)])
    try:
        Pipeline(PipelineConfig(), consumers=[flows]).run(source)
    finally:
        source.close()
    assert theirs or plus_connections(capture), "tshark found neither S7comm nor MMS: wrong capture list"
    for conversation, kinds in theirs.items():
        ours = flows.names.get(conversation, set())
        assert len(kinds) == 1, f"tshark sees both protocols on {sorted(conversation)}"
        expected = S7_NAMES if kinds == {"s7"} else {"mms"}
        assert ours and ours <= expected, f"{sorted(conversation)}: tshark {kinds}, ours {ours}"
    for conversation in plus_connections(capture):
        assert "mms" not in flows.names.get(conversation, set())
