"""The IT and backup protocols the registry identifies (see agent.decoders.identify), in probe order.

Kept apart from the industrial decoders' list so that ``PROTOCOLS`` takes them in one line.
"""

from __future__ import annotations

from agent.decoders import (
    dhcp,
    dns,
    ftp,
    http,
    iscsi,
    ndmp,
    ntp,
    onc_rpc,
    rdp,
    rsync,
    smb,
    snmp,
    ssh,
    syslog,
    telnet,
    tls,
    vnc,
)
from agent.decoders.base import ProtocolSpec

SPECS: tuple[ProtocolSpec, ...] = (
    # file and backup transfer
    smb.SPEC,
    onc_rpc.SPEC_NFS,
    onc_rpc.SPEC_RPCBIND,
    onc_rpc.SPEC_ANY_PORT,
    rsync.SPEC,
    iscsi.SPEC,
    ndmp.SPEC,
    ftp.SPEC,
    # remote access
    ssh.SPEC,
    rdp.SPEC,
    rdp.SPEC_ANY_PORT,
    vnc.SPEC,
    telnet.SPEC,
    telnet.SPEC_ANY_PORT,
    # web, and the TLS ports of industrial protocols (named after the protocol)
    tls.SPEC,
    tls.SPEC_MQTT,
    tls.SPEC_MODBUS,
    tls.SPEC_OPCUA,
    http.SPEC,
    # infrastructure
    snmp.SPEC,
    dns.SPEC,
    ntp.SPEC,
    dhcp.SPEC,
    syslog.SPEC,
    syslog.SPEC_ANY_PORT,
)
# Names these give flows: protocols identified, never decoded into operations.
NAMES = frozenset(spec.name for spec in SPECS)
