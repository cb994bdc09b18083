"""``conduitwatch policy validate`` and ``conduitwatch policy show``.

``validate`` prints every problem as ``FILE:LINE:COLUMN: error|warning: reason`` (the format
compilers use, so editors can jump to it) and a one-line verdict per file; exit 0 when every file
is valid, 2 otherwise. ``show`` prints the zones and the zone x zone matrix of conduits, fitted to
the terminal width: long names are abbreviated with a legend, and a matrix that is still too wide is
printed in blocks of columns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click

from agent.policy.model import Policy, Problem, Zone
from agent.text import count_of

EXIT_OK = 0
EXIT_INVALID = 2
STDIN = "-"
STDIN_NAME = "<stdin>"  # how problems and verdicts name standard input
_GAP = "  "  # between table columns
_MAX_LABEL = 40  # widest zone id shown whole; longer ones are cut


@click.group()
def policy() -> None:
    """Check and display zone/conduit policy files (see docs/policy.md)."""


@policy.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--strict", is_flag=True, help="Warnings make a file invalid too.")
def validate(files: tuple[str, ...], strict: bool) -> None:
    """Validate policy files ('-' reads standard input); exit 0 if all are valid, 2 if not."""
    all_valid = True
    for path in files:
        loaded, problems = _load(path)
        for problem in problems:
            click.echo(str(problem))
        valid, line = verdict(_shown(path), loaded, problems, strict)
        click.echo(line)
        all_valid = all_valid and valid
    sys.exit(EXIT_OK if all_valid else EXIT_INVALID)


@policy.command()
@click.argument("file")
@click.option(
    "--width", type=click.IntRange(min=40), default=120, show_default=True, help="Output width in columns."
)
def show(file: str, width: int) -> None:
    """Print a policy's system, zones and the zone x zone matrix of conduits."""
    loaded, problems = _load(file)
    for problem in problems:  # stderr: stdout stays the picture of the policy
        click.echo(str(problem), err=True)
    if loaded is None:
        click.echo(verdict(_shown(file), loaded, problems, strict=False)[1], err=True)
        sys.exit(EXIT_INVALID)
    click.echo(render(loaded, width))


def _shown(path: str) -> str:
    return STDIN_NAME if path == STDIN else path


def _load(path: str) -> tuple[Policy | None, list[Problem]]:
    # Imported here: the loader (and PyYAML) cost startup time that replay and run do not need.
    from agent.policy.loader import MAX_FILE_BYTES, load_policy, load_policy_bytes

    if path != STDIN:
        return load_policy(path)
    data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return None, [Problem(STDIN_NAME, 0, 0, "too large: not a policy")]
    return load_policy_bytes(data, STDIN_NAME)


def verdict(path: str, loaded: Policy | None, problems: Sequence[Problem], strict: bool) -> tuple[bool, str]:
    """(valid?, the one-line summary for ``path``)."""
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if loaded is None:
        parts = [count_of(errors, "error")] + ([count_of(warnings, "warning")] if warnings else [])
        return False, f"{path}: invalid ({', '.join(parts)})"
    parts = [count_of(len(loaded.zones), "zone"), count_of(len(loaded.conduits), "conduit")]
    parts += [count_of(warnings, "warning")] if warnings else []
    if strict and warnings:
        return False, f"{path}: invalid with --strict ({', '.join(parts)})"
    return True, f"{path}: valid ({', '.join(parts)})"


# ----------------------------------------------------------------------------------------------
# show


def render(policy: Policy, width: int = 120) -> str:
    lines = _system_lines(policy, width)
    lines += ["", *_zone_table(policy, width), "", *_matrix(policy, width)]
    return "\n".join(line.rstrip() for line in lines)


def _clean(text: str) -> str:
    """One line of printable text: names come from the file, and a YAML "\\e" escape must not
    reach the terminal."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _system_lines(policy: Policy, width: int) -> list[str]:
    system = policy.system
    lines = [_fit(f"System: {_clean(system.name)}", width)]
    if system.owner:
        lines.append(_fit(f"  owner: {_clean(system.owner)}", width))
    if system.description:
        lines.append(_fit(f"  {_clean(system.description)}", width))
    defaults = policy.defaults
    lines.append(
        f"  intra-zone traffic: {defaults.intra_zone}; unknown hosts: {defaults.unknown_hosts}; "
        f"time zone: {defaults.timezone}"
    )
    return lines


def _level(zone: Zone) -> str:
    return f"L{zone.purdue_level:g}" if zone.purdue_level is not None else "-"


def _sl_t(sl_t: tuple[int, ...] | None) -> str:
    if sl_t is None:
        return "-"
    return str(sl_t[0]) if len(set(sl_t)) == 1 else ",".join(map(str, sl_t))


def _members(zone: Zone) -> str:
    parts: list[str] = []
    if zone.networks:
        shown = ", ".join(str(n) for n in zone.networks[:2])
        parts.append(shown + (f" +{len(zone.networks) - 2}" if len(zone.networks) > 2 else ""))
    if zone.vlans:
        vlans = sorted(zone.vlans)
        shown = ",".join(map(str, vlans[:4])) + (f" +{len(vlans) - 4}" if len(vlans) > 4 else "")
        parts.append(("VLAN " if len(vlans) == 1 else "VLANs ") + shown)
    if zone.macs:
        parts.append(count_of(len(zone.macs), "MAC"))
    if zone.assets:
        parts.append(count_of(len(zone.assets), "asset"))
    return "; ".join(parts)


def _table(rows: list[list[str]], width: int) -> list[str]:
    """Left-aligned columns; the last column is cut to the width."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        head = "  " + "".join(cell.ljust(w) + _GAP for cell, w in zip(row, widths, strict=False))
        lines.append(head + _fit(row[-1], max(width - len(head), 8)))
    return lines


def _zone_table(policy: Policy, width: int) -> list[str]:
    rows = [["zone", "level", "SL-T", "safety", "members"]]
    for zone in policy.zones:
        rows.append(
            [
                _fit(zone.id, _MAX_LABEL),
                _level(zone),
                _sl_t(zone.sl_t),
                "SIS" if zone.safety else "",
                _members(zone),
            ]
        )
    return [f"Zones ({len(policy.zones)})", *_table(rows, width)]


@dataclass
class _Grid:
    """The matrix contents: row labels, column headers, cells, and the legends they need."""

    rows: list[str]
    columns: list[str]
    cells: list[list[str]]
    legend: list[str]


def _cells(policy: Policy, name: dict[str, str]) -> list[list[str]]:
    """cells[i][j]: the conduits through which zone i initiates flows to zone j."""
    index = {zone.id: i for i, zone in enumerate(policy.zones)}
    found: list[list[list[str]]] = [[[] for _ in policy.zones] for _ in policy.zones]
    for conduit in policy.conduits:
        for flow in conduit.flows:
            cell = found[index[flow.initiator.zone]][index[flow.responder.zone]]
            if name[conduit.id] not in cell:
                cell.append(name[conduit.id])
    inside = "=" if policy.defaults.intra_zone == "allow" else None
    cells = [[",".join(cell) or "." for cell in row] for row in found]
    for i, zone in enumerate(policy.zones):
        # With intra_zone: check, a zone without allow rules denies everything inside it.
        cells[i][i] = inside or ("=" if zone.allow else ".")
    return cells


def _full_grid(policy: Policy) -> _Grid:
    ids = [_fit(_clean(z.id), _MAX_LABEL) for z in policy.zones]
    cells = _cells(policy, {c.id: c.id for c in policy.conduits})
    return _Grid(ids, ids, cells, [])


def _short_grid(policy: Policy) -> _Grid:
    """Zones as Z1..Zn and conduits as C1..Cm, with a legend: wide policies fit the terminal."""
    zone_names = [f"Z{i}" for i in range(1, len(policy.zones) + 1)]
    conduit_names = {c.id: f"C{i}" for i, c in enumerate(policy.conduits, 1)}
    rows = [
        f"{short} {_fit(_clean(z.id), _MAX_LABEL)}" for short, z in zip(zone_names, policy.zones, strict=True)
    ]
    legend = [f"  {conduit_names[c.id]:<4} {_clean(c.id)} ({' <-> '.join(c.zones)})" for c in policy.conduits]
    return _Grid(rows, zone_names, _cells(policy, conduit_names), legend)


def _column_widths(grid: _Grid) -> list[int]:
    return [max([len(head)] + [len(row[j]) for row in grid.cells]) for j, head in enumerate(grid.columns)]


def _grid_width(grid: _Grid) -> int:
    label = max((len(r) for r in grid.rows), default=0)
    return 2 + label + sum(w + len(_GAP) for w in _column_widths(grid))


def _matrix(policy: Policy, width: int) -> list[str]:
    inside = "allowed" if policy.defaults.intra_zone == "allow" else "checked against its allow rules"
    lines = [
        f"Conduits: row zone initiates, column zone responds (. none; = traffic inside the zone {inside})"
    ]
    if not policy.zones:
        return lines
    grid = _full_grid(policy)
    if _grid_width(grid) > width:
        grid = _short_grid(policy)
    lines += _grid_blocks(grid, width)
    if grid.legend:
        lines += ["", "Conduits (C = conduit):", *grid.legend]
    return lines


def _grid_blocks(grid: _Grid, width: int) -> list[str]:
    """The matrix, in blocks of as many columns as fit the width."""
    label = max(len(r) for r in grid.rows)
    widths = _column_widths(grid)
    blocks: list[list[int]] = [[]]
    used = 2 + label
    for j, w in enumerate(widths):
        if blocks[-1] and used + len(_GAP) + w > width:
            blocks.append([])
            used = 2 + label
        blocks[-1].append(j)
        used += len(_GAP) + w
    lines: list[str] = []
    for block in blocks:
        if len(blocks) > 1:
            lines.append(f"  (columns {grid.columns[block[0]]} to {grid.columns[block[-1]]})")
        lines.append(_grid_line("", [grid.columns[j] for j in block], [widths[j] for j in block], label))
        for row_label, row in zip(grid.rows, grid.cells, strict=True):
            lines.append(_grid_line(row_label, [row[j] for j in block], [widths[j] for j in block], label))
    return lines


def _grid_line(label: str, cells: list[str], widths: list[int], label_width: int) -> str:
    return (
        "  "
        + label.ljust(label_width)
        + "".join(_GAP + c.ljust(w) for c, w in zip(cells, widths, strict=True))
    )


# ----------------------------------------------------------------------------------------------
# learn and diff (agent.policy.learn)


@policy.command()
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
@click.option(
    "-o", "--output", "output", required=True, metavar="FILE", help="Where to write the draft ('-': stdout)."
)
@click.option(
    "--hosts-only",
    is_flag=True,
    help="Zones list the hosts seen instead of their subnets: a device not seen while learning is then "
    "a host in no zone.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    metavar="IANA",
    help="Time zone learned schedules are written in (the plant's local time, e.g. Europe/Berlin).",
)
def learn(captures: tuple[str, ...], output: str, hosts_only: bool, timezone: str) -> None:
    """Draft a policy from observed traffic: zones by subnet, conduits with what was seen."""
    import zoneinfo

    from agent.analysis import AnalysisError
    from agent.policy.learn import draft, learn_result
    from agent.report.model import sha256_file

    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        click.echo(f"conduitwatch: error: --timezone {timezone!r} is not an IANA time zone", err=True)
        sys.exit(EXIT_INVALID)
    try:
        model, inventory, result = learn_result(captures)
    except AnalysisError as e:
        click.echo(f"conduitwatch: error: {e}", err=True)
        sys.exit(EXIT_INVALID)
    names = [s.name for s in result.sources]
    text = draft(model, inventory, names, [sha256_file(n) for n in names], hosts_only, timezone)
    if output == STDIN:
        click.echo(text, nl=False)
    else:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            click.echo(f"conduitwatch: error: cannot write {output}: {e.strerror}", err=True)
            sys.exit(EXIT_INVALID)
        rules = sum(1 for k in model.rules if k[0] != k[1])
        click.echo(
            f"{output}: {len(model.zones)} zones, {rules} conduit flow rules learned from "
            f"{result.stats.packets:,} packets; review it, then 'conduitwatch policy validate {output}'"
        )
    for problem in result.problems:
        click.echo(f"conduitwatch: error: {problem}", err=True)
    sys.exit(1 if result.problems else EXIT_OK)


@policy.command()
@click.argument("policy_file", metavar="POLICY")
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
def diff(policy_file: str, captures: tuple[str, ...]) -> None:
    """Drift between a declared policy and the traffic of captures; exit 0 same, 1 differs, 2 trouble."""
    from agent.analysis import AnalysisError, analyse
    from agent.policy.engine import CompiledPolicy
    from agent.policy.learn import DriftModel, diff_text

    loaded, problems = _load(policy_file)
    if loaded is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        click.echo(verdict(_shown(policy_file), loaded, problems, strict=False)[1], err=True)
        sys.exit(EXIT_INVALID)
    compiled = CompiledPolicy(loaded)
    drift = DriftModel(compiled)
    try:
        result = analyse(captures, [drift], policy=compiled)
    except AnalysisError as e:
        click.echo(f"conduitwatch: error: {e}", err=True)
        sys.exit(EXIT_INVALID)
    text, differs = diff_text(drift)
    click.echo(text)
    for damage in result.problems:
        click.echo(f"conduitwatch: error: {damage}", err=True)
    sys.exit(EXIT_INVALID if result.problems else 1 if differs else EXIT_OK)
