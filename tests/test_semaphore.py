"""The semaphore (Consul's api.Semaphore layout) against a real Consul."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from support import CHILD, Proc, read_lines, unique, wait_for

from locksmith import (
    CONSUL_SEMAPHORE_FLAGS,
    Consul,
    ConsulUnavailable,
    Lease,
    LockConflict,
    LockManager,
    LockTimeout,
    LossEvent,
    LossReason,
    ManagerClosed,
    Semaphore,
)
from locksmith._models import KVEntry
from locksmith._semaphore import (
    ContenderEndedError,
    SemaphoreState,
    holder_verdict,
    retry_after,
    slot_write,
    timeout_message,
)
from locksmith.testing import FaultProxy


def _managers(stack: ExitStack, consul: Consul, n: int) -> list[LockManager]:
    return [stack.enter_context(LockManager(consul, ttl="10s", lock_delay="1s")) for _ in range(n)]


def test_limit_with_more_contenders_holders_and_release(consul: Consul, prefix: str) -> None:
    limit = 2
    with ExitStack() as stack:
        mgrs = _managers(stack, consul, limit + 2)
        sems = [m.semaphore(prefix, limit, value=f"w{i}") for i, m in enumerate(mgrs)]
        leases = [sems[0].acquire(timeout=10), sems[1].acquire(timeout=10)]
        assert all(lease is not None for lease in leases)
        sids = sorted(lease.session_id for lease in leases if lease)
        assert sems[2].holders() == sids
        assert sems[2].acquire(blocking=False) is None
        with pytest.raises(LockTimeout):
            sems[3].acquire(timeout=0.5)

        # Consul's layout: .lock JSON {"Limit","Holders"} and contender keys, Consul's flags.
        raw = consul.kv.get(f"{prefix}/.lock")
        assert raw is not None and raw.flags == CONSUL_SEMAPHORE_FLAGS
        assert json.loads(raw.value) == {"Limit": 2, "Holders": {s: True for s in sids}}
        entries = {e.key: e for e in consul.kv.list(prefix)}
        for sid in sids:
            assert entries[f"{prefix}/{sid}"].session == sid
            assert entries[f"{prefix}/{sid}"].flags == CONSUL_SEMAPHORE_FLAGS

        got: dict[int, Lease | BaseException | None] = {}

        def take(i: int) -> None:
            try:
                got[i] = sems[i].acquire(timeout=20)
            except BaseException as exc:
                got[i] = exc

        waiters = [threading.Thread(target=take, args=(i,)) for i in (2, 3)]
        for t in waiters:
            t.start()
        assert sems[0].release() is True
        # One slot freed: exactly one waiter gets it, the other keeps waiting.
        wait_for(lambda: len(got) >= 1, 10, "a waiter to take the freed slot")
        assert len(sems[0].holders()) == limit
        first = next(iter(got))
        assert isinstance(got[first], Lease)
        assert sems[first].held and not sems[5 - first].held
        assert sems[1].release() is True
        for t in waiters:
            t.join(10)
        assert all(isinstance(v, Lease) for v in got.values())
        tokens = [leases[0].fencing_token, leases[1].fencing_token]  # type: ignore[union-attr]
        assert min(v.fencing_token for v in got.values()) > max(tokens)  # type: ignore[union-attr]
        assert sorted(sems[0].holders()) == sorted(s.lease.session_id for s in sems[2:] if s.lease)
        for s in sems[2:]:
            s.release()
        assert sems[0].holders() == []
        # The contender keys are gone; only .lock stays (with no holders).
        assert [e.key for e in consul.kv.list(prefix)] == [f"{prefix}/.lock"]


def test_loss_when_session_destroyed(consul: Consul, prefix: str) -> None:
    lost: list[LossEvent] = []
    with ExitStack() as stack:
        a, b = _managers(stack, consul, 2)
        sa, sb = a.semaphore(prefix, 1), b.semaphore(prefix, 1)
        sa.on_lost(lost.append)
        lease = sa.acquire(timeout=10)
        assert lease is not None
        got: list[Lease | None] = []
        t = threading.Thread(target=lambda: got.append(sb.acquire(timeout=20)))
        t.start()
        consul.sessions.destroy(lease.session_id)
        wait_for(lambda: lost, 10, "the loss callback")
        t.join(20)
        assert not sa.held
        assert got and got[0] is not None and sb.held
        assert sb.holders() == [got[0].session_id]
        assert sa.release() is False  # it had been lost
    assert lost[0].reason is LossReason.SESSION_INVALIDATED
    assert lost[0].key == prefix and lost[0].lease == lease


def test_a_wait_ends_with_manager_closed_when_the_manager_closes(
    consul: Consul, prefix: str
) -> None:
    """Not "the contender session ended": that LockError reads as a fault of the semaphore."""
    with ExitStack() as stack:
        (holder,) = _managers(stack, consul, 1)
        assert holder.semaphore(prefix, 1).acquire(timeout=10) is not None
        waiter = LockManager(consul, ttl="10s", lock_delay="1s")
        outcome: list[BaseException | Lease | None] = []

        def wait() -> None:
            try:
                outcome.append(waiter.semaphore(prefix, 1).acquire(timeout=30))
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        (sid,) = wait_for(lambda: sorted(waiter.session_ids) or None, 10, "its session")
        wait_for(lambda: consul.kv.get(f"{prefix}/{sid}"), 10, "its contender key: it waits")
        waiter.close()
        t.join(15)
        assert outcome and isinstance(outcome[0], ManagerClosed), outcome


@pytest.mark.parametrize("applied", [False, True], ids=["lost", "applied-unanswered"])
def test_a_blocking_acquire_retries_a_slot_write_consul_did_not_answer(
    consul: Consul, prefix: str, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    """The slot's CAS times out (a partition): lost, or applied with its answer lost. A
    blocking acquire retries within its deadline (it used to raise ConsulUnavailable); a
    write that did list us is replaced by a fresh one, so the token is a real write's."""
    with ExitStack() as stack:
        (mgr,) = _managers(stack, consul, 1)
        sem = mgr.semaphore(prefix, 2)
        real_cas = sem._cas
        failures: list[int] = []

        def flaky_cas(index: int, holders: dict[str, bool]) -> KVEntry | None:
            if len(failures) < 2:
                failures.append(index)
                if applied:
                    real_cas(index, holders)
                raise ConsulUnavailable("did not answer (injected)")
            return real_cas(index, holders)

        monkeypatch.setattr(sem, "_cas", flaky_cas)
        lease = sem.acquire(timeout=20)
        assert lease is not None and len(failures) == 2
        raw = consul.kv.get(f"{prefix}/.lock")
        assert raw is not None and raw.modify_index == lease.fencing_token
        assert json.loads(raw.value)["Holders"] == {lease.session_id: True}
        assert sem.release() is True
        failures.clear()
        with pytest.raises(ConsulUnavailable):  # a non-blocking try does not retry
            sem.acquire(blocking=False)


def test_a_waiter_whose_contender_session_ends_contends_again(consul: Consul, prefix: str) -> None:
    """Its session invalidated while it waits (a partition past the TTL, an operator): a
    blocking acquire contends again with a new session (it used to raise LockError)."""
    with ExitStack() as stack:
        holder, waiter = _managers(stack, consul, 2)
        sem_h = holder.semaphore(prefix, 1)
        assert sem_h.acquire(timeout=10) is not None
        sem_w = waiter.semaphore(prefix, 1)
        outcome: list[BaseException | Lease | None] = []
        t = threading.Thread(target=lambda: outcome.append(_try(lambda: sem_w.acquire(timeout=30))))
        t.start()
        (first,) = wait_for(lambda: sorted(waiter.session_ids) or None, 10, "its session")
        wait_for(lambda: consul.kv.get(f"{prefix}/{first}"), 10, "its contender key: it waits")
        consul.sessions.destroy(first)
        wait_for(lambda: first not in waiter.session_ids, 15, "the waiter to see its loss")
        assert sem_h.release() is True
        t.join(30)
        assert outcome and isinstance(outcome[0], Lease), outcome
        assert outcome[0].session_id != first
        assert sem_w.holders() == [outcome[0].session_id]
        assert sem_w.release() is True


def _try(fn: Callable[[], Lease | None]) -> BaseException | Lease | None:
    try:
        return fn()
    except BaseException as exc:
        return exc


def test_limit_and_kind_conflicts(consul: Consul, prefix: str) -> None:
    with ExitStack() as stack:
        a, b = _managers(stack, consul, 2)
        with a.semaphore(prefix, 2):
            with pytest.raises(LockConflict, match="limit"):
                b.semaphore(prefix, 3).acquire(timeout=1)
            # A Consul-layout lock on a semaphore prefix is a conflict, not a takeover.
            with pytest.raises(LockConflict):
                b.consul_lock(prefix).acquire(timeout=1)
        other = unique("locksmith-test/t")
        try:
            with a.consul_lock(other), pytest.raises(LockConflict):
                b.semaphore(other, 2).acquire(timeout=1)
        finally:
            consul.kv.delete(other, recurse=True)
        # Nothing left behind by the refused contender: no key of b's session.
        sids = b.session_ids
        assert all(e.session not in sids for e in consul.kv.list(prefix))


def test_run_exclusive_on_semaphore_env(consul: Consul, prefix: str, tmp_path: Path) -> None:
    from locksmith import run_exclusive

    out = tmp_path / "child.jsonl"
    with LockManager(consul, ttl="10s") as m:
        sem: Semaphore = m.semaphore(prefix, 2)
        code = run_exclusive(sem, [sys.executable, CHILD, str(out), "--hold", "0.1", "--code", "7"])
        assert code == 7
        assert not sem.held
    start = read_lines(out)[0]
    assert start["env"]["LOCKSMITH_KEY"] == prefix
    assert start["env"]["CONSUL_LOCK_HELD"] == "true"


@pytest.mark.slow
def test_slot_freed_after_holder_process_stopped(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    """A SIGSTOPped holder stops renewing: its slot is lost at ~2xTTL and taken by another."""
    # A semaphore holder in another process (a Python one-liner holding a slot).
    code = f"""
import json, time
from locksmith import Consul, LockManager
def say(**kw): print(json.dumps(kw), flush=True)
m = LockManager(Consul({consul_addr!r}), ttl="10s").start()
s = m.semaphore({prefix!r}, 1)
s.on_lost(lambda e: say(event="lost", reason=e.reason.value))
lease = s.acquire(timeout=20)
say(event="held", session=lease.session_id)
time.sleep(600)
"""
    p = Proc([sys.executable, "-c", code])
    try:
        held = p.wait_event(lambda e: e["event"] == "held", 20, "the slot held")
        with LockManager(consul, ttl="10s") as m:
            sem = m.semaphore(prefix, 1)
            p.signal(signal.SIGSTOP)
            lease = sem.acquire(timeout=45)
            assert lease is not None and lease.session_id != held["session"]
            assert sem.holders() == [lease.session_id]
            p.signal(signal.SIGCONT)
            lost = p.wait_event(lambda e: e["event"] == "lost", 15, "the stopped holder's loss")
            assert lost["reason"] == LossReason.LEASE_EXPIRED.value
            assert sem.held
    finally:
        p.stop()


def test_sibling_prefix_is_not_read_as_part_of_the_semaphore(consul: Consul, prefix: str) -> None:
    """``P/enc`` must not read ``P/encoders/...``: a session alive there is no holder here."""
    with ExitStack() as stack:
        a, b = _managers(stack, consul, 2)
        sibling = a.lock(f"{prefix}/encoders/x")
        held = sibling.acquire(timeout=10)
        assert held is not None
        # A stale holder entry naming a's session, whose only key under P/enc is gone.
        stale = json.dumps({"Limit": 1, "Holders": {held.session_id: True}})
        assert consul.kv.put(f"{prefix}/enc/.lock", stale, flags=CONSUL_SEMAPHORE_FLAGS)
        sem = b.semaphore(f"{prefix}/enc", 1)
        assert sem.holders() == []
        lease = sem.acquire(timeout=5)
        assert lease is not None and sem.holders() == [lease.session_id]
        sem.release()


def test_slot_write_removes_a_stale_listing_before_taking_a_slot() -> None:
    state = SemaphoreState(2, {"a": True, "b": True}, frozenset({"a", "b", "dead"}), 7, True)
    assert slot_write(state, "a") == ("unlist", {"b": True})  # (the dead holder pruned too)
    assert slot_write(state, "c") == ("wait", {})
    free = SemaphoreState(2, {"b": True}, frozenset({"b"}), 8, True)
    assert slot_write(free, "c") == ("take", {"b": True, "c": True})


def test_p1_a_slot_token_is_fresh_when_a_stale_listing_remains(consul_addr: str) -> None:
    """Partition finding P1: A's release could not remove A from ``.lock`` (Consul
    unreachable), B took a slot after A, then A took one again. Writing the content ``.lock``
    already had, Consul answered true without a new index: A's "new" token was B's."""
    prefix = unique("locksmith-test/sem-p1")
    with FaultProxy(consul_addr) as proxy, Consul(consul_addr) as direct:
        a = LockManager(Consul(proxy.addr, timeout=1.0), ttl=10, lock_delay=0, name="p1-a")
        b = LockManager(Consul(consul_addr), ttl=10, lock_delay=0, name="p1-b")
        try:
            sem_a, sem_b = a.semaphore(prefix, 2), b.semaphore(prefix, 2)
            assert sem_a.acquire(timeout=10) is not None
            lease_b = sem_b.acquire(timeout=10)
            assert lease_b is not None
            proxy.blackhole()  # A's release cannot remove A from .lock: it is deferred
            sem_a.release()
            proxy.heal()
            # The contender key's release was given up on too: the session keeps off the key
            # until it can no longer land (1 s + 7 s here). A blocking acquire waits that out;
            # a non-blocking one says "not now" (it used to raise "cannot create the
            # contender key", which the partition soak met 100 times in 40 rounds).
            assert sem_a.acquire(blocking=False) is None
            again = sem_a.acquire(timeout=30)
            assert again is not None
            assert again.fencing_token > lease_b.fencing_token
        finally:
            proxy.heal()
            a.close()
            b.close()
            a.consul.close()
            b.consul.close()
            direct.kv.delete(prefix, recurse=True)


def test_holder_verdict_follows_consuls_recipe() -> None:
    lock_key = "p/.lock"

    def entry(key: str, value: bytes, flags: int, session: str | None = None) -> KVEntry:
        return KVEntry(key, value, flags, session, 0, 1, 2)

    listed = json.dumps({"Limit": 2, "Holders": {"s1": True}}).encode()
    contender = entry("p/s1", b"", CONSUL_SEMAPHORE_FLAGS, "s1")
    ok = [entry(lock_key, listed, CONSUL_SEMAPHORE_FLAGS), contender]
    assert holder_verdict(ok, lock_key, 2, "s1") is None
    assert holder_verdict(ok, lock_key, 2, "s2") is LossReason.RELEASED_BY_OTHER
    assert holder_verdict([contender], lock_key, 2, "s1") is LossReason.KEY_DELETED
    foreign = [entry(lock_key, b"x", 0), contender]
    assert holder_verdict(foreign, lock_key, 2, "s1") is LossReason.KEY_TAKEN


def test_retry_after_pauses_within_the_deadline_or_gives_up() -> None:
    """The one retry rule of a waiting acquire (both front-ends), on plain numbers."""
    no_answer = ConsulUnavailable("did not answer")
    kw = {"prefix": "p", "seconds": 10.0, "now": 100.0, "deadline": 110.0}
    first = retry_after(no_answer, blocking=True, attempt=1, **kw)  # type: ignore[arg-type]
    assert 0 < first <= 0.06
    late = retry_after(no_answer, blocking=True, attempt=50, **{**kw, "now": 109.5})  # type: ignore[arg-type]
    assert late == pytest.approx(0.5)  # never past the deadline
    with pytest.raises(ConsulUnavailable):  # a non-blocking try does not retry
        retry_after(no_answer, blocking=False, attempt=1, **kw)  # type: ignore[arg-type]
    ended = ContenderEndedError("the contender session ended")
    with pytest.raises(LockTimeout, match=r"within 10.0s \(the contender session ended\)"):
        retry_after(ended, blocking=True, attempt=1, **{**kw, "now": 110.0})  # type: ignore[arg-type]
    assert timeout_message("p", 10.0, None) == "no slot of semaphore 'p' within 10.0s"
    state = SemaphoreState(2, {"a": True, "b": True}, frozenset({"a", "b"}), 7, True)
    assert timeout_message("p", 10.0, state).endswith("(2/2 held)")
