"""Well-known service ports: the first guess of a flow's ``app_proto``.

Decoders confirm or correct the guess from the payload; until then the name says what the
responder port is registered for (IANA and vendor documentation, see docs/DOMAIN notes).
"""

from __future__ import annotations

from agent.dissect import IPPROTO_TCP, IPPROTO_UDP

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
    139: "netbios-ssn",
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
    5900: "vnc",
    8883: "mqtt-tls",
    10000: "ndmp",
    20000: "dnp3",
    44818: "enip",
}
_UDP = {
    53: "dns",
    67: "dhcp",
    68: "dhcp",
    123: "ntp",
    161: "snmp",
    162: "snmp",
    319: "ptp",
    320: "ptp",
    514: "syslog",
    2049: "nfs",
    2222: "enip-io",
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
# (SMB is a file transfer and a backup carrier).
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
            "mms",
            "goose",
            "sv",
            "profinet",
            "pn-cm",
            "mqtt",
            "mqtt-tls",
            "iso-tsap",
        }
    ),
    "remote_access": frozenset({"rdp", "vnc", "ssh", "telnet"}),
    "file_transfer": frozenset(
        {"smb", "nfs", "ftp", "ftp-data", "rsync", "iscsi", "ndmp", "sftp", "netbios-ssn"}
    ),
    "backup": frozenset({"smb", "nfs", "rsync", "iscsi", "ndmp", "backup"}),
    "infrastructure": frozenset({"dns", "ntp", "dhcp", "snmp", "ptp", "syslog", "ldap", "rpcbind"}),
    "web": frozenset({"http", "tls"}),
}
ANY_CATEGORY = "any"
