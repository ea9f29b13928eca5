"""AsyncConsul's session endpoints against a real agent, on asyncio and trio.

The async twins of tests/test_sessions.py: every endpoint, its options and read modes, the
same results as the sync client reads.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from locksmith._client import Consul, QueryResult, Session, next_index
from locksmith._exceptions import BadRequest, SessionNotFound
from locksmith.aio import AsyncConsul

pytestmark = pytest.mark.anyio

WOKEN_WITHIN = 30.0
CONSISTENCY_MODES = ["default", "consistent", "stale"]


@pytest.fixture
async def aconsul(consul_addr: str) -> AsyncIterator[AsyncConsul]:
    async with AsyncConsul(consul_addr) as client:
        yield client


@pytest.fixture
async def new_async_session(consul: Consul, aconsul: AsyncConsul) -> AsyncIterator[Any]:
    """Create sessions with the async client; destroyed (by the sync one) at teardown."""
    made: list[str] = []

    async def make(**kwargs: Any) -> str:
        sid = await aconsul.sessions.create(**kwargs)
        made.append(sid)
        return sid

    yield make
    for sid in made:
        consul.sessions.destroy(sid)


async def _info(aconsul: AsyncConsul, sid: str) -> Session:
    session = await aconsul.sessions.info(sid)
    assert session is not None
    return session


async def test_create_with_server_defaults(
    aconsul: AsyncConsul, consul: Consul, new_async_session: Any
) -> None:
    sid = await new_async_session()
    uuid.UUID(sid)
    session = await _info(aconsul, sid)
    assert (session.id, session.name, session.node) == (sid, "", await aconsul.agent_node())
    assert (session.lock_delay, session.behavior, session.ttl) == (15.0, "release", None)
    assert session.node_checks == ("serfHealth",)
    assert session == consul.sessions.info(sid)


async def test_create_with_every_plain_option(aconsul: AsyncConsul, new_async_session: Any) -> None:
    node = await aconsul.agent_node()
    sid = await new_async_session(
        name="every-option", node=node, lock_delay="0s", behavior="delete", ttl="10s", dc="dc1"
    )
    session = await _info(aconsul, sid)
    assert (session.name, session.node, session.lock_delay) == ("every-option", node, 0.0)
    assert (session.behavior, session.ttl) == ("delete", 10.0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"lock_delay": 5}, {"lock_delay": 5.0}),
        ({"lock_delay": "250ms"}, {"lock_delay": 0.25}),
        ({"ttl": "1m30s"}, {"ttl": 90.0}),
        ({"ttl": 0}, {"ttl": None}),
        ({"node_checks": []}, {"node_checks": ()}),
        ({"checks": []}, {"node_checks": ()}),
    ],
)
async def test_create_options(
    aconsul: AsyncConsul, new_async_session: Any, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    session = await _info(aconsul, await new_async_session(**kwargs))
    assert {name: getattr(session, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node": "no-such-node"}, "Missing node registration"),
        ({"node_checks": ["no-such-check"]}, "Missing check 'no-such-check' registration"),
        ({"dc": "no-such-dc"}, "datacenter"),
    ],
)
async def test_create_refused_by_consul(
    aconsul: AsyncConsul, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        await aconsul.sessions.create(**kwargs)
    assert info.value.status == 500
    assert info.value.operation == "session.create"


async def test_destroy_is_idempotent(aconsul: AsyncConsul) -> None:
    sid = await aconsul.sessions.create()
    await aconsul.sessions.destroy(sid)
    assert await aconsul.sessions.info(sid) is None
    await aconsul.sessions.destroy(sid, timeout=5.0)  # already gone: still fine
    await aconsul.sessions.destroy(str(uuid.uuid4()))  # never existed: still fine


async def test_info_of_missing_session_is_none_with_an_index(aconsul: AsyncConsul) -> None:
    result = await aconsul.sessions.info_with_meta(str(uuid.uuid4()))
    assert result.value is None
    assert result.meta.index > 0
    assert result.meta.known_leader is True


async def test_renew_returns_the_session_with_its_ttl(
    aconsul: AsyncConsul, new_async_session: Any
) -> None:
    sid = await new_async_session(name="renewed", ttl="15s", behavior="delete", lock_delay=1)
    renewed = await aconsul.sessions.renew(sid, timeout=5.0)
    assert (renewed.id, renewed.name, renewed.behavior, renewed.lock_delay) == (
        sid,
        "renewed",
        "delete",
        1.0,
    )
    assert renewed.ttl is not None
    assert renewed.ttl >= 15.0
    assert renewed == await _info(aconsul, sid)


async def test_renew_destroyed_session(aconsul: AsyncConsul) -> None:
    sid = await aconsul.sessions.create(ttl="10s")
    await aconsul.sessions.destroy(sid)
    with pytest.raises(SessionNotFound) as info:
        await aconsul.sessions.renew(sid)
    assert (info.value.status, info.value.operation, info.value.resource) == (
        404,
        "session.renew",
        sid,
    )
    assert sid in info.value.body


async def test_list_and_node(aconsul: AsyncConsul, consul: Consul, new_async_session: Any) -> None:
    node = await aconsul.agent_node()
    a, b = await new_async_session(name="list-a"), await new_async_session(name="list-b", ttl="20s")
    listed = {s.id: s for s in await aconsul.sessions.list()}
    assert {a, b} <= set(listed)
    assert listed[b].ttl == 20.0
    assert listed[a] == consul.sessions.info(a)
    assert {a, b} <= {s.id for s in await aconsul.sessions.node(node)}
    await aconsul.sessions.destroy(a)
    assert a not in {s.id for s in await aconsul.sessions.list()}
    assert a not in {s.id for s in await aconsul.sessions.node(node)}
    unknown = await aconsul.sessions.node_with_meta("no-such-node")
    assert unknown.value == []
    assert unknown.meta.index > 0


@pytest.mark.parametrize("mode", CONSISTENCY_MODES)
async def test_reads_in_each_consistency_mode(
    aconsul: AsyncConsul, new_async_session: Any, mode: Any
) -> None:
    node = await aconsul.agent_node()
    sid = await new_async_session(name=f"mode-{mode}")
    results: list[QueryResult[Any]] = [
        await aconsul.sessions.info_with_meta(sid, consistency=mode),
        await aconsul.sessions.list_with_meta(consistency=mode),
        await aconsul.sessions.node_with_meta(node, consistency=mode),
    ]
    info, listed, on_node = results
    assert info.value is not None
    assert info.value.id == sid
    assert sid in {s.id for s in listed.value}
    assert sid in {s.id for s in on_node.value}
    for result in results:
        assert result.meta.index >= info.value.create_index
        assert result.meta.known_leader is True
    assert await aconsul.sessions.info(sid, consistency=mode) == info.value
    assert sid in {s.id for s in await aconsul.sessions.list(consistency=mode)}
    assert sid in {s.id for s in await aconsul.sessions.node(node, consistency=mode)}


@pytest.mark.parametrize("mode", CONSISTENCY_MODES)
async def test_blocking_info_woken_by_destroy(aconsul: AsyncConsul, mode: Any) -> None:
    sid = await aconsul.sessions.create(name="blocked-info")
    first = await aconsul.sessions.info_with_meta(sid, consistency=mode)
    assert first.value is not None
    woken: list[QueryResult[Session | None]] = []

    async def watch() -> None:
        woken.append(
            await aconsul.sessions.info_with_meta(
                sid, index=first.meta.index, wait="60s", consistency=mode
            )
        )

    with anyio.fail_after(WOKEN_WITHIN):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.2)
            await aconsul.sessions.destroy(sid)
    (result,) = woken
    assert result.value is None
    assert result.meta.index > first.meta.index
    assert next_index(first.meta.index, result.meta.index) == result.meta.index


async def test_blocking_list_and_node_woken_by_create(
    aconsul: AsyncConsul, new_async_session: Any
) -> None:
    node = await aconsul.agent_node()
    listed = await aconsul.sessions.list_with_meta()
    on_node = await aconsul.sessions.node_with_meta(node)
    woken: dict[str, QueryResult[list[Session]]] = {}

    async def watch_list() -> None:
        woken["list"] = await aconsul.sessions.list_with_meta(index=listed.meta.index, wait="60s")

    async def watch_node() -> None:
        woken["node"] = await aconsul.sessions.node_with_meta(
            node, index=on_node.meta.index, wait="60s"
        )

    with anyio.fail_after(WOKEN_WITHIN):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_list)
            tg.start_soon(watch_node)
            await anyio.sleep(0.2)
            sid = await new_async_session(name="wakes-both")
    assert sid in {s.id for s in woken["list"].value}
    assert sid in {s.id for s in woken["node"].value}
    assert woken["list"].meta.index > listed.meta.index


@pytest.mark.parametrize("endpoint", ["info", "list", "node"])
async def test_index_above_the_servers_goes_backwards_and_resets(
    aconsul: AsyncConsul, new_async_session: Any, endpoint: str
) -> None:
    sid = await new_async_session()
    current = (await aconsul.sessions.info_with_meta(sid)).meta.index
    sent = current + 1_000_000
    call: dict[str, Callable[[], Any]] = {
        "info": lambda: aconsul.sessions.info_with_meta(sid, index=sent, wait="1s"),
        "list": lambda: aconsul.sessions.list_with_meta(index=sent, wait="1s"),
        "node": lambda: aconsul.sessions.node_with_meta("no-such-node", index=sent, wait="1s"),
    }
    result: QueryResult[Any] = await call[endpoint]()
    assert 0 < result.meta.index < sent
    assert next_index(sent, result.meta.index) == 0
