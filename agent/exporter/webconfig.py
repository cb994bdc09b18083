"""``--web.config.file``: TLS and basic authentication in the Prometheus exporter-toolkit format.

The same YAML file a node_exporter takes, so a SOC configures every exporter of a site alike::

    tls_server_config:
      cert_file: sensor.crt        # relative paths are relative to this file's directory
      key_file: sensor.key
      client_ca_file: ca.crt       # optional: with client_auth_type, mutual TLS
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    http_server_config:
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...       # bcrypt hash, e.g. from `htpasswd -nBC 10 "" | tr -d ':\\n'`

The file is read once at start-up (restart the agent to change it). Unknown keys are refused, as the
toolkit does, so a misspelt setting cannot silently leave the
endpoint open. Toolkit settings that Python's ssl module cannot honour (Go cipher-suite names, curve
preferences, HTTP/2 switches) are refused with a reason rather than ignored.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's client_auth_type values, mapped onto what the ssl module can do. Go's
# "RequireAnyClientCert" (a certificate, unverified) has no equivalent and is refused.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
# Toolkit settings Python cannot honour: refused by name rather than silently ignored.
_UNSUPPORTED = {
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
    "http2",
}
_HTTP_KEYS = {"headers"}
# A verified (user, password) pair is remembered so that a 15 s scrape does not pay ~0.1 s of bcrypt
# every time; bounded so a password-guessing client cannot grow it.
_AUTH_CACHE_MAX = 64


class WebConfigError(Exception):
    """The web configuration file is unreadable or invalid; the message names the file and the reason."""


@dataclass(slots=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def auth_required(self) -> bool:
        return bool(self.users)


def load_web_config(path: str | None) -> WebConfig:
    """Parse and check ``path`` (None: plain HTTP, no authentication)."""
    if not path:
        return WebConfig()
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise WebConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise WebConfigError(f"{path}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return WebConfig()
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: expected a mapping with {', '.join(sorted(_TOP_KEYS))}")
    _no_unknown(path, "", data, _TOP_KEYS)
    base = os.path.dirname(os.path.abspath(path))
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls is not None:
        config.tls = _tls_context(path, base, _mapping(path, "tls_server_config", tls))
    http = data.get("http_server_config")
    if http is not None:
        http = _mapping(path, "http_server_config", http)
        _no_unknown(path, "http_server_config.", http, _HTTP_KEYS)
        headers = _mapping(path, "http_server_config.headers", http.get("headers") or {})
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str) or "\n" in name + value:
                raise WebConfigError(
                    f"{path}: http_server_config.headers: {name!r} must map to one line of text"
                )
            config.headers[name] = value
    users = data.get("basic_auth_users")
    if users is not None:
        for user, hashed in _mapping(path, "basic_auth_users", users).items():
            if not isinstance(user, str) or not user or ":" in user:
                raise WebConfigError(f"{path}: basic_auth_users: {user!r} is not a valid user name")
            if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise WebConfigError(f"{path}: basic_auth_users.{user}: expected a bcrypt hash ($2y$...)")
            config.users[user] = hashed.encode("ascii")
            _check_hash(path, user, config.users[user])
    return config


def _check_hash(path: str, user: str, hashed: bytes) -> None:
    """Refuse a malformed hash at start-up rather than answer 401 to the right password later."""
    import bcrypt

    try:
        bcrypt.checkpw(b"", hashed)
    except ValueError:
        raise WebConfigError(f"{path}: basic_auth_users.{user}: not a valid bcrypt hash") from None


def _mapping(path: str, where: str, value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise WebConfigError(f"{path}: {where} must be a mapping")
    return value


def _no_unknown(path: str, prefix: str, data: dict[Any, Any], known: set[str]) -> None:
    for key in data:
        if key in _UNSUPPORTED:
            raise WebConfigError(
                f"{path}: {prefix}{key} is not supported by conduitwatch (Python's HTTP/TLS stack)"
            )
        if key not in known:
            raise WebConfigError(f"{path}: unknown setting {prefix}{key} (known: {', '.join(sorted(known))})")


def _tls_context(path: str, base: str, tls: dict[str, Any]) -> ssl.SSLContext:
    _no_unknown(path, "tls_server_config.", tls, _TLS_KEYS)
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        raise WebConfigError(f"{path}: tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The toolkit's default floor is TLS 1.2; so is ours.
    context.minimum_version = _version(path, "min_version", tls.get("min_version", "TLS12"))
    if tls.get("max_version") is not None:
        context.maximum_version = _version(path, "max_version", tls["max_version"])
    cert_path, key_path = os.path.join(base, str(cert)), os.path.join(base, str(key))
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as e:
        raise WebConfigError(f"{path}: cannot load {cert_path} / {key_path}: {_reason(e)}") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type {auth!r} not supported "
            f"(one of {', '.join(CLIENT_AUTH)})"
        )
    context.verify_mode = CLIENT_AUTH[auth]
    ca = tls.get("client_ca_file")
    if ca:
        ca_path = os.path.join(base, str(ca))
        try:
            context.load_verify_locations(ca_path)
        except (OSError, ssl.SSLError) as e:
            raise WebConfigError(f"{path}: cannot load client_ca_file {ca_path}: {_reason(e)}") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"{path}: client_auth_type {auth} needs client_ca_file")
    return context


def _version(path: str, name: str, value: Any) -> ssl.TLSVersion:
    if value not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{name} {value!r}: one of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[value]


def _reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or getattr(e, "reason", None) or e)


class Authenticator:
    """Checks HTTP basic credentials against the bcrypt hashes of ``basic_auth_users``."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._verified: dict[bytes, None] = {}
        self._lock = threading.Lock()
        # Unknown users are checked against a hash of the same cost, so that a wrong user name takes
        # as long as a wrong password and response times do not reveal which names exist.
        self._dummy = next(iter(users.values()), b"")

    def check(self, user: str, password: str) -> bool:
        import bcrypt

        secret = password.encode("utf-8")
        hashed = self.users.get(user)
        # Keyed by the stored hash too: a changed password must be checked again.
        token = hashlib.sha256(b"\0".join((user.encode("utf-8"), hashed or b"", secret))).digest()
        with self._lock:
            if hashed is not None and token in self._verified:
                return True
        try:
            ok = bcrypt.checkpw(secret, hashed if hashed is not None else self._dummy)
        except ValueError:  # malformed stored hash: never a pass
            ok = False
        ok = ok and hashed is not None
        if ok:
            with self._lock:
                if len(self._verified) >= _AUTH_CACHE_MAX:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[token] = None
        return ok
