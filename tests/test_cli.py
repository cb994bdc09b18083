"""The command line as a user runs it: a subprocess on real files, exit codes and messages."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import factory

CMD = [sys.executable, "-m", "agent.cli"]


def cw(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    full_env.update(env or {})
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=120, env=full_env, cwd=cwd)


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    packets = factory.tcp_session(vlan=10) + [factory.udp(sport=p) for p in range(5000, 5005)]
    return factory.write(tmp_path / "plant.pcap", packets)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_prints_summary(capture: Path) -> None:
    result = cw("replay", str(capture))
    assert result.returncode == 0, result.stderr
    assert "13 packets" in result.stdout and "6 flows" in result.stdout
    assert "modbus" in result.stdout and "192.0.2.0/24 -> 192.0.2.0/24" in result.stdout
    assert "modbus       read 1" in result.stdout
    assert result.stderr == ""


def test_eve_to_stdout_moves_summary_to_stderr(capture: Path) -> None:
    result = cw("replay", str(capture), "--eve", "-")
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event_type"] for e in lines].count("flow") == 6 and lines[-1]["event_type"] == "stats"
    assert "13 packets" in result.stderr


def test_several_files_merged_in_time_order(tmp_path: Path) -> None:
    a = factory.write(tmp_path / "a.pcap", [factory.udp(sport=1)], start=100.0)
    b = factory.write(tmp_path / "b.pcap", [factory.udp(sport=2), factory.udp(sport=3)], start=50.0)
    out = tmp_path / "eve.json"
    result = cw("replay", str(a), str(b), "--eve", str(out), "-q")
    assert result.returncode == 0 and result.stdout == ""
    flows = {
        e["src_port"]: (e["pcap_filename"], e["pcap_cnt"]) for e in events(out) if e["event_type"] == "flow"
    }
    assert flows == {1: (str(a), 1), 2: (str(b), 1), 3: (str(b), 2)}


def test_directory_of_captures(tmp_path: Path, capture: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a capture")
    result = cw("replay", str(tmp_path), "-q", "--eve", str(tmp_path / "eve.json"))
    assert result.returncode == 0, result.stderr


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("zones: []\n" * 10)
    result = cw("replay", str(path))
    assert result.returncode == 2
    line = one_error_line(result)
    assert str(path) in line and "byte offset 0" in line and "not a" in line


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    result = cw("replay", str(path))
    assert result.returncode == 2
    line = one_error_line(result)
    assert str(path) in line and "empty" in line


def test_missing_file(tmp_path: Path) -> None:
    result = cw("replay", str(tmp_path / "nope.pcap"))
    assert result.returncode == 2
    assert "nope.pcap" in one_error_line(result)


def test_truncated_capture_reports_results_then_error(tmp_path: Path, capture: Path) -> None:
    data = capture.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 20])  # the last record loses its tail
    out = tmp_path / "eve.json"
    result = cw("replay", str(cut), "--eve", str(out))
    assert result.returncode == 1
    line = one_error_line(result)
    assert str(cut) in line and "byte offset" in line and "truncated" in line
    assert "12 packets" in result.stdout  # everything before the damage was processed and reported
    assert events(out)[-1]["stats"]["capture"]["problems"]


def test_corrupt_record_length(tmp_path: Path, capture: Path) -> None:
    data = bytearray(capture.read_bytes())
    data[24 + 8 : 24 + 12] = (0xFFFFFFF0).to_bytes(4, "little")  # first record's captured length
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    result = cw("replay", str(bad))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "byte offset 24" in line


def test_config_file_then_environment_then_flags(tmp_path: Path, capture: Path) -> None:
    config = tmp_path / "conduitwatch.yaml"
    config.write_text(f"replay:\n  eve: {tmp_path / 'from-config.json'}\n  quiet: true\n")
    assert cw("--config", str(config), "replay", str(capture)).returncode == 0
    assert (tmp_path / "from-config.json").exists()
    env = {"CONDUITWATCH_REPLAY_EVE": str(tmp_path / "from-env.json")}
    assert cw("--config", str(config), "replay", str(capture), env=env).returncode == 0
    assert (tmp_path / "from-env.json").exists()
    flag = tmp_path / "from-flag.json"
    assert cw("--config", str(config), "replay", str(capture), "--eve", str(flag), env=env).returncode == 0
    assert flag.exists()
    assert len(events(tmp_path / "from-env.json")) == 7  # not written twice


def test_config_keys_are_the_flags_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "eve.json"
    config = tmp_path / "conduitwatch.yaml"
    config.write_text(f"replay:\n  policy: {root / 'rules' / 'demo.yaml'}\n  eve: {out}\n  max-flows: 500\n")
    result = cw("--config", str(config), "replay", str(root / "pcaps" / "demo.pcap"), "-q")
    assert result.returncode == 0, result.stderr
    assert any(e["event_type"] == "alert" for e in events(out))  # `policy:` reached --policy
    config.write_text("replay:\n  polcy: x.yaml\n")
    result = cw("--config", str(config), "replay", str(root / "pcaps" / "demo.pcap"))
    assert result.returncode == 2 and "unknown option 'polcy'" in result.stderr


def test_config_off_flags_and_subcommand_sections(tmp_path: Path) -> None:
    config = tmp_path / "conduitwatch.yaml"
    # The off flag of a pair means the opposite value: `no-promisc: true` turns promiscuous mode off.
    config.write_text("run:\n  no-promisc: true\n  asset-events: false\n")
    result = cw("--config", str(config), "run", "--help")
    assert result.returncode == 0, result.stderr
    assert "[default: no-promisc]" in result.stdout and "[default: no-asset-events]" in result.stdout
    config.write_text("run:\n  no-promisc: false\n")
    assert "[default: promisc]" in cw("--config", str(config), "run", "--help").stdout
    config.write_text("run:\n  no-promisc: eth1\n")
    result = cw("--config", str(config), "run", "--help")
    assert result.returncode == 2 and "'no-promisc' takes true or false" in result.stderr
    # A group's section holds one section per subcommand.
    root = Path(__file__).resolve().parents[1]
    draft = tmp_path / "draft.yaml"
    config.write_text(f"policy:\n  learn:\n    output: {draft}\n")
    result = cw("--config", str(config), "policy", "learn", str(root / "pcaps" / "demo.pcap"))
    assert result.returncode == 0, result.stderr
    assert draft.read_text().startswith("# Draft zone/conduit policy")
    config.write_text("policy:\n  learn:\n    outptu: x.yaml\n")
    result = cw("--config", str(config), "policy", "learn", str(root / "pcaps" / "demo.pcap"))
    assert result.returncode == 2 and "policy learn: unknown option 'outptu'" in result.stderr


def test_replay_with_report_keeps_bin_size_and_syslog(tmp_path: Path) -> None:
    import socket

    root = Path(__file__).resolve().parents[1]
    capture = str(root / "pcaps" / "scenarios" / "floods" / "floods-safety-crossing.pcap.gz")
    policy = str(root / "rules" / "purdue-plant.yaml")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    syslog = f"udp://127.0.0.1:{receiver.getsockname()[1]}"

    def floods(path: Path) -> list[dict]:
        return [e["floods"] for e in events(path) if e["event_type"] == "alert" and "floods" in e]

    plain, with_report = tmp_path / "plain.json", tmp_path / "report.json"
    args = ["replay", capture, "--policy", policy, "--bin-size", "1", "-q"]
    assert cw(*args, "--eve", str(plain)).returncode == 0
    result = cw(*args, "--eve", str(with_report), "--report", str(tmp_path / "r"), "--syslog", syslog)
    assert result.returncode == 0, result.stderr
    assert floods(plain) and floods(with_report) == floods(plain)  # 1 s bins in both runs
    with receiver:
        assert b"alert" in receiver.recv(65536)


def test_bad_config_file_is_a_usage_error(tmp_path: Path, capture: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("replay: [unclosed\n")
    result = cw("--config", str(config), "replay", str(capture))
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "line" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_flushes_outputs_and_prints_summary(tmp_path: Path) -> None:
    # A realtime replay of a capture spanning 60 s is still running when we stop it.
    packets = [factory.udp(sport=1000 + i) for i in range(60)]
    capture = factory.write(tmp_path / "slow.pcap", packets, step=1.0)
    out = tmp_path / "eve.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    proc = subprocess.Popen([*CMD, "replay", str(capture), "--realtime", "--eve", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    lines = events(out)
    assert lines[-1]["event_type"] == "stats" and lines[-1]["stats"]["capture"]["interrupted"]
    flows = [e for e in lines if e["event_type"] == "flow"]
    assert 1 <= len(flows) < 60  # only what was read before the signal, all of it flushed


def test_version() -> None:
    result = cw("version")
    assert result.returncode == 0 and result.stdout.startswith("conduitwatch ")
    # Every runtime dependency of pyproject.toml, each on a line of its own.
    import re
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert {line.split()[0] for line in result.stdout.splitlines()[2:]} == declared
    assert cw("--version").stdout.startswith("conduitwatch, version")


def test_run_on_missing_interface_is_one_line(tmp_path: Path) -> None:
    result = cw("run", "--interface", "cw-no-such-if0")
    assert result.returncode in (1, 2)
    assert "cw-no-such-if0" in one_error_line(result)


def test_ports_for_a_decoder_left_out_or_without_ports_is_a_usage_error(capture: Path) -> None:
    result = cw("replay", str(capture), "--decoders", "modbus", "--ports", "dns=5353")
    assert result.returncode == 2 and "internal error" not in result.stderr
    assert "--ports dns: not among --decoders modbus" in one_error_line(result)
    result = cw("replay", str(capture), "--decoders", "none", "--ports", "modbus=5020")
    assert result.returncode == 2 and "not among --decoders none" in result.stderr
    result = cw("replay", str(capture), "--ports", "goose=5020")  # GOOSE is carried in Ethernet frames
    assert result.returncode == 2 and "'goose=5020'" in result.stderr
    assert cw("replay", str(capture), "--decoders", "modbus,ptp", "--ports", "ptp=3319", "-q").returncode == 0


def test_usage_error_exit_code() -> None:
    assert cw("replay").returncode == 2
    assert cw("replay", "--max-flows", "0", "x.pcap").returncode == 2


def test_sighup_reopens_the_eve_file_for_logrotate(tmp_path: Path) -> None:
    # UDP flows of one packet each, a second apart, end by timeout while the realtime replay runs.
    packets = [factory.udp(sport=2000 + i) for i in range(8)]
    capture = factory.write(tmp_path / "slow.pcap", packets, step=1.0)
    out = tmp_path / "eve.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    args = ["replay", str(capture), "--realtime", "--udp-timeout", "0.5", "--eve", str(out)]
    proc = subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3.5)
    out.rename(tmp_path / "eve.json.1")  # logrotate's move, then its postrotate SIGHUP
    proc.send_signal(signal.SIGHUP)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    before, after = events(tmp_path / "eve.json.1"), events(out)
    assert before and after, (before, after)
    assert after[-1]["event_type"] == "stats"
    ports = sorted(e["src_port"] for e in before + after if e["event_type"] == "flow")
    assert ports == list(range(2000, 2008))  # every flow once, in one file or the other


def test_a_misspelt_syslog_type_is_refused(capture: Path) -> None:
    # "alerts" would otherwise keep every alert from the SIEM without a word.
    syslog = ("--syslog", "udp://127.0.0.1:9")
    result = cw("replay", str(capture), "-q", *syslog, "--syslog-types", "alerts,audit")
    assert result.returncode == 2
    assert "--syslog-types: unknown event type alerts" in one_error_line(result)
    ok = cw("replay", str(capture), "-q", *syslog, "--syslog-types", "alert,audit")
    assert ok.returncode == 0, ok.stderr


def test_environment_variables_are_named_after_the_flags(tmp_path: Path, capture: Path) -> None:
    """CONDUITWATCH_<COMMAND>_<OPTION> with the option as spelt on the command line: --policy is read
    from CONDUITWATCH_RUN_POLICY, not only from the parameter's Python name (policy_path)."""
    missing = str(tmp_path / "no-such-policy.yaml")
    result = cw("replay", str(capture), "-q", env={"CONDUITWATCH_REPLAY_POLICY": missing})
    assert result.returncode == 2 and "no-such-policy.yaml" in result.stderr, result.stderr
    result = cw("replay", str(capture), "-q", env={"CONDUITWATCH_REPLAY_SYSLOG": "bogus://x"})
    assert result.returncode == 2 and "--syslog" in result.stderr, result.stderr
    report = tmp_path / "report"
    assert cw("replay", str(capture), "-q", env={"CONDUITWATCH_REPLAY_REPORT": str(report)}).returncode == 0
    assert (report / "report.json").exists()
    # The parameter's own name still works, and a flag beats both.
    assert cw("replay", str(capture), "-q", env={"CONDUITWATCH_REPLAY_POLICY_PATH": missing}).returncode == 2
    flag = cw("replay", str(capture), "-q", "--policy", missing, env={"CONDUITWATCH_REPLAY_POLICY": "x.yaml"})
    assert "no-such-policy.yaml" in flag.stderr


def test_every_option_reads_the_environment_variable_named_after_its_flag() -> None:
    import click

    from agent.cli import cli

    def commands(group: click.Group, ctx: click.Context, path: list[str]) -> list[tuple[str, click.Command]]:
        found = []
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            assert sub is not None
            if isinstance(sub, click.Group):
                found += commands(sub, click.Context(sub, parent=ctx, info_name=name), [*path, name])
            else:
                found.append(("_".join([*path, name]).upper(), sub))
        return found

    root = click.Context(cli, auto_envvar_prefix="CONDUITWATCH")
    for prefix, command in commands(cli, root, []):
        ctx = click.Context(command, auto_envvar_prefix=f"CONDUITWATCH_{prefix}")
        for param in command.params:
            longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
            if not isinstance(param, click.Option) or not longs:
                continue
            name = f"CONDUITWATCH_{prefix}_{longs[0][2:].replace('-', '_').replace('.', '_').upper()}"
            saved = os.environ.get(name)
            os.environ[name] = "1"
            try:
                assert param.resolve_envvar_value(ctx) == "1", f"{name} is not read for {longs[0]}"
            finally:
                if saved is None:
                    del os.environ[name]
                else:
                    os.environ[name] = saved


def test_sighup_during_start_up_does_not_end_the_run(tmp_path: Path) -> None:
    """A reload (SIGHUP) that arrives while `run` is still loading its policy must not kill it: systemd
    counts death by SIGHUP as a clean exit and would not restart the sensor."""
    policy = Path(__file__).resolve().parents[1] / "rules" / "demo.yaml"
    # The signal is sent from inside the policy load, before any handler of ours could be installed.
    code = (
        "import os, signal, sys, agent.cli as c\n"
        "load = c._policy\n"
        "def hup_then_load(path):\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    return load(path)\n"
        "c._policy = hup_then_load\n"
        "sys.argv[0] = 'conduitwatch'\n"
        "c.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUITWATCH_")}
    args = ["run", "-i", "cw-no-such-if0", "--policy", str(policy), "--web.listen-address", ""]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=60, env=env)  # fmt: skip
    assert result.returncode != -signal.SIGHUP, "killed by the SIGHUP"
    # It went on to open the capture, which fails on the missing interface.
    assert result.returncode == 2 and "cw-no-such-if0" in result.stderr, result.stderr


def test_a_sighup_during_the_sighup_handler_is_handled_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second SIGHUP runs its handler on top of the first, in the same thread, while the first holds
    the reload lock: it must be noted and handled once the first is done, not wait for that lock."""
    from agent import cli as cli_module
    from agent.pipeline import Pipeline, PipelineConfig
    from agent.policy import reload as reload_module
    from agent.policy.engine import CompiledPolicy
    from agent.policy.loader import load_policy

    path = str(Path(__file__).resolve().parents[1] / "rules/demo.yaml")
    policy, problems = load_policy(path)
    assert policy is not None, problems
    pipeline = Pipeline(PipelineConfig(), policy=CompiledPolicy(policy))
    previous = signal.getsignal(signal.SIGHUP)
    real_compile = reload_module.compile_policy
    nested: list[bool] = []

    def compile_while_a_sighup_arrives(p: str) -> Any:
        if not nested:
            nested.append(True)
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)  # type: ignore[operator]
        return real_compile(p)

    monkeypatch.setattr(reload_module, "compile_policy", compile_while_a_sighup_arrives)
    try:
        reloader = cli_module._watch_policy(pipeline, path)
        assert reloader is not None
        reloader.stop()
        handler = threading.Thread(
            target=signal.getsignal(signal.SIGHUP), args=(signal.SIGHUP, None), daemon=True
        )
        handler.start()
        handler.join(10)
        assert not handler.is_alive(), "the second SIGHUP waits forever for the first one's reload"
        assert reloader.reloads == 2
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_ctrl_c_while_the_command_line_is_still_importing_is_one_line() -> None:
    # The console script's entry point imports agent.cli, a fifth of a second of start-up; a Ctrl-C
    # then must end like one later on (click's "Aborted!", exit 1), not with a traceback.
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name == 'agent.cli':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "from agent.launch import main\n"
        "main()\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root
    )
    assert result.returncode == 1 and result.stderr == "Aborted!\n", result.stderr
