"""A loopback TCP proxy that fault tests put between a client and its Consul agent.

:class:`FaultProxy` listens on ``127.0.0.1:<free port>`` and forwards every connection to an
upstream ``host:port``. Its mode can be switched at any time:

* ``pass``: forward bytes both ways;
* ``blackhole``: accept and keep connections but forward nothing either way (requests hang
  until the client's timeout, like a network partition; no RST, no FIN);
* ``delay``: forward, but hold every chunk for ``delay`` seconds first (each direction keeps
  its order); optionally only one direction (``up``: requests; ``down``: answers — a request
  then reaches Consul at once and only its answer is late). With ``deliver_abandoned``, a
  request whose client gave up (closed or reset its connection) is still delivered when its
  delay is over, on a connection of its own: what a Consul server without a leader does with
  the writes it holds for ``rpc_hold_timeout``;
* ``reset``: reset (RST) every existing connection and every new one;
* ``drop_new``: refuse new connections (the listener is closed: connection refused);
  existing connections keep forwarding;
* ``answer``: answer every request itself with a canned HTTP response (a status and a body,
  e.g. a 500 or a 400, or bytes that are not HTTP) and close the connection; nothing reaches
  the upstream.

It counts connections and requests (chunks sent by clients that start an HTTP request line),
and everything it starts (one acceptor thread, two pump threads per connection) is stopped by
:meth:`FaultProxy.stop`.

Example:
    >>> with FaultProxy("127.0.0.1:8500") as proxy:  # doctest: +SKIP
    ...     client = Consul(proxy.addr)
    ...     proxy.blackhole()
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

__all__ = ["FaultProxy", "ProxyMode", "ProxyStats"]

ProxyMode = Literal["pass", "blackhole", "delay", "reset", "drop_new", "answer"]

_MODES: tuple[ProxyMode, ...] = ("pass", "blackhole", "delay", "reset", "drop_new", "answer")
_CHUNK = 65536
_POLL = 0.05
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(?:GET|PUT|POST|DELETE|HEAD|PATCH|OPTIONS) /")


@dataclass(frozen=True)
class ProxyStats:
    """Counters of a :class:`FaultProxy` (a snapshot).

    Attributes:
        connections: Client connections accepted (including ones reset at once).
        active: Connections open right now.
        requests: HTTP request lines seen from clients (forwarded or not).
        forwarded_requests: Request lines actually forwarded upstream.
        resets: Connections the proxy reset.
        bytes_up: Bytes forwarded client → upstream.
        bytes_down: Bytes forwarded upstream → client.
    """

    connections: int
    active: int
    requests: int
    forwarded_requests: int
    resets: int
    bytes_up: int
    bytes_down: int


def _rst(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0) instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    """One proxied connection: a client socket, an upstream socket, two pump threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, ident: int) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.ident = ident
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self._close_mu = threading.Lock()
        self._eofs = 0
        self._done = False

    def start(self) -> None:
        t = threading.Thread(target=self._run, name=f"fault-proxy-conn-{self.ident}", daemon=True)
        self.threads.append(t)
        t.start()

    def _run(self) -> None:
        proxy = self.proxy
        try:
            self.upstream = socket.create_connection(proxy.upstream, timeout=5.0)
            self.upstream.settimeout(None)
        except OSError:
            self.close(reset=True)
            return
        if self.closed.is_set():  # closed while connecting
            _close(self.upstream)
            return
        down = threading.Thread(
            target=self._pump,
            args=(self.upstream, self.client, False),
            name=f"fault-proxy-down-{self.ident}",
            daemon=True,
        )
        self.threads.append(down)
        down.start()
        self._pump(self.client, self.upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        """Copy ``src`` → ``dst`` honouring the proxy's mode until either side closes."""
        proxy = self.proxy
        pending: list[tuple[float, int, bytes]] = []  # (due, seq, data) for delay mode
        seq = itertools.count()
        eof = False
        try:
            while not self.closed.is_set():
                timeout = _POLL
                if pending:
                    timeout = max(0.0, min(_POLL, pending[0][0] - time.monotonic()))
                try:
                    readable, _, _ = select.select([src], [], [], timeout)
                except (OSError, ValueError):
                    return
                if readable:
                    try:
                        data = src.recv(_CHUNK)
                    except OSError:
                        return
                    if not data:
                        # Half-close: pass the FIN on once everything before it is sent;
                        # the connection closes when the other direction ends too.
                        self._flush(pending, dst, upstream, force=True)
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        eof = True
                        return
                    mode, delay = proxy._mode_snapshot()
                    requests = len(_REQUEST_LINE.findall(data)) if upstream else 0
                    proxy._count_requests(requests)
                    if mode == "blackhole":
                        continue  # swallowed: nothing reaches the other side
                    if mode == "reset":
                        return
                    if mode == "answer" and upstream:
                        with contextlib.suppress(OSError):
                            src.sendall(proxy._canned())
                        return  # the answer says Connection: close
                    if mode == "delay" and delay > 0 and proxy._delays(upstream):
                        heapq.heappush(pending, (time.monotonic() + delay, next(seq), data))
                    else:
                        self._flush(pending, dst, upstream, force=True)
                        self._send(dst, data, upstream, requests)
                self._flush(pending, dst, upstream, force=False)
        finally:
            if upstream:
                proxy._abandoned(pending)  # requests still held when the client gave up
            with self._close_mu:
                self._eofs += int(eof)
                both_done = self._eofs >= 2
            if not eof or both_done:
                self.close(reset=proxy._mode_snapshot()[0] == "reset")

    def _flush(
        self,
        pending: list[tuple[float, int, bytes]],
        dst: socket.socket,
        upstream: bool,
        *,
        force: bool,
    ) -> None:
        now = time.monotonic()
        while pending and (force or pending[0][0] <= now):
            if force and pending[0][0] > now:
                # Keep order: wait for the head's due time (interruptible by close).
                if self.closed.wait(pending[0][0] - now):
                    return
                now = time.monotonic()
            _, _, data = heapq.heappop(pending)
            mode = self.proxy._mode_snapshot()[0]
            if mode == "blackhole":
                continue
            reqs = len(_REQUEST_LINE.findall(data)) if upstream else 0
            self._send(dst, data, upstream, reqs)

    def _send(self, dst: socket.socket, data: bytes, upstream: bool, requests: int) -> None:
        try:
            dst.sendall(data)
        except OSError:
            self.closed.set()
            return
        self.proxy._count_bytes(len(data), upstream, requests)

    def close(self, *, reset: bool = False) -> None:
        with self._close_mu:
            if self._done:
                return
            self._done = True
            self.closed.set()
            if reset:
                _rst(self.client)
                if self.upstream is not None:
                    _rst(self.upstream)
            else:
                _close(self.client)
                _close(self.upstream)
        self.proxy._forget(self)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout: float) -> None:
        for t in list(self.threads):
            if t is not threading.current_thread():
                t.join(timeout)


class FaultProxy:
    """A TCP proxy between a client and an upstream (a Consul agent) that can inject faults.

    Args:
        upstream: ``"host:port"`` (or a ``(host, port)`` tuple) to forward to.
        listen_host: Address to listen on.
        port: Port to listen on (0: a free one, kept across ``drop_new``).

    Thread-safe: the mode may be switched from any thread while traffic flows.
    """

    def __init__(
        self,
        upstream: str | tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if isinstance(upstream, str):
            host, sep, port_s = upstream.rpartition(":")
            if not sep or not host or not port_s.isdigit():
                raise ValueError(f"upstream must be 'host:port', got {upstream!r}")
            self.upstream: tuple[str, int] = (host, int(port_s))
        else:
            self.upstream = (str(upstream[0]), int(upstream[1]))
        self.listen_host = listen_host
        self._port = port
        self._mu = threading.Lock()
        self._mode: ProxyMode = "pass"
        self._delay = 0.0
        self._delay_dirs = "both"
        self._deliver_abandoned = False
        self._late: list[threading.Thread] = []
        self._canned_bytes = b"HTTP/1.1 500 Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        self._conns: set[_Conn] = set()
        self._all_conns: list[_Conn] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._listener_closed = threading.Event()
        self._ids = itertools.count(1)
        self._connections = 0
        self._requests = 0
        self._forwarded_requests = 0
        self._resets = 0
        self._bytes_up = 0
        self._bytes_down = 0

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The listening port (known after :meth:`start`)."""
        return self._port

    @property
    def addr(self) -> str:
        """``"host:port"`` clients should connect to."""
        return f"{self.listen_host}:{self._port}"

    @property
    def mode(self) -> ProxyMode:
        """The current mode."""
        return self._mode

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind the listener and start accepting (idempotent)."""
        if self._acceptor is not None:
            return self
        self._stopping.clear()
        self._open_listener()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"fault-proxy-accept-{self._port}", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; join every thread (idempotent)."""
        self._stopping.set()
        self._close_listener()
        if self._acceptor is not None and self._acceptor is not threading.current_thread():
            self._acceptor.join(timeout)
        self._acceptor = None
        with self._mu:
            conns = list(self._all_conns)
        for c in conns:
            c.close()
        for c in conns:
            c.join(timeout)
        with self._mu:
            late, self._late = self._late, []
        for t in late:
            t.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.addr} -> {self.upstream[0]}:{self.upstream[1]} {self._mode}>"

    def threads_alive(self) -> int:
        """How many of the proxy's threads are still running (0 after :meth:`stop`)."""
        with self._mu:
            conns = list(self._all_conns)
        alive = sum(1 for c in conns for t in c.threads if t.is_alive())
        if self._acceptor is not None and self._acceptor.is_alive():
            alive += 1
        return alive

    # ------------------------------------------------------------------ modes

    def set_mode(self, mode: ProxyMode, delay: float = 0.0) -> None:
        """Switch the mode (see the module docstring).

        Args:
            mode: ``pass``, ``blackhole``, ``delay``, ``reset`` or ``drop_new``.
            delay: Seconds each chunk is held in ``delay`` mode.
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode == "delay" and not delay > 0:
            raise ValueError(f"delay mode needs a delay > 0, got {delay!r}")
        with self._mu:
            previous = self._mode
            self._mode = mode
            self._delay = float(delay) if mode == "delay" else 0.0
            conns = list(self._conns)
        if mode == "reset":
            for c in conns:
                self._count_reset()
                c.close(reset=True)
        if mode == "drop_new":
            self._close_listener()
        elif previous == "drop_new" and not self._stopping.is_set() and self._acceptor is not None:
            self._open_listener()

    def pass_through(self) -> None:
        """Forward normally again."""
        self.set_mode("pass")

    def heal(self) -> None:
        """Alias of :meth:`pass_through`."""
        self.set_mode("pass")

    def blackhole(self) -> None:
        """Accept and keep connections, forward nothing (requests hang)."""
        self.set_mode("blackhole")

    def delay(
        self,
        seconds: float,
        direction: Literal["both", "up", "down"] = "both",
        *,
        deliver_abandoned: bool = False,
    ) -> None:
        """Forward every chunk ``seconds`` late (``up``: only requests, ``down``: only answers).

        Args:
            seconds: The delay.
            direction: Which direction is delayed.
            deliver_abandoned: Deliver a delayed request even if its client gave up on it
                meanwhile (on a fresh upstream connection, its answer discarded), as a
                Consul server without a leader carries out the writes it held.
        """
        if direction not in ("both", "up", "down"):
            raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
        with self._mu:
            self._delay_dirs = direction
            self._deliver_abandoned = deliver_abandoned
        self.set_mode("delay", seconds)

    def _abandoned(self, pending: list[tuple[float, int, bytes]]) -> None:
        """A connection closed with requests still held: deliver them later if asked to."""
        with self._mu:
            if not (self._deliver_abandoned and pending) or self._stopping.is_set():
                return
            late = threading.Thread(target=self._deliver_late, args=(sorted(pending),), daemon=True)
            self._late.append(late)
        late.start()

    def _deliver_late(self, pending: list[tuple[float, int, bytes]]) -> None:
        with contextlib.suppress(OSError):
            sock = socket.create_connection(self.upstream, timeout=5.0)
            with sock:
                for due, _seq, data in pending:
                    if self._stopping.wait(max(0.0, due - time.monotonic())):
                        return
                    sock.sendall(data)
                    self._count_bytes(len(data), True, len(_REQUEST_LINE.findall(data)))
                sock.settimeout(2.0)
                with contextlib.suppress(OSError):
                    sock.recv(_CHUNK)  # its answer: nobody waits for it

    def _delays(self, upstream: bool) -> bool:
        with self._mu:
            dirs = self._delay_dirs
        return dirs == "both" or (dirs == "up") == upstream

    def reset(self) -> None:
        """RST every open connection and every new one."""
        self.set_mode("reset")

    def drop_new(self) -> None:
        """Refuse new connections (connection refused); open ones keep working."""
        self.set_mode("drop_new")

    def answer(self, status: int, body: bytes = b"", *, raw: bytes | None = None) -> None:
        """Answer every request with HTTP ``status`` and ``body`` (or the bytes ``raw``,
        which need not be HTTP at all), closing each connection after its answer."""
        with self._mu:
            if raw is not None:
                self._canned_bytes = raw
            else:
                head = (
                    f"HTTP/1.1 {status} Fault\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                self._canned_bytes = head.encode() + body
        self.set_mode("answer")

    def _canned(self) -> bytes:
        with self._mu:
            return self._canned_bytes

    def reset_connections(self) -> int:
        """RST the open connections once, without changing the mode. Returns how many."""
        with self._mu:
            conns = list(self._conns)
        for c in conns:
            self._count_reset()
            c.close(reset=True)
        return len(conns)

    # ------------------------------------------------------------------ counters

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        with self._mu:
            return ProxyStats(
                connections=self._connections,
                active=len(self._conns),
                requests=self._requests,
                forwarded_requests=self._forwarded_requests,
                resets=self._resets,
                bytes_up=self._bytes_up,
                bytes_down=self._bytes_down,
            )

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        return self.stats.connections

    @property
    def requests(self) -> int:
        """HTTP requests seen from clients so far."""
        return self.stats.requests

    # ------------------------------------------------------------------ internals

    def _mode_snapshot(self) -> tuple[ProxyMode, float]:
        with self._mu:
            return self._mode, self._delay

    def _count_requests(self, n: int) -> None:
        if n:
            with self._mu:
                self._requests += n

    def _count_bytes(self, n: int, upstream: bool, requests: int) -> None:
        with self._mu:
            if upstream:
                self._bytes_up += n
                self._forwarded_requests += requests
            else:
                self._bytes_down += n

    def _count_reset(self) -> None:
        with self._mu:
            self._resets += 1

    def _forget(self, conn: _Conn) -> None:
        with self._mu:
            self._conns.discard(conn)

    def _open_listener(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.listen_host, self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        with self._mu:
            self._listener = sock
            self._listener_closed.clear()

    def _close_listener(self) -> None:
        with self._mu:
            sock, self._listener = self._listener, None
        if sock is not None:
            self._listener_closed.set()
            # shutdown() stops a Linux listener at once, even while the acceptor is still
            # in select() on it (a bare close() would keep it listening until then).
            _close(sock)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._mu:
                sock = self._listener
            if sock is None:
                self._stopping.wait(_POLL)  # drop_new: no listener until the mode changes
                continue
            try:
                readable, _, _ = select.select([sock], [], [], _POLL)
            except (OSError, ValueError):
                continue  # closed under us (drop_new or stop)
            if not readable:
                continue
            try:
                client, _ = sock.accept()
            except OSError:
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._mu:
                self._connections += 1
                mode = self._mode
            if mode == "reset" or self._stopping.is_set():
                self._count_reset()
                _rst(client)
                continue
            conn = _Conn(self, client, next(self._ids))
            with self._mu:
                self._conns.add(conn)
                # Forget finished connections so that a long soak run does not grow this.
                self._all_conns = [c for c in self._all_conns if not c.closed.is_set() or c.alive()]
                self._all_conns.append(conn)
            conn.start()
