"""The async recipes against a real agent, on asyncio and trio: election, singleton,
registration, semaphore; and the mixed interop of async, threaded and ``consul lock``
holders on one key."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import CHILD, child_env, max_concurrent, read_lines, unique

from locksmith import (
    Consul,
    ConsulUnavailable,
    LeaderInfo,
    LeadershipEvent,
    Lease,
    LockConflict,
    LockLost,
    LockManager,
    LossReason,
    ManagerClosed,
)
from locksmith.aio import AsyncConsul, AsyncLockManager
from locksmith.testing import FaultProxy, find_consul

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def manager(addr: str, **kw: Any) -> AsyncIterator[AsyncLockManager]:
    kw.setdefault("ttl", "15s")
    kw.setdefault("lock_delay", 0)
    kw.setdefault("name", unique("aio-recipe"))
    async with AsyncConsul(addr, timeout=5.0) as consul, AsyncLockManager(consul, **kw) as mgr:
        yield mgr


async def _wait_until(pred: Any, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.02)


async def _until_key(mgr: AsyncLockManager, key: str, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        while await mgr.consul.kv.get(key) is None:
            await anyio.sleep(0.02)


# --------------------------------------------------------------------------- election


async def test_election_campaign_observe_and_resign(consul_addr: str, key: str) -> None:
    async with manager(consul_addr) as a, manager(consul_addr) as b:
        ea, eb = a.election(key, b"a"), b.election(key, b"b")
        seen: list[LeaderInfo | None] = []

        async def observe() -> None:
            async with aclosing(eb.observe()) as changes:
                async for leader in changes:
                    seen.append(leader)

        async with anyio.create_task_group() as tg:
            tg.start_soon(observe)
            lease = await ea.campaign(timeout=10)
            assert ea.is_leader and (await eb.leader()) is not None
            await ea.proclaim(b"a-2")
            won: list[Lease] = []

            async def campaign_b() -> None:
                won.append(await eb.campaign(timeout=20))

            tg.start_soon(campaign_b)
            await anyio.sleep(0.3)
            assert await ea.resign() is True
            await _wait_until(lambda: won)
            await _wait_until(lambda: seen and seen[-1] is not None and seen[-1].value == b"b")
            tg.cancel_scope.cancel()
        values = [s.value if s else None for s in seen]
        assert values[0] in (None, b"a")
        assert b"a-2" in values and values[-1] == b"b"
        assert won[0].fencing_token > lease.fencing_token


async def test_run_is_cancelled_on_loss_and_rejoins(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as mgr:
        election = mgr.election(key, b"me")
        deposed: list[LeadershipEvent] = []
        election.on_deposed(deposed.append)
        runs: list[tuple[int, str]] = []

        async def lead(lease: Lease) -> str:
            if not runs:
                runs.append((lease.fencing_token, "first"))
                try:
                    await anyio.sleep(60)  # cancelled when leadership is lost
                finally:
                    runs.append((lease.fencing_token, "cancelled"))
            runs.append((lease.fencing_token, "second"))
            return "done"

        async with anyio.create_task_group() as tg:

            async def run() -> None:
                assert await election.run(lead, rejoin=True, timeout=30) == "done"

            tg.start_soon(run)
            await _wait_until(lambda: runs)
            consul.sessions.destroy((runs[0][0] and mgr.current_session_id) or "")
        assert [r[1] for r in runs] == ["first", "cancelled", "second"]
        assert runs[2][0] > runs[0][0]
        await _wait_until(lambda: deposed)
        assert deposed[0].reason is LossReason.SESSION_INVALIDATED


async def test_run_without_rejoin_raises_lock_lost(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as mgr:
        election = mgr.election(key)

        async def lead(lease: Lease) -> None:
            consul.kv.delete(key)
            await anyio.sleep(60)

        with pytest.raises(LockLost):
            await election.run(lead, rejoin=False)


# --------------------------------------------------------------------------- singleton


async def test_singleton_runs_in_one_place(consul_addr: str, key: str) -> None:
    async with manager(consul_addr) as a, manager(consul_addr) as b:
        async with a.singleton(key, timeout=0) as first:
            assert first is not None
            async with b.singleton(key, timeout=0) as second:
                assert second is None
        ran: list[str] = []

        @b.singleton(key, timeout=5)
        async def job() -> str:
            ran.append("b")
            return "ok"

        assert await job() == "ok" and ran == ["b"]


# --------------------------------------------------------------------------- registration


async def test_registration_comes_back_after_its_session_is_destroyed(
    consul: Consul, consul_addr: str, key: str
) -> None:
    async with manager(consul_addr) as mgr:
        reg = await mgr.register(key, b"host-a")
        back: list[Lease] = []
        reg.on_reregistered(back.append)
        first = reg.lease
        assert first is not None and reg.active
        consul.sessions.destroy(first.session_id)
        await _wait_until(lambda: back, 30)
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == back[0].session_id
        await reg.aclose()
        assert consul.kv.get(key) is None


# --------------------------------------------------------------------------- semaphore


async def test_semaphore_limit_and_conflicts(consul_addr: str, prefix: str) -> None:
    async with (
        manager(consul_addr) as a,
        manager(consul_addr) as b,
        manager(consul_addr) as c,
    ):
        s1, s2, s3 = (m.semaphore(prefix, 2) for m in (a, b, c))
        assert await s1.acquire(timeout=10) is not None
        assert await s2.acquire(timeout=10) is not None
        assert await s3.acquire(blocking=False) is None
        assert len(await s1.holders()) == 2
        with pytest.raises(LockConflict, match="limit"):
            await c.semaphore(prefix, 3).acquire(timeout=1)
        await s1.release()
        assert await s3.acquire(timeout=10) is not None


async def test_a_semaphore_wait_ends_with_manager_closed_when_the_manager_closes(
    consul_addr: str, prefix: str
) -> None:
    """Not "the contender session ended": that LockError reads as a fault of the semaphore."""
    async with manager(consul_addr) as holder, manager(consul_addr) as waiter:
        assert await holder.semaphore(prefix, 1).acquire(timeout=10) is not None
        outcome: list[BaseException | Lease | None] = []

        async def wait() -> None:
            try:
                outcome.append(await waiter.semaphore(prefix, 1).acquire(timeout=30))
            except Exception as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _wait_until(lambda: len(waiter.session_ids) == 1)  # its contender session
            (sid,) = waiter.session_ids
            await _until_key(waiter, f"{prefix}/{sid}")  # its contender key: it waits
            with anyio.fail_after(15):
                await waiter.aclose()
        assert outcome and isinstance(outcome[0], ManagerClosed), outcome


async def test_semaphore_outside_reset_is_a_loss(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    from locksmith import CONSUL_SEMAPHORE_FLAGS

    async with manager(consul_addr) as mgr:
        sem = mgr.semaphore(prefix, 1)
        lost: list[Any] = []
        sem.on_lost(lost.append)
        lease = await sem.acquire(timeout=10)
        assert lease is not None
        reset = json.dumps({"Limit": 1, "Holders": {}}).encode()
        consul.kv.put(f"{prefix}/.lock", reset, flags=CONSUL_SEMAPHORE_FLAGS)
        await _wait_until(lambda: lost)
        assert lost[0].reason is LossReason.RELEASED_BY_OTHER and not sem.held


# --------------------------------------------------------------------------- interop


async def test_async_threaded_and_consul_lock_never_overlap(
    consul_addr: str, prefix: str, tmp_path: Path
) -> None:
    """An async holder, a threaded holder and ``consul lock`` take turns on one key."""
    log = tmp_path / "holders.jsonl"
    intervals: list[tuple[str, float, float]] = []
    consul_bin = str(find_consul())
    stop = threading.Event()

    def threaded() -> None:
        with LockManager(Consul(consul_addr), ttl="15s", lock_delay=0, name="interop-t") as mgr:
            lock = mgr.consul_lock(prefix)
            while not stop.is_set():
                with lock:
                    start = time.time()
                    time.sleep(0.05)
                    intervals.append(("threaded", start, time.time()))

    thread = threading.Thread(target=threaded)
    thread.start()
    procs = [
        subprocess.Popen(
            [
                consul_bin,
                "lock",
                f"-http-addr={consul_addr}",
                prefix,
                sys.executable,
                CHILD,
                str(log),
                "--hold",
                "0.05",
            ],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        async with manager(consul_addr, name="interop-a") as mgr:
            lock = mgr.consul_lock(prefix)
            for _ in range(10):
                async with lock:
                    start = time.time()
                    await anyio.sleep(0.05)
                    intervals.append(("async", start, time.time()))
    finally:
        stop.set()
        thread.join(30)
        for p in procs:
            p.wait(60)
    lines = read_lines(log)
    assert max_concurrent(lines) == 1
    starts = {line["pid"]: line["t"] for line in lines if line["event"] == "start"}
    children = [
        ("consul-lock", starts[line["pid"]], line["t"])
        for line in lines
        if line["event"] == "end" and line["pid"] in starts
    ]
    everyone = sorted([*intervals, *children], key=lambda iv: iv[1])
    assert {who for who, _, _ in everyone} == {"async", "threaded", "consul-lock"}
    for (w1, _s1, e1), (w2, s2, _e2) in itertools.pairwise(everyone):
        assert e1 <= s2, f"{w1} until {e1} overlaps {w2} from {s2}"


async def test_a_semaphore_waits_out_its_own_contender_key_release_given_up_on(
    consul_addr: str, prefix: str
) -> None:
    """The contender key's release could not reach Consul: the session keeps off the key
    until that release can no longer land. A blocking acquire waits that out (it used to
    raise "cannot create the contender key"); a non-blocking one answers None."""
    with FaultProxy(consul_addr) as proxy:
        async with (
            AsyncConsul(proxy.addr, timeout=1.0) as consul,
            AsyncLockManager(consul, ttl="10s", lock_delay=0, name=unique("aio-sem")) as mgr,
        ):
            sem = mgr.semaphore(prefix, 2)
            assert await sem.acquire(timeout=10) is not None
            proxy.blackhole()
            with anyio.fail_after(15):
                await sem.release()  # deferred: Consul cannot be reached
            proxy.heal()
            assert await sem.acquire(blocking=False) is None
            with anyio.fail_after(40):
                assert await sem.acquire(timeout=30) is not None
            await sem.release()


@pytest.mark.parametrize("applied", [False, True], ids=["lost", "applied-unanswered"])
async def test_a_semaphore_retries_a_slot_write_consul_did_not_answer(
    consul_addr: str, prefix: str, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    """The async twin of tests/test_semaphore.py's: a blocking acquire retries the CAS."""
    async with manager(consul_addr) as mgr:
        sem = mgr.semaphore(prefix, 2)
        real_cas = sem._cas
        failures: list[int] = []

        async def flaky_cas(index: int, holders: dict[str, bool]) -> Any:
            if len(failures) < 2:
                failures.append(index)
                if applied:
                    await real_cas(index, holders)
                raise ConsulUnavailable("did not answer (injected)")
            return await real_cas(index, holders)

        monkeypatch.setattr(sem, "_cas", flaky_cas)
        lease = await sem.acquire(timeout=20)
        assert lease is not None and len(failures) == 2
        raw = await mgr.consul.kv.get(f"{prefix}/.lock")
        assert raw is not None and raw.modify_index == lease.fencing_token
        assert json.loads(raw.value)["Holders"] == {lease.session_id: True}
        assert await sem.release() is True
        failures.clear()
        with pytest.raises(ConsulUnavailable):
            await sem.acquire(blocking=False)


async def test_a_semaphore_waiter_whose_contender_session_ends_contends_again(
    consul_addr: str, prefix: str
) -> None:
    """The async twin of tests/test_semaphore.py's: a new session, the slot in the end."""
    async with manager(consul_addr) as holder, manager(consul_addr) as waiter:
        sem_h, sem_w = holder.semaphore(prefix, 1), waiter.semaphore(prefix, 1)
        assert await sem_h.acquire(timeout=10) is not None
        outcome: list[BaseException | Lease | None] = []

        async def wait() -> None:
            try:
                outcome.append(await sem_w.acquire(timeout=30))
            except Exception as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await _wait_until(lambda: len(waiter.session_ids) == 1)
            (first,) = waiter.session_ids
            await _until_key(waiter, f"{prefix}/{first}")  # its contender key: it waits
            await waiter.consul.sessions.destroy(first)
            await _wait_until(lambda: first not in waiter.session_ids)
            assert await sem_h.release() is True
        assert outcome and isinstance(outcome[0], Lease), outcome
        assert outcome[0].session_id != first
        assert await sem_w.holders() == [outcome[0].session_id]
        assert await sem_w.release() is True
