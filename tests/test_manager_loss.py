"""LockManager noticing loss against a real agent: each cause, its reason, and what follows."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time

import pytest
from support import (
    LOCK_CHILD,
    MakeManager,
    Recorder,
    agent_call,
    child_env,
    in_thread,
    unique,
    wait_for,
)

from locksmith import (
    Consul,
    Lease,
    Lock,
    LockDelayEvent,
    LockLost,
    LockManager,
    LockState,
    LossEvent,
    LossReason,
)
from locksmith.testing import FaultProxy


def _held(mgr: LockManager, key: str) -> tuple[Lock, Lease, Recorder[LossEvent]]:
    lock = mgr.lock(key, value=b"mine")
    lost: Recorder[LossEvent] = Recorder()
    lock.on_lost(lost)
    lease = lock.acquire(timeout=10)
    assert lease is not None
    return lock, lease, lost


def _assert_lost_once(
    lock: Lock, lease: Lease, lost: Recorder[LossEvent], reason: LossReason
) -> None:
    assert lost.wait(1, timeout=20), "on_lost never fired"
    event = lost.events[0]
    assert (event.key, event.reason, event.lease) == (lease.key, reason, lease)
    assert not lock.held and lock.lease is None
    assert lock.state is LockState.LOST
    with pytest.raises(LockLost):
        lock.fenced_put(lease.key + "-data", b"late")
    time.sleep(0.5)  # a duplicate would be dispatched right behind the first
    assert len(lost.events) == 1, lost.events


# --------------------------------------------------------------------------- session ends


def test_session_destroyed_from_outside(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager(lock_delay=0)
    mgr_lost: Recorder[LossEvent] = Recorder()
    mgr.on_lost(mgr_lost)
    lock, lease, lost = _held(mgr, unique("l/destroy"))
    consul.sessions.destroy(lease.session_id)
    _assert_lost_once(lock, lease, lost, LossReason.SESSION_INVALIDATED)
    assert [e.reason for e in mgr_lost.events] == [LossReason.SESSION_INVALIDATED]
    # The same Lock acquires again, on a fresh session.
    again = lock.acquire(timeout=10)
    assert again is not None and lock.held
    assert again.session_id != lease.session_id
    assert again.fencing_token > lease.fencing_token
    assert lock.release() is True


def test_health_check_critical(consul: Consul, consul_addr: str, make_manager: MakeManager) -> None:
    check = unique("locksmith-ttl-check")
    status, text = agent_call(
        consul_addr,
        "PUT",
        "/v1/agent/check/register",
        {"ID": check, "Name": check, "TTL": "300s", "Status": "passing"},
    )
    assert status == 200, text
    try:
        # Bound checks need lock_delay >= ttl (the library refuses less).
        mgr = make_manager(checks=[check, "serfHealth"], ttl="15s", lock_delay="15s")
        lock, lease, lost = _held(mgr, unique("l/check"))
        info = consul.sessions.info(lease.session_id)
        assert info is not None and set(info.node_checks) == {check, "serfHealth"}
        status, text = agent_call(consul_addr, "PUT", f"/v1/agent/check/fail/{check}")
        assert status == 200, text
        _assert_lost_once(lock, lease, lost, LossReason.SESSION_INVALIDATED)
        assert consul.sessions.info(lease.session_id) is None
    finally:
        agent_call(consul_addr, "PUT", f"/v1/agent/check/deregister/{check}", check=False)


# --------------------------------------------------------------------------- key changes


def test_key_released_by_another_client(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager()
    lock, lease, lost = _held(mgr, unique("l/released"))
    assert consul.kv.put(lease.key, b"", release=lease.session_id)
    _assert_lost_once(lock, lease, lost, LossReason.RELEASED_BY_OTHER)
    # Our session survived: no lock-delay, the same session takes the key again.
    assert consul.sessions.info(lease.session_id) is not None
    again = lock.acquire(timeout=5)
    assert again is not None and again.session_id == lease.session_id


def test_key_deleted(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager()
    lock, lease, lost = _held(mgr, unique("l/deleted"))
    assert consul.kv.delete(lease.key)
    _assert_lost_once(lock, lease, lost, LossReason.KEY_DELETED)
    again = lock.acquire(timeout=5)
    assert again is not None and again.fencing_token > lease.fencing_token


def test_key_taken_by_another_session(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager()
    lock, lease, lost = _held(mgr, unique("l/taken"))
    thief = consul.sessions.create(name=unique("thief"), lock_delay=0)
    try:
        # Release and re-acquire in one transaction: the watcher only sees the key taken.
        value = base64.b64encode(b"thief").decode()
        out = consul.kv.txn(
            [
                {"KV": {"Verb": "unlock", "Key": lease.key, "Session": lease.session_id}},
                {"KV": {"Verb": "lock", "Key": lease.key, "Value": value, "Session": thief}},
            ]
        )
        assert out.ok, out.errors
        _assert_lost_once(lock, lease, lost, LossReason.KEY_TAKEN)
        assert lock.acquire(blocking=False) is None
    finally:
        consul.sessions.destroy(thief)


# --------------------------------------------------------------------------- lock-delay


def test_waiter_acquires_after_lock_delay_window(consul: Consul, make_manager: MakeManager) -> None:
    lock_delay = 2.5
    key = unique("l/delay")
    holder = make_manager(lock_delay=lock_delay)
    waiter = make_manager(lock_delay=0)
    delays: Recorder[LockDelayEvent] = Recorder()
    waiter.on_lock_delay(delays)
    held = holder.lock(key).acquire(timeout=10)
    assert held is not None
    t, result = in_thread(lambda: waiter.lock(key).acquire(timeout=30))
    assert wait_for(lambda: waiter.snapshot().waiting == (key,), timeout=10)
    sent = time.monotonic()
    consul.sessions.destroy(held.session_id)  # invalidation starts the window
    done = time.monotonic()
    t.join(40)
    assert len(result) == 1 and isinstance(result[0], Lease), result
    lease = result[0]
    assert delays.wait(1, timeout=5)
    event = delays.events[0]
    assert event.key == key and event.known
    assert event.previous_session == held.session_id
    # The server refuses the key until its window ends, which starts after `sent`.
    assert lease.acquired_at >= sent + lock_delay
    assert sent + lock_delay <= event.until <= done + lock_delay + 2.0
    lateness = lease.acquired_at - (done + lock_delay)
    print(f"lock-delay: acquired {lateness * 1000:.1f} ms after the window's latest end")
    assert lateness < 2.0
    assert lease.fencing_token > held.fencing_token


# --------------------------------------------------------------------------- deadline


@pytest.mark.slow
def test_agent_unreachable_past_lease_deadline(
    consul: Consul, consul_addr: str, make_manager: MakeManager
) -> None:
    """Blackholed past TTL: presumed lost at the deadline; cleaned up once Consul is back."""
    with FaultProxy(consul_addr) as proxy:
        mgr = make_manager(addr=proxy.addr, timeout=2.0, ttl="10s", lock_delay="60s")
        lock, lease, lost = _held(mgr, unique("l/unreachable"))
        other = make_manager()  # talks to the agent directly
        proxy.blackhole()
        cut = time.monotonic()
        assert lost.wait(1, timeout=25)
        event = lost.events[0]
        assert event.reason is LossReason.LEASE_EXPIRED
        assert cut < event.detected_at <= cut + 10.0 + 1.0  # at the local deadline, not 2xTTL
        assert not lock.held
        with pytest.raises(LockLost):
            lock.fenced_put(lease.key + "-data", b"late")
        # The server still has the session (it reaps at 2xTTL): the key is still ours there.
        entry = consul.kv.get(lease.key)
        assert entry is not None and entry.session == lease.session_id
        proxy.heal()
        proxy.reset_connections()  # hung connections: clients reconnect
        # Cleanup: the key is released (no lock-delay), then the session destroyed.
        assert wait_for(lambda: consul.sessions.info(lease.session_id) is None, timeout=15)
        assert time.monotonic() < cut + 20.0, "reaped by the server, not cleaned up by us"
        taken = other.lock(lease.key).acquire(blocking=False)
        assert taken is not None, "the key is under lock-delay: destroyed before released"
        other.close()
        again = lock.acquire(timeout=15)
        assert again is not None and again.session_id != lease.session_id
        assert len(lost.events) == 1


@pytest.mark.slow
def test_paused_process_presumes_loss_on_resume(consul: Consul, consul_addr: str) -> None:
    """SIGSTOP past TTL (but short of the server's 2xTTL): LEASE_EXPIRED on SIGCONT."""
    key = unique("l/sigstop")
    with subprocess.Popen(
        [sys.executable, LOCK_CHILD, "hold", consul_addr, key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    ) as proc:
        _check_paused_child(proc, consul, key)


def _check_paused_child(proc: subprocess.Popen[str], consul: Consul, key: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        first = json.loads(proc.stdout.readline())
        assert first.get("acquired"), first
        sid = first["session"]
        proc.send_signal(signal.SIGSTOP)
        time.sleep(12.0)  # > TTL (10 s); the server keeps the session until ~2xTTL
        assert consul.sessions.info(sid) is not None
        proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        report = json.loads(proc.stdout.readline())
        assert report == {
            "lost": "lease_expired",
            "held": False,
            "fenced": "refused",
            "count": 1,
            "lease_session": sid,
        }
        # The child released the key and destroyed its session itself, before any reaping.
        assert wait_for(lambda: consul.sessions.info(sid) is None, timeout=5)
        entry = consul.kv.get(key)
        assert entry is not None and entry.session is None
        assert time.monotonic() - resumed < 5.0 + 1.0
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"closed": True}
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)
