"""The corpus tier: tests over the shared capture corpus (../shared/corpus, see its README.md).

The oracles are the corpus's own INVENTORY.tsv (packet counts and link types, as tshark 4.0 reported
them) and tshark run here. Every test collected from this directory is marked ``corpus`` and skipped,
with the reason, when the corpus is absent. ``$CONDUITWATCH_CORPUS`` points at another copy.

Fixtures: ``corpus`` (the corpus directory), ``inventory`` (every row), ``tshark`` (the program's
path; skips, or fails under CONDUITWATCH_REQUIRE_TOOLS=1, when it is missing), and a test asking for
``corpus_capture`` is parametrized over every inventory row.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tooling import require_tool

CORPUS_ENV = "CONDUITWATCH_CORPUS"
HERE = Path(__file__).resolve().parent

# INVENTORY link type names the pipeline dissects (the names tshark's capinfos uses). Only ether,
# linux-sll, null and rawip4 occur today; the others are here so that a capture added with them
# is covered without editing this list.
SUPPORTED_LINKTYPES = frozenset(
    {"ether", "linux-sll", "linux-sll2", "null", "loop", "rawip", "rawip4", "rawip6"}
)
# Link types that are read (their frames counted) but not dissected.
UNSUPPORTED_LINKTYPES = frozenset({"arcnet", "wpan", "rtac-serial"})


def corpus_root() -> Path:
    """$CONDUITWATCH_CORPUS, else /work/shared/corpus seen from /work/main/tests/corpus."""
    env = os.environ.get(CORPUS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "corpus"


CORPUS = corpus_root()


def corpus_missing() -> str | None:
    """Why the corpus cannot be used, or None when it can."""
    if not (CORPUS / "INVENTORY.tsv").is_file() or not (CORPUS / "pcaps").is_dir():
        return (
            f"capture corpus not found at {CORPUS} (needs INVENTORY.tsv and pcaps/; "
            f"set {CORPUS_ENV} to its location)"
        )
    return None


@dataclass(frozen=True, slots=True)
class Capture:
    """One INVENTORY.tsv row."""

    path: str  # relative to pcaps/, e.g. "zeek/dnp3/dnp3.pcap"
    file: Path
    source: str  # first path component: the project the capture comes from
    packets: int
    linktype: str
    protocols: str

    @property
    def supported(self) -> bool:
        return self.linktype in SUPPORTED_LINKTYPES


@functools.cache
def load_inventory() -> tuple[Capture, ...]:
    """Every INVENTORY.tsv row (empty when the corpus is absent)."""
    if corpus_missing():
        return ()
    with (CORPUS / "INVENTORY.tsv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return tuple(
        Capture(
            path=row["path"],
            file=CORPUS / "pcaps" / row["path"],
            source=row["path"].split("/", 1)[0],
            packets=int(row["packets"]),
            linktype=row["linktype"],
            protocols=row["protocols"],
        )
        for row in rows
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees the items of the whole session: touch only ours.
    reason = corpus_missing()
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.corpus)
        if reason:
            # In front, so that it wins over pytest's "got empty parameter set" skip.
            item.add_marker(pytest.mark.skip(reason=reason), append=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "corpus_capture" in metafunc.fixturenames:
        captures = load_inventory()
        metafunc.parametrize("corpus_capture", captures, ids=[c.path for c in captures])


@pytest.fixture(scope="session")
def corpus() -> Path:
    reason = corpus_missing()
    if reason:
        pytest.skip(reason)
    return CORPUS


@pytest.fixture(scope="session")
def inventory(corpus: Path) -> tuple[Capture, ...]:
    return load_inventory()


@pytest.fixture(scope="session")
def tshark() -> str:
    return require_tool("tshark")
