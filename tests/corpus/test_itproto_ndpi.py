"""IT and backup protocol identification against nDPI's per-flow classification (EXPECTED.tsv: nDPI).

Every ndpiReader report in the corpus is read; a flow is *in scope* when nDPI names one of the
protocols we identify (mapped below) or when we name it one of ours. For each, our ``app_proto``
must be in the mapped set. Flows are matched by protocol and unordered endpoints (nDPI orders them
its own way). Every disagreement is listed in known_disagreements/itproto.tsv with its reason; the
agreement must stay at or above 95%.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.decoders.it_protocols import NAMES as IDENTIFIED
from agent.dissect import format_ip
from tests.corpus.expected import EXPECTED, PCAPS, expected_rows, ndpi_flows
from tests.corpus.ot_oracle import collect

pytestmark = pytest.mark.corpus

KNOWN = Path(__file__).with_name("known_disagreements") / "itproto.tsv"
MINIMUM_AGREEMENT = 0.95

# nDPI protocol name (the application part of "master.app") -> the app_proto names that agree.
# nDPI calls every ONC-RPC flow of an NFS server NFS (port mapper and MOUNT included).
NDPI_NAMES = {
    "SMBv1": {"smb"},
    "SMBv23": {"smb"},
    "NFS": {"nfs", "rpcbind", "onc-rpc"},
    "Rsync": {"rsync"},
    "iSCSI": {"iscsi"},
    "SSH": {"ssh"},
    "FTP_CONTROL": {"ftp"},
    "FTP_DATA": {"ftp-data"},
    "TLS": {"tls", "mqtt-tls", "modbus-tls", "opcua-tls"},
    "HTTP": {"http"},
    "RDP": {"rdp"},
    "VNC": {"vnc"},
    "Telnet": {"telnet"},
    "SNMP": {"snmp"},
    "DNS": {"dns"},
    "NTP": {"ntp"},
    "PTPv2": {"ptp"},
    "DHCP": {"dhcp"},
    "Syslog": {"syslog"},
}
OURS = frozenset().union(*NDPI_NAMES.values()) | (IDENTIFIED - {"mqtt-tls", "modbus-tls", "opcua-tls"})

FlowKey = tuple[str, int, frozenset[tuple[str, int]]]  # TCP/UDP, VLAN id (0: none), endpoints


def _reports() -> list[tuple[str, Path, Path]]:
    """(report name, capture, report) for every nDPI report whose capture is in the corpus."""
    rows = [r for r in expected_rows() if r["suite"].endswith("nDPI")]
    return [(r["expected"], PCAPS / r["pcaps"], EXPECTED / r["expected"]) for r in rows]


def _ndpi_flows(report: Path) -> dict[FlowKey, str]:
    return {
        (f.l4, f.vlan, frozenset((f.key[:2], f.key[2:]))): f.proto.split(".")[-1] for f in ndpi_flows(report)
    }


def _our_flows(capture: Path) -> dict[FlowKey, str]:
    ours: dict[FlowKey, str] = {}
    for flow in collect(capture).flows:
        if flow.proto not in (6, 17):
            continue
        endpoints = frozenset(((format_ip(flow.src), flow.sport), (format_ip(flow.dst), flow.dport)))
        key = ("TCP" if flow.proto == 6 else "UDP", flow.vlan[0] if flow.vlan else 0, endpoints)
        # A flow split in records (active timeout, port reuse) keeps the most specific name.
        if ours.get(key, "") in ("", "unknown"):
            ours[key] = flow.app_proto or "unknown"
    return ours


def _describe(key: FlowKey) -> str:
    (a_ip, a_port), (b_ip, b_port) = sorted(key[2])
    vlan = f" vlan {key[1]}" if key[1] else ""
    return f"{key[0]}{vlan} {a_ip}:{a_port} <-> {b_ip}:{b_port}"


def compare() -> tuple[int, int, dict[tuple[str, str], tuple[str, str]]]:
    """(flows in scope, of which we have no flow, {(report, flow): (ours, nDPI)} where we disagree)."""
    in_scope = unseen = 0
    disagreements: dict[tuple[str, str], tuple[str, str]] = {}
    for name, capture, report in _reports():
        if not capture.exists() or not report.exists():
            continue
        theirs = _ndpi_flows(report)
        ours = _our_flows(capture)
        for key in sorted(set(theirs) | {k for k, v in ours.items() if v in OURS}, key=_describe):
            ndpi = theirs.get(key, "(no flow)")
            mine = ours.get(key, "(no flow)")
            if ndpi not in NDPI_NAMES and mine not in OURS:
                continue
            in_scope += 1
            unseen += mine == "(no flow)"
            if mine not in NDPI_NAMES.get(ndpi, ()):
                disagreements[(name, _describe(key))] = (mine, ndpi)
    return in_scope, unseen, disagreements


def load_known() -> dict[tuple[str, str], tuple[str, str, str]]:
    known = {}
    for line in KNOWN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            report, flow, ours, ndpi, reason = line.split("\t", 4)
            known[(report, flow)] = (ours, ndpi, reason)
    return known


def test_it_protocols_agree_with_ndpi() -> None:
    in_scope, unseen, disagreements = compare()
    assert in_scope >= 60, "the corpus's nDPI reports hold about seventy IT flows"
    known = load_known()
    unexplained = {k: v for k, v in disagreements.items() if k not in known or known[k][:2] != v}
    stale = sorted(k for k in known if k not in disagreements)
    assert not unexplained, "disagreements missing from known_disagreements/itproto.tsv:\n" + "\n".join(
        f"{report}\t{flow}\t{ours}\t{ndpi}\t" for (report, flow), (ours, ndpi) in sorted(unexplained.items())
    )
    assert not stale, f"listed but no longer disagreeing: {stale}"
    # Identification is judged on the flows both see (a flow the dissector cannot reach, e.g. inside
    # PPPoE, is listed but is not an identification error).
    agreement = 1 - (len(disagreements) - unseen) / (in_scope - unseen)
    assert agreement >= MINIMUM_AGREEMENT, f"{agreement:.1%} of {in_scope - unseen} flows"


if __name__ == "__main__":  # print the figures (and lines for the TSV) when run as a script
    total, missing, found = compare()
    seen = 1 - (len(found) - missing) / (total - missing)
    print(f"{total} flows in scope ({missing} we have no flow for), {len(found)} disagreements; agreement "
          f"{seen:.2%} on flows both see, {1 - len(found) / total:.2%} overall")  # fmt: skip
    for (report, flow), (ours, ndpi) in sorted(found.items()):
        print(f"{report}\t{flow}\t{ours}\t{ndpi}")
