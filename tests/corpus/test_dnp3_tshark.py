"""DNP3 application function codes and object headers, frame by frame, against tshark (see ot_oracle).

tshark's frames flagged as TCP retransmissions are left out on its side: nDPI/dnp3.pcap holds every
packet three times (same TCP sequence numbers and payload), and tshark re-dissects some of the
copies, while a retransmission of bytes already seen carries no new message (our stream reassembly
drops it). The filter removes exactly those 28 duplicate dissections and nothing else.
"""

from collections import Counter

import pytest

from tests.corpus.ot_oracle import (
    CORPUS,
    assert_agreement,
    captures_with,
    compare_protocol,
    load_known,
    our_messages,
    tshark_fields,
)

pytestmark = pytest.mark.corpus

DISPLAY_FILTER = "dnp3 and not tcp.analysis.retransmission"
# DNP3 on TCP 20001: we find it by the probe on any port, tshark only when told ("decode as").
OTHER_PORT = CORPUS / "pcaps" / "zeek" / "dnp3" / "dnp3_read_p20001.pcap"
# Fuzzed CROBs: tshark keeps reading object headers out of the corrupt object data where we stop
# (with an anomaly) at the first header we cannot step over, so their object lists differ by design.
FUZZED = "ICS-Security-Tools/openics/DNP3-Malformed.pcap"


def _codes(values: list[str]) -> list[int]:
    # dnp3.al.func: one occurrence per application fragment completed in the frame.
    return [int(v) for v in values[0].split(",") if v] if values else []


def test_dnp3_function_codes_match_tshark() -> None:
    captures = captures_with("DNP3")
    if not captures:
        pytest.skip("corpus not available")
    result = compare_protocol("dnp3", captures, DISPLAY_FILTER, _codes, tshark_field_names=["dnp3.al.func"])
    if OTHER_PORT.exists():
        decode_as = ["-d", "tcp.port==20001,dnp3"]
        other = compare_protocol(
            "dnp3", [OTHER_PORT], DISPLAY_FILTER, _codes, tshark_field_names=["dnp3.al.func"], extra=decode_as
        )
        assert other.total == 2 and other.agreed == 2
        result.total += other.total
        result.agreed += other.agreed
        result.disagreements.update(other.disagreements)
    assert_agreement(result)


def test_dnp3_object_headers_cover_tshark() -> None:
    """Every object header (group, variation) tshark decodes in a frame, we list too.

    We list more where tshark stops or does not look: it has no object dissection for Assign
    Class (22), Stop Application (18) or undefined function codes, and stops at objects whose size
    it does not know (g51v2 unsynchronised CTO, g120v3 aggressive-mode request, g112v0 empty VTO).
    """
    captures = [c for c in captures_with("DNP3") if not str(c).endswith(FUZZED)]
    if not captures:
        pytest.skip("corpus not available")
    known = load_known("dnp3")
    frames = identical = 0
    missing = []
    for path in captures:
        rel = str(path.relative_to(CORPUS / "pcaps"))
        theirs_by_frame = tshark_fields(path, DISPLAY_FILTER, ["dnp3.al.obj"])
        ours_by_frame = our_messages(path, "dnp3")
        for frame in sorted(set(theirs_by_frame) | set(ours_by_frame)):
            if (rel, frame) in known:
                continue
            theirs = Counter(int(v, 0) for v in theirs_by_frame.get(frame, [""])[0].split(",") if v)
            objects = [o for m in ours_by_frame.get(frame, []) for o in m.fields["objects"]]
            ours = Counter(o["group"] << 8 | o["variation"] for o in objects)
            if theirs or ours:
                frames += 1
                identical += theirs == ours
                if theirs - ours:
                    missing.append(f"{rel}\t{frame}\tours {sorted(ours)}\ttshark {sorted(theirs)}")
    assert not missing, "\n".join(missing[:20])
    assert frames > 900 and identical / frames >= 0.97, (identical, frames)
