"""SSH (TCP 22 and any port): the identification strings both sides send first (RFC 4253 4.2).

"SSH-protoversion-softwareversion [comments]" is all that is in clear text; everything after the
key exchange is encrypted. SFTP and SCP run *inside* an SSH session and cannot be told from an
interactive shell on the wire: such a flow is ``ssh`` (category remote_access), never ``sftp``.
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier
from agent.decoders.text import first_line, printable


def probe(payload: bytes, to_server: bool) -> bool:
    return payload.startswith((b"SSH-2.0-", b"SSH-1.99-", b"SSH-1.5-"))


class SshIdentifier(Identifier):
    protocol = "ssh"
    max_packets = 8

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        side = "client" if from_client else "server"
        if side not in self.fields and payload.startswith(b"SSH-"):
            line = first_line(payload, 255) or payload[:255]
            proto, _, rest = line[4:].partition(b"-")
            software = rest.split(b" ", 1)[0]
            self.fields[side] = {"proto_version": printable(proto, 8),
                                 "software_version": printable(software)}  # fmt: skip
        return "client" in self.fields and "server" in self.fields


SPEC = ProtocolSpec("ssh", frozenset({22}), frozenset(), probe, SshIdentifier)
