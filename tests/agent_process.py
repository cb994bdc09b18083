"""The agent's CLI as a child process, for the end-to-end tests that signal it and read its output."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def agent_process(cmd: list[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """``cmd`` with text pipes for stdout and stderr; killed if the test leaves it running (a failed
    assertion), so that no agent outlives its test."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_capturing(proc: subprocess.Popen[str]) -> None:
    """Block until ``conduitwatch run`` says its capture socket is ready."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "capturing on" in line, line


def stop(proc: subprocess.Popen[str], sig: int, timeout: float = 30) -> tuple[str, str]:
    """Send ``sig`` and wait for the agent: (stdout, stderr). It must exit with status 0."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err
