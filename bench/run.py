"""Benchmark: conduitwatch replay against tcpdump and Suricata on the same generated plant capture.

``python -m bench.run [--packets 1000000] [--seed 1] [--capture PATH] [--repeat 3]``

* Generates ``bench/out/plant-<packets>-s<seed>.pcap`` with ``bench.gen_plant`` (or reuses it when its
  sidecar metadata matches the generator version, profile, seed and packet count), or takes ``--capture``.
* Reads the capture once so that every tool starts from a warm page cache.
* Runs each tool ``--repeat`` times, round-robin, pinned to one core with ``taskset -c 1`` when taskset
  exists and the machine has two or more cores (``--no-pin`` to turn it off). Every other round runs
  the tools in reverse order, so that a machine slowing down or speeding up during a round does not
  always favour the same tool of a compared pair:

  - ``conduitwatch replay <capture> --eve /dev/null --quiet`` (``.venv/bin/conduitwatch``, falling back to
    ``python -m agent.cli``);
  - ``tcpdump -r <capture> -w /dev/null`` (reads and rewrites every packet: the I/O floor);
  - ``suricata -r <capture> --runmode single`` with a throw-away minimal config, log dir and no rules.

* Peak RSS and CPU time are per process: each tool is forked by the tiny ``bench/spawn_rusage.c`` helper
  (compiled into bench/out/ on first use) and reaped there with ``wait4``; the runner reaps the helper with
  ``os.wait4``.  Reaping the tool directly from Python would report at least the runner's own RSS, since
  Linux carries the peak RSS over ``execve``.  Without a C compiler the runner falls back to that and
  says so in the table and in results.json.
* Prints a table (best wall time, median, packets/s, Mbit/s of frame data, peak RSS, CPU) and writes
  ``bench/out/results.json``.  A tool that is not installed is listed as such, never an error.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.gen_plant import GENERATOR_VERSION, generate, meta_path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# "conduitwatch-core" is the foundation pipeline alone (dissect, flows, EVE flow events: --decoders none);
# "conduitwatch" adds every application decoder; "conduitwatch-policy" also checks the Purdue example
# policy (rules/purdue-plant.yaml) and writes its alerts; "conduitwatch-exporter" is the same with the
# Prometheus exporter on and scraped every second while it runs (the exporter's cost against -policy).
TOOLS = (
    "conduitwatch-core",
    "conduitwatch",
    "conduitwatch-policy",
    "conduitwatch-exporter",
    "tcpdump",
    "suricata",
)
SCRAPE_INTERVAL_S = 1.0  # 15x a usual production scrape interval: the exporter's worst realistic case
PIN_CPU = "1"
PACKETS, SEED = 1_000_000, 1  # the bench capture: bench/out/plant-1000000-s1.pcap
HELPER_SRC = Path(__file__).with_name("spawn_rusage.c")

SURICATA_YAML = """%YAML 1.1
---
# Minimal configuration written by bench/run.py: no rules, the OT parsers on, flow records to /dev/null.
vars:
  address-groups:
    HOME_NET: "[10.0.0.0/8,fd00::/8]"
    EXTERNAL_NET: "!$HOME_NET"
  port-groups:
    HTTP_PORTS: "80"
    DNP3_PORTS: "20000"
    MODBUS_PORTS: "502"
default-log-dir: {logdir}
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: /dev/null
      types:
        - flow
        - anomaly
app-layer:
  protocols:
    modbus:
      enabled: yes
      detection-ports:
        dp: 502
    dnp3:
      enabled: yes
      detection-ports:
        dp: 20000
    smb:
      enabled: yes
      detection-ports:
        dp: 139, 445
    http:
      enabled: yes
    dns:
      tcp:
        enabled: yes
        detection-ports:
          dp: 53
      udp:
        enabled: yes
        detection-ports:
          dp: 53
    ntp:
      enabled: yes
"""


@dataclass
class Tool:
    name: str
    argv: list[str] | None  # None: not available
    note: str = ""
    version: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)
    scrape_url: str = ""  # scraped every SCRAPE_INTERVAL_S while the tool runs
    scrapes: int = 0
    status: str = "ok"
    error: str = ""
    cleanup: tempfile.TemporaryDirectory[str] | None = None


# ------------------------------------------------------------------------------------------ capture


def count_pcap(path: Path) -> tuple[int, int]:
    """Packets and captured frame bytes of a classic pcap file, walking the record headers."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise ValueError(f"{path}: too short for a pcap file")
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            rec = struct.Struct("<IIII")
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            rec = struct.Struct(">IIII")
        else:
            raise ValueError(f"{path}: not a classic pcap file (pcapng is not counted here)")
        packets = 0
        total = 0
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            caplen = rec.unpack(h)[2]
            f.seek(caplen, os.SEEK_CUR)
            packets += 1
            total += caplen
    return packets, total


def ensure_capture(packets: int, seed: int, regen: bool) -> tuple[Path, dict[str, Any], bool]:
    OUT.mkdir(parents=True, exist_ok=True)
    cap = OUT / f"plant-{packets}-s{seed}.pcap"
    mp = meta_path(cap)
    if cap.exists() and mp.exists() and not regen:
        meta = json.loads(mp.read_text())
        if (
            meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("profile") == "bench"
            and meta.get("seed") == seed
            and meta.get("packets") == packets
            and meta.get("file_bytes") == cap.stat().st_size
        ):
            return cap, meta, True
    print(
        f"generating {cap.relative_to(ROOT)} ({packets} packets, seed {seed}) ...",
        file=sys.stderr,
        flush=True,
    )
    meta = generate(cap, packets, seed, "bench")
    mp.write_text(json.dumps(meta, indent=2) + "\n")
    return cap, meta, False


def capture_info(path: Path) -> dict[str, Any]:
    mp = meta_path(path)
    if mp.exists():
        meta: dict[str, Any] = json.loads(mp.read_text())
        if meta.get("file_bytes") == path.stat().st_size:
            return meta
    packets, frame_bytes = count_pcap(path)
    return {"packets": packets, "frame_bytes": frame_bytes, "file_bytes": path.stat().st_size}


def pin_prefix(no_pin: bool) -> list[str]:
    """The command prefix that pins a run to one core (taskset, on a machine with two or more), or none."""
    if not no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", PIN_CPU]
    return []


def compile_package() -> None:
    """Byte-compile agent/ as an installed package is (pip and Debian packaging compile at install).

    Without it, a run under PYTHONDONTWRITEBYTECODE (or from a read-only tree) compiles every module
    from source at start-up: about 0.3 s on this VM, which the per-packet figures would wrongly carry.
    """
    compileall.compile_dir(str(ROOT / "agent"), quiet=1)


def warm_cache(path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass
    return time.perf_counter() - t0


# -------------------------------------------------------------------------------------------- tools


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else ""


def conduitwatch_core_tool(cap: Path) -> Tool:
    tool = conduitwatch_tool(cap)
    tool.name = "conduitwatch-core"
    if tool.argv is not None:
        tool.argv = [*tool.argv, "--decoders", "none"]
        tool.note += " --decoders none"
    return tool


def conduitwatch_policy_tool(cap: Path) -> Tool:
    tool = conduitwatch_tool(cap)
    tool.name = "conduitwatch-policy"
    if tool.argv is not None:
        policy = ROOT / "rules" / "purdue-plant.yaml"
        tool.argv = [*tool.argv, "--policy", str(policy)]
        tool.note += f" --policy {policy.relative_to(ROOT)}"
    return tool


def conduitwatch_exporter_tool(cap: Path) -> Tool:
    tool = conduitwatch_policy_tool(cap)
    tool.name = "conduitwatch-exporter"
    if tool.argv is not None:
        port = _free_port()
        tool.argv = [*tool.argv, "--web.listen-address", f"127.0.0.1:{port}", "--web.linger", "0"]
        tool.scrape_url = f"http://127.0.0.1:{port}/metrics"
        tool.note += f" --web.listen-address (scraped every {SCRAPE_INTERVAL_S:g} s)"
    return tool


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Scraper:
    """Fetches a metrics URL every SCRAPE_INTERVAL_S in a thread, as Prometheus would, and counts answers."""

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(SCRAPE_INTERVAL_S):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                self.answers += 1
            except OSError:
                pass  # not listening yet, or already finished

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.answers


def conduitwatch_tool(cap: Path) -> Tool:
    exe = ROOT / ".venv" / "bin" / "conduitwatch"
    if exe.exists():
        base = [str(exe)]
        note = str(exe.relative_to(ROOT))
    elif (ROOT / "agent" / "cli.py").exists() or (ROOT / "agent" / "cli" / "__init__.py").exists():
        base = [sys.executable, "-m", "agent.cli"]
        note = f"{Path(sys.executable).name} -m agent.cli"
    else:
        return Tool("conduitwatch", None, "not installed (no .venv/bin/conduitwatch, no agent/cli.py)")
    return Tool(
        "conduitwatch",
        [*base, "replay", str(cap), "--eve", "/dev/null", "--quiet"],
        note,
        _version([*base, "--version"]),
    )


def tcpdump_tool(cap: Path) -> Tool:
    exe = shutil.which("tcpdump")
    if not exe:
        return Tool("tcpdump", None, "not installed (apt-get install tcpdump)")
    return Tool(
        "tcpdump",
        [exe, "-r", str(cap), "-w", "/dev/null"],
        "read + rewrite, no dissection",
        _version([exe, "--version"]),
    )


def suricata_tool(cap: Path) -> Tool:
    exe = shutil.which("suricata")
    if not exe:
        return Tool(
            "suricata", None, "not installed (not in Debian bookworm main; bookworm-backports has it)"
        )
    tmp = tempfile.TemporaryDirectory(prefix="cw-bench-suricata-")
    cfg = Path(tmp.name) / "suricata.yaml"
    cfg.write_text(SURICATA_YAML.format(logdir=tmp.name))
    argv = [exe, "-r", str(cap), "--runmode", "single", "-c", str(cfg), "-l", tmp.name, "-S", "/dev/null"]
    tool = Tool("suricata", argv, "runmode single, no rules, eve flow -> /dev/null", _version([exe, "-V"]))
    tool.cleanup = tmp
    return tool


def build_helper(out_dir: Path = OUT) -> Path | None:
    """Compile bench/spawn_rusage.c into out_dir (cached by source hash); None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    digest = hashlib.sha256(HELPER_SRC.read_bytes()).hexdigest()[:12]
    exe = out_dir / f".spawn_rusage-{digest}"
    if exe.exists():
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_name(exe.name + ".tmp")
    res = subprocess.run(
        [cc, "-O2", "-o", str(tmp), str(HELPER_SRC)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        print(f"warning: cannot compile {HELPER_SRC.name}: {res.stderr.strip()}", file=sys.stderr)
        return None
    tmp.replace(exe)
    return exe


def measure(argv: list[str], stderr_path: Path, helper: Path | None) -> tuple[int, dict[str, float]]:
    """Run once; returns (exit code, wall/user/sys seconds and the tool's own peak RSS in KiB).

    With the helper, the tool is forked by that tiny process and its rusage is the tool's alone; without
    it the tool is reaped here with os.wait4, and its peak RSS also counts this Python process's size,
    which Linux carries over across execve.
    """
    result = stderr_path.with_suffix(".rusage")
    cmd = [str(helper), str(result), *argv] if helper else argv
    with open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # already reaped: keep Popen from waiting again
    if helper is None:
        return code, {
            "wall": wall,
            "user": ru.ru_utime,
            "sys": ru.ru_stime,
            "maxrss_kib": float(ru.ru_maxrss),
        }
    try:
        fields = result.read_text().split()
        result.unlink()
    except OSError:
        return code if code else 127, {"wall": wall, "user": 0.0, "sys": 0.0, "maxrss_kib": 0.0}
    return int(fields[0]), {
        "wall": wall,
        "user": float(fields[2]),
        "sys": float(fields[3]),
        "maxrss_kib": float(fields[1]),
    }


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# ------------------------------------------------------------------------------------------- report


def summarize(tool: Tool, packets: int, frame_bytes: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": tool.status,
        "note": tool.note,
        "version": tool.version,
        "argv": tool.argv,
        "runs": tool.runs,
    }
    if tool.error:
        out["error"] = tool.error
    if tool.scrape_url:
        out["scrapes"] = tool.scrapes
    if tool.status == "ok" and tool.runs:
        walls = [r["wall"] for r in tool.runs]
        best = min(walls)
        best_run = tool.runs[walls.index(best)]
        out.update(
            best_wall_s=round(best, 3),
            median_wall_s=round(statistics.median(walls), 3),
            packets_per_s=round(packets / best),
            mbit_per_s=round(frame_bytes * 8 / best / 1e6, 1),
            peak_rss_mib=round(max(r["maxrss_kib"] for r in tool.runs) / 1024, 1),
            cpu_s_best_run=round(best_run["user"] + best_run["sys"], 3),
            packets_per_cpu_s=round(packets / max(1e-9, min(r["user"] + r["sys"] for r in tool.runs))),
        )
    return out


def print_table(
    results: dict[str, dict[str, Any]],
    ratios: dict[str, dict[str, float]],
    packets: int,
    pin: list[str],
    rss_method: str,
) -> None:
    cols = ("best s", "median s", "kpkt/s", "Mbit/s", "peak RSS MiB", "CPU s")
    head = (
        f"{'tool':<19} {cols[0]:>8} {cols[1]:>9} {cols[2]:>8} {cols[3]:>8} {cols[4]:>13} {cols[5]:>7}  note"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if r["status"] != "ok":
            print(f"{name:<19} {r['status']:>48}  {r['note']}")
            continue
        kpps = r["packets_per_s"] / 1000
        print(
            f"{name:<19} {r['best_wall_s']:>8.2f} {r['median_wall_s']:>9.2f} {kpps:>8.1f}"
            f" {r['mbit_per_s']:>8.1f} {r['peak_rss_mib']:>13.1f} {r['cpu_s_best_run']:>7.2f}  {r['note']}"
        )
    print(f"{packets} packets; best of the repeats; pinned: {' '.join(pin) or 'no'}; peak RSS: {rss_method}")
    for name, tool, reference, label in RATIOS:
        ratio = ratios.get(name)
        if ratio is not None:
            print(
                f"{label} ({tool} / {reference}): {ratio['wall']:.1%} of the packets/s, {ratio['cpu']:.1%} "
                f"of the packets per CPU second (best runs); median of the per-round CPU ratios: "
                f"{ratio.get('paired_cpu_median', 0.0):.1%}"
                + (
                    f" (middle half of the rounds: {ratio['paired_cpu_q1']:.1%}-{ratio['paired_cpu_q3']:.1%})"
                    if "paired_cpu_q1" in ratio
                    else ""
                )
            )


# The comparisons the issues ask for, and one they do not: (name, tool, reference tool, what it says).
# "policy_layer" isolates what the policy engine and the flood detector cost on top of the decoders
# they need, which "policy" (issue 5's target) counts together with the decoders' own cost.
RATIOS = (
    ("decoders", "conduitwatch", "conduitwatch-core", "all decoders / foundation (core)"),
    ("policy", "conduitwatch-policy", "conduitwatch-core", "Purdue policy / foundation (core)"),
    ("policy_layer", "conduitwatch-policy", "conduitwatch", "Purdue policy / all decoders (not a target)"),
    ("exporter", "conduitwatch-exporter", "conduitwatch-policy", "exporter on / off"),
)


def throughput_ratio(
    results: dict[str, dict[str, Any]], tool: str, reference: str
) -> dict[str, float] | None:
    """Throughput of ``tool`` over that of ``reference``: by wall time and by CPU time (user + sys,
    scrape threads included) of the best runs, and as the median of the per-round CPU ratios.
    """
    on, off = results.get(tool, {}), results.get(reference, {})
    if (
        on.get("status") != "ok"
        or off.get("status") != "ok"
        or "packets_per_s" not in on
        or "packets_per_s" not in off
    ):
        return None
    ratios = {
        "wall": float(on["packets_per_s"]) / float(off["packets_per_s"]),
        "cpu": float(on["packets_per_cpu_s"]) / float(off["packets_per_cpu_s"]),
    }
    # Rounds run the tools one after the other, so round i of each was measured under the same load:
    # the median of the per-round ratios is the figure a shared, noisy machine disturbs least (best
    # against best pairs runs from different moments).
    pairs = list(zip(off.get("runs", []), on.get("runs", []), strict=False))
    per_round = [(a["user"] + a["sys"]) / max(1e-9, b["user"] + b["sys"]) for a, b in pairs]
    if per_round:
        ratios["paired_cpu_median"] = statistics.median(per_round)
    if len(per_round) >= 4:
        # The middle half of the per-round ratios: how far one more run could move the figures.
        q1, _, q3 = statistics.quantiles(per_round, n=4)
        ratios["paired_cpu_q1"] = q1
        ratios["paired_cpu_q3"] = q3
    return ratios


T = TypeVar("T")


def round_order(tools: list[T], rnd: int) -> list[T]:
    """The tools in the order round ``rnd`` runs them: as given, reversed every other round."""
    return tools if rnd % 2 == 0 else tools[::-1]


def all_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, tool, reference, _ in RATIOS:
        ratio = throughput_ratio(results, tool, reference)
        if ratio is not None:
            out[name] = ratio
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=PACKETS, help=f"packets to generate (default {PACKETS})")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--capture", type=Path, help="benchmark this capture instead of generating one")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the tools to one core with taskset")
    ap.add_argument(
        "--regen", action="store_true", help="regenerate the capture even if a matching one exists"
    )
    ap.add_argument("--results", type=Path, default=OUT / "results.json")
    args = ap.parse_args(argv)
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(TOOLS))
    if unknown:
        ap.error(f"unknown tools: {', '.join(unknown)}")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    gen_info: dict[str, Any] = {}
    if args.capture:
        cap = args.capture.resolve()
        if not cap.is_file():
            ap.error(f"{cap}: no such file")
        info = capture_info(cap)
    else:
        t0 = time.perf_counter()
        cap, info, reused = ensure_capture(args.packets, args.seed, args.regen)
        gen_info = {"reused": reused, "seconds": round(time.perf_counter() - t0, 2)}
    packets = int(info["packets"])
    frame_bytes = int(info["frame_bytes"])
    compile_package()
    warm = warm_cache(cap)
    print(
        f"capture {cap} : {packets} packets, {info['file_bytes'] / 1e6:.1f} MB, "
        f"avg frame {frame_bytes / packets:.0f} B (read in {warm:.1f} s to warm the cache)",
        file=sys.stderr,
    )

    pin = pin_prefix(args.no_pin)
    helper = build_helper()
    rss_method = (
        "per tool: forked by bench/spawn_rusage.c, reaped with wait4"
        if helper
        else "os.wait4 from the runner (no C compiler: peak RSS includes the runner's own size)"
    )
    makers = {
        "conduitwatch-core": conduitwatch_core_tool,
        "conduitwatch": conduitwatch_tool,
        "conduitwatch-policy": conduitwatch_policy_tool,
        "conduitwatch-exporter": conduitwatch_exporter_tool,
        "tcpdump": tcpdump_tool,
        "suricata": suricata_tool,
    }
    tools = [makers[name](cap) for name in wanted]
    for tool in tools:
        if tool.argv is None:
            tool.status = "not installed"
    try:
        with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
            for rnd in range(args.repeat):
                for tool in round_order(tools, rnd):
                    if tool.status != "ok" or tool.argv is None:
                        continue
                    errfile = Path(tmp) / f"{tool.name}.stderr"
                    scraper = _Scraper(tool.scrape_url) if tool.scrape_url else None
                    code, run = measure([*pin, *tool.argv], errfile, helper)
                    if scraper is not None:
                        tool.scrapes += scraper.stop()
                    if code != 0:
                        tool.status = f"failed (exit {code})"
                        tool.error = _tail(errfile)
                        print(f"{tool.name}: exit {code}\n{tool.error}", file=sys.stderr)
                        continue
                    tool.runs.append({k: round(v, 4) for k, v in run.items()})
                    print(
                        f"  round {rnd + 1}/{args.repeat} {tool.name:<19} {run['wall']:7.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for tool in tools:
            if tool.cleanup is not None:
                tool.cleanup.cleanup()

    results = {tool.name: summarize(tool, packets, frame_bytes) for tool in tools}
    print()
    ratios = all_ratios(results)
    print_table(results, ratios, packets, pin, rss_method)
    keys = ("seed", "profile", "span_seconds", "vlan_tagged_share", "flows")
    extra = {k: info[k] for k in keys if k in info}
    report: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "capture": {
            "path": str(cap),
            "packets": packets,
            "frame_bytes": frame_bytes,
            "file_bytes": info["file_bytes"],
            "avg_frame_bytes": round(frame_bytes / packets, 1),
            **extra,
            "generation": gen_info,
        },
        "pinning": " ".join(pin) or "none",
        "rss_method": rss_method,
        "repeat": args.repeat,
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "tools": results,
        "ratios": ratios,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.results}", file=sys.stderr)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
