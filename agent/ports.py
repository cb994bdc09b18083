"""Well-known service ports: the first guess of a flow's ``app_proto``.

Decoders confirm or correct the guess from the payload; until then the name says what the
responder port is registered for (IANA and vendor documentation, see docs/DOMAIN notes).
"""

from __future__ import annotations

from agent.dissect import IPPROTO_TCP, IPPROTO_UDP

# Backup products' registered TCP ports (DOMAIN.md section 6, checked against the vendors' port
# tables; see docs/policy.md "Categories"). Only fixed service ports: Veeam's data movers also use a
# dynamic range (2500-3300) and Commvault/NetWorker dynamic ports, which would misname other
# services if guessed by port; the bulk detector finds those transfers by behaviour.
BACKUP_PRODUCT_PORTS = {
    9101: "bacula",  # director
    9102: "bacula",  # file daemon
    9103: "bacula",  # storage daemon
    10080: "amanda",
    9392: "veeam",  # backup server (console, PowerShell, Enterprise Manager)
    6160: "veeam",  # installer service
    6161: "veeam",  # vPower NFS service
    6162: "veeam",  # data mover / transport service
    10006: "veeam",  # backup server, from plug-in workers
    8400: "commvault",  # communications service (CVD)
    8401: "commvault",  # server event manager
    8402: "commvault",  # client manager
    8403: "commvault",  # firewall tunnel
    1556: "netbackup",  # PBX
    13724: "netbackup",  # vnetd
    13782: "netbackup",  # bpcd
    1500: "spectrum-protect",  # IBM Spectrum Protect (TSM) server
    7937: "networker",  # nsrexecd
    7938: "networker",  # portmapper
}

_TCP = {
    20: "ftp-data",
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    53: "dns",
    80: "http",
    102: "iso-tsap",  # S7comm or IEC 61850 MMS: decided by the payload
    111: "rpcbind",
    135: "dcerpc",
    139: "netbios-ssn",  # SMB over NetBIOS once the payload shows it
    389: "ldap",
    443: "tls",
    445: "smb",
    502: "modbus",
    802: "modbus-tls",
    873: "rsync",
    1883: "mqtt",
    2049: "nfs",
    2404: "iec104",
    3260: "iscsi",
    3389: "rdp",
    4840: "opcua",
    4843: "opcua-tls",
    5900: "vnc",
    5901: "vnc",
    8080: "http",
    8443: "tls",
    8883: "mqtt-tls",
    10000: "ndmp",
    20000: "dnp3",
    44818: "enip",
    **BACKUP_PRODUCT_PORTS,
}
_UDP = {
    53: "dns",
    67: "dhcp",
    68: "dhcp",
    69: "tftp",
    111: "rpcbind",
    123: "ntp",
    137: "netbios-ns",
    138: "netbios-dgm",
    161: "snmp",
    162: "snmp",
    319: "ptp",
    320: "ptp",
    514: "syslog",
    2049: "nfs",
    2222: "enip-io",
    10080: "amanda",
    20000: "dnp3",
    34964: "pn-cm",
    44818: "enip",
    47808: "bacnet",
}


# Every service name the port tables can give: the vocabulary of ``app_proto`` before decoding.
SERVICE_NAMES = frozenset(_TCP.values()) | frozenset(_UDP.values())


def guess_app_proto(proto: int, sport: int, dport: int) -> str:
    """Service name for the responder port (else the initiator's), or "" when neither is known."""
    table = _TCP if proto == IPPROTO_TCP else _UDP if proto == IPPROTO_UDP else None
    if table is None:
        return ""
    return table.get(dport) or table.get(sport) or ""


# Protocol categories: groups of app_proto names that a policy flow rule may name instead of one
# protocol, and that the bulk/backup detector and the reports use. A protocol may be in several
# (SMB is a file transfer and a backup carrier); the first category listed that holds it is its
# primary category, the one flow events show, unless overridden below (docs/policy.md "Categories").
BACKUP_PRODUCTS = frozenset(BACKUP_PRODUCT_PORTS.values())
CATEGORIES: dict[str, frozenset[str]] = {
    "ot": frozenset(
        {
            "modbus",
            "modbus-tls",
            "dnp3",
            "s7comm",
            "s7comm_plus",
            "enip",
            "enip-io",
            "iec104",
            "bacnet",
            "opcua",
            "opcua-tls",
            "mms",
            "goose",
            "sv",
            "profinet",
            "pn-cm",
            "mqtt",
            "mqtt-tls",
            "iso-tsap",
            # link-layer industrial protocols (agent/linklayer.py names them by EtherType)
            "rgoose",
            "gse-mgmt",
            "ethercat",
            "powerlink",
        }
    ),
    "remote_access": frozenset({"rdp", "vnc", "ssh", "telnet"}),
    "file_transfer": frozenset(
        {"smb", "nfs", "ftp", "ftp-data", "tftp", "rsync", "iscsi", "ndmp", "sftp", "netbios-ssn"}
    ),
    # SMB, NFS, rsync and iSCSI carry backups but are file transfers first (their primary category).
    "backup": frozenset({"smb", "nfs", "rsync", "iscsi", "ndmp", "backup"} | BACKUP_PRODUCTS),
    "infrastructure": frozenset(
        {
            "dns",
            "ntp",
            "dhcp",
            "snmp",
            "ptp",
            "syslog",
            "ldap",
            "rpcbind",
            "netbios-ns",
            "netbios-dgm",
            # link layer: discovery, spanning tree, redundancy, aggregation, time-sensitive audio/video
            "lldp",
            "stp",
            "arp",
            "mrp",
            "prp",
            "hsr",
            "lacp",
            "avtp",
        }
    ),
    "web": frozenset({"http", "tls"}),
}
ANY_CATEGORY = "any"
NO_CATEGORY = "other"  # a named protocol in no category (smtp, dcerpc, onc-rpc, ...)
UNKNOWN_CATEGORY = "unknown"  # no protocol name at all


# Protocols whose primary category is not the first that holds them: NDMP exists only for backups.
_PRIMARY_OVERRIDES = {"ndmp": "backup"}


def _primary_categories() -> dict[str, str]:
    primary: dict[str, str] = {}
    for category, names in CATEGORIES.items():
        for name in names:
            primary.setdefault(name, category)
    primary.update(_PRIMARY_OVERRIDES)
    return primary


PRIMARY_CATEGORY = _primary_categories()


def primary_category(app_proto: str) -> str:
    """The category a flow event shows for ``app_proto``."""
    if not app_proto or app_proto == "unknown":
        return UNKNOWN_CATEGORY
    return PRIMARY_CATEGORY.get(app_proto, NO_CATEGORY)
