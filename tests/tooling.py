"""Skip-or-fail helpers for tests that need something outside Python (a program, root, namespaces).

By default a missing prerequisite skips the test with its reason. CI sets CONDUITWATCH_REQUIRE_TOOLS=1,
which turns every such skip into a failure, so a runner that silently lacks ``ip`` or root cannot pass
by skipping the tests that matter.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_ENV = "CONDUITWATCH_REQUIRE_TOOLS"


def tools_required() -> bool:
    """True when missing prerequisites must fail rather than skip."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test, or fail it when CONDUITWATCH_REQUIRE_TOOLS=1."""
    if tools_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The absolute path of program ``name`` on PATH (or /usr/sbin, /sbin); skip or fail if absent."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        skip_or_fail(f"{name} not found on PATH")
    return path


def require_root() -> None:
    """Skip or fail unless running as root (effective uid 0)."""
    if os.geteuid() != 0:
        skip_or_fail("needs root (run as root, e.g. in the CI container)")


def require_libpcap() -> None:
    """Skip or fail unless libpcap can be loaded: ``--bpf`` filters are compiled by it (through scapy).
    Debian's libpcap0.8 comes with tcpdump and tshark, which CI installs; a bare machine may lack it."""
    if ctypes.util.find_library("pcap") is None:
        skip_or_fail("libpcap not found (Debian package libpcap0.8): BPF filters cannot be compiled")
