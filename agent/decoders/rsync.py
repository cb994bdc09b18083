"""rsync daemon protocol (TCP 873): the "@RSYNCD:" greeting, the module asked for, the answer.

Both sides open with "@RSYNCD: <protocol version>" (3.2 adds the checksum names it supports); the
client then names a module (or "#list"), and the server answers "@RSYNCD: OK", "@RSYNCD: AUTHREQD
<challenge>" or "@ERROR ...". After that the transfer is a binary multiplexed stream, not looked at.
rsync over SSH is invisible inside SSH: it is an ``ssh`` flow.
"""

from __future__ import annotations

from agent.decoders.base import ProtocolSpec
from agent.decoders.identify import Identifier
from agent.decoders.text import printable

GREETING = b"@RSYNCD: "


def probe(payload: bytes, to_server: bool) -> bool:
    return payload.startswith(GREETING) and payload[9:10].isdigit()


class RsyncIdentifier(Identifier):
    protocol = "rsync"
    max_packets = 12

    __slots__ = ()

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        fields = self.fields
        for line in payload.split(b"\n")[:8]:
            line = line.rstrip(b"\r")
            if line.startswith(GREETING):
                word = line[len(GREETING) :].split(b" ", 1)[0]
                if word == b"OK":
                    fields["accepted"] = True
                    return True
                if word == b"EXIT":
                    return True
                if word == b"AUTHREQD":
                    fields["auth"] = True
                elif word[:1].isdigit():
                    fields["client_version" if from_client else "server_version"] = printable(word, 16)
            elif line.startswith(b"@ERROR"):
                fields["accepted"] = False
                return True
            elif from_client and line and "module" not in fields and "client_version" in fields:
                if line == b"#list":
                    fields["listing"] = True
                else:
                    fields["module"] = printable(line, 64)
        return False


SPEC = ProtocolSpec("rsync", frozenset({873}), frozenset(), probe, RsyncIdentifier)
