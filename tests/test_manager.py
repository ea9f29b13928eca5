"""LockManager against a real agent: acquire/release, fencing, close, watching, bad input."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from support import MakeManager, Recorder, in_thread, unique, wait_for

from locksmith import (
    Consul,
    ConsulUnavailable,
    FakeClock,
    Lease,
    LockDelayEvent,
    LockManager,
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
from locksmith.testing import FaultProxy


def _session_alive(consul: Consul, sid: str) -> bool:
    return consul.sessions.info(sid) is not None


# --------------------------------------------------------------------------- basics


def test_acquire_release_round_trip(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager(ttl="15s", lock_delay="5s")
    key = unique("t/basic")
    lock = mgr.lock(key, value=b"node-a")
    assert lock.state is LockState.UNLOCKED and not lock.held and lock.lease is None
    lease = lock.acquire(timeout=10)
    assert isinstance(lease, Lease)
    assert lease.key == key and lease.value == b"node-a"
    assert lease.session_id == mgr.current_session_id
    assert lock.held and lock.lease == lease and lock.state is LockState.HELD
    assert mgr.held_locks() == [lease]
    entry = consul.kv.get(key)
    assert entry is not None
    assert entry.session == lease.session_id and entry.value == b"node-a"
    assert entry.modify_index == lease.fencing_token
    info = consul.sessions.info(lease.session_id)
    assert info is not None
    assert info.ttl == 15.0 and info.lock_delay == 5.0 and info.behavior == "release"
    assert lock.release() is True
    assert not lock.held and lock.state is LockState.UNLOCKED
    entry = consul.kv.get(key)
    assert entry is not None and entry.session is None
    with pytest.raises(NotHeld):
        lock.release()


def test_busy_key_nonblocking_none_and_timeout(make_manager: MakeManager) -> None:
    key = unique("t/busy")
    a, b = make_manager(), make_manager()
    assert a.lock(key).acquire(timeout=10) is not None
    lock_b = b.lock(key)
    assert lock_b.acquire(blocking=False) is None
    assert lock_b.state is LockState.UNLOCKED
    with pytest.raises(LockTimeout):
        lock_b.acquire(timeout=0)
    with pytest.raises(LockTimeout):
        lock_b.acquire(timeout=0.5)
    assert not lock_b.held


def test_same_manager_second_lock_waits_locally(make_manager: MakeManager) -> None:
    mgr = make_manager()
    key = unique("t/local")
    first, second = mgr.lock(key), mgr.lock(key)
    assert first.acquire(timeout=10) is not None
    assert second.acquire(blocking=False) is None
    with pytest.raises(LockTimeout):
        second.acquire(timeout=0.2)
    first.release()
    lease = second.acquire(timeout=10)
    assert lease is not None and second.held and not first.held


def test_lock_delay_zero_reaches_the_server(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager(lock_delay=0)
    lease = mgr.lock(unique("t/ld0")).acquire(timeout=10)
    assert lease is not None
    info = consul.sessions.info(lease.session_id)
    assert info is not None and info.lock_delay == 0.0


def test_context_managers_release_and_destroy(consul: Consul, make_manager: MakeManager) -> None:
    key = unique("t/ctx")
    with make_manager(lock_delay="30s") as mgr:
        with mgr.lock(key) as lease:
            sid = lease.session_id
            entry = consul.kv.get(key)
            assert entry is not None and entry.session == sid
        entry = consul.kv.get(key)
        assert entry is not None and entry.session is None
        assert _session_alive(consul, sid)
    assert mgr.state is ManagerState.CLOSED
    assert not _session_alive(consul, sid)
    with pytest.raises(ManagerClosed):
        mgr.lock(key).acquire(timeout=1)


def test_fencing_tokens_increase_across_put_and_delete(
    consul: Consul, make_manager: MakeManager
) -> None:
    key = unique("t/fence")
    a, b, c = make_manager(), make_manager(), make_manager()
    tokens: list[int] = []
    lock_indexes: list[int] = []
    for i, (mgr, meddle) in enumerate([(a, "put"), (b, "delete"), (c, "put"), (a, "none")]):
        lock = mgr.lock(key, value=f"holder-{i}")
        lease = lock.acquire(timeout=10)
        assert lease is not None
        tokens.append(lease.fencing_token)
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == lease.session_id
        lock_indexes.append(entry.lock_index)
        for other in (a, b, c):
            if other is not mgr:
                assert other.lock(key).acquire(blocking=False) is None
        assert lock.release()
        if meddle == "put":
            assert consul.kv.put(key, b"someone else")
        elif meddle == "delete":
            assert consul.kv.delete(key)
    assert all(x < y for x, y in itertools.pairwise(tokens)), tokens
    # LockIndex would not have been a safe token: the PUTs and the DELETE reset it.
    assert not all(x < y for x, y in itertools.pairwise(lock_indexes)), lock_indexes


def test_plain_put_by_other_is_not_a_loss(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager()
    key = unique("t/put")
    lock = mgr.lock(key)
    lost: Recorder[LossEvent] = Recorder()
    lock.on_lost(lost)
    first = lock.acquire(timeout=10)
    assert first is not None
    assert consul.kv.put(key, b"overwritten")  # keeps the session, resets LockIndex
    # The watcher wakes on the PUT; a fenced write after it still goes through.
    assert lock.fenced_put(unique("t/put-data"), b"ok") > first.fencing_token
    assert not lost.wait(1, timeout=1.0)
    assert lock.held


def test_fenced_put_refused_when_the_lock_is_gone(
    consul: Consul, make_manager: MakeManager
) -> None:
    mgr = make_manager()
    key, data_key = unique("t/fp"), unique("t/fp-data")
    lock = mgr.lock(key)
    lease = lock.acquire(timeout=10)
    assert lease is not None
    index = lock.fenced_put(data_key, b"v1")
    entry = consul.kv.get(data_key)
    assert entry is not None and entry.value == b"v1" and entry.modify_index == index
    lost: Recorder[LossEvent] = Recorder()
    lock.on_lost(lost)
    # Released behind our back: the server refuses the write even before we notice.
    assert consul.kv.put(key, b"", release=lease.session_id)
    from locksmith import LockLost

    with pytest.raises(LockLost):
        lock.fenced_put(data_key, b"v2")
    entry = consul.kv.get(data_key)
    assert entry is not None and entry.value == b"v1"
    assert lost.wait(1)


# --------------------------------------------------------------------------- closing


def test_graceful_close_leaves_no_session_and_next_waiter_has_no_lock_delay(
    consul: Consul, make_manager: MakeManager
) -> None:
    key = unique("t/close")
    holder = make_manager(lock_delay="30s")
    waiter = make_manager()
    delays: Recorder[LockDelayEvent] = Recorder()
    waiter.on_lock_delay(delays)
    held = holder.lock(key).acquire(timeout=10)
    assert held is not None

    def wait() -> Lease:
        # 20 s < the holder's 30 s lock-delay: only a clean release lets this succeed.
        lease = waiter.lock(key).acquire(timeout=20)
        assert lease is not None
        return lease

    t, result = in_thread(wait)
    assert wait_for(lambda: waiter.snapshot().waiting == (key,), timeout=10)  # blocked on the key
    holder.close()
    t.join(30)
    assert not t.is_alive()
    assert len(result) == 1 and isinstance(result[0], Lease), result
    assert delays.events == []
    assert not _session_alive(consul, held.session_id)
    assert held.session_id not in {s.id for s in consul.sessions.list()}
    assert result[0].fencing_token > held.fencing_token


def test_close_ends_blocked_acquires(make_manager: MakeManager) -> None:
    key = unique("t/close-blocked")
    other, mgr = make_manager(), make_manager()
    assert other.lock(key).acquire(timeout=10) is not None
    mgr.lock(key + "-mine").acquire(timeout=10)
    errors: list[BaseException] = []

    def blocked(lock_key: str) -> None:
        try:
            mgr.lock(lock_key).acquire(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    remote = threading.Thread(target=blocked, args=(key,))  # waits on Consul
    local = threading.Thread(target=blocked, args=(key + "-mine",))  # waits on this manager
    remote.start()
    local.start()
    assert wait_for(lambda: mgr.snapshot().waiting == (key,), timeout=10)
    assert wait_for(lambda: mgr.snapshot().queued == (key + "-mine",), timeout=10)
    mgr.close()
    remote.join(30)
    local.join(30)
    assert not remote.is_alive() and not local.is_alive()
    assert len(errors) == 2 and all(isinstance(e, ManagerClosed) for e in errors), errors


def test_close_is_idempotent_and_works_unstarted(make_manager: MakeManager) -> None:
    mgr = make_manager()
    mgr.close()
    mgr.close()
    assert mgr.state is ManagerState.CLOSED
    with pytest.raises(ManagerClosed):
        mgr.start()


def test_existing_session_is_used_and_not_destroyed(
    consul: Consul, make_manager: MakeManager
) -> None:
    sid = consul.sessions.create(name=unique("t-own"), ttl="30s", lock_delay=0)
    try:
        with make_manager(session_id=sid) as mgr:
            lease = mgr.lock(unique("t/adopt")).acquire(timeout=10)
            assert lease is not None and lease.session_id == sid
        assert _session_alive(consul, sid)
        entry = consul.kv.get(lease.key)
        assert entry is not None and entry.session is None
    finally:
        consul.sessions.destroy(sid)


# --------------------------------------------------------------------------- watching


def test_many_locks_share_one_watch(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager()
    prefix = unique("t/many") + "/"
    locks = [mgr.lock(f"{prefix}k{i:02d}") for i in range(20)]
    lost: Recorder[LossEvent] = Recorder()
    mgr.on_lost(lost)
    for lock in locks:
        assert lock.acquire(timeout=10) is not None
    # Acquirer (this thread), renewer, watcher: not one connection per lock.
    assert mgr.consul.open_connections <= 3
    assert wait_for(lambda: mgr.snapshot().watches == (WatchTarget(prefix, True),), timeout=10)
    assert consul.kv.delete(locks[7].key)
    assert lost.wait(1)
    assert [e.key for e in lost.events] == [locks[7].key]
    assert lost.events[0].reason is LossReason.KEY_DELETED
    assert not locks[7].held
    assert all(lock.held for i, lock in enumerate(locks) if i != 7)
    assert mgr.consul.open_connections <= 3


def test_keys_without_a_common_directory_are_watched_one_by_one(
    consul: Consul, make_manager: MakeManager
) -> None:
    """Holding ``t/...`` and ``u/...`` must not watch the whole KV store (case 10)."""
    mgr = make_manager()
    first, second = mgr.lock(unique("t/a")), mgr.lock(unique("u/b"))
    lost: Recorder[LossEvent] = Recorder()
    mgr.on_lost(lost)
    assert first.acquire(timeout=10) is not None
    assert wait_for(lambda: mgr.snapshot().watches == (WatchTarget(first.key),), timeout=10)
    assert second.acquire(timeout=10) is not None
    both = (WatchTarget(first.key), WatchTarget(second.key))
    assert wait_for(lambda: mgr.snapshot().watches == both, timeout=15)
    assert consul.kv.delete(second.key)
    assert lost.wait(1, timeout=20)
    assert lost.events[0].key == second.key
    assert lost.events[0].reason is LossReason.KEY_DELETED
    assert first.held


def test_callback_errors_are_contained(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager()
    lock = mgr.lock(unique("t/cb"))
    good: Recorder[LossEvent] = Recorder()
    main = threading.current_thread().name

    def bad(event: LossEvent) -> None:
        raise RuntimeError(f"boom {event.key}")

    lock.on_lost(bad)
    lock.on_lost(good)
    lease = lock.acquire(timeout=10)
    assert lease is not None
    assert consul.kv.delete(lock.key)
    assert good.wait(1)
    assert good.threads == ["locksmith-callbacks"] and good.threads[0] != main
    # The manager keeps working after a callback raised.
    again = lock.acquire(timeout=10)
    assert again is not None and again.fencing_token > lease.fencing_token
    assert lock.held


# --------------------------------------------------------------------------- unreachable


def test_blocking_acquire_retries_unavailable_until_deadline(consul_addr: str) -> None:
    with FaultProxy(consul_addr) as proxy:
        proxy.blackhole()
        mgr = LockManager(Consul(proxy.addr, timeout=0.5), name=unique("t-unavail"))
        try:
            lock = mgr.lock(unique("t/unavail"))
            with pytest.raises(ConsulUnavailable):
                lock.acquire(blocking=False)
            with pytest.raises(LockTimeout) as info:
                lock.acquire(timeout=1.5)
            assert isinstance(info.value.__cause__, ConsulUnavailable)
            t, result = in_thread(lambda: lock.acquire(timeout=30))
            threading.Event().wait(1.0)  # let it fail a few times
            proxy.heal()
            proxy.reset_connections()  # hung connections: clients reconnect
            t.join(40)
            assert len(result) == 1 and isinstance(result[0], Lease), result
            assert lock.held
        finally:
            mgr.close()
            mgr.consul.close()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ttl": "5s"}, "ttl"),
        ({"ttl": "90000s"}, "ttl"),
        ({"ttl": "ten"}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"lock_delay": "61s"}, "lock_delay"),
        ({"lock_delay": -1}, "lock_delay"),
        ({"behavior": "Delete"}, "behavior"),
        ({"name": ""}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"checks": "serfHealth"}, "checks"),
        ({"checks": [""]}, "checks[0]"),
        ({"service_checks": "svc"}, "service_checks"),
        ({"node": ""}, "node"),
        ({"session_id": "not-a-uuid"}, "session_id"),
        ({"renew_fraction": 1.0}, "renew_fraction"),
        ({"renew_fraction": "half"}, "renew_fraction"),
        ({"clock": object()}, "clock"),
        ({"consul": "127.0.0.1:8500"}, "consul"),
    ],
)
def test_manager_arguments_validated(consul_addr: str, kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("consul", Consul(consul_addr))
    with pytest.raises(ValidationError) as info:
        LockManager(**kwargs)
    assert info.value.field == field


def test_lock_and_call_arguments_validated(consul: Consul, make_manager: MakeManager) -> None:
    name = unique("t-bad")
    mgr = make_manager(name=name)
    bad_lock_args: list[tuple[dict[str, Any], str]] = [
        ({"key": ""}, "key"),
        ({"key": "/abs"}, "key"),
        ({"key": 5}, "key"),
        ({"key": "k\x00"}, "key"),
        ({"key": "ok", "value": 123}, "value"),
        ({"key": "ok", "value": b"x" * (512 * 1024 + 1)}, "value"),
        ({"key": "ok", "flags": -1}, "flags"),
        ({"key": "ok", "flags": 2**64}, "flags"),
        ({"key": "ok", "flags": True}, "flags"),
    ]
    for kwargs, field in bad_lock_args:
        with pytest.raises(ValidationError) as info:
            mgr.lock(**kwargs)
        assert info.value.field == field, kwargs
    lock = mgr.lock(unique("t/bad"))
    bad_acquire: list[tuple[dict[str, Any], str]] = [
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"blocking": "yes"}, "blocking"),
        ({"blocking": False, "timeout": -1}, "timeout"),
    ]
    for kwargs, field in bad_acquire:
        with pytest.raises(ValidationError) as info:
            lock.acquire(**kwargs)
        assert info.value.field == field, kwargs
    for register in (lock.on_lost, mgr.on_lost, mgr.on_lock_delay):
        with pytest.raises(ValidationError) as info:
            register("not callable")  # type: ignore[arg-type]
        assert info.value.field == "callback"
    with pytest.raises(ValidationError):
        lock.fenced_put("/abs", b"x")
    # Nothing reached the server: no session was made, no key written.
    assert mgr.current_session_id is None
    assert all(s.name != name for s in consul.sessions.list())
    assert consul.kv.get(lock.key) is None


def test_unknown_check_fails_at_acquire_and_leaves_nothing(
    consul: Consul, make_manager: MakeManager
) -> None:
    from locksmith import BadRequest

    name = unique("t-nocheck")
    mgr = make_manager(name=name, checks=["no-such-check"])
    lock = mgr.lock(unique("t/nocheck"))
    with pytest.raises(BadRequest):
        lock.acquire(timeout=5)
    assert lock.state is LockState.UNLOCKED
    assert all(s.name != name for s in consul.sessions.list())
    assert consul.kv.get(lock.key) is None


def test_fake_clock_is_accepted(consul_addr: str) -> None:
    mgr = LockManager(Consul(consul_addr), clock=FakeClock())
    mgr.close()
    assert mgr.state is ManagerState.CLOSED
