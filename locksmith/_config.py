"""Connection settings, resolved the way Consul's own tools do it.

Explicit arguments win; anything left unset falls back to Consul's environment
variables (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_TOKEN_FILE``,
``CONSUL_CACERT``, ``CONSUL_CAPATH``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``,
``CONSUL_HTTP_SSL``, ``CONSUL_HTTP_SSL_VERIFY``, ``CONSUL_TLS_SERVER_NAME``), then to
Consul's defaults. python-consul2 does the opposite (the environment overrides its
arguments); this module is why locksmith does not inherit that.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from locksmith._exceptions import ConfigurationError

__all__ = ["ConnectionConfig"]

_DEFAULT_ADDRESS = "127.0.0.1:8500"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigurationError(f"{name}: expected true or false, got {raw!r}")


@dataclass(frozen=True)
class ConnectionConfig:
    """Where and how to reach Consul's HTTP API.

    Build it with :meth:`resolve`; the fields are the resolved result. The token is
    excluded from ``repr`` and never logged.
    """

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str | None = field(default=None, repr=False)
    datacenter: str | None = None
    ca_file: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True
    tls_server_name: str | None = None
    timeout: float = 10.0

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """``scheme://host:port``."""
        return f"{self.scheme}://{self.address}"

    @classmethod
    def resolve(
        cls,
        address: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        datacenter: str | None = None,
        scheme: str | None = None,
        ca_file: str | None = None,
        ca_path: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        verify: bool | None = None,
        tls_server_name: str | None = None,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> ConnectionConfig:
        """Resolve settings: explicit arguments first, then the environment, then defaults.

        Args:
            address: ``host:port``, ``http://host:port`` or ``https://host:port``.
            token: ACL token. Wins over ``token_file`` and the environment.
            token_file: File holding the ACL token.
            datacenter: Default ``dc`` for requests.
            scheme: ``http`` or ``https``; defaults from the address or ``CONSUL_HTTP_SSL``.
            ca_file: PEM bundle of CAs to trust.
            ca_path: Directory of CA certificates.
            client_cert: Client certificate (PEM) for mutual TLS.
            client_key: Client key (PEM) for mutual TLS.
            verify: Verify the server's certificate (default True).
            tls_server_name: Host name to verify the server certificate against.
            timeout: Seconds allowed for a non-blocking request.
            env: Environment to read (defaults to ``os.environ``).

        Raises:
            ConfigurationError: A malformed address, scheme, boolean or unreadable token file.
        """
        env = os.environ if env is None else env
        if address is not None and not isinstance(address, str):
            raise ConfigurationError(
                f"address: expected 'host:port' or 'http(s)://host:port', got "
                f"{type(address).__name__} {address!r}"
            )
        raw_addr = address or env.get("CONSUL_HTTP_ADDR") or _DEFAULT_ADDRESS
        addr_scheme, host, port = _split_address(raw_addr)
        env_ssl = _env_bool(env, "CONSUL_HTTP_SSL")
        if scheme is None:
            scheme = addr_scheme or ("https" if env_ssl else "http")
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"scheme: expected 'http' or 'https', got {scheme!r}")
        if token is None:
            # Like Consul's api package: a token file (argument, then environment) wins
            # over CONSUL_HTTP_TOKEN.
            token_file = token_file or env.get("CONSUL_HTTP_TOKEN_FILE") or None
            if token_file is not None:
                token = _read_token_file(token_file)
            else:
                token = env.get("CONSUL_HTTP_TOKEN") or None
        if token is not None and not isinstance(token, str):
            raise ConfigurationError(f"token: must be a string, got {type(token).__name__}")
        if token and any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
            # Never quote the value: it is a secret.
            raise ConfigurationError(
                "token: contains a line break or control character (value not shown)"
            )
        if verify is None:
            env_verify = _env_bool(env, "CONSUL_HTTP_SSL_VERIFY")
            verify = True if env_verify is None else env_verify
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigurationError(
                f"timeout: must be a positive number of seconds, got {timeout!r}"
            )
        client_cert = client_cert or env.get("CONSUL_CLIENT_CERT") or None
        client_key = client_key or env.get("CONSUL_CLIENT_KEY") or None
        if client_key and not client_cert:
            raise ConfigurationError(
                "client_key: a client key needs a client certificate (client_cert or "
                "CONSUL_CLIENT_CERT)"
            )
        return cls(
            host=host,
            port=port,
            scheme=scheme,
            token=token,
            datacenter=datacenter or None,
            ca_file=ca_file or env.get("CONSUL_CACERT") or None,
            ca_path=ca_path or env.get("CONSUL_CAPATH") or None,
            client_cert=client_cert,
            client_key=client_key,
            verify=verify,
            tls_server_name=tls_server_name or env.get("CONSUL_TLS_SERVER_NAME") or None,
            timeout=float(timeout),
        )


def _read_token_file(path: str | os.PathLike[str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"token file {os.fspath(path)!r}: {exc.strerror}") from exc
    if not text:
        raise ConfigurationError(f"token file {os.fspath(path)!r} is empty")
    return text


def _split_address(raw: str) -> tuple[str | None, str, int]:
    text = raw.strip()
    scheme: str | None = None
    if "://" in text:
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise ConfigurationError(f"address: cannot parse {raw!r}: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"address: cannot use {raw!r} (expected http(s)://host:port)")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"address: bad port in {raw!r}") from exc
        return scheme, parts.hostname, port or (443 if scheme == "https" else 8500)
    if text.startswith("unix:"):
        raise ConfigurationError("address: unix sockets are not supported; use host:port")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "8500"
    host = host.strip("[]")
    if not host:
        raise ConfigurationError(f"address: missing host in {raw!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"address: bad port in {raw!r}")
    return scheme, host, int(port_text)
