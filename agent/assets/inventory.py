"""The passive asset inventory: a pipeline consumer that learns hosts from flows and messages.

Per host it keeps the addresses it was seen with (MAC, VLAN), what it serves and uses, the industrial
operations it sent and received, the identity devices announce about themselves, and first/last
seen. Roles (controller, HMI, engineering station, historian, ...) are inferred at the end from
that behaviour, each with the evidence a reviewer can check. Nothing here runs per packet: new
flows, ended flows and application messages only.

BACnet devices on another BACnet network (an MS/TP controller behind a BACnet/IP router) have no IP
or MAC of their own on the captured link: what reveals them is an I-Am the router relayed, with the
device's network number and MAC in the NPDU source specifier. They are assets of their own, keyed by
that BACnet address (``bacnet:NET:MACHEX``), with the routers they were reached through (``via``).

Bounded: at most ``max_assets`` hosts and as many routed BACnet devices (the one seen least recently
is evicted and counted), and per host at most ``MAX_ITEMS`` entries per table (further ones counted
in ``truncated``).

With an ``emit`` callback (live mode) it reports a new host and an identity or firmware change as
EVE ``asset`` events, and changes (and, against a baseline inventory, new devices) as alerts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.assets.identity import (
    CIP_DEVICE_ROLES,
    identity_owner,
    identity_via,
    message_identity,
)
from agent.decoders.base import REQUEST, RESPONSE, OtMessage
from agent.dissect import format_ip
from agent.flows import Flow
from agent.linklayer import endpoint_macs, format_mac
from agent.outputs.eve import format_timestamp
from agent.ports import CATEGORIES
from agent.text import count_of

if TYPE_CHECKING:
    from agent.assets.oui import OuiRegistry
    from agent.dissect import Packet
    from agent.pipeline import Pipeline
    from agent.policy.engine import CompiledPolicy

# SZL lists (low byte of the SZL-ID) that hold a S7 CPU's identity: 0x11 module identification
# (order number, firmware), 0x1C component identification (station and module names).
S7_IDENTITY_SZL = frozenset({0x11, 0x1C})
MAX_ITEMS = 64  # per host and table (protocols, peers, MACs, identity changes)
MAC_SHARED_BY = 4  # a MAC in front of this many IPs is a router's: it is not any one host's MAC

# Alert rules: (signature_id, severity, category, 62443-3-3 SRs, ISO/IEC 27001:2022 Annex A)
ASSET_RULES: dict[str, tuple[int, int, str, tuple[str, ...], tuple[str, ...]]] = {
    "new_device": (9100301, 2, "New device on the network", ("SR 7.8", "SR 1.2"), ("A.5.9", "A.8.9")),
    "identity_changed": (9100302, 2, "Device identity changed", ("SR 7.8", "SR 3.4"), ("A.5.9", "A.8.9")),
    "firmware_changed": (
        9100303,
        1,
        "Device firmware revision changed",
        ("SR 3.4", "SR 7.6"),
        ("A.8.9", "A.8.32"),
    ),
}

_OT = CATEGORIES["ot"]
_WRITE_OPS = frozenset({"write", "operate"})
_ENGINEERING_OPS = frozenset({"program", "upload", "firmware", "mode", "config"})
_READ_OPS = frozenset({"read", "subscribe", "diagnostic", "discovery", "session"})

# (time, flow, pcap_cnt, source index, event type, fields)
EmitFn = Callable[[str, float, Flow | None, int, int, dict[str, Any]], None]


def is_group(addr: bytes) -> bool:
    """Broadcast and multicast addresses: destinations, never devices."""
    if len(addr) == 4:
        return addr[0] >= 224 or addr == b"\xff\xff\xff\xff" or addr[3] == 255
    if len(addr) == 16:
        return addr[0] == 0xFF
    return len(addr) == 6 and bool(addr[0] & 1)


def address_text(addr: bytes) -> str:
    """IPv4/IPv6 as text; a 6-byte address (an L2 flow's endpoint) as a MAC."""
    return format_mac(addr) if len(addr) == 6 else format_ip(addr)


def _bump(table: dict[str, int], key: str, n: int = 1) -> bool:
    """Count ``key``; False (not counted) when the table is full and the key new."""
    if key in table:
        table[key] += n
        return True
    if len(table) >= MAX_ITEMS:
        return False
    table[key] = n
    return True


@dataclass(slots=True)
class IdentityChange:
    ts: float
    key: str
    old: str | int
    new: str | int
    source: int
    pcap_cnt: int


@dataclass(slots=True)
class Host:
    """What was seen of one address."""

    addr: bytes
    first_seen: float
    last_seen: float
    macs: dict[str, int] = field(default_factory=dict)  # MAC -> flows started with it
    vlans: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)  # protocol -> flows this host answered
    used: dict[str, int] = field(default_factory=dict)  # protocol -> flows this host opened
    clients: dict[str, int] = field(default_factory=dict)  # address -> flows it opened to this host
    servers: dict[str, int] = field(default_factory=dict)
    ops_sent: dict[str, int] = field(default_factory=dict)  # "protocol operation" -> requests sent
    ops_received: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    flows: int = 0
    identity: dict[str, str | int] = field(default_factory=dict)
    identity_from: str = ""  # what revealed it, e.g. "modbus device identification (MEI 14)"
    identity_packet: tuple[int, int, float] = (-1, 0, 0.0)  # (source index, pcap_cnt, time)
    changes: list[IdentityChange] = field(default_factory=list)
    truncated: int = 0  # entries not kept because a table was full
    # Identity lists the device answered without a decoder reading their contents (S7 SZL ids).
    identity_lists: dict[str, int] = field(default_factory=dict)
    # A device on another BACnet network: its BACnet address (``addr`` is empty then) and the
    # routers (IP or MAC) whose relayed messages revealed it -> messages.
    network_address: str = ""
    via: dict[str, int] = field(default_factory=dict)


def host_address(host: Host) -> str:
    """The address an asset is known by: its IP or MAC, or a routed BACnet device's network address."""
    return host.network_address or address_text(host.addr)


def routed_sort_key(address: str) -> tuple[int, bytes]:
    """``bacnet:NET:MACHEX`` ordered by network number, then MAC."""
    _, net, mac = address.split(":", 2)
    return int(net), bytes.fromhex(mac)


class AssetInventory:
    """Flow consumer building the inventory. ``emit`` (optional) receives asset events and alerts."""

    def __init__(
        self,
        max_assets: int = 10_000,
        emit: EmitFn | None = None,
        baseline: frozenset[str] | None = None,
        announce: bool = True,
    ) -> None:
        self.max_assets = max_assets
        self.announce = announce  # EVE ``asset`` events for new hosts (live mode)
        self.hosts: OrderedDict[bytes, Host] = OrderedDict()  # least recently seen first
        self.evicted = 0
        # BACnet devices behind routers, by ``bacnet:NET:MACHEX``; bounded by ``max_assets`` too.
        self.routed: OrderedDict[str, Host] = OrderedDict()
        self.routed_evicted = 0
        self.emit = emit
        self.baseline = baseline  # addresses known before: any other is a new device (alert)
        self.mac_ips: dict[str, set[bytes]] = {}  # bounded by MAC_SHARED_BY entries a MAC
        self.new_devices = 0
        self.identity_changes = 0

    # -- the pipeline hooks ------------------------------------------------------------------------

    def _host(self, addr: bytes, ts: float) -> Host:
        host = self.hosts.get(addr)
        if host is not None:
            if ts > host.last_seen:
                host.last_seen = ts
            self.hosts.move_to_end(addr)
            return host
        if len(self.hosts) >= self.max_assets:
            self.hosts.popitem(last=False)
            self.evicted += 1
        host = self.hosts[addr] = Host(addr, ts, ts)
        return host

    def on_flow_start(self, flow: Flow, pkt: Packet) -> None:
        ts = flow.first_ts
        new = [a for a in (flow.src, flow.dst) if a not in self.hosts and not is_group(a)]
        src = self._host(flow.src, ts)
        dst = self._host(flow.dst, ts)
        if flow.vlan:
            vlan = str(flow.vlan[-1])
            _bump(src.vlans, vlan)
            _bump(dst.vlans, vlan)
        if pkt.l2_off >= 0 and flow.ip_version:
            src_mac, dst_mac = endpoint_macs(pkt, flow.src)
            self._mac(src, src_mac)
            self._mac(dst, dst_mac)
        if self.emit is not None and (self.announce or self.baseline is not None):
            for addr in new:
                host = self.hosts.get(addr)  # a one-host table may have evicted it already
                if host is not None:
                    self._announce(host, flow)

    def _mac(self, host: Host, mac: str) -> None:
        if int(mac[:2], 16) & 1:  # a group address (broadcast, multicast) is nobody's own
            return
        if not _bump(host.macs, mac):
            host.truncated += 1
        ips = self.mac_ips.get(mac)
        if ips is None:
            ips = self.mac_ips[mac] = set()
        if len(ips) < MAC_SHARED_BY:
            ips.add(host.addr)

    def on_flow_end(self, flow: Flow, reason: str) -> None:
        client, server, _sport, dport = self._orientation(flow)
        c = self._host(client, flow.last_ts)
        s = self._host(server, flow.last_ts)
        to_server = flow.src == client
        sent = flow.bytes_toserver if to_server else flow.bytes_toclient
        received = flow.bytes_toclient if to_server else flow.bytes_toserver
        c.bytes_sent += sent
        c.bytes_received += received
        s.bytes_sent += received
        s.bytes_received += sent
        c.flows += 1
        s.flows += 1
        if flow.ip_version == 0:
            service = flow.app_proto or "ethernet"
        else:
            proto = {6: "tcp", 17: "udp"}.get(flow.proto)
            service = flow.app_proto or (f"{proto}/{dport}" if proto else f"ip-{flow.proto}")
        if not (_bump(s.served, service) and _bump(c.used, service)):
            c.truncated += 1
        if not (_bump(s.clients, address_text(client)) and _bump(c.servers, address_text(server))):
            s.truncated += 1

    @staticmethod
    def _orientation(flow: Flow) -> tuple[bytes, bytes, int, int]:
        """(client, server, client port, server port): the initiator, unless the capture began
        mid-connection and only the other side sits on the protocol's port (the policy's verdict
        knows that better when there is one)."""
        verdict = flow.verdict
        client = getattr(verdict, "client", None)
        if isinstance(client, bytes) and client == flow.dst:
            return flow.dst, flow.src, flow.dport, flow.sport
        return flow.src, flow.dst, flow.sport, flow.dport

    def on_message(self, msg: OtMessage) -> None:
        flow = msg.flow
        sender, receiver = (flow.src, flow.dst) if msg.to_server else (flow.dst, flow.src)
        if msg.direction == REQUEST:
            op = f"{msg.protocol} {msg.operation}"
            s = self._host(sender, msg.ts)
            r = self._host(receiver, msg.ts)
            if not (_bump(s.ops_sent, op) and _bump(r.ops_received, op)):
                s.truncated += 1
        found = message_identity(msg)
        if found is not None:
            owner = identity_owner(msg.fields)
            if isinstance(owner, str):
                self._routed_identity(owner, identity_via(msg.fields) or sender, found, msg)
            else:
                self._identity(self._host(owner or sender, msg.ts), found[0], found[1], msg)
        elif msg.direction == RESPONSE and msg.protocol == "s7comm":
            szl = msg.fields.get("szl_id")
            if isinstance(szl, int) and szl & 0xFF in S7_IDENTITY_SZL:
                _bump(self._host(sender, msg.ts).identity_lists, f"s7comm SZL 0x{szl:04x}")

    def _routed_identity(
        self, address: str, router: bytes, found: tuple[dict[str, str | int], str], msg: OtMessage
    ) -> None:
        """A device behind a BACnet router: an asset of its own, reached through ``router``."""
        host = self.routed.get(address)
        new = host is None
        if host is None:
            if len(self.routed) >= self.max_assets:
                self.routed.popitem(last=False)
                self.routed_evicted += 1
            host = self.routed[address] = Host(b"", msg.ts, msg.ts, network_address=address)
        else:
            if msg.ts > host.last_seen:
                host.last_seen = msg.ts
            self.routed.move_to_end(address)
        if not _bump(host.via, address_text(router)):
            host.truncated += 1
        self._identity(host, found[0], found[1], msg)
        if new and self.emit is not None and (self.announce or self.baseline is not None):
            self._announce(host, msg.flow, msg.pcap_cnt, msg.source)

    # -- identity ----------------------------------------------------------------------------------

    def _identity(self, host: Host, ident: dict[str, str | int], how: str, msg: OtMessage) -> None:
        if not host.identity:
            host.identity = dict(ident)
            host.identity_from = how
            host.identity_packet = (msg.source, msg.pcap_cnt, msg.ts)
            return
        changed = [k for k, v in ident.items() if k in host.identity and host.identity[k] != v]
        changes = [
            IdentityChange(msg.ts, k, host.identity[k], ident[k], msg.source, msg.pcap_cnt) for k in changed
        ]
        for change in changes:
            if len(host.changes) < MAX_ITEMS:
                host.changes.append(change)
            else:
                host.truncated += 1
        for key, value in ident.items():
            host.identity.setdefault(key, value)
        if not changed:
            return
        self.identity_changes += 1
        for key in changed:
            host.identity[key] = ident[key]
        host.identity_from = how
        host.identity_packet = (msg.source, msg.pcap_cnt, msg.ts)
        if self.emit is not None:
            kind = "firmware_changed" if "revision" in changed else "identity_changed"
            what = ", ".join(f"{c.key} {c.old!r} -> {c.new!r}" for c in changes)
            sentence = f"{host_address(host)} announced a different identity over {how}: {what}"
            self._alert(kind, sentence, msg.ts, msg.flow, msg.pcap_cnt, msg.source, host)
            self.emit(
                "asset",
                msg.ts,
                msg.flow,
                msg.pcap_cnt,
                msg.source,
                {"asset": {"event": "changed", **self.describe(host)}},
            )

    # -- events ------------------------------------------------------------------------------------

    def _announce(
        self, host: Host, flow: Flow | None, cnt: int | None = None, source: int | None = None
    ) -> None:
        """A new asset: seen first on ``flow`` (its first packet unless ``cnt``/``source`` say)."""
        assert self.emit is not None
        ts = host.first_seen
        if cnt is None:
            cnt = flow.first_cnt if flow is not None else 0
        if source is None:
            source = flow.last_source if flow is not None else -1
        if self.announce:
            self.emit("asset", ts, flow, cnt, source, {"asset": {"event": "new", **self.describe(host)}})
        address = host_address(host)
        if self.baseline is not None and address not in self.baseline:
            self.new_devices += 1
            sentence = f"{address} appeared on the network: not in the baseline inventory"
            self._alert("new_device", sentence, ts, flow, cnt, source, host)

    def _alert(
        self, kind: str, sentence: str, ts: float, flow: Flow | None, cnt: int, source: int, host: Host
    ) -> None:
        assert self.emit is not None
        sid, severity, category, srs, iso = ASSET_RULES[kind]
        self.emit(
            "alert",
            ts,
            flow,
            cnt,
            source,
            {
                "alert": {
                    "signature_id": sid,
                    "signature": sentence,
                    "category": category,
                    "severity": severity,
                    "rule": kind,
                    "count": 1,
                    "first_seen": format_timestamp(ts),
                    "last_seen": format_timestamp(ts),
                    "metadata": {"iec62443_sr": list(srs), "iso27001_annex_a": list(iso)},
                },
                "asset": self.describe(host),
            },
        )

    @staticmethod
    def describe(host: Host) -> dict[str, Any]:
        """The short form used in EVE events."""
        out: dict[str, Any] = {"address": host_address(host)}
        if host.via:
            out["via"] = sorted(host.via)
        if host.macs:
            out["mac"] = max(host.macs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if host.identity:
            out["identity"] = dict(sorted(host.identity.items()))
        return out

    def stats(self) -> dict[str, int]:
        return {
            "assets": len(self.hosts),
            "evicted": self.evicted,
            "routed_devices": len(self.routed),
            "routed_evicted": self.routed_evicted,
            "max": self.max_assets,
            "identity_changes": self.identity_changes,
            "new_devices": self.new_devices,
        }


def pipeline_emitter(pipeline: Pipeline) -> EmitFn:
    """Asset events and alerts go through the pipeline's sinks, with the flow's EVE header."""
    from agent.outputs.eve import flow_header
    from agent.records import Event

    def emit(
        event_type: str, ts: float, flow: Flow | None, cnt: int, source: int, fields: dict[str, Any]
    ) -> None:
        if not pipeline.sinks:
            return
        header = flow_header(flow, pipeline.source_names, cnt, source) if flow is not None else {}
        header.update(fields)
        pipeline.emit(Event(event_type, ts, header))

    return emit


def load_baseline(path: str) -> frozenset[str]:
    """Addresses of an inventory written by ``conduitwatch assets --format json``; ValueError if not one."""
    import json

    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("assets"), list):
        raise ValueError("not an inventory from 'conduitwatch assets --format json'")
    return frozenset(str(a["address"]) for a in doc["assets"] if isinstance(a, dict) and "address" in a)


# ---------------------------------------------------------------------------------------------
# The inventory as records: roles, zones, vendors


@dataclass(slots=True)
class Role:
    role: str
    evidence: str


def _ot_counts(table: dict[str, int]) -> dict[str, dict[str, int]]:
    """{"modbus read": 3} -> {"read": {"modbus": 3}}"""
    out: dict[str, dict[str, int]] = {}
    for key, n in table.items():
        protocol, _, op = key.partition(" ")
        out.setdefault(op, {})[protocol] = out.setdefault(op, {}).get(protocol, 0) + n
    return out


def _ops_text(by_op: dict[str, dict[str, int]], ops: frozenset[str]) -> str:
    parts = []
    for op in sorted(ops & by_op.keys()):
        for protocol, n in sorted(by_op[op].items()):
            parts.append(f"{protocol} {op} x{n}")
    return ", ".join(parts)


def infer_roles(host: Host) -> list[Role]:
    """Roles with the behaviour that suggests each, strongest first."""
    roles: list[Role] = []
    ident = host.identity
    hint = ident.get("role_hint")
    if isinstance(hint, str) and hint:
        roles.append(Role(hint, f"the device announces itself as {hint} ({host.identity_from})"))
    device_type = ident.get("device_type")
    if isinstance(device_type, int) and device_type in CIP_DEVICE_ROLES:
        role = CIP_DEVICE_ROLES[device_type]
        roles.append(Role(role, f"CIP identity device type {device_type} ({host.identity_from})"))
    ot_served = sorted(p for p in host.served if p in _OT)
    # A controller "sends" requests on its own protocol too (an S7 PLC asks the programming device
    # for the blocks of a download): only requests on protocols it does not serve describe a client.
    sent = _ot_counts({k: n for k, n in host.ops_sent.items() if k.partition(" ")[0] not in ot_served})
    received = _ot_counts(host.ops_received)
    answered = {op for op in received if op not in ("io",)}
    if ot_served and answered:
        clients = len(host.clients)
        what = ", ".join(ot_served)
        roles.append(
            Role(
                "controller",
                f"answers {what} requests ({_ops_text(received, frozenset(answered))}) "
                f"from {count_of(clients, 'client')}",
            )
        )
    engineering = _ENGINEERING_OPS & sent.keys()
    if engineering:
        roles.append(Role("engineering-station", f"sent {_ops_text(sent, frozenset(engineering))}"))
    if _WRITE_OPS & sent.keys():
        roles.append(Role("hmi", f"sent {_ops_text(sent, _WRITE_OPS)} to controllers"))
    elif sent and set(sent) <= _READ_OPS and ("read" in sent or "subscribe" in sent):
        roles.append(Role("historian", f"reads only: {_ops_text(sent, _READ_OPS)}"))
    if ("io" in sent or "io" in received) and (not ot_served or not answered):
        roles.append(Role("io-device", "exchanges cyclic I/O and answers no requests"))
    for category, role in (
        ("backup", "backup-server"),
        ("remote_access", "remote-access-server"),
        ("infrastructure", "infrastructure-server"),
        ("web", "web-server"),
    ):
        served = sorted(p for p in host.served if p in CATEGORIES[category])
        if served:
            flows = sum(host.served[p] for p in served)
            roles.append(Role(role, f"serves {', '.join(served)} ({flows} flows)"))
    backup_used = sorted(p for p in host.used if p in CATEGORIES["backup"])
    if backup_used and not any(r.role == "backup-server" for r in roles):
        roles.append(Role("backup-client", f"opens {', '.join(backup_used)} to a backup target"))
    seen: set[str] = set()
    unique = []
    for r in roles:
        if r.role not in seen:
            seen.add(r.role)
            unique.append(r)
    return unique


@dataclass(slots=True)
class AssetRecord:
    """One row of the inventory, ready for tables and JSON."""

    address: str
    mac: str
    vendor: str
    vlans: list[int]
    zone: str
    roles: list[Role]
    served: dict[str, int]
    used: dict[str, int]
    identity: dict[str, str | int]
    identity_from: str
    identity_packet: dict[str, Any] | None
    identity_changes: list[dict[str, Any]]
    first_seen: float
    last_seen: float
    flows: int
    bytes_sent: int
    bytes_received: int
    peers: int
    truncated: int
    via: list[str] = field(default_factory=list)  # routers a device on another BACnet network is behind

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "mac": self.mac,
            "vendor": self.vendor,
            "vlans": self.vlans,
            "zone": self.zone,
            "via": self.via,
            "role": self.roles[0].role if self.roles else "",
            "roles": [{"role": r.role, "evidence": r.evidence} for r in self.roles],
            "protocols_served": dict(sorted(self.served.items())),
            "protocols_used": dict(sorted(self.used.items())),
            "identity": dict(sorted(self.identity.items())),
            "identity_source": self.identity_from,
            "identity_packet": self.identity_packet,
            "identity_changes": self.identity_changes,
            "first_seen": format_timestamp(self.first_seen),
            "last_seen": format_timestamp(self.last_seen),
            "flows": self.flows,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "peers": self.peers,
            "truncated": self.truncated,
        }


def _fold(ip_host: Host, l2_host: Host) -> Host:
    """The IP host with what its link-layer record adds (identity it did not announce on IP, L2 services)."""
    merged = Host(
        ip_host.addr,
        min(ip_host.first_seen, l2_host.first_seen),
        max(ip_host.last_seen, l2_host.last_seen),
        macs=ip_host.macs,
        vlans={**l2_host.vlans, **ip_host.vlans},
        served={**l2_host.served, **ip_host.served},
        used={**l2_host.used, **ip_host.used},
        clients=ip_host.clients,
        servers=ip_host.servers,
        ops_sent={**l2_host.ops_sent, **ip_host.ops_sent},
        ops_received={**l2_host.ops_received, **ip_host.ops_received},
        bytes_sent=ip_host.bytes_sent + l2_host.bytes_sent,
        bytes_received=ip_host.bytes_received + l2_host.bytes_received,
        flows=ip_host.flows + l2_host.flows,
        identity={**l2_host.identity, **ip_host.identity},
        identity_from=ip_host.identity_from or l2_host.identity_from,
        identity_packet=ip_host.identity_packet if ip_host.identity else l2_host.identity_packet,
        changes=ip_host.changes + l2_host.changes,
        truncated=ip_host.truncated + l2_host.truncated,
        identity_lists=ip_host.identity_lists,
    )
    return merged


def _unread_identity(host: Host) -> str:
    if not host.identity_lists:
        return ""
    lists = ", ".join(sorted(host.identity_lists))
    return f"answered {lists} (identity lists, but no identity could be read from them)"


def _sort_key(addr: bytes) -> tuple[int, bytes]:
    return (len(addr), addr)


def records(
    inventory: AssetInventory,
    oui: OuiRegistry | None,
    sources: list[str],
    policy: CompiledPolicy | None = None,
) -> list[AssetRecord]:
    """The inventory sorted by address (IPv4, MAC-only, IPv6), with vendors, zones and roles.

    A device seen both on IP and on the link layer (PROFINET DCP, LLDP) is one row: its link-layer
    record is folded into the IP host owning that MAC.
    """
    out = []
    macs: dict[bytes, str] = {}
    for addr, host in inventory.hosts.items():
        if len(addr) != 6:
            own = [m for m in host.macs if len(inventory.mac_ips.get(m, ())) < MAC_SHARED_BY]
            macs[addr] = max(own, key=lambda m: (host.macs[m], m)) if own else ""
    owner = {mac: addr for addr, mac in sorted(macs.items(), key=lambda kv: _sort_key(kv[0])) if mac}
    folded: dict[bytes, Host] = {}
    for addr, host in inventory.hosts.items():
        ip = owner.get(address_text(addr)) if len(addr) == 6 else None
        if ip is not None and ip not in folded:
            folded[ip] = _fold(inventory.hosts[ip], host)
    for addr in sorted(inventory.hosts, key=_sort_key):
        if is_group(addr) or (len(addr) == 6 and address_text(addr) in owner):
            continue
        host = folded.get(addr) or inventory.hosts[addr]
        mac = address_text(addr) if len(addr) == 6 else macs[addr]
        vlans = sorted(int(v) for v in host.vlans)
        zone = ""
        if policy is not None and len(addr) != 6:
            found, _asset = policy.zone_of(addr, (vlans[-1],) if len(vlans) == 1 else (), mac or None)
            zone = found or ""
        packet, changes = _evidence(host, sources)
        out.append(
            AssetRecord(
                address=address_text(addr),
                mac=mac,
                vendor=oui.vendor(mac) if oui is not None and mac else "",
                vlans=vlans,
                zone=zone,
                roles=infer_roles(host),
                served=host.served,
                used=host.used,
                identity=host.identity,
                identity_from=host.identity_from or _unread_identity(host),
                identity_packet=packet,
                identity_changes=changes,
                first_seen=host.first_seen,
                last_seen=host.last_seen,
                flows=host.flows,
                bytes_sent=host.bytes_sent,
                bytes_received=host.bytes_received,
                peers=len(set(host.clients) | set(host.servers)),
                truncated=host.truncated,
            )
        )
    out += _routed_records(inventory, out, sources)
    return out


def _evidence(host: Host, sources: list[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the packet that revealed the identity, the identity changes) with capture names."""
    src, cnt, ts = host.identity_packet
    packet = None
    if host.identity and 0 <= src < len(sources):
        packet = {"pcap_filename": sources[src], "pcap_cnt": cnt, "timestamp": format_timestamp(ts)}
    changes = [
        {
            "timestamp": format_timestamp(c.ts),
            "key": c.key,
            "old": c.old,
            "new": c.new,
            "pcap_filename": sources[c.source] if 0 <= c.source < len(sources) else "",
            "pcap_cnt": c.pcap_cnt,
        }
        for c in host.changes
    ]
    return packet, changes


def _routed_records(
    inventory: AssetInventory, hosts: list[AssetRecord], sources: list[str]
) -> list[AssetRecord]:
    """Devices behind BACnet routers, by network number and MAC, after the hosts. A device there has
    no address a zone could be declared by: it sits in the zone of the router it is reached through
    (the one that relayed most of its messages), as the segment behind a router belongs to it."""
    zone_of = {r.address: r.zone for r in hosts}
    zone_of.update((r.mac, r.zone) for r in hosts if r.mac and r.mac != r.address)
    out = []
    for address in sorted(inventory.routed, key=routed_sort_key):
        host = inventory.routed[address]
        routers = sorted(host.via, key=lambda r: (-host.via[r], r))
        packet, changes = _evidence(host, sources)
        out.append(
            AssetRecord(
                address=address,
                mac="",
                vendor="",
                vlans=[],
                zone=zone_of.get(routers[0], "") if routers else "",
                roles=infer_roles(host),
                served={},
                used={},
                identity=host.identity,
                identity_from=host.identity_from,
                identity_packet=packet,
                identity_changes=changes,
                first_seen=host.first_seen,
                last_seen=host.last_seen,
                flows=0,
                bytes_sent=0,
                bytes_received=0,
                peers=0,
                truncated=host.truncated,
                via=sorted(host.via),
            )
        )
    return out
