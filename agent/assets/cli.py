"""``conduitwatch assets CAPTURE...``: the passive asset inventory of captures, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

import click

from agent.assets.identity import IDENTITY_KEYS
from agent.assets.inventory import AssetInventory, AssetRecord, records
from agent.assets.oui import OuiRegistry

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_INVALID = 2

# Identity fields with a CSV column of their own: all but the vendor name (its column is filled from
# the MAC too) and the fields only the JSON output carries.
CSV_IDENTITY = tuple(
    k for k in IDENTITY_KEYS if k not in ("vendor", "application_uri", "device_type", "role_hint")
)
CSV_COLUMNS = (
    "address",
    "mac",
    "vendor",
    "vlans",
    "zone",
    "via",
    "role",
    "roles",
    "protocols_served",
    "protocols_used",
    *CSV_IDENTITY,
    "identity_source",
    "first_seen",
    "last_seen",
    "flows",
    "bytes_sent",
    "bytes_received",
)


def _join(counts: dict[str, int]) -> str:
    return " ".join(sorted(counts))


def csv_rows(assets: list[AssetRecord]) -> list[list[str]]:
    rows = [list(CSV_COLUMNS)]
    for a in assets:
        d = a.as_dict()
        ident = d["identity"]
        identity_vendor = ident.get("vendor", "")
        rows.append(
            [
                d["address"],
                d["mac"],
                d["vendor"] or str(identity_vendor),
                " ".join(map(str, d["vlans"])),
                d["zone"],
                " ".join(d["via"]),
                d["role"],
                "; ".join(f"{r['role']}: {r['evidence']}" for r in d["roles"]),
                _join(d["protocols_served"]),
                _join(d["protocols_used"]),
                *(str(ident.get(k, "")) for k in CSV_IDENTITY),
                d["identity_source"],
                d["first_seen"],
                d["last_seen"],
                str(d["flows"]),
                str(d["bytes_sent"]),
                str(d["bytes_received"]),
            ]
        )
    return rows


def to_csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _table(assets: list[AssetRecord], vendor_note: str) -> str:
    head = ["address", "mac", "vendor", "vlan", "zone", "via", "role", "serves", "identity"]
    rows = [head]
    for a in assets:
        ident = ", ".join(f"{k}={v}" for k, v in sorted(a.identity.items()))
        rows.append(
            [
                a.address,
                a.mac or "-",
                (a.vendor or "-")[:28],
                ",".join(map(str, a.vlans)) or "-",
                a.zone or "-",
                ",".join(a.via) or "-",  # the router(s) a device on another BACnet network is behind
                a.roles[0].role if a.roles else "-",
                _join(a.served)[:40] or "-",
                ident[:60] or "-",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    routed = sum(1 for a in assets if a.via)
    behind = f" ({routed} behind BACnet routers)" if routed else ""
    lines.append(f"{len(assets)} assets{behind}" + (f"; {vendor_note}" if vendor_note else ""))
    for a in assets:
        for r in a.roles:
            lines.append(f"  {a.address}: {r.role} - {r.evidence}")
    return "\n".join(lines)


def inventory_json(assets: list[AssetRecord], inventory: AssetInventory, oui: OuiRegistry) -> dict[str, Any]:
    return {
        "assets": [a.as_dict() for a in assets],
        "counters": inventory.stats(),
        "oui_registry": oui.path,
        "oui_missing": oui.missing,
    }


@click.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    help="Name each asset's zone.",
)
@click.option(
    "--max-assets",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Inventory size; the host seen least recently is evicted (and counted) beyond it.",
)
def assets(captures: tuple[str, ...], fmt: str, policy_path: str | None, max_assets: int) -> None:
    """Passive asset inventory of captures: addresses, vendor, roles with evidence, identity."""
    from agent.analysis import AnalysisError, analyse
    from agent.cli import _fail, _policy

    compiled = _policy(policy_path)
    inventory = AssetInventory(max_assets=max_assets)
    try:
        result = analyse(captures, [inventory], policy=compiled)
    except AnalysisError as e:
        _fail(str(e), EXIT_INVALID)
    oui = OuiRegistry()
    found = records(inventory, oui, [s.name for s in result.sources], compiled)
    if fmt == "json":
        click.echo(json.dumps(inventory_json(found, inventory, oui), indent=1, sort_keys=True))
    elif fmt == "csv":
        click.echo(to_csv(csv_rows(found)), nl=False)
    else:
        click.echo(_table(found, oui.missing))
    for problem in result.problems:
        click.echo(f"conduitwatch: error: {problem}", err=True)
    sys.exit(EXIT_RUNTIME if result.problems else EXIT_OK)
