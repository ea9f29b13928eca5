"""AsyncLockManager against a real agent, on asyncio and trio: the async twins of the
manager, loss, cancellation and bad-input tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from support import unique

from locksmith import (
    Consul,
    Lease,
    LockConflict,
    LockLost,
    LockState,
    LockTimeout,
    LossEvent,
    LossReason,
    ManagerClosed,
    ManagerState,
    NotHeld,
    ValidationError,
    WatchTarget,
)
from locksmith.aio import AsyncConsul, AsyncLockManager
from locksmith.testing import FaultProxy

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def manager(addr: str, timeout: float = 5.0, **kw: Any) -> AsyncIterator[AsyncLockManager]:
    kw.setdefault("ttl", "15s")
    kw.setdefault("lock_delay", 0)
    kw.setdefault("name", unique("aio-test"))
    async with AsyncConsul(addr, timeout=timeout) as consul, AsyncLockManager(consul, **kw) as mgr:
        yield mgr


async def _wait_until(pred: Any, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.02)


# --------------------------------------------------------------------------- basics


async def test_acquire_release_round_trip(consul: Consul, consul_addr: str, key: str) -> None:
    async with manager(consul_addr, lock_delay="5s") as mgr:
        lock = mgr.lock(key, value=b"node-a")
        assert lock.state is LockState.UNLOCKED and lock.lease is None
        lease = await lock.acquire(timeout=10)
        assert isinstance(lease, Lease) and lease.key == key and lease.value == b"node-a"
        assert lock.held and lock.lease is lease and lock.state is LockState.HELD
        assert mgr.held_locks() == [lease]
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == lease.session_id
        assert entry.modify_index == lease.fencing_token
        session = consul.sessions.info(lease.session_id)
        assert session is not None and session.ttl == 15.0 and session.lock_delay == 5.0
        assert await lock.release(lease) is True
        assert not lock.held and lock.state is LockState.UNLOCKED
        with pytest.raises(NotHeld):
            await lock.release()
        async with lock as again:
            assert again.fencing_token > lease.fencing_token
        sid = mgr.current_session_id
    assert sid is not None and consul.sessions.info(sid) is None  # destroyed on exit


async def test_an_async_waiter_gets_the_key_when_the_holder_releases(
    consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as holder, manager(consul_addr) as waiter:
        holder_lock = holder.lock(key)
        held = await holder_lock.acquire(timeout=10)
        assert held is not None
        got: list[Lease] = []

        async def wait() -> None:
            lease = await waiter.lock(key).acquire(timeout=30)
            assert lease is not None
            got.append(lease)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _wait_until(lambda: waiter.snapshot().waiting == (key,))
            assert waiter.snapshot().watches == (WatchTarget(key),)
            with pytest.raises(ValidationError):
                await holder.lock(key).release(held)  # not a lease of that AsyncLock object
            assert await holder_lock.release(held) is True
        assert got and got[0].fencing_token > held.fencing_token


async def test_many_waiting_tasks_share_one_watch(consul_addr: str, prefix: str) -> None:
    async with manager(consul_addr) as holder, manager(consul_addr) as waiter:
        keys = [f"{prefix}/k{i:03d}" for i in range(100)]
        held = [holder.lock(k) for k in keys]
        leases = [await lock.acquire(timeout=10) for lock in held]
        got: list[Lease] = []

        async def wait(k: str) -> None:
            lease = await waiter.lock(k).acquire(timeout=60)
            assert lease is not None
            got.append(lease)

        async with anyio.create_task_group() as tg:
            for k in keys:
                tg.start_soon(wait, k)
            await _wait_until(lambda: len(waiter.snapshot().waiting) == len(keys), 30)
            assert waiter.snapshot().watches == (WatchTarget(f"{prefix}/", True),)
            assert waiter.consul.open_connections <= 4
            for lock, lease in zip(held, leases, strict=True):
                assert lease is not None
                await lock.release(lease)
        assert sorted(lease.key for lease in got) == keys


# --------------------------------------------------------------------------- loss


async def test_loss_reaches_callbacks_the_end_event_and_a_guarded_block(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as mgr:
        lock = mgr.lock(key)
        sync_events: list[LossEvent] = []
        async_events: list[LossEvent] = []

        async def on_lost_async(event: LossEvent) -> None:
            await anyio.sleep(0)
            async_events.append(event)

        lock.on_lost(sync_events.append)
        mgr.on_lost(on_lost_async)
        cancelled_at = []
        with pytest.raises(LockLost, match="key_deleted"):
            async with lock.guard() as lease:
                ended = lock.ended(lease)
                consul.kv.delete(key)
                try:
                    await anyio.sleep(30)
                finally:
                    cancelled_at.append(ended.is_set())
        assert cancelled_at == [True]
        await _wait_until(lambda: sync_events and async_events)
        assert sync_events[0].reason is async_events[0].reason is LossReason.KEY_DELETED
        assert not lock.held


async def test_release_after_a_takeover_reports_the_loss(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as mgr:
        lock = mgr.lock(key)
        lost: list[LossEvent] = []
        lock.on_lost(lost.append)
        lease = await lock.acquire(timeout=10)
        assert lease is not None
        thief = consul.sessions.create(ttl="10s", lock_delay="0s")
        try:
            assert consul.kv.delete(key) and consul.kv.put(key, b"x", acquire=thief)
            assert await lock.release(lease) is False
            await _wait_until(lambda: lost)
            await anyio.sleep(0.5)
            assert len(lost) == 1
        finally:
            consul.sessions.destroy(thief)


# --------------------------------------------------------------------------- cancellation


async def test_cancelling_a_waiting_acquire_leaves_nothing(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as holder, manager(consul_addr) as mgr:
        assert await holder.lock(key).acquire(timeout=10) is not None
        with anyio.move_on_after(1.0) as scope:
            await mgr.lock(key).acquire()
        assert scope.cancelled_caught
        snap = mgr.snapshot()
        assert snap.waiting == () and snap.held == ()
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == holder.current_session_id
        # The pool still works after the cancelled request.
        other = await mgr.lock(key + "-2").acquire(timeout=10)
        assert other is not None


async def test_cancelling_after_the_acquire_was_applied_gives_the_key_back(
    consul: Consul, consul_addr: str, key: str
) -> None:
    with FaultProxy(consul_addr) as proxy:
        async with manager(proxy.addr, timeout=3.0) as mgr:
            lock = mgr.lock(key)
            warm = await lock.acquire(timeout=10)
            assert warm is not None and await lock.release(warm)
            proxy.delay(2.0, direction="down")  # the txn is applied; its answer is late
            with anyio.move_on_after(0.5) as scope:
                await lock.acquire(timeout=10)
            assert scope.cancelled_caught
            proxy.heal()
            assert not lock.held and lock.state is LockState.UNLOCKED

            def given_back() -> bool:
                entry = consul.kv.get(key)
                return (
                    entry is not None
                    and entry.session is None
                    and entry.modify_index > warm.fencing_token + 1
                )

            await _wait_until(given_back, 20)
            assert await lock.acquire(timeout=10) is not None  # the pool works


async def test_cancelling_the_task_that_runs_a_manager_releases_and_destroys(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    seen: list[str] = []
    with anyio.move_on_after(2.0) as scope:
        async with manager(consul_addr) as mgr:
            for i in range(3):
                lease = await mgr.lock(f"{prefix}/{i}").acquire(timeout=10)
                assert lease is not None
            sid = mgr.current_session_id
            assert sid is not None
            seen.append(sid)
            await anyio.sleep(30)  # cancelled here: close still runs (shielded)
    assert scope.cancelled_caught and seen
    assert consul.sessions.info(seen[0]) is None
    assert all(e.session is None for e in consul.kv.list(prefix))


# --------------------------------------------------------------------------- lifecycle


async def test_a_manager_must_be_entered_and_is_closed_after(consul_addr: str, key: str) -> None:
    mgr = AsyncLockManager(AsyncConsul(consul_addr), ttl="15s", lock_delay=0)
    with pytest.raises(ManagerClosed, match="async with"):
        await mgr.lock(key).acquire(timeout=1)
    async with mgr:
        assert mgr.state is ManagerState.RUNNING
    assert mgr.snapshot().state is ManagerState.CLOSED
    with pytest.raises(ManagerClosed):
        await mgr.lock(key).acquire(timeout=1)
    await mgr.consul.aclose()


async def test_bad_input_is_refused_before_any_request(consul: Consul, consul_addr: str) -> None:
    name = unique("aio-bad")
    rows: list[tuple[dict[str, Any], str]] = [
        ({"ttl": None}, "ttl"),
        ({"ttl": "5s"}, "ttl"),
        ({"lock_delay": 61}, "lock_delay"),
        ({"behavior": "DELETE"}, "behavior"),
        ({"watch_budget": 0}, "watch_budget"),
    ]
    for kwargs, field in rows:
        with pytest.raises(ValidationError) as info:
            AsyncLockManager(AsyncConsul(consul_addr), **kwargs)
        assert info.value.field == field
    async with manager(consul_addr, name=name) as mgr:
        for bad_key in ("", "/abs", "a//b", "a/./b"):
            with pytest.raises(ValidationError):
                mgr.lock(bad_key)
        with pytest.raises(ValidationError):
            mgr.lock("ok", b"x" * 400_000)
        lock = mgr.lock(unique("locksmith-test/bad"))
        with pytest.raises(ValidationError):
            await lock.acquire(timeout=-1)
        with pytest.raises(ValidationError):
            await lock.acquire(blocking="no")  # type: ignore[arg-type]
        with pytest.raises(LockLost):
            await lock.fenced_put("k", b"v")
        assert mgr.current_session_id is None
    assert all(s.name != name for s in consul.sessions.list())


async def test_foreign_flags_are_a_conflict(consul: Consul, consul_addr: str, prefix: str) -> None:
    async with manager(consul_addr) as a, manager(consul_addr) as b:
        assert await a.consul_lock(prefix).acquire(timeout=10) is not None
        with pytest.raises(LockConflict):
            await b.lock(f"{prefix}/.lock").acquire(timeout=1)


async def test_timeout(consul_addr: str, key: str) -> None:
    async with manager(consul_addr) as holder, manager(consul_addr) as mgr:
        assert await holder.lock(key).acquire(timeout=10) is not None
        with pytest.raises(LockTimeout):
            await mgr.lock(key).acquire(timeout=0.5)
        assert await mgr.lock(key).acquire(blocking=False) is None


# --------------------------------------------------------------------------- lock_many


async def test_a_set_is_all_or_none_and_a_cancelled_set_gives_back_what_it_took(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    keys = [f"{prefix}/k{i:03d}" for i in range(100)]
    async with manager(consul_addr) as holder, manager(consul_addr) as mgr:
        blocker = holder.lock(keys[-1])
        assert await blocker.acquire(timeout=10) is not None
        locks = mgr.lock_many(keys, value="job")
        with anyio.move_on_after(0.5):
            await locks.acquire()  # the second batch waits for the blocker: cancelled
        assert not locks.held
        sid = await mgr.session()

        def ours() -> list[str]:
            return [e.key for e in consul.kv.list(prefix + "/") if e.session == sid]

        await _wait_until(lambda: not ours())  # the first batch was given back
        await blocker.release()
        async with locks as lease_set:
            assert len(lease_set) == 100 and sorted(ours()) == keys
            modify = {e.modify_index for e in consul.kv.list(prefix + "/")}
            assert max(modify) == lease_set.fencing_token and len(modify) == 2
        assert not ours()


async def test_a_cancelled_close_still_releases_and_destroys(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as mgr:
        lease = await mgr.lock(key).acquire(timeout=10)
        assert lease is not None
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled before it even starts
            await mgr.aclose()
        entry = consul.kv.get(key)
        assert entry is not None and entry.session is None
        assert all(s.id != lease.session_id for s in consul.sessions.list())


async def test_a_cancelled_campaign_leaves_nothing(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as leader, manager(consul_addr) as candidate:
        leading = leader.election(key)
        assert await leading.campaign(timeout=10) is not None
        election = candidate.election(key)
        with anyio.move_on_after(0.3) as scope:
            await election.campaign()
        assert scope.cancelled_caught and not election.is_leader
        snap = candidate.snapshot()
        assert snap.waiting == () and snap.held == ()
        await leading.resign()
        assert await election.campaign(timeout=10) is not None  # the pool still works
        assert (await election.leader()) is not None


async def test_a_partition_cancels_a_guarded_block_at_the_lease_deadline(
    consul_addr: str, key: str
) -> None:
    """The async twin of the fault suite's partition case: Consul unreachable, the holder's
    block is cancelled at the lease deadline (last renewal + TTL), not when Consul returns."""
    with FaultProxy(consul_addr) as proxy:
        async with manager(proxy.addr, timeout=1.0, ttl="10s") as mgr:
            lock = mgr.lock(key)
            reached_end = False
            with pytest.raises(LockLost, match="lease_expired"):
                async with lock.guard(timeout=10) as lease:
                    proxy.blackhole()
                    started = mgr.clock.monotonic()
                    await anyio.sleep(60)  # cancelled at the lease deadline
                    reached_end = True
            assert not reached_end and not lock.held
            assert mgr.clock.monotonic() - started < 30
            assert lease.fencing_token > 0
            proxy.heal()
