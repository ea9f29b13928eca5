"""locksmith.aio's HTTP transport: every async request to Consul goes through it.

HTTP/1.1 written here (the choice was measured: ``bench/async_http.py``, see
``bench/README.md``): on asyncio over a buffered asyncio protocol, elsewhere (trio) over anyio
byte streams; timeouts and cancellation follow anyio's cancel scopes on both:

* Keep-alive connections in a small pool of at most ``max_connections`` (default 4).
  A blocking query (a read with ``index``) holds its connection for up to minutes, so
  blocking queries may hold at most ``max_connections - 1`` connections between them:
  a short request (a renewal, an acquire) always finds a connection, waiting at most for
  another short request to finish. Waiters are served first come, first served, except
  that a blocking query over its share is passed over for a short request behind it.
* A timeout on every request, covering the wait for a connection, connecting, the TLS
  handshake, sending and receiving: a blocking query gets its wait plus Consul's wait/16
  jitter on top of the normal timeout (:func:`~locksmith._transport.blocking_timeout`),
  as in the sync transport.
* Cancellation is first-class: a request given up on at any point (its task or any
  enclosing cancel scope cancelled, its timeout, :meth:`AsyncTransport.aclose`) never
  returns its connection to the pool: the connection is reset (SO_LINGER 0, so nothing
  of the request still in the kernel reaches Consul later) and its place freed, so the
  next request always starts on a clean connection.
* TLS with the sync transport's context (CA file/dir, client certificate, server name)
  and its error messages; the context is built on the first connection, so constructing a
  transport does no I/O.
* The ACL token travels only in the X-Consul-Token header; no message or repr has it.
* Foreign errors (``OSError``, ``ssl.SSLError``, anyio's stream errors, answers that are
  not HTTP) become :class:`~locksmith.ConsulUnavailable` / :class:`~locksmith.TLSError`
  here, with ``raise ... from exc``.

A transport belongs to one event loop (it is not thread-safe): use it from the loop's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
import urllib.parse
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute

from locksmith._config import ConnectionConfig
from locksmith._exceptions import ConfigurationError, ConsulUnavailable, TLSError
from locksmith._transport import (
    Params,
    RawResponse,
    _check_headers,
    _ssl_context,
    _ssl_reason,
    _wait_of,
    blocking_timeout,
)

__all__ = ["DEFAULT_MAX_CONNECTIONS", "AsyncTransport"]

#: Connections an :class:`AsyncTransport` opens at most, by default.
DEFAULT_MAX_CONNECTIONS = 4
#: The most bytes an answer's status line and headers may take.
_MAX_HEAD = 64 * 1024
_RECEIVE = 65536
_NO_BODY_METHODS = frozenset({"HEAD"})
_BODY_METHODS = frozenset({"PUT", "POST", "DELETE"})
#: Paths and query words that quoting leaves as they are (``quote(safe="/:")``, ``urlencode``).
_PATH_SAFE = re.compile(r"[A-Za-z0-9_.~/:-]*")
_PARAM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


class _NotHTTP(Exception):  # noqa: N818 - internal
    """The peer answered with something that is not an HTTP/1.x response."""


class _Stale(Exception):  # noqa: N818 - internal
    """A kept-alive connection turned out closed before any byte of the answer came."""


#: What a failed exchange with the server raises: mapped to ConsulUnavailable / TLSError.
#: (ssl.SSLError and TimeoutError are OSErrors.)
_NETWORK_ERRORS = (
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    _NotHTTP,
    _Stale,
)


class _Conn:
    """One HTTP/1.1 connection: the bytes received but not yet parsed, and the parser.

    Two kinds: :class:`_AsyncioConn` (an asyncio protocol, on asyncio) and
    :class:`_StreamConn` (an anyio byte stream, on trio and any other backend).
    """

    __slots__ = ("buf", "deadline")

    def __init__(self) -> None:
        self.buf = bytearray()
        #: When the request it carries must be over (asyncio's clock), for the watchdog.
        self.deadline: float | None = None

    async def send(self, data: bytes) -> None:
        """Send bytes (``anyio.BrokenResourceError`` when the peer is gone)."""
        raise NotImplementedError

    async def fill(self) -> None:
        """Receive more bytes into :attr:`buf` (``anyio.EndOfStream`` when the peer closed)."""
        raise NotImplementedError

    def reusable(self) -> bool:
        """Whether an idle connection looks fit for the next request."""
        return not self.buf

    def expire(self) -> None:
        """The request's deadline passed: fail its reads with TimeoutError (kinds that can)."""

    def close_now(self, *, reset: bool) -> bool:
        """Close without awaiting if this kind can (True); ``reset``: SO_LINGER 0."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close, for a kind that cannot close without awaiting."""

    async def read_response(
        self, method: str, fresh_start: bool
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """Read one answer: status, headers (lower-cased names), body and whether the
        connection must be closed after it.

        Raises:
            _Stale: The peer closed before sending anything (``fresh_start``: the buffer was
                empty when the answer was awaited).
            _NotHTTP: The bytes are not an HTTP/1.x answer.
            anyio.EndOfStream: The peer closed in the middle of the answer.
        """
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _NotHTTP("no end of the response head")
                try:
                    await self.fill()
                except anyio.EndOfStream:
                    if fresh_start and not buf:
                        raise _Stale from None
                    raise
                end = buf.find(b"\r\n\r\n")
            head = buf[:end].decode("latin-1")
            del buf[: end + 4]
            fresh_start = False
            status_line, _, rest = head.partition("\r\n")
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise _NotHTTP(repr(status_line[:40]))
            try:
                status = int(parts[1])
            except ValueError:
                raise _NotHTTP(repr(status_line[:40])) from None
            headers: dict[str, str] = {}
            if rest:
                for line in rest.split("\r\n"):
                    name, sep, value = line.partition(":")
                    if not sep:
                        raise _NotHTTP("malformed header line")
                    headers[name.lower()] = value.strip()  # no space may precede the colon
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the real one follows
            break
        conn_hdr = headers.get("connection", "").lower()
        will_close = "close" in conn_hdr or (
            parts[0] == "HTTP/1.0" and "keep-alive" not in conn_hdr
        )
        if method in _NO_BODY_METHODS or status in (204, 304):
            return status, headers, b"", will_close
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, await self._read_chunked(), will_close
        length_text = headers.get("content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise _NotHTTP("bad Content-Length") from None
            if length < 0:
                raise _NotHTTP("bad Content-Length")
            while len(buf) < length:
                await self.fill()
            body = bytes(buf[:length])
            del buf[:length]
            return status, headers, body, will_close
        # No framing: the body runs to the end of the connection.
        while True:
            try:
                await self.fill()
            except anyio.EndOfStream:
                break
        body = bytes(buf)
        buf.clear()
        return status, headers, body, True

    async def _read_line(self) -> bytes:
        buf = self.buf
        while (end := buf.find(b"\r\n")) < 0:
            if len(buf) > _MAX_HEAD:
                raise _NotHTTP("chunk size line too long")
            await self.fill()
        line = bytes(buf[:end])
        del buf[: end + 2]
        return line

    async def _read_chunked(self) -> bytes:
        buf = self.buf
        body = bytearray()
        while True:
            line = await self._read_line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _NotHTTP("bad chunk size") from None
            if size == 0:
                while await self._read_line():
                    pass  # trailers
                return bytes(body)
            while len(buf) < size + 2:
                await self.fill()
            if buf[size : size + 2] != b"\r\n":
                raise _NotHTTP("chunk not followed by CRLF")
            body += buf[:size]
            del buf[: size + 2]


def _set_reset_on_close(sock: Any) -> None:
    """Make closing ``sock`` send a reset (SO_LINGER 0): what the kernel still holds of a
    request given up on is discarded, never delivered to Consul later."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _AsyncioConn(_Conn, asyncio.BufferedProtocol):
    """A connection on asyncio: the protocol itself buffers what arrives.

    Measured (``bench/async_http.py``): anyio's asyncio streams take two more trips through
    the event loop per request (a checkpoint in ``send``, pause/resume of reading around
    each ``receive``) than this; and closing is synchronous here.
    """

    __slots__ = ("eof", "error", "expired", "loop", "scratch", "transport", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        # Received into (a buffered protocol): no 256 KiB bytes object allocated, mapped and
        # shrunk per receive, as asyncio's plain protocols get (three system calls each).
        self.scratch = memoryview(bytearray(_RECEIVE))
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        self.buf += self.scratch[:nbytes]
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # _Conn
    async def send(self, data: bytes) -> None:
        self.write(data)

    def write(self, data: bytes) -> None:
        """:meth:`send` without an await: the transport buffers what the socket does not take."""
        transport = self.transport
        if self.error is not None:
            raise self.error
        if transport is None or self.eof or transport.is_closing():
            raise anyio.BrokenResourceError
        transport.write(data)

    async def fill(self) -> None:
        buf = self.buf
        had = len(buf)
        while len(buf) == had:
            if self.expired:
                raise TimeoutError
            if self.error is not None:
                raise self.error
            if self.eof:
                raise anyio.EndOfStream
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    def reusable(self) -> bool:
        transport = self.transport
        return (
            not self.buf
            and not self.eof
            and self.error is None
            and transport is not None
            and not transport.is_closing()
            and not self.loop.is_closed()  # not left over from a finished asyncio.run
        )

    def close_now(self, *, reset: bool) -> bool:
        transport = self.transport
        if transport is not None:
            if reset:
                _set_reset_on_close(transport.get_extra_info("socket"))
            try:
                transport.abort()
            except RuntimeError:  # its event loop is closed: asyncio can no longer close it
                _close_orphaned(transport)
        return True


def _close_orphaned(transport: asyncio.BaseTransport) -> None:
    """Close the socket of a transport whose event loop is closed (a client that outlived an
    ``asyncio.run``). asyncio has no public way to; without this the socket stays open until
    garbage collection, which then warns. Best effort, on the selector transports' fields."""
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    target = inner if inner is not None else transport
    sock = getattr(target, "_sock", None)
    if isinstance(sock, socket.socket):
        sock.close()
        with contextlib.suppress(AttributeError):
            target._sock = None  # type: ignore[union-attr]


class _StreamConn(_Conn):
    """A connection on an anyio byte stream (plain or TLS), for trio and other backends."""

    __slots__ = ("sock", "stream")

    def __init__(self, stream: ByteStream) -> None:
        super().__init__()
        self.stream = stream
        # anyio's typed attribute (not Django's QuerySet.extra)
        self.sock: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)  # noqa: S610

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def fill(self) -> None:
        self.buf += await self.stream.receive(_RECEIVE)

    def close_now(self, *, reset: bool) -> bool:
        if reset:
            _set_reset_on_close(self.sock)
        return False

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await anyio.aclose_forcefully(self.stream)


class _Waiter:
    """A request waiting for a connection; :attr:`granted` once a place was handed to it."""

    __slots__ = ("blocking", "conn", "event", "granted")

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.event = anyio.Event()
        self.granted = False
        self.conn: _Conn | None = None


class AsyncTransport:
    """Sends requests to Consul on a small pool of keep-alive connections.

    Constructing it does no I/O; the TLS files are loaded when the first connection opens.

    Args:
        config: Resolved connection settings.
        max_connections: The most connections open at once (at least 2: blocking queries
            may hold all of them but one).
    """

    def __init__(
        self, config: ConnectionConfig, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> None:
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 2
        ):
            raise ConfigurationError(
                "max_connections: must be an integer >= 2 (blocking queries may hold all "
                f"connections but one), got {max_connections!r}"
            )
        self.config = config
        self.max_connections = max_connections
        self._idle: list[_Conn] = []  # kept-alive connections, most recently used last
        self._conns: set[_Conn] = set()  # every open connection
        self._slots = 0  # connections open or being opened
        self._blocking = 0  # places held by blocking queries
        self._waiters: deque[_Waiter] = deque()
        self._scopes: set[anyio.CancelScope] = set()  # of requests in flight, for aclose()
        self._closing: set[_Conn] = set()  # dropped, still to be closed with an await
        self._busy: set[_Conn] = set()  # carrying a request
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # see _detect_loop
        self._detected = False
        self._closed = False
        self._tls: ssl.SSLContext | None = None
        self._head: bytes | None = None
        self._host_header = config.address

    def __repr__(self) -> str:
        return f"<AsyncTransport {self.config.url} max_connections={self.max_connections}>"

    @property
    def open_connections(self) -> int:
        """How many HTTP connections this transport holds open right now."""
        return len(self._conns)

    async def aclose(self) -> None:
        """Close every connection and cut short the requests in flight; later requests
        raise :class:`ConsulUnavailable`. Idempotent."""
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()
        for conn in list(self._busy):
            # Reset under the request (asyncio); its task frees the place as it fails.
            conn.close_now(reset=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiters:
            self._waiters.popleft().event.set()
        idle, self._idle = self._idle, []
        for conn in idle:
            self._slots -= 1
            self._conns.discard(conn)
            if not conn.close_now(reset=False):
                await conn.aclose()
        await self._close_dropped()

    # -- the request -------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        blocking: bool | None = None,
    ) -> RawResponse:
        """Send one request and return the answer, any status.

        Args:
            method: ``GET``, ``PUT``, ``DELETE`` or ``POST``.
            path: The API path, e.g. ``/v1/session/create``; quoted here.
            params: Query parameters, in order.
            body: Request body (str is UTF-8 encoded).
            headers: Extra headers; they override the defaults (e.g. a per-call token).
            timeout: Seconds allowed for the whole request, waiting for a connection
                included (default: the configured one, plus the wait and its jitter when
                ``params`` make it a blocking query).
            idempotent: Whether a request that died on a stale keep-alive connection may be
                sent again.
            blocking: Whether it is a blocking query, which may not take the last
                connection (default: whether ``params`` have a non-zero ``index``).

        Raises:
            ConsulUnavailable: No answer (refused, reset, timed out, client closed, not HTTP).
            TLSError: The TLS handshake failed.
            ConfigurationError: The CA or client-certificate files cannot be loaded, or a
                header (the token) cannot be sent.
        """
        if timeout is None and blocking is False:
            timeout = self.config.timeout
        elif timeout is None or blocking is None:
            wait = _wait_of(params)
            if timeout is None:
                timeout = blocking_timeout(self.config.timeout, wait)
            if blocking is None:
                blocking = wait is not None
        timeout = max(timeout, 0.001)
        data = self._encode(method, path, params, body, headers)
        if self._closed:
            raise self._closed_error(method, path)
        loop = self._loop
        if not self._detected or (loop is not None and loop.is_closed()):
            loop = self._detect_loop()
        if loop is not None:
            # On asyncio a watchdog timer enforces the deadline (see _arm) and only waiting
            # for a place or connecting take a cancel scope: a scope per request cost a
            # measurable share of a sub-millisecond request (bench/async_http.py).
            return await self._send(
                data,
                method=method,
                path=path,
                blocking=blocking,
                idempotent=idempotent,
                timeout=timeout,
                deadline=loop.time() + timeout,
            )
        with self._limit(timeout):
            return await self._send(
                data,
                method=method,
                path=path,
                blocking=blocking,
                idempotent=idempotent,
                timeout=timeout,
                deadline=None,
            )
        # Only here when this request's own scope was cancelled: its timeout or aclose().
        if self._closed:
            raise self._closed_error(method, path)
        raise ConsulUnavailable(
            f"Consul at {self.config.address} did not answer within {timeout:.3g}s",
            operation=method,
            resource=path,
        )

    def _detect_loop(self) -> asyncio.AbstractEventLoop | None:
        """The running asyncio loop, or None on trio (or another anyio backend).

        Remembered: on Python 3.11 every ``asyncio.get_running_loop()`` is a ``getpid``
        system call. A client belongs to one event loop; after that loop closed (a later
        ``asyncio.run``), the next request looks again.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._loop, self._detected = loop, True
        return loop

    @contextlib.contextmanager
    def _limit(self, seconds: float) -> Iterator[anyio.CancelScope]:
        """A cancel scope of ``seconds`` that :meth:`aclose` cancels too."""
        with anyio.move_on_after(seconds) as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def _encode(
        self,
        method: str,
        path: str,
        params: Params,
        body: bytes | str | None,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        """The request's bytes: head and body, sent in one write.

        The target is quoted as the sync transport quotes it (``quote(path, safe="/:")``
        and ``urlencode(params)``), skipping the quoting of text that has nothing to quote.
        """
        target = path if _PATH_SAFE.fullmatch(path) else urllib.parse.quote(path, safe="/:")
        if params:
            if all(_PARAM_SAFE.fullmatch(k) and _PARAM_SAFE.fullmatch(v) for k, v in params):
                target += "?" + "&".join([f"{k}={v}" for k, v in params])
            else:
                target += "?" + urllib.parse.urlencode(params)
        payload: bytes | None
        if body is None or body == "":
            payload = b"" if method in _BODY_METHODS else None
        elif isinstance(body, bytes):
            payload = body
        else:
            payload = body.encode("utf-8")
        head = self._head
        if head is None or headers:
            hdrs = {"Host": self._host_header, "Accept": "application/json"}
            if self.config.token:
                hdrs["X-Consul-Token"] = self.config.token
            if headers:
                hdrs.update(headers)
            _check_headers(hdrs)
            try:
                head = "".join([f"{k}: {v}\r\n" for k, v in hdrs.items()]).encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigurationError(
                    "a request header (e.g. the ACL token) has characters HTTP cannot carry "
                    "(value not shown)"
                ) from None
            if not headers:
                self._head = head
        first = f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
        if payload is None:
            return first + head + b"\r\n"
        return b"%s%sContent-Length: %d\r\n\r\n%s" % (first, head, len(payload), payload)

    async def _send(
        self,
        data: bytes,
        *,
        method: str,
        path: str,
        blocking: bool,
        idempotent: bool,
        timeout: float,
        deadline: float | None,
    ) -> RawResponse:
        """Send on a pooled connection; ``deadline`` (asyncio's clock): enforce it here."""
        for attempt in (0, 1):
            try:
                if not self._waiters and not self._closing and self._may_take(blocking):
                    conn = self._take(blocking)  # the usual case: no await
                else:
                    conn = await self._acquire(blocking, method, path, deadline)
            except TimeoutError as exc:
                raise ConsulUnavailable(
                    f"no connection to Consul at {self.config.address} became free within "
                    f"{timeout:.3g}s (max_connections={self.max_connections})",
                    operation=method,
                    resource=path,
                ) from exc
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._connect(deadline)
                else:
                    # Never send what a cancelled scope gave up on: taking from the pool
                    # did not await, so no cancellation could be delivered yet.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                self._busy.add(conn)
                if deadline is not None:
                    self._arm(conn, deadline)
                if isinstance(conn, _AsyncioConn):
                    conn.write(data)
                else:
                    await conn.send(data)
                status, headers, payload, will_close = await conn.read_response(
                    method, not conn.buf
                )
            except BaseException as exc:
                # Whatever stopped it (an error, a cancellation, a timeout), the connection is
                # mid-request: it is never reused. Its place is freed before anything awaits.
                await self._discard(conn, blocking)
                if not isinstance(exc, _NETWORK_ERRORS):
                    raise  # a cancellation, a LocksmithError (TLS files), or a bug: as it is
                if self._closed:
                    raise self._closed_error(method, path) from exc
                stale = isinstance(exc, _Stale) or (
                    isinstance(exc, anyio.BrokenResourceError | BrokenPipeError)
                    and not isinstance(exc.__cause__, ssl.SSLError)
                )
                if stale and reused and attempt == 0 and idempotent:
                    continue  # a kept-alive connection the server closed while idle
                raise self._error(exc, method, path, timeout) from exc
            if will_close or conn.buf or self._closed:
                # The server ends the connection (or sent more than the answer): not reusable.
                await self._discard(conn, blocking, reset=False)
            else:
                self._release(conn, blocking)
            return RawResponse(status=status, headers=headers, body=payload)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- deadlines on asyncio ----------------------------------------------------------------
    def _arm(self, conn: _Conn, deadline: float) -> None:
        """Enforce ``deadline`` on the request ``conn`` carries.

        One watchdog timer per transport, due at the earliest deadline of the requests in
        flight, instead of a timer per request (arming and cancelling one cost ~5 us a
        request): with one timeout for all, deadlines only grow, so the watchdog is rarely
        moved; when it fires it expires the overdue requests and is set for the next.
        """
        conn.deadline = deadline
        if isinstance(conn, _AsyncioConn):
            conn.expired = False
            watchdog = self._watchdog
            if (
                watchdog is None
                or watchdog.when() > deadline
                or self._watchdog_loop is not conn.loop
            ):
                if watchdog is not None:
                    watchdog.cancel()
                self._watchdog_loop = conn.loop
                self._watchdog = conn.loop.call_at(deadline, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        loop = self._watchdog_loop
        if loop is None:
            return
        now = loop.time()
        nearest: float | None = None
        for conn in list(self._busy):
            deadline = conn.deadline
            if deadline is None:
                continue
            if deadline <= now:
                conn.deadline = None
                conn.expire()
            elif nearest is None or deadline < nearest:
                nearest = deadline
        if nearest is not None:
            self._watchdog = loop.call_at(nearest, self._on_watchdog)

    # -- the pool ---------------------------------------------------------------------------
    def _may_take(self, blocking: bool) -> bool:
        if blocking and self._blocking >= self.max_connections - 1:
            return False
        return bool(self._idle) or self._slots < self.max_connections

    def _take(self, blocking: bool) -> _Conn | None:
        """Take a place: an idle connection, or None for a connection to open."""
        if blocking:
            self._blocking += 1
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            # Closed by the server while idle (or garbage arrived): drop it, open another.
            self._conns.discard(conn)
            if not conn.close_now(reset=False):
                self._closing.add(conn)
            self._slots -= 1
        self._slots += 1
        return None

    async def _acquire(
        self, blocking: bool, method: str, path: str, deadline: float | None
    ) -> _Conn | None:
        """A place in the pool: an idle connection, or None for one to open.

        Raises:
            TimeoutError: ``deadline`` passed before a place was free.
            ConsulUnavailable: The transport is (or was meanwhile) closed.
        """
        if self._closing:
            await self._close_dropped()
        if self._closed:
            raise self._closed_error(method, path)
        if not self._waiters and self._may_take(blocking):
            return self._take(blocking)
        waiter = _Waiter(blocking)
        self._waiters.append(waiter)
        self._dispatch()  # a place may be free for this one (those ahead wait for another kind)
        if waiter.granted:
            return waiter.conn
        try:
            if deadline is None:
                await waiter.event.wait()
            else:
                with self._limit(deadline - anyio.current_time()):
                    await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                # Handed a place, but cancelled before using it: an idle connection that was
                # never touched goes back to the pool; a place to open one is freed.
                await self._discard(waiter.conn, blocking, keep=True)
            else:
                self._waiters.remove(waiter)
            raise
        if not waiter.granted:
            if self._closed:  # woken (or cancelled) by aclose()
                raise self._closed_error(method, path)
            self._waiters.remove(waiter)
            raise TimeoutError
        return waiter.conn

    def _dispatch(self) -> None:
        """Hand freed places to the waiters that may take them, oldest first."""
        if not self._waiters:
            return
        for waiter in list(self._waiters):
            if self._may_take(waiter.blocking):
                self._waiters.remove(waiter)
                waiter.conn = self._take(waiter.blocking)
                waiter.granted = True
                waiter.event.set()
            elif not self._idle and self._slots >= self.max_connections:
                return  # no place left for anyone

    def _release(self, conn: _Conn, blocking: bool) -> None:
        """Give a connection back to the pool after a complete answer.

        Synchronous, so not a cancellation point: an answer that was read in full is
        returned whatever happens to the caller next.
        """
        conn.deadline = None
        self._busy.discard(conn)
        if blocking:
            self._blocking -= 1
        self._idle.append(conn)
        self._dispatch()

    async def _discard(
        self, conn: _Conn | None, blocking: bool, *, keep: bool = False, reset: bool = True
    ) -> None:
        """Free a place and close its connection (if any); ``reset``: with SO_LINGER 0.

        The place is freed before the first await, so a cancellation cannot lose it. With
        ``keep``, a connection that was never used (an idle one handed to a waiter that was
        cancelled before using it) goes back to the pool instead.
        """
        if blocking:
            self._blocking -= 1
        if keep and conn is not None and not self._closed:
            self._idle.append(conn)
            self._dispatch()
            return
        self._slots -= 1
        self._dispatch()
        if conn is not None:
            conn.deadline = None
            self._busy.discard(conn)
            self._conns.discard(conn)
            if not conn.close_now(reset=reset):
                await conn.aclose()

    async def _close_dropped(self) -> None:
        """Close the stream connections dropped where no await was possible."""
        while self._closing:
            await self._closing.pop().aclose()

    async def _connect(self, deadline: float | None) -> _Conn:
        """Open a connection (asyncio: within ``deadline``, else TimeoutError)."""
        cfg = self.config
        tls: ssl.SSLContext | None = None
        if cfg.scheme == "https":
            if self._tls is None:
                self._tls = _ssl_context(cfg)
            tls = self._tls
        server_name = cfg.tls_server_name or cfg.host
        conn: _Conn
        if deadline is not None:
            loop = self._loop
            assert loop is not None  # a deadline is only given on asyncio
            aconn = _AsyncioConn(loop)
            with self._limit(deadline - loop.time()) as scope:
                await loop.create_connection(
                    lambda: aconn,
                    cfg.host,
                    cfg.port,
                    ssl=tls,
                    server_hostname=server_name if tls is not None else None,
                )
            if scope.cancelled_caught:
                aconn.close_now(reset=True)
                if self._closed:
                    raise self._closed_error("CONNECT", "")
                raise TimeoutError
            conn = aconn
        elif tls is not None:
            conn = _StreamConn(
                await anyio.connect_tcp(
                    cfg.host,
                    cfg.port,
                    ssl_context=tls,
                    tls_hostname=server_name,
                    tls_standard_compatible=False,
                )
            )
        else:
            conn = _StreamConn(await anyio.connect_tcp(cfg.host, cfg.port))
        self._conns.add(conn)
        return conn

    # -- errors -----------------------------------------------------------------------------
    def _closed_error(self, method: str, path: str) -> ConsulUnavailable:
        return ConsulUnavailable("the Consul client was closed", operation=method, resource=path)

    def _error(self, exc: Exception, method: str, path: str, timeout: float) -> ConsulUnavailable:
        """The locksmith error for a failed request."""
        where = self.config.address
        kwargs: dict[str, Any] = {"operation": method, "resource": path}
        ssl_exc = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
        if isinstance(ssl_exc, ssl.SSLError) and not isinstance(ssl_exc, ssl.SSLEOFError):
            return TLSError(
                f"TLS with Consul at {where} failed: {_ssl_reason(ssl_exc, self.config)}",
                **kwargs,
            )
        if isinstance(exc, _NotHTTP):
            return ConsulUnavailable(
                f"{where} did not answer with HTTP (is it Consul's HTTP port, and is the "
                f"scheme {self.config.scheme!r} right?)",
                **kwargs,
            )
        if isinstance(exc, TimeoutError):
            return ConsulUnavailable(
                f"Consul at {where} did not answer within {timeout:.3g}s", **kwargs
            )
        if isinstance(
            exc,
            _Stale
            | anyio.EndOfStream
            | anyio.BrokenResourceError
            | anyio.ClosedResourceError
            | ConnectionResetError
            | BrokenPipeError
            | ssl.SSLEOFError,
        ):
            detail = f": {exc.__cause__}" if exc.__cause__ is not None else ""
            return ConsulUnavailable(
                f"connection to Consul at {where} was closed{detail}", **kwargs
            )
        return ConsulUnavailable(f"cannot reach Consul at {where}: {exc}", **kwargs)
