"""ArcSight Common Event Format (CEF) records for SIEMs that ingest CEF over syslog.

``CEF:0|Vendor|Product|Version|Signature ID|Name|Severity|Extension``: the header names what
happened (an alert's signature id and text, or the event type), the extension carries the flow and
the OT context as key=value pairs with the standard CEF keys where one exists (src, dst, spt, dpt,
proto, app, rt, cat, fname, cnt...), labelled custom strings (cs1..cs6) for zones and conduit, and
the capture's packet number as the custom number cn1 (pcapCnt).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent import __version__

VENDOR = "conduitwatch"
PRODUCT = "conduitwatch"

# CEF severity 0 (low) .. 10 (very high) from the alert's EVE severity 1 (high) .. 3 (low).
ALERT_SEVERITY = {1: 9, 2: 6, 3: 3}
EVENT_SEVERITY = {"anomaly": 5, "asset": 4}  # others: 1
# Custom string slots: (key, label, field of the EVE alert's policy object or metadata).
_LABELS = (("cs1", "srcZone", "src_zone"), ("cs2", "destZone", "dest_zone"), ("cs3", "conduit", "conduit"),
           ("cs4", "operation", "operation"), ("cs5", "iec62443Sr", "iec62443_sr"),
           ("cs6", "iso27001AnnexA", "iso27001_annex_a"))  # fmt: skip


def _header(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _ext(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def _epoch_ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def cef_record(record: dict[str, Any]) -> str:
    """The CEF line for one EVE record (the dict ``agent.outputs.eve.eve_record`` builds)."""
    event_type = record.get("event_type", "")
    # Alerts and audits (an allowed but always-audited operation) share the signature shape.
    alert = record.get(event_type) if event_type in ("alert", "audit") else None
    if isinstance(alert, dict):
        signature_id: Any = alert.get("signature_id", 0)
        name: Any = alert.get("signature", "alert")
        severity = ALERT_SEVERITY.get(alert.get("severity", 3), 3)
    else:
        signature_id = event_type
        name = _event_name(record, event_type)
        severity = EVENT_SEVERITY.get(event_type, 1)
    ext: list[tuple[str, Any]] = [("rt", _epoch_ms(record["timestamp"]))] if "timestamp" in record else []
    for eve_key, cef_key in (("src_ip", "src"), ("src_port", "spt"), ("dest_ip", "dst"), ("dest_port", "dpt"),
                             ("proto", "proto"), ("app_proto", "app"), ("src_mac", "smac"),
                             ("dest_mac", "dmac"), ("pcap_filename", "fname"),
                             ("flow_id", "externalId")):  # fmt: skip
        if eve_key in record:
            ext.append((cef_key, record[eve_key]))
    if "pcap_cnt" in record:
        # CEF's cnt is how many times the event was seen; the packet number is a custom number.
        ext += [("cn1Label", "pcapCnt"), ("cn1", record["pcap_cnt"])]
    if isinstance(alert, dict):
        ext.append(("cnt", alert.get("count", 1)))  # repeats folded into this one
        ext.append(("cat", alert.get("category", "")))
        context = {**record.get("policy", {}), **alert.get("metadata", {})}
        for key, label, field in _LABELS:
            value = context.get(field)
            if value:
                ext.append((f"{key}Label", label))
                ext.append((key, ",".join(map(str, value)) if isinstance(value, list) else value))
    elif event_type == "anomaly":
        anomaly = record.get("anomaly", {})
        ext.append(("cat", f"{anomaly.get('type', '')}/{anomaly.get('layer', '')}"))
        if anomaly.get("detail"):
            ext.append(("msg", anomaly["detail"]))
    extension = " ".join(f"{key}={_ext(value)}" for key, value in ext)
    parts = ("CEF:0", VENDOR, PRODUCT, __version__, signature_id, name, severity)
    header = "|".join(_header(v) for v in parts)
    return f"{header}|{extension}"


def _event_name(record: dict[str, Any], event_type: str) -> str:
    if event_type == "anomaly":
        anomaly = record.get("anomaly", {})
        return f"{anomaly.get('layer', '')} {anomaly.get('event', '')}".strip() or "anomaly"
    return event_type
