"""The README demo, as a user runs it: the bundled capture against rules/demo.yaml through the CLI.

rules/demo.yaml's header promises three breaches and nothing else; the quick start prints them. This
pins them: each kind with its endpoints, zones, conduit and rule, the folded repeats adding up to
every occurrence, and no other alert, audit or incident.
"""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (rule, src_ip, dest_ip, dest_port, src_zone, dest_zone, conduit, flow rule, operation) -> occurrences
PROMISED = {
    # hmi02 is view-only, yet writes to the PLCs: six Modbus function 16 writes in all.
    **{("operation_not_allowed", "10.10.20.22", plc, 502, "supervisory", "control", "supervisory-control",
        "hmi02-view", "write"): n for plc, n in (("10.10.10.11", 1), ("10.10.10.12", 2), ("10.10.10.13", 1),
                                                  ("10.10.10.14", 2))},
    # The historian's SMB backup at 07:00 local time, outside the nightly window.
    ("outside_schedule", "10.10.10.50", "10.10.30.10", 445, "control", "backup", "control-backup",
     "nightly-archive-backup", None): 1,
    # Plain HTTP from two enterprise clients to the DMZ web server: eight connections.
    ("protocol_not_allowed", "10.20.1.31", "10.10.50.10", 80, "enterprise", "dmz", "enterprise-dmz", None,
     None): 7,
    ("protocol_not_allowed", "10.20.1.32", "10.10.50.10", 80, "enterprise", "dmz", "enterprise-dmz", None,
     None): 1,
}  # fmt: skip


def test_the_demo_raises_what_its_policy_promises_and_nothing_else(tmp_path: Path) -> None:
    eve = tmp_path / "demo-eve.json"
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "replay", "pcaps/demo.pcap", "--policy", "rules/demo.yaml",
         "--eve", str(eve)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in eve.read_text().splitlines()]
    occurrences: Counter[tuple[object, ...]] = Counter()
    for event in events:
        assert event["event_type"] != "audit", event
        if event["event_type"] != "alert":
            continue
        alert, policy = event["alert"], event["policy"]
        key = (alert["rule"], event["src_ip"], event["dest_ip"], event["dest_port"], policy["src_zone"],
               policy["dest_zone"], policy["conduit"], policy["rule"], policy["operation"])  # fmt: skip
        occurrences[key] += alert["count"]
    assert dict(occurrences) == PROMISED
    stats = next(e for e in reversed(events) if e["event_type"] == "stats")["stats"]
    assert stats["policy"]["violations"] == {
        "operation_not_allowed": 6,
        "outside_schedule": 1,
        "protocol_not_allowed": 8,
    }
    assert stats["policy"]["audits"] == 0
    assert "policy rules/demo.yaml: 15 violations, 0 audited operations" in done.stdout
    assert "backup floods and control health: no incident" in done.stdout
