"""PROFINET IO context management (IO-CM) over connectionless DCE/RPC, UDP 34964.

The DCE/RPC datagram header (80 octets) gives the packet type, the object, interface and activity
UUIDs, the sequence number, the operation number and the fragment number; its integers and the
first three fields of each UUID follow the sender's data representation (``drep``). PNIO
interfaces (device, controller, supervisor, parameter server) number their operations 0 connect,
1 release, 2 read, 3 write, 4 control, 5 read implicit; the endpoint mapper (lookups) is the
other interface seen on this port.

Classes (DOMAIN.md section 5): connect, release and control (PrmEnd, ApplicationReady) manage the
application relation: ``session``; read and read implicit: ``read``; write: ``config`` for the
records PROFINET itself defines (index 0x8000 and above: port, interface, I&M, ...) and the
multiple write 0xE040 used to parameterise a device, ``write`` for user records (below 0x8000);
endpoint-mapper lookups: ``discovery``; anything else ``unknown``.

Requests pair with responses by (activity UUID, sequence number). The device answers from another
UDP port than 34964 and the controller continues on that port pair, so pending requests are shared
by all IO-CM flows of a run (one bounded table per decoder context), and the probe (a DCE/RPC
version 4 header naming a PNIO or endpoint-mapper interface) finds IO-CM on any port.
A request or response split in fragments is one message, recorded with its first fragment.
"""

from __future__ import annotations

import struct
import weakref
from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec
from agent.decoders.message import MessageDecoder
from agent.decoders.pending import PendingRequests
from agent.flows import Flow

PNIO_PORT = 34964
HEADER_LEN = 80

PTYPES = {0: "request", 1: "ping", 2: "response", 3: "fault", 4: "working", 5: "nocall", 6: "reject",
          7: "ack", 8: "cl_cancel", 9: "fack", 10: "cancel_ack"}  # fmt: skip
REQUEST, RESPONSE, FAULT, REJECT = 0, 2, 3, 6

# Interface UUIDs as text: DEA0000x-6C97-11D1-8271-00A02442DF7D for the PNIO roles.
INTERFACES = {
    "dea00001-6c97-11d1-8271-00a02442df7d": "pnio_device",
    "dea00002-6c97-11d1-8271-00a02442df7d": "pnio_controller",
    "dea00003-6c97-11d1-8271-00a02442df7d": "pnio_supervisor",
    "dea00004-6c97-11d1-8271-00a02442df7d": "pnio_parameter_server",
    "e1af8308-5d1f-11c9-91a4-08002b14a0fa": "epm",
}
PNIO_OBJECT_PREFIX = "dea00000-6c97-11d1-8271"  # PNIO object UUIDs end in instance, device and vendor ids
PNIO_OPS = {0: ("connect", "session"), 1: ("release", "session"), 2: ("read", "read"), 3: ("write", "write"),
            4: ("control", "session"), 5: ("read_implicit", "read")}  # fmt: skip
CONTROL_COMMANDS = ((0x0001, "prm_end"), (0x0002, "application_ready"), (0x0004, "release"), (0x0008, "done"))
WRITE_MULTIPLE = 0xE040


def _uuid(raw: bytes, little: bool) -> str:
    if little:
        a, b, c = struct.unpack_from("<IHH", raw)
    else:
        a, b, c = struct.unpack_from(">IHH", raw)
    tail = raw[8:16].hex()
    return f"{a:08x}-{b:04x}-{c:04x}-{tail[:4]}-{tail[4:]}"


def probe(payload: bytes, from_initiator: bool) -> bool:
    """A connectionless DCE/RPC v4 header naming a PNIO interface, or the endpoint mapper asked
    about a PNIO object (Windows uses the endpoint mapper over UDP too: that is not PROFINET)."""
    if len(payload) < HEADER_LEN or payload[0] != 4 or payload[1] > 10:
        return False
    little = bool(payload[4] & 0x10)
    interface = INTERFACES.get(_uuid(payload[24:40], little))
    if interface is None:
        return False
    return interface != "epm" or _uuid(payload[8:24], little).startswith(PNIO_OBJECT_PREFIX)


# Pending requests per decoder context: see the module docstring.
_SHARED_PENDING: weakref.WeakKeyDictionary[DecoderContext, PendingRequests] = weakref.WeakKeyDictionary()


class PnioCmDecoder(MessageDecoder):
    protocol = "pn-cm"

    __slots__ = ()

    def __init__(self, flow: Flow, ctx: DecoderContext, initiator_is_client: bool = True) -> None:
        super().__init__(flow, ctx, initiator_is_client)
        shared = _SHARED_PENDING.get(ctx)
        if shared is None:
            config = ctx.config
            shared = _SHARED_PENDING[ctx] = PendingRequests(self.stats, config.request_timeout,
                                                            config.max_pending)  # fmt: skip
        self.pending = shared

    def close(self, reason: str) -> None:
        # The shared table outlives the flow: its requests may be answered on another port pair,
        # and they expire by age there.
        return None

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if length < HEADER_LEN:
            self.anomaly("truncated", f"DCE/RPC datagram header needs 80 octets, {length} present")
            return
        if buf[off] != 4:
            self.anomaly("bad_version", f"DCE/RPC version {buf[off]} on the IO-CM port")
            return
        ptype = buf[off + 1]
        flags1 = buf[off + 2]
        little = bool(buf[off + 4] & 0x10)
        order = "<" if little else ">"
        seq, opnum, _ihint, _ahint, frag_len, frag_num = struct.unpack_from(order + "IHHHHH", buf, off + 64)
        interface = _uuid(buf[off + 24 : off + 40], little)
        activity = _uuid(buf[off + 40 : off + 56], little)
        fields: dict[str, Any] = {
            "packet_type": ptype,
            "packet_type_name": PTYPES.get(ptype, str(ptype)),
            "object_uuid": _uuid(buf[off + 8 : off + 24], little),
            "interface_uuid": interface,
            "interface": INTERFACES.get(interface, "other"),
            "activity_uuid": activity,
            "seq_num": seq,
            "opnum": opnum,
            "fragment_num": frag_num,
            "little_endian": little,
        }
        if flags1 & 0x04:  # a fragment of a larger request or response
            fields["fragmented"] = True
        if ptype not in (REQUEST, RESPONSE, FAULT, REJECT):
            # Datagram housekeeping (ping, working, ack, fack, ...): no operation of its own.
            return
        if frag_num:
            return  # recorded with the first fragment
        stub_end = off + length
        if off + HEADER_LEN + frag_len < stub_end:
            stub_end = off + HEADER_LEN + frag_len
        elif off + HEADER_LEN + frag_len > stub_end and not flags1 & 0x04:
            self.anomaly("bad_length", f"DCE/RPC fragment length {frag_len} with {length - 80} octets")
        name, operation = self._classify(fields, buf, off + HEADER_LEN, stub_end, ptype, little)
        fields["operation_name"] = name
        key = (activity, seq)
        if ptype == REQUEST:
            self.request(key, opnum, operation, fields, from_client)
        else:
            failed = ptype != RESPONSE or bool(fields.get("pnio_status"))
            self.response(key, opnum, operation, fields, from_client, exception=failed)

    @staticmethod
    def _classify(fields: dict[str, Any], buf: bytes, off: int, end: int, ptype: int,
                  little: bool) -> tuple[str, str]:  # fmt: skip
        """(operation name, class) of the call, reading the PNIO blocks where they matter."""
        interface = fields["interface"]
        opnum = fields["opnum"]
        if ptype in (FAULT, REJECT):
            if end - off >= 4:
                fields["fault_status"] = struct.unpack_from("<I" if little else ">I", buf, off)[0]
            return PTYPES[ptype], "unknown"
        if interface == "epm":
            return ("lookup", "discovery") if opnum == 2 else (f"epm_{opnum}", "unknown")
        if interface == "other" or opnum not in PNIO_OPS:
            return f"opnum_{opnum}", "unknown"
        name, operation = PNIO_OPS[opnum]
        if ptype == RESPONSE:
            # PNIOStatus, then the NDR array header; 0 means success.
            if end - off >= 4 and buf[off : off + 4] != b"\0\0\0\0":
                fields["pnio_status"] = buf[off : off + 4].hex()
            return name, operation
        blocks = off + 20  # NDR: args maximum, args length, max count, offset, actual count
        if end - blocks < 6:
            return name, operation
        block_type = (buf[blocks] << 8) | buf[blocks + 1]
        fields["block_type"] = block_type
        if opnum in (2, 3, 5) and end - blocks >= 36:
            # IODReadReqHeader / IODWriteReqHeader: ..., API, slot, subslot, padding, index, ...
            index = (buf[blocks + 34] << 8) | buf[blocks + 35]
            fields["index"] = index
            fields["slot"] = (buf[blocks + 28] << 8) | buf[blocks + 29]
            fields["subslot"] = (buf[blocks + 30] << 8) | buf[blocks + 31]
            if opnum == 3 and (index >= 0x8000 or index == WRITE_MULTIPLE):
                operation = "config"
        elif opnum == 4 and end - blocks >= 30:
            command = (buf[blocks + 28] << 8) | buf[blocks + 29]
            fields["control_command"] = command
            fields["control"] = [label for bit, label in CONTROL_COMMANDS if command & bit]
        elif opnum == 0 and block_type == 0x0101 and end - blocks >= 58:
            # ARBlockReq: type, UUID, session key, initiator MAC and object UUID, properties,
            # timeout factor, RT port, then the controller's station name.
            fields["ar_type"] = (buf[blocks + 6] << 8) | buf[blocks + 7]
            fields["ar_uuid"] = _uuid(buf[blocks + 8 : blocks + 24], False)
            name_len = (buf[blocks + 56] << 8) | buf[blocks + 57]
            station = buf[blocks + 58 : min(end, blocks + 58 + name_len)].decode("latin-1")
            if station:
                # The connecting controller names itself: identity of the sender.
                fields["cm_initiator_station_name"] = station
                fields["identity"] = {"name": station, "role_hint": "io-controller"}
        return name, operation


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> PnioCmDecoder:
    return PnioCmDecoder(flow, ctx, initiator_is_client)


SPEC = ProtocolSpec("pn-cm", frozenset(), frozenset({PNIO_PORT}), probe, _factory)
