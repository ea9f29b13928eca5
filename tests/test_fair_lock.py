"""FairLock (a FIFO lock on a queue of session-bound entries) against a real Consul agent."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from support import MakeManager, Recorder, in_thread, unique, wait_for

from locksmith import (
    FAIR_QUEUE_FLAGS,
    Cancel,
    Cancelled,
    Consul,
    FairLock,
    FakeClock,
    KVEntry,
    Lease,
    Lock,
    LockConflict,
    LockError,
    LockLost,
    LockManager,
    LockTimeout,
    LossEvent,
    LossReason,
    ManagerClosed,
    NotHeld,
    QueueState,
    Semaphore,
    ValidationError,
)

EXCLUSIVE = FAIR_QUEUE_FLAGS + 1
RELEASED = FAIR_QUEUE_FLAGS + 3


def live(consul: Consul, prefix: str) -> list[KVEntry]:
    """The live entries of the queue (waiting or holding), in queue order."""
    entries = [
        e
        for e in consul.kv.list(prefix + "/")
        if e.flags in (EXCLUSIVE, FAIR_QUEUE_FLAGS + 2) and e.session
    ]
    return sorted(entries, key=lambda e: (e.create_index, e.key))


def queued(consul: Consul, prefix: str, n: int) -> list[KVEntry]:
    """Wait until ``n`` live entries are queued; return them."""
    return wait_for(
        lambda: q if len(q := live(consul, prefix)) == n else None, 15, f"{n} entries queued"
    )


def test_strict_fifo_order_across_managers(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    """Contenders arriving one after the other hold in that order, one at a time, with
    fencing tokens that strictly increase."""
    n = 6
    locks = [make_manager(ttl="10s").fair_lock(prefix, value=f"c{i}") for i in range(n)]
    first = locks[0].acquire(timeout=10)
    assert first is not None
    mu = threading.Lock()
    served: list[tuple[int, int]] = []
    inside = [0, 0]  # now, most at once

    def contend(i: int) -> None:
        lease = locks[i].acquire(timeout=60)
        assert lease is not None
        with mu:
            inside[0] += 1
            inside[1] = max(inside)
            served.append((i, lease.fencing_token))
        time.sleep(0.05)
        with mu:
            inside[0] -= 1
        assert locks[i].release() is True

    threads = []
    for i in range(1, n):
        threads.append(in_thread(lambda i=i: contend(i)))  # type: ignore[misc]
        queued(consul, prefix, i + 1)  # arrival order is known: i queued before i + 1
    assert locks[0].release() is True
    for t, result in threads:
        t.join(60)
        assert result == [None], result
    assert [i for i, _ in served] == list(range(1, n))
    tokens = [first.fencing_token] + [tok for _, tok in served]
    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens
    assert inside[1] == 1
    # Nothing waits any more; the last holder's released entry stays until its session ends.
    assert live(consul, prefix) == []


def test_crash_of_the_head_hands_over_and_tells_the_holder(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    fa = make_manager(ttl="10s").fair_lock(prefix)
    fb = make_manager(ttl="10s").fair_lock(prefix)
    lost: Recorder[LossEvent] = Recorder()
    fa.on_lost(lost)
    la = fa.acquire(timeout=10)
    assert la is not None
    ended = fa.ended(la)
    tb, rb = in_thread(lambda: fb.acquire(timeout=30))
    queued(consul, prefix, 2)
    consul.sessions.destroy(la.session_id)  # the head's session ends: its entry goes with it
    assert lost.wait(1, timeout=20)
    assert (lost.events[0].reason, lost.events[0].lease) == (LossReason.SESSION_INVALIDATED, la)
    tb.join(30)
    lb = rb[0]
    assert isinstance(lb, Lease) and fb.held
    assert lb.fencing_token > la.fencing_token
    assert ended.is_set() and not fa.held
    assert fa.state.value == "lost"  # until acknowledged
    with pytest.raises(LockLost):
        fa.fenced_put(f"{prefix}-data", b"late", lease=la)
    assert fa.release() is False  # acknowledges the loss
    assert fa.state is QueueState.IDLE
    # The same object queues again, on a fresh session, behind b.
    tc, rc = in_thread(lambda: fa.acquire(timeout=30))
    queued(consul, prefix, 2)
    assert fb.release() is True
    tc.join(30)
    again = rc[0]
    assert isinstance(again, Lease) and again.session_id != la.session_id
    assert again.fencing_token > lb.fencing_token
    assert fa.release() is True
    time.sleep(0.3)
    assert len(lost.events) == 1


@pytest.mark.parametrize("how", ["session destroyed", "entry deleted"])
def test_a_waiter_vanishing_mid_queue_lets_the_one_behind_move_up(
    consul: Consul, prefix: str, make_manager: MakeManager, how: str
) -> None:
    """b (between a and c) vanishes: c watches a now, not the head's successor, and holds
    when a releases; b, still alive, queues again at the end."""
    fa, fb, fc = (make_manager(ttl="10s").fair_lock(prefix) for _ in range(3))
    la = fa.acquire(timeout=10)
    assert la is not None
    tb, rb = in_thread(lambda: fb.acquire(timeout=60))
    queued(consul, prefix, 2)
    tc, rc = in_thread(lambda: fc.acquire(timeout=60))
    b_entry = queued(consul, prefix, 3)[1]
    if how == "session destroyed":
        consul.sessions.destroy(b_entry.session or "")
    else:
        assert consul.kv.delete(b_entry.key)
    # b queues again behind c (a new entry, created after c's).
    requeued = wait_for(
        lambda: q if len(q := live(consul, prefix)) == 3 and q[1].key != b_entry.key else None,
        15,
        "b queued again",
    )
    assert requeued[2].create_index > requeued[1].create_index > b_entry.create_index
    assert fa.release() is True
    tc.join(30)
    lc = rc[0]
    assert isinstance(lc, Lease) and fc.held and not fb.held and tb.is_alive()
    assert fc.release() is True
    tb.join(30)
    lb = rb[0]
    assert isinstance(lb, Lease) and lb.fencing_token > lc.fencing_token > la.fencing_token
    assert fb.release() is True


def test_outside_delete_of_the_head_entry_is_a_loss(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    fa = make_manager(ttl="10s").fair_lock(prefix)
    fb = make_manager(ttl="10s").fair_lock(prefix)
    lost: Recorder[LossEvent] = Recorder()
    fa.on_lost(lost)
    la = fa.acquire(timeout=10)
    assert la is not None
    fa.fenced_put(f"{prefix}-data", b"a")
    tb, rb = in_thread(lambda: fb.acquire(timeout=30))
    head = queued(consul, prefix, 2)[0]
    assert head.session == la.session_id
    assert consul.kv.delete(head.key)
    assert lost.wait(1, timeout=20)
    assert lost.events[0].reason is LossReason.KEY_DELETED
    tb.join(30)
    lb = rb[0]
    assert isinstance(lb, Lease) and lb.fencing_token > la.fencing_token
    with pytest.raises(LockLost):
        fa.fenced_put(f"{prefix}-data", b"late", lease=la)
    fb.fenced_put(f"{prefix}-data", b"b")
    data = consul.kv.get(f"{prefix}-data")
    assert data is not None and data.value == b"b"
    assert fa.release() is False
    assert fb.release() is True


def test_giving_up_leaves_no_entry_behind(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    fa, fb, fc = (make_manager(ttl="10s").fair_lock(prefix) for _ in range(3))
    la = fa.acquire(timeout=10)
    assert la is not None
    with pytest.raises(LockTimeout):
        fb.acquire(timeout=0.3)
    assert fb.acquire(blocking=False) is None
    with pytest.raises(LockTimeout):
        fb.acquire(timeout=0)
    assert [e.session for e in live(consul, prefix)] == [la.session_id]
    assert fb.state is QueueState.IDLE and not fb.held
    # A waiter behind one that gives up watches the one ahead of it then.
    tb, rb = in_thread(lambda: fb.acquire(timeout=3))
    queued(consul, prefix, 2)
    tc, rc = in_thread(lambda: fc.acquire(timeout=60))
    assert queued(consul, prefix, 3)[0].session == la.session_id
    tb.join(30)
    assert isinstance(rb[0], LockTimeout)
    assert len(queued(consul, prefix, 2)) == 2  # a and c
    assert fa.release() is True
    tc.join(30)
    assert isinstance(rc[0], Lease) and fc.held
    assert fc.release() is True
    assert live(consul, prefix) == []


def test_closing_the_manager_ends_a_wait(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    fa = make_manager(ttl="10s").fair_lock(prefix)
    mb = make_manager(ttl="10s")
    fb = mb.fair_lock(prefix)
    la = fa.acquire(timeout=10)
    assert la is not None
    tb, rb = in_thread(lambda: fb.acquire(timeout=60))
    queued(consul, prefix, 2)
    mb.close()
    tb.join(20)
    assert isinstance(rb[0], ManagerClosed)
    assert [e.session for e in live(consul, prefix)] == [la.session_id]
    assert not mb.session_ids
    assert fa.release() is True


def test_a_cancel_ends_a_wait_and_takes_the_entry_out(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    fa, fb = (make_manager(ttl="10s").fair_lock(prefix) for _ in range(2))
    la = fa.acquire(timeout=10)
    assert la is not None
    cancel = Cancel()
    tb, rb = in_thread(lambda: fb.acquire(timeout=60, cancel=cancel))
    queued(consul, prefix, 2)
    started = time.monotonic()
    cancel.cancel()
    tb.join(20)
    assert isinstance(rb[0], Cancelled), rb
    assert time.monotonic() - started < 10  # not the 60 s timeout
    assert fb.state is QueueState.IDLE and not fb.held
    assert [e.session for e in live(consul, prefix)] == [la.session_id]
    with pytest.raises(Cancelled):  # sticky: a set cancel fails the next call at once
        fb.acquire(timeout=60, cancel=cancel)
    assert fa.release() is True
    lb = fb.acquire(timeout=10, cancel=Cancel())  # the object goes on
    assert lb is not None and fb.release() is True
    with pytest.raises(ValidationError, match="cancel"):
        fb.acquire(cancel=threading.Event())  # type: ignore[arg-type]


def test_lease_deadline_passing_is_a_loss(consul_addr: str, prefix: str) -> None:
    """No renewal within the TTL: presumed lost at the deadline, as a Lock's lease is."""
    clock = FakeClock()
    with Consul(consul_addr) as consul, LockManager(consul, ttl="10s", clock=clock) as mgr:
        fl = mgr.fair_lock(prefix)
        lost: Recorder[LossEvent] = Recorder()
        fl.on_lost(lost)
        lease = fl.acquire(timeout=10)
        assert lease is not None and fl.held
        ended = fl.ended(lease)
        clock.advance(10.5)  # past TTL since the session's creation, no renewal
        assert not fl.held and fl.lease is None  # read on the clock: at once
        assert lost.wait(1, timeout=20)
        assert lost.events[0].reason is LossReason.LEASE_EXPIRED
        assert ended.wait(5)
        with pytest.raises(LockLost):
            fl.fenced_put(f"{prefix}-data", b"late")
        assert fl.release() is False


def test_the_api_of_a_lock(consul: Consul, prefix: str, make_manager: MakeManager) -> None:
    mgr = make_manager(ttl="10s")
    fl = mgr.fair_lock(prefix, value="me")
    assert isinstance(fl, FairLock) and fl.key == prefix and not fl.shared
    assert not fl.held and fl.lease is None and fl.ended().is_set()
    with pytest.raises(NotHeld):
        fl.release()
    with pytest.raises(LockLost):
        fl.fenced_put(f"{prefix}-data", b"x")
    with fl as lease:
        assert fl.held and fl.lease is lease and lease.key == prefix
        assert lease.session_id in mgr.session_ids  # the companion's Behavior=delete session
        (entry,) = live(consul, prefix)
        assert entry.value == b"me" and entry.create_index == lease.fencing_token
        marker = consul.kv.get(f"{prefix}/.lock")
        assert marker is not None and marker.flags == FAIR_QUEUE_FLAGS
        with pytest.raises(LockError, match="already held"):
            fl.acquire(blocking=False)
        index = fl.fenced_put(f"{prefix}-data", b"v")
        assert index > lease.fencing_token
        ended = fl.ended(lease)
        assert not ended.is_set()
    assert ended.is_set() and not fl.held
    assert fl.release(lease) is False  # that lease ended already
    with pytest.raises(LockLost):
        fl.fenced_put(f"{prefix}-data", b"late", lease=lease)
    released = consul.kv.get(entry.key)
    assert released is not None and released.flags == RELEASED  # the next waiter's signal
    # It stays while the next acquisition waits (its waiter may not have seen it yet), and
    # goes with the next release.
    again = fl.acquire(timeout=10)
    assert again is not None and again.fencing_token > lease.fencing_token
    assert consul.kv.get(entry.key) is not None
    assert fl.release() is True
    assert consul.kv.get(entry.key) is None


def test_bad_input_fails_before_any_request(make_manager: MakeManager, prefix: str) -> None:
    mgr = make_manager()
    for bad in ("", "/jobs", "a//b", "a/./b", 7):
        with pytest.raises(ValidationError):
            mgr.fair_lock(bad)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            mgr.rw_lock(bad)  # type: ignore[arg-type]
    fl = mgr.fair_lock(prefix)
    with pytest.raises(ValidationError):
        fl.acquire(timeout=-1)
    with pytest.raises(ValidationError):
        fl.acquire(blocking="no")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        fl.on_lost("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        mgr.fair_lock(prefix, value=object())  # type: ignore[arg-type]
    assert mgr.session_ids == frozenset()  # no session: nothing was sent


# --------------------------------------------------------------------------- other kinds


def test_a_fair_prefix_refuses_other_kinds(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    a, b = make_manager(ttl="10s"), make_manager(ttl="10s")
    with a.fair_lock(prefix):
        with pytest.raises(LockConflict):
            b.consul_lock(prefix).acquire(timeout=2)
        with pytest.raises(LockConflict):
            b.semaphore(prefix, 2).acquire(timeout=2)
        with pytest.raises(LockConflict):
            b.lock(f"{prefix}/.lock").acquire(timeout=2)
        entry = live(consul, prefix)[0]
        with pytest.raises(LockConflict):
            b.lock(entry.key).acquire(timeout=2)  # an entry is not a plain lock
    # The marker outlives the holders: the prefix stays a fair queue.
    with pytest.raises(LockConflict):
        b.consul_lock(prefix).acquire(timeout=2)
    # Even without its marker (deleted from outside), live entries keep a semaphore off.
    with a.fair_lock(prefix):
        assert consul.kv.delete(f"{prefix}/.lock")
        with pytest.raises(LockConflict):
            b.semaphore(prefix, 2).acquire(timeout=2)
    assert all(e.session not in b.session_ids for e in consul.kv.list(prefix + "/"))


@pytest.mark.parametrize("kind", ["consul_lock", "semaphore", "plain lock on .lock", "data"])
def test_other_kinds_refuse_a_fair_lock(
    consul: Consul, prefix: str, make_manager: MakeManager, kind: str
) -> None:
    a, b = make_manager(ttl="10s"), make_manager(ttl="10s")
    held: Lock | Semaphore | None
    if kind == "consul_lock":
        held = a.consul_lock(prefix)
    elif kind == "semaphore":
        held = a.semaphore(prefix, 2)
    elif kind == "plain lock on .lock":
        held = a.lock(f"{prefix}/.lock")
    else:
        held = None
        assert consul.kv.put(f"{prefix}/config", b"not a queue entry")
    if held is not None:
        assert held.acquire(timeout=10) is not None
    fl = b.fair_lock(prefix)
    with pytest.raises(LockConflict, match="another kind of lock"):
        fl.acquire(timeout=2)
    with pytest.raises(LockConflict):
        fl.acquire(blocking=False)
    assert fl.state is QueueState.IDLE
    # The refused contender left nothing behind.
    assert all(e.flags < FAIR_QUEUE_FLAGS or e.flags > RELEASED for e in consul.kv.list(prefix))
    if held is not None:
        held.release()


def test_many_prefixes_do_not_interfere(consul: Consul, make_manager: MakeManager) -> None:
    """``P/enc`` is not ``P/encoders``: each prefix is its own queue."""
    base = unique("locksmith-test/t")
    try:
        a, b = make_manager(ttl="10s"), make_manager(ttl="10s")
        with a.fair_lock(f"{base}/enc"):
            lease = b.fair_lock(f"{base}/encoders").acquire(timeout=5)
            assert lease is not None
    finally:
        consul.kv.delete(base, recurse=True)
