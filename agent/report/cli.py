"""``conduitwatch report CAPTURE... --policy P --out DIR``: the auditor's evidence report.

Writes ``report.html`` (self-contained, prints on A4), ``report.json`` (docs/report.schema.json) and
one CSV file per table into DIR. The same inputs give byte-identical files when the generation time
is pinned (``--generated-at`` or SOURCE_DATE_EPOCH, as reproducible builds do).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from agent.analysis import AnalysisError, analyse
from agent.assets.cli import csv_rows
from agent.assets.inventory import AssetInventory, pipeline_emitter, records
from agent.assets.oui import OuiRegistry
from agent.report import csvout, html, model
from agent.report.collect import EventCollector, EvidenceTap, ReportCollector

if TYPE_CHECKING:
    from agent.pipeline import Pipeline, PipelineConfig, Sink

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_INVALID = 2


def generation_time(pinned: str | None) -> str:
    """``--generated-at`` (RFC 3339), else SOURCE_DATE_EPOCH, else now; always UTC, in seconds."""
    if pinned:
        moment = datetime.fromisoformat(pinned.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    elif os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        moment = datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), UTC)
    else:
        moment = datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def produce(
    captures: Iterable[str],
    policy_path: str | None,
    generated_at: str,
    config: PipelineConfig | None = None,
    extra_sinks: Iterable[Sink] = (),
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(the JSON document, CSV files by name, capture problems); raises AnalysisError."""
    from agent.cli import _policy

    paths = list(captures)
    compiled = _policy(policy_path)
    from agent.capture.files import expand_paths

    tap = EvidenceTap(len(expand_paths(paths)))
    collector = ReportCollector()
    events = EventCollector()
    inventory = AssetInventory(announce=False)

    def attach(pipeline: Pipeline) -> None:
        inventory.emit = pipeline_emitter(pipeline)

    result = analyse(
        paths,
        [collector, inventory],
        policy=compiled,
        sinks=[events, *extra_sinks],
        config=config,
        tap=tap,
        on_pipeline=attach,
    )
    oui = OuiRegistry()
    sources = [s.name for s in result.sources]
    found = records(inventory, oui, sources, compiled)
    note = oui.missing or f"vendors from the IEEE OUI registry at {oui.path}"
    doc = model.build(result, tap, collector, events, found, note, policy_path, compiled, generated_at)
    doc["limits"]["assets_evicted"] = inventory.evicted + inventory.routed_evicted  # hosts and routed devices
    return doc, csvout.tables(doc, csv_rows(found)), [str(p) for p in result.problems]


def write(out_dir: str, doc: dict[str, Any], tables: dict[str, str]) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    files = {
        "report.json": json.dumps(doc, indent=1, ensure_ascii=False) + "\n",
        "report.html": html.render(doc),
        **tables,
    }
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return sorted(files)


def run_report(
    captures: Iterable[str],
    policy_path: str | None,
    out_dir: str,
    generated_at: str | None,
    config: PipelineConfig | None = None,
    extra_sinks: Iterable[Sink] = (),
    quiet: bool = False,
) -> int:
    """The whole command; returns the exit code (also used by ``replay --report``)."""
    from agent.cli import _fail

    try:
        when = generation_time(generated_at)
    except ValueError:
        _fail(
            f"--generated-at {generated_at!r}: expected an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
            EXIT_INVALID,
        )
    try:
        doc, tables, problems = produce(captures, policy_path, when, config, extra_sinks)
    except AnalysisError as e:
        _fail(str(e), EXIT_INVALID)
    for sink in extra_sinks:
        sink.close()
    try:
        names = write(out_dir, doc, tables)
    except OSError as e:
        _fail(f"cannot write the report to {out_dir}: {e.strerror}", EXIT_RUNTIME)
    if not quiet:
        click.echo(f"report written to {out_dir}: {', '.join(names)}")
        click.echo(
            f"{len(doc['findings'])} findings, {len(doc['audits'])} audited operations, "
            f"{len(doc['incidents'])} incidents, {len(doc['assets'])} assets"
        )
    for problem in problems:
        click.echo(f"conduitwatch: error: {problem}", err=True)
    return EXIT_RUNTIME if problems else EXIT_OK


@click.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    help="Zone/conduit policy to judge against.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="DIR",
    help="Directory for report.html, report.json, *.csv.",
)
@click.option(
    "--generated-at",
    metavar="TIME",
    help="Pin the generation time (RFC 3339) for reproducible output; default SOURCE_DATE_EPOCH or now.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def report(
    captures: tuple[str, ...], policy_path: str | None, out_dir: str, generated_at: str | None, quiet: bool
) -> None:
    """Evidence report of captures: HTML, JSON and CSV with findings, zones, assets and compliance."""
    sys.exit(run_report(captures, policy_path, out_dir, generated_at, quiet=quiet))
