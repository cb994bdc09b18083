"""NTP (UDP 123): version and mode from the first byte (RFC 5905 7.3), sane lengths per mode."""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier

MODES = ("reserved", "symmetric_active", "symmetric_passive", "client", "server", "broadcast", "control",
         "private")  # fmt: skip


def _header(payload: bytes) -> tuple[int, int] | None:
    """(version, mode) of a plausible NTP packet."""
    if not payload:
        return None
    version, mode = payload[0] >> 3 & 7, payload[0] & 7
    if not 1 <= version <= 4 or mode == 0:
        return None
    minimum = 48 if mode <= 5 else 12 if mode == 6 else 8
    return (version, mode) if len(payload) >= minimum else None


def probe(payload: bytes, to_server: bool) -> bool:
    header = _header(payload)
    # Data-carrying modes are exactly 48 bytes plus optional extensions/MAC (multiples of 4).
    return header is not None and (header[1] > 5 or len(payload) % 4 == 0)


class NtpIdentifier(Identifier):
    protocol = "ntp"
    max_packets = 4

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        header = _header(payload)
        if header is not None:
            self.fields["version"] = header[0]
            self.count("modes", MODES[header[1]])
        return False


SPEC = ProtocolSpec("ntp", frozenset(), frozenset({123}), probe, NtpIdentifier, probe_any_port=False)
