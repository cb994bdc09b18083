"""MAC address -> vendor, from the IEEE registry data that the operating system ships.

The registry is not copied into the project: it changes every week and Debian keeps it current.
Two Debian files carry it, found at run time in this order:

* ``/usr/share/ieee-data/oui.txt`` (package ieee-data): the IEEE's own MA-L listing;
* ``/usr/share/wireshark/manuf`` (package libwireshark-data, installed with tshark): MA-L, MA-M
  (/28) and MA-S (/36) blocks with the organisation's full name.

``CONDUITWATCH_OUI_FILE`` names another file in either format. When none is there, every vendor is
empty and ``OuiRegistry.missing`` says why, so a report can tell the reader instead of guessing.
"""

from __future__ import annotations

import os
import re

DEFAULT_PATHS = ("/usr/share/ieee-data/oui.txt", "/usr/share/wireshark/manuf")
ENV_PATH = "CONDUITWATCH_OUI_FILE"
# oui.txt: "00-0E-8C   (hex)\t\tSiemens AG"
_IEEE_LINE = re.compile(r"^([0-9A-Fa-f]{2})-([0-9A-Fa-f]{2})-([0-9A-Fa-f]{2})\s+\(hex\)\s+(.+?)\s*$")
MAX_FILE_BYTES = 64 << 20  # a registry is ~5 MB; anything far larger is not one


class OuiRegistry:
    """Vendor lookups by the longest registered prefix (36, 28 or 24 bits) of a MAC address."""

    def __init__(self, path: str | None = None) -> None:
        self.path = ""
        self.missing = ""
        # prefix length in bits -> {prefix as int: organisation}
        self._blocks: dict[int, dict[int, str]] = {}
        candidates = [path] if path else ([os.environ[ENV_PATH]] if os.environ.get(ENV_PATH) else [])
        candidates += [] if path else list(DEFAULT_PATHS)
        for candidate in candidates:
            if os.path.isfile(candidate):
                try:
                    self._load(candidate)
                except (OSError, UnicodeDecodeError, ValueError) as e:
                    self.missing = f"{candidate}: not readable as an OUI registry ({e})"
                    continue
                if self._blocks:
                    self.path = candidate
                    self.missing = ""
                    return
                self.missing = f"{candidate}: holds no vendor entries"
        if not self.missing:
            self.missing = (
                "no IEEE OUI registry found (install Debian package ieee-data or libwireshark-data, "
                f"or set {ENV_PATH}): vendors are left empty"
            )

    def _load(self, path: str) -> None:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise ValueError("file too large")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "(hex)" in line:
                    m = _IEEE_LINE.match(line)
                    if m:
                        self._add(int(m.group(1) + m.group(2) + m.group(3), 16), 24, m.group(4))
                    continue
                if not line or line[0] in "#\n":
                    continue
                self._manuf_line(line)

    def _manuf_line(self, line: str) -> None:
        # Wireshark manuf: "00:1B:C5:00:10:00/36<TAB>Short<TAB>Full name" (the full name is optional)
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2:
            return
        prefix, _, bits_text = parts[0].partition("/")
        digits = prefix.replace(":", "").replace("-", "").replace(".", "")
        try:
            value = int(digits, 16)
        except ValueError:
            return
        bits = int(bits_text) if bits_text.isdigit() else len(digits) * 4
        if bits not in (24, 28, 36) or len(digits) * 4 < bits:
            return
        value >>= len(digits) * 4 - bits
        name = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).strip().rstrip(",")
        self._add(value, bits, name)

    def _add(self, prefix: int, bits: int, name: str) -> None:
        self._blocks.setdefault(bits, {}).setdefault(prefix, name)

    def __len__(self) -> int:
        return sum(len(b) for b in self._blocks.values())

    def vendor(self, mac: str) -> str:
        """The registered organisation of ``mac`` ("aa:bb:cc:dd:ee:ff"), or "" when unknown.

        Locally administered and group addresses are nobody's block: they get "" too.
        """
        digits = mac.replace(":", "").replace("-", "")
        if len(digits) != 12:
            return ""
        try:
            value = int(digits, 16)
        except ValueError:
            return ""
        if (value >> 40) & 0x03:  # group bit or locally administered bit
            return ""
        for bits in (36, 28, 24):
            table = self._blocks.get(bits)
            if table:
                name = table.get(value >> (48 - bits))
                if name is not None:
                    return name
        return ""
