"""FTP control (TCP 21): commands by verb, and the data connections it announces.

The control connection says where each file will travel: a 227 (PASV) or 229 (EPSV) reply gives
the server port the client will connect to, a PORT or EPRT command the client port the server will
connect to (RFC 959, RFC 2428). Those are recorded in the pipeline's expectation table, so the data
connection is named ``ftp-data`` when it starts, on whatever port. The addresses are taken from the
control connection, not from the reply (NAT rewrites one and not the other). After AUTH TLS the
control channel is encrypted and the identifier stops. Arguments (user names, file names) are not
kept.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.expect import expectations_for
from agent.decoders.identify import Identifier

if TYPE_CHECKING:
    from agent.flows import Flow

VERBS = frozenset({"USER", "PASS", "ACCT", "CWD", "CDUP", "QUIT", "PORT", "PASV", "TYPE", "MODE", "STRU",
                   "RETR", "STOR", "STOU", "APPE", "REST", "RNFR", "RNTO", "ABOR", "DELE", "RMD", "MKD",
                   "PWD", "LIST", "NLST", "SITE", "SYST", "STAT", "HELP", "NOOP", "FEAT", "OPTS", "AUTH",
                   "PBSZ", "PROT", "EPRT", "EPSV", "MDTM", "SIZE", "MLSD", "MLST", "XPWD", "XCWD",
                   "XMKD", "XRMD", "CLNT", "HOST", "LANG", "CCC", "ALLO", "SMNT", "REIN"})  # fmt: skip
_PASV = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(rb"\((.)\1\1(\d{1,5})\1\)")
_EPRT = re.compile(rb"^(.)\d\1[^|]*\1(\d{1,5})\1")
_MAX_LINE = 2048


def probe(payload: bytes, to_server: bool) -> bool:
    """A server greeting/refusal (220/421) or a client command line."""
    head = payload[:4]
    if head[:3] in (b"220", b"421") and payload[3:4] in (b" ", b"-"):
        return True
    verb = payload.split(b"\r\n", 1)[0].split(b" ", 1)[0]
    return payload.endswith(b"\n") and verb.upper().decode("ascii", "replace") in VERBS


class FtpIdentifier(Identifier):
    protocol = "ftp"
    max_packets = 4096

    __slots__ = ("pending",)

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.pending = [b"", b""]  # an unfinished line per direction (client, server)

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        side = 0 if from_client else 1
        data = self.pending[side] + payload
        lines = data.split(b"\n")
        rest = lines.pop()
        self.pending[side] = rest if len(rest) <= _MAX_LINE else b""
        for line in lines:
            if self._command(line.rstrip(b"\r"), ts) if from_client else self._reply(line, ts):
                return True
        return False

    def _command(self, line: bytes, ts: float) -> bool:
        verb, _, argument = line.partition(b" ")
        name = verb.upper().decode("ascii", "replace")
        self.count("commands", name if name in VERBS else "other")
        if name == "PORT":
            match = _PASV.search(argument)
            if match:
                self._expect(int(match[5]) << 8 | int(match[6]), active=True, ts=ts)
        elif name == "EPRT":
            match = _EPRT.match(argument)
            if match:
                self._expect(int(match[2]), active=True, ts=ts)
        return False

    def _reply(self, line: bytes, ts: float) -> bool:
        code = line[:3]
        if code == b"227":
            match = _PASV.search(line)
            if match:
                self._expect(int(match[5]) << 8 | int(match[6]), active=False, ts=ts)
        elif code == b"229":
            match = _EPSV.search(line)
            if match:
                self._expect(int(match[2]), active=False, ts=ts)
        elif code == b"234":  # AUTH TLS accepted: the rest is encrypted
            self.fields["tls"] = True
            return True
        return False

    def _expect(self, port: int, active: bool, ts: float) -> None:
        if not 0 < port < 65536:
            return
        flow = self.flow
        client, server = (flow.src, flow.dst) if self.initiator_is_client else (flow.dst, flow.src)
        initiator, responder = (server, client) if active else (client, server)
        if expectations_for(self.ctx).expect(6, initiator, responder, port, "ftp-data", ts):
            # Published with the stats event (app_layer.ftp.anomalies): a data connection may go unnamed.
            stats = self.ctx.stats_for("ftp")
            stats.anomalies["expectation_evicted"] = stats.anomalies.get("expectation_evicted", 0) + 1
        self.fields["data_connections"] = self.fields.get("data_connections", 0) + 1


SPEC = ProtocolSpec("ftp", frozenset({21}), frozenset(), probe, FtpIdentifier, probe_any_port=False)
