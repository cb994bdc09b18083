"""ONC-RPC (RFC 5531) over UDP and TCP: NFS and its helpers, rpcbind, other programs.

An RPC call names its program, version and procedure in a fixed XDR header; over TCP each record
has a 4-byte record mark in front (last-fragment bit + 31-bit length). The flow is named by the
program of its first call: ``nfs`` for NFS and the programs that serve it (MOUNT, NLM, NSM status,
NFS ACL), ``rpcbind`` for the port mapper, ``onc-rpc`` for any other. The ``rpc`` object counts
procedures by name (NFS v2/v3: READ, WRITE, ...), the bytes NFSv3 WRITE calls and READ replies carry,
and stops after ``max_packets``. NFSv4 hides its operations inside COMPOUND: counted as such.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.identify import INVALID, NEED_MORE, FramedIdentifier

if TYPE_CHECKING:
    from agent.flows import Flow

_U32 = struct.Struct("!I")
_CALL = struct.Struct("!IIIIIIII")  # xid, type, rpcvers, program, version, procedure, cred flavor, len
_MAX_RECORD = 1 << 24
_MAX_AUTH = 400  # RFC 5531: opaque_auth bodies are at most 400 bytes
_MAX_PENDING_READS = 256

PROGRAMS = {100000: "portmap", 100003: "nfs", 100005: "mount", 100021: "nlockmgr", 100024: "status",
            100227: "nfs_acl", 100011: "rquota"}  # fmt: skip
NFS_FAMILY = frozenset({100003, 100005, 100021, 100024, 100227, 100011})
NFS = 100003
NFS3_PROCEDURES = ("null", "getattr", "setattr", "lookup", "access", "readlink", "read", "write", "create",
                   "mkdir", "symlink", "mknod", "remove", "rmdir", "rename", "link", "readdir",
                   "readdirplus", "fsstat", "fsinfo", "pathconf", "commit")  # fmt: skip
NFS2_PROCEDURES = ("null", "getattr", "setattr", "root", "lookup", "readlink", "read", "writecache", "write",
                   "create", "remove", "rename", "link", "symlink", "mkdir", "rmdir", "readdir",
                   "statfs")  # fmt: skip
NFS4_PROCEDURES = ("null", "compound")
PORTMAP_PROCEDURES = ("null", "set", "unset", "getport", "dump", "callit")
MOUNT_PROCEDURES = ("null", "mnt", "dump", "umnt", "umntall", "export")


def _call_at(buf: bytes, off: int, known_only: bool) -> bool:
    """A plausible RPC call header at ``off`` (version 2, sane credentials)."""
    if len(buf) - off < 32:
        return False
    _xid, kind, rpcvers, program, version, _proc, flavor, length = _CALL.unpack_from(buf, off)
    if kind != 0 or rpcvers != 2 or version > 32 or length > _MAX_AUTH or 6 < flavor < 390003:
        return False
    return bool(program in PROGRAMS if known_only else 100000 <= program < 0x80000000)


def _reply_at(buf: bytes, off: int) -> bool:
    if len(buf) - off < 24:
        return False
    kind, status, flavor, length = struct.unpack_from("!IIII", buf, off + 4)
    return bool(kind == 1 and status in (0, 1) and flavor <= 6 and length <= _MAX_AUTH)


def _record_at(buf: bytes) -> bool:
    """TCP: a record mark whose length fits a whole RPC message."""
    if len(buf) < 28:
        return False
    length: int = _U32.unpack_from(buf, 0)[0] & 0x7FFFFFFF
    return 24 <= length <= _MAX_RECORD


def probe(payload: bytes, to_server: bool) -> bool:
    """On the RPC ports: a call or reply, as a datagram or after a TCP record mark."""
    if _call_at(payload, 0, False) or _reply_at(payload, 0):
        return True
    return _record_at(payload) and (_call_at(payload, 4, False) or _reply_at(payload, 4))


def probe_any_port(payload: bytes, to_server: bool) -> bool:
    """Elsewhere: only a call to a program we know (replies and other programs are too weak)."""
    return _call_at(payload, 0, True) or (_record_at(payload) and _call_at(payload, 4, True))


class RpcIdentifier(FramedIdentifier):
    protocol = "rpc"
    max_packets = 2048

    __slots__ = ("continued", "reads")

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        self.continued = [False, False]  # per direction: the next TCP fragment continues a record
        self.reads: dict[int, int] = {}  # xid of a pending NFS READ call -> NFS version

    def inspect(self, from_client: bool, seq: int, payload: bytes, ts: float) -> bool:
        if self.flow.proto == 17:
            self._message(payload, 0, len(payload))
        else:
            self.walk(from_client, seq, payload, self._fragment)
        if self.budget <= 1:
            self.fields["partial"] = True
        return False

    def _fragment(self, buf: bytes, off: int, avail: int, from_client: bool) -> int:
        if avail < 4:
            return NEED_MORE
        mark: int = _U32.unpack_from(buf, off)[0]
        length = mark & 0x7FFFFFFF
        if length > _MAX_RECORD:
            return INVALID
        side = 0 if from_client else 1
        if not self.continued[side]:
            if avail < min(length, 64) + 4:
                return NEED_MORE
            self._message(buf, off + 4, min(avail - 4, length))
        self.continued[side] = not mark & 0x80000000
        return length + 4

    def _message(self, buf: bytes, off: int, avail: int) -> None:
        if avail < 24:
            return
        xid, kind = struct.unpack_from("!II", buf, off)
        if kind == 1:
            version = self.reads.pop(xid, 0)
            if version == 3 and avail >= 40:
                self._read_reply(buf, off, avail)
            return
        if kind != 0 or avail < 32:
            return
        program, version, procedure, _flavor, cred_len = struct.unpack_from("!IIIII", buf, off + 12)
        fields = self.fields
        if "program" not in fields:
            fields["program"] = program
            fields["program_name"] = PROGRAMS.get(program, str(program))
            fields["version"] = version
            self.rename("nfs" if program in NFS_FAMILY else "rpcbind" if program == 100000 else "onc-rpc")
        elif fields["program"] != program:
            return
        names = _procedure_names(program, version)
        self.count("procedures", names[procedure] if procedure < len(names) else str(procedure))
        if program != NFS:
            return
        args = off + 32 + _pad(cred_len)
        if avail < args - off + 8:
            return
        args += 8 + _pad(_U32.unpack_from(buf, args + 4)[0])  # verifier
        if version == 3 and procedure == 7 and avail >= args - off + 4:
            handle = _pad(_U32.unpack_from(buf, args)[0])
            at = args + 4 + handle + 8  # after the file handle and the 64-bit offset
            if at + 4 <= off + avail:
                self._add("bytes_written", _U32.unpack_from(buf, at)[0])
        elif version == 2 and procedure == 8 and avail >= args - off + 48:
            self._add("bytes_written", _U32.unpack_from(buf, args + 44)[0])
        elif version == 3 and procedure == 6 and len(self.reads) < _MAX_PENDING_READS:
            self.reads[xid] = version

    def _read_reply(self, buf: bytes, off: int, avail: int) -> None:
        status, verf_len = struct.unpack_from("!I4xI", buf, off + 8)
        if status != 0:
            return
        res = off + 20 + _pad(verf_len)
        end = off + avail
        if res + 12 > end or _U32.unpack_from(buf, res)[0] != 0:  # accept_stat SUCCESS
            return
        res += 4
        if _U32.unpack_from(buf, res)[0] != 0:  # nfsstat3 NFS3_OK
            return
        res += 4
        res += 4 + (84 if _U32.unpack_from(buf, res)[0] else 0)  # post_op_attr
        if res + 4 <= end:
            self._add("bytes_read", _U32.unpack_from(buf, res)[0])

    def _add(self, key: str, n: int) -> None:
        self.fields[key] = self.fields.get(key, 0) + n


def _pad(n: int) -> int:
    return (n + 3) & ~3


def _procedure_names(program: int, version: int) -> tuple[str, ...]:
    if program == 100000:
        return PORTMAP_PROCEDURES
    if program == 100005:
        return MOUNT_PROCEDURES
    if program != NFS:
        return ()
    return NFS3_PROCEDURES if version == 3 else NFS2_PROCEDURES if version == 2 else NFS4_PROCEDURES


# Replies and unknown programs are accepted only on the RPC ports; elsewhere SPEC_ANY_PORT's probe.
SPEC_NFS = ProtocolSpec("nfs", frozenset({2049}), frozenset({2049}), probe, RpcIdentifier, False)
SPEC_RPCBIND = ProtocolSpec("rpcbind", frozenset({111}), frozenset({111}), probe, RpcIdentifier, False)
SPEC_ANY_PORT = ProtocolSpec("onc-rpc", frozenset(), frozenset(), probe_any_port, RpcIdentifier)
