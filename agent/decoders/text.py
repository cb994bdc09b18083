"""Small helpers for the text-based protocols that identification reads (banners, command lines)."""

from __future__ import annotations

MAX_TEXT = 128  # characters of a banner, host name or module name kept in a flow event


def printable(raw: bytes, limit: int = MAX_TEXT) -> str:
    """``raw`` as ASCII with anything unprintable replaced, cut to ``limit`` characters."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in raw[:limit])


def first_line(payload: bytes, limit: int = 1024) -> bytes | None:
    """The first line (without CR/LF) when it ends within ``limit`` bytes, else None."""
    end = payload.find(b"\n", 0, limit)
    if end < 0:
        return None
    return payload[: end - 1] if end and payload[end - 1] == 0x0D else payload[:end]
