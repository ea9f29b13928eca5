"""The adapter around python-consul2: the only module of locksmith that imports ``consul``.

python-consul2 gives locksmith its client object and its HTTP seam: a subclass of
``consul.base.Consul`` chooses the HTTP client in ``http_connect``, and every request
goes through that client's ``get/put/delete/post(callback, path, params, data, headers)``.
locksmith plugs its own client in there:

* one keep-alive :mod:`http.client` connection per thread (so a blocking query on one
  thread never holds up a renewal on another), at the raw-HTTP floor instead of the
  2.5-3x that python-consul2's ``requests`` transport costs;
* a timeout on every request, chosen per request (a blocking query gets its wait plus
  Consul's wait/16 jitter plus the normal timeout; a renewal gets at most what is left of
  its lease);
* TLS with CA file/dir, client certificate and server name;
* foreign errors (``OSError``, ``ssl.SSLError``, ``http.client`` errors) converted to
  :class:`~locksmith.ConsulUnavailable` / :class:`~locksmith.TLSError` at this boundary.

python-consul2's defects are kept out: its constructor reads the environment over explicit
arguments (locksmith's resolved :class:`ConnectionConfig` is applied after it), warns with
``DeprecationWarning`` on every construction (silenced here, under a lock, so that pytest's
``filterwarnings = error`` keeps working), has no default timeout and cuts blocking queries
with the one it has (here every request gets one that exceeds its wait), and raises raw
``requests`` exceptions (there is no ``requests`` here). Its endpoint wrappers send ``dc``
twice, assert instead of validating, drop KnownLeader/LastContact, lack
NodeChecks/ServiceChecks and return 404s in several shapes, so locksmith's own ``_client``
module builds the requests and parses the answers instead; the python-consul2 object stays
available (:attr:`Transport.consul2`) for the endpoints locksmith does not cover.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import threading
import urllib.parse
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consul.base

from locksmith._config import ConnectionConfig
from locksmith._durations import parse_duration
from locksmith._exceptions import ConfigurationError, ConsulUnavailable, TLSError, ValidationError

__all__ = ["WAIT_JITTER", "RawResponse", "Transport", "blocking_timeout"]

Params = Sequence[tuple[str, str]]

#: Consul adds up to wait/16 of random jitter to a blocking query's wait.
WAIT_JITTER = 1 / 16
#: Consul's wait when a blocking query names an index but no wait.
_DEFAULT_WAIT = 300.0
#: Consul's cap on a blocking query's wait.
_MAX_WAIT = 600.0

# python-consul2's constructor warns (DeprecationWarning) and catch_warnings() swaps the
# process-wide filter list: serialise locksmith's own constructions so that two threads
# never restore each other's filters.
_CONSTRUCT_LOCK = threading.Lock()


def blocking_timeout(base: float, wait: float | None) -> float:
    """The timeout of a request that may block for ``wait`` seconds.

    Args:
        base: The timeout of a request that does not block.
        wait: The blocking query's wait (None: not a blocking query).

    Returns:
        ``base`` plus the wait and Consul's jitter on it, so that the request's timeout
        always exceeds the time the server may legitimately hold it.
    """
    if wait is None:
        return base
    return base + wait * (1 + WAIT_JITTER)


def _wait_of(params: Params) -> float | None:
    """The wait a request's query parameters ask Consul to block for, or None."""
    index = wait = None
    for name, value in params:
        if name == "index":
            index = value
        elif name == "wait":
            wait = value
    if not index or index == "0":
        return None
    if not wait:
        return _DEFAULT_WAIT
    try:
        return min(parse_duration(wait, field="wait"), _MAX_WAIT)
    except ValidationError:
        return _DEFAULT_WAIT


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as received: status, headers (lower-cased names) and body bytes."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (with replacement characters for bad bytes)."""
        return self.body.decode("utf-8", errors="replace")


class _Headers(Mapping[str, str]):
    """Case-insensitive header mapping, as python-consul2's callbacks expect from requests."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._h = {k.lower(): v for k, v in headers.items()}

    def __getitem__(self, key: str) -> str:
        return self._h[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._h)

    def __len__(self) -> int:
        return len(self._h)


class _Conn(threading.local):
    conn: http.client.HTTPConnection | None = None
    reaper: object | None = None


class _Reaper:
    """Lives in a thread's local storage: when the thread ends, its connection is closed."""


def _reap(
    conn: http.client.HTTPConnection, pool: set[http.client.HTTPConnection], lock: threading.Lock
) -> None:
    conn.close()
    with lock:
        pool.discard(conn)


class _HTTPClient(consul.base.HTTPClient):  # type: ignore[misc]
    """python-consul2's HTTP client interface, implemented on per-thread keep-alive sockets."""

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config.host, config.port, config.scheme, config.verify, None, None)
        self.config = config
        self._local = _Conn()
        self._all: set[http.client.HTTPConnection] = set()
        self._all_lock = threading.Lock()
        self._in_flight: dict[int, http.client.HTTPConnection] = {}
        self._interrupted: set[int] = set()
        self._closed = False
        self._tls: ssl.SSLContext | None = None  # built on first use: construction does no I/O

    # -- python-consul2's interface ------------------------------------------------------
    @staticmethod
    def _for_consul2(resp: RawResponse) -> Any:
        return consul.base.Response(resp.status, _Headers(resp.headers), resp.text, resp.body)

    def get(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        headers: Any = None,
    ) -> Any:
        """GET for python-consul2's endpoint wrappers."""
        return callback(self._for_consul2(self.request("GET", path, params, None, headers)))

    def put(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: Any = "",
        headers: Any = None,
    ) -> Any:
        """PUT for python-consul2's endpoint wrappers."""
        return callback(self._for_consul2(self.request("PUT", path, params, data, headers)))

    def delete(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        data: Any = "",
        headers: Any = None,
    ) -> Any:
        """DELETE for python-consul2's endpoint wrappers."""
        return callback(self._for_consul2(self.request("DELETE", path, params, data, headers)))

    def post(
        self,
        callback: Callable[[Any], Any],
        path: str,
        params: Any = None,
        headers: Any = None,
        data: Any = "",
    ) -> Any:
        """POST for python-consul2's endpoint wrappers."""
        return callback(self._for_consul2(self.request("POST", path, params, data, headers)))

    # -- the transport -------------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        with self._all_lock:
            return len(self._all)

    def close(self) -> None:
        with self._all_lock:
            self._closed = True
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()

    def interrupt(self, ident: int) -> bool:
        """Cut short the request thread ``ident`` is waiting in (e.g. a blocking query).

        The request raises :class:`ConsulUnavailable` ("interrupted") instead of being
        retried. Returns whether a request was in flight.
        """
        with self._all_lock:
            conn = self._in_flight.get(ident)
            if conn is None:
                return False
            self._interrupted.add(ident)
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return True

    def _begin(self, conn: http.client.HTTPConnection) -> None:
        with self._all_lock:
            ident = threading.get_ident()
            self._in_flight[ident] = conn
            self._interrupted.discard(ident)

    def _end(self) -> bool:
        """Leave the in-flight table; True if the request was interrupted."""
        with self._all_lock:
            ident = threading.get_ident()
            self._in_flight.pop(ident, None)
            if ident in self._interrupted:
                self._interrupted.discard(ident)
                return True
            return False

    def _closed_error(self, method: str, path: str) -> ConsulUnavailable:
        return ConsulUnavailable("the Consul client was closed", operation=method, resource=path)

    def _ssl_context(self) -> ssl.SSLContext:
        with self._all_lock:
            if self._tls is None:
                self._tls = _ssl_context(self.config)
            return self._tls

    def _new_conn(self, timeout: float, method: str, path: str) -> http.client.HTTPConnection:
        cfg = self.config
        conn: http.client.HTTPConnection
        if cfg.scheme == "https":
            conn = _HTTPSConnection(
                cfg.host,
                cfg.port,
                timeout=timeout,
                context=self._ssl_context(),
                server_name=cfg.tls_server_name,
            )
        else:
            conn = _HTTPConnection(cfg.host, cfg.port, timeout=timeout)
        with self._all_lock:
            if self._closed:
                raise self._closed_error(method, path)
            self._all.add(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._all_lock:
            self._all.discard(conn)
        if self._local.conn is conn:
            self._local.conn = None

    def _handle_failure(
        self,
        exc: OSError | http.client.HTTPException,
        conn: http.client.HTTPConnection,
        may_retry: bool,
        *,
        method: str,
        path: str,
        timeout: float,
    ) -> None:
        """Map a failed request to a locksmith error; return only when it may be retried."""
        self._drop(conn)
        where = self.config.address
        if isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError):
            # A kept-alive connection the server closed while idle: retry once, fresh.
            if may_retry:
                return
            raise ConsulUnavailable(
                f"connection to Consul at {where} was closed: {exc}",
                operation=method,
                resource=path,
            ) from exc
        if isinstance(exc, ssl.SSLError):
            raise TLSError(
                f"TLS with Consul at {where} failed: {_ssl_reason(exc, self.config)}",
                operation=method,
                resource=path,
            ) from exc
        if isinstance(exc, TimeoutError):
            raise ConsulUnavailable(
                f"Consul at {where} did not answer within {timeout:.3g}s",
                operation=method,
                resource=path,
            ) from exc
        if isinstance(exc, http.client.BadStatusLine):
            raise ConsulUnavailable(
                f"{where} did not answer with HTTP (is it Consul's HTTP "
                f"port, and is the scheme {self.config.scheme!r} right?)",
                operation=method,
                resource=path,
            ) from exc
        raise ConsulUnavailable(
            f"cannot reach Consul at {where}: {exc}",
            operation=method,
            resource=path,
        ) from exc

    def request(  # noqa: PLR0917 - python-consul2's positional calling convention
        self,
        method: str,
        path: str,
        params: Any,
        data: Any,
        headers: Mapping[str, str] | None,
        timeout: float | None = None,
        *,
        idempotent: bool = True,
    ) -> RawResponse:
        """Send one request on this thread's connection and read the whole answer.

        Without an explicit ``timeout`` the configured one applies, extended by the wait
        (plus jitter) when ``params`` make this a blocking query.
        """
        params = list(params.items()) if isinstance(params, Mapping) else list(params or ())
        # python-consul2's legacy-ACL wrappers put the token in the query string; URLs end up
        # in logs and proxies, so a token parameter travels in the header instead.
        url_token = next((str(v) for k, v in params if k == "token" and v), None)
        params = [(k, v) for k, v in params if k != "token"]
        if timeout is None:
            timeout = blocking_timeout(self.config.timeout, _wait_of(params))
        timeout = max(timeout, 0.001)
        target = urllib.parse.quote(path, safe="/:")
        if params:
            target += "?" + urllib.parse.urlencode(params)
        body: bytes | None
        if data is None or data == "":
            body = b"" if method in ("PUT", "POST", "DELETE") else None
        elif isinstance(data, bytes):
            body = data
        else:
            body = str(data).encode("utf-8")
        hdrs = {"Accept": "application/json"}
        token = url_token or self.config.token
        if token:
            hdrs["X-Consul-Token"] = token
        if headers:  # python-consul2's wrappers may pass a per-call token
            hdrs.update(headers)
        for value in hdrs.values():
            if not _HEADER_SAFE.fullmatch(value):
                # http.client would raise ValueError quoting the value: maybe the token.
                raise ConfigurationError(
                    "a request header (e.g. the ACL token) contains control characters"
                )
        for attempt in (0, 1):
            if self._closed:
                raise self._closed_error(method, path)
            conn = self._local.conn
            if conn is not None and conn.sock is None:
                # Closed under us (close(), or the server said Connection: close): never let
                # http.client reopen it behind the pool's back.
                self._drop(conn)
                conn = None
            reused = conn is not None
            if conn is None:
                conn = self._new_conn(timeout, method, path)
                self._local.conn = conn
                # Close it when this thread ends, not only at close().
                reaper = _Reaper()
                weakref.finalize(reaper, _reap, conn, self._all, self._all_lock)
                self._local.reaper = reaper
            self._begin(conn)
            try:
                if conn.timeout != timeout:  # settimeout costs a system call: only on change
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                if self._end():
                    self._drop(conn)
                    raise ConsulUnavailable(
                        f"request to Consul at {self.config.address} was interrupted",
                        operation=method,
                        resource=path,
                    ) from exc
                self._handle_failure(
                    exc,
                    conn,
                    reused and attempt == 0 and idempotent,
                    method=method,
                    path=path,
                    timeout=timeout,
                )
                continue
            self._end()
            if resp.will_close:
                self._drop(conn)
            return RawResponse(
                status=resp.status,
                headers={k.lower(): v for k, v in resp.getheaders()},
                body=payload,
            )
        raise AssertionError("unreachable")  # pragma: no cover


#: Header values http.client accepts without complaint (printable text, tabs).
_HEADER_SAFE = re.compile(r"[\t\x20-\x7e\x80-\uffff]*")

#: OpenSSL reasons of a handshake the server refused, and what they mean for a Consul client.
_PEER_REFUSED = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused the client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the handshake",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the client certificate's CA",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS there",
    "RECORD_LAYER_FAILURE": "the server does not speak TLS there",
}
_CLIENT_CERT_HINT = (
    " (the agent verifies clients, verify_incoming: give a client certificate signed by its CA "
    "with client_cert/client_key or CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY)"
)


def _ssl_reason(exc: ssl.SSLError, config: ConnectionConfig) -> str:
    """A readable reason for a failed TLS handshake, with what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = str(exc.verify_message or exc.reason or exc)
        if "mismatch" in message.lower() or "not valid for" in message.lower():
            name = config.tls_server_name or config.host
            return (
                f"the server certificate does not match the name {name!r} ({message}); "
                "set tls_server_name / CONSUL_TLS_SERVER_NAME to a name in the certificate, "
                "e.g. server.<dc>.consul"
            )
        return (
            f"the server certificate is not trusted ({message}); give the CA that signed it "
            "with ca_file/ca_path or CONSUL_CACERT/CONSUL_CAPATH"
        )
    reason = exc.reason or ""
    if reason in _PEER_REFUSED:
        text = _PEER_REFUSED[reason]
        if reason in {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"}:
            return f"{text} ({reason}): is the address Consul's HTTPS port?"
        if config.client_cert:
            return f"{text} ({reason}): is {config.client_cert!r} signed by a CA it trusts?"
        return f"{text} ({reason}): no client certificate was given" + _CLIENT_CERT_HINT
    return reason or str(exc)


def _ca_bundle(ca_path: str) -> str:
    """Every PEM certificate in ``ca_path`` (recursively), like Consul's Go client loads it.

    OpenSSL's own ``capath`` only finds files named by subject hash (``c_rehash``); Consul
    reads every file in the directory, so locksmith does too.
    """
    root = Path(ca_path)
    if not root.is_dir():
        raise ConfigurationError(f"ca_path {ca_path!r} is not a directory")
    chunks: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise ConfigurationError(f"ca_path: cannot read {str(path)!r}: {exc.strerror}") from exc
        if "-----BEGIN CERTIFICATE-----" in text:
            chunks.append(text)
    if not chunks:
        raise ConfigurationError(f"ca_path {ca_path!r} holds no PEM certificate")
    return "\n".join(chunks)


def _ssl_context(config: ConnectionConfig) -> ssl.SSLContext:
    """Build the TLS context; unreadable CA or client-certificate files are configuration errors."""
    try:
        cadata = _ca_bundle(config.ca_path) if config.ca_path else None
        ctx = ssl.create_default_context(cafile=config.ca_file, cadata=cadata)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot load the CA certificates (ca_file={config.ca_file!r}, "
            f"ca_path={config.ca_path!r}): {exc}"
        ) from exc
    if config.client_cert:
        try:
            ctx.load_cert_chain(config.client_cert, config.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load client certificate {config.client_cert!r} "
                f"(key {config.client_key!r}): {exc}"
            ) from exc
    if not config.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _OneSendMixin:
    """Send a request's head and a bytes body in one write.

    ``http.client`` writes the head and the body separately: two system calls (and two TCP
    segments) per PUT, which is a measurable share of a sub-millisecond request on loopback.
    """

    _buffer: list[bytes]
    send: Callable[[Any], None]  # HTTPConnection's

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", b""))
            msg = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(msg + message_body)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneSendMixin, http.client.HTTPConnection):
    """Plain HTTP, one write per request."""


class _HTTPSConnection(_OneSendMixin, http.client.HTTPSConnection):
    """HTTPS, one write per request; optionally verified against a chosen server name."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        context: ssl.SSLContext,
        server_name: str | None = None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name or host
        self._tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._server_name)


class _Consul2(consul.base.Consul):  # type: ignore[misc]
    """python-consul2's client with locksmith's HTTP client plugged into its seam."""

    @staticmethod
    def http_connect(
        host: Any,
        port: Any,
        scheme: Any,
        verify: Any = True,
        cert: Any = None,
        *,
        locksmith_config: ConnectionConfig,
    ) -> _HTTPClient:
        # python-consul2 passes what it derived (the environment over the arguments);
        # locksmith ignores that and uses its already-resolved configuration.
        del host, port, scheme, verify, cert
        return _HTTPClient(locksmith_config)


def _make_consul2(config: ConnectionConfig) -> Any:
    """Construct python-consul2's client on locksmith's transport and settings."""
    with _CONSTRUCT_LOCK, warnings.catch_warnings():
        # python-consul2 warns about its legacy-ACL and discovery-chain wrappers on every
        # construction; those warnings are about its code, not the caller's.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            client = _Consul2(dc=config.datacenter, locksmith_config=config)
        except consul.base.ConsulException:
            # Its own parse of $CONSUL_HTTP_ADDR failed (e.g. an IPv6 address) although
            # locksmith's configuration is fine: build it without its constructor.
            client = _Consul2.__new__(_Consul2)
            client.http = _HTTPClient(config)
            client.consistency = "default"
            for attr, cls in (
                ("agent", consul.base.Consul.Agent),
                ("catalog", consul.base.Consul.Catalog),
                ("health", consul.base.Consul.Health),
                ("kv", consul.base.Consul.KV),
                ("session", consul.base.Consul.Session),
                ("status", consul.base.Consul.Status),
                ("txn", consul.base.Consul.Txn),
            ):
                setattr(client, attr, cls(client))
    # python-consul2 let the environment override these; the resolved settings win.
    client.token = config.token
    client.dc = config.datacenter
    client.scheme = config.scheme
    return client


class Transport:
    """Sends requests to Consul through python-consul2's client object.

    Constructing it does no I/O; the TLS files are loaded when the first connection opens.

    Args:
        config: Resolved connection settings.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._consul = _make_consul2(config)
        self._http: _HTTPClient = self._consul.http

    def __repr__(self) -> str:
        return f"<Transport {self.config.url}>"

    @property
    def consul2(self) -> Any:
        """python-consul2's ``consul.base.Consul`` object, on this transport and its settings.

        For endpoints locksmith does not wrap. Its wrappers keep their own conventions
        (string indexes, python-consul2's exceptions from the answers).
        """
        return self._consul

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        body: bytes | str | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> RawResponse:
        """Send one request and return the answer whatever its status.

        Args:
            method: ``GET``, ``PUT``, ``DELETE`` or ``POST``.
            path: The API path, e.g. ``/v1/session/create``; quoted here.
            params: Query parameters, in order.
            body: Request body.
            timeout: Seconds allowed for the whole request (default: the configured one,
                plus the wait and its jitter for a blocking query).
            idempotent: Whether a request that died on a stale keep-alive connection may be
                sent again.

        Raises:
            ConsulUnavailable: No answer (refused, reset, timed out, not HTTP).
            TLSError: The TLS handshake failed.
            ConfigurationError: The CA or client-certificate files cannot be loaded.
        """
        return self._http.request(method, path, params, body, None, timeout, idempotent=idempotent)

    @property
    def open_connections(self) -> int:
        """How many HTTP connections this transport holds open right now."""
        return self._http.open_connections

    def interrupt(self, ident: int) -> bool:
        """Cut short the request that thread ``ident`` is waiting in; see ``_HTTPClient``."""
        return self._http.interrupt(ident)

    def close(self) -> None:
        """Close every connection; later requests raise :class:`ConsulUnavailable`."""
        self._http.close()
