"""Command line: ``conduitwatch replay``, ``conduitwatch run``, ``conduitwatch version``.

Settings come from, in rising precedence: a YAML config file (``--config``, sections named after
the commands), the environment (``CONDUITWATCH_<COMMAND>_<OPTION>``, e.g. CONDUITWATCH_RUN_INTERFACE),
and flags. Exit codes: 0 ok, 1 runtime error (including a capture that went bad half way),
2 usage or invalid input. Bad input is reported as one line, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent import __version__
from agent.capture.base import CaptureError
from agent.capture.pacing import paced
from agent.flows import FlowConfig
from agent.outputs.eve import EveSink
from agent.pipeline import EVENTS_ALL, EVENTS_DEFAULT, Pipeline, PipelineConfig, RunStats, Sink

if TYPE_CHECKING:
    from agent.policy.engine import CompiledPolicy
    from agent.policy.reload import PolicyReloader
from agent.records import CaptureProblem
from agent.summary import TrafficSummary, render

log = logging.getLogger("conduitwatch")

EXIT_OK = 0
_DEFAULT_FLOWS = FlowConfig()
EXIT_RUNTIME = 1
EXIT_INVALID = 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"conduitwatch: error: {message}", err=True)
    sys.exit(code)


def _load_config(ctx: click.Context, _param: click.Parameter, path: str | None) -> str | None:
    if not path:
        return path
    import yaml  # only with a config file: startup time counts for short replays

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise click.BadParameter(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise click.BadParameter(f"{path}: expected sections per command, e.g. 'replay: {{eve: out.json}}'")
    # Option names in the file may use dashes like the flags do.
    ctx.default_map = {cmd: {k.replace("-", "_"): v for k, v in opts.items()} for cmd, opts in data.items()}
    return path


@click.group(context_settings={"auto_envvar_prefix": "CONDUITWATCH", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="conduitwatch")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="CONDUITWATCH_CONFIG",
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="YAML file with one section per command (replay:, run:) holding option defaults.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Diagnostics on stderr.",
)
def cli(log_level: str) -> None:
    """conduitwatch: passive OT network monitoring (IEC 62443 zones and conduits)."""
    logging.basicConfig(
        level=log_level.upper(), format="conduitwatch: %(levelname)s: %(message)s", stream=sys.stderr
    )


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--eve", "eve", metavar="FILE", help="Write EVE JSON lines to FILE ('-' for stdout)."),
        click.option("--policy", "policy_path", metavar="FILE", type=click.Path(dir_okay=False),
                     help="Zone/conduit policy (docs/policy.md) to check traffic against; reloaded on SIGHUP "
                          "and when the file changes."),
        click.option("--quiet", "-q", is_flag=True, help="Do not print the summary or progress."),
        click.option("--events", type=click.Choice([EVENTS_DEFAULT, EVENTS_ALL]), default=EVENTS_DEFAULT,
                     show_default=True,
                     help="EVE event types: default = flow, anomaly, stats; "
                          "all adds one 'ot' event per message."),
        click.option("--decoders", "decoders", metavar="NAMES", callback=_parse_decoders, default="all",
                     show_default=True,
                     help="Application decoders: all, none, or a comma-separated list, e.g. modbus,dnp3."),
        click.option("--ports", "ports", multiple=True, metavar="PROTO=PORT[,PORT]", callback=_parse_ports,
                     help="Also decode PROTO on these ports, e.g. --ports modbus=5020 (repeatable)."),
        click.option("--max-flows", type=click.IntRange(min=1), default=_DEFAULT_FLOWS.max_flows,
                     show_default=True,
                     help="Flow table size; the flow idle longest is evicted (and counted) beyond it."),
        click.option("--flow-timeout", type=click.FloatRange(min=0.001), default=_DEFAULT_FLOWS.tcp_timeout,
                     show_default=True, help="Idle timeout of established TCP flows, seconds."),
        click.option("--udp-timeout", type=click.FloatRange(min=0.001), default=_DEFAULT_FLOWS.udp_timeout,
                     show_default=True, help="Idle timeout of UDP flows, seconds."),
        click.option("--active-timeout", type=click.FloatRange(min=1), default=_DEFAULT_FLOWS.active_timeout,
                     show_default=True,
                     help="A flow older than this is reported and continued as a new record."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _flood_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the backup-flood and control-health detector (agent.detectors.floods)."""
    return click.option(
        "--bin-size", "bin_size", type=click.FloatRange(min=0.001, max=10.0), default=0.1, show_default=True,
        help="Width in seconds of the load bins per link (with a --policy that declares links).",
    )(f)  # fmt: skip


def _parse_ports(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...] | str | None
) -> dict[str, tuple[int, ...]]:
    from agent.decoders import PROTOCOLS

    known = {p.name for p in PROTOCOLS}
    if isinstance(values, str):  # from a config file or the environment
        values = tuple(values.split())
    result: dict[str, tuple[int, ...]] = {}
    for value in values or ():
        name, sep, ports = value.partition("=")
        if not sep or name not in known:
            raise click.BadParameter(
                f"{value!r}: expected PROTO=PORT[,PORT] with PROTO one of {', '.join(sorted(known))}"
            )
        try:
            numbers = tuple(int(p) for p in ports.split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r}: ports must be numbers") from None
        if not all(0 < n < 65536 for n in numbers):
            raise click.BadParameter(f"{value!r}: ports must be 1-65535")
        result[name] = result.get(name, ()) + numbers
    return result


def _parse_decoders(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...] | None:
    from agent.decoders import PROTOCOLS

    if value == "all":
        return None
    if value == "none":
        return ()
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    known = {p.name for p in PROTOCOLS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown decoder {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return names


def _flow_config(
    max_flows: int, flow_timeout: float, udp_timeout: float, active_timeout: float
) -> FlowConfig:
    return FlowConfig(max_flows=max_flows, tcp_timeout=flow_timeout, udp_timeout=udp_timeout,
                      active_timeout=active_timeout)  # fmt: skip


def _sinks(eve: str | None, line_buffered: bool) -> list[Sink]:
    sinks: list[Sink] = []
    if eve:
        try:
            sinks.append(EveSink(eve, line_buffered=line_buffered))
        except OSError as e:
            _fail(f"cannot open EVE output {eve}: {e.strerror}", EXIT_INVALID)
    return sinks


def _policy(path: str | None) -> CompiledPolicy | None:
    """The compiled policy, or a clear refusal (every error with file:line:column) and exit 2."""
    if path is None:
        return None
    from agent.policy.reload import compile_policy

    compiled, problems = compile_policy(path)
    for problem in problems:
        if problem.severity == "error" or compiled is not None:
            click.echo(f"conduitwatch: {problem}", err=True)
    if compiled is None:
        _fail(f"{path}: invalid policy ({sum(p.severity == 'error' for p in problems)} errors)", EXIT_INVALID)
    return compiled


def _watch_policy(pipeline: Pipeline, path: str | None) -> PolicyReloader | None:
    """SIGHUP and a file watch reload the policy into the running pipeline."""
    if path is None or pipeline.policy is None:
        return None
    from agent.policy.reload import PolicyReloader

    reloader = PolicyReloader(path, pipeline.policy)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reloader.reload("SIGHUP"))
    reloader.start_watching()
    return reloader


class _Progress:
    """A one-line progress display on stderr, refreshed at most twice a second."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def __call__(self, stats: RunStats) -> None:
        now = time.perf_counter()
        if now - self.last < 0.5:
            return
        self.last = now
        rate = stats.packets / (now - self.started) if now > self.started else 0.0
        sys.stderr.write(f"\r{stats.packets:,} packets, {rate:,.0f} packets/s ")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class _Stopper:
    """SIGINT/SIGTERM ask the pipeline to stop; outputs are then flushed and the summary printed.

    A second signal falls back to the default behaviour, so a hung run can still be killed.
    """

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.on_stop = on_stop
        self.requested = False
        self._previous: dict[int, Any] = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
        self.on_stop()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _finish(
    pipeline: Pipeline,
    summary: TrafficSummary,
    stats: RunStats,
    problems: list[CaptureProblem],
    quiet: bool,
    summary_to_stderr: bool,
    extra: list[str],
) -> int:
    for sink in pipeline.sinks:
        sink.close()
    if not quiet:
        table = pipeline.flows
        text = render(
            summary,
            stats,
            {"created": table.created, "evicted": table.evicted},
            pipeline.dissector.anomalies,
            problems,
            policy=pipeline.policy,
            operations={name: st.operations for name, st in pipeline.decoders.stats.items()},
        )
        if extra:
            text += "\n" + "\n".join(extra)
        click.echo(text, err=summary_to_stderr)
    for problem in problems:
        click.echo(f"conduitwatch: error: {problem}", err=True)
    return EXIT_RUNTIME if problems else EXIT_OK


@cli.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option(
    "--realtime", is_flag=True, help="Keep the recorded pacing instead of replaying as fast as possible."
)
@_common_options
@_flood_options
def replay(
    captures: tuple[str, ...],
    realtime: bool,
    bin_size: float,
    eve: str | None,
    policy_path: str | None,
    quiet: bool,
    events: str,
    decoders: tuple[str, ...] | None,
    ports: dict[str, tuple[int, ...]],
    max_flows: int,
    flow_timeout: float,
    udp_timeout: float,
    active_timeout: float,
) -> None:
    """Replay capture files (pcap, pcapng, gzip-compressed; directories of them) in time order."""
    from agent.capture.files import ReplaySource

    compiled = _policy(policy_path)
    try:
        source = ReplaySource(captures)
    except CaptureError as e:
        _fail(str(e), EXIT_INVALID)
    config = PipelineConfig(
        flows=_flow_config(max_flows, flow_timeout, udp_timeout, active_timeout),
        ports=ports,
        decoder_names=decoders,
        events=events,
        replay=True,
        flood_bin_seconds=bin_size,
    )
    summary = TrafficSummary()
    progress = _Progress() if sys.stderr.isatty() and not quiet else None
    pipeline = Pipeline(
        config,
        sinks=_sinks(eve, line_buffered=False),
        consumers=[summary],
        progress=progress,
        policy=compiled,
    )
    stopper = _Stopper(pipeline.stop)
    reloader = _watch_policy(pipeline, policy_path)
    try:
        stats = pipeline.run(source, paced(source, lambda: stopper.requested) if realtime else None)
    finally:
        if reloader is not None:
            reloader.stop()
        stopper.restore()
        if progress is not None:
            progress.clear()
        source.close()
    code = _finish(pipeline, summary, stats, source.problems, quiet, summary_to_stderr=eve == "-", extra=[])
    sys.exit(code)


@cli.command()
@click.option("--interface", "-i", required=True, help="Interface to listen on (a SPAN/mirror port).")
@click.option("--bpf", help="Capture filter in tcpdump syntax, compiled and applied in the kernel.")
@click.option("--promisc/--no-promisc", default=True, show_default=True, help="Promiscuous mode.")
@click.option("--snaplen", type=click.IntRange(64, 262144), default=65535, show_default=True)
@_common_options
@_flood_options
def run(
    interface: str,
    bin_size: float,
    bpf: str | None,
    promisc: bool,
    snaplen: int,
    eve: str | None,
    policy_path: str | None,
    quiet: bool,
    events: str,
    decoders: tuple[str, ...] | None,
    ports: dict[str, tuple[int, ...]],
    max_flows: int,
    flow_timeout: float,
    udp_timeout: float,
    active_timeout: float,
) -> None:
    """Monitor a live interface until SIGINT/SIGTERM. Receive only: it never transmits."""
    from agent.capture.live import LiveCaptureError, LiveSource

    compiled = _policy(policy_path)
    try:
        source = LiveSource(interface, bpf=bpf, promisc=promisc, snaplen=snaplen)
    except LiveCaptureError as e:
        _fail(str(e), EXIT_INVALID)
    config = PipelineConfig(
        flows=_flow_config(max_flows, flow_timeout, udp_timeout, active_timeout),
        ports=ports,
        decoder_names=decoders,
        events=events,
        replay=False,
        flood_bin_seconds=bin_size,
    )
    summary = TrafficSummary()
    pipeline = Pipeline(config, sinks=_sinks(eve, line_buffered=True), consumers=[summary], policy=compiled)

    def stop() -> None:
        pipeline.stop()
        source.stop()

    stopper = _Stopper(stop)
    reloader = _watch_policy(pipeline, policy_path)
    log.info("capturing on %s%s", interface, f" with filter {bpf!r}" if bpf else "")
    try:
        stats = pipeline.run(source)
    finally:
        if reloader is not None:
            reloader.stop()
        stopper.restore()
        source.close()
    kernel = pipeline.kernel or {}
    extra = [
        f"kernel: {kernel.get('kernel_packets', 0):,} packets passed the filter, "
        f"{kernel.get('kernel_drops', 0):,} dropped before they could be read"
    ]
    code = _finish(
        pipeline, summary, stats, source.problems, quiet, summary_to_stderr=eve == "-", extra=extra
    )
    sys.exit(code)


@cli.command()
def version() -> None:
    """Print the version of conduitwatch and of the libraries it relies on."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    click.echo(f"conduitwatch {__version__}")
    click.echo(f"python {platform.python_version()}")
    for dist in ("scapy", "prometheus-client", "pyshark", "click", "pyyaml"):
        try:
            click.echo(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            click.echo(f"{dist} not installed")


from agent.policy.cli import policy  # noqa: E402 - the group is defined above; subcommands register here

cli.add_command(policy)


def main() -> None:
    """Entry point: any unexpected failure is one line on stderr and exit code 1."""
    try:
        cli(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as e:
        if os.environ.get("CONDUITWATCH_DEBUG"):
            raise
        click.echo(
            f"conduitwatch: internal error: {type(e).__name__}: {e} (set CONDUITWATCH_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(EXIT_RUNTIME)


if __name__ == "__main__":
    main()
