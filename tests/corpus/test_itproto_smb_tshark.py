"""SMB2 request counts by command against tshark, on every corpus capture with SMB2.

The ``smb`` object of a flow event counts requests by command (what tells a file copy from
browsing); summed over a capture's flows they must equal the SMB2 requests tshark dissects
(``smb2.cmd`` of headers whose ``smb2.flags.response`` is 0, compounded requests included).
Suricata-verify's smb2-peter.pcap checks agree too (CREATE 57, WRITE 17, NEGOTIATE 1,
SESSION_SETUP 2, TREE_CONNECT 1); its READ count is 34 because Suricata logs the READs that
succeeded, where the capture holds 38 READ requests (4 answered STATUS_END_OF_FILE), as tshark shows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.decoders.identify import flow_fields
from agent.decoders.smb import SMB2_COMMANDS
from tests.corpus.ot_oracle import CORPUS, captures_where, collect, tshark_fields

pytestmark = pytest.mark.corpus


def smb2_captures() -> list[Path]:
    return captures_where(lambda row: "smb2(" in row["protocols"])


def ours(path: Path) -> Counter[str]:
    collector = collect(path)
    counts: Counter[str] = Counter()
    for flow in collector.flows:
        # tshark dissects SMB on its ports only; we also find it elsewhere (smb-length-5770 relays
        # every session through port 4445 as well), which tshark does not count.
        smb = (flow_fields(flow) or {}).get("smb", {})
        # SMB1 sessions name their commands alike (session_setup, ...): tshark's smb2 leaves them out.
        if (flow.dport in SMB_PORTS or flow.sport in SMB_PORTS) and smb.get("version", 1) >= 2:
            counts.update(smb.get("commands", {}))
    # An SMB1 multi-protocol NEGOTIATE opens most SMB2 sessions: we count it with the SMB2 ones,
    # tshark's smb2 does not.
    del counts["negotiate"]
    return counts


SMB_PORTS = (445, 139)


def theirs(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for values in tshark_fields(path, "smb2", ("smb2.cmd", "smb2.flags.response")).values():
        commands, responses = [*values, "", ""][:2]
        for command, response in zip(commands.split(","), responses.split(","), strict=False):
            if command.isdigit() and response in ("0", "False"):
                number = int(command)
                counts[SMB2_COMMANDS[number] if number < len(SMB2_COMMANDS) else "other"] += 1
    del counts["negotiate"]
    return counts


@pytest.mark.parametrize("path", smb2_captures(), ids=lambda p: str(p.relative_to(CORPUS / "pcaps")))
def test_smb2_request_counts_agree_with_tshark(path: Path, tshark: str) -> None:
    expected = theirs(path)
    if not expected:
        pytest.skip("tshark dissects no SMB2 request here")
    assert ours(path) == expected
