"""The HTTP endpoint with a real client: plain HTTP, TLS, basic auth, health, readiness, web config errors."""

from __future__ import annotations

import base64
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from agent.exporter import Exporter, ExporterError
from agent.exporter.server import DEFAULT_PORT, parse_listen_address
from agent.exporter.webconfig import WebConfigError, load_web_config
from tests.tooling import require_tool

from .helpers import DEMO, DEMO_POLICY, run_with_exporter

PASSWORD = "s3cret-scrape"


def fetch(
    url: str,
    auth: tuple[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "sensor.crt", where / "sensor.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def serve(web_config: Path | None) -> Exporter:
    exporter, pipeline = run_with_exporter([DEMO], DEMO_POLICY)
    served = Exporter(
        "127.0.0.1:0", "/metrics", str(web_config) if web_config else None, "replay", str(DEMO_POLICY)
    )
    served.attach(pipeline, exporter.view.reloader)
    served.start()
    return served


@pytest.fixture
def plain() -> Iterator[Exporter]:
    exporter = serve(None)
    yield exporter
    exporter.stop()


def test_plain_http_endpoints(plain: Exporter) -> None:
    base = f"http://127.0.0.1:{plain.server.port}"
    status, headers, body = fetch(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"conduitwatch_capture_packets_total 6000.0" in body
    status, headers, body = fetch(base + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert status == 200 and "openmetrics" in headers["Content-Type"] and body.endswith(b"# EOF\n")
    assert fetch(base + "/-/healthy")[0] == 200
    assert fetch(base + "/-/ready")[:1] == (200,)
    assert b"/metrics" in fetch(base + "/")[2]
    assert fetch(base + "/nothing")[0] == 404


def test_gzip_when_asked(plain: Exporter) -> None:
    import gzip

    status, headers, body = fetch(
        f"http://127.0.0.1:{plain.server.port}/metrics", headers={"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"conduitwatch_build_info" in gzip.decompress(body)


def test_not_ready_before_the_capture_starts() -> None:
    exporter = Exporter("127.0.0.1:0", "/metrics", None, "live", None)
    exporter.start()
    try:
        status, _, body = fetch(f"http://127.0.0.1:{exporter.server.port}/-/ready")
        assert status == 503 and b"capture not started" in body
        assert fetch(f"http://127.0.0.1:{exporter.server.port}/-/healthy")[0] == 200
    finally:
        exporter.stop()


def test_tls_and_basic_auth_with_a_real_client(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    exporter = serve(config)
    try:
        url = f"https://127.0.0.1:{exporter.server.port}/metrics"
        trusted = ssl.create_default_context(cafile=str(cert))
        status, headers, body = fetch(url, ("prometheus", PASSWORD), trusted)
        assert status == 200 and b"conduitwatch_traffic_packets_total" in body
        assert headers["X-Content-Type-Options"] == "nosniff"
        for auth in (None, ("prometheus", "wrong"), ("nobody", PASSWORD)):
            status, headers, body = fetch(url, auth, trusted)
            assert status == 401, auth
            assert headers["WWW-Authenticate"].startswith("Basic realm=")
            assert b"conduitwatch_" not in body
        # Health endpoints are behind the same credentials, as with exporter-toolkit.
        assert fetch(url.replace("/metrics", "/-/healthy"), None, trusted)[0] == 401
        # A client that does not trust the certificate gets no answer at all.
        with pytest.raises(urllib.error.URLError):
            fetch(url, ("prometheus", PASSWORD), ssl.create_default_context())
        # Plain HTTP to the TLS port gets nothing either.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            fetch(url.replace("https", "http"), ("prometheus", PASSWORD))
    finally:
        exporter.stop()


def test_web_config_errors_name_the_file_and_setting(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    cases = {
        "basic_auth_users:\n  u: plaintext\n": "expected a bcrypt hash",
        "basic_auth_users:\n  u: '$2y$10$tooshort'\n": "not a valid bcrypt hash",
        "tls_server_config:\n  cert_file: a.crt\n": "needs both cert_file and key_file",
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {tmp_path}/missing.key\n": "cannot load",
        tls + "  min_version: TLS99\n": "min_version",
        tls + "  cipher_suites: [X]\n": "not supported",
        "tls_config:\n  cert_file: a\n": "unknown setting tls_config",
        "- a\n": "expected a mapping",
        "basic_auth_users: [\n": "not valid YAML",
    }
    for text, message in cases.items():
        path = tmp_path / "web.yml"
        path.write_text(text)
        with pytest.raises(WebConfigError) as info:
            load_web_config(str(path))
        assert str(path) in str(info.value) and message in str(info.value), text
    relative = tmp_path / "rel"
    relative.mkdir()
    (relative / "s.crt").write_bytes(cert.read_bytes())
    (relative / "s.key").write_bytes(key.read_bytes())
    (relative / "web.yml").write_text("tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n")
    assert load_web_config(str(relative / "web.yml")).tls is not None  # relative to the file, as the toolkit


def test_listen_addresses() -> None:
    assert parse_listen_address(f":{DEFAULT_PORT}") == ("", DEFAULT_PORT)
    assert parse_listen_address("[::1]:9999") == ("::1", 9999)
    assert parse_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("10620", "host:port", ":70000"):
        with pytest.raises(ExporterError):
            parse_listen_address(bad)


def test_port_in_use_is_a_clear_error(plain: Exporter) -> None:
    other = Exporter(f"127.0.0.1:{plain.server.port}", "/metrics", None, "live", None)
    with pytest.raises(ExporterError, match=r"cannot listen on 127\.0\.0\.1"):
        other.start()


def test_all_addresses_include_ipv4() -> None:
    exporter = Exporter(":0", "/metrics", None, "live", None)
    exporter.start()
    try:
        assert fetch(f"http://127.0.0.1:{exporter.server.port}/-/healthy")[0] == 200
    finally:
        exporter.stop()
