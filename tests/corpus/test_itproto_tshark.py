"""TLS SNI, HTTP method/host and SSH banners against tshark, per flow, on every corpus capture with them.

For each flow whose first ClientHello / HTTP request / SSH identification string tshark decodes, our
flow must carry the same value in its identification fields (``tls.sni``, ``http.method`` and
``http.host``, ``ssh.client``/``ssh.server.software_version``). The captures are those whose
INVENTORY.tsv protocol hierarchy lists tls, http or ssh.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.decoders.identify import flow_fields
from agent.dissect import format_ip
from tests.corpus.ot_oracle import captures_where, collect, tshark_fields

pytestmark = pytest.mark.corpus

FlowKey = tuple[str, int, str, int]  # client address, port, server address, port

CHECKS = {
    # name: (INVENTORY token, display filter, tshark fields after the addresses, our values)
    "tls": ("tls(", "tls.handshake.type == 1", ("tls.handshake.extensions_server_name",)),
    "http": ("http(", "http.request", ("http.request.method", "http.host")),
    "ssh": ("ssh(", "ssh.protocol", ("ssh.protocol",)),
}
# Flows the corpus holds today (a drop means captures went missing or the filters broke).
MINIMUM_FLOWS = {"tls": 2, "http": 90, "ssh": 2}
ADDRESSES = ("ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport")


def captures(token: str) -> list[Path]:
    return captures_where(lambda row: f" {token}" in f" {row['protocols']}")


def _ours(path: Path) -> dict[FlowKey, tuple[dict[str, dict], bool]]:
    """Identification fields by flow, seen from either side (with: is that side the initiator)."""
    collector = collect(path)
    result: dict[FlowKey, tuple[dict[str, dict], bool]] = {}
    for flow in collector.flows:
        fields = flow_fields(flow) or {}
        result[(format_ip(flow.src), flow.sport, format_ip(flow.dst), flow.dport)] = (fields, True)
        result[(format_ip(flow.dst), flow.dport, format_ip(flow.src), flow.sport)] = (fields, False)
    return result


def _theirs(path: Path, display_filter: str, fields: tuple[str, ...]) -> dict[FlowKey, list[list[str]]]:
    """The values tshark shows, per flow (sender first), in frame order."""
    by_flow: dict[FlowKey, list[list[str]]] = {}
    for _frame, values in sorted(tshark_fields(path, display_filter, (*ADDRESSES, *fields)).items()):
        src4, src6, sport, dst4, dst6, dport, *rest = values + [""] * (
            len(ADDRESSES) + len(fields) - len(values)
        )
        if not sport.isdigit() or not dport.isdigit():
            continue
        key = (src4 or src6, int(sport), dst4 or dst6, int(dport))
        by_flow.setdefault(key, []).append(rest)
    return by_flow


def _software(banner: str) -> str:
    return banner.split("-", 2)[2].split(" ", 1)[0] if banner.count("-") >= 2 else ""


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_identification_fields_agree_with_tshark(name: str, tshark: str) -> None:
    token, display_filter, fields = CHECKS[name]
    paths = [p for p in captures(token) if p.exists()]
    if not paths:
        pytest.skip(f"no corpus capture with {name}")
    compared = 0
    disagreements = []
    for path in paths:
        ours = _ours(path)
        for key, rows in _theirs(path, display_filter, fields).items():
            identified, from_initiator = ours.get(key, ({}, True))
            mine = identified.get(name, {})
            first = rows[0]
            if name == "tls":
                expected, got = first[0], mine.get("sni", "")
            elif name == "http":
                expected, got = (first[0], first[1]), (mine.get("method", ""), mine.get("host", ""))
            else:
                # Both identification strings are in the flow: compare the one this key's side sent.
                expected = _software(first[0])
                got = mine.get("client" if from_initiator else "server", {}).get("software_version", "")
            compared += 1
            if expected != got:
                disagreements.append(f"{path.name} {key}: tshark {expected!r}, ours {got!r}")
    assert compared >= MINIMUM_FLOWS[name], (
        f"tshark decoded {name} in {compared} flows of {len(paths)} captures"
    )
    assert not disagreements, f"{len(disagreements)} of {compared} flows:\n" + "\n".join(disagreements)
