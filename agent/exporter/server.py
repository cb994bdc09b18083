"""The exporter's HTTP endpoint: /metrics, /-/healthy, /-/ready and a landing page.

The standard library's ``ThreadingHTTPServer`` in a daemon thread is enough: one Prometheus (or two,
for HA) scrapes every 15-60 s, so a request-per-thread server carries no load worth a framework,
and it keeps the sensor's dependency set small. A scrape never touches the capture loop: the
collector reads plain counters the pipeline keeps anyway.

TLS handshakes happen in the request's own thread (not in ``accept``), with a socket timeout, so a
slow or silent client cannot hold the endpoint up for others.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import html
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent import __version__
from agent.exporter.webconfig import Authenticator, WebConfig

log = logging.getLogger("conduitwatch.exporter")

# Outside the exporter range 9100-9999, which the Prometheus wiki "Default port allocations" lists as
# fully allocated; newer exporters are allocated upwards from 10000 one by one, so a port well above
# that frontier, not a registered IANA service either, is unlikely to meet another exporter on a host.
DEFAULT_PORT = 10620
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"
REQUEST_TIMEOUT_S = 10.0

ReadyFn = Callable[[], tuple[bool, str]]


class ExporterError(Exception):
    """The endpoint cannot be set up (bad address, port in use): one line for the user."""


def parse_listen_address(value: str) -> tuple[str, int]:
    """``:10620``, ``0.0.0.0:10620``, ``[::1]:10620`` or ``host:port`` -> (host, port); "" = all."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ExporterError(f"--web.listen-address {value!r}: expected [HOST]:PORT, e.g. :{DEFAULT_PORT}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ExporterError(f"--web.listen-address {value!r}: port must be a number") from None
    if not 0 <= port < 65536:
        raise ExporterError(f"--web.listen-address {value!r}: port must be 0-65535")
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, app: MetricsServer) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, _Handler, bind_and_activate=False)
        if family == socket.AF_INET6:
            # ":PORT" means every address, IPv4 included, as node_exporter does.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address[0] == "::" else 1)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT_S)
        tls = self.app.config.tls
        if tls is not None:
            try:
                request = tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address, e)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"conduitwatch/{__version__}"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        app = self.server.app
        if not self._authorised(app):
            self._send(
                401,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                head,
                {"WWW-Authenticate": 'Basic realm="conduitwatch", charset="UTF-8"'},
            )
            return
        path = self.path.split("?", 1)[0]
        if path == app.telemetry_path:
            self._metrics(app, head)
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", "text/plain; charset=utf-8", head)
        elif path == "/-/ready":
            ready, why = app.ready()
            self._send(200 if ready else 503, f"{why}\n".encode(), "text/plain; charset=utf-8", head)
        elif path == "/":
            self._send(200, app.landing_page(), "text/html; charset=utf-8", head)
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8", head)

    def _authorised(self, app: MetricsServer) -> bool:
        if app.auth is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and app.auth.check(user, password)

    def _metrics(self, app: MetricsServer, head: bool) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(app.registry)
        except Exception:
            log.exception("collecting metrics failed")
            self._send(500, b"collecting metrics failed; see the agent's log\n", "text/plain", head)
            return
        extra = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        self._send(200, body, content_type, head, extra)

    def _send(
        self, code: int, body: bytes, content_type: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.server.app.config.headers.items():
            self.send_header(name, value)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class MetricsServer:
    """Serves ``registry`` at ``telemetry_path`` on ``listen_address`` from a daemon thread."""

    def __init__(
        self,
        listen_address: str,
        telemetry_path: str,
        config: WebConfig,
        registry: CollectorRegistry,
        ready: ReadyFn,
    ) -> None:
        if not telemetry_path.startswith("/") or telemetry_path in ("/", "/-/healthy", "/-/ready"):
            raise ExporterError(f"--web.telemetry-path {telemetry_path!r}: must be a path such as /metrics")
        self.host, self.port = parse_listen_address(listen_address)
        self.telemetry_path = telemetry_path
        self.config = config
        self.auth = Authenticator(config.users) if config.auth_required else None
        self.registry = registry
        self.ready = ready
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls is not None else "http"

    def start(self) -> None:
        """Bind and serve in a daemon thread; ExporterError when the address cannot be used."""
        try:
            self._httpd = self._bind()
        except OSError as e:
            where = f"{self.host or '*'}:{self.port}"
            raise ExporterError(f"cannot listen on {where}: {e.strerror or e}") from None
        self.port = self._httpd.server_address[1]  # the real one when 0 asked for any free port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="exporter", daemon=True)
        self._thread.start()
        log.info("metrics at %s://%s:%d%s", self.scheme, self.host or "*", self.port, self.telemetry_path)

    def _bind(self) -> _Server:
        if not self.host:
            try:
                return _Server(("::", self.port), socket.AF_INET6, self)
            except OSError:  # no IPv6 on this host
                return _Server(("0.0.0.0", self.port), socket.AF_INET, self)
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        return _Server((str(sockaddr[0]), self.port), family, self)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def landing_page(self) -> bytes:
        path = html.escape(self.telemetry_path)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>conduitwatch exporter</title>"
            "</head><body><h1>conduitwatch exporter</h1>"
            f"<p>Passive OT network monitor, version {html.escape(__version__)}.</p><ul>"
            f'<li><a href="{path}">Metrics</a> ({path})</li>'
            '<li><a href="/-/healthy">Health</a> (/-/healthy: the process answers)</li>'
            '<li><a href="/-/ready">Readiness</a> (/-/ready: capture and policy are up)</li>'
            "</ul></body></html>\n"
        ).encode()
