"""locksmith's HTTP transport: every request to Consul goes through :class:`Transport`.

* One keep-alive :mod:`http.client` connection per thread, so that a blocking query on one
  thread never holds up a renewal on another; it is closed when its thread ends.
* A timeout on every request, chosen per request: a blocking query gets its wait plus
  Consul's wait/16 jitter on top of the normal timeout (:func:`blocking_timeout`); a renewal
  gets at most what is left of its lease.
* A request's head and body leave in one write (one system call, one TCP segment).
* TLS with CA file/dir, client certificate and server name; the context is built on first
  use, so constructing a transport does no I/O.
* :meth:`Transport.interrupt` cuts short the request another thread waits in.
* Foreign errors (``OSError``, ``ssl.SSLError``, ``http.client`` errors) become
  :class:`~locksmith.ConsulUnavailable` / :class:`~locksmith.TLSError` here, with messages
  that say what to check and never contain the token.
* A connection is never reused in an unknown state: any exception during a request
  (including ``KeyboardInterrupt``) drops it, and a forked child forgets (without shutting
  them down) the connections it inherited from its parent.

This module does not import python-consul2; ``locksmith._adapter`` puts python-consul2's
client object on top of a :class:`Transport`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import struct
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locksmith._cancel import Cancel
from locksmith._config import ConnectionConfig
from locksmith._deadline import WAIT_JITTER
from locksmith._durations import parse_duration
from locksmith._exceptions import ConfigurationError, ConsulUnavailable, TLSError, ValidationError

__all__ = ["Params", "RawResponse", "Transport", "blocking_timeout"]

#: Query parameters, in order.
Params = Sequence[tuple[str, str]]

#: Consul's wait when a blocking query names an index but no wait.
_DEFAULT_WAIT = 300.0
#: Consul's cap on a blocking query's wait.
_MAX_WAIT = 600.0


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


class _Local(threading.local):
    """A thread's connection, and the object whose end closes it with the thread."""

    conn: http.client.HTTPConnection | None = None
    reaper: object | None = None


class _Reaper:
    """Lives in a thread's local storage: when the thread ends, its connection is closed."""


def _reap(ref: weakref.ref[Transport], conn: http.client.HTTPConnection, pid: int) -> None:
    """Close the connection of a thread that ended (a finalizer of its :class:`_Reaper`)."""
    if os.getpid() != pid:
        return  # inherited by a forked child: the at-fork hook forgot it already
    transport = ref()
    if transport is None:
        conn.close()
    else:
        transport._forget(conn)


#: Every transport of this process, for the at-fork hook.
_LIVE: weakref.WeakSet[Transport] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a forked child, forget every connection inherited from the parent."""
    for transport in list(_LIVE):
        transport._forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Cancelled(Exception):  # noqa: N818 - internal control flow
    """The request's Cancel was set before anything was sent."""


def _check_headers(hdrs: Mapping[str, str]) -> None:
    for value in hdrs.values():
        if not _HEADER_SAFE.fullmatch(value):
            # http.client would raise ValueError quoting the value: maybe the token.
            raise ConfigurationError(
                "a request header (e.g. the ACL token) contains control characters"
            )


#: Header values http.client accepts without complaint (printable text, tabs).
_HEADER_SAFE = re.compile(r"[\t\x20-\x7e\x80-\uffff]*")


class Transport:
    """Sends requests to Consul on per-thread keep-alive connections.

    Constructing it does no I/O; the TLS files are loaded when the first connection opens.

    Args:
        config: Resolved connection settings.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._local = _Local()
        self._all: set[http.client.HTTPConnection] = set()
        self._in_flight: dict[int, http.client.HTTPConnection] = {}
        self._interrupted: set[int] = set()
        self._closed = False
        self._tls: ssl.SSLContext | None = None  # built on first use: construction does no I/O
        self._headers: dict[str, str] | None = None
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<Transport {self.config.url}>"

    def _base_headers(self) -> dict[str, str]:
        """Accept, and the token: built and checked once, on the first request."""
        hdrs = self._headers
        if hdrs is None:
            hdrs = {"Accept": "application/json"}
            if self.config.token:
                hdrs["X-Consul-Token"] = self.config.token
            _check_headers(hdrs)
            self._headers = hdrs
        return hdrs

    @property
    def open_connections(self) -> int:
        """How many HTTP connections this transport holds open right now."""
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        """Close every connection; later requests raise :class:`ConsulUnavailable`."""
        with self._lock:
            self._closed = True
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()

    def interrupt(self, ident: int) -> bool:
        """Cut short the request thread ``ident`` is waiting in (e.g. a blocking query).

        That request raises :class:`ConsulUnavailable` ("interrupted") instead of being
        retried.

        Args:
            ident: The thread's :func:`threading.get_ident`.

        Returns:
            Whether a request was in flight.
        """
        with self._lock:
            conn = self._in_flight.get(ident)
            if conn is None:
                return False
            self._interrupted.add(ident)
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return True

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        cancel: Cancel | None = None,
    ) -> RawResponse:
        """Send one request on this thread's connection and return the answer, any status.

        Args:
            method: ``GET``, ``PUT``, ``DELETE`` or ``POST``.
            path: The API path, e.g. ``/v1/session/create``; quoted here.
            params: Query parameters, in order.
            body: Request body (str is UTF-8 encoded).
            headers: Extra headers; they override the defaults (e.g. a per-call token).
            timeout: Seconds allowed for the whole request (default: the configured one,
                plus the wait and its jitter when ``params`` make it a blocking query).
            idempotent: Whether a request that died on a stale keep-alive connection may be
                sent again.
            cancel: Cancelling it cuts the request short (also if it is cancelled before
                the request starts: then nothing is sent).

        Raises:
            ConsulUnavailable: No answer (refused, reset, timed out, interrupted or
                cancelled, not HTTP).
            TLSError: The TLS handshake failed.
            ConfigurationError: The CA or client-certificate files cannot be loaded, or a
                header (the token) contains control characters.
        """
        if timeout is None:
            params = list(params)
            timeout = blocking_timeout(self.config.timeout, _wait_of(params))
        timeout = max(timeout, 0.001)
        target = urllib.parse.quote(path, safe="/:")
        if params:
            target += "?" + urllib.parse.urlencode(params)
        data: bytes | None
        if body is None or body == "":
            data = b"" if method in ("PUT", "POST", "DELETE") else None
        elif isinstance(body, bytes):
            data = body
        else:
            data = body.encode("utf-8")
        hdrs = self._base_headers()
        if headers:
            hdrs = {**hdrs, **headers}
            _check_headers(hdrs)
        for attempt in (0, 1):
            conn, reused = self._conn(timeout, method, path)
            self._begin(conn)
            attached: socket.socket | None = None
            try:
                if conn.timeout != timeout:  # settimeout costs a system call: only on change
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                if cancel is not None:
                    if conn.sock is None:
                        conn.connect()
                    sock = conn.sock
                    if sock is None or not cancel.attach(sock):
                        raise _Cancelled
                    attached = sock
                conn.request(method, target, body=data, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
            except BaseException as exc:
                # Whatever stopped the request (a network error, or KeyboardInterrupt, a
                # signal handler's exception, SystemExit), the connection is mid-request:
                # its next use would fail ("Request-sent") or read this request's answer.
                interrupted = self._end()
                if cancel is not None and attached is not None:
                    cancel.detach(attached)
                self._drop(conn, abort=True)
                if isinstance(exc, _Cancelled) or (cancel is not None and cancel.cancelled):
                    raise ConsulUnavailable(
                        f"request to Consul at {self.config.address} was cancelled",
                        operation=method,
                        resource=path,
                    ) from None
                if not isinstance(exc, OSError | http.client.HTTPException):
                    raise
                if interrupted:
                    raise ConsulUnavailable(
                        f"request to Consul at {self.config.address} was interrupted",
                        operation=method,
                        resource=path,
                    ) from exc
                self._raise_unless_retry(
                    exc,
                    reused and attempt == 0 and idempotent,
                    method=method,
                    path=path,
                    timeout=timeout,
                )
                continue
            self._end()
            if cancel is not None and attached is not None:
                cancel.detach(attached)
            if resp.will_close:
                self._drop(conn)
            return RawResponse(
                status=resp.status,
                headers={k.lower(): v for k, v in resp.getheaders()},
                body=payload,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- connections ---------------------------------------------------------------------
    def _conn(
        self, timeout: float, method: str, path: str
    ) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection (opened if needed), and whether it was reused."""
        if self._closed:
            raise self._closed_error(method, path)
        conn = self._local.conn
        if conn is not None and conn.sock is None:
            # Closed under us (close(), or the server said Connection: close): never let
            # http.client reopen it behind the pool's back.
            self._drop(conn)
            conn = None
        if conn is not None:
            return conn, True
        conn = self._new_conn(timeout, method, path)
        self._local.conn = conn
        # Close it when this thread ends, not only at close().
        reaper = _Reaper()
        weakref.finalize(reaper, _reap, weakref.ref(self), conn, os.getpid())
        self._local.reaper = reaper
        return conn, False

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
        with self._lock:
            if self._closed:
                raise self._closed_error(method, path)
            self._all.add(conn)
        return conn

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        """Close a connection and take it out of the pool."""
        conn.close()
        with self._lock:
            self._all.discard(conn)

    def _drop(self, conn: http.client.HTTPConnection, *, abort: bool = False) -> None:
        """Close this thread's connection and forget it: it is never used again.

        With ``abort`` the connection is reset (SO_LINGER 0) rather than closed: whatever of
        the failed request the kernel still holds is discarded instead of being delivered
        later, so a request given up on (a timeout under a partition, Ctrl-C) cannot reach
        Consul after the caller moved on.
        """
        sock = conn.sock
        if abort and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._forget(conn)
        if self._local.conn is conn:
            self._local.conn = None

    def _forget_inherited(self) -> None:
        """In a forked child: close the parent's connections' descriptors and forget them.

        Only this process's descriptors are closed: no ``shutdown()``, which would end the
        connection for the parent too. Another thread may have held the lock at the fork,
        so every piece of shared state is replaced, not cleared under it.
        """
        conns = list(self._all)
        self._lock = threading.Lock()
        self._local = _Local()
        self._all = set()
        self._in_flight = {}
        self._interrupted = set()
        for conn in conns:
            # HTTPConnection.close() only closes the descriptor (and the response's buffer).
            with contextlib.suppress(OSError):
                conn.close()

    def _begin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            ident = threading.get_ident()
            self._in_flight[ident] = conn
            self._interrupted.discard(ident)

    def _end(self) -> bool:
        """Leave the in-flight table; True if the request was interrupted."""
        with self._lock:
            ident = threading.get_ident()
            self._in_flight.pop(ident, None)
            if ident in self._interrupted:
                self._interrupted.discard(ident)
                return True
            return False

    def _closed_error(self, method: str, path: str) -> ConsulUnavailable:
        return ConsulUnavailable("the Consul client was closed", operation=method, resource=path)

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = _ssl_context(self.config)
            return self._tls

    def _raise_unless_retry(
        self,
        exc: OSError | http.client.HTTPException,
        may_retry: bool,
        *,
        method: str,
        path: str,
        timeout: float,
    ) -> None:
        """Map a failed request to a locksmith error; return only when it may be retried."""
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


# -- TLS -----------------------------------------------------------------------------------

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


# -- connections that send a request in one write --------------------------------------------


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
