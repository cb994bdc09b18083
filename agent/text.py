"""Small wording helpers shared by the command line, the policy tools and the report."""

from __future__ import annotations


def count_of(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1 ("1 error", "2 errors")."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
