"""Where a policy replay's time goes, stage by stage.

``python -m bench.breakdown [--capture PATH] [--policy rules/purdue-plant.yaml] [--repeat 5]``

``bench.run`` times whole command-line runs of the tools the issues name. This times the pipeline
those runs build (the same sinks and consumers as ``conduitwatch replay --eve /dev/null --quiet``)
with one more stage each time:

1. the foundation: dissection, flows and EVE flow events (``--decoders none``);
2. every application decoder;
3. the policy engine, with backup-flood and control-health detection off (no command turns it off:
   the pipeline's ``flood_detection`` setting exists for this measurement);
4. backup-flood and control-health detection: what ``--policy`` runs.

Each run is a child process of its own, pinned to one core as ``bench.run`` pins, and timed by the CPU
time of ``Pipeline.run`` alone: start-up, imports and compiling the policy are left out, so the
differences between stages are what each stage costs per packet. Every other round runs the stages
in reverse order. Takes the bench capture (``bench/out/plant-1000000-s1.pcap``, generated if missing)
unless ``--capture`` names another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.policy.engine import CompiledPolicy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = ROOT / "rules" / "purdue-plant.yaml"


@dataclass(frozen=True)
class Stage:
    name: str
    decoders: bool
    policy: bool
    flood_detection: bool
    what: str


STAGES = (
    Stage("foundation", False, False, False, "dissection, flows, EVE flow events"),
    Stage("decoders", True, False, False, "+ every application decoder"),
    Stage("policy engine", True, True, False, "+ the zone/conduit policy"),
    Stage("policy", True, True, True, "+ backup-flood and control-health detection (= --policy)"),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def run_stage(stage: Stage, capture: Path, policy_path: Path) -> dict[str, float]:
    """One replay of ``capture`` through the stages up to ``stage``: CPU seconds of the run, packets."""
    from agent.capture.files import ReplaySource
    from agent.outputs.eve import EveSink
    from agent.pipeline import Pipeline, PipelineConfig
    from agent.summary import TrafficSummary

    compiled = _compile(policy_path) if stage.policy else None
    config = PipelineConfig(
        decoder_names=None if stage.decoders else (), flood_detection=stage.flood_detection
    )
    source = ReplaySource([str(capture)])
    pipeline = Pipeline(config, sinks=[EveSink(os.devnull)], consumers=[TrafficSummary()], policy=compiled)
    started = time.process_time()
    stats = pipeline.run(source)
    cpu = time.process_time() - started
    source.close()
    return {"cpu_s": cpu, "packets": float(stats.packets)}


def _compile(policy_path: Path) -> CompiledPolicy:
    from agent.policy.reload import compile_policy

    compiled, problems = compile_policy(str(policy_path))
    if compiled is None:
        raise SystemExit(f"invalid policy: {problems[0] if problems else policy_path}")
    return compiled


def summarize(rounds: list[dict[str, float]], packets: int) -> list[dict[str, Any]]:
    """Per stage, from the CPU seconds of each round (stage name -> seconds; every round has every
    stage): best and median seconds, packets per CPU second of the best run, what the stage adds to
    the one before it in us a packet (the median over rounds of the difference within each round),
    and its throughput against the foundation, best against best and as the median of the rounds."""
    rows = []
    previous: str | None = None
    base = STAGES[0].name
    for stage in STAGES:
        times = [r[stage.name] for r in rounds]
        best = min(times)
        row: dict[str, Any] = {
            "stage": stage.name,
            "what": stage.what,
            "best_cpu_s": best,
            "median_cpu_s": statistics.median(times),
            "packets_per_cpu_s": packets / best,
            "vs_foundation_best": min(r[base] for r in rounds) / best,
            "vs_foundation_paired": statistics.median(r[base] / r[stage.name] for r in rounds),
        }
        if previous is not None:
            added = statistics.median(r[stage.name] - r[previous] for r in rounds)
            row["adds_us_per_packet"] = added / packets * 1e6
        rows.append(row)
        previous = stage.name
    return rows


def print_rows(rows: list[dict[str, Any]], packets: int, repeat: int, pin: list[str]) -> None:
    head = f"{'stage':<14} {'best CPU s':>10} {'median':>8} {'kpkt/CPU s':>10} {'adds us/pkt':>11} " \
           f"{'vs foundation':>13} {'paired':>7}  what"  # fmt: skip
    print(head)
    print("-" * len(head))
    for row in rows:
        added = f"{row['adds_us_per_packet']:>11.2f}" if "adds_us_per_packet" in row else f"{'':>11}"
        print(
            f"{row['stage']:<14} {row['best_cpu_s']:>10.2f} {row['median_cpu_s']:>8.2f} "
            f"{row['packets_per_cpu_s'] / 1000:>10.1f} {added} {row['vs_foundation_best']:>13.1%} "
            f"{row['vs_foundation_paired']:>7.1%}  {row['what']}"
        )
    print(
        f"{packets} packets, {repeat} rounds; CPU time of the pipeline run alone (no start-up); "
        f"pinned: {' '.join(pin) or 'no'}. 'adds': median over rounds of the difference with the stage "
        f"above; 'vs foundation': best against best; 'paired': median of the per-round ratios."
    )


def main(argv: list[str] | None = None) -> int:
    # Here, not at the top: a child run needs none of it (bench.run imports the generator, and scapy).
    from bench import run as bench

    ap = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, help="replay this capture (default: the bench capture)")
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the runs to one core with taskset")
    ap.add_argument("--json", type=Path, help="also write the rows and every round's times here")
    ap.add_argument("--child", choices=sorted(BY_NAME), help=argparse.SUPPRESS)  # one run, JSON out
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.child:
        print(json.dumps(run_stage(BY_NAME[args.child], args.capture, args.policy)))
        return 0
    if args.capture:
        cap = args.capture.resolve()
        if not cap.is_file():
            ap.error(f"{cap}: no such file")
    else:
        cap, _, _ = bench.ensure_capture(bench.PACKETS, bench.SEED, False)
    try:
        _compile(args.policy)  # before the first round, not after the stages without a policy
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    packets = int(bench.capture_info(cap)["packets"])
    bench.compile_package()
    bench.warm_cache(cap)
    pin = bench.pin_prefix(args.no_pin)
    rounds: list[dict[str, float]] = []
    for rnd in range(args.repeat):
        times: dict[str, float] = {}
        for stage in bench.round_order(list(STAGES), rnd):
            argv = [*pin, sys.executable, "-m", "bench.breakdown", "--child", stage.name,
                    "--capture", str(cap), "--policy", str(args.policy)]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
            if done.returncode != 0:
                print(f"{stage.name}: exit {done.returncode}\n{done.stderr.strip()}", file=sys.stderr)
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if int(result["packets"]) != packets:
                print(f"{stage.name}: read {result['packets']:.0f} packets of {packets}", file=sys.stderr)
                return 1
            times[stage.name] = result["cpu_s"]
            print(f"  round {rnd + 1}/{args.repeat} {stage.name:<14} {result['cpu_s']:7.2f} s CPU",
                  file=sys.stderr, flush=True)  # fmt: skip
        rounds.append(times)
    rows = summarize(rounds, packets)
    print_rows(rows, packets, args.repeat, pin)
    if args.json:
        args.json.write_text(json.dumps({"capture": str(cap), "packets": packets, "pin": pin,
                                         "rows": rows, "rounds": rounds}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
