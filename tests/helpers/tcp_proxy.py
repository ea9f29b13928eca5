"""A loopback TCP proxy that a test can blackhole: the agent looks unreachable, not refused.

While blackholed, bytes from clients are read and dropped and nothing comes back, so a
request hangs until its timeout (like a partition). :meth:`TcpProxy.restore` closes the
blackholed client connections (clients reconnect) and forwards again.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["TcpProxy"]


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.blackholed = upstream is None

    def cut(self) -> None:
        """Blackhole: drop the upstream side, keep the client hanging."""
        self.blackholed = True
        up, self.upstream = self.upstream, None
        if up is not None:
            with contextlib.suppress(OSError):
                up.shutdown(socket.SHUT_RDWR)
            up.close()

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_RDWR)
        self.client.close()


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``upstream`` ("host:port") until blackholed.

    Args:
        upstream: The agent's HTTP address.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self.addr = f"127.0.0.1:{self._srv.getsockname()[1]}"
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._blackholed = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def blackhole(self) -> None:
        """From now on, nothing gets through and nothing comes back (requests hang)."""
        with self._lock:
            self._blackholed = True
            pairs = list(self._pairs)
        for p in pairs:
            p.cut()

    def restore(self) -> None:
        """Forward again; hung client connections are closed so that clients reconnect."""
        with self._lock:
            self._blackholed = False
            hung = [p for p in self._pairs if p.blackholed]
            self._pairs = [p for p in self._pairs if not p.blackholed]
        for p in hung:
            p.close()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        with self._lock:
            self._closed = True
            pairs, self._pairs = self._pairs, []
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()
        for p in pairs:
            p.close()
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    client.close()
                    return
                blackholed = self._blackholed
            upstream = None
            if not blackholed:
                try:
                    upstream = socket.create_connection(self._upstream, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._client_to_upstream, args=(pair,), daemon=True).start()
            if upstream is not None:
                threading.Thread(
                    target=self._upstream_to_client, args=(pair, upstream), daemon=True
                ).start()

    @staticmethod
    def _client_to_upstream(pair: _Pair) -> None:
        while True:
            try:
                data = pair.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                pair.close()
                return
            up = pair.upstream
            if pair.blackholed or up is None:
                continue  # dropped on the floor
            try:
                up.sendall(data)
            except OSError:
                if not pair.blackholed:
                    pair.close()
                    return

    @staticmethod
    def _upstream_to_client(pair: _Pair, upstream: socket.socket) -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data or pair.blackholed:
                if not pair.blackholed:
                    pair.close()
                return
            try:
                pair.client.sendall(data)
            except OSError:
                pair.close()
                return
