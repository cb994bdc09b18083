"""Validation of EVE files against docs/eve.schema.json, shared by the fast and corpus tiers."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "eve.schema.json"


@cache
def validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_eve_file(path: Path) -> set[str]:
    """Every line of ``path`` validates (else AssertionError naming the line); returns the event types."""
    check = validator()
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            event = json.loads(line)
            errors = sorted(check.iter_errors(event), key=lambda e: list(e.path))
            assert not errors, (
                f"{path}:{number}: {event.get('event_type')}: {errors[0].message} at {list(errors[0].path)}"
            )
            seen.add(event["event_type"])
    return seen
