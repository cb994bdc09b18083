"""The benchmark runner's own pieces: packet counting, per-process measurement and an end-to-end run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import gen_plant, run
from tests.tooling import require_tool


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = tmp_path_factory.mktemp("run") / "small.pcap"
    meta = gen_plant.generate(path, 1500, seed=9, profile="demo")
    gen_plant.meta_path(path).write_text(json.dumps(meta))
    return path, meta


def test_count_pcap(capture: tuple[Path, dict[str, object]]) -> None:
    path, meta = capture
    assert run.count_pcap(path) == (meta["packets"], meta["frame_bytes"])
    assert run.capture_info(path)["packets"] == 1500


def test_measure_reports_the_tool_not_the_runner(tmp_path: Path) -> None:
    helper = run.build_helper(tmp_path)
    if helper is None:
        pytest.skip("no C compiler: the runner falls back to os.wait4 on the tool itself")
    ballast = bytearray(200 << 20)  # the runner grows; the tool must not inherit that in its figures
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    code, small = run.measure(["/bin/true"], tmp_path / "true.stderr", helper)
    assert code == 0 and small["maxrss_kib"] < 20_000
    code, big = run.measure([sys.executable, "-c", "b = bytearray(64 << 20)"], tmp_path / "py.stderr", helper)
    assert code == 0 and big["maxrss_kib"] > 64 * 1024
    code, _ = run.measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "exit.stderr", helper)
    assert code == 3
    del ballast


@pytest.mark.tool
def test_end_to_end_with_tcpdump(tmp_path: Path, capture: tuple[Path, dict[str, object]]) -> None:
    require_tool("tcpdump")
    path, _ = capture
    results = tmp_path / "results.json"
    assert (
        run.main(["--capture", str(path), "--tools", "tcpdump", "--repeat", "1", "--results", str(results)])
        == 0
    )
    report = json.loads(results.read_text())
    tcpdump = report["tools"]["tcpdump"]
    assert tcpdump["status"] == "ok", tcpdump
    assert report["capture"]["packets"] == 1500
    assert tcpdump["packets_per_s"] > 0 and tcpdump["peak_rss_mib"] > 0
