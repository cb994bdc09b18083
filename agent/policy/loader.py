"""Load and validate a policy file (docs/policy.md, format version 1) into ``agent.policy.model``.

The YAML is *composed* into PyYAML's node tree instead of being constructed into Python objects,
so every value still knows where it was written: each problem names the file, the 1-based line and
column of the offending node and a plain-English reason. Nothing here raises on bad input;
everything becomes a ``Problem``, and a ``Policy`` is returned only when there is no error.

Validation runs in passes so that one mistake is reported once and in the right place: the zones'
own fields, then what must be unique across zones (ids, networks, VLANs, MACs, asset names and
IPs), then the flow rules (which refer to zones and assets), then the warnings that need the whole
picture (Purdue levels, safety zones, SL-T).
"""

from __future__ import annotations

import codecs
import difflib
import ipaddress
import math
import re
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.decoders import PROTOCOLS, it_protocols
from agent.decoders.base import OPERATIONS
from agent.policy.model import (
    CRITICALITIES,
    DAYS,
    DEFAULT_AUDITED,
    FOUNDATIONAL_REQUIREMENTS,
    PURDUE_LEVELS,
    Asset,
    Conduit,
    Defaults,
    Endpoint,
    FlowRule,
    Link,
    Policy,
    Problem,
    Schedule,
    SystemInfo,
    Zone,
    sl_text,
)
from agent.ports import ANY_CATEGORY, CATEGORIES, SERVICE_NAMES

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")

# A policy is a few hundred lines; anything this big is the wrong file, and reading it whole
# (or /dev/zero) must not exhaust memory.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Collection items visited. Aliases are counted every time they are used, so a "billion laughs"
# file of nested aliases stops here instead of expanding without bound.
MAX_WORK = 250_000

TOP_KEYS = ("version", "system", "defaults", "zones", "conduits")
SYSTEM_KEYS = ("name", "owner", "description")
DEFAULTS_KEYS = ("intra_zone", "unknown_hosts", "audit_operations", "alert_fold_seconds", "timezone")
ZONE_KEYS = ("id", "name", "description", "owner", "location", "safety", "purdue_level",
             "sl_t", "networks", "vlans", "macs", "assets", "allow", "link")  # fmt: skip
MEMBERSHIP_KEYS = ("networks", "vlans", "macs", "assets")
ASSET_KEYS = ("name", "ip", "mac", "role", "criticality")
CONDUIT_KEYS = ("id", "name", "description", "zones", "sl_t", "flows", "link")
FLOW_KEYS = ("id", "initiator", "responder", "protocol", "category",
             "ports", "operations", "function_codes", "schedule", "rate")  # fmt: skip
# Keys of a flow rule that narrow it; omitted, the rule allows any.
RESTRICTION_KEYS = ("ports", "operations", "function_codes", "schedule", "rate")
SCHEDULE_KEYS = ("days", "hours", "timezone")
RATE_KEYS = ("messages_per_second",)

INTRA_ZONE_MODES = ("allow", "check")
UNKNOWN_HOST_MODES = ("alert", "ignore")
MAX_FOLD_SECONDS = 86400.0  # folding repeats for longer than a day would hide a recurring violation

# What a flow rule's `protocol` may name: the decoders, the port table's service names, the names
# docs/policy.md promises, and every member of a category (a category is only a shorthand).
# (IT protocols are only identified: they have no operations to restrict.)
DECODED_PROTOCOLS = frozenset(spec.name for spec in PROTOCOLS) - it_protocols.NAMES
DOC_PROTOCOLS = frozenset({"modbus", "dnp3", "s7comm", "enip", "iec104", "bacnet", "opcua", "mms", "mqtt",
                           "smb", "nfs", "ssh", "rdp", "dns", "ntp", "http", "tls"})  # fmt: skip
KNOWN_PROTOCOLS = (DECODED_PROTOCOLS | it_protocols.NAMES | DOC_PROTOCOLS | SERVICE_NAMES
                   | frozenset().union(*CATEGORIES.values()))  # fmt: skip
CATEGORY_NAMES = (*CATEGORIES, ANY_CATEGORY)

# Operations that change what a controller does; DOMAIN.md section 4 allows them only from the
# engineering zone and only during change windows.
RISKY_OPERATIONS = frozenset({"program", "upload", "firmware", "mode"})
# The primary code of these protocols is one byte (decoders put sub-codes above 0xFF for others).
BYTE_CODE_PROTOCOLS = frozenset({"modbus", "dnp3"})
MAX_FUNCTION_CODE = 0xFFFFFF

_ID = re.compile(r"[A-Za-z0-9._-]+")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_MAC = re.compile(
    r"[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"  # aa:bb:cc:dd:ee:ff, aa-bb-...
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"  # Cisco aabb.ccdd.eeff
    r"|[0-9A-Fa-f]{12}"
)
_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_NULL = _TAG + "null"


class _TooLarge(Exception):
    """The document expands (through aliases) beyond MAX_WORK items."""


# ----------------------------------------------------------------------------------------------
# Reporting and reading nodes


class _Report:
    """The problems of one file, and the helpers every pass shares."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.work = 0
        # Constructs scalars (ints, floats, booleans) with YAML's own rules; one per load because
        # it caches what it built.
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: Node, message: str) -> None:
        self.add(node, message, "error")

    def warning(self, node: Node, message: str) -> None:
        self.add(node, message, "warning")

    def add(self, node: Node, message: str, severity: str) -> None:
        line, column = _position(node)
        self.problems.append(Problem(self.path, line, column, message, severity))

    def spend(self, items: int) -> None:
        self.work += items
        if self.work > MAX_WORK:
            raise _TooLarge

    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def value(self, node: ScalarNode) -> object:
        """The scalar as YAML types it; its source text when that fails (bad tag, 5000-digit int)."""
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError):
            return str(node.value)


def _position(node: Node) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _line(node: Node) -> int:
    return _position(node)[0]


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _cut(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(node: Node) -> str:
    """What the user wrote, in words, for 'must be X, not Y' messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kind = node.tag.removeprefix(_TAG)
    text = str(node.value)
    if kind == "null":
        return "nothing (null)"
    if kind == "bool":
        return f"the boolean {text}"
    if kind in ("int", "float"):
        return f"the number {_cut(text)}"
    return f"the text {_short(text)}"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _suggest(word: str, options: Iterable[str]) -> str:
    """'; did you mean X?' for the typos that are the most common error in hand-written files."""
    options = list(options)
    lower = word.lower()
    # Case slips (Modbus) and spelled-out names (thursday for thu) are not "close" to difflib.
    same = [o for o in options if o.lower() == lower]
    prefix = sorted((o for o in options if len(o) >= 3 and lower.startswith(o.lower())), key=len)
    close = same or prefix[-1:] or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listing(options: Iterable[str], limit: int = 12) -> str:
    names = list(options)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass
class _Map:
    """A mapping whose keys were checked; a null value counts as not given."""

    node: MappingNode
    values: dict[str, Node]

    def get(self, key: str) -> Node | None:
        node = self.values.get(key)
        return None if node is None or _is_null(node) else node

    def has(self, key: str) -> bool:
        return self.get(key) is not None


def _pairs(r: _Report, node: MappingNode, active: frozenset[int] = frozenset()) -> list[tuple[Node, Node]]:
    """Key/value pairs with YAML merge keys (``<<: *base``) expanded; explicit keys come first."""
    r.spend(len(node.value))
    own = [(k, v) for k, v in node.value if k.tag != _MERGE]
    merged: list[tuple[Node, Node]] = []
    for key, value in node.value:
        if key.tag != _MERGE:
            continue
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, MappingNode):
                r.error(source, f"'<<' merges mappings, not {_describe(source)}")
            elif id(source) not in active:  # a map merging itself through an alias
                merged.extend(_pairs(r, source, active | {id(node)}))
    return own + merged


def _mapping(
    r: _Report, node: Node, what: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> _Map | None:
    if not isinstance(node, MappingNode):
        r.error(node, f"{what} must be a mapping (key: value), not {_describe(node)}")
        return None
    values: dict[str, Node] = {}
    for key, value in _pairs(r, node):
        if not isinstance(key, ScalarNode):
            r.error(key, f"keys of {what} must be text, not {_describe(key)}")
            continue
        name = str(key.value)
        if name not in allowed:
            r.error(
                key,
                f"unknown key {_short(name)} in {what}{_suggest(name, allowed)} "
                f"(allowed: {', '.join(allowed)})",
            )
        elif name not in values:  # a repeated key was reported by _check_tree; the first one counts
            values[name] = value
    missing = [name for name in required if name not in values]
    if missing:
        r.error(node, f"{what} is missing {', '.join(map(repr, missing))}")
    for name in required:
        if name in values and _is_null(values[name]):
            r.error(values[name], f"{name!r} of {what} has no value")
    return _Map(node, values)


def _peek(node: Node, key: str) -> str | None:
    """The text under ``key`` of a mapping not read yet: messages about a zone's other keys can
    then name the zone by its id instead of its position."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return str(v.value) if isinstance(v, ScalarNode) and not _is_null(v) else None
    return None


def _name(kind: str, node: Node, key: str, number: int) -> str:
    text = _peek(node, key)
    return f"{kind} {_short(text)}" if text else f"{kind} #{number}"


def _list(r: _Report, node: Node, what: str) -> list[Node] | None:
    if not isinstance(node, SequenceNode):
        hint = (
            f" (write [{_short(str(node.value))}])"
            if isinstance(node, ScalarNode) and not _is_null(node)
            else ""
        )
        r.error(node, f"{what} must be a list{hint}, not {_describe(node)}")
        return None
    r.spend(len(node.value))
    return list(node.value)


def _text(r: _Report, node: Node, what: str) -> str | None:
    """Text as written. Source text, not YAML's typing: an unquoted 12:34:56:12:34:56 would be a
    base-60 integer and an id ``010`` the number 8."""
    if not isinstance(node, ScalarNode) or _is_null(node):
        r.error(node, f"{what} must be text, not {_describe(node)}")
        return None
    return str(node.value)


def _ident(r: _Report, node: Node, what: str) -> str | None:
    text = _text(r, node, what)
    if text is not None and not _ID.fullmatch(text):
        r.error(node, f"{what}: {_short(text)} may only contain letters, digits, '-', '_' and '.'")
    return text  # kept even when malformed, so references to it are not reported again


def _int(r: _Report, node: Node, what: str, low: int, high: int) -> int | None:
    if not isinstance(node, ScalarNode):
        r.error(node, f"{what} must be a whole number, not {_describe(node)}")
        return None
    value = r.value(node)
    if node.tag == _TAG + "int" and not isinstance(value, int):  # too many digits to convert
        r.error(node, f"{what}: {_cut(str(node.value))} is out of range ({low}-{high})")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        r.error(node, f"{what} must be a whole number, not {_describe(node)}")
        return None
    if not low <= value <= high:
        r.error(node, f"{what}: {_cut(str(node.value))} is out of range ({low}-{high})")
        return None
    return value


def _number(r: _Report, node: Node, what: str) -> float | None:
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        r.error(node, f"{what} must be a number, not {_describe(node)}")
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number):
        r.error(node, f"{what} must be a finite number, not {_describe(node)}")
        return None
    return number


def _bool(r: _Report, node: Node, what: str) -> bool | None:
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if not isinstance(value, bool):
        r.error(node, f"{what} must be true or false, not {_describe(node)}")
        return None
    return value


def _choice(r: _Report, node: Node, what: str, choices: Sequence[str]) -> str | None:
    text = _text(r, node, what)
    if text is None:
        return None
    if text not in choices:
        r.error(
            node,
            f"{what}: {_short(text)} is not valid{_suggest(text, choices)} (valid: {', '.join(choices)})",
        )
        return None
    return text


def _choices(r: _Report, node: Node, what: str, choices: Sequence[str]) -> frozenset[str] | None:
    items = _list(r, node, what)
    if items is None:
        return None
    chosen = [_choice(r, item, what, choices) for item in items]
    valid = [c for c in chosen if c is not None]
    return frozenset(valid) if len(valid) == len(chosen) else None


def _timezone(r: _Report, node: Node, what: str) -> str | None:
    name = _text(r, node, what)
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        hint = _suggest(name, sorted(zoneinfo.available_timezones()))
        r.error(node, f"{what}: {_short(name)} is not a known IANA time zone{hint} (e.g. Europe/Berlin, UTC)")
        return None
    return name


# ----------------------------------------------------------------------------------------------
# The document as a whole


# libyaml, PyYAML's C parser when it is built in, composes the Purdue example in 4 ms where the pure
# Python parser takes 45 ms (a third of the agent's start-up with a policy). Its nodes carry the same
# tags, values and marks. A document it refuses is read again by the pure Python parser, whose error
# messages are the ones documented and tested; so is one with characters YAML does not allow, which
# libyaml may be laxer about.
_LIBYAML_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _compose_with_libyaml(text: str) -> tuple[bool, Node | None]:
    """Whether libyaml read the document, and its node (None: empty)."""
    if _LIBYAML_LOADER is None or yaml.reader.Reader.NON_PRINTABLE.search(text):
        return False, None
    try:
        return True, yaml.compose(text, Loader=_LIBYAML_LOADER)
    except (yaml.YAMLError, RecursionError, ValueError):  # ValueError: a lone surrogate cannot be encoded
        return False, None


def _compose(r: _Report, text: str) -> Node | None:
    read, node = _compose_with_libyaml(text)
    try:
        if not read:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        r.problems.append(Problem(r.path, line, column, _yaml_message(e)))
        return None
    except yaml.reader.ReaderError as e:
        line, column = _offset_position(text, e.position)
        r.problems.append(
            Problem(
                r.path, line, column, f"not valid YAML: character U+{e.character:04X} is not allowed in YAML"
            )
        )
        return None
    except yaml.YAMLError as e:
        r.problems.append(Problem(r.path, 1, 1, f"not valid YAML: {e}"))
        return None
    except RecursionError:
        r.problems.append(Problem(r.path, 1, 1, "not a policy: the YAML is nested too deeply to read"))
        return None
    if node is None:
        r.problems.append(
            Problem(r.path, 1, 1, "the file is empty: a policy needs version, system and zones")
        )
    return node


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    problem = str(e.problem or e.context or "cannot be parsed")
    message = f"not valid YAML: {problem}"
    if e.problem and e.context:
        started = f" at line {e.context_mark.line + 1}" if e.context_mark is not None else ""
        message += f" ({e.context}{started})"
    if "mapping values are not allowed" in problem:
        message += "; quote a value that contains ': '"
    elif "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    return message


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _check_tree(r: _Report, root: Node) -> None:
    """Duplicate mapping keys anywhere in the file. YAML libraries keep the last value silently,
    which turns a copy-paste slip into a hole in the policy; here it is an error."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes, and may even form cycles
            continue
        seen.add(id(node))
        r.spend(1)
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            first: dict[tuple[str, str], Node] = {}
            for key, value in node.value:
                stack.extend((key, value))
                if not isinstance(key, ScalarNode) or key.tag == _MERGE:
                    continue
                earlier = first.setdefault((key.tag, str(key.value)), key)
                if earlier is not key:
                    r.error(
                        key,
                        f"duplicate key {_short(str(key.value))} (first at line {_line(earlier)}): "
                        "the later value would silently replace the earlier one",
                    )


def _version(r: _Report, top: _Map) -> bool:
    """False when the file declares a format this code does not know: its other keys may mean
    something else there, so reporting them would only mislead."""
    node = top.get("version")
    if node is None:
        return True
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool):
        if value != 1:
            r.error(
                node,
                f"unsupported policy version {_cut(str(node.value))}: this conduitwatch reads version 1",
            )
            return False
        return True
    r.error(node, f"version must be the number 1, not {_describe(node)}")
    return True


def _system(r: _Report, top: _Map) -> SystemInfo:
    node = top.get("system")
    m = _mapping(r, node, "system", SYSTEM_KEYS, required=("name",)) if node is not None else None
    if m is None:
        return SystemInfo(name="")
    return SystemInfo(
        name=_optional_text(r, m, "name", "system name"),
        owner=_optional_text(r, m, "owner", "system owner"),
        description=_optional_text(r, m, "description", "system description"),
    )


def _optional_text(r: _Report, m: _Map, key: str, what: str) -> str:
    node = m.get(key)
    return (_text(r, node, what) or "") if node is not None else ""


def _defaults(r: _Report, top: _Map) -> Defaults:
    node = top.get("defaults")
    base = Defaults()
    m = _mapping(r, node, "defaults", DEFAULTS_KEYS) if node is not None else None
    if m is None:
        return base
    intra = _maybe(m, "intra_zone", lambda n: _choice(r, n, "defaults.intra_zone", INTRA_ZONE_MODES))
    unknown = _maybe(
        m, "unknown_hosts", lambda n: _choice(r, n, "defaults.unknown_hosts", UNKNOWN_HOST_MODES)
    )
    audited = _maybe(
        m,
        "audit_operations",
        lambda n: _choices(r, n, "operation of defaults.audit_operations", sorted(OPERATIONS)),
    )
    fold = _maybe(m, "alert_fold_seconds", lambda n: _fold_seconds(r, n))
    tz = _maybe(m, "timezone", lambda n: _timezone(r, n, "defaults.timezone"))
    return Defaults(
        intra_zone=intra or base.intra_zone,
        unknown_hosts=unknown or base.unknown_hosts,
        audit_operations=audited if audited is not None else frozenset(DEFAULT_AUDITED),
        alert_fold_seconds=fold if fold is not None else base.alert_fold_seconds,
        timezone=tz or base.timezone,
    )


def _maybe(m: _Map, key: str, read: Callable[[Node], T | None]) -> T | None:
    node = m.get(key)
    return read(node) if node is not None else None


def _fold_seconds(r: _Report, node: Node) -> float | None:
    value = _number(r, node, "defaults.alert_fold_seconds")
    if value is not None and not 0 <= value <= MAX_FOLD_SECONDS:
        r.error(
            node, f"defaults.alert_fold_seconds: {value:g} is out of range (0-{MAX_FOLD_SECONDS:g} seconds)"
        )
        return None
    return value


# ----------------------------------------------------------------------------------------------
# Zones and their members


@dataclass
class _AssetSrc:
    asset: Asset
    name_node: Node
    ip: Address | None = None
    ip_node: Node | None = None
    mac_node: Node | None = None


@dataclass
class _RuleSrc:
    rule: FlowRule
    node: Node
    id_node: Node
    label: str


@dataclass
class _ZoneSrc:
    """A zone as parsed, with the nodes that later checks point at."""

    zone: Zone
    node: Node
    id_node: Node | None
    map: _Map
    label: str
    networks: list[tuple[Network, Node]] = field(default_factory=list)
    vlans: list[tuple[int, Node]] = field(default_factory=list)
    macs: list[tuple[str, Node]] = field(default_factory=list)
    assets: list[_AssetSrc] = field(default_factory=list)
    allow: list[_RuleSrc] = field(default_factory=list)


def _zones(r: _Report, top: _Map) -> list[_ZoneSrc]:
    node = top.get("zones")
    items = _list(r, node, "zones") if node is not None else None
    if items is None:
        return []
    if not items:
        r.error(node or top.node, "zones is empty: a policy needs at least one zone")
    return [z for number, item in enumerate(items, 1) if (z := _zone(r, item, number)) is not None]


def _zone(r: _Report, node: Node, number: int) -> _ZoneSrc | None:
    label = _name("zone", node, "id", number)
    m = _mapping(r, node, label, ZONE_KEYS, required=("id",))
    if m is None:
        return None
    id_node = m.get("id")
    zid = (_ident(r, id_node, "zone id") if id_node is not None else None) or ""
    networks: list[tuple[Network, Node]] = _each(
        r, m.get("networks"), f"networks of {label}", lambda n: _network(r, n, f"network of {label}")
    )
    vlans = _each(r, m.get("vlans"), f"vlans of {label}", lambda n: _int(r, n, f"VLAN of {label}", 0, 4095))
    macs = _each(r, m.get("macs"), f"macs of {label}", lambda n: _mac(r, n, f"MAC of {label}"))
    assets = _assets(r, m.get("assets"), zid, label)
    zone = Zone(
        id=zid,
        name=_optional_text(r, m, "name", f"name of {label}"),
        description=_optional_text(r, m, "description", f"description of {label}"),
        owner=_optional_text(r, m, "owner", f"owner of {label}"),
        location=_optional_text(r, m, "location", f"location of {label}"),
        safety=_maybe(m, "safety", lambda n: _bool(r, n, f"safety of {label}")) or False,
        purdue_level=_maybe(m, "purdue_level", lambda n: _purdue(r, n, f"purdue_level of {label}")),
        sl_t=_maybe(m, "sl_t", lambda n: _sl_t(r, n, f"sl_t of {label}")),
        networks=tuple(net for net, _ in networks),
        vlans=frozenset(v for v, _ in vlans),
        macs=frozenset(mac for mac, _ in macs),
        assets=tuple(a.asset for a in assets),
        line=_line(node),
    )
    src = _ZoneSrc(zone, node, id_node, m, label, networks, vlans, macs, assets)
    if not any(_given(m.values.get(key)) for key in MEMBERSHIP_KEYS):
        r.error(node, f"{label} has no members: give it at least one of {', '.join(MEMBERSHIP_KEYS)}")
    _warn_assets_outside(r, src)
    _warn_vlan_only(r, src)
    return src


def _given(node: Node | None) -> bool:
    """Whether a membership key says anything (a wrongly typed value is reported on its own)."""
    if node is None or _is_null(node):
        return False
    return not (isinstance(node, SequenceNode) and not node.value)


def _each(r: _Report, node: Node | None, what: str, read: Callable[[Node], T | None]) -> list[tuple[T, Node]]:
    """The valid items of an optional list, each with its node."""
    items = _list(r, node, what) if node is not None else None
    pairs = [(read(item), item) for item in items or ()]
    return [(value, item) for value, item in pairs if value is not None]


def _network(r: _Report, node: Node, what: str) -> Network | None:
    text = _text(r, node, what)
    if text is None:
        return None
    try:
        return ipaddress.ip_network(text)
    except ValueError as e:
        reason = str(e)
    try:
        fixed = ipaddress.ip_network(text, strict=False)
    except ValueError:
        r.error(
            node,
            f"{what}: {_short(text)} is not a network in CIDR form such as 10.10.20.0/24 "
            f"or fd00:10::/64 ({reason})",
        )
        return None
    r.error(node, f"{what}: {_short(text)} has host bits set; did you mean {fixed}?")
    return None


def _address(r: _Report, node: Node, what: str) -> Address | None:
    text = _text(r, node, what)
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        hint = "; an asset has one address, not a network" if "/" in text else ""
        r.error(node, f"{what}: {_short(text)} is not an IPv4 or IPv6 address{hint}")
        return None


def _mac(r: _Report, node: Node, what: str) -> str | None:
    text = _text(r, node, what)
    if text is None:
        return None
    if not _MAC.fullmatch(text):
        r.error(node, f"{what}: {_short(text)} is not a MAC address (write it as aa:bb:cc:dd:ee:ff)")
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", text).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _purdue(r: _Report, node: Node, what: str) -> float | None:
    value = r.value(node) if isinstance(node, ScalarNode) else None
    level: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 10:
        level = float(value)
    if level not in PURDUE_LEVELS:
        allowed = ", ".join(f"{lvl:g}" for lvl in PURDUE_LEVELS)
        r.error(node, f"{what} must be one of {allowed}, not {_describe(node)}")
        return None
    return level


def _sl_t(r: _Report, node: Node, what: str) -> tuple[int, ...] | None:
    """A level 0-4 for every foundational requirement, or a vector FR1..FR7; always 7 values."""
    if isinstance(node, MappingNode):
        m = _mapping(r, node, what, FOUNDATIONAL_REQUIREMENTS, required=FOUNDATIONAL_REQUIREMENTS)
        if m is None:
            return None
        levels = []
        for fr in FOUNDATIONAL_REQUIREMENTS:
            level_node = m.get(fr)
            levels.append(_int(r, level_node, f"{fr} of {what}", 0, 4) if level_node is not None else None)
        return tuple(v for v in levels if v is not None) if None not in levels else None
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int):
        r.error(
            node, f"{what} must be a level 0-4 or a vector {{FR1: 2, ..., FR7: 3}}, not {_describe(node)}"
        )
        return None
    level = _int(r, node, what, 0, 4)
    return (level,) * len(FOUNDATIONAL_REQUIREMENTS) if level is not None else None


def _assets(r: _Report, node: Node | None, zid: str, label: str) -> list[_AssetSrc]:
    items = _list(r, node, f"assets of {label}") if node is not None else None
    found = (
        _asset(r, item, zid, f"{_name('asset', item, 'name', number)} of {label}")
        for number, item in enumerate(items or (), 1)
    )
    return [a for a in found if a is not None]


def _asset(r: _Report, node: Node, zid: str, where: str) -> _AssetSrc | None:
    m = _mapping(r, node, where, ASSET_KEYS, required=("name",))
    name_node = m.get("name") if m is not None else None
    if m is None or name_node is None:
        return None
    name = _ident(r, name_node, f"name of {where}")
    if name is None:
        return None
    label = where
    ip_node, mac_node = m.get("ip"), m.get("mac")
    ip = _address(r, ip_node, f"ip of {label}") if ip_node is not None else None
    mac = _mac(r, mac_node, f"mac of {label}") if mac_node is not None else None
    criticality = _maybe(m, "criticality", lambda n: _choice(r, n, f"criticality of {label}", CRITICALITIES))
    if ip_node is None and mac_node is None:
        r.warning(node, f"{label} has neither ip nor mac, so no traffic can be attributed to it")
    asset = Asset(
        name=name,
        zone=zid,
        ip=str(ip) if ip is not None else None,
        mac=mac,
        role=_optional_text(r, m, "role", f"role of {label}"),
        criticality=criticality or "",
    )
    return _AssetSrc(asset, name_node, ip, ip_node, mac_node)


def _warn_vlan_only(r: _Report, src: _ZoneSrc) -> None:
    """A VLAN places every address on it that nothing else places, at both ends of a flow. Without
    networks, a routed outsider on the VLAN is a member too: the zone's asset IPs place only
    themselves, so they anchor nothing about the other addresses the VLAN carries."""
    if not src.vlans or src.networks:
        return
    vlans = sorted(v for v, _ in src.vlans)
    which = ("VLAN " if len(vlans) == 1 else "VLANs ") + ", ".join(map(str, vlans[:4]))
    which += ", ..." if len(vlans) > 4 else ""
    with_ips = any(a.ip is not None for a in src.assets)
    placed = "by VLAN and asset IPs only" if with_ips else "by VLAN alone"
    r.warning(
        src.map.get("vlans") or src.node,
        f"{src.label} is placed {placed}: any address seen on {which} that no network or asset "
        "places will count as a member (a routed outsider too, its traffic passing as intra-zone); "
        "list the zone's networks as well",
    )


def _warn_assets_outside(r: _Report, src: _ZoneSrc) -> None:
    if not src.networks:
        return  # a zone defined by VLANs or MACs places its assets by IP alone
    for a in src.assets:
        if a.ip is not None and a.ip_node is not None and not any(a.ip in net for net, _ in src.networks):
            nets = ", ".join(str(net) for net, _ in src.networks[:4])
            r.warning(
                a.ip_node,
                f"asset {a.asset.name!r} ({a.ip}) is outside the networks of {src.label} "
                f"({nets}); check the address or the networks",
            )


# ----------------------------------------------------------------------------------------------
# What must be unique across zones


@dataclass
class _Index:
    zones: dict[str, _ZoneSrc]  # the first zone with each id
    asset_zone: dict[str, str]  # asset name -> zone id


def _index(r: _Report, zones: list[_ZoneSrc]) -> _Index:
    by_id: dict[str, _ZoneSrc] = {}
    for src in zones:
        if src.zone.id and src.id_node is not None:
            first = by_id.setdefault(src.zone.id, src)
            if first is not src:
                r.error(src.id_node, f"duplicate zone id {src.zone.id!r} (first at line {first.zone.line})")
    named = [src for src in zones if src.zone.id]
    _check_overlaps(r, [(net, src.zone.id, node) for src in named for net, node in src.networks])
    _check_claims(r, "VLAN", [(str(v), src.zone.id, node) for src in named for v, node in src.vlans])
    _check_claims(
        r,
        "MAC",
        [(mac, src.zone.id, node) for src in named for mac, node in src.macs]
        + [
            (a.asset.mac, src.zone.id, a.mac_node)
            for src in named
            for a in src.assets
            if a.asset.mac is not None and a.mac_node is not None
        ],
    )
    _check_asset_ips(r, [a for src in zones for a in src.assets])
    return _Index(by_id, _asset_names(r, [a for src in zones for a in src.assets]))


def _asset_names(r: _Report, assets: list[_AssetSrc]) -> dict[str, str]:
    first: dict[str, _AssetSrc] = {}
    for a in assets:
        earlier = first.setdefault(a.asset.name, a)
        if earlier is not a:
            r.error(
                a.name_node,
                f"asset name {a.asset.name!r} is already used in zone {earlier.asset.zone!r} "
                f"(line {_line(earlier.name_node)}): asset names must be unique in the policy",
            )
    return {name: a.asset.zone for name, a in first.items()}


def _check_overlaps(r: _Report, networks: list[tuple[Network, str, Node]]) -> None:
    """Networks of different zones that overlap. CIDR blocks either nest or are disjoint, so one
    sweep in address order with a stack of the blocks that contain the current one finds every
    overlap without comparing all pairs."""
    ordered = sorted(networks, key=lambda n: (n[0].version, int(n[0].network_address), n[0].prefixlen))
    stack: list[tuple[Network, str, Node]] = []
    for item in ordered:
        net = item[0]
        while stack and not (stack[-1][0].version == net.version and net.subnet_of(stack[-1][0])):  # type: ignore[arg-type]
            stack.pop()
        for outer in stack:
            if outer[1] != item[1]:
                _report_overlap(r, outer, item)
        stack.append(item)


def _report_overlap(r: _Report, a: tuple[Network, str, Node], b: tuple[Network, str, Node]) -> None:
    first, second = sorted((a, b), key=lambda n: _position(n[2]))
    r.error(
        second[2],
        f"network {second[0]} of zone {second[1]!r} overlaps network {first[0]} of zone "
        f"{first[1]!r} (line {_line(first[2])}): an address must belong to one zone",
    )


def _check_claims(r: _Report, kind: str, claims: list[tuple[str, str, Node]]) -> None:
    """A VLAN or MAC may place traffic in one zone only."""
    owner: dict[str, tuple[str, Node]] = {}
    for value, zid, node in sorted(claims, key=lambda claim: _position(claim[2])):  # first in the file wins
        first_zone, first_node = owner.setdefault(value, (zid, node))
        if first_zone != zid:
            r.error(
                node,
                f"{kind} {value} of zone {zid!r} is already claimed by zone {first_zone!r} "
                f"(line {_line(first_node)}): its traffic must belong to one zone",
            )


def _check_asset_ips(r: _Report, assets: list[_AssetSrc]) -> None:
    owner: dict[Address, _AssetSrc] = {}
    for a in assets:
        if a.ip is None or a.ip_node is None:
            continue
        first = owner.setdefault(a.ip, a)
        if first is not a:
            r.error(
                a.ip_node,
                f"ip {a.ip} of asset {a.asset.name!r} (zone {a.asset.zone!r}) is already the ip "
                f"of asset {first.asset.name!r} (zone {first.asset.zone!r}, line "
                f"{_line(first.name_node)}): an address must identify one asset",
            )


# ----------------------------------------------------------------------------------------------
# Flow rules


@dataclass(frozen=True)
class _Scope:
    """Where a rule's endpoints may be: the two zones of its conduit, or inside its own zone."""

    owner: str  # "conduit 'x'" or "zone 'y'", for messages
    zones: tuple[str, ...]  # empty when the owner's zones are themselves invalid: not checked
    crossing: bool  # conduit rules go from one of its zones to the other


def _rules(r: _Report, node: Node, idx: _Index, scope: _Scope, tz: str, what: str) -> list[_RuleSrc]:
    ids: dict[str, Node] = {}  # flow id -> its first id node
    found = (
        _rule(r, item, idx, scope, tz, f"{_name('flow', item, 'id', number)} of {scope.owner}", ids)
        for number, item in enumerate(_list(r, node, what) or (), 1)
    )
    return [src for src in found if src is not None]


def _rule(
    r: _Report, node: Node, idx: _Index, scope: _Scope, tz: str, label: str, ids: dict[str, Node]
) -> _RuleSrc | None:
    m = _mapping(r, node, label, FLOW_KEYS, required=("id", "initiator", "responder"))
    if m is None:
        return None
    id_node = m.get("id")
    rid = _ident(r, id_node, f"id of {label}") if id_node is not None else None
    if rid is not None and id_node is not None:
        first = ids.setdefault(rid, id_node)
        if first is not id_node:
            r.error(id_node, f"duplicate flow id {rid!r} in {scope.owner} (first at line {_line(first)})")
    initiator = _maybe(m, "initiator", lambda n: _endpoint(r, n, idx, scope, f"initiator of {label}"))
    responder = _maybe(m, "responder", lambda n: _endpoint(r, n, idx, scope, f"responder of {label}"))
    if initiator and responder and scope.crossing and initiator.zone == responder.zone:
        r.error(
            m.get("responder") or node,
            f"{label}: initiator and responder are both in zone "
            f"{initiator.zone!r}; a conduit's flows go from one of its zones to the other",
        )
    _refuse_nulls(r, m, label)
    protocol = _protocols(r, m, label)
    ports = _maybe(m, "ports", lambda n: _int_set(r, n, f"port of {label}", 1, 65535))
    operations = _maybe(
        m, "operations", lambda n: _choices(r, n, f"operation of {label}", sorted(OPERATIONS))
    )
    codes = _maybe(m, "function_codes", lambda n: _function_codes(r, n, protocol, label))
    schedule = _maybe(m, "schedule", lambda n: _schedule(r, n, tz, label))
    rate = _maybe(m, "rate", lambda n: _rate(r, n, label))
    if rid is None or id_node is None or initiator is None or responder is None or protocol is None:
        return None
    rule = FlowRule(
        id=rid,
        initiator=initiator,
        responder=responder,
        protocols=protocol[0],
        label=protocol[1],
        ports=ports,
        operations=operations,
        function_codes=codes,
        schedule=schedule,
        messages_per_second=rate,
        line=_line(node),
    )
    _warn_risky(r, m, rule, label)
    return _RuleSrc(rule, node, id_node, label)


def _refuse_nulls(r: _Report, m: _Map, label: str) -> None:
    """An empty restriction (``operations:`` with its items commented out) would otherwise read as
    "not given", which allows everything: the opposite of what its author meant."""
    for key in RESTRICTION_KEYS:
        node = m.values.get(key)
        if node is not None and _is_null(node):
            r.error(
                node,
                f"{key} of {label} has no value: leave the key out to allow any, or list what is allowed",
            )


def _endpoint(r: _Report, node: Node, idx: _Index, scope: _Scope, what: str) -> Endpoint | None:
    text = _text(r, node, what)
    if text is None:
        return None
    zone, sep, asset = text.partition("/")
    if not zone or "/" in asset or (sep and not asset):
        r.error(node, f"{what}: {_short(text)} must be a zone id or zone/asset")
        return None
    if zone not in idx.zones:
        r.error(
            node,
            f"{what}: undefined zone {zone!r}{_suggest(zone, idx.zones)} "
            f"(zones: {_listing(idx.zones) or 'none'})",
        )
        return None
    if asset and not _check_asset(r, node, idx, zone, asset, what):
        return None
    if scope.zones and zone not in scope.zones:
        if scope.crossing:
            r.error(
                node,
                f"{what}: zone {zone!r} is not one of the zones {scope.owner} joins "
                f"({' and '.join(scope.zones)})",
            )
        else:
            r.error(
                node,
                f"{what}: {_short(text)} is outside {scope.owner}; a zone's allow rules are for "
                "traffic inside it (traffic between zones needs a conduit)",
            )
        return None
    return Endpoint(zone, asset or None)


def _check_asset(r: _Report, node: Node, idx: _Index, zone: str, asset: str, what: str) -> bool:
    owner = idx.asset_zone.get(asset)
    if owner is None:
        in_zone = [a.name for a in idx.zones[zone].zone.assets]
        r.error(
            node,
            f"{what}: undefined asset {asset!r}{_suggest(asset, in_zone)} "
            f"(assets of zone {zone!r}: {_listing(in_zone) or 'none'})",
        )
        return False
    if owner != zone:
        r.error(node, f"{what}: asset {asset!r} is in zone {owner!r}, not {zone!r}")
        return False
    return True


def _protocols(r: _Report, m: _Map, label: str) -> tuple[frozenset[str] | None, str] | None:
    """(the app_proto names a rule allows, None for any; the name as written), or None if invalid."""
    protocol, category = m.get("protocol"), m.get("category")
    if protocol is not None and category is not None:
        r.error(category, f"{label} names both a protocol and a category; give one of them")
        return None
    if protocol is not None:
        name = _text(r, protocol, f"protocol of {label}")
        if name is None:
            return None
        if name not in KNOWN_PROTOCOLS:
            hint = (
                _suggest(name, sorted(KNOWN_PROTOCOLS)) or f" (known: {', '.join(sorted(KNOWN_PROTOCOLS))})"
            )
            r.error(protocol, f"protocol of {label}: unknown protocol {_short(name)}{hint}")
            return None
        return frozenset({name}), name
    if category is not None:
        name = _choice(r, category, f"category of {label}", CATEGORY_NAMES)
        if name is None:
            return None
        return (None if name == ANY_CATEGORY else CATEGORIES[name]), name
    r.error(m.node, f"{label} needs a protocol (e.g. modbus) or a category ({', '.join(CATEGORY_NAMES)})")
    return None


def _int_set(r: _Report, node: Node, what: str, low: int, high: int) -> frozenset[int] | None:
    values = _each(r, node, what + "s", lambda n: _int(r, n, what, low, high))
    return frozenset(v for v, _ in values)


def _function_codes(
    r: _Report, node: Node, protocol: tuple[frozenset[str] | None, str] | None, label: str
) -> frozenset[int] | None:
    names = protocol[0] if protocol is not None else None
    if protocol is not None and (names is None or len(names) != 1):
        r.error(
            node,
            f"function_codes of {label} need a single protocol, not the category "
            f"{protocol[1]!r}: codes mean different things in different protocols",
        )
    high = 0xFF if names is not None and names <= BYTE_CODE_PROTOCOLS else MAX_FUNCTION_CODE
    return _int_set(r, node, f"function code of {label}", 0, high)


def _schedule(r: _Report, node: Node, default_tz: str, label: str) -> Schedule | None:
    what = f"schedule of {label}"
    m = _mapping(r, node, what, SCHEDULE_KEYS)
    if m is None:
        return None
    if not m.has("days") and not m.has("hours"):
        r.error(node, f"{what} names neither days nor hours")
        return None
    days = _maybe(m, "days", lambda n: _days(r, n, what))
    hours = _maybe(m, "hours", lambda n: _hours(r, n, what))
    tz = _maybe(m, "timezone", lambda n: _timezone(r, n, f"timezone of {what}"))
    if (
        (m.has("days") and days is None)
        or (m.has("hours") and hours is None)
        or (m.has("timezone") and not tz)
    ):
        return None
    start, end = hours or (0, 24 * 60)
    return Schedule(
        days=frozenset(range(7)) if days is None else days,
        start_minute=start,
        end_minute=end,
        timezone=tz or default_tz,
    )


def _days(r: _Report, node: Node, what: str) -> frozenset[int] | None:
    names = _choices(r, node, f"day of {what}", DAYS)
    if names is None:
        return None
    if not names:
        r.error(node, f"days of {what} is empty: the flow would never be allowed")
        return None
    return frozenset(DAYS.index(day) for day in names)


def _hours(r: _Report, node: Node, what: str) -> tuple[int, int] | None:
    text = _text(r, node, f"hours of {what}")
    if text is None:
        return None
    match = _HOURS.fullmatch(text.strip())
    if match is None:
        r.error(node, f'hours of {what}: {_short(text)} must look like "08:00-17:30"')
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        r.error(node, f"hours of {what}: {_short(text)} is not a time range within 00:00-24:00")
        return None
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        r.error(
            node,
            f"hours of {what}: {_short(text)} starts and ends at the same time; "
            "for the whole day write 00:00-24:00",
        )
        return None
    return start, end


def _rate(r: _Report, node: Node, label: str) -> float | None:
    what = f"rate of {label}"
    if isinstance(node, ScalarNode):
        r.error(node, f"{what} must be a mapping such as {{messages_per_second: 50}}, not {_describe(node)}")
        return None
    m = _mapping(r, node, what, RATE_KEYS, required=RATE_KEYS)
    value_node = m.get("messages_per_second") if m is not None else None
    if value_node is None:
        return None
    value = _number(r, value_node, f"messages_per_second of {what}")
    if value is not None and value <= 0:
        r.error(value_node, f"messages_per_second of {what} must be more than 0, not {value:g}")
        return None
    return value


def _warn_risky(r: _Report, m: _Map, rule: FlowRule, label: str) -> None:
    """Engineering operations outside a change window (DOMAIN.md section 4: EWS -> L1 only then)."""
    if m.has("schedule"):
        return
    if rule.operations is None:
        if rule.protocols is None or rule.protocols & DECODED_PROTOCOLS:
            r.warning(
                m.node,
                f"{label} allows every operation of {rule.label}, including program, upload, "
                "firmware and mode, at any time: list its operations or add a schedule",
            )
        return
    risky = sorted(rule.operations & RISKY_OPERATIONS)
    if risky:
        r.warning(
            m.get("operations") or m.node,
            f"{label} allows {', '.join(risky)} without a schedule: "
            "engineering changes should be limited to change windows",
        )


# ----------------------------------------------------------------------------------------------
# Conduits


@dataclass
class _ConduitSrc:
    conduit: Conduit
    node: Node
    id_node: Node | None
    sl_t_node: Node | None
    label: str
    rules: list[_RuleSrc]


def _zone_rules(r: _Report, zones: list[_ZoneSrc], idx: _Index, defaults: Defaults) -> None:
    for src in zones:
        node = src.map.get("allow")
        if node is None:
            continue
        scope = _Scope(owner=src.label, zones=(src.zone.id,) if src.zone.id else (), crossing=False)
        src.allow = _rules(r, node, idx, scope, defaults.timezone, f"allow rules of {src.label}")
        if src.allow and defaults.intra_zone == "allow":
            r.warning(
                node,
                f"the allow rules of {src.label} are not used: defaults.intra_zone is 'allow', so "
                "all traffic inside a zone is allowed; set it to 'check' to enforce them",
            )


def _conduits(r: _Report, top: _Map, idx: _Index, tz: str) -> list[_ConduitSrc]:
    node = top.get("conduits")
    items = _list(r, node, "conduits") if node is not None else None
    conduits: list[_ConduitSrc] = []
    first: dict[str, _ConduitSrc] = {}
    for number, item in enumerate(items or (), 1):
        src = _conduit(r, item, idx, tz, number)
        if src is None:
            continue
        if src.conduit.id and src.id_node is not None:
            earlier = first.setdefault(src.conduit.id, src)
            if earlier is not src:
                r.error(
                    src.id_node,
                    f"duplicate conduit id {src.conduit.id!r} (first at line {earlier.conduit.line})",
                )
        conduits.append(src)
    return conduits


def _conduit(r: _Report, node: Node, idx: _Index, tz: str, number: int) -> _ConduitSrc | None:
    label = _name("conduit", node, "id", number)
    m = _mapping(r, node, label, CONDUIT_KEYS, required=("id", "zones", "flows"))
    if m is None:
        return None
    id_node = m.get("id")
    cid = (_ident(r, id_node, "conduit id") if id_node is not None else None) or ""
    zones = _maybe(m, "zones", lambda n: _conduit_zones(r, n, idx, label))
    sl_t = _maybe(m, "sl_t", lambda n: _sl_t(r, n, f"sl_t of {label}"))
    scope = _Scope(owner=label, zones=zones or (), crossing=True)
    rules = _maybe(m, "flows", lambda n: _rules(r, n, idx, scope, tz, f"flows of {label}")) or []
    flows_node = m.get("flows")
    if isinstance(flows_node, SequenceNode) and not flows_node.value:
        r.error(
            flows_node,
            f"flows of {label} is empty: a conduit must allow at least one flow "
            "(to allow nothing between its zones, leave the conduit out)",
        )
    conduit = Conduit(
        id=cid,
        zones=zones or ("", ""),
        flows=tuple(src.rule for src in rules),
        name=_optional_text(r, m, "name", f"name of {label}"),
        description=_optional_text(r, m, "description", f"description of {label}"),
        sl_t=sl_t,
        line=_line(node),
    )
    return _ConduitSrc(conduit, node, id_node, m.get("sl_t"), label, rules)


def _conduit_zones(r: _Report, node: Node, idx: _Index, label: str) -> tuple[str, str] | None:
    items = _list(r, node, f"zones of {label}")
    if items is None:
        return None
    names = [_text(r, item, f"zone of {label}") for item in items]
    valid = True
    for name, item in zip(names, items, strict=True):
        if name is not None and name not in idx.zones:
            r.error(
                item,
                f"{label} joins undefined zone {_short(name)}{_suggest(name, idx.zones)} "
                f"(zones: {_listing(idx.zones) or 'none'})",
            )
        valid = valid and name is not None and name in idx.zones
    if len(items) != 2:
        r.error(node, f"{label} must join exactly two zones, not {len(items)}")
        return None
    if not valid:
        return None
    a, b = names[0] or "", names[1] or ""
    if a == b:
        r.error(
            items[1],
            f"{label} joins zone {a!r} to itself: traffic inside a zone is governed by "
            "defaults.intra_zone and the zone's allow rules",
        )
        return None
    return a, b


# ----------------------------------------------------------------------------------------------
# Warnings that need the whole policy


def _warn_conduits(r: _Report, conduits: list[_ConduitSrc], idx: _Index) -> None:
    for src in conduits:
        _warn_sl_t(r, src, idx)
        for rule in src.rules:
            initiator = idx.zones[rule.rule.initiator.zone].zone
            responder = idx.zones[rule.rule.responder.zone].zone
            _warn_levels(r, rule, initiator, responder)
            _warn_safety(r, rule, initiator, responder)
    _warn_safety_paths(r, [rule for src in conduits for rule in src.rules], idx)


def _warn_sl_t(r: _Report, src: _ConduitSrc, idx: _Index) -> None:
    own = src.conduit.sl_t
    if own is None or src.sl_t_node is None or not src.conduit.zones[0]:
        return
    for zid in src.conduit.zones:
        zone_sl_t = idx.zones[zid].zone.sl_t
        if zone_sl_t is None:
            continue
        lower = [fr for fr, c, z in zip(FOUNDATIONAL_REQUIREMENTS, own, zone_sl_t, strict=True) if c < z]
        if lower:
            which = "" if len(lower) == len(FOUNDATIONAL_REQUIREMENTS) else f" in {', '.join(lower)}"
            r.warning(
                src.sl_t_node,
                f"SL-T of {src.label} ({sl_text(own)}) is lower than that of zone {zid!r} "
                f"({sl_text(zone_sl_t)}){which}: a conduit should be "
                "protected at least to the level of the zones it joins",
            )


def _warn_levels(r: _Report, rule: _RuleSrc, initiator: Zone, responder: Zone) -> None:
    """The conduits DOMAIN.md section 4 forbids: L4/L5 -> L0-L2 (enterprise traffic ends in the
    IDMZ) and L0/L1 -> L4/L5 (controllers do not talk to the business network)."""
    low, high = initiator.purdue_level, responder.purdue_level
    if low is None or high is None:
        return
    if low >= 4 and high <= 2:
        reason = "enterprise zones should reach control zones only through the IDMZ (level 3.5)"
    elif low <= 1 and high >= 4:
        reason = "control zones should not open connections to enterprise zones"
    else:
        return
    r.warning(
        rule.node,
        f"{rule.label} goes from Purdue level {low:g} (zone {initiator.id!r}) to level "
        f"{high:g} (zone {responder.id!r}): {reason}",
    )


def _warn_safety(r: _Report, rule: _RuleSrc, initiator: Zone, responder: Zone) -> None:
    level = initiator.purdue_level
    if responder.safety and level is not None and level >= 4:
        r.warning(
            rule.node,
            f"{rule.label} lets zone {initiator.id!r} (Purdue level {level:g}) reach safety "
            f"zone {responder.id!r}: a safety system should not be reachable from "
            "enterprise levels (ZCR 3.3)",
        )


def _warn_safety_paths(r: _Report, rules: list[_RuleSrc], idx: _Index) -> None:
    """A safety zone that an enterprise zone (Purdue level 4 or 5) reaches through a chain of conduits
    none of which ends in the IDMZ (level 3.5), where no session crosses end to end (DOMAIN.md 4).

    A conduit lets the initiator's zone open connections into the responder's zone; a host taken
    there can open the next conduit's connections, since a zone's members are assumed to reach one
    another. The chain a breadth-first search finds first (the fewest hops) is named, once per
    enterprise and safety zone, at the rule that leaves the enterprise zone: that is where the IDMZ
    is bypassed. A direct conduit is ``_warn_safety``'s, rule by rule.
    """
    onward: dict[str, list[_RuleSrc]] = {}
    for rule in rules:
        onward.setdefault(rule.rule.initiator.zone, []).append(rule)
    for start, src in idx.zones.items():
        level = src.zone.purdue_level
        if level is None or level < 4:
            continue
        # zone -> the rule that first reached it (None for the start)
        reached: dict[str, _RuleSrc | None] = {start: None}
        frontier = [start]
        while frontier:
            following: list[str] = []
            for zid in frontier:
                for rule in onward.get(zid, ()):
                    nxt = rule.rule.responder.zone
                    if nxt in reached:
                        continue
                    reached[nxt] = rule
                    zone = idx.zones[nxt].zone
                    if zone.safety:
                        if zid != start:
                            _warn_safety_path(r, src.zone, zone, _chain(reached, nxt))
                        continue
                    onward_level = zone.purdue_level
                    # No hops onward from the IDMZ (it ends every session) nor from another
                    # enterprise zone (its own search names its chains).
                    if onward_level is None or (onward_level < 4 and onward_level != 3.5):
                        following.append(nxt)
            frontier = following


def _chain(reached: dict[str, _RuleSrc | None], end: str) -> list[_RuleSrc]:
    chain: list[_RuleSrc] = []
    rule = reached[end]
    while rule is not None:
        chain.append(rule)
        rule = reached[rule.rule.initiator.zone]
    return chain[::-1]


def _warn_safety_path(r: _Report, start: Zone, safety: Zone, chain: list[_RuleSrc]) -> None:
    hops = ", then ".join(f"{rule.label} into zone {rule.rule.responder.zone!r}" for rule in chain)
    r.warning(
        chain[0].node,
        f"zone {start.id!r} (Purdue level {start.purdue_level:g}) reaches safety zone {safety.id!r} "
        f"in {len(chain)} hops that bypass the IDMZ: {hops}. A safety system should not be reachable "
        "from enterprise levels (ZCR 3.3); end the chain in a level 3.5 zone",
    )


# ----------------------------------------------------------------------------------------------
# Links: capacity, bulk budget and backup windows of a zone's uplink or a conduit (DOMAIN.md 6)

LINK_KEYS = ("capacity", "bulk_budget", "backup_windows")
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKMGT]?)(?:bit/s|bps|b/s)")
_SHARE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_RATE_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _links(r: _Report, zones: list[_ZoneSrc], conduits: list[_ConduitSrc], tz: str) -> None:
    """Read the optional ``link`` of every zone and conduit (a pass of its own: it needs nothing else)."""
    for zsrc in zones:
        node = zsrc.map.get("link")
        if node is not None:
            zsrc.zone = replace(zsrc.zone, link=_link(r, node, tz, f"link of {zsrc.label}"))
    for csrc in conduits:
        node = _child(csrc.node, "link")
        if node is not None:
            csrc.conduit = replace(csrc.conduit, link=_link(r, node, tz, f"link of {csrc.label}"))


def _child(node: Node, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key and isinstance(v, Node) and not _is_null(v):
                return v
    return None


def _link(r: _Report, node: Node, tz: str, what: str) -> Link | None:
    m = _mapping(r, node, what, LINK_KEYS)
    if m is None:
        return None
    capacity = _maybe(m, "capacity", lambda n: _bitrate(r, n, f"capacity of {what}"))
    budget_bps: float | None = None
    share: float | None = None
    budget_node = m.get("bulk_budget")
    if budget_node is not None:
        text = (
            _text(r, budget_node, f"bulk_budget of {what}") if isinstance(budget_node, ScalarNode) else None
        )
        match = _SHARE.fullmatch(text.strip()) if text is not None else None
        if match is not None:
            share = float(match.group(1)) / 100
            if not 0 < share <= 1:
                r.error(
                    budget_node,
                    f"bulk_budget of {what}: {_short(text or '')} must be more than 0% and at most 100%",
                )
                share = None
            elif capacity is None:
                r.error(
                    budget_node, f"bulk_budget of {what} is a share of the capacity, but no capacity is given"
                )
                share = None
        elif text is not None or not isinstance(budget_node, ScalarNode):
            budget_bps = _bitrate(r, budget_node, f"bulk_budget of {what}")
            if budget_bps is not None and capacity is not None and budget_bps > capacity:
                r.warning(
                    budget_node, f"bulk_budget of {what} is above the link capacity: it can never be exceeded"
                )
    windows = [
        s for s, _ in _each(r, m.get("backup_windows"), f"backup_windows of {what}",
                            lambda n: _schedule(r, n, tz, f"backup window of {what}"))
    ]  # fmt: skip
    if not any(_given(m.values.get(key)) for key in LINK_KEYS):
        r.warning(node, f"{what} says nothing: give a capacity, a bulk_budget or backup_windows")
    return Link(capacity, budget_bps, share, tuple(windows), _line(node))


def _bitrate(r: _Report, node: Node, what: str) -> float | None:
    """Bits per second: a number, or text such as "100 Mbit/s", "1Gbps", "512 kbit/s"."""
    if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
        text = str(node.value).strip()
        match = _RATE.fullmatch(text)
        try:
            value = float(text) if match is None else float(match.group(1)) * _RATE_UNITS[match.group(2)]
        except ValueError:
            r.error(
                node,
                f'{what}: {_short(str(node.value))} must be bits per second, e.g. 100000000 or "100 Mbit/s"',
            )
            return None
    else:
        number = _number(r, node, what)
        if number is None:
            return None
        value = number
    if not math.isfinite(value) or value <= 0:
        r.error(node, f"{what} must be more than 0 bits per second")
        return None
    return value


# ----------------------------------------------------------------------------------------------
# Entry points


def _parse(r: _Report, text: str) -> Policy | None:
    root = _compose(r, text)
    if root is None:
        return None
    _check_tree(r, root)
    top = _mapping(r, root, "the policy", TOP_KEYS, required=("version", "system", "zones"))
    if top is None or not _version(r, top):
        return None
    system = _system(r, top)
    defaults = _defaults(r, top)
    zones = _zones(r, top)
    idx = _index(r, zones)
    _zone_rules(r, zones, idx, defaults)
    conduits = _conduits(r, top, idx, defaults.timezone)
    _links(r, zones, conduits, defaults.timezone)
    _warn_conduits(r, conduits, idx)
    if r.has_errors():
        return None
    return Policy(
        path=r.path,
        system=system,
        zones=tuple(replace(src.zone, allow=tuple(rule.rule for rule in src.allow)) for src in zones),
        conduits=tuple(src.conduit for src in conduits),
        defaults=defaults,
    )


def load_policy_text(text: str, path: str = "<policy>") -> tuple[Policy | None, list[Problem]]:
    """Validate policy text; the Policy is returned only when there is no error."""
    r = _Report(path)
    try:
        policy = _parse(r, text)
    except _TooLarge:
        r.problems.append(
            Problem(
                path,
                1,
                1,
                f"the policy expands to more than {MAX_WORK:,} items "
                "(through YAML aliases?); refusing to read it",
            )
        )
        policy = None
    except RecursionError:  # merge keys chained thousands deep
        r.problems.append(Problem(path, 1, 1, "not a policy: the YAML is nested too deeply to read"))
        policy = None
    problems = sorted(dict.fromkeys(r.problems), key=lambda p: (p.line, p.column))  # aliases repeat problems
    if any(p.severity == "error" for p in problems):
        return None, problems
    return policy, problems


def load_policy_bytes(data: bytes, path: str = "<policy>") -> tuple[Policy | None, list[Problem]]:
    # YAML allows UTF-16, and some Windows editors still write it.
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        return None, [
            Problem(path, line, column, f"not UTF-8 text: byte 0x{data[e.start]:02x} cannot be decoded")
        ]
    return load_policy_text(text, path)


def load_policy(path: str) -> tuple[Policy | None, list[Problem]]:
    """Read and validate a policy file. Never raises: an unreadable file is a Problem too."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        return None, [Problem(path, 0, 0, f"cannot read the file: {e.strerror or e}")]
    if len(data) > MAX_FILE_BYTES:
        return None, [
            Problem(path, 0, 0, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: not a policy file")
        ]
    return load_policy_bytes(data, path)
