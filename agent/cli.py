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
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import click

from agent import __version__
from agent.capture.base import CaptureError
from agent.capture.pacing import paced
from agent.flows import FlowConfig
from agent.outputs.eve import EVENT_TYPES, EveSink
from agent.outputs.syslog import FACILITIES as SYSLOG_FACILITIES
from agent.pipeline import EVENTS_ALL, EVENTS_DEFAULT, Pipeline, PipelineConfig, RunStats, Sink

if TYPE_CHECKING:
    from agent.assets.inventory import AssetInventory
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
    ctx.default_map = {cmd: _config_section(ctx, path, cmd, opts) for cmd, opts in data.items()}
    return path


def _config_section(ctx: click.Context, path: str, command: str, options: dict[str, Any]) -> dict[str, Any]:
    """A section's keys are the command's long flags without dashes (``policy``, ``web.listen-address``,
    ``max_flows`` or ``max-flows``); a key that names no option is an error, not silently ignored."""
    group = ctx.command
    sub = group.get_command(ctx, command) if isinstance(group, click.Group) else None
    if sub is None:
        raise click.BadParameter(f"{path}: section {command!r} is not a command")
    return _section_defaults(ctx, path, command, sub, options)


def _section_defaults(
    ctx: click.Context, path: str, where: str, command: click.Command, options: dict[str, Any]
) -> dict[str, Any]:
    """The defaults of ``command`` from its section. A group's section holds one section per subcommand
    (``policy: {learn: {timezone: Europe/Berlin}}``); the off flag of an on/off pair takes the opposite
    value (``no-promisc: true`` is ``promisc: false``)."""
    by_flag: dict[str, tuple[str, bool]] = {}  # key -> (parameter, the off flag of a pair)
    for param in command.params:
        if isinstance(param, click.Option) and param.name is not None:
            for flag in param.opts:
                by_flag[flag.lstrip("-").replace("_", "-")] = (param.name, False)
            for flag in param.secondary_opts:
                by_flag[flag.lstrip("-").replace("_", "-")] = (param.name, True)
            by_flag.setdefault(param.name.replace("_", "-"), (param.name, False))
    section: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(command, click.Group) and isinstance(value, dict):
            nested = command.get_command(ctx, str(key))
            if nested is not None:
                section[str(key)] = _section_defaults(ctx, path, f"{where} {key}", nested, value)
                continue
        found = by_flag.get(str(key).replace("_", "-"))
        if found is None:
            raise click.BadParameter(
                f"{path}: {where}: unknown option {key!r} (see conduitwatch {where} --help)"
            )
        name, off_flag = found
        if off_flag:
            if not isinstance(value, bool):
                raise click.BadParameter(f"{path}: {where}: {key!r} takes true or false, not {value!r}")
            value = not value
        section[name] = value
    return section


class _LazyGroup(click.Group):
    """Subcommand groups that live in other modules are imported when named, not at start-up.

    ``replay`` and ``run`` never need the policy, asset or report commands, and importing them costs
    a tenth of a short replay's start-up.
    """

    LAZY: ClassVar[dict[str, str]] = {
        "policy": "agent.policy.cli",
        "assets": "agent.assets.cli",
        "report": "agent.report.cli",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self.LAZY.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            import importlib

            self.add_command(getattr(importlib.import_module(module), cmd_name), cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is not None and ctx.auto_envvar_prefix is not None:
            _flag_envvars(command, f"{ctx.auto_envvar_prefix}_{cmd_name.upper()}")
        return command


def _flag_envvars(command: click.Command, prefix: str) -> None:
    """Name each option's environment variable after its long flag, as documented: ``--policy`` of
    ``run`` is CONDUITWATCH_RUN_POLICY. click's automatic name follows the parameter's Python name
    (CONDUITWATCH_RUN_POLICY_PATH), so a documented name would be ignored without a word; the
    automatic one still works."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.envvar is not None or param.name is None:
            continue
        flag = next((opt for opt in param.opts if opt.startswith("--")), None)
        if flag is None:
            continue
        name = f"{prefix}_{flag[2:].replace('-', '_').replace('.', '_').upper()}"
        if name != f"{prefix}_{param.name.upper()}":
            param.envvar = name
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            _flag_envvars(sub, f"{prefix}_{sub_name.upper()}")


@click.group(
    cls=_LazyGroup,
    context_settings={"auto_envvar_prefix": "CONDUITWATCH", "help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="conduitwatch")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="CONDUITWATCH_CONFIG",
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="YAML file of option defaults, one section per command (replay:, run:, report:, ...; "
    "policy: holds one per subcommand, e.g. learn:), keyed by the long flags.",
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
        click.option("--eve", "eve", metavar="FILE",
                     help="Append EVE JSON lines to FILE ('-' for stdout); reopened on SIGHUP (logrotate)."),
        click.option("--syslog", "syslog_url", metavar="URL",
                     help="Also send events to a syslog receiver, RFC 5424 over udp://HOST[:514] or "
                          "tcp://HOST[:601]."),
        click.option("--syslog-format", type=click.Choice(["json", "cef"]), default="json", show_default=True,
                     help="Syslog message body: the EVE JSON line, or CEF for SIEMs that want it."),
        click.option("--syslog-facility", default="local5", show_default=True,
                     type=click.Choice(list(SYSLOG_FACILITIES)), help="Syslog facility."),
        click.option("--syslog-types", default="alert,audit,anomaly,asset", show_default=True,
                     metavar="TYPES",
                     help="Event types sent to syslog (comma-separated), or 'all'."),
        click.option("--policy", "policy_path", metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Zone/conduit policy (docs/policy.md) to check traffic against; reloaded on SIGHUP "
                          "and when the file changes."),
        click.option("--quiet", "-q", is_flag=True, help="Do not print the summary or progress."),
        click.option("--events", type=click.Choice([EVENTS_DEFAULT, EVENTS_ALL]), default=EVENTS_DEFAULT,
                     show_default=True,
                     help="EVE event types: default = flow, anomaly, stats, with --policy alert and audit, "
                          "in run asset; all adds one 'ot' event per industrial message."),
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

    # Protocols carried only in Ethernet frames (GOOSE, LLDP, ...) have no port to add.
    known = {p.name for p in PROTOCOLS if p.tcp_ports or p.udp_ports or not p.ethertypes}
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


def _check_ports(ports: dict[str, tuple[int, ...]], decoders: tuple[str, ...] | None) -> None:
    """--ports names a decoder that --decoders leaves out: a usage error, not an internal one."""
    left_out = sorted(set(ports) - set(decoders)) if decoders is not None else []
    if left_out:
        _fail(f"--ports {', '.join(left_out)}: not among --decoders {','.join(decoders or ()) or 'none'}",
              EXIT_INVALID)  # fmt: skip


def _flow_config(
    max_flows: int, flow_timeout: float, udp_timeout: float, active_timeout: float
) -> FlowConfig:
    return FlowConfig(max_flows=max_flows, tcp_timeout=flow_timeout, udp_timeout=udp_timeout,
                      active_timeout=active_timeout)  # fmt: skip


def _sinks(
    eve: str | None,
    line_buffered: bool,
    syslog: dict[str, str] | None = None,
    monitored: tuple[str, ...] = (),
) -> list[Sink]:
    sinks: list[Sink] = []
    if eve:
        try:
            sinks.append(EveSink(eve, line_buffered=line_buffered))
        except OSError as e:
            _fail(f"cannot open EVE output {eve}: {e.strerror}", EXIT_INVALID)
    if syslog and syslog.get("url"):
        from agent.outputs.syslog import SyslogSink, SyslogTarget

        try:
            target = SyslogTarget(syslog["url"])
        except ValueError as e:
            _fail(f"--syslog: {e}", EXIT_INVALID)
        types = syslog["types"]
        event_types = None if types == "all" else frozenset(t.strip() for t in types.split(",") if t.strip())
        unknown = sorted((event_types or frozenset()) - EVENT_TYPES)
        if unknown:
            # A misspelt type would silently keep those events from the SIEM.
            _fail(f"--syslog-types: unknown event type {', '.join(unknown)} "
                  f"(one of {', '.join(sorted(EVENT_TYPES))}, or all)", EXIT_INVALID)  # fmt: skip
        # A receiver that is down is not fatal: events wait in a bounded backlog and are retried.
        sinks.append(
            SyslogSink(target, syslog["format"], syslog["facility"], event_types, monitored=monitored)
        )
    return sinks


def _syslog_options(url: str | None, fmt: str, facility: str, types: str) -> dict[str, str] | None:
    return {"url": url, "format": fmt, "facility": facility, "types": types} if url else None


def _reopen_outputs(pipeline: Pipeline) -> None:
    """SIGHUP: logrotate moved the EVE file (or the syslog receiver moved): reopen every sink."""
    for sink in pipeline.sinks:
        reopen = getattr(sink, "reopen", None)
        if callable(reopen):
            reopen()


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
        from agent.text import count_of

        errors = sum(p.severity == "error" for p in problems)
        _fail(f"{path}: invalid policy ({count_of(errors, 'error')})", EXIT_INVALID)
    return compiled


def _hold_hangup() -> None:
    """Ignore SIGHUP until _watch_policy installs its handler. Its default action ends the process, and
    systemd counts an end by SIGHUP as clean, so a reload or a logrotate during start-up (loading the
    policy, opening the capture) would stop the service for good under Restart=on-failure."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _watch_policy(pipeline: Pipeline, path: str | None) -> PolicyReloader | None:
    """SIGHUP reopens the outputs (logrotate) and reloads the policy; a file watch reloads it too.

    Both are quick enough for a signal handler: a reopen is a few system calls, and a reload
    compiles the new policy to the side and swaps it in only if it is valid.
    """
    reloader = None
    if path is not None and pipeline.policy is not None:
        from agent.policy.reload import PolicyReloader

        reloader = PolicyReloader(path, pipeline.policy)
        reloader.start_watching()

    # A second SIGHUP can arrive while the handler runs (two logrotate runs, a reload right after
    # one): its handler runs in the same thread, on top of the first, and would wait forever for the
    # reload lock the first one holds. It is noted instead, and the first handler goes round again.
    running = again = False

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        nonlocal running, again
        if running:
            again = True
            return
        running = True
        try:
            again = True
            while again:
                again = False
                _reopen_outputs(pipeline)
                if reloader is not None:
                    reloader.reload("SIGHUP")
        finally:
            running = False

    signal.signal(signal.SIGHUP, on_hangup)
    return reloader


def _asset_consumers(enabled: bool, baseline_path: str | None) -> list[AssetInventory]:
    """The live asset inventory (agent.assets), when asset events are wanted."""
    if not enabled and baseline_path is None:
        return []
    from agent.assets.inventory import AssetInventory, load_baseline

    baseline = None
    if baseline_path is not None:
        try:
            baseline = load_baseline(baseline_path)
        except (OSError, ValueError, KeyError) as e:
            _fail(f"--asset-baseline {baseline_path}: {getattr(e, 'strerror', None) or e}", EXIT_INVALID)
    return [AssetInventory(baseline=baseline, announce=enabled)]


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
            incidents=pipeline.floods.stats()["incidents"] if pipeline.floods is not None else None,
        )
        if extra:
            text += "\n" + "\n".join(extra)
        click.echo(text, err=summary_to_stderr)
    for problem in problems:
        click.echo(f"conduitwatch: error: {problem}", err=True)
    return EXIT_RUNTIME if problems else EXIT_OK


# -- Prometheus exporter (agent/exporter): node_exporter-style web flags ---------------------------------

if TYPE_CHECKING:
    from agent.exporter import Exporter


def _web_options(default_address: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--web.listen-address", "web_listen_address", metavar="[HOST]:PORT",
                         default=default_address, show_default=default_address is not None,
                         help="Serve Prometheus metrics, /-/healthy and /-/ready here"
                              + ("; '' turns the endpoint off." if default_address else
                                 " (off unless given).")),
            click.option("--web.telemetry-path", "web_telemetry_path", default="/metrics", show_default=True,
                         help="Path under which the metrics are exposed."),
            click.option("--web.config.file", "web_config_file", metavar="FILE",
                         type=click.Path(dir_okay=False),
                         help="TLS and basic-auth settings in the Prometheus exporter-toolkit format."),
        ]  # fmt: skip
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _exporter(address: str | None, telemetry_path: str, config_file: str | None, mode: str,
              policy_path: str | None) -> Exporter | None:  # fmt: skip
    """The exporter for this run (None when no listen address), or a one-line error and exit 2."""
    if not address:
        return None
    from agent.exporter import Exporter, ExporterError

    try:
        return Exporter(address, telemetry_path, config_file, mode, policy_path)
    except ExporterError as e:
        _fail(str(e), EXIT_INVALID)


def _start_exporter(exporter: Exporter | None, pipeline: Pipeline, reloader: PolicyReloader | None) -> None:
    if exporter is None:
        return
    from agent.exporter import ExporterError

    exporter.attach(pipeline, reloader)
    try:
        exporter.start()
    except ExporterError as e:
        _fail(str(e), EXIT_INVALID)


def _linger(exporter: Exporter, seconds: float | None) -> None:
    """After a replay: keep the final counters up for inspection until SIGINT/SIGTERM or ``seconds``."""
    import threading

    if seconds is not None and seconds <= 0:
        return
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda _s, _f: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    until = "until interrupted (Ctrl-C)" if seconds is None else f"for {seconds:g} s"
    click.echo(f"conduitwatch: replay finished; metrics stay at {exporter.url} {until}", err=True)
    try:
        done.wait(seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option(
    "--realtime", is_flag=True, help="Keep the recorded pacing instead of replaying as fast as possible."
)
@click.option(
    "--report",
    "report_dir",
    metavar="DIR",
    help="Also write the evidence report (as 'report') to DIR; the summary is the report's, and "
    "--realtime and the --web.* options do not apply.",
)
@_common_options
@_web_options(None)
@click.option("--web.linger", "web_linger", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --web.listen-address: serve the final metrics this long after the replay "
                   "(default: until interrupted; 0: stop with the replay).")  # fmt: skip
@_flood_options
def replay(
    captures: tuple[str, ...],
    realtime: bool,
    report_dir: str | None,
    bin_size: float,
    eve: str | None,
    syslog_url: str | None,
    syslog_format: str,
    syslog_facility: str,
    syslog_types: str,
    policy_path: str | None,
    quiet: bool,
    events: str,
    decoders: tuple[str, ...] | None,
    ports: dict[str, tuple[int, ...]],
    max_flows: int,
    flow_timeout: float,
    udp_timeout: float,
    active_timeout: float,
    web_listen_address: str | None,
    web_telemetry_path: str,
    web_config_file: str | None,
    web_linger: float | None,
) -> None:
    """Replay capture files (pcap, pcapng, gzip-compressed; directories of them) in time order."""
    from agent.capture.files import ReplaySource

    _hold_hangup()
    _check_ports(ports, decoders)
    # One configuration and one set of outputs for both runs below: the report's run once dropped
    # settings the plain replay had (--bin-size, --syslog) when each built its own.
    config = PipelineConfig(
        flows=_flow_config(max_flows, flow_timeout, udp_timeout, active_timeout),
        ports=ports,
        decoder_names=decoders,
        events=events,
        replay=True,
        flood_bin_seconds=bin_size,
    )
    syslog = _syslog_options(syslog_url, syslog_format, syslog_facility, syslog_types)
    if report_dir is not None:  # the report's own run
        from agent.report.cli import run_report

        sinks = _sinks(eve, False, syslog)
        sys.exit(run_report(captures, policy_path, report_dir, None, config, sinks, quiet))
    compiled = _policy(policy_path)
    exporter = _exporter(web_listen_address, web_telemetry_path, web_config_file, "replay", policy_path)
    try:
        source = ReplaySource(captures)
    except CaptureError as e:
        _fail(str(e), EXIT_INVALID)
    summary = TrafficSummary()
    progress = _Progress() if sys.stderr.isatty() and not quiet else None
    pipeline = Pipeline(
        config,
        sinks=_sinks(eve, False, syslog),
        consumers=[summary, *(exporter.consumers() if exporter is not None else ())],
        progress=progress,
        policy=compiled,
    )
    stopper = _Stopper(pipeline.stop)
    reloader = _watch_policy(pipeline, policy_path)
    _start_exporter(exporter, pipeline, reloader)
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
    if exporter is not None:
        if not stopper.requested:
            _linger(exporter, web_linger)
        exporter.stop()
    sys.exit(code)


@cli.command()
@click.option("--interface", "-i", required=True, help="Interface to listen on (a SPAN/mirror port).")
@click.option(
    "--bpf",
    help="Capture filter in tcpdump syntax, compiled by libpcap and applied in the kernel to the frame "
    "without its outer VLAN tag ('port 502', not 'vlan and port 502').",
)
@click.option("--promisc/--no-promisc", default=True, show_default=True, help="Promiscuous mode.")
@click.option(
    "--snaplen",
    type=click.IntRange(64, 262144),
    default=65535,
    show_default=True,
    help="Bytes kept of each frame; what is cut off counts in the byte totals but is not decoded "
    "(below a link's MTU, the decoders report the cut messages as truncation anomalies and stream gaps).",
)
@click.option(
    "--asset-events/--no-asset-events",
    default=True,
    show_default=True,
    help="EVE 'asset' events for new hosts and identity/firmware changes (alerts for changes).",
)
@click.option(
    "--asset-baseline",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Inventory from 'conduitwatch assets --format json': any other host is a new-device alert.",
)
@_common_options
@_web_options(":10620")  # agent.exporter.server.DEFAULT_PORT; not imported here to keep start-up lean
@_flood_options
def run(
    interface: str,
    bin_size: float,
    bpf: str | None,
    promisc: bool,
    snaplen: int,
    asset_events: bool,
    asset_baseline: str | None,
    eve: str | None,
    syslog_url: str | None,
    syslog_format: str,
    syslog_facility: str,
    syslog_types: str,
    policy_path: str | None,
    quiet: bool,
    events: str,
    decoders: tuple[str, ...] | None,
    ports: dict[str, tuple[int, ...]],
    max_flows: int,
    flow_timeout: float,
    udp_timeout: float,
    active_timeout: float,
    web_listen_address: str | None,
    web_telemetry_path: str,
    web_config_file: str | None,
) -> None:
    """Monitor a live interface until SIGINT/SIGTERM. Receive only: it never transmits."""
    from agent.capture.live import LiveCaptureError, LiveSource

    _hold_hangup()
    _check_ports(ports, decoders)
    compiled = _policy(policy_path)
    exporter = _exporter(web_listen_address, web_telemetry_path, web_config_file, "live", policy_path)
    inventories = _asset_consumers(asset_events, asset_baseline)
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
    syslog = _syslog_options(syslog_url, syslog_format, syslog_facility, syslog_types)
    sinks = _sinks(eve, True, syslog, monitored=(interface,))
    consumers = [summary, *inventories, *(exporter.consumers() if exporter is not None else ())]
    pipeline = Pipeline(config, sinks=sinks, consumers=consumers, policy=compiled)
    if inventories:
        from agent.assets.inventory import pipeline_emitter

        inventories[0].emit = pipeline_emitter(pipeline)

    def stop() -> None:
        pipeline.stop()
        source.stop()

    stopper = _Stopper(stop)
    reloader = _watch_policy(pipeline, policy_path)
    log.info("capturing on %s%s", interface, f" with filter {bpf!r}" if bpf else "")
    _start_exporter(exporter, pipeline, reloader)
    try:
        stats = pipeline.run(source)
    finally:
        if reloader is not None:
            reloader.stop()
        stopper.restore()
        source.close()
        if exporter is not None:
            exporter.stop()
    kernel = pipeline.kernel or {}
    unread = kernel.get("unread", 0)
    extra = [
        f"kernel: {kernel.get('kernel_packets', 0):,} packets passed the filter, "
        f"{kernel.get('kernel_drops', 0):,} dropped before they could be read"
        + (f", {unread:,} still queued when the capture stopped (not analysed)" if unread else "")
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
    for dist in ("scapy", "prometheus-client", "bcrypt", "pyshark", "click", "pyyaml"):
        try:
            click.echo(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            click.echo(f"{dist} not installed")


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
