"""``conduitwatch policy validate`` and ``show`` as a user runs them: a subprocess on real files."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.policy.cli import render
from agent.policy.loader import load_policy_text
from tests.policy.test_loader import FIXTURES, PLANT, doc_example, variant

CMD = [sys.executable, "-m", "agent.cli", "policy"]
PROBLEM = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<column>\d+): (?P<severity>error|warning): .+$")


def cw(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    result = subprocess.run([*CMD, *args], capture_output=True, input=stdin, timeout=120, env=env)
    out = subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    return out


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_valid_file() -> None:
    path = str(FIXTURES / "plant.yaml")
    result = cw("validate", path)
    assert result.returncode == 0
    assert result.stdout == f"{path}: valid (3 zones, 2 conduits)\n"
    assert result.stderr == ""


def test_validate_invalid_file_lists_problems_by_line(tmp_path: Path) -> None:
    edits = [("vlans: [10]", "vlans: [4096]"), ("ports: [502]", "ports: [0]"), ("    sl_t: 3", "    sl_t: 1")]
    path = write(tmp_path, "bad.yaml", variant(*edits, ("protocol: modbus", "protocol: modbsu")))
    result = cw("validate", path)
    assert result.returncode == 2
    *problems, verdict = result.stdout.splitlines()
    matches = [PROBLEM.match(line) for line in problems]
    assert all(matches), problems
    lines = [int(m["line"]) for m in matches if m]
    assert lines == sorted(lines) and len(lines) == 5
    assert {m["path"] for m in matches if m} == {path}
    assert f"{path}:36:13: error: VLAN of zone 'cell': 4096 is out of range (0-4095)" in problems
    assert verdict == f"{path}: invalid (3 errors, 2 warnings)"


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", variant(("ip: 10.10.20.30", "ip: 10.10.99.30")))
    result = cw("validate", path)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{path}:25:28: warning: asset 'hist-1' (10.10.99.30) is outside the networks of zone 'supervisory' "
        "(10.10.20.0/24); check the address or the networks",
        f"{path}: valid (3 zones, 2 conduits, 1 warning)",
    ]
    strict = cw("validate", "--strict", path)
    assert strict.returncode == 2
    assert strict.stdout.splitlines()[-1] == f"{path}: invalid with --strict (3 zones, 2 conduits, 1 warning)"


def test_several_files_one_verdict_each(tmp_path: Path) -> None:
    good = str(FIXTURES / "plant.yaml")
    missing = str(tmp_path / "missing.yaml")
    result = cw("validate", good, missing)
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"{good}: valid (3 zones, 2 conduits)",
        f"{missing}: error: cannot read the file: No such file or directory",
        f"{missing}: invalid (1 error)",
    ]


@pytest.mark.parametrize(
    "content",
    [
        random.Random(7).randbytes(2048),
        b"\x00\xff\xfe" * 100,
        b"",
        b"[" * 3000,
        b"version: 1\nsystem: {name: x}\nzones: {a: 1}\n",
        b'version: 1\nsystem: {name: "\\e[31mred"}\nzones: [{id: z, vlans: [1]}]\n',
    ],
    ids=["random", "binary", "empty", "deep", "wrong-types", "escape"],
)
def test_validate_any_input_is_one_line_per_problem(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    result = cw("validate", str(path))
    assert result.stderr == ""
    *problems, verdict = result.stdout.splitlines()
    assert all(PROBLEM.match(line) or line.startswith(f"{path}: error: ") for line in problems)
    if result.returncode == 2:
        assert verdict.startswith(f"{path}: invalid (")
    else:  # only the escape case is a valid policy; the escape stays out of the output
        # (a zone placed by its VLAN alone: valid, with the warning that says what that lets in)
        assert result.returncode == 0 and verdict == f"{path}: valid (1 zone, 0 conduits, 1 warning)"
    assert "\x1b" not in result.stdout


def test_validate_directory_and_stdin(tmp_path: Path) -> None:
    result = cw("validate", str(tmp_path))
    assert result.returncode == 2 and "cannot read the file" in result.stdout
    piped = cw("validate", "-", stdin=PLANT.encode())
    assert piped.returncode == 0 and piped.stdout == "<stdin>: valid (3 zones, 2 conduits)\n"


def test_validate_stdin_is_named_alike_on_problem_and_verdict_lines() -> None:
    piped = cw("validate", "-", stdin=variant(("vlans: [10]", "vlans: [4096]")).encode())
    *problems, verdict = piped.stdout.splitlines()
    assert piped.returncode == 2 and problems and verdict == "<stdin>: invalid (1 error)"
    assert all(line.startswith("<stdin>:") and PROBLEM.match(line) for line in problems), problems


def test_usage_errors_exit_2() -> None:
    assert cw("validate").returncode == 2
    assert cw("show").returncode == 2
    assert cw("validate", "--bogus", "x").returncode == 2


# ----------------------------------------------------------------------------------------------
# show


def matrix(output: str) -> dict[str, dict[str, str]]:
    """cells[row zone][column zone] from show's (unabbreviated) matrix."""
    lines = output.split("Conduits: ", 1)[1].splitlines()[1:]
    header = lines[0].split()
    cells = {}
    for line in lines[1:]:
        if not line.strip():
            break
        label, *row = line.split()
        cells[label] = dict(zip(header, row, strict=True))
    return cells


def test_show_doc_example(tmp_path: Path) -> None:
    path = write(tmp_path, "riverside.yaml", doc_example())
    result = cw("show", path)
    assert result.returncode == 0 and result.stderr == ""
    out = result.stdout
    assert out.startswith("System: Riverside water treatment\n  owner: Plant engineering\n")
    assert "Zones (3)" in out
    assert re.search(r"cell-filtration +L1 +2 +10\.10\.10\.0/24; VLAN 10; 1 asset", out)
    assert re.search(r"supervisory +L2 +2,2,2,1,2,1,2 +10\.10\.20\.0/24; 1 asset", out)
    assert re.search(r"engineering +L2 +- +10\.10\.40\.0/24; 1 asset", out)
    cells = matrix(out)
    assert cells["supervisory"] == {
        "cell-filtration": "scada-to-filtration",
        "supervisory": "=",
        "engineering": ".",
    }
    assert cells["engineering"]["cell-filtration"] == "engineering-to-filtration"
    assert cells["cell-filtration"] == {"cell-filtration": "=", "supervisory": ".", "engineering": "."}
    assert max(len(line) for line in out.splitlines()) <= 120


def test_show_marks_safety_and_checked_zones() -> None:
    text = variant(("safety: false", "safety: true"))
    policy, _ = load_policy_text(text, "p.yaml")
    assert policy is not None
    out = render(policy)
    assert re.search(r"cell +L1 +2,2,3,1,2,1,2 +SIS +10\.10\.10\.0/24; VLAN 10; 1 MAC; 1 asset", out)
    assert re.search(r"idmz +L3\.5 +- +10\.50\.0\.0/16, fd00:50::/64", out)
    cells = matrix(out)
    # intra_zone: check: only the zone with allow rules admits traffic inside it.
    assert [cells[z][z] for z in ("idmz", "supervisory", "cell")] == [".", "=", "."]
    assert cells["supervisory"]["cell"] == "scada-cell" and cells["cell"]["supervisory"] == "."
    assert cells["idmz"]["supervisory"] == "reports"


def wide_policy(zones: int) -> str:
    lines = ["version: 1", "system: {name: Wide plant}", "zones:"]
    for i in range(zones):
        lines.append(f"  - {{id: production-area-{i:02d}-cell-controllers, networks: [10.{i}.0.0/16]}}")
    lines.append("conduits:")
    for i in range(zones - 1):
        a, b = f"production-area-{i:02d}-cell-controllers", f"production-area-{i + 1:02d}-cell-controllers"
        lines.append(
            f"  - id: area-{i:02d}-to-area-{i + 1:02d}-interlocks\n    zones: [{a}, {b}]\n    flows:"
        )
        lines.append(f"      - {{id: f, initiator: {a}, responder: {b}, protocol: enip, operations: [io]}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("zones", [6, 40])
def test_show_wide_policy_fits_120_columns(tmp_path: Path, zones: int) -> None:
    path = write(tmp_path, "wide.yaml", wide_policy(zones))
    result = cw("show", path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert max(len(line) for line in out.splitlines()) <= 120
    # Abbreviated: zones as Z1.., conduits as C1.. with a legend naming each conduit and its zones.
    assert "  Z1 production-area-00-cell-controllers  " in out
    assert "  C1   area-00-to-area-01-interlocks (production-area-00-cell-controllers <-> " in out
    assert f"C{zones - 1} " in out
    assert ("(columns Z1 to Z" in out) == (zones == 40)  # blocks of columns only when still too wide


def test_show_invalid_policy(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", variant(("vlans: [10]", "vlans: [4096]")))
    result = cw("show", path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:36:13: error: VLAN of zone 'cell': 4096 is out of range (0-4095)",
        f"{path}: invalid (1 error)",
    ]


def test_replay_refuses_an_invalid_policy_before_reading_packets(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", variant(("vlans: [10]", "vlans: [4096]")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "replay", str(root / "pcaps" / "demo.pcap"), "--policy", path,
         "--eve", str(tmp_path / "eve.json")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"conduitwatch: {path}:36:13: error: VLAN of zone 'cell': 4096 is out of range (0-4095)",
        f"conduitwatch: error: {path}: invalid policy (1 error)",
    ]
