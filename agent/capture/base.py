"""Shared pieces of the capture sources."""

from __future__ import annotations


class CaptureError(Exception):
    """A capture cannot be opened at all (missing, empty, not a capture, unsupported format).

    Raised before any packet is yielded; the CLI turns it into a one-line message and exit code 2.
    """

    def __init__(self, source: str, offset: int | None, reason: str) -> None:
        # No offset for what concerns the file as a whole (cannot open it, empty, a directory).
        super().__init__(f"{source}: {reason}" + ("" if offset is None else f" at byte offset {offset}"))
        self.source = source
        self.offset = offset
        self.reason = reason
