"""Corpus tier: device identity in the inventory against what tshark decodes, frame by frame.

Every message that reveals its sender's identity (``fields["identity"]`` of the decoders, the CIP
ListIdentity/Get_Attributes_All identity, Modbus MEI device identification) is compared with
tshark's fields for the same frame (S7: the SZL identity lists' fields), mapped onto the contract
keys (CONTRACTS.md), and, where the
oracle says whose identity it is (BACnet: a BBMD relays other devices' I-Am; a router relays the I-Am
of a device on another BACnet network, which the inventory keys ``bacnet:NET:MACHEX`` and reaches
through that router), with the address the inventory gives it to (and the router). Oracles exist for
CIP, Modbus, BACnet I-Am and PROFINET DCP; a protocol whose decoder is not in this build is skipped
with the reason, so BACnet and PROFINET are covered as soon as their decoders are registered.
Frames tshark shows an identity in must give us one too, and the values must be equal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.analysis import analyse
from agent.assets.identity import clean_text, identity_owner, identity_via, message_identity
from agent.assets.inventory import address_text
from agent.decoders import PROTOCOLS
from agent.decoders.base import OtMessage
from agent.flows import Flow
from agent.linklayer import format_mac
from tests.corpus.conftest import CORPUS, load_inventory

SEP = "\x1f"
OWNER = "(owner)"  # the address an identity is given to, beside the contract keys
VIA = "(via)"  # the router a device on another BACnet network is reached through
MODBUS_OBJECTS = {0: "vendor", 1: "product_code", 2: "revision", 4: "product", 5: "model", 6: "name"}


def _cip_revision(value: str) -> str:
    v = int(value, 0)
    return f"{v >> 8}.{v & 0xFF}"  # tshark reads the major and minor bytes as one big-endian u16


@dataclass(frozen=True)
class Oracle:
    protocol: str  # our decoder's name
    token: str  # INVENTORY.tsv protocol token of captures to check
    display_filter: str
    fields: dict[str, tuple[str, Callable[[str], str | int]]]  # tshark field -> (contract key, convert)
    # tshark fields naming whose identity it is, first non-empty wins (compared when given)
    owner: tuple[str, ...] = ()
    # tshark fields of a routed sender: its network number, then its address in the forms tshark
    # shows by length (compared when the network is given; the owner fields then name the router)
    routed: tuple[str, ...] = ()


def _int(text: str) -> int:
    return int(text, 0)


def _serial(text: str) -> str:
    return f"0x{int(text, 0):08x}"


ORACLES = (
    Oracle(
        "enip",
        "ENIP",
        "enip.lir.vendor",
        {
            "enip.lir.vendor": ("vendor_id", _int),
            "enip.lir.devtype": ("device_type", _int),
            "enip.lir.prodcode": ("product_code", _int),
            "enip.lir.revision": ("revision", _cip_revision),
            "enip.lir.serial": ("serial", _serial),
            "enip.lir.name": ("product", str),
        },
    ),
    Oracle(
        "enip",
        "CIP",
        "cip.id.vendor_id && !enip.lir.vendor",
        {
            "cip.id.vendor_id": ("vendor_id", _int),
            "cip.id.device_type": ("device_type", _int),
            "cip.id.product_code": ("product_code", _int),
            "cip.id.serial_number": ("serial", _serial),
            "cip.id.product_name": ("product", str),
        },
    ),
    Oracle("modbus", "MBTCP", "modbus.object_str_value", {}),  # objects: handled by pairs below
    Oracle(
        "bacnet",
        "BACAPP",
        # I-Am over BACnet/IP (sent by the device, or relayed by a BBMD as a Forwarded-NPDU, which
        # names the device's B/IP address) and over BACnet/Ethernet (802.2 LLC, LSAP 0x82), also
        # when a router relayed it from another network (NPDU source specifier: the device is
        # bacnet:SNET:SADR, reached through the B/IP or MAC sender). Not compared: MS/TP, ARCNET
        # or SNAP-encapsulated frames, whose link layers are not decoded.
        "bacapp.unconfirmed_service == 0 && (udp || llc.dsap == 0x82)",
        {
            "bacapp.instance_number": ("device_instance", _int),
            "bacapp.vendor_identifier": ("vendor_id", _int),
        },
        owner=("bvlc.fwd_ip", "ip.src", "eth.src"),
        routed=("bacnet.snet", "bacnet.sadr_eth", "bacnet.sadr_mstp", "bacnet.sadr_tmp"),
    ),
    Oracle(
        "profinet",
        "PN_DCP",
        "pn_dcp.suboption_device_nameofstation && pn_dcp.service_type == 1",
        {
            # The inventory shows names trimmed of padding, as it does for every protocol.
            "pn_dcp.suboption_device_nameofstation": ("name", clean_text),
            "pn_dcp.suboption_vendor_id": ("vendor_id", _int),
        },
    ),
    # S7 SZL module identification (xy11) and component identification (xy1C) answers; tshark joins
    # answers sent in several parts and shows them on the last, as the decoder does.
    Oracle("s7comm", "S7COMM", "s7comm.szl.xy11.0001.index || s7comm.szl.001c.000x.index", {}),
)
DECODED = {p.name for p in PROTOCOLS}
S7_FIELDS = (
    "s7comm.szl.xy11.0001.index",
    "s7comm.szl.xy11.0001.anz",  # the order number (MlfB)
    "s7comm.szl.xy11.0001.ausbg",
    "s7comm.szl.xy11.0001.ausbe",
    "s7comm.szl.001c.0001.name",
    "s7comm.szl.001c.0002.name",
    "s7comm.szl.001c.0005.serialn",
    "s7comm.szl.001c.0007.cputypname",
    "s7comm.szl.001c.0009.manufacturer_id",
)


def _s7_identity(values: list[str]) -> dict[str, str | int]:
    """Contract keys from tshark's SZL fields (agent/decoders/s7_szl.py says which record is which)."""
    indexes, order_numbers, major, minor, name, module, serial, type_name, maker = values
    ident: dict[str, str | int] = {}
    records = list(zip(indexes.split(SEP), order_numbers.split(SEP), major.split(SEP), minor.split(SEP),
                       strict=False)) if indexes else []  # fmt: skip
    by_index = {int(i, 0): (o.strip(), int(g or "0"), int(e or "0")) for i, o, g, e in records}
    model = by_index.get(1, ("", 0, 0))[0] or by_index.get(6, ("", 0, 0))[0]
    if model:
        ident["model"] = model
    if 7 in by_index and by_index[7][1] >> 8 == ord("V"):
        _, g, e = by_index[7]
        ident["revision"] = f"V{g & 0xFF}.{e >> 8}.{e & 0xFF}"
    for key, text in (("name", name), ("serial", serial), ("product", type_name or module)):
        if clean_text(text):
            ident[key] = clean_text(text)
    if maker:
        ident["vendor_id"] = int(maker, 0)
    return ident


def captures(token: str) -> list[Path]:
    return [c.file for c in load_inventory() if f"*{token}*(" in c.protocols]


class IdentityLog:
    def __init__(self) -> None:
        self.by_frame: dict[tuple[str, int], list[dict[str, str | int]]] = {}

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        return None

    def on_message(self, msg: OtMessage) -> None:
        found = message_identity(msg)
        if found is not None:
            sender = msg.flow.src if msg.to_server else msg.flow.dst
            owner = identity_owner(msg.fields) or sender
            ident: dict[str, str | int] = dict(found[0])
            if isinstance(owner, str):  # a device on another BACnet network: reached through a router
                ident[OWNER] = owner
                ident[VIA] = _text(identity_via(msg.fields) or sender)
            else:
                ident[OWNER] = _text(owner)
            self.by_frame.setdefault((msg.protocol, msg.pcap_cnt), []).append(ident)


def _text(addr: bytes) -> str:
    return format_mac(addr) if len(addr) == 6 else address_text(addr)


def _routed_owner(values: list[str]) -> str:
    """``bacnet:NET:MACHEX`` from tshark's source specifier fields: the network number, then the
    address as a MAC (6 bytes), an MS/TP station number (1 byte, decimal) or bytes (other lengths)."""
    network, ether, mstp, other = (v.split(SEP)[0] for v in values)
    if not network:
        return ""
    mac = f"{int(mstp):02x}" if mstp else (ether or other).replace(":", "").lower()
    return f"bacnet:{int(network)}:{mac}"


def theirs(tshark: str, path: Path, oracle: Oracle) -> dict[int, dict[str, str | int]]:
    names = (
        ["modbus.object_id", "modbus.object_str_value"]
        if oracle.protocol == "modbus"
        else list(S7_FIELDS)
        if oracle.protocol == "s7comm"
        else list(oracle.fields)
    )
    cmd = [
        tshark,
        "-r",
        str(path),
        "-Y",
        oracle.display_filter,
        "-T",
        "fields",
        "-e",
        "frame.number",
        *(a for n in (*names, *oracle.owner, *oracle.routed) for a in ("-e", n)),
        "-E",
        f"aggregator={SEP}",
        "-E",
        "occurrence=a",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False).stdout
    result: dict[int, dict[str, str | int]] = {}
    for line in out.splitlines():
        frame, *values = line.split("\t")
        routed = _routed_owner(values[len(values) - len(oracle.routed) :]) if oracle.routed else ""
        values = values[: len(values) - len(oracle.routed)]
        owners = values[len(values) - len(oracle.owner) :] if oracle.owner else []
        values = values[: len(values) - len(oracle.owner)]
        ident: dict[str, str | int] = {}
        if oracle.protocol == "s7comm":
            ident = _s7_identity(values)
        elif oracle.protocol == "modbus":
            ids, texts = values[0].split(SEP), values[1].split(SEP)
            for oid, text in zip(ids, texts, strict=False):
                if int(oid, 0) in MODBUS_OBJECTS and text:
                    ident[MODBUS_OBJECTS[int(oid, 0)]] = text.strip()
        else:
            for (key, convert), value in zip(oracle.fields.values(), values, strict=True):
                first = value.split(SEP)[0]
                if first:
                    ident[key] = convert(first)
        owner = next((o.split(SEP)[0] for o in owners if o), "")
        if ident and routed:
            ident[OWNER] = routed
            ident[VIA] = owner
        elif ident and owner:
            ident[OWNER] = owner
        if ident:
            result[int(frame)] = ident
    return result


CASES = [(o, p) for o in ORACLES for p in captures(o.token)]


def routed_devices(tshark: str) -> set[str]:
    """``bacnet:NET:MACHEX`` of every device whose I-Am a router relayed, by tshark, in the corpus."""
    [oracle] = [o for o in ORACLES if o.routed]
    found: set[str] = set()
    for path in captures(oracle.token):
        found |= {str(i[OWNER]) for i in theirs(tshark, path, oracle).values() if VIA in i}
    return found


@pytest.mark.parametrize(
    ("oracle", "path"),
    CASES,
    ids=[f"{o.protocol}-{o.token}:{p.relative_to(CORPUS / 'pcaps')}" for o, p in CASES],
)
def test_identity_matches_tshark(oracle: Oracle, path: Path, tshark: str) -> None:
    if oracle.protocol not in DECODED:
        pytest.skip(f"no {oracle.protocol} decoder in this build: its identity cannot be read yet")
    log = IdentityLog()
    analyse([str(path)], [log])
    expected = theirs(tshark, path, oracle)
    for frame, ident in sorted(expected.items()):
        ours = log.by_frame.get((oracle.protocol, frame))
        assert ours, f"frame {frame}: tshark shows identity {ident}, we report none"
        # Compare the keys tshark can give; ours may have more (a decoder's own extras).
        assert any({k: o.get(k) for k in ident} == ident for o in ours), f"frame {frame}: {ours} vs {ident}"


def test_the_identity_oracles_cover_the_corpus() -> None:
    """The parametrization above is not empty: the corpus has identity frames for CIP and Modbus."""
    assert {o.token for o, _p in CASES} >= {"ENIP", "CIP", "MBTCP", "BACAPP", "S7COMM"}
