"""locksmith.aio's transport on asyncio and trio: pool rules, cancellation, timeouts, errors,
ACL tokens and TLS, against real agents.

The only peers that are not Consul are a socket that never answers (for timeouts) and a
refused port: tests of what the transport does when nobody answers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest

from locksmith import ACLNotFound, Consul, PermissionDenied, TLSError
from locksmith._exceptions import ConfigurationError, ConsulUnavailable
from locksmith.aio import AsyncConsul
from locksmith.testing.plugin import ACLConsulAgent, TLSConsulAgent, TLSMaterial, make_tls_material

pytestmark = pytest.mark.anyio

SECRET = "5e3b1c7d-token-that-must-never-leak-8f2a"


@pytest.fixture
async def aconsul(consul_addr: str) -> AsyncIterator[AsyncConsul]:
    async with AsyncConsul(consul_addr) as client:
        yield client


@pytest.fixture
def silent_addr() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``pred`` until true; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.01)


# -- keep-alive and the pool ------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(aconsul: AsyncConsul, prefix: str) -> None:
    assert aconsul.open_connections == 0  # construction did no I/O
    for i in range(5):
        assert await aconsul.kv.put(f"{prefix}/k", str(i))
        assert await aconsul.leader()
    assert aconsul.open_connections == 1


async def test_pool_never_exceeds_max_connections_under_200_tasks(
    consul_addr: str, prefix: str
) -> None:
    peak = 0
    done = anyio.Event()

    async with AsyncConsul(consul_addr, max_connections=4) as client:

        async def monitor() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, client.open_connections)
                await anyio.sleep(0)

        async def work(i: int) -> None:
            key = f"{prefix}/task-{i}"
            assert await client.kv.put(key, str(i))
            entry = await client.kv.get(key)
            assert entry is not None
            assert entry.value == str(i).encode()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as outer:
                outer.start_soon(monitor)
                async with anyio.create_task_group() as tg:
                    for i in range(200):
                        tg.start_soon(work, i)
                done.set()
        assert 2 <= peak <= 4  # the tasks did share connections concurrently, never more
        assert client.open_connections <= 4
        assert len(await client.kv.list(f"{prefix}/")) == 200


async def test_blocking_queries_never_take_the_last_connection(
    consul_addr: str, consul: Consul, prefix: str
) -> None:
    keys = [f"{prefix}/watched-{i}" for i in range(3)]
    for key in keys:
        consul.kv.put(key, b"0")
    woken: dict[str, bytes] = {}
    async with AsyncConsul(consul_addr, max_connections=3) as client:
        indexes = [(await client.kv.get_with_meta(key)).meta.index for key in keys]

        async def watch(i: int) -> None:
            got = await client.kv.get_with_meta(keys[i], index=indexes[i], wait="60s")
            assert got.value is not None
            woken[keys[i]] = got.value.value

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(watch, i)
                await until(lambda: client.open_connections == 2)
                await anyio.sleep(0.5)
                # Two blocking queries hold two connections; the third may not take the last.
                assert client.open_connections == 2
                assert await client.leader()  # a short request gets through at once
                assert await client.kv.put(f"{prefix}/short", b"x")
                assert client.open_connections == 3
                await anyio.sleep(0.3)
                assert woken == {}
                # Waking the two in flight frees places: the waiting query gets one (which
                # two went first is the scheduler's choice: trio's order is not FIFO).
                for key in keys:
                    consul.kv.put(key, b"1")
                await until(lambda: len(woken) == 3)
        assert woken == dict.fromkeys(keys, b"1")
        assert client.open_connections <= 3


async def test_short_requests_flow_while_blocking_queries_hold_all_but_one(
    consul_addr: str, prefix: str
) -> None:
    async with AsyncConsul(consul_addr, max_connections=4) as client:
        # An existing key: a blocking query on a missing one wakes on any write to the KV store.
        assert await client.kv.put(f"{prefix}/never", b"same")
        index = (await client.kv.get_with_meta(f"{prefix}/never")).meta.index
        finished = 0

        async def block() -> None:
            await client.kv.get_with_meta(f"{prefix}/never", index=index, wait="60s")

        async def short(i: int) -> None:
            nonlocal finished
            assert await client.kv.put(f"{prefix}/s{i}", b"v")
            finished += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as blockers:
                for _ in range(5):  # more than may run: two wait
                    blockers.start_soon(block)
                await until(lambda: client.open_connections == 3)
                async with anyio.create_task_group() as tg:
                    for i in range(200):
                        tg.start_soon(short, i)
                assert finished == 200
                assert client.open_connections == 4
                blockers.cancel_scope.cancel()
        assert client.open_connections == 1  # the cancelled queries' connections were closed
        assert await client.leader()


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_blocking_query_discards_its_connection(
    aconsul: AsyncConsul, prefix: str
) -> None:
    key = f"{prefix}/k"
    first = await aconsul.kv.get_with_meta(key)
    assert aconsul.open_connections == 1
    start = time.monotonic()
    with anyio.move_on_after(0.5) as scope:
        await aconsul.kv.get_with_meta(key, index=first.meta.index, wait="60s")
    assert scope.cancelled_caught
    assert time.monotonic() - start < 30  # cut short, not waited out
    assert aconsul.open_connections == 0  # closed, not returned to the pool
    assert await aconsul.kv.put(key, b"after")  # the next request works, on a new connection
    entry = await aconsul.kv.get(key)
    assert entry is not None
    assert entry.value == b"after"
    assert aconsul.open_connections == 1


async def test_cancelled_task_in_a_blocking_query(aconsul: AsyncConsul, prefix: str) -> None:
    key = f"{prefix}/k"
    index = (await aconsul.kv.get_with_meta(key)).meta.index
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: aconsul.kv.get_with_meta(key, index=index, wait="60s"))
            await anyio.sleep(0.3)
            assert aconsul.open_connections == 1
            tg.cancel_scope.cancel()
    assert aconsul.open_connections == 0
    assert await aconsul.leader()


@pytest.mark.parametrize("warm", [False, True], ids=["cold-pool", "warm-pool"])
async def test_request_cancelled_before_it_is_sent(
    aconsul: AsyncConsul, consul: Consul, prefix: str, warm: bool
) -> None:
    key = f"{prefix}/never-written"
    if warm:
        assert await aconsul.leader()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await aconsul.kv.put(key, b"x")
    assert scope.cancelled_caught
    assert consul.kv.get(key) is None  # nothing reached Consul
    assert await aconsul.kv.put(f"{prefix}/next", b"y")  # the pool works
    assert aconsul.open_connections == 1


async def test_cancelled_while_waiting_for_a_connection(
    consul_addr: str, consul: Consul, prefix: str
) -> None:
    consul.kv.put(f"{prefix}/k", b"same")
    index = consul.kv.get_with_meta(f"{prefix}/k").meta.index
    async with AsyncConsul(consul_addr, max_connections=2) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: client.kv.get_with_meta(f"{prefix}/k", index=index, wait="60s")
                )
                await until(lambda: client.open_connections == 1)  # the first query's
                await anyio.sleep(0.2)
                with anyio.move_on_after(0.3) as scope:  # waits: blocking queries hold max - 1
                    await client.kv.get_with_meta(f"{prefix}/k", index=index, wait="60s")
                assert scope.cancelled_caught
                assert await client.kv.put(f"{prefix}/k2", b"v")  # the last connection is free
                assert client.open_connections == 2
                tg.cancel_scope.cancel()
        assert client.open_connections == 1


async def test_aclose_cuts_short_requests_in_flight(consul_addr: str, prefix: str) -> None:
    client = AsyncConsul(consul_addr)
    index = (await client.kv.get_with_meta(f"{prefix}/k")).meta.index
    errors: list[BaseException] = []

    async def watch() -> None:
        try:
            await client.kv.get_with_meta(f"{prefix}/k", index=index, wait="60s")
        except ConsulUnavailable as exc:
            errors.append(exc)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.3)
            await client.aclose()
    (error,) = errors
    assert "closed" in str(error)
    assert client.open_connections == 0
    with pytest.raises(ConsulUnavailable, match="closed"):
        await client.leader()
    await client.aclose()  # idempotent


# -- timeouts ----------------------------------------------------------------------------------


async def test_silent_server_times_out(silent_addr: str) -> None:
    async with AsyncConsul(silent_addr, timeout=0.3, token=SECRET) as client:
        start = time.monotonic()
        with pytest.raises(ConsulUnavailable, match=r"did not answer within 0\.3s") as info:
            await client.kv.get("any/key")
        assert 0.25 <= time.monotonic() - start < 20
        assert (info.value.operation, info.value.resource) == ("kv.get", "any/key")
        assert SECRET not in str(info.value)
        assert client.open_connections == 0
        with pytest.raises(ConsulUnavailable, match=r"within 2s"):
            await client.sessions.renew("adf4238a-882b-9ddc-4a9d-5b6758e4159e", timeout=2)


async def test_blocking_query_timeout_covers_its_wait(
    silent_addr: str, consul_addr: str, prefix: str
) -> None:
    async with AsyncConsul(silent_addr, timeout=0.2) as client:
        start = time.monotonic()
        with pytest.raises(ConsulUnavailable) as info:
            await client.kv.get("any/key", index=5, wait="1s")
        assert "within 1.26s" in str(info.value)  # base + wait + wait/16 of Consul's jitter
        assert time.monotonic() - start >= 1.0
    async with AsyncConsul(consul_addr, timeout=0.2) as real:
        index = (await real.kv.get_with_meta(f"{prefix}/k")).meta.index
        again = await real.kv.get_with_meta(f"{prefix}/k", index=index, wait="1s")
        assert again.meta.index == index  # held ~1s by Consul, well past the 0.2s timeout


async def test_waiting_for_a_connection_counts_in_the_timeout(
    consul_addr: str, consul: Consul, prefix: str
) -> None:
    consul.kv.put(f"{prefix}/k", b"same")
    index = consul.kv.get_with_meta(f"{prefix}/k").meta.index
    async with AsyncConsul(consul_addr, max_connections=2, timeout=0.1) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: client.kv.get_with_meta(f"{prefix}/k", index=index, wait="20s")
                )
                await until(lambda: client.open_connections == 1)  # the first query's
                await anyio.sleep(0.2)
                start = time.monotonic()
                with pytest.raises(ConsulUnavailable, match=r"within 1\.16s"):
                    # A second blocking query may not take the last connection: it waits for
                    # a place for its whole timeout (0.1s + 1s wait + 1/16 of it), not more.
                    await client.kv.get_with_meta(f"{prefix}/k", index=index, wait="1s")
                assert 1.0 <= time.monotonic() - start < 15
                tg.cancel_scope.cancel()


async def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        async with AsyncConsul(f"127.0.0.1:{sock.getsockname()[1]}") as client:
            with pytest.raises(ConsulUnavailable, match="cannot reach Consul") as info:
                await client.sessions.list()
    finally:
        sock.close()
    assert (info.value.status, info.value.operation) == (0, "session.list")


async def test_construction_and_settings(consul_addr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_addr)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", SECRET)
    client = AsyncConsul(timeout=3, datacenter="dc1")
    assert (client.config.address, client.config.timeout, client.config.token) == (
        consul_addr,
        3.0,
        SECRET,
    )
    assert client.max_connections == 4
    for text in (repr(client), repr(client.config), repr(client._transport)):
        assert SECRET not in text
    await client.aclose()
    with pytest.raises(ConfigurationError, match="max_connections"):
        AsyncConsul(consul_addr, max_connections=1)


# -- ACLs --------------------------------------------------------------------------------------


async def test_acl_errors_name_the_rule_never_the_token(
    consul_acl_agent: ACLConsulAgent, make_acl_token: Callable[..., str]
) -> None:
    addr = consul_acl_agent.http_addr
    async with AsyncConsul(addr, token=SECRET) as unknown:
        with pytest.raises(ACLNotFound) as info:
            await unknown.sessions.create()
        assert info.value.status == 403
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value.args)
    token = make_acl_token('key_prefix "aio-acl/" { policy = "read" }')
    async with AsyncConsul(addr, token=token) as limited:
        assert await limited.kv.get("aio-acl/readable") is None
        with pytest.raises(PermissionDenied) as denied:
            await limited.kv.put("aio-acl/readable", b"x")
        text = str(denied.value)
        assert "kv.put aio-acl/readable" in text
        assert "key:write" in text
        assert token not in text
        with pytest.raises(PermissionDenied, match="key:read"):
            await limited.kv.get("elsewhere/key")
    async with AsyncConsul(addr, token=consul_acl_agent.master_token) as master:
        sid = await master.sessions.create(ttl="10s")
        assert (await master.sessions.renew(sid)).id == sid
        await master.sessions.destroy(sid)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """A second CA (and certificates) the agent knows nothing about."""
    return make_tls_material(tmp_path_factory.mktemp("aio-other-ca"))


def _mtls_kwargs(agent: TLSConsulAgent, **kwargs: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ca_file": agent.ca_file,
        "client_cert": agent.client_cert,
        "client_key": agent.client_key,
        "timeout": 10.0,
    }
    base.update(kwargs)
    return base


async def test_mutual_tls(consul_tls_agent: TLSConsulAgent, prefix: str) -> None:
    async with AsyncConsul(consul_tls_agent.https_url, **_mtls_kwargs(consul_tls_agent)) as client:
        assert client.config.scheme == "https"
        assert await client.leader()
        sid = await client.sessions.create(ttl="10s", lock_delay=0)
        try:
            locked = await client.kv.lock(f"{prefix}/tls", b"v", sid)
            assert locked is not None
            assert locked.session == sid
            assert await client.kv.put(f"{prefix}/tls", b"v", release=sid)
            assert client.open_connections == 1
        finally:
            await client.sessions.destroy(sid)
            await client.kv.delete(prefix, recurse=True)
    kwargs = _mtls_kwargs(consul_tls_agent, ca_file=None, ca_path=consul_tls_agent.ca_path)
    async with AsyncConsul(consul_tls_agent.https_url, **kwargs) as by_dir:
        assert await by_dir.leader()


@pytest.mark.parametrize(
    "case", ["server-name-mismatch", "untrusted-server", "client-cert-of-another-ca"]
)
async def test_tls_errors_are_the_sync_clients(
    consul_tls_agent: TLSConsulAgent, other_ca: TLSMaterial, case: str
) -> None:
    kwargs = {
        "server-name-mismatch": _mtls_kwargs(consul_tls_agent, tls_server_name="client.dc2.consul"),
        "untrusted-server": _mtls_kwargs(consul_tls_agent, ca_file=str(other_ca.ca_file)),
        "client-cert-of-another-ca": _mtls_kwargs(
            consul_tls_agent,
            client_cert=str(other_ca.client_cert),
            client_key=str(other_ca.client_key),
        ),
    }[case]
    with Consul(consul_tls_agent.https_url, **kwargs) as sync, pytest.raises(TLSError) as expected:
        sync.leader()
    async with AsyncConsul(consul_tls_agent.https_url, **kwargs) as client:
        with pytest.raises(TLSError) as info:
            await client.leader()
        assert client.open_connections == 0
    assert str(info.value) == str(expected.value)
    assert isinstance(info.value.__cause__, Exception)


async def test_tls_without_client_certificate(consul_tls_agent: TLSConsulAgent) -> None:
    async with AsyncConsul(consul_tls_agent.https_url, ca_file=consul_tls_agent.ca_file) as client:
        with pytest.raises(TLSError) as info:
            await client.leader()
    text = str(info.value)
    assert "refused the client certificate" in text or "requires a client cert" in text
    assert "no client certificate was given" in text
    assert "CONSUL_CLIENT_CERT" in text


async def test_unreadable_tls_files_fail_on_first_request(tmp_path: Any) -> None:
    client = AsyncConsul("https://127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))
    async with client:
        with pytest.raises(ConfigurationError, match="CA certificates"):
            await client.leader()
        assert client.open_connections == 0
