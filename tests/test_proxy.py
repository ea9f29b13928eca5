"""FaultProxy: the suite's own TCP proxy between a client and its Consul agent."""

from __future__ import annotations

import errno
import http.client
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from locksmith import Consul, ConsulUnavailable
from locksmith.testing._proxy import FaultProxy


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def _get(conn: http.client.HTTPConnection, path: str = "/v1/status/leader") -> tuple[int, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.fixture
def proxy(consul_addr: str) -> Iterator[FaultProxy]:
    with FaultProxy(consul_addr) as p:
        yield p
    assert p.threads_alive() == 0


def test_pass_forwards_and_counts(proxy: FaultProxy) -> None:
    host, port = _split(proxy.addr)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for _ in range(3):
            status, body = _get(conn)
            assert status == 200
            assert json.loads(body)  # the leader's address
    finally:
        conn.close()
    stats = proxy.stats
    assert stats.connections == 1  # keep-alive: three requests on one connection
    assert stats.requests == 3
    assert stats.forwarded_requests == 3
    assert stats.bytes_down > 0


def test_locksmith_client_through_proxy(proxy: FaultProxy) -> None:
    with Consul(proxy.addr, timeout=5) as c:
        assert c.leader()
        sid = c.sessions.create(name="proxy-test", ttl="10s")
        c.sessions.destroy(sid)
    assert proxy.stats.requests >= 3


def test_blackhole_hangs_requests_until_healed(proxy: FaultProxy) -> None:
    host, port = _split(proxy.addr)
    proxy.blackhole()
    conn = http.client.HTTPConnection(host, port, timeout=0.5)
    with pytest.raises(TimeoutError):
        _get(conn)  # accepted, never answered: no RST, no FIN
    conn.close()
    assert proxy.stats.requests == 1
    assert proxy.stats.forwarded_requests == 0
    proxy.heal()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        assert _get(conn)[0] == 200
    finally:
        conn.close()


def test_blackhole_makes_locksmith_raise_unavailable(proxy: FaultProxy) -> None:
    with Consul(proxy.addr, timeout=0.5) as c:
        assert c.leader()
        proxy.blackhole()
        with pytest.raises(ConsulUnavailable):
            c.sessions.list()
        proxy.heal()
        assert isinstance(c.sessions.list(), list)


def test_delay_holds_every_chunk(proxy: FaultProxy) -> None:
    host, port = _split(proxy.addr)
    proxy.delay(2.0)
    short = http.client.HTTPConnection(host, port, timeout=0.2)
    with pytest.raises(TimeoutError):
        _get(short)
    short.close()
    patient = http.client.HTTPConnection(host, port, timeout=60)
    try:
        assert _get(patient)[0] == 200  # late, but complete and in order
        proxy.heal()
        assert _get(patient)[0] == 200
    finally:
        patient.close()


def test_reset_kills_open_and_new_connections(proxy: FaultProxy) -> None:
    host, port = _split(proxy.addr)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    assert _get(conn)[0] == 200
    proxy.reset()
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        _get(conn)
    conn.close()
    # The RST comes on connect or on the first read (loopback is fast).
    with pytest.raises(ConnectionResetError), socket.create_connection((host, port), 10) as s:
        s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b"", "a new connection in reset mode must get no answer"
    assert proxy.stats.resets >= 2
    proxy.heal()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        assert _get(conn)[0] == 200
    finally:
        conn.close()


def test_drop_new_refuses_but_keeps_open_connections(proxy: FaultProxy) -> None:
    host, port = _split(proxy.addr)
    kept = http.client.HTTPConnection(host, port, timeout=10)
    try:
        assert _get(kept)[0] == 200
        proxy.drop_new()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()
        assert _get(kept)[0] == 200  # the open connection still forwards
        proxy.heal()
        assert proxy.port == port
        fresh = http.client.HTTPConnection(host, port, timeout=10)
        try:
            assert _get(fresh)[0] == 200
        finally:
            fresh.close()
    finally:
        kept.close()


def test_stop_closes_everything_and_joins_threads(consul_addr: str) -> None:
    p = FaultProxy(consul_addr).start()
    host, port = _split(p.addr)
    conns = [http.client.HTTPConnection(host, port, timeout=10) for _ in range(3)]
    for c in conns:
        assert _get(c)[0] == 200
    p.blackhole()
    hung = http.client.HTTPConnection(host, port, timeout=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _get(hung)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    p.stop()
    t.join(30)
    assert not t.is_alive()
    assert errors, "a request hung in the blackhole must end when the proxy stops"
    assert p.threads_alive() == 0
    with pytest.raises(OSError) as info:
        socket.create_connection((host, port), timeout=5).close()
    assert info.value.errno == errno.ECONNREFUSED
    for c in conns:
        c.close()
    hung.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="host:port"):
        FaultProxy("nonsense")
    p = FaultProxy("127.0.0.1:1")
    with pytest.raises(ValueError, match="mode"):
        p.set_mode("sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        p.set_mode("delay", 0)


def test_unreachable_upstream_resets_clients() -> None:
    # Port 1 on loopback: nothing listens, the upstream connect is refused.
    with FaultProxy("127.0.0.1:1") as p:
        host, port = _split(p.addr)
        conn = http.client.HTTPConnection(host, port, timeout=10)
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            _get(conn)
        conn.close()
    assert p.threads_alive() == 0
