"""NFS calls by procedure against tshark, on every corpus capture with NFS.

The ``rpc`` object of an ``nfs`` flow counts the calls of its program by procedure (READ and WRITE
are what tell a file copy); summed over a capture's NFS flows, they must equal the NFS calls tshark
dissects (``rpc.procedure`` of calls to program 100003), and NFSv3 WRITE bytes must equal the sum of
tshark's ``nfs.count3`` on WRITE calls.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent.decoders.identify import flow_fields
from agent.decoders.onc_rpc import NFS2_PROCEDURES, NFS3_PROCEDURES, NFS4_PROCEDURES
from tests.corpus.ot_oracle import CORPUS, captures_where, collect, tshark_fields

pytestmark = pytest.mark.corpus
NAMES = {2: NFS2_PROCEDURES, 3: NFS3_PROCEDURES, 4: NFS4_PROCEDURES}


def nfs_captures() -> list[Path]:
    return captures_where(lambda row: "nfs(" in row["protocols"])


def ours(path: Path) -> tuple[Counter[str], int]:
    collector = collect(path)
    calls: Counter[str] = Counter()
    written = 0
    for flow in collector.flows:
        rpc = (flow_fields(flow) or {}).get("rpc", {})
        if rpc.get("program") == 100003:
            calls.update({f"v{rpc['version']} {name}": n for name, n in rpc.get("procedures", {}).items()})
            written += rpc.get("bytes_written", 0) if rpc["version"] == 3 else 0
    return calls, written


def theirs(path: Path) -> tuple[Counter[str], int]:
    calls: Counter[str] = Counter()
    written = 0
    # One segment may carry several calls: the per-version procedure fields list each of them.
    fields = ("nfs.procedure_v2", "nfs.procedure_v3", "nfs.procedure_v4", "nfs.count3")
    for values in tshark_fields(path, "rpc.program == 100003 && rpc.msgtyp == 0", fields).values():
        *procedures, counts = [*values, "", "", "", ""][:4]
        for version, listed in zip((2, 3, 4), procedures, strict=True):
            for procedure in filter(str.isdigit, listed.split(",")):
                names, number = NAMES[version], int(procedure)
                name = names[number] if number < len(names) else str(number)
                calls[f"v{version} {name}"] += 1
        if procedures[1] and set(procedures[1].split(",")) == {"7"}:  # v3 WRITE calls (READ has a count too)
            written += sum(int(c) for c in counts.split(",") if c.isdigit())
    return calls, written


@pytest.mark.parametrize("path", nfs_captures(), ids=lambda p: str(p.relative_to(CORPUS / "pcaps")))
def test_nfs_calls_agree_with_tshark(path: Path, tshark: str) -> None:
    expected = theirs(path)
    if not expected[0]:
        pytest.skip("tshark dissects no NFS call here")
    assert ours(path) == expected
