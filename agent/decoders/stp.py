"""Spanning tree BPDUs (IEEE 802.1D/Q STP, RSTP, MSTP; 802.3 frames to LLC SAP 0x42): identified.

One record per BPDU, ``discovery``: a bridge announcing the tree as it sees it (root bridge id,
path cost, its own id and port), plus the topology-change flag that makes every switch flush its
MAC table, worth seeing when control traffic stutters. ``function`` is the BPDU type (0x00
configuration, 0x80 topology change notification, 0x02 RST/MST).
"""

from __future__ import annotations

import struct
from typing import Any

from agent.decoders.base import DecoderContext, ProtocolSpec, link_layer_spec
from agent.decoders.message import MessageDecoder
from agent.flows import Flow
from agent.linklayer import LLC_STP, format_mac, llc_key

BPDU_TYPES = {0x00: "config", 0x80: "tcn", 0x02: "rst"}
VERSIONS = {0: "stp", 2: "rstp", 3: "mstp"}
_CONFIG = struct.Struct("!HBBB8sI8sH")  # protocol id, version, type, flags, root id, cost, bridge id, port


def bridge_id(raw: bytes) -> str:
    """ "priority/mac", e.g. "32768/00:1e:f6:73:59:80" (the priority includes the VLAN id extension)."""
    return f"{(raw[0] << 8) | raw[1]}/{format_mac(raw[2:8])}"


class StpDecoder(MessageDecoder):
    protocol = "stp"

    __slots__ = ()

    def parse(self, buf: bytes, off: int, length: int, from_client: bool) -> None:
        if length < 4 or buf[off] or buf[off + 1]:
            self.anomaly("bad_header", "not a spanning tree BPDU (protocol id 0 expected)")
            return
        version, bpdu_type = buf[off + 2], buf[off + 3]
        fields: dict[str, Any] = {
            "version": version,
            "protocol": VERSIONS.get(version, str(version)),
            "bpdu_type": bpdu_type,
            "type": BPDU_TYPES.get(bpdu_type, "other"),
        }
        if bpdu_type != 0x80:
            if length < _CONFIG.size:
                self.anomaly("truncated", f"BPDU of {length} octets, {_CONFIG.size} needed")
                return
            _pid, _v, _t, flags, root, cost, bridge, port = _CONFIG.unpack_from(buf, off)
            fields.update(flags=flags, topology_change=bool(flags & 0x01), root_bridge_id=bridge_id(root),
                          root_path_cost=cost, bridge_id=bridge_id(bridge), port_id=port)  # fmt: skip
        else:
            fields["topology_change"] = True
        self.request(None, bpdu_type, "discovery", fields, from_client)


def _factory(flow: Flow, ctx: DecoderContext, initiator_is_client: bool) -> StpDecoder:
    return StpDecoder(flow, ctx, initiator_is_client)


SPEC: ProtocolSpec = link_layer_spec("stp", frozenset({llc_key(LLC_STP)}), _factory)
