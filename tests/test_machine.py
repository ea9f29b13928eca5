"""The sans-IO lock state machine, driven event by event with plain numbers for time.

No Consul, no threads, no clock: each test feeds :class:`LockMachine` the events a front-end
would (Consul's answers, time passing) and checks the commands it returns. Every safety case
of the core redesign appears here as an event sequence; ``tests/test_safety.py`` proves the
same cases against a real Consul.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import pytest

from locksmith import (
    BadRequest,
    ConsulUnavailable,
    Lease,
    LeaseSet,
    LockConflict,
    LockDelayEvent,
    LockState,
    LockTimeout,
    LossEvent,
    LossReason,
    ManagerClosed,
    ManagerState,
    NotHeld,
    SessionNotFound,
    TLSError,
    WatchTarget,
)
from locksmith._backoff import Backoff
from locksmith._machine import LockMachine, MachineConfig
from locksmith._models import KVEntry
from locksmith._protocol import (
    CLEANER,
    RENEWER,
    AcquireManyRequested,
    AcquireRequested,
    AdoptSession,
    AttemptAborted,
    CloseRequested,
    Command,
    Confirm,
    Confirmed,
    CreateSession,
    Destroy,
    DestroyAnswered,
    Event,
    Finish,
    HolderRead,
    Interrupt,
    KeyRead,
    KeyWritten,
    LeaseEnded,
    Log,
    ManyApplied,
    Notify,
    ReadHolder,
    ReadKey,
    ReleaseAnswered,
    ReleaseItem,
    ReleaseManyRequested,
    ReleaseOutcome,
    ReleaseRequested,
    Renew,
    RenewAnswered,
    RequestFailed,
    SendAcquire,
    SendAcquireMany,
    SendRelease,
    SessionCreated,
    SessionWanted,
    Sleep,
    Stop,
    TxnApplied,
    TxnRefused,
    Watch,
    WatchFailed,
    WatchSaw,
    Woke,
)
from locksmith._states import AttemptPhase, InvalidTransition, advance
from locksmith._validate import MAX_TXN_OPS

SID = "11111111-1111-1111-1111-111111111111"
SID2 = "22222222-2222-2222-2222-222222222222"
OTHER = "33333333-3333-3333-3333-333333333333"
INF = float("inf")

C = TypeVar("C")


def entry(key: str, session: str | None, index: int, flags: int = 0) -> KVEntry:
    return KVEntry(key, b"v", flags, session, 1, 1, index)


class Rig:
    """Feeds a machine events at chosen times and keeps what it said."""

    def __init__(self, **config: Any) -> None:
        fixed = Backoff(start=0.1, cap=1.0, rng=lambda: 0.5)
        config.setdefault("retry", fixed)
        config.setdefault("cleanup", fixed)
        config.setdefault("window", fixed)
        config.setdefault("ttl", 15.0)
        config.setdefault("lock_delay", 15.0)
        config.setdefault("request_timeout", 10.0)
        self.m = LockMachine(MachineConfig(**config))
        self.now = 1000.0
        self.out: list[Command] = []
        #: The latest command of each actor, whichever call produced it.
        self.last: dict[tuple[type[Any], object], Command] = {}

    def at(self, now: float) -> Rig:
        self.now = now
        return self

    def send(self, event: Event) -> list[Command]:
        self.out = self.m.handle(event, self.now)
        for cmd in self.out:
            self.last[type(cmd), getattr(cmd, "actor", None)] = cmd
        return self.out

    def latest(self, kind: type[C], actor: object) -> C:
        cmd = self.last[kind, actor]
        assert isinstance(cmd, kind)
        return cmd

    def one(self, kind: type[C], actor: object = None) -> C:
        found = [c for c in self.out if isinstance(c, kind)]
        if actor is not None:
            found = [c for c in found if getattr(c, "actor", None) == actor]
        assert len(found) == 1, (kind.__name__, self.out)
        return found[0]

    def none(self, kind: type[Any], actor: object = None) -> None:
        found = [c for c in self.out if isinstance(c, kind)]
        if actor is not None:
            found = [c for c in found if getattr(c, "actor", None) == actor]
        assert not found, (kind.__name__, self.out)

    def logs(self) -> list[str]:
        return [c.event for c in self.out if isinstance(c, Log)]

    # -- steps -----------------------------------------------------------------------------
    def session(self, actor: int, sid: str = SID) -> None:
        """``actor`` was told to create (or adopt) the session: it exists now."""
        adopt = [c for c in self.out if isinstance(c, AdoptSession) and c.actor == actor]
        if adopt:
            self.send(SessionCreated(actor, adopt[0].step, sid, self.now, 15.0, 15.0, owned=False))
            return
        step = self.one(CreateSession, actor).step
        self.send(SessionCreated(actor, step, sid, self.now, 15.0, 15.0, owned=True))

    def acquire(
        self,
        actor: int,
        key: str = "k",
        *,
        lock_id: int = 1,
        sid: str = SID,
        index: int = 100,
        deadline: float = INF,
        blocking: bool = True,
    ) -> Lease:
        """A whole uncontended acquire (creating the session if needed)."""
        self.send(AcquireRequested(actor, lock_id, key, b"v", 0, deadline, blocking))
        if any(isinstance(c, CreateSession | AdoptSession) for c in self.out):
            self.session(actor, sid)
        if any(isinstance(c, ReadKey) for c in self.out):
            read = self.one(ReadKey, actor)
            self.send(KeyRead(actor, read.step, None, 5))
        send = self.one(SendAcquire, actor)
        self.send(TxnApplied(actor, send.step, entry(key, send.sid, index)))
        lease = self.one(Finish, actor).result
        assert isinstance(lease, Lease)
        return lease

    def release(self, actor: int, lease: Lease, lock_id: int = 1) -> Any:
        self.send(ReleaseRequested(actor, lock_id, lease.key, lease))
        if any(isinstance(c, Finish) for c in self.out):
            return self.one(Finish, actor).result
        rel = self.one(SendRelease, actor)
        self.send(ReleaseAnswered(actor, rel.step, ("released",)))
        return self.one(Finish, actor).result


def losses(out: Iterable[Command]) -> list[LossEvent]:
    return [c.event for c in out if isinstance(c, Notify) and isinstance(c.event, LossEvent)]


# --------------------------------------------------------------------------- happy paths


def test_first_acquire_creates_the_session_reads_flags_then_takes_the_key() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "jobs/a", b"v", 0, INF, True))
    create = r.one(CreateSession, 1)
    assert r.m.lock_state(1) is LockState.ACQUIRING
    r.send(SessionCreated(1, create.step, SID, 1000.0, 15.0, 15.0, owned=True))
    assert "session.created" in r.logs()
    r.one(Sleep, RENEWER)  # the renewer wakes at a third of the TTL
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, None, 7))
    send = r.one(SendAcquire, 1)
    assert (send.key, send.sid, send.value) == ("jobs/a", SID, b"v")
    r.send(TxnApplied(1, send.step, entry("jobs/a", SID, 42)))
    lease = r.one(Finish, 1).result
    assert isinstance(lease, Lease) and lease.fencing_token == 42
    assert r.m.is_held(lease, 1000.0) and r.m.lock_state(1) is LockState.HELD
    watch = r.one(Watch)
    assert watch.target == WatchTarget("jobs/a") and watch.index == 42
    assert "lock.acquired" in r.logs()


def test_release_gives_the_key_back_and_ends_the_lease() -> None:
    r = Rig()
    lease = r.acquire(1)
    assert r.release(2, lease) is True
    ended = r.one(LeaseEnded)
    assert ended.lease is lease and ended.reason is None
    assert not r.m.is_held(lease, r.now) and r.m.lock_state(1) is LockState.UNLOCKED
    assert r.release(3, lease) is False  # that lease ended: nothing else happens
    r.none(SendRelease)
    r.send(ReleaseRequested(4, 1, "k", None))
    assert isinstance(r.one(Finish, 4).result, NotHeld)


def test_foreign_flags_are_a_conflict_before_any_write() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "k", b"v", 0, INF, True))
    r.session(1)
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, entry("k", None, 5, flags=0x2DDCCBC058A50C18), 5))
    assert isinstance(r.one(Finish, 1).result, LockConflict)
    r.none(SendAcquire)


# --------------------------------------------------------------------------- lease deadline


def test_renewal_moves_the_deadline_measured_from_the_request_start() -> None:
    r = Rig()
    lease = r.acquire(1)
    wake = r.latest(Sleep, RENEWER)
    assert wake.until == 1005.0
    r.at(1005.0).send(Woke(RENEWER, wake.step))
    renew = r.one(Renew)
    assert renew.until == 1015.0  # never retried past the deadline
    r.at(1007.0).send(RenewAnswered(SID, started=1005.0, ttl=15.0))
    assert r.m.lease_deadline() == 1020.0  # 1005 + TTL, not 1007 + TTL
    assert r.m.is_held(lease, 1019.9) and not r.m.is_held(lease, 1020.0)


def test_the_deadline_ends_every_hold_and_cleans_up_behind_it() -> None:
    r = Rig()
    lease = r.acquire(1)
    wake = r.latest(Sleep, RENEWER)
    r.at(1005.0).send(Woke(RENEWER, wake.step))
    r.one(Renew)
    # Consul unreachable: the renew loop gives up at the deadline.
    r.at(1015.0).send(RenewAnswered(SID, None, error=ConsulUnavailable("down")))
    assert r.one(LeaseEnded).reason is LossReason.LEASE_EXPIRED
    (loss,) = losses(r.out)
    assert loss.lease is lease and loss.reason is LossReason.LEASE_EXPIRED
    assert r.m.lock_state(1) is LockState.LOST
    # The session may still hold the key on the server: release it, then destroy the session.
    rel = r.one(SendRelease, CLEANER)
    assert rel.items == (ReleaseItem("k", SID, b"v", 0),)
    r.none(Destroy)
    r.send(ReleaseAnswered(CLEANER, rel.step, ("released",)))
    destroy = r.one(Destroy, CLEANER)
    assert destroy.sid == SID


def test_a_renewal_answered_after_the_deadline_does_not_revive_the_lease() -> None:
    r = Rig()
    lease = r.acquire(1)
    wake = r.latest(Sleep, RENEWER)
    r.at(1005.0).send(Woke(RENEWER, wake.step))
    r.at(1016.0).send(RenewAnswered(SID, started=1014.0, ttl=15.0))
    assert [e.reason for e in losses(r.out)] == [LossReason.LEASE_EXPIRED]
    assert not r.m.is_held(lease, 1016.0)


def test_held_reads_the_deadline_even_if_no_event_came() -> None:
    """A paused or suspended process wakes up past its deadline: held is already False."""
    r = Rig()
    lease = r.acquire(1)
    assert r.m.is_held(lease, 1014.999)
    assert not r.m.is_held(lease, 1015.0)
    assert r.m.lease_of(1, "k", 1015.0) is None
    assert r.m.fence(lease, 1015.0) is None


def test_release_past_the_deadline_is_a_loss_not_a_release() -> None:
    r = Rig()
    lease = r.acquire(1)
    r.at(1016.0).send(ReleaseRequested(2, 1, "k", lease))
    assert r.one(Finish, 2).result is False
    assert [e.reason for e in losses(r.out)] == [LossReason.LEASE_EXPIRED]
    assert r.m.lock_state(1) is LockState.UNLOCKED  # acknowledged by the caller


# --------------------------------------------------------------------------- case 2


def test_case2_a_stale_lease_can_neither_release_nor_write_under_a_newer_one() -> None:
    """T1's lease is lost, T2 re-acquires the same Lock: T1 touches nothing of T2's."""
    r = Rig()
    first = r.acquire(1, index=100)
    # The key is deleted by someone; the watch and the confirming read see it.
    watch = r.one(Watch)
    r.send(WatchSaw(watch.slot, watch.gen, (), 101))
    confirm = r.one(Confirm)
    r.send(Confirmed(confirm.slot, confirm.gen, SID, {"k": None}, True, r.now, 15.0))
    assert [e.reason for e in losses(r.out)] == [LossReason.KEY_DELETED]
    second = r.acquire(2, index=105)  # T2, same Lock object (lock_id 1), same session
    assert second.session_id == first.session_id and second is not first
    assert r.m.fence(first, r.now) is None
    assert r.m.fence(second, r.now) == (105, 15.0)
    assert r.release(3, first) is False  # T1's with-exit
    r.none(SendRelease)
    assert r.m.is_held(second, r.now)


# --------------------------------------------------------------------------- case 5


def test_case5_a_release_answered_false_is_a_loss() -> None:
    r = Rig()
    lease = r.acquire(1)
    r.send(ReleaseRequested(2, 1, "k", lease))
    rel = r.one(SendRelease, 2)
    r.send(ReleaseAnswered(2, rel.step, ("not_held",)))
    read = r.one(ReadKey, 2)
    assert read.consistent
    r.send(KeyRead(2, read.step, entry("k", OTHER, 120), 120))
    assert r.one(Finish, 2).result is False
    assert [e.reason for e in losses(r.out)] == [LossReason.KEY_TAKEN]
    assert r.one(LeaseEnded).reason is LossReason.KEY_TAKEN


def test_release_that_cannot_reach_consul_is_deferred_to_the_cleaner() -> None:
    r = Rig()
    lease = r.acquire(1)
    r.send(ReleaseRequested(2, 1, "k", lease))
    rel = r.one(SendRelease, 2)
    r.send(RequestFailed(2, rel.step, ConsulUnavailable("timed out")))
    assert r.one(Finish, 2).result is True
    assert "lock.release_deferred" in r.logs()
    assert r.one(SendRelease, CLEANER).items == (ReleaseItem("k", SID, b"v", 0),)


# --------------------------------------------------------------------------- case 6


def test_case6_watch_failures_never_stop_the_watch() -> None:
    r = Rig()
    lease = r.acquire(1)
    watch = r.one(Watch)
    for err in (BadRequest("400"), ConsulUnavailable("down"), RuntimeError("protocol")):
        r.send(WatchFailed(watch.slot, watch.gen, err))
        again = r.one(Watch)
        assert again.target == watch.target and again.index == 0
        assert again.not_before > r.now  # backs off
    assert r.m.is_held(lease, r.now)


def test_case6_an_undecided_confirmation_is_not_a_loss() -> None:
    r = Rig()
    lease = r.acquire(1)
    watch = r.one(Watch)
    r.send(WatchSaw(watch.slot, watch.gen, (), 101))
    confirm = r.one(Confirm)
    r.send(Confirmed(confirm.slot, confirm.gen, SID, {}, None, r.now))
    assert losses(r.out) == []
    assert r.m.is_held(lease, r.now)
    assert r.one(Watch).index == 0  # looks again


def test_a_stale_watch_answer_before_our_acquire_is_not_a_suspect() -> None:
    r = Rig()
    r.acquire(1, index=100)
    watch = r.one(Watch)
    r.send(WatchSaw(watch.slot, watch.gen, (), 90))  # a follower that lags behind
    r.none(Confirm)


def test_confirmed_invalidation_ends_the_session_without_cleanup() -> None:
    r = Rig()
    r.acquire(1)
    watch = r.one(Watch)
    r.send(WatchSaw(watch.slot, watch.gen, (entry("k", None, 101),), 101))
    confirm = r.one(Confirm)
    r.send(Confirmed(confirm.slot, confirm.gen, SID, {}, False, r.now))
    assert [e.reason for e in losses(r.out)] == [LossReason.SESSION_INVALIDATED]
    r.none(SendRelease)  # the server released the keys itself
    assert r.m.session_id is None


# --------------------------------------------------------------------------- case 7


def test_case7_an_acquire_aborted_in_flight_is_given_back() -> None:
    r = Rig()
    r.acquire(1, key="other")  # the session exists
    r.send(AcquireRequested(2, 2, "k", b"v", 0, INF, True))
    read = r.one(ReadKey, 2)
    r.send(KeyRead(2, read.step, None, 5))
    r.one(SendAcquire, 2)
    r.send(AttemptAborted(2))  # Ctrl-C while the txn was in flight: applied or not?
    assert r.one(SendRelease, CLEANER).items == (ReleaseItem("k", SID, b"v", 0),)
    assert r.m.lock_state(2) is LockState.UNLOCKED


def test_case7_a_lost_answer_is_ambiguous_but_the_same_session_may_take_the_key() -> None:
    r = Rig()
    r.acquire(1, key="other")
    r.send(AcquireRequested(2, 2, "k", b"v", 0, INF, True))
    read = r.one(ReadKey, 2)
    r.send(KeyRead(2, read.step, None, 5))
    send = r.one(SendAcquire, 2)
    r.send(RequestFailed(2, send.step, ConsulUnavailable("timed out")))
    # The cleaner must not release (k, SID) while the same session retries the key.
    r.none(SendRelease, CLEANER)
    sleep = r.one(Sleep, 2)
    r.send(Woke(2, sleep.step))
    send = r.one(SendAcquire, 2)
    r.none(SendRelease, CLEANER)
    r.send(TxnApplied(2, send.step, entry("k", SID, 110)))
    assert isinstance(r.one(Finish, 2).result, Lease)
    assert r.m.pending_releases() == []  # the hold is ours: nothing to give back


def test_a_release_queued_for_an_old_session_runs_while_a_new_session_waits() -> None:
    r = Rig()
    lease = r.acquire(1)
    wake = r.latest(Sleep, RENEWER)
    r.at(1015.0).send(Woke(RENEWER, wake.step))  # presumed lost: (k, SID) queued
    release = r.one(SendRelease, CLEANER)
    assert release.items[0].sid == lease.session_id
    # A new acquire of k on a new session is not blocked by, and does not block, it.
    r.send(AcquireRequested(2, 1, "k", b"v", 0, INF, True))
    r.session(2, SID2)
    send = r.one(SendAcquire, 2)
    assert send.sid == SID2


# --------------------------------------------------------------------------- token floor


def test_a_no_op_reacquire_is_given_back_and_taken_again() -> None:
    r = Rig()
    first = r.acquire(1, index=100)
    watch = r.one(Watch)
    r.send(WatchSaw(watch.slot, watch.gen, (), 101))
    confirm = r.one(Confirm)
    r.send(Confirmed(confirm.slot, confirm.gen, SID, {"k": None}, True, r.now, 15.0))
    # A stale read declared the loss, but Consul still has k under SID: the same session's
    # acquire is a no-op and answers the old index.
    r.send(AcquireRequested(2, 1, "k", b"v", 0, INF, True))
    send = r.one(SendAcquire, 2)
    r.send(TxnApplied(2, send.step, entry("k", SID, 100)))
    undo = r.one(SendRelease, 2)
    assert "lock.reacquire_without_write" in r.logs()
    r.send(ReleaseAnswered(2, undo.step, ("released",)))
    send = r.one(SendAcquire, 2)
    r.send(TxnApplied(2, send.step, entry("k", SID, 104)))
    second = r.one(Finish, 2).result
    assert second.fencing_token == 104 > first.fencing_token


def test_a_rewrite_raises_the_floor_and_the_fence() -> None:
    r = Rig()
    lease = r.acquire(1, index=100)
    r.send(KeyWritten(lease, 130))
    assert r.m.fence(lease, r.now) == (130, 15.0)


# --------------------------------------------------------------------------- waiting


def test_waiting_for_a_holder_follows_the_key_and_retries_when_it_changes() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "k", b"v", 0, INF, True))
    r.session(1)
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, None, 5))
    send = r.one(SendAcquire, 1)
    r.send(TxnRefused(1, send.step))
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, entry("k", OTHER, 50), 50))
    holder = r.one(ReadHolder, 1)
    r.send(HolderRead(1, holder.step, OTHER, 0.0))
    assert r.m.snapshot(r.now).waiting == ("k",)
    watch = r.one(Watch)
    assert watch.target == WatchTarget("k") and watch.index == 50
    r.send(WatchSaw(watch.slot, watch.gen, (entry("k", None, 60),), 60))  # released
    assert r.one(SendAcquire, 1).key == "k"


def test_lock_delay_window_is_waited_out_and_reported_once() -> None:
    r = Rig()
    r.acquire(9, key="other")
    r.send(AcquireRequested(1, 1, "k", b"v", 0, INF, True))
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, entry("k", OTHER, 50), 50))
    send = r.one(SendAcquire, 1)
    r.send(TxnRefused(1, send.step))
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, entry("k", OTHER, 50), 50))
    holder = r.one(ReadHolder, 1)
    r.send(HolderRead(1, holder.step, OTHER, 5.0))
    watch = next(c for c in r.out if isinstance(c, Watch) and c.target == WatchTarget("k"))
    r.at(1002.0).send(WatchSaw(watch.slot, watch.gen, (entry("k", None, 60),), 60))
    send = r.one(SendAcquire, 1)
    r.send(TxnRefused(1, send.step))  # free, yet refused: the holder's lock-delay
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, entry("k", None, 60), 60))
    (note,) = [c.event for c in r.out if isinstance(c, Notify)]
    assert isinstance(note, LockDelayEvent) and note.known
    assert note.previous_session == OTHER and note.until == pytest.approx(1007.01)
    sleep = r.one(Sleep, 1)
    assert sleep.until == pytest.approx(1007.01)
    r.at(sleep.until).send(Woke(1, sleep.step))
    assert r.one(SendAcquire, 1)


def test_a_waiter_on_a_key_under_a_watch_with_newer_news_looks_again_at_once() -> None:
    """Sticky news: an answer the slot saw before the key mattered must not be missed."""
    r = Rig()
    r.acquire(9, key="d/held")
    r.acquire(8, key="d/held2", lock_id=8, index=101)  # d/ is now a directory watch
    watch = next(c for c in r.out if isinstance(c, Watch))
    assert watch.target == WatchTarget("d/", True)
    r.send(
        WatchSaw(
            watch.slot, watch.gen, (entry("d/held", SID, 100), entry("d/held2", SID, 101)), 140
        )
    )
    r.send(AcquireRequested(1, 1, "d/k", b"v", 0, INF, True))
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, None, 5))
    send = r.one(SendAcquire, 1)
    r.send(TxnRefused(1, send.step))
    read = r.one(ReadKey, 1)
    r.send(KeyRead(1, read.step, entry("d/k", OTHER, 120), 120))
    holder = r.one(ReadHolder, 1)
    r.send(HolderRead(1, holder.step, OTHER, 0.0))
    # The directory watch saw index 140 > 120, before this waiter existed: refresh it from
    # 120 (a new generation cuts its query short) so nothing in between goes unseen.
    refreshed = r.one(Watch)
    assert refreshed.gen > watch.gen and refreshed.index == 120


def test_local_callers_of_one_key_queue_in_order() -> None:
    r = Rig()
    lease = r.acquire(1)
    r.send(AcquireRequested(2, 2, "k", b"v", 0, INF, True))
    r.send(AcquireRequested(3, 3, "k", b"v", 0, INF, True))
    assert r.m.snapshot(r.now).queued == ("k", "k")
    r.send(AcquireRequested(4, 4, "k", b"v", 0, r.now, False))
    assert r.one(Finish, 4).result is None  # non-blocking: busy locally
    r.release(5, lease)
    assert r.one(SendAcquire, 2)  # the first in line goes on
    r.none(SendAcquire, 3)


def test_timeout_while_queued() -> None:
    r = Rig()
    r.acquire(1)
    r.send(AcquireRequested(2, 2, "k", b"v", 0, 1002.0, True))
    sleep = r.one(Sleep, 2)
    assert sleep.until == 1002.0
    r.at(1002.0).send(Woke(2, sleep.step))
    assert isinstance(r.one(Finish, 2).result, LockTimeout)


# --------------------------------------------------------------------------- case 9


def test_case9_every_request_gets_only_the_time_left() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "k", b"v", 0, 1001.0, True))
    assert r.one(CreateSession, 1).timeout == pytest.approx(1.0)
    r.at(1000.25).session(1)
    assert r.one(ReadKey, 1).timeout == pytest.approx(0.75)


def test_case9_unreachable_consul_times_out_at_the_deadline() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "k", b"v", 0, 1001.0, True))
    create = r.one(CreateSession, 1)
    r.at(1001.0).send(RequestFailed(1, create.step, ConsulUnavailable("timed out")))
    result = r.one(Finish, 1).result
    assert isinstance(result, LockTimeout) and isinstance(result.__cause__, ConsulUnavailable)


def test_tls_failures_are_not_retried() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "k", b"v", 0, INF, True))
    create = r.one(CreateSession, 1)
    r.send(RequestFailed(1, create.step, TLSError("bad certificate")))
    assert isinstance(r.one(Finish, 1).result, TLSError)


def test_case9_close_releases_in_batches_of_64_then_destroys_by_one_deadline() -> None:
    r = Rig()
    for i in range(100):
        r.acquire(i + 1, key=f"d/k{i:03d}", lock_id=i + 1, index=100 + i)
    r.send(CloseRequested(500, 1010.0))
    assert r.m.state is ManagerState.CLOSING
    assert len([c for c in r.out if isinstance(c, LeaseEnded)]) == 100
    first = r.one(SendRelease, 500)
    assert len(first.items) == MAX_TXN_OPS
    r.none(Destroy)
    r.at(1001.0).send(ReleaseAnswered(500, first.step, tuple(["released"] * MAX_TXN_OPS)))
    second = r.one(SendRelease, 500)
    assert len(second.items) == 36 and second.timeout == pytest.approx(9.0)
    r.none(Destroy)
    r.send(ReleaseAnswered(500, second.step, tuple(["released"] * 36)))
    destroy = r.one(Destroy, 500)  # only once every key is released
    r.send(DestroyAnswered(500, destroy.step, SID))
    assert r.one(Finish, 500).result is None
    assert r.m.snapshot(r.now).state is ManagerState.CLOSED


def test_case9_close_gives_up_at_its_deadline() -> None:
    r = Rig()
    r.acquire(1)
    r.send(CloseRequested(500, 1002.0))
    rel = r.one(SendRelease, 500)
    r.at(1002.0).send(RequestFailed(500, rel.step, ConsulUnavailable("timed out")))
    assert r.one(Finish, 500).result is None
    assert "manager.close_timeout" in r.logs()
    assert r.m.state is ManagerState.CLOSED


def test_close_interrupts_calls_in_flight_and_gives_back_their_keys() -> None:
    r = Rig()
    r.acquire(1, key="held")
    r.send(AcquireRequested(2, 2, "k", b"v", 0, INF, True))
    read = r.one(ReadKey, 2)
    r.send(KeyRead(2, read.step, None, 5))
    send = r.one(SendAcquire, 2)
    r.send(CloseRequested(500, 1010.0))
    assert r.one(Interrupt).actor == 2
    r.none(Destroy)
    r.send(RequestFailed(2, send.step, ConsulUnavailable("interrupted")))
    assert isinstance(r.one(Finish, 2).result, ManagerClosed)
    rel = r.one(SendRelease, 500)
    assert {it.key for it in rel.items} == {"held", "k"}  # k's acquire may have applied


def test_a_session_created_after_close_is_destroyed() -> None:
    r = Rig()
    r.send(AcquireRequested(1, 1, "k", b"v", 0, INF, True))
    create = r.one(CreateSession, 1)
    r.send(CloseRequested(500, 1010.0))
    r.send(SessionCreated(1, create.step, SID, r.now, 15.0, 15.0, owned=True))
    assert isinstance(r.one(Finish, 1).result, ManagerClosed)
    destroy = r.one(Destroy, 500)
    assert destroy.sid == SID


# --------------------------------------------------------------------------- case 10


def test_case10_unrelated_keys_never_watch_the_whole_store() -> None:
    r = Rig()
    r.acquire(1, key="alpha-x", lock_id=1)
    r.acquire(2, key="beta-x", lock_id=2, index=101)
    targets = set(r.m.watch_targets())
    assert targets == {WatchTarget("alpha-x"), WatchTarget("beta-x")}


def test_watch_slots_linger_then_go_idle() -> None:
    r = Rig()
    lease = r.acquire(1)
    watch = r.one(Watch)
    r.release(2, lease)
    r.none(Watch)  # no restart for a release: the slot lingers
    r.send(WatchSaw(watch.slot, watch.gen, (entry("k", None, 102),), 102))
    r.at(1003.0).send(WatchSaw(watch.slot, watch.gen, (entry("k", None, 103),), 103))
    idle = r.one(Watch)
    assert idle.target is None


# --------------------------------------------------------------------------- sessions


def test_session_wanted_creates_it_once_for_everyone() -> None:
    r = Rig()
    r.send(SessionWanted(1, INF))
    create = r.one(CreateSession, 1)
    r.send(SessionWanted(2, INF))
    r.one(Sleep, 2)
    r.send(SessionCreated(1, create.step, SID, r.now, 15.0, 15.0, owned=True))
    assert {c.actor: c.result for c in r.out if isinstance(c, Finish)} == {1: SID, 2: SID}


def test_an_adopted_session_that_is_gone_fails_the_acquire() -> None:
    r = Rig(adopt=SID)
    lease = r.acquire(1)
    assert lease.session_id == SID
    r.send(AcquireRequested(2, 2, "k2", b"v", 0, INF, True))
    read = r.one(ReadKey, 2)
    r.send(KeyRead(2, read.step, None, 5))
    send = r.one(SendAcquire, 2)
    r.send(RequestFailed(2, send.step, SessionNotFound("gone")))
    assert isinstance(r.one(Finish, 2).result, SessionNotFound)
    r.none(Destroy)  # never destroys a session it did not create


# --------------------------------------------------------------------------- the table


def test_every_transition_goes_through_the_table() -> None:
    with pytest.raises(InvalidTransition):
        advance(AttemptPhase.DONE, AttemptPhase.SENDING)
    with pytest.raises(InvalidTransition):
        advance(ManagerState.CLOSED, ManagerState.RUNNING)
    r = Rig()
    r.send(CloseRequested(1, 1010.0))
    r.send(AcquireRequested(2, 2, "k", b"v", 0, INF, True))
    assert isinstance(r.one(Finish, 2).result, ManagerClosed)


def test_stop_commands_end_the_background_actors_on_close() -> None:
    r = Rig()
    r.acquire(1)
    r.send(CloseRequested(500, 1010.0))
    stopped = {c.actor for c in r.out if isinstance(c, Stop)}
    assert RENEWER in stopped and ("watch", 0) in stopped


def test_an_ambiguous_acquire_is_released_again_once_its_answer_cannot_land_any_more() -> None:
    """A "not held" answer right after a lost acquire is not conclusive: the acquire may
    still be on its way (a slow network); the cleaner looks again after the request timeout."""
    r = Rig()
    r.acquire(1, key="other")
    r.send(AcquireRequested(2, 2, "k", b"v", 0, 1000.5, True))
    read = r.one(ReadKey, 2)
    r.send(KeyRead(2, read.step, None, 5))
    send = r.one(SendAcquire, 2)
    r.at(1000.5).send(RequestFailed(2, send.step, ConsulUnavailable("timed out")))
    assert isinstance(r.one(Finish, 2).result, LockTimeout)
    first = r.one(SendRelease, CLEANER)
    r.at(1000.6).send(ReleaseAnswered(CLEANER, first.step, ("not_held",)))
    assert r.m.snapshot(r.now).pending_releases == ("k",)
    wake = r.one(Sleep, CLEANER)
    assert wake.until == pytest.approx(1010.5)  # the request timeout after giving up
    r.at(wake.until).send(Woke(CLEANER, wake.step))
    second = r.one(SendRelease, CLEANER)
    r.send(ReleaseAnswered(CLEANER, second.step, ("released",)))
    assert r.m.snapshot(r.now).pending_releases == ()
    assert "lock.cleanup_released" in r.logs()


# --------------------------------------------------------------------------- sets (lock_many)


def _many(r: Rig, actor: int, keys: tuple[str, ...], *, lock_id: int = 7, index: int = 200,
          deadline: float = INF) -> LeaseSet:  # fmt: skip
    """A whole uncontended set acquire: every batch applied."""
    r.send(AcquireManyRequested(actor, lock_id, keys, b"v", deadline, True))
    if any(isinstance(c, CreateSession) for c in r.out):
        r.session(actor)
    while True:
        send = r.one(SendAcquireMany, actor)
        assert len(send.keys) <= MAX_TXN_OPS and send.sid == SID
        r.send(ManyApplied(actor, send.step, tuple(entry(k, SID, index) for k in send.keys)))
        index += 1
        done = [c for c in r.out if isinstance(c, Finish) and c.actor == actor]
        if done:
            assert isinstance(done[0].result, LeaseSet)
            return done[0].result


def test_a_set_goes_in_sorted_batches_of_64_with_one_token() -> None:
    r = Rig()
    keys = tuple(sorted(f"s/{i:03d}" for i in range(150)))
    r.send(AcquireManyRequested(1, 7, keys, b"v", INF, True))
    r.session(1)
    sizes = []
    index = 300
    while True:
        send = r.one(SendAcquireMany, 1)
        sizes.append(send.keys)
        r.send(ManyApplied(1, send.step, tuple(entry(k, SID, index) for k in send.keys)))
        index += 1
        if any(isinstance(c, Finish) for c in r.out):
            break
    assert [len(b) for b in sizes] == [64, 64, 22]
    assert sum(sizes, ()) == keys  # in order, each key once
    ls = r.one(Finish, 1).result
    assert isinstance(ls, LeaseSet) and ls.keys == keys and ls.fencing_token == 302
    assert [lease.fencing_token for lease in ls.leases[:64]] == [300] * 64
    assert r.m.set_of(7, keys[0], r.now) is ls and r.m.lock_state(7) is LockState.HELD
    assert "locks.acquired" in r.logs()
    watch = r.one(Watch)
    assert watch.target is not None and watch.target.covers("s/000")


def test_a_refused_batch_waits_for_the_refused_key_then_resends_that_batch() -> None:
    r = Rig()
    keys = tuple(f"s/{i:03d}" for i in range(70))
    r.send(AcquireManyRequested(1, 7, keys, b"v", INF, True))
    r.session(1)
    first = r.one(SendAcquireMany, 1)
    r.send(ManyApplied(1, first.step, tuple(entry(k, SID, 10) for k in first.keys)))
    second = r.one(SendAcquireMany, 1)
    assert second.keys == keys[64:]
    r.send(TxnRefused(1, second.step, "s/066"))
    read = r.one(ReadKey, 1)
    assert read.key == "s/066"
    r.send(KeyRead(1, read.step, entry("s/066", OTHER, 11), 11))
    r.send(HolderRead(1, r.one(ReadHolder, 1).step, OTHER, 15.0))
    assert r.m.snapshot(r.now).waiting == ("s/066",)  # the first batch stays taken
    watch = r.one(Watch)
    r.send(WatchSaw(watch.slot, watch.gen, (entry("s/066", None, 12),), 12))
    again = r.one(SendAcquireMany, 1)
    assert again.keys == keys[64:]


def test_a_set_that_gives_up_gives_back_what_it_took() -> None:
    r = Rig()
    keys = tuple(f"s/{i:03d}" for i in range(70))
    r.send(AcquireManyRequested(1, 7, keys, b"v", 1010.0, True))
    r.session(1)
    first = r.one(SendAcquireMany, 1)
    r.send(ManyApplied(1, first.step, tuple(entry(k, SID, 10) for k in first.keys)))
    second = r.one(SendAcquireMany, 1)
    r.send(TxnRefused(1, second.step, "s/065"))
    r.send(KeyRead(1, r.one(ReadKey, 1).step, entry("s/065", OTHER, 11), 11))
    r.send(HolderRead(1, r.one(ReadHolder, 1).step, OTHER, 15.0))
    sleep = r.latest(Sleep, 1)
    r.at(1010.0).send(Woke(1, sleep.step))
    assert isinstance(r.one(Finish, 1).result, LockTimeout)
    # The cleaner gives the first batch back at once, in one transaction.
    rel = r.one(SendRelease, CLEANER)
    assert [it.key for it in rel.items] == list(keys[:64])
    assert r.m.lock_state(7) is LockState.UNLOCKED and not r.m.held_leases(r.now)


def test_an_aborted_set_gives_back_its_batch_in_flight_and_what_it_took() -> None:
    r = Rig()
    keys = tuple(f"s/{i:03d}" for i in range(70))
    r.send(AcquireManyRequested(1, 7, keys, b"v", INF, True))
    r.session(1)
    first = r.one(SendAcquireMany, 1)
    r.send(ManyApplied(1, first.step, tuple(entry(k, SID, 10) for k in first.keys)))
    r.one(SendAcquireMany, 1)
    r.send(AttemptAborted(1))  # Ctrl-C while the second batch is in flight
    pending = {it.key for it in r.m.pending_releases()} | {
        it.key for it in r.one(SendRelease, CLEANER).items
    }
    assert pending == set(keys)


def test_local_callers_of_a_key_of_the_set_wait_for_the_set_and_vice_versa() -> None:
    r = Rig()
    lease = r.acquire(1, "s/002")  # a single lock of this process holds one key
    r.send(AcquireManyRequested(2, 7, ("s/001", "s/002", "s/003"), b"v", INF, True))
    r.none(SendAcquireMany)
    assert r.m.snapshot(r.now).queued == ("s/002",)
    assert r.release(3, lease) is True
    send = r.one(SendAcquireMany, 2)
    assert send.keys == ("s/001", "s/002", "s/003")
    r.send(ManyApplied(2, send.step, tuple(entry(k, SID, 150) for k in send.keys)))
    ls = r.one(Finish, 2).result
    assert isinstance(ls, LeaseSet)
    r.send(AcquireRequested(4, 1, "s/003", b"v", 0, INF, True))
    r.none(SendAcquire)  # queued behind the set


def test_losing_one_key_loses_the_set_once_and_gives_back_the_others() -> None:
    r = Rig()
    ls = _many(r, 1, ("s/a", "s/b", "s/c"))
    watch = r.one(Watch)
    # s/b was deleted by someone: confirmed from the leader.
    r.send(WatchSaw(watch.slot, watch.gen, (entry("s/a", SID, 200), entry("s/c", SID, 200)), 300))
    confirm = r.one(Confirm)
    assert confirm.keys == ("s/b",)
    r.send(Confirmed(confirm.slot, confirm.gen, SID, {"s/b": None}, True, r.now, 15.0))
    (loss,) = losses(r.out)
    assert loss.key == "s/b" and loss.keys == ("s/a", "s/b", "s/c")
    assert loss.reason is LossReason.KEY_DELETED
    assert {c.lease.key for c in r.out if isinstance(c, LeaseEnded)} == {"s/a", "s/b", "s/c"}
    assert r.m.set_of(7, "s/a", r.now) is None and r.m.lock_state(7) is LockState.LOST
    rel = r.one(SendRelease, CLEANER)
    assert sorted(it.key for it in rel.items) == ["s/a", "s/c"]  # still ours: given back
    assert ls.fencing_token == 200


def test_a_session_loss_is_one_event_for_the_set() -> None:
    r = Rig()
    _many(r, 1, ("s/a", "s/b"))
    r.one(Watch)
    wake = r.latest(Sleep, RENEWER)
    r.at(1005.0).send(Woke(RENEWER, wake.step))
    r.at(1006.0).send(RenewAnswered(SID, None, gone=True))
    (loss,) = losses(r.out)
    assert loss.keys == ("s/a", "s/b") and loss.reason is LossReason.SESSION_INVALIDATED
    assert r.m.lock_state(7) is LockState.LOST


def test_a_set_release_is_answered_when_every_batch_is_through() -> None:
    r = Rig()
    keys = tuple(f"s/{i:03d}" for i in range(100))
    ls = _many(r, 1, keys)
    r.send(ReleaseManyRequested(2, 7, keys[0], ls))
    assert len([c for c in r.out if isinstance(c, LeaseEnded)]) == 100
    r.none(Finish, 2)
    assert r.m.lock_state(7) is LockState.RELEASING
    first = r.one(SendRelease, CLEANER)
    assert len(first.items) == 64
    r.send(ReleaseAnswered(CLEANER, first.step, ("released",) * 64))
    r.none(Finish, 2)
    second = r.one(SendRelease, CLEANER)
    done: tuple[ReleaseOutcome, ...] = tuple("released" for _ in second.items)
    r.send(ReleaseAnswered(CLEANER, second.step, done))
    assert r.one(Finish, 2).result is True
    assert r.m.lock_state(7) is LockState.UNLOCKED
    r.send(ReleaseManyRequested(3, 7, keys[0], None))
    assert isinstance(r.one(Finish, 3).result, NotHeld)


def test_a_set_release_that_finds_a_key_gone_is_a_loss() -> None:
    r = Rig()
    ls = _many(r, 1, ("s/a", "s/b"))
    r.send(ReleaseManyRequested(2, 7, "s/a", ls))
    rel = r.one(SendRelease, CLEANER)
    r.send(ReleaseAnswered(CLEANER, rel.step, ("released", "not_held")))
    assert r.one(Finish, 2).result is False
    (loss,) = losses(r.out)
    assert loss.keys == ("s/a", "s/b") and loss.reason is LossReason.RELEASED_BY_OTHER
    assert r.m.lock_state(7) is LockState.UNLOCKED


def test_a_set_release_that_cannot_reach_consul_is_deferred() -> None:
    r = Rig()
    ls = _many(r, 1, ("s/a", "s/b"))
    r.send(ReleaseManyRequested(2, 7, "s/a", ls))
    rel = r.one(SendRelease, CLEANER)
    r.send(RequestFailed(CLEANER, rel.step, ConsulUnavailable("down")))
    assert r.one(Finish, 2).result is True  # given up either way; the cleaner goes on
    assert {it.key for it in r.m.pending_releases()} == {"s/a", "s/b"}


def test_a_no_op_batch_is_given_back_and_taken_again() -> None:
    r = Rig()
    r.acquire(1, "s/a", index=100)
    r.m._floor["s/b"] = 150  # an earlier hold of s/b whose loss was only presumed
    r.send(AcquireManyRequested(2, 7, ("s/b", "s/c"), b"v", INF, True))
    send = r.one(SendAcquireMany, 2)
    r.send(ManyApplied(2, send.step, (entry("s/b", SID, 150), entry("s/c", SID, 160))))
    undo = r.one(SendRelease, 2)
    assert [it.key for it in undo.items] == ["s/b", "s/c"]
    r.send(ReleaseAnswered(2, undo.step, ("released", "released")))
    again = r.one(SendAcquireMany, 2)
    r.send(ManyApplied(2, again.step, (entry("s/b", SID, 170), entry("s/c", SID, 170))))
    ls = r.one(Finish, 2).result
    assert isinstance(ls, LeaseSet) and ls.fencing_token == 170


def test_close_releases_a_set_with_everything_else() -> None:
    r = Rig()
    keys = tuple(f"s/{i:03d}" for i in range(70))
    _many(r, 1, keys)
    r.send(CloseRequested(9, 1100.0))
    released: list[str] = []
    while True:
        rels = [c for c in r.out if isinstance(c, SendRelease)]
        if not rels:
            break
        rel = rels[0]
        released.extend(it.key for it in rel.items)
        outcomes: tuple[ReleaseOutcome, ...] = tuple("released" for _ in rel.items)
        r.send(ReleaseAnswered(rel.actor, rel.step, outcomes))
    assert sorted(released) == list(keys)
    assert r.m.lock_state(7) is LockState.UNLOCKED
