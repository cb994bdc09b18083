"""Outputs never leave through the monitored interface.

A mirror port normally has no address, so nothing is routed through it; but a misconfigured host
(an address on the capture interface, a syslog receiver on that subnet) would make the agent
transmit on the segment it watches. Outputs that open sockets check where the kernel routed them
and refuse that interface.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915
_IFREQ = struct.Struct("16s16x")


def interface_addresses(interface: str) -> frozenset[str]:
    """The IPv4 and IPv6 addresses configured on ``interface`` (empty if none or unknown)."""
    found: set[str] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            ifreq = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, _IFREQ.pack(interface.encode()[:15]))
            found.add(socket.inet_ntoa(ifreq[20:24]))
        except OSError:
            pass  # no IPv4 address (the usual case for a mirror port) or no such interface
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == interface:
                    found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    except OSError:
        pass
    return frozenset(found)


def leaves_through(sock: socket.socket, interfaces: tuple[str, ...]) -> str | None:
    """The monitored interface that a connected ``sock`` sends from, or None."""
    local = sock.getsockname()[0]
    local = str(ipaddress.ip_address(local.split("%", 1)[0]))
    for interface in interfaces:
        if local in interface_addresses(interface):
            return interface
    return None
