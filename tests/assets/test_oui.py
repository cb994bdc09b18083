"""The IEEE OUI registry as Debian ships it (ieee-data's oui.txt or Wireshark's manuf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.assets.oui import ENV_PATH, OuiRegistry

OUI_TXT = """\
OUI/MA-L                                                    Organization
company_id                                                  Organization
                                                            Address

00-0E-8C   (hex)\t\tSiemens AG
000E8C     (base 16)\t\tSiemens AG
\t\t\t\tNuernberg  Mittelfranken  DE  90475

00-1D-9C   (hex)\t\tRockwell Automation
001D9C     (base 16)\t\tRockwell Automation
"""
MANUF = """\
# comment
00:0E:8C\tSiemens\tSiemens AG
00:1B:C5\tIEEERegi\tIEEE Registration Authority
00:1B:C5:00:10:00/36\tOpenRBco\tOpenRB.com, Direct SIA
00:55:DA:10:00:00/28\tKoolPOS\tKoolPOS Inc.
00:00:17\tOracle
"""


def test_ieee_oui_txt(tmp_path: Path) -> None:
    (tmp_path / "oui.txt").write_text(OUI_TXT)
    registry = OuiRegistry(str(tmp_path / "oui.txt"))
    assert len(registry) == 2 and registry.missing == ""
    assert registry.vendor("00:0e:8c:01:02:03") == "Siemens AG"
    assert registry.vendor("00-1D-9C-FF-FF-FF") == "Rockwell Automation"
    assert registry.vendor("00:00:01:00:00:00") == ""


def test_wireshark_manuf_longest_prefix(tmp_path: Path) -> None:
    (tmp_path / "manuf").write_text(MANUF)
    registry = OuiRegistry(str(tmp_path / "manuf"))
    assert registry.vendor("00:1b:c5:00:10:42") == "OpenRB.com, Direct SIA"  # the /36 block inside the /24
    assert registry.vendor("00:1b:c5:00:20:42") == "IEEE Registration Authority"
    assert registry.vendor("00:55:da:1f:ff:ff") == "KoolPOS Inc."
    assert registry.vendor("00:55:da:2f:ff:ff") == ""
    assert registry.vendor("00:00:17:00:00:01") == "Oracle"  # short name when there is no long one


@pytest.mark.parametrize(
    "mac", ["02:0e:8c:00:00:01", "01:0e:8c:00:00:01", "ff:ff:ff:ff:ff:ff", "junk", "00:0e:8c"]
)
def test_local_group_and_bad_addresses_have_no_vendor(tmp_path: Path, mac: str) -> None:
    (tmp_path / "manuf").write_text(MANUF)
    assert OuiRegistry(str(tmp_path / "manuf")).vendor(mac) == ""


def test_missing_registry_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.assets.oui.DEFAULT_PATHS", (str(tmp_path / "none.txt"),))
    monkeypatch.delenv(ENV_PATH, raising=False)
    registry = OuiRegistry()
    assert registry.vendor("00:0e:8c:01:02:03") == "" and "ieee-data" in registry.missing


def test_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "manuf").write_text(MANUF)
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "manuf"))
    assert OuiRegistry().path == str(tmp_path / "manuf")


def test_garbage_file_is_not_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "garbage").write_bytes(b"\x00\xff" * 100)
    monkeypatch.setattr("agent.assets.oui.DEFAULT_PATHS", ())
    registry = OuiRegistry(str(tmp_path / "garbage"))
    assert len(registry) == 0 and registry.missing
