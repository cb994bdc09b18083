"""The HTML report in a real browser: headless Chromium renders it without a console error, shows
every section, and leaves a screenshot (and the rendered DOM) in the test's tmp dir as an artifact.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agent.report.html import SECTIONS
from tests.tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def console_errors(stderr: str) -> list[str]:
    """Page console messages Chromium logs with --enable-logging (its own D-Bus noise is not the page's)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    binary = require_tool("chromium")
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "report",
            "pcaps/demo.pcap",
            "--policy",
            "rules/demo.yaml",
            "--out",
            str(out),
            "--generated-at",
            "2026-01-31T12:00:00Z",
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    url = (out / "report.html").resolve().as_uri()
    dom = chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    (tmp_path / "rendered.html").write_text(dom.stdout)
    assert console_errors(dom.stderr) == []
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">' in dom.stdout
        assert f"<h2>{title}</h2>" in dom.stdout
    screenshot = tmp_path / "report.png"
    shot = chromium(
        binary, tmp_path / "profile-shot", "--window-size=1240,3400", f"--screenshot={screenshot}", url
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert console_errors(shot.stderr) == []
    assert screenshot.stat().st_size > 20_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = tmp_path / "report.pdf"
    printed = chromium(
        binary, tmp_path / "profile-pdf", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url
    )
    assert printed.returncode == 0 and pdf.read_bytes()[:5] == b"%PDF-"
    # Printed on A4 (595 x 842 points), as the stylesheet's @page asks.
    boxes = re.findall(rb"MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf.read_bytes())
    assert boxes and all(round(float(w)) == 595 and round(float(h)) == 842 for w, h in boxes)


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The detector above is not blind: a page that logs an error is caught."""
    binary = require_tool("chromium")
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('broken report')</script></body></html>"
    )
    done = chromium(binary, tmp_path / "profile", "--dump-dom", page.resolve().as_uri())
    assert any("broken report" in line for line in console_errors(done.stderr))
