"""Events to a syslog receiver: RFC 5424 messages over UDP (RFC 5426) or TCP (RFC 6587).

The message body is the event's EVE JSON line, or a CEF record (``agent.outputs.cef``) for SIEMs
that want it. The syslog timestamp is the event's (packet) time, so a replay is reported as what
happened when, and the MSGID is the event type, so a receiver can route alerts without parsing JSON.

The sink never blocks monitoring, which runs in the same thread: a receiver's name is looked up in
a thread of its own, TCP connects and writes are non-blocking, a receiver that is down or slow fills
a bounded backlog (``agent.outputs.backlog``) that is retried, and reconnection is attempted at most
once a second. A blocking connect to a receiver that drops SYNs, or a lookup while the DNS server is
unreachable, would stop packet capture for seconds each time.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import select
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from agent.outputs.backlog import DEFAULT_LIMIT, Backlog
from agent.outputs.cef import cef_record
from agent.outputs.eve import eve_record
from agent.outputs.passive import leaves_through
from agent.records import Event

log = logging.getLogger(__name__)

FACILITIES = {name: code for code, name in enumerate(
    ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
     "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4",
     "local5", "local6", "local7"))}  # fmt: skip
FORMATS = ("json", "cef")
APP_NAME = "conduitwatch"
CONNECT_TIMEOUT = 5.0  # seconds a TCP connect may take (never waited for) before it counts as failed
RECONNECT_INTERVAL = 1.0
_NILVALUE = "-"

# Syslog severities (RFC 5424 table 2) by event: an alert's EVE severity 1 (high) .. 3 (low).
ALERT_SEVERITY = {1: 2, 2: 3, 3: 4}  # critical, error, warning
EVENT_SEVERITY = {"anomaly": 5, "asset": 5}  # notice; everything else is informational (6)


class SyslogTarget:
    """``udp://host:port`` or ``tcp://host:port`` (port defaults 514 and 601), parsed and checked."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"udp://{url}")
        if parts.scheme not in ("udp", "tcp"):
            raise ValueError(f"{url!r}: the syslog transport must be udp:// or tcp://")
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: bad port") from None
        self.transport = parts.scheme
        self.host = parts.hostname
        self.port = port or (514 if parts.scheme == "udp" else 601)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def syslog_timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(value: str, limit: int) -> str:
    # RFC 5424 header fields are PRINTUSASCII without spaces.
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)
    return cleaned[:limit] or _NILVALUE


class SyslogSink:
    """Sends every event it is given to a syslog receiver."""

    name = "syslog"

    def __init__(
        self,
        target: SyslogTarget,
        fmt: str = "json",
        facility: str = "local5",
        event_types: frozenset[str] | None = None,
        hostname: str | None = None,
        backlog_limit: int = DEFAULT_LIMIT,
        monitored: tuple[str, ...] = (),
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"syslog format must be one of {', '.join(FORMATS)}")
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.target = target
        self.monitored = monitored  # interfaces being captured: never send through them
        self.refused: str | None = None  # why the sink stopped for good
        self.format = fmt
        self.facility = FACILITIES[facility]
        self.event_types = event_types  # None: every event
        self._host = _printable(hostname or socket.gethostname(), 255)
        self._procid = str(os.getpid())
        self._dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self._sock: socket.socket | None = None
        self._connecting_until = 0.0  # while a TCP connect is in progress: when it counts as failed
        self._next_connect = 0.0
        # The receiver's (family, address): looked up at once for an IP literal, else in a thread
        # (``_lookup``) whose result or error the next connect attempt takes.
        self._address: tuple[int, Any] | None = None
        self._lookup_thread: threading.Thread | None = None
        self._lookup_result: tuple[int, Any] | OSError | None = None
        self.connects = 0
        self.backlog = Backlog(f"syslog {target}", self._write, backlog_limit)
        self.written = 0

    # -- formatting ------------------------------------------------------------------------------

    def message(self, event: Event) -> bytes:
        """One RFC 5424 message (without transport framing)."""
        if event.event_type == "alert":
            alert: dict[str, Any] = event.fields.get("alert", {})
            severity = ALERT_SEVERITY.get(alert.get("severity", 3), 4)
        else:
            severity = EVENT_SEVERITY.get(event.event_type, 6)
        record = eve_record(event)
        body = cef_record(record) if self.format == "cef" else self._dumps(record)
        header = (f"<{self.facility * 8 + severity}>1 {syslog_timestamp(event.timestamp)} {self._host} "
                  f"{APP_NAME} {self._procid} {_printable(event.event_type, 32)} {_NILVALUE} ")  # fmt: skip
        return (header + body).encode("utf-8")

    # -- delivery --------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if self.event_types is not None and event.event_type not in self.event_types:
            return
        data = self.message(event)
        if self.target.transport == "tcp":
            data = b"%d %s" % (len(data), data)  # RFC 6587 octet counting: messages may hold newlines
        self.written += 1
        self.backlog.put(data)

    def _connect(self) -> socket.socket:
        if self.refused is not None:
            raise PermissionError(self.refused)
        now = time.monotonic()
        if now < self._next_connect:
            raise BlockingIOError("waiting to reconnect")  # "not now" for the backlog, not a failure
        self._next_connect = now + RECONNECT_INTERVAL
        target = self.target
        kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
        family, address = self._receiver_address(kind)
        # Ask the kernel for the route first with a connected UDP socket, which sends nothing: a TCP
        # connect would already have put a SYN on the wire before we could look.
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            interface = leaves_through(probe, self.monitored)
        if interface is not None:
            self.refused = (f"syslog receiver {target} is reached through the monitored interface "
                            f"{interface}: refusing to transmit on the segment being watched")  # fmt: skip
            log.error("%s", self.refused)
            raise PermissionError(self.refused)
        sock = socket.socket(family, kind)
        sock.setblocking(False)
        code = sock.connect_ex(address)  # UDP: at once; TCP: in progress, finished by _connected
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._address = None  # look the name up again: the receiver may have moved
            raise OSError(code, os.strerror(code))
        if code:
            self._connecting_until = now + CONNECT_TIMEOUT
        else:
            self.connects += 1
        return sock

    def _receiver_address(self, kind: int) -> tuple[int, Any]:
        """The receiver's (family, address); raises BlockingIOError while its name is being looked up
        and the lookup's OSError once it has failed."""
        if self._address is not None:
            return self._address
        target = self.target
        try:
            ipaddress.ip_address(target.host)
        except ValueError:
            pass
        else:  # an IP literal: getaddrinfo answers without asking anyone
            self._address = _first_address(target.host, target.port, kind)
            return self._address
        result, self._lookup_result = self._lookup_result, None
        if isinstance(result, OSError):
            raise result
        if result is not None:
            self._address = result
            return result
        if self._lookup_thread is None or not self._lookup_thread.is_alive():
            self._lookup_thread = threading.Thread(
                target=self._lookup, args=(kind,), name="syslog-lookup", daemon=True
            )
            self._lookup_thread.start()
        self._next_connect = 0.0  # try again as soon as the lookup is done
        raise BlockingIOError(f"looking up {target.host}")

    def _lookup(self, kind: int) -> None:
        try:
            self._lookup_result = _first_address(self.target.host, self.target.port, kind)
        except OSError as e:
            self._lookup_result = e

    def _connected(self, sock: socket.socket) -> None:
        """Finish a TCP connect in progress; BlockingIOError while it still is, OSError if it failed."""
        _, writable, _ = select.select([], [sock], [], 0)
        if writable:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            self._connecting_until = 0.0
            self.connects += 1
            return
        if time.monotonic() < self._connecting_until:
            raise BlockingIOError("connecting")
        raise TimeoutError(errno.ETIMEDOUT, f"no answer to the connect within {CONNECT_TIMEOUT:g} s")

    def _write(self, data: bytes) -> int:
        sock = self._sock
        if sock is None:
            sock = self._sock = self._connect()
        try:
            if self._connecting_until:
                self._connected(sock)
            return sock.send(data)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError:
            # The receiver went away, refused or never answered the connect (or a UDP port is
            # unreachable): start over with a new socket, and a new lookup of its name.
            self._sock = None
            self._connecting_until = 0.0
            self._address = None
            sock.close()
            raise

    def flush(self) -> None:
        self.backlog.drain()

    def reopen(self) -> None:
        """SIGHUP: reconnect (the receiver may have moved behind the same name)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._connecting_until = 0.0
        self._address = None
        self._next_connect = 0.0

    def close(self) -> None:
        # Give a slow receiver a moment to take what is queued before the agent exits.
        deadline = time.monotonic() + 2.0
        while len(self.backlog) and time.monotonic() < deadline:
            if not self.backlog.drain():
                time.sleep(0.05)
        if len(self.backlog):
            log.warning("syslog %s: %d events could not be delivered", self.target, len(self.backlog))
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stats(self) -> dict[str, int]:
        return {"events": self.written, "connects": self.connects, "refused": int(self.refused is not None),
                **self.backlog.stats()}  # fmt: skip


def _first_address(host: str, port: int, kind: int) -> tuple[int, Any]:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
    return family, address
