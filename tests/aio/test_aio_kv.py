"""AsyncConsul's KV and transaction calls against a real agent, on asyncio and trio.

The async twins of tests/test_kv.py: the same calls, results and errors; the sync client
checks what the async one wrote.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from locksmith import Consul
from locksmith._exceptions import SessionNotFound, ValidationError
from locksmith._validate import MAX_TXN_BODY_BYTES, MAX_TXN_VALUE_BYTES, MAX_VALUE_BYTES
from locksmith.aio import AsyncConsul

pytestmark = pytest.mark.anyio

WOKEN_WITHIN = 30.0
CONSUL_LOCK_FLAGS = 0x2DDCCBC058A50C18


@pytest.fixture
async def aconsul(consul_addr: str) -> AsyncIterator[AsyncConsul]:
    async with AsyncConsul(consul_addr) as client:
        yield client


async def test_get_missing_key_is_none_with_an_index(aconsul: AsyncConsul, prefix: str) -> None:
    result = await aconsul.kv.get_with_meta(f"{prefix}/missing")
    assert result.value is None
    assert result.meta.index > 0  # a 404 still carries X-Consul-Index
    assert await aconsul.kv.get(f"{prefix}/missing") is None
    listed = await aconsul.kv.list_with_meta(f"{prefix}/")
    assert listed.value == []
    assert listed.meta.index > 0


async def test_put_get_list_delete(aconsul: AsyncConsul, consul: Consul, prefix: str) -> None:
    assert await aconsul.kv.put(f"{prefix}/a", b"\x00bytes\xff", flags=7) is True
    assert await aconsul.kv.put(f"{prefix}/b", "text é") is True
    assert await aconsul.kv.put(f"{prefix}/c") is True
    a = await aconsul.kv.get(f"{prefix}/a")
    assert a is not None
    assert (a.key, a.value, a.flags, a.session, a.lock_index) == (
        f"{prefix}/a",
        b"\x00bytes\xff",
        7,
        None,
        0,
    )
    assert a == consul.kv.get(f"{prefix}/a")  # the same entry as the sync client reads
    entries = await aconsul.kv.list(f"{prefix}/")
    assert [e.key for e in entries] == [f"{prefix}/a", f"{prefix}/b", f"{prefix}/c"]
    assert entries[1].value == "text é".encode()
    assert entries[2].value == b""
    assert entries == consul.kv.list(f"{prefix}/")
    assert await aconsul.kv.delete(f"{prefix}/a") is True
    assert await aconsul.kv.get(f"{prefix}/a") is None
    assert await aconsul.kv.delete(f"{prefix}/a") is True  # deleting a missing key succeeds
    assert await aconsul.kv.delete(f"{prefix}/", recurse=True) is True
    assert await aconsul.kv.list(f"{prefix}/") == []


@pytest.mark.parametrize("mode", ["default", "consistent", "stale"])
async def test_reads_in_each_consistency_mode(aconsul: AsyncConsul, prefix: str, mode: Any) -> None:
    await aconsul.kv.put(f"{prefix}/k", b"v")
    got = await aconsul.kv.get_with_meta(f"{prefix}/k", consistency=mode)
    assert got.value is not None
    assert got.value.value == b"v"
    assert got.meta.known_leader is True
    listed = await aconsul.kv.list_with_meta(f"{prefix}/", consistency=mode)
    assert [e.key for e in listed.value] == [f"{prefix}/k"]
    assert listed.meta.index >= got.value.modify_index


async def test_unicode_and_special_keys(aconsul: AsyncConsul, consul: Consul, prefix: str) -> None:
    key = f"{prefix}/spaces and ?query#hash%25/ünï"
    assert await aconsul.kv.put(key, b"x")
    entry = await aconsul.kv.get(key)
    assert entry is not None
    assert entry.key == key
    assert consul.kv.get(key) == entry


async def test_large_answers_arrive_whole(aconsul: AsyncConsul, prefix: str) -> None:
    """Values at Consul's limit, and a listing big enough to come chunked."""
    data = bytes(range(256)) * (MAX_VALUE_BYTES // 256)
    assert await aconsul.kv.put(f"{prefix}/big", data)
    entry = await aconsul.kv.get(f"{prefix}/big")
    assert entry is not None
    assert entry.value == data
    for i in range(8):
        assert await aconsul.kv.put(f"{prefix}/many/{i}", bytes([i]) * 3000)
    raw = await aconsul._transport.request(
        "GET", f"/v1/kv/{prefix}/many/", params=[("recurse", "")]
    )
    assert raw.headers.get("transfer-encoding") == "chunked"  # the chunked path was taken
    listed = await aconsul.kv.list(f"{prefix}/many/")
    assert [e.value for e in listed] == [bytes([i]) * 3000 for i in range(8)]


async def test_cas(aconsul: AsyncConsul, prefix: str) -> None:
    key = f"{prefix}/cas"
    assert await aconsul.kv.put(key, b"1", cas=0) is True  # 0: only if it does not exist
    assert await aconsul.kv.put(key, b"2", cas=0) is False
    entry = await aconsul.kv.get(key)
    assert entry is not None
    assert await aconsul.kv.put(key, b"3", cas=entry.modify_index + 1) is False
    assert await aconsul.kv.put(key, b"3", cas=entry.modify_index) is True
    assert await aconsul.kv.delete(key, cas=entry.modify_index) is False  # index moved on
    latest = await aconsul.kv.get(key)
    assert latest is not None
    assert latest.value == b"3"
    assert await aconsul.kv.delete(key, cas=latest.modify_index) is True
    assert await aconsul.kv.get(key) is None


async def test_acquire_and_release(
    aconsul: AsyncConsul, prefix: str, new_session: Callable[..., str]
) -> None:
    key = f"{prefix}/lock"
    mine, other = new_session(lock_delay=0), new_session()
    assert await aconsul.kv.put(key, b"held", acquire=mine, flags=CONSUL_LOCK_FLAGS) is True
    held = await aconsul.kv.get(key)
    assert held is not None
    assert (held.session, held.lock_index, held.value, held.flags) == (
        mine,
        1,
        b"held",
        CONSUL_LOCK_FLAGS,
    )
    assert await aconsul.kv.put(key, b"x", acquire=other) is False
    assert await aconsul.kv.put(key, b"x", release=other) is False  # not the holder
    assert await aconsul.kv.put(key, b"free", release=mine) is True
    free = await aconsul.kv.get(key)
    assert free is not None
    assert (free.session, free.value) == (None, b"free")
    assert await aconsul.kv.put(key, b"next", acquire=other) is True  # no lock-delay


async def test_acquire_and_lock_with_destroyed_session(
    aconsul: AsyncConsul, consul: Consul, prefix: str
) -> None:
    sid = consul.sessions.create()
    consul.sessions.destroy(sid)
    with pytest.raises(SessionNotFound, match="invalid session") as info:
        await aconsul.kv.put(f"{prefix}/k", b"", acquire=sid)
    assert (info.value.operation, info.value.resource) == ("kv.put", f"{prefix}/k")
    with pytest.raises(SessionNotFound, match="invalid session") as info:
        await aconsul.kv.lock(f"{prefix}/k", b"", sid)
    assert (info.value.operation, info.value.resource) == ("kv.acquire", f"{prefix}/k")


async def test_lock_delay_after_destroy(
    aconsul: AsyncConsul, prefix: str, new_session: Callable[..., str]
) -> None:
    key = f"{prefix}/delayed"
    holder = await aconsul.sessions.create(lock_delay="15s")
    assert await aconsul.kv.lock(key, b"v", holder) is not None
    await aconsul.sessions.destroy(holder)
    waiter = new_session()
    entry = await aconsul.kv.get(key)
    assert entry is not None
    assert entry.session is None  # looks free ...
    assert await aconsul.kv.put(key, b"w", acquire=waiter) is False  # ... but lock-delay holds it
    assert await aconsul.kv.lock(key, b"w", waiter) is None


async def test_lock_returns_the_fencing_index(
    aconsul: AsyncConsul, consul: Consul, prefix: str, new_session: Callable[..., str]
) -> None:
    key = f"{prefix}/fenced"
    first, second = new_session(), new_session()
    locked = await aconsul.kv.lock(key, b"owner-1", first, flags=CONSUL_LOCK_FLAGS)
    assert locked is not None
    assert locked == consul.kv.get(key)
    assert (locked.session, locked.value, locked.flags) == (first, b"owner-1", CONSUL_LOCK_FLAGS)
    assert await aconsul.kv.lock(key, b"owner-2", second) is None
    again = await aconsul.kv.lock(key, b"owner-1b", first)
    assert again is not None
    assert again.modify_index > locked.modify_index
    assert await aconsul.kv.put(key, b"", release=first)
    taken = await aconsul.kv.lock(key, b"owner-2", second, timeout=5.0)
    assert taken is not None
    assert taken.session == second
    assert taken.modify_index > again.modify_index


async def test_txn_success_and_rollback(aconsul: AsyncConsul, prefix: str) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    ok = await aconsul.kv.txn(
        [
            {"KV": {"Verb": "set", "Key": f"{prefix}/t1", "Value": b64(b"one")}},
            {"KV": {"Verb": "set", "Key": f"{prefix}/t2", "Value": b64(b"two"), "Flags": 3}},
            {"KV": {"Verb": "get", "Key": f"{prefix}/t1"}},
        ]
    )
    assert (ok.ok, ok.errors, len(ok.entries)) == (True, (), 3)
    read = ok.entries[2]
    assert read is not None
    assert (read.key, read.value) == (f"{prefix}/t1", b"one")
    t2 = await aconsul.kv.get(f"{prefix}/t2")
    assert t2 is not None
    failed = await aconsul.kv.txn(
        [
            {"KV": {"Verb": "set", "Key": f"{prefix}/t3", "Value": b64(b"three")}},
            {
                "KV": {
                    "Verb": "cas",
                    "Key": f"{prefix}/t2",
                    "Value": "",
                    "Index": t2.modify_index + 9,
                }
            },
        ]
    )
    assert (failed.ok, failed.entries) == (False, ())
    assert any("index" in e.lower() for e in failed.errors)
    assert await aconsul.kv.get(f"{prefix}/t3") is None  # rolled back


async def test_blocking_get_woken_by_a_write(aconsul: AsyncConsul, prefix: str) -> None:
    key = f"{prefix}/watched"
    await aconsul.kv.put(key, b"before")
    first = await aconsul.kv.get_with_meta(key)
    woken: list[Any] = []

    async def watch() -> None:
        woken.append(await aconsul.kv.get_with_meta(key, index=first.meta.index, wait="60s"))

    with anyio.fail_after(WOKEN_WITHIN):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.2)  # let the query reach the server
            assert await aconsul.kv.put(key, b"after")  # on another pooled connection
    (result,) = woken
    assert result.meta.index > first.meta.index
    assert result.value is not None
    assert result.value.value == b"after"


async def test_blocking_list_woken_by_a_new_key(aconsul: AsyncConsul, prefix: str) -> None:
    first = await aconsul.kv.list_with_meta(f"{prefix}/")
    woken: list[Any] = []

    async def watch() -> None:
        # An empty prefix's index is the store's: a write anywhere else (another test on the
        # same agent) may wake the query first, with nothing new; a watcher asks again.
        index = first.meta.index
        while True:
            res = await aconsul.kv.list_with_meta(f"{prefix}/", index=index, wait="60s")
            woken.append(res)
            if res.value:
                return
            index = res.meta.index

    with anyio.fail_after(WOKEN_WITHIN):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.2)
            await aconsul.kv.put(f"{prefix}/new", b"1")
    result = woken[-1]
    assert all(r.meta.index > first.meta.index for r in woken)
    assert [e.key for e in result.value] == [f"{prefix}/new"]


async def test_blocking_get_without_change_returns_after_its_wait(
    aconsul: AsyncConsul, prefix: str
) -> None:
    await aconsul.kv.put(f"{prefix}/still", b"x")
    first = await aconsul.kv.get_with_meta(f"{prefix}/still")
    start = anyio.current_time()
    again = await aconsul.kv.get_with_meta(f"{prefix}/still", index=first.meta.index, wait="1s")
    assert anyio.current_time() - start >= 0.9  # Consul held it for its wait
    assert again.meta.index == first.meta.index
    assert again.value == first.value


# -- validation: refused before any request ----------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, p: c.kv.put(f"{p}/a//b", b"x"), "key"),
        (lambda c, p: c.kv.get(f"{p}/./a"), "key"),
        (lambda c, p: c.kv.delete(f"{p}/.."), "key"),
        (lambda c, p: c.kv.list(f"{p}/a//"), "prefix"),
        (lambda c, p: c.kv.put(f"{p}/big", b"v" * (MAX_VALUE_BYTES + 1)), "value"),
        (lambda c, p: c.kv.put(f"{p}/k", b"", cas=1, acquire="x"), "cas+acquire"),
        (lambda c, p: c.kv.put(f"{p}/k", b"", acquire="not-a-uuid"), "acquire"),
        (lambda c, p: c.kv.put(f"{p}/k", b"", flags=-1), "flags"),
        (lambda c, p: c.kv.get(f"{p}/k", index=-1), "index"),
        (lambda c, p: c.kv.get(f"{p}/k", index=1, wait="11m"), "wait"),
        (lambda c, p: c.kv.get(f"{p}/k", consistency="eventual"), "consistency"),
        (
            lambda c, p: c.kv.lock(
                f"{p}/k", b"v" * (MAX_TXN_VALUE_BYTES + 1), "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
            ),
            "value",
        ),
        (
            lambda c, p: c.kv.txn(
                [{"KV": {"Verb": "set", "Key": f"{p}/k", "Value": "A" * MAX_TXN_BODY_BYTES}}]
            ),
            "ops",
        ),
        (lambda c, p: c.sessions.create(ttl="5s"), "ttl"),
        (lambda c, p: c.sessions.create(behavior="Delete"), "behavior"),
        (lambda c, p: c.sessions.renew("nope"), "session_id"),
        (lambda c, p: c.sessions.node(""), "node"),
    ],
)
async def test_invalid_arguments_are_refused_before_any_request(
    consul_addr: str, prefix: str, call: Callable[[AsyncConsul, str], Any], field: str
) -> None:
    async with AsyncConsul(consul_addr) as fresh:
        with pytest.raises(ValidationError) as info:
            await call(fresh, prefix)
        assert info.value.field == field
        assert fresh.open_connections == 0  # nothing was sent


async def test_lock_many_all_or_none(
    aconsul: AsyncConsul, consul: Consul, prefix: str, new_session: Callable[..., str]
) -> None:
    keys = [f"{prefix}/many/{i}" for i in range(3)]
    mine, other = new_session(lock_delay=0), new_session()
    assert await aconsul.kv.lock(keys[1], b"theirs", other) is not None
    assert await aconsul.kv.lock_many(keys, b"mine", mine) == ((), keys[1])  # nothing written
    assert consul.kv.get(keys[0]) is None
    assert await aconsul.kv.put(keys[1], b"", release=other)
    entries, refused = await aconsul.kv.lock_many(keys, b"mine", mine, timeout=5.0)
    assert refused is None
    assert [(e.key, e.value, e.session) for e in entries] == [(k, b"mine", mine) for k in keys]
    assert list(entries) == [consul.kv.get(k) for k in keys]
