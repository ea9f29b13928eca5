"""The transport: error mapping, timeouts, TLS, token hygiene and the python-consul2 seam.

Error mapping is tested against tiny HTTP servers of our own on 127.0.0.1 (answering
garbage, 403, 500, closing, hanging): a test of how *our* transport handles such answers,
not a stand-in for Consul's semantics, which the other modules test on a real agent.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import unique

from locksmith._client import Consul
from locksmith._config import ConnectionConfig
from locksmith._exceptions import (
    ACLNotFound,
    BadRequest,
    ConfigurationError,
    ConsulError,
    ConsulUnavailable,
    LocksmithError,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    TLSError,
)

SECRET = "5e3b1c7d-token-that-must-never-leak-8f2a"
SID = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"

# -- a tiny HTTP server of our own --------------------------------------------------------------


@dataclass
class Seen:
    """One request as the fake server received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[socket.socket, "FakeServer"], None]


@dataclass
class FakeServer:
    """A loopback TCP server running ``handler`` for every connection (optionally TLS)."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> Seen | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += conn.recv(65536)
        seen = Seen(method, target, headers, body)
        self.seen.append(seen)
        return seen

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


def respond(
    status: int, body: bytes | str, *, headers: dict[str, str] | None = None, keep: bool = True
) -> Handler:
    """A handler answering every request on the connection with one canned response."""
    payload = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if not keep:
        lines.append("Connection: close")
    answer = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    def handle(conn: socket.socket, server: FakeServer) -> None:
        while server.read_request(conn) is not None:
            conn.sendall(answer)
            if not keep:
                return

    return handle


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> FakeServer:
        server = FakeServer(handler, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _client(addr: str, **kwargs: Any) -> Consul:
    kwargs.setdefault("timeout", 5.0)
    return Consul(addr, **kwargs)


# -- HTTP answers mapped to the error tree ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (403, "Permission denied", PermissionDenied),
        (403, "ACL not found", ACLNotFound),
        (500, "No cluster leader", ConsulUnavailable),
        (500, "rpc error making call: stream closed", ConsulUnavailable),
        (
            500,
            "rpc error getting client: failed to get conn: dial tcp: connection refused",
            ConsulUnavailable,
        ),
        (503, "Service Unavailable", ConsulUnavailable),
        (502, "", ConsulUnavailable),
        (429, "Your IP is issuing too many concurrent connections", ConsulUnavailable),
        (500, "Invalid Session TTL '9000000000', must be between [10s=24h0m0s]", BadRequest),
        (500, "Missing node registration", BadRequest),
        # Seen on a 3-server cluster during a leader change (the fault soak): transient.
        (500, "node is not the leader", ConsulUnavailable),
        (500, "something new and unknown", ConsulUnavailable),
        (500, "Missing check 'x' registration", BadRequest),
        (400, "Request decode failed: bad", BadRequest),
        (404, "Session id 'x' not found", SessionNotFound),
        (418, "teapot", ConsulError),
    ],
)
def test_http_errors_are_mapped(
    serve: Callable[..., FakeServer], status: int, body: str, error: type[ConsulError]
) -> None:
    server = serve(respond(status, body))
    with _client(server.addr, token=SECRET) as consul, pytest.raises(error) as info:
        consul.sessions.renew(SID)
    exc = info.value
    assert type(exc) is error
    assert (exc.status, exc.body) == (status, body)
    assert (exc.operation, exc.resource) == ("session.renew", SID)
    assert str(exc).startswith(f"session.renew {SID}")
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc.args)


def test_permission_denied_names_operation_and_resource(
    serve: Callable[..., FakeServer],
) -> None:
    server = serve(respond(403, "Permission denied"))
    with _client(server.addr) as consul, pytest.raises(PermissionDenied) as info:
        consul.kv.put("app/leader", b"x")
    assert "kv.put app/leader" in str(info.value)
    assert "permission denied" in str(info.value)
    assert not isinstance(info.value, ACLNotFound)


def test_acl_not_found_is_a_permission_denied(serve: Callable[..., FakeServer]) -> None:
    server = serve(respond(403, "ACL not found"))
    with _client(server.addr) as consul, pytest.raises(PermissionDenied) as info:
        consul.sessions.create(name="x")
    assert isinstance(info.value, ACLNotFound)
    assert "session.create" in str(info.value)


@pytest.mark.parametrize("body", ["<html>not json</html>", '{"unexpected": "object"}', "[{}]"])
def test_unexpected_success_bodies_are_protocol_errors(
    serve: Callable[..., FakeServer], body: str
) -> None:
    server = serve(respond(200, body))
    with _client(server.addr) as consul, pytest.raises(ProtocolError):
        consul.sessions.info(SID)


def test_garbage_instead_of_http(serve: Callable[..., FakeServer]) -> None:
    def garbage(conn: socket.socket, server: FakeServer) -> None:
        server.read_request(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2 definitely not HTTP\r\n\r\n")

    server = serve(garbage)
    with _client(server.addr) as consul, pytest.raises(ConsulUnavailable) as info:
        consul.leader()
    assert "did not answer with HTTP" in str(info.value)
    assert info.value.status == 0
    assert consul.open_connections == 0


def test_connection_closed_without_answer(serve: Callable[..., FakeServer]) -> None:
    def close_at_once(conn: socket.socket, server: FakeServer) -> None:
        server.read_request(conn)

    server = serve(close_at_once)
    with _client(server.addr) as consul, pytest.raises(ConsulUnavailable, match="closed"):
        consul.sessions.create()
    assert len(server.seen) == 1  # a non-idempotent create is not sent twice


def test_idle_keepalive_closed_by_server_is_retried_once(
    serve: Callable[..., FakeServer],
) -> None:
    """The server drops the kept-alive connection after each answer, without saying so."""

    def one_per_connection(conn: socket.socket, server: FakeServer) -> None:
        if server.read_request(conn) is not None:
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n"127.0.0.1:8300"')

    server = serve(one_per_connection)
    with _client(server.addr) as consul:
        assert consul.leader() == "127.0.0.1:8300"
        assert consul.leader() == "127.0.0.1:8300"  # stale connection: retried on a new one
    assert len(server.seen) == 2


def test_hanging_server_times_out(serve: Callable[..., FakeServer]) -> None:
    def hang(conn: socket.socket, server: FakeServer) -> None:
        server.read_request(conn)
        server.stop.wait(30)

    server = serve(hang)
    with _client(server.addr, timeout=0.3) as consul:
        with pytest.raises(ConsulUnavailable, match=r"did not answer within 0\.3s"):
            consul.leader()
        assert consul.open_connections == 0


def test_blocking_query_timeout_exceeds_its_wait(serve: Callable[..., FakeServer]) -> None:
    def hang(conn: socket.socket, server: FakeServer) -> None:
        server.read_request(conn)
        server.stop.wait(30)

    server = serve(hang)
    with _client(server.addr, timeout=0.2) as consul, pytest.raises(ConsulUnavailable) as info:
        consul.sessions.info(SID, index=5, wait="1s")
    # base timeout + wait + wait/16 of Consul's jitter
    assert "within 1.26s" in str(info.value)
    assert "index=5" in server.seen[0].target
    assert "wait=1s" in server.seen[0].target


def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        with (
            _client(f"127.0.0.1:{sock.getsockname()[1]}") as consul,
            pytest.raises(ConsulUnavailable, match="cannot reach Consul") as info,
        ):
            consul.sessions.list()
    finally:
        sock.close()
    assert info.value.status == 0
    assert info.value.operation == "session.list"


def test_closed_client_refuses_requests(serve: Callable[..., FakeServer]) -> None:
    server = serve(respond(200, '"leader"'))
    consul = _client(server.addr)
    assert consul.leader() == "leader"
    assert consul.open_connections == 1
    consul.close()
    assert consul.open_connections == 0
    with pytest.raises(ConsulUnavailable, match="closed"):
        consul.leader()
    assert len(server.seen) == 1


def test_one_connection_per_thread(serve: Callable[..., FakeServer]) -> None:
    server = serve(respond(200, '"leader"'))
    with _client(server.addr) as consul:
        for _ in range(3):
            consul.leader()
        assert consul.open_connections == 1

        def in_thread() -> tuple[str, int]:
            return consul.leader(), consul.open_connections

        worker = ThreadPoolExecutor(max_workers=1)
        assert worker.submit(in_thread).result(timeout=10) == ("leader", 2)
        worker.shutdown(wait=True)
        # The worker thread ended: its connection was closed with it.
        deadline = time.monotonic() + 10
        while consul.open_connections > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert consul.open_connections == 1
        assert consul.leader() == "leader"


def test_requests_carry_params_headers_and_no_token_in_the_url(
    serve: Callable[..., FakeServer],
) -> None:
    server = serve(respond(200, "[]"))
    with _client(server.addr, token=SECRET, datacenter="dc7") as consul:
        consul.sessions.list(consistency="stale")
        consul.sessions.node("n1", index=3, wait="250ms", consistency="consistent", dc="dc9")
    listed, on_node = server.seen
    assert listed.method == "GET"
    assert listed.target == "/v1/session/list?dc=dc7&stale="
    assert on_node.target == "/v1/session/node/n1?dc=dc9&index=3&wait=250ms&consistent="
    for seen in server.seen:
        assert seen.headers["x-consul-token"] == SECRET
        assert SECRET not in seen.target
        assert "token" not in seen.target


def test_create_sends_every_field(serve: Callable[..., FakeServer]) -> None:
    server = serve(respond(200, json.dumps({"ID": SID})))
    with _client(server.addr) as consul:
        sid = consul.sessions.create(
            name="n",
            node="node-1",
            checks=["c"],
            node_checks=["serfHealth"],
            service_checks=["svc"],
            lock_delay=0,
            behavior="delete",
            ttl="1m30s",
            dc="dc2",
        )
    assert sid == SID
    (seen,) = server.seen
    assert (seen.method, seen.target) == ("PUT", "/v1/session/create?dc=dc2")
    assert json.loads(seen.body) == {
        "Name": "n",
        "Node": "node-1",
        "Checks": ["c"],
        "NodeChecks": ["serfHealth"],
        "ServiceChecks": [{"ID": "svc"}],
        "LockDelay": "0s",  # a real zero, not omitted
        "Behavior": "delete",
        "TTL": "90s",
    }


def test_create_sends_no_fields_for_server_defaults(serve: Callable[..., FakeServer]) -> None:
    server = serve(respond(200, json.dumps({"ID": SID})))
    with _client(server.addr) as consul:
        consul.sessions.create()
    assert json.loads(server.seen[0].body) == {}
    assert server.seen[0].target == "/v1/session/create"


def test_renew_returns_a_ttl_raised_by_the_server(serve: Callable[..., FakeServer]) -> None:
    session = {"ID": SID, "Node": "n", "LockDelay": 15e9, "Behavior": "release", "TTL": "60s"}
    server = serve(respond(200, json.dumps([session])))
    with _client(server.addr) as consul:
        assert consul.sessions.renew(SID).ttl == 60.0


# -- token hygiene -----------------------------------------------------------------------------


def test_token_never_in_reprs_logs_or_errors(
    serve: Callable[..., FakeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(respond(200, json.dumps({"ID": SID})))
    with _client(server.addr, token=SECRET) as consul:
        assert consul.config.token == SECRET
        for text in (repr(consul), str(consul), repr(consul.config), str(consul.config)):
            assert SECRET not in text
        assert SECRET not in repr(consul._transport)
        consul.sessions.create(name="logged", ttl="10s")
    server.close()
    with _client(server.addr, token=SECRET) as gone, pytest.raises(ConsulUnavailable) as info:
        gone.sessions.create()
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    out = capsys.readouterr()
    assert SECRET not in out.out
    assert SECRET not in out.err


def test_explicit_token_wins_over_environment(
    serve: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token")
    server = serve(respond(200, '"x"'))
    with _client(server.addr, token=SECRET) as consul:
        consul.leader()
        assert consul.consul2.token == SECRET
    with _client(server.addr) as env_consul:
        env_consul.leader()
    assert [s.headers.get("x-consul-token") for s in server.seen] == [SECRET, "env-token"]


def test_explicit_address_wins_over_environment(
    serve: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(respond(200, '"x"'))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")
    monkeypatch.setenv("CONSUL_HTTP_SSL", "false")
    with _client(server.addr) as consul:
        assert consul.leader() == "x"
    assert len(server.seen) == 1


# -- python-consul2: warnings, environment, the seam -----------------------------------------


def test_construction_emits_no_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Consul("127.0.0.1:8500").close()
    assert [str(w.message) for w in caught] == []


def test_concurrent_construction_keeps_warnings_contained() -> None:
    def build(_: int) -> str:
        with Consul("127.0.0.1:8500") as consul:
            return repr(consul)

    with ThreadPoolExecutor(max_workers=8) as pool:
        reprs = list(pool.map(build, range(32)))
    assert reprs == ["<Consul http://127.0.0.1:8500 dc=default>"] * 32
    # pytest's filterwarnings=error still applies after all those swaps of the filter list.
    with pytest.raises(DeprecationWarning):
        warnings.warn("still an error", DeprecationWarning, stacklevel=1)


@pytest.mark.parametrize("env_addr", ["[::1]:8500", "http://[::1]:8500", "unix:///tmp/x.sock"])
def test_env_address_python_consul2_cannot_parse(
    consul_addr: str, monkeypatch: pytest.MonkeyPatch, env_addr: str
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", env_addr)
    with Consul(consul_addr) as consul:
        assert consul.leader()
        assert consul.consul2.kv.get("locksmith-test/none")[1] is None


def test_python_consul2_wrappers_use_our_transport(consul_addr: str) -> None:
    key = unique("locksmith-test/consul2")
    with Consul(consul_addr) as consul:
        raw = consul.consul2
        assert raw.kv.put(key, "via python-consul2") is True
        index, data = raw.kv.get(key)
        assert data["Value"] == b"via python-consul2"
        assert int(index) == data["ModifyIndex"]  # python-consul2 hands indexes as strings
        entry = consul.kv.get(key)
        assert entry is not None
        assert entry.value == b"via python-consul2"
        # A python-consul2 blocking query gets a timeout longer than its wait.
        same, _ = raw.kv.get(key, index=index, wait="1s")
        assert same == index
        assert consul.open_connections == 1
        assert raw.kv.delete(key) is True


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for ``consul.test`` and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=locksmith test CA", cwd=d)  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=DNS:consul.test\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}.consul.test", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return Certs(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


def _server_tls(certs: Certs, *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    if require_client_cert:
        ctx.load_verify_locations(certs.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


LEADER = respond(200, '"127.0.0.1:8300"')


def test_tls_untrusted_certificate(serve: Callable[..., FakeServer], certs: Certs) -> None:
    server = serve(LEADER, _server_tls(certs))
    with (
        _client(f"https://{server.addr}") as consul,
        pytest.raises(TLSError, match="not trusted") as info,
    ):
        consul.leader()
    assert isinstance(info.value, ConsulUnavailable)


def test_tls_name_mismatch(serve: Callable[..., FakeServer], certs: Certs) -> None:
    server = serve(LEADER, _server_tls(certs))
    with (
        _client(f"https://{server.addr}", ca_file=str(certs.ca)) as consul,
        pytest.raises(TLSError, match=r"does not match|mismatch"),
    ):
        consul.leader()


def test_tls_server_name_and_ca(serve: Callable[..., FakeServer], certs: Certs) -> None:
    server = serve(LEADER, _server_tls(certs))
    with _client(
        f"https://{server.addr}", ca_file=str(certs.ca), tls_server_name="consul.test"
    ) as consul:
        assert consul.leader() == "127.0.0.1:8300"


def test_tls_ca_path(serve: Callable[..., FakeServer], certs: Certs, tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "rehash", str(tmp_path)], check=False, capture_output=True, timeout=60
    )
    shutil.copy(certs.ca, tmp_path / "ca.pem")
    subprocess.run(
        ["openssl", "rehash", str(tmp_path)], check=True, capture_output=True, timeout=60
    )
    server = serve(LEADER, _server_tls(certs))
    with _client(
        server.addr, scheme="https", ca_path=str(tmp_path), tls_server_name="consul.test"
    ) as consul:
        assert consul.leader() == "127.0.0.1:8300"


def test_tls_from_environment(
    serve: Callable[..., FakeServer], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(LEADER, _server_tls(certs))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", server.addr)
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    monkeypatch.setenv("CONSUL_CACERT", str(certs.ca))
    monkeypatch.setenv("CONSUL_TLS_SERVER_NAME", "consul.test")
    with Consul() as consul:
        assert consul.config.scheme == "https"
        assert consul.leader() == "127.0.0.1:8300"


def test_tls_verify_off(serve: Callable[..., FakeServer], certs: Certs) -> None:
    server = serve(LEADER, _server_tls(certs))
    with _client(f"https://{server.addr}", verify=False) as consul:
        assert consul.leader() == "127.0.0.1:8300"


def test_tls_verify_off_from_environment(
    serve: Callable[..., FakeServer], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(LEADER, _server_tls(certs))
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    with _client(f"https://{server.addr}") as consul:
        assert consul.leader() == "127.0.0.1:8300"
    with (
        _client(f"https://{server.addr}", verify=True) as strict,  # explicit wins
        pytest.raises(TLSError),
    ):
        strict.leader()


def test_tls_client_certificate(serve: Callable[..., FakeServer], certs: Certs) -> None:
    server = serve(LEADER, _server_tls(certs, require_client_cert=True))
    common = {"ca_file": str(certs.ca), "tls_server_name": "consul.test"}
    with _client(f"https://{server.addr}", **common) as anonymous, pytest.raises(TLSError):
        anonymous.leader()
    with _client(
        f"https://{server.addr}",
        client_cert=str(certs.client_cert),
        client_key=str(certs.client_key),
        **common,
    ) as consul:
        assert consul.leader() == "127.0.0.1:8300"


def test_https_client_against_plain_http_server(serve: Callable[..., FakeServer]) -> None:
    def plain_http(conn: socket.socket, server: FakeServer) -> None:
        conn.recv(65536)  # a TLS ClientHello: not HTTP, answered like Go's server does
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")

    server = serve(plain_http)
    with _client(f"https://{server.addr}") as consul, pytest.raises(TLSError):
        consul.leader()


def test_unreadable_tls_files_are_configuration_errors(tmp_path: Path, certs: Certs) -> None:
    missing = str(tmp_path / "missing.pem")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ca_file": missing}, "CA certificates"),
        ({"client_cert": missing}, "client certificate"),
        ({"client_cert": str(certs.client_cert), "client_key": str(certs.ca)}, "client cert"),
    ]
    for kwargs, message in cases:
        consul = Consul("https://127.0.0.1:1", **kwargs)  # construction does no I/O
        with consul, pytest.raises(ConfigurationError, match=message):
            consul.leader()
        assert consul.open_connections == 0


def test_error_tree() -> None:
    for cls in (ConsulError, ConfigurationError, ProtocolError):
        assert issubclass(cls, LocksmithError)
    for cls in (BadRequest, PermissionDenied, SessionNotFound, ConsulUnavailable):
        assert issubclass(cls, ConsulError)
    assert issubclass(ACLNotFound, PermissionDenied)
    assert issubclass(TLSError, ConsulUnavailable)
    err = ConsulError("m", status=500, body="b", operation="o", resource="r")
    assert (err.status, err.body, err.operation, err.resource, str(err)) == (
        500, "b", "o", "r", "m",
    )  # fmt: skip


def test_connection_config_of_client(consul_addr: str) -> None:
    with Consul(consul_addr, token=SECRET, timeout=3) as consul:
        assert isinstance(consul.config, ConnectionConfig)
        assert consul.config.address == consul_addr
        assert consul.config.timeout == 3.0
        assert consul.leader()
        assert consul.agent_node()
