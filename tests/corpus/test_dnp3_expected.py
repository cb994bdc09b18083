"""DNP3 against the peers' expectations in the corpus: Zeek's btest baselines and suricata-verify.

* Zeek (``expected/zeek/scripts.base.protocols.dnp3.*/output``): the event dump lists, in order,
  every application header (originator flag, application control byte, function code and, for
  responses, the IIN) and every object header (group/variation, qualifier). Ours must be the same
  sequences, message for message.
* suricata-verify (``expected/suricata-verify/dnp3/*/test.yaml``): every check on ``dnp3`` events is
  evaluated over our messages rendered in Suricata's field names; the number of matching messages
  must equal the check's count. Fields we do not decode (object point values, ``complete``) are not
  compared. Suricata in IDS mode parses TCP application data when the peer acknowledges it, so its
  ``pcap_cnt`` is the frame of the connection that acknowledges the message, where ours (like
  tshark's frame number) is the frame that carried the message; the view maps one to the other.
  Suricata does not log application confirms (function 0) as records, so the view leaves them out.
  Decoder-event alerts map to our anomalies where we have the same event.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.decoders.base import REQUEST, OtMessage
from tests.corpus.expected import EXPECTED, PCAPS, expected_rows

pytestmark = pytest.mark.corpus


def _rows(prefix: str) -> list[tuple[str, Path]]:
    return [(r["expected"], PCAPS / r["pcaps"]) for r in expected_rows() if r["expected"].startswith(prefix)]


class _Collector:
    """Our dnp3 messages and anomaly kinds, in the order they were produced."""

    def __init__(self) -> None:
        self.messages: list[OtMessage] = []
        self.anomalies: list[str] = []

    def on_flow_end(self, flow: object, reason: str) -> None:
        return None

    def on_message(self, msg: OtMessage) -> None:
        if msg.protocol == "dnp3":
            self.messages.append(msg)

    def emit(self, event: Any) -> None:
        if event.event_type == "anomaly" and event.fields["anomaly"]["layer"] == "dnp3":
            self.anomalies.append(event.fields["anomaly"]["event"])

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def _run(pcap: Path) -> _Collector:
    from agent.capture.files import ReplaySource
    from agent.pipeline import EVENTS_ALL, Pipeline, PipelineConfig

    collector = _Collector()
    source = ReplaySource([str(pcap)])
    try:
        Pipeline(PipelineConfig(events=EVENTS_ALL), consumers=[collector], sinks=[collector]).run(source)
    finally:
        source.close()
    return collector


def _from_client(m: OtMessage) -> bool:
    """Sent by the master's side (Zeek flips a connection whose initiator used port 20000)."""
    return m.to_server == (m.flow.sport != 20000)


def _control_byte(ac: dict[str, Any]) -> int:
    return ac["fir"] << 7 | ac["fin"] << 6 | ac["con"] << 5 | ac["uns"] << 4 | ac["sequence"]


# -- Zeek ----------------------------------------------------------------------------------------

ZEEK = _rows("zeek/scripts.base.protocols.dnp3.")


def _zeek_events(output: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    headers: list[tuple[Any, ...]] = []
    objects: list[tuple[Any, ...]] = []
    for line in output.read_text().splitlines():
        name, _, rest = line.partition(", ")
        args = rest.split(", ")
        if name == "dnp3_application_request_header":
            headers.append((args[0] == "T", int(args[1]), int(args[2])))
        elif name == "dnp3_application_response_header":
            headers.append((args[0] == "T", int(args[1]), int(args[2]), int(args[3])))
        elif name == "dnp3_object_header":
            obj_type = int(args[1])
            objects.append((args[0] == "T", obj_type >> 8, obj_type & 0xFF, int(args[2])))
    return headers, objects


@pytest.mark.parametrize(("name", "pcap"), ZEEK, ids=[n.rsplit(".", 1)[-1] for n, _ in ZEEK])
def test_application_and_object_headers_match_zeek(name: str, pcap: Path) -> None:
    want_headers, want_objects = _zeek_events(EXPECTED / "zeek" / name.removeprefix("zeek/") / "output")
    ours = _run(pcap).messages
    headers: list[tuple[Any, ...]] = []
    objects: list[tuple[Any, ...]] = []
    for m in ours:
        f = m.fields
        ac = _control_byte(f["application_control"])
        if m.direction == REQUEST:
            headers.append((_from_client(m), ac, m.function))
        else:
            headers.append((_from_client(m), ac, m.function, f["iin"]["value"]))
        assert "objects_omitted" not in f
        objects += [(_from_client(m), o["group"], o["variation"], o["qualifier"]) for o in f["objects"]]
    assert headers == want_headers
    assert objects == want_objects


# -- suricata-verify -----------------------------------------------------------------------------

SURICATA = _rows("suricata-verify/dnp3/")
_MISSING = object()
# Fields of Suricata's dnp3 record that we do not decode.
_NOT_DECODED = (".points[", ".complete")


def _acked_at(pcap: Path) -> Callable[[OtMessage], int]:
    """Frame number of the first later frame of the connection acknowledging the message's bytes."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    frames: dict[int, tuple[tuple[Any, ...], int, int]] = {}  # number -> (direction key, seq end, ack)
    with PcapReader(str(pcap)) as reader:
        for number, packet in enumerate(reader, 1):
            if packet.haslayer(TCP):
                ip, tcp = packet[IP], packet[TCP]
                payload = len(tcp.payload)
                frames[number] = ((ip.src, tcp.sport, ip.dst, tcp.dport), tcp.seq + payload, tcp.ack)

    def acked_at(m: OtMessage) -> int:
        sent, end, _ = frames[m.pcap_cnt]
        back = (sent[2], sent[3], sent[0], sent[1])
        for number in range(m.pcap_cnt + 1, max(frames) + 1):
            key, _, ack = frames.get(number, ((), 0, 0))
            if key == back and (ack - end) % (1 << 32) < 1 << 31:
                return number
        return 0

    return acked_at


def _suricata_view(m: OtMessage, acked_at: Callable[[OtMessage], int]) -> dict[str, Any]:
    """Our message in the shape of Suricata's ``dnp3`` EVE record (the fields we have)."""
    f = m.fields
    if m.direction == REQUEST:
        kind = "request"
    else:
        kind = "unsolicited_response" if m.function == 130 else "response"
    objects = []
    for o in f["objects"]:
        start, stop = o.get("range", (0, 0))
        count = stop - start + 1 if "range" in o else o.get("count", 0)
        q = o["qualifier"]
        objects.append(
            {
                "group": o["group"],
                "variation": o["variation"],
                "qualifier": q,
                "prefix_code": q >> 4 & 7,
                "range_code": q & 0x0F,
                "start": start,
                "stop": stop,
                "count": count,
            }
        )
    lc = f["link_control"]
    return {
        "pcap_cnt": acked_at(m),
        "event_type": "dnp3",
        "dnp3": {
            "type": kind,
            "src": f["src"],
            "dst": f["dst"],
            "control": {
                "dir": lc["dir"],
                "pri": lc["prm"],
                "fcb": lc["fcb"],
                "fcv": lc["fcv"],
                "function_code": lc["function"],
            },
            "application": {
                "function_code": m.function,
                "control": f["application_control"],
                "objects": objects,
            },
            "iin": {"indicators": f["iin"]["indicators"]} if "iin" in f else {},
        },
    }


def _lookup(view: Any, path: str) -> Any:
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(view, list) or index >= len(view):
                return _MISSING
            view = view[index]
        elif isinstance(view, dict) and part in view:
            view = view[part]
        else:
            return _MISSING
    return view


def _compared(key: str) -> bool:
    if key in ("event_type", "pcap_cnt"):
        return True
    return key.startswith("dnp3.") and not any(part in key for part in _NOT_DECODED)


def _dnp3_checks(test_yaml: Path) -> list[tuple[int, dict[str, Any]]]:
    checks = yaml.safe_load(test_yaml.read_text()).get("checks", [])
    out = []
    for check in checks:
        flt = check.get("filter", {})
        match = flt.get("match", {})
        if match.get("event_type") == "dnp3":
            out.append((flt["count"], {k: v for k, v in match.items() if _compared(k)}))
    return out


SURICATA_EVENTS = [(n, p) for n, p in SURICATA if _dnp3_checks(EXPECTED / n / "test.yaml")]


@pytest.mark.parametrize(
    ("name", "pcap"), SURICATA_EVENTS, ids=[n.rsplit("/", 1)[-1] for n, _ in SURICATA_EVENTS]
)
def test_dnp3_records_match_suricata_verify(name: str, pcap: Path) -> None:
    acked_at = _acked_at(pcap)
    views = [_suricata_view(m, acked_at) for m in _run(pcap).messages if m.function != 0]
    failures = []
    for count, match in _dnp3_checks(EXPECTED / name / "test.yaml"):
        got = sum(all(_lookup(v, k) == want for k, want in match.items()) for v in views)
        if got != count:
            failures.append(f"want {count}, got {got}: {match}")
    assert not failures, "\n".join(failures[:10])


def _has_object(group: int, variation: int) -> Callable[[OtMessage], bool]:
    return lambda m: any(o["group"] == group and o["variation"] == variation for o in m.fields["objects"])


def _iin(m: OtMessage) -> int:
    return int(m.fields["iin"]["value"]) if "iin" in m.fields else 0


# The rules of the alert tests (test.rules), as predicates over one of our messages: Suricata raises
# a rule's alert once per transaction, and in these captures that is once per matching message.
RULES: dict[tuple[str, int], Callable[[OtMessage], bool]] = {
    ("dnp3-dnp3_func-alert", 1): lambda m: m.function == 21,  # dnp3_func:21
    ("dnp3-dnp3_func-alert", 2): lambda m: m.function == 21 and _from_client(m),  # ... to_server
    ("dnp3-dnp3_obj-alert", 1): _has_object(22, 1),  # dnp3_obj:22,01
    ("dnp3-dnp3_obj-alert", 2): _has_object(29, 1),  # dnp3_obj:29,01
    ("dnp3-ind-keyword", 1): lambda m: bool(_iin(m) & 0x8000),  # dnp3.ind:device_restart
    ("dnp3-ind-keyword", 2): lambda m: bool(_iin(m) & 0x8000),  # dnp3.ind:0x8000
    ("dnp3-ind-keyword", 3): lambda m: _iin(m) != 0,  # dnp3.ind:!0
    ("dnp3-ind-keyword", 4): lambda m: _iin(m) & 0x9000 == 0x8000,  # device_restart,!need_time
    ("dnp3-ind-keyword", 5): lambda m: bool(_iin(m) & 0x1000),  # dnp3.ind:need_time
}
# Suricata decoder events (dnp3-events.rules) that we raise as anomalies of our own kind.
EVENT_ANOMALIES = {2270007: "fragment_too_long"}  # dnp3.too_long_reassembly
RULE_NAMES = {test for test, _ in RULES} | {
    "dnp3-too-long-reassembly-request",
    "dnp3-too-long-reassembly-response",
}
RULE_TESTS = [(n, p) for n, p in SURICATA if n.rsplit("/", 1)[-1] in RULE_NAMES]


@pytest.mark.parametrize(("name", "pcap"), RULE_TESTS, ids=[n.rsplit("/", 1)[-1] for n, _ in RULE_TESTS])
def test_alert_counts_match_suricata_verify(name: str, pcap: Path) -> None:
    test = name.rsplit("/", 1)[-1]
    ours = _run(pcap)
    checks = yaml.safe_load((EXPECTED / name / "test.yaml").read_text())["checks"]
    compared = 0
    for check in checks:
        flt = check["filter"]
        sid = flt["match"].get("alert.signature_id")
        if (test, sid) in RULES:
            assert sum(map(RULES[test, sid], ours.messages)) == flt["count"], (test, sid)
            compared += 1
        elif sid in EVENT_ANOMALIES:
            assert ours.anomalies.count(EVENT_ANOMALIES[sid]) == flt["count"], (test, sid)
            compared += 1
    assert compared
