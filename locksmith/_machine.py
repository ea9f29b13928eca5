"""The sans-IO lock state machine: every piece of a manager's state and every decision.

:class:`LockMachine` holds the session's lifecycle and lease timer, the holds, the acquire
calls in progress and the local queue per key, releases pending and in flight, the
fencing-token floor per key, lock-delay hints, and the watches wanted. It takes
:mod:`~locksmith._protocol` events with the time they happen (``now``) and returns
commands. It imports no ``threading``, ``socket``, ``time`` or ``os``, and draws no
randomness of its own (the backoff policies carry an injected source), so the same machine
drives the threaded and the asyncio front-ends, and unit tests drive it with plain numbers.

Safety rules it enforces (see ``docs/internals.md``):

* a hold is valid only until its session's lease deadline (TTL after the *start* of the
  last successful renewal); past it, every hold of the session is presumed lost, and its
  keys are released and the session destroyed in the background;
* an acquire whose answer never came is ambiguous: its key is given back by the cleaner
  unless the same session takes it again first; the cleaner never races a local acquire
  of the same key by the same session;
* a fencing token never repeats: an acquire that wrote nothing (the session still held
  the key) is given back and taken again;
* releases go before the session's destroy, always (a destroy would start lock-delay);
* a release answered ``false`` means the hold was already gone: that is a loss.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from locksmith._backoff import Backoff
from locksmith._core import (
    AcquirePlanner,
    DelayHint,
    GiveUp,
    LeaseTimer,
    SleepUntil,
    WatchTarget,
    classify_loss,
    plan_watches,
    settle_reason,
)
from locksmith._deadline import Deadline
from locksmith._exceptions import (
    BadRequest,
    ConsulUnavailable,
    LockConflict,
    LockTimeout,
    ManagerClosed,
    NotHeld,
    PermissionDenied,
    SessionNotFound,
    TLSError,
)
from locksmith._lease import Lease, LeaseSet, LockDelayEvent, LossEvent
from locksmith._models import KVEntry, next_index
from locksmith._protocol import (
    CLEANER,
    RENEWER,
    AcquireManyRequested,
    AcquireRequested,
    Actor,
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
    Start,
    Stop,
    TxnApplied,
    TxnRefused,
    Watch,
    WatchFailed,
    WatchSaw,
    Woke,
)
from locksmith._states import (
    AttemptPhase,
    LockState,
    LossReason,
    ManagerState,
    SessionState,
    advance,
)
from locksmith._stats import ManagerStats, Recorder
from locksmith._validate import MAX_TXN_OPS

__all__ = ["LockMachine", "MachineConfig", "ManagerSnapshot"]

#: Size caps of the caches that only speed things up (holder lock-delays, checked keys).
_CACHE_CAP = 4096

INF = float("inf")
_P = AttemptPhase


@dataclass(frozen=True)
class ManagerSnapshot:
    """What a manager holds, waits for and follows at one instant (for tests, metrics and
    troubleshooting).

    Attributes:
        state: The manager's lifecycle state.
        session_id: Its session (None: none now).
        held: Keys held now.
        waiting: Keys that calls wait for while another session holds them.
        sleeping: Keys that calls wait for in a lock-delay window or a retry pause.
        queued: Keys that calls wait for behind another call or hold of this process.
        watches: What the watch queries follow.
        pending_releases: Keys the cleaner still has to give back.
        pending_destroys: Sessions the cleaner still has to destroy.
    """

    state: ManagerState
    session_id: str | None
    held: tuple[str, ...]
    waiting: tuple[str, ...]
    sleeping: tuple[str, ...]
    queued: tuple[str, ...]
    watches: tuple[WatchTarget, ...]
    pending_releases: tuple[str, ...]
    pending_destroys: tuple[str, ...]


@dataclass(frozen=True)
class MachineConfig:
    """What the machine needs to know of its manager's settings.

    Attributes:
        ttl: Session TTL in seconds (None: no TTL, no lease deadline: unsafe for locks).
        lock_delay: The session's lock-delay in seconds.
        renew_fraction: Renew after this fraction of the TTL.
        request_timeout: The client's timeout for one request; every request gets at most
            this, less when its call's deadline is nearer.
        adopt: An existing session to use instead of creating one.
        watch_budget: How many blocking queries the watches may use at most (soft: keys
            with nothing in common are never merged into a watch of the whole KV store).
        watch_wait: The wait of one blocking query.
        watch_coalesce: Pause after a watch wakes, so a burst of writes costs one re-read.
        retry: Backoff while Consul is unreachable (acquires, watches).
        cleanup: Backoff of the cleaner's retries.
        window: Backoff while a lock-delay window's end is unknown.
    """

    ttl: float | None = 15.0
    lock_delay: float = 15.0
    renew_fraction: float = 1 / 3
    request_timeout: float = 10.0
    adopt: str | None = None
    watch_budget: int = 4
    watch_wait: float = 300.0
    watch_coalesce: float = 0.05
    retry: Backoff = field(default_factory=lambda: Backoff(start=0.05, cap=2.0))
    cleanup: Backoff = field(default_factory=lambda: Backoff(start=0.25, cap=2.0))
    window: Backoff = field(default_factory=lambda: Backoff(start=0.05, cap=5.0))
    #: Which log levels anyone listens to (the front-end asks its logging); events below
    #: are not even built.
    log_enabled: Callable[[int], bool] = field(default=lambda level: True, compare=False)


#: How long a watch slot keeps following keys nobody wants any more before it goes idle
#: (so that a quick release-then-acquire does not restart its query).
_LINGER = 2.0


@dataclass(eq=False, slots=True)
class _Session:
    sid: str
    owned: bool
    lock_delay: float
    timer: LeaseTimer
    renewing: bool = False


@dataclass(eq=False, slots=True)
class _Group:
    """Keys held together (a :class:`LeaseSet`): lost together, released together."""

    lock_id: int
    lease_set: LeaseSet
    #: Whether its loss has been announced (once for the whole set).
    lost: bool = False


@dataclass(eq=False, slots=True)
class _Hold:
    lease: Lease
    lock_id: int
    #: The ModifyIndex of our own latest write to the key (acquire, proclaim).
    key_index: int
    group: _Group | None = None


@dataclass(eq=False, slots=True)
class _Attempt:
    actor: int
    lock_id: int
    key: str
    value: bytes
    flags: int
    deadline: Deadline
    blocking: bool
    planner: AcquirePlanner | None = None
    phase: AttemptPhase = AttemptPhase.QUEUED
    step: int = 0
    sid: str | None = None
    tries: int = 0
    #: A session whose no-op re-acquire must be given back before trying again.
    undo: str | None = None
    holder: str | None = None
    watch_index: int = 0
    read_entry: KVEntry | None = None
    read_index: int = 0
    delay_known: bool | None = None
    #: Read the key before the first send (to check its flags).
    check_flags: bool = True
    #: When the call began (for the acquire latency).
    started: float = 0.0
    #: A set's keys (sorted), taken in batches of :data:`MAX_TXN_OPS`; empty for one key.
    keys: tuple[str, ...] = ()
    #: The set's next batch.
    batch: int = 0
    #: The set's keys taken so far (given back if the call ends without the whole set).
    got: list[Lease] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _SetRelease:
    """A caller's release of a set, carried out by the cleaner: answered when its first
    try at every key is over (as a single release, it never fails for a lost Consul)."""

    actor: int
    group: _Group
    refs: set[tuple[str, str]]
    lost: LossReason | None = None


@dataclass(eq=False, slots=True)
class _Release:
    """A caller's release in flight (or the read that classifies a refused one)."""

    actor: int
    hold: _Hold
    step: int = 0
    reading: bool = False


@dataclass(eq=False, slots=True)
class _Slot:
    n: int
    target: WatchTarget | None = None
    gen: int = 0
    index: int = 0
    seen: int = 0
    failures: int = 0
    unused_since: float | None = None
    stopped: bool = False


@dataclass(eq=False, slots=True)
class _Worker:
    """A background actor's bookkeeping: its step, what it has in flight, its retries."""

    step: int = 0
    busy: bool = False
    batch: tuple[ReleaseItem, ...] = ()
    tries: int = 0
    sleeping_until: float = INF
    pause_until: float = 0.0


class LockMachine:
    """All lock state and decisions of one manager, without I/O.

    Call :meth:`handle` with each event and the time it happens; carry out the commands it
    returns. The query methods (:meth:`is_held`, :meth:`lock_state`, ...) read state
    without changing it. Not thread-safe: a front-end serialises calls.

    Args:
        config: The manager's settings.
    """

    def __init__(self, config: MachineConfig) -> None:
        self.cfg = config
        self.state = ManagerState.NEW
        self._out: list[Command] = []
        self._now = 0.0
        # session
        self.session_state = SessionState.NONE
        self._sess: _Session | None = None
        self._creator: int | None = None
        # calls
        self._attempts: dict[int, _Attempt] = {}
        self._owner: dict[str, int] = {}
        self._queue: dict[str, deque[int]] = {}
        self._releases: dict[int, _Release] = {}
        #: The same releases by key (a key has at most one hold, so one release).
        self._releasing: dict[str, _Release] = {}
        self._set_releases: dict[int, _SetRelease] = {}
        #: Calls waiting for the session alone: their deadline and step.
        self._swaiters: dict[int, tuple[Deadline, int]] = {}
        # holds
        self._holds: dict[str, _Hold] = {}
        self._lock_states: dict[int, LockState] = {}
        self._floor: dict[str, int] = {}
        # waiting
        self._hints: dict[str, DelayHint] = {}
        self._holder_delays: dict[str, float | None] = {}
        self._flags_ok: set[str] = set()
        # cleanup
        self._pending: dict[tuple[str, str], ReleaseItem] = {}
        #: Ambiguous items: until when a "not held" answer is not conclusive (the acquire
        #: may still be on its way to Consul), and when to try again.
        self._settle: dict[tuple[str, str], float] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self._inflight: set[tuple[str, str]] = set()
        self._destroys: set[str] = set()
        self._destroying: set[str] = set()
        self._cleaner = _Worker()
        self._renewer = _Worker()
        # watches
        self._slots: list[_Slot] = []
        self._planned_keys = 0
        # close
        self._closer: int | None = None
        self._closing = _Worker()
        self._close_deadline = Deadline()
        self._closed_keys: set[str] = set()
        self.stats = Recorder()

    # ================================================================== entry point
    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply ``event`` happening at ``now``; return the commands to carry out, in order."""
        self._now = now
        out: list[Command] = []
        self._out = out
        _HANDLERS[type(event)](self, event)
        if self.state is ManagerState.CLOSING:
            self._close_progress()
        else:
            self._kick_cleaner()
        self._out = []
        return out

    # ================================================================== queries
    @property
    def session_id(self) -> str | None:
        """The session in use (None: none yet, or it ended)."""
        return self._sess.sid if self._sess is not None else None

    def lease_deadline(self) -> float:
        """The current session's lease deadline (inf: no session, or no TTL)."""
        return self._sess.timer.deadline if self._sess is not None else INF

    def is_held(self, lease: Lease, now: float) -> bool:
        """Whether ``lease`` is held right now (its deadline not passed)."""
        hold = self._holds.get(lease.key)
        sess = self._sess
        return (
            hold is not None
            and hold.lease is lease
            and sess is not None
            and sess.sid == lease.session_id
            and sess.timer.valid(now)
        )

    def fence(self, lease: Lease, now: float) -> tuple[int, float] | None:
        """For a fenced write under ``lease``: (the index of our latest write to its key,
        seconds left), or None when the lease is not held."""
        if not self.is_held(lease, now):
            return None
        assert self._sess is not None
        return self._holds[lease.key].key_index, self._sess.timer.remaining(now)

    def lease_of(self, lock_id: int, key: str, now: float) -> Lease | None:
        """The lease lock ``lock_id`` (on ``key``) holds right now, or None."""
        hold = self._holds.get(key)
        if hold is None or hold.lock_id != lock_id:
            return None
        return hold.lease if self.is_held(hold.lease, now) else None

    def set_of(self, lock_id: int, first_key: str, now: float) -> LeaseSet | None:
        """The lease set the set ``lock_id`` (first key ``first_key``) holds now, or None."""
        hold = self._holds.get(first_key)
        if hold is None or hold.lock_id != lock_id or hold.group is None:
            return None
        return hold.group.lease_set if self.is_held(hold.lease, now) else None

    def lock_state(self, lock_id: int) -> LockState:
        """The lifecycle state of lock ``lock_id``."""
        return self._lock_states.get(lock_id, LockState.UNLOCKED)

    def held_leases(self, now: float) -> list[Lease]:
        """Every lease held right now."""
        return [h.lease for h in self._holds.values() if self.is_held(h.lease, now)]

    def watch_targets(self) -> list[WatchTarget]:
        """What the watch slots follow now."""
        return [s.target for s in self._slots if s.target is not None and not s.stopped]

    def snapshot(self, now: float) -> ManagerSnapshot:
        """What the manager holds, waits for and follows now."""
        calls = sorted(self._attempts.values(), key=lambda a: a.actor)
        return ManagerSnapshot(
            state=self.state,
            session_id=self.session_id,
            held=tuple(sorted(lease.key for lease in self.held_leases(now))),
            waiting=tuple(a.key for a in calls if a.phase is _P.WAITING),
            sleeping=tuple(a.key for a in calls if a.phase is _P.SLEEPING),
            queued=tuple(a.key for a in calls if a.phase is _P.QUEUED),
            watches=tuple(self.watch_targets()),
            pending_releases=tuple(sorted(k for (k, _) in self._pending)),
            pending_destroys=tuple(sorted(self._destroys)),
        )

    def stats_snapshot(self, now: float) -> ManagerStats:
        """The counters so far, and the leases held at ``now``."""
        return self.stats.snapshot(len(self.held_leases(now)))

    def pending_releases(self) -> list[ReleaseItem]:
        """Keys waiting for the cleaner (presumed-lost or ambiguous holds)."""
        return list(self._pending.values())

    def pending_destroys(self) -> list[str]:
        """Sessions waiting for the cleaner to destroy them."""
        return sorted(self._destroys)

    # ================================================================== helpers
    def _emit(self, command: Command) -> None:
        self._out.append(command)

    def _log(self, level: int, event: str, **fields: Any) -> None:
        if self.cfg.log_enabled(level):
            self._out.append(Log(level, event, fields))

    def _budget(self, deadline: Deadline) -> float:
        return deadline.budget(self._now, self.cfg.request_timeout)

    def _session_valid(self) -> bool:
        return (
            self.session_state is SessionState.ACTIVE
            and self._sess is not None
            and self._sess.timer.valid(self._now)
        )

    def _set_lock(self, lock_id: int, key: str, new: LockState | None = None) -> None:
        """Move lock ``lock_id`` (on ``key``) to ``new``, or to what the records say, via
        the table."""
        current = self._lock_states.get(lock_id, LockState.UNLOCKED)
        if new is None:
            new = self._derived_lock_state(lock_id, key, current)
        if new is LockState.HELD and current is not LockState.ACQUIRING:
            # Taken by a call that queued behind an earlier lease of the same Lock object.
            current = advance(current, LockState.ACQUIRING)
        state = advance(current, new)
        if state is LockState.UNLOCKED:
            self._lock_states.pop(lock_id, None)
        else:
            self._lock_states[lock_id] = state

    def _derived_lock_state(self, lock_id: int, key: str, current: LockState) -> LockState:
        """What lock ``lock_id``'s records say. A Lock has one key, so only that key's hold,
        release and calls are looked at (O(calls queued on the key))."""
        hold = self._holds.get(key)
        if hold is not None and hold.lock_id == lock_id:
            return LockState.HELD
        r = self._releasing.get(key)
        if r is not None and r.hold.lock_id == lock_id:
            return LockState.RELEASING
        owner = self._attempts.get(self._owner.get(key, -1))
        if owner is not None and owner.lock_id == lock_id:
            return LockState.ACQUIRING
        for actor in self._queue.get(key, ()):
            a = self._attempts.get(actor)
            if a is not None and a.lock_id == lock_id:
                return LockState.ACQUIRING
        return LockState.LOST if current is LockState.LOST else LockState.UNLOCKED

    def _key_busy_locally(self, key: str, actor: int | None) -> bool:
        """Whether another local call or hold has ``key`` (so ``actor`` must queue)."""
        owner = self._owner.get(key)
        if owner is not None and owner != actor:
            return True
        if key in self._holds:
            return True
        if key in self._releasing:
            return True
        sid = self.session_id
        return sid is not None and (key, sid) in self._inflight

    # ================================================================== lifecycle
    def _on_start(self, ev: Start) -> None:
        if self.state is ManagerState.NEW:
            self.state = advance(self.state, ManagerState.RUNNING)

    # ================================================================== acquire
    def _on_acquire(self, ev: AcquireRequested) -> None:
        if self.state is ManagerState.NEW:
            self.state = advance(self.state, ManagerState.RUNNING)
        if self.state is not ManagerState.RUNNING:
            self._emit(Finish(ev.actor, ManagerClosed("the LockManager is closed")))
            return
        a = _Attempt(
            actor=ev.actor,
            lock_id=ev.lock_id,
            key=ev.key,
            value=ev.value,
            flags=ev.flags,
            deadline=Deadline(ev.deadline),
            blocking=ev.blocking,
            check_flags=ev.key not in self._flags_ok,
            started=self._now,
        )
        self._attempts[a.actor] = a
        if self.lock_state(a.lock_id) in (LockState.UNLOCKED, LockState.LOST):
            self._set_lock(a.lock_id, a.key, LockState.ACQUIRING)
        self._next(a)

    def _phase(self, a: _Attempt, phase: AttemptPhase) -> None:
        a.phase = advance(a.phase, phase)
        a.step += 1

    def _wait(self, a: _Attempt, phase: AttemptPhase, until: float) -> None:
        self._phase(a, phase)
        self._emit(Sleep(a.actor, a.step, until))

    def _next(self, a: _Attempt) -> None:
        """Decide the next step of attempt ``a`` (which is not waiting for an answer)."""
        if self.state is not ManagerState.RUNNING:
            self._finish(a, ManagerClosed("the LockManager is closed"))
            return
        if a.keys:
            self._next_many(a)
            return
        # Local exclusion: one call (or hold) per key talks to Consul; the others queue, FIFO.
        if self._key_busy_locally(a.key, a.actor):
            if not a.blocking:
                self._finish(a, None)
            elif a.deadline.expired(self._now):
                self._timeout(a, "held by this process")
            else:
                q = self._queue.setdefault(a.key, deque())
                if a.actor not in q:
                    q.append(a.actor)
                self._wait(a, _P.QUEUED, a.deadline.at)
            return
        self._owner[a.key] = a.actor
        self._unqueue(a)
        if a.undo is not None:
            self._phase(a, _P.UNDOING)
            item = ReleaseItem(a.key, a.undo, a.value, a.flags)
            self._emit(SendRelease(a.actor, a.step, (item,), self._budget(a.deadline)))
            return
        if not self._session_valid():
            self._need_session(a)
            return
        if a.check_flags:
            self._phase(a, _P.READING)
            self._emit(ReadKey(a.actor, a.step, a.key, self._budget(a.deadline)))
            return
        sess = self._sess
        assert sess is not None
        a.sid = sess.sid
        self._phase(a, _P.SENDING)
        self._emit(
            SendAcquire(
                a.actor, a.step, a.key, a.value, a.flags, sess.sid, self._budget(a.deadline)
            )
        )

    # ------------------------------------------------------------------ sets
    def _on_acquire_many(self, ev: AcquireManyRequested) -> None:
        if self.state is ManagerState.NEW:
            self.state = advance(self.state, ManagerState.RUNNING)
        if self.state is not ManagerState.RUNNING:
            self._emit(Finish(ev.actor, ManagerClosed("the LockManager is closed")))
            return
        a = _Attempt(
            actor=ev.actor,
            lock_id=ev.lock_id,
            key=ev.keys[0],
            value=ev.value,
            flags=0,
            deadline=Deadline(ev.deadline),
            blocking=ev.blocking,
            check_flags=False,
            started=self._now,
            keys=ev.keys,
        )
        self._attempts[a.actor] = a
        if self.lock_state(a.lock_id) in (LockState.UNLOCKED, LockState.LOST):
            self._set_lock(a.lock_id, a.key, LockState.ACQUIRING)
        self._next(a)

    def _batch_keys(self, a: _Attempt) -> tuple[str, ...]:
        return a.keys[a.batch * MAX_TXN_OPS : (a.batch + 1) * MAX_TXN_OPS]

    def _attempt_items(self, a: _Attempt, sid: str) -> tuple[ReleaseItem, ...]:
        """What giving back the attempt's current request means: its key, or its batch."""
        if not a.keys:
            return (ReleaseItem(a.key, sid, a.value, a.flags),)
        return tuple(ReleaseItem(k, sid, a.value, 0) for k in self._batch_keys(a))

    def _drop_got(self, a: _Attempt) -> None:
        """Give back the keys a set's call took so far (it ends, or starts over)."""
        for lease in a.got:
            self._queue_release(ReleaseItem(lease.key, lease.session_id, lease.value, 0))
        a.got.clear()
        a.batch = 0

    def _next_many(self, a: _Attempt) -> None:
        """The next step of a set's call: local exclusion for every key, then its batches."""
        busy = next((k for k in a.keys if self._key_busy_locally(k, a.actor)), None)
        if busy is not None:
            # Another local call or hold has one of the keys: queue behind it (the set owns
            # none of its keys meanwhile, so local callers never wait for each other in a
            # cycle).
            for k in a.keys:
                if self._owner.get(k) == a.actor:
                    del self._owner[k]
            if a.got:  # (cannot happen while the set owns its keys; kept for safety)
                self._drop_got(a)
            if not a.blocking:
                self._finish(a, None)
            elif a.deadline.expired(self._now):
                self._timeout(a, f"{busy!r} held by this process")
            else:
                self._unqueue(a)
                a.key = busy
                self._queue.setdefault(busy, deque()).append(a.actor)
                self._wait(a, _P.QUEUED, a.deadline.at)
            return
        self._unqueue(a)
        for k in a.keys:
            self._owner[k] = a.actor
        if a.undo is not None:
            self._phase(a, _P.UNDOING)
            items = self._attempt_items(a, a.undo)
            self._emit(SendRelease(a.actor, a.step, items, self._budget(a.deadline)))
            return
        if not self._session_valid():
            self._need_session(a)
            return
        sess = self._sess
        assert sess is not None
        if a.got and a.got[0].session_id != sess.sid:
            # The session that took the first batches ended: start over with this one.
            self._drop_got(a)
        a.sid = sess.sid
        batch = self._batch_keys(a)
        a.key = batch[0]
        self._phase(a, _P.SENDING)
        self._emit(
            SendAcquireMany(a.actor, a.step, batch, a.value, sess.sid, self._budget(a.deadline))
        )

    def _on_many_applied(self, ev: ManyApplied) -> None:
        a = self._attempts.get(ev.actor)
        if a is None or a.step != ev.step or a.phase is not _P.SENDING:
            return
        sid = a.sid
        assert sid is not None
        now = self._now
        sess = self._sess
        written = tuple(ReleaseItem(e.key, sid, a.value, 0) for e in ev.entries)
        if self.state is not ManagerState.RUNNING or sess is None or sess.sid != sid:
            for item in written:
                self._queue_release(item)
            self._drop_got(a)
            self._next(a)
            return
        if not sess.timer.valid(now):
            for item in written:
                self._queue_release(item)
            self._drop_got(a)
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
            self._next(a)
            return
        if any(e.modify_index <= self._floor.get(e.key, 0) for e in ev.entries):
            # Some key was still ours (a stale loss): Consul took its acquire as a no-op and
            # its index would repeat a token. Give the batch back, then take it again.
            self._log(logging.INFO, "lock.reacquire_without_write", key=a.key, session_id=sid)
            a.undo = sid
            self._phase(a, _P.UNDOING)
            self._emit(SendRelease(a.actor, a.step, written, self._budget(a.deadline)))
            return
        a.got.extend(
            Lease(e.key, sid, e.modify_index, a.value, acquired_at=now) for e in ev.entries
        )
        a.batch += 1
        if a.batch * MAX_TXN_OPS < len(a.keys):
            self._next(a)
            return
        self._set_taken(a, sid)

    def _set_taken(self, a: _Attempt, sid: str) -> None:
        """Every batch of a set's call is in: the set is held."""
        now = self._now
        token = max(lease.fencing_token for lease in a.got)
        lease_set = LeaseSet(a.keys, sid, token, tuple(a.got), now)
        group = _Group(a.lock_id, lease_set)
        for lease in a.got:
            key = lease.key
            self._drop_pending((key, sid))
            self._owner.pop(key, None)
            self._holds[key] = _Hold(lease, a.lock_id, lease.fencing_token, group)
            self._floor[key] = lease.fencing_token
            self._hints.pop(key, None)
        a.got = []
        self._phase(a, _P.DONE)
        del self._attempts[a.actor]
        self._set_lock(a.lock_id, a.keys[0], LockState.HELD)
        self.stats.acquired += 1
        self.stats.acquire_latency.observe(now - a.started)
        self._log(
            logging.INFO,
            "locks.acquired",
            key=a.keys[0],
            keys=len(a.keys),
            session_id=sid,
            fencing_token=token,
        )
        self._emit(Finish(a.actor, lease_set))
        self._follow_many([(lease.key, lease.fencing_token) for lease in lease_set.leases])

    def _on_release_many(self, ev: ReleaseManyRequested) -> None:
        hold = self._holds.get(ev.key)
        group = hold.group if hold is not None else None
        if (
            group is None
            or group.lock_id != ev.lock_id
            or (ev.lease_set is not None and group.lease_set is not ev.lease_set)
        ):
            if ev.lease_set is not None and ev.lease_set.keys[0] in self._closed_keys:
                self._emit(Finish(ev.actor, True))  # released by close()
            elif self.lock_state(ev.lock_id) is LockState.LOST:
                self._set_lock(ev.lock_id, ev.key, LockState.UNLOCKED)
                self._emit(Finish(ev.actor, False))
            elif ev.lease_set is not None:
                self._emit(Finish(ev.actor, False))
            else:
                self._emit(Finish(ev.actor, NotHeld(f"the set from {ev.key!r} is not held")))
            return
        assert hold is not None
        sess = self._sess
        if sess is None or sess.sid != hold.lease.session_id or not sess.timer.valid(self._now):
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
            if self.lock_state(ev.lock_id) is LockState.LOST:
                self._set_lock(ev.lock_id, ev.key, LockState.UNLOCKED)
            self._emit(Finish(ev.actor, False))
            return
        waiter = _SetRelease(ev.actor, group, set())
        self._set_lock(group.lock_id, ev.key, LockState.RELEASING)
        for lease in group.lease_set.leases:
            del self._holds[lease.key]
            ref = (lease.key, lease.session_id)
            self._pending[ref] = ReleaseItem(lease.key, lease.session_id, lease.value, 0)
            waiter.refs.add(ref)
            self._count_release(lease)
            self._emit(LeaseEnded(lease, None))
        self._set_releases[ev.actor] = waiter
        self._log(
            logging.INFO,
            "locks.released",
            key=ev.key,
            keys=len(group.lease_set.keys),
            session_id=hold.lease.session_id,
        )

    def _set_release_progress(
        self, done: Sequence[tuple[tuple[str, str], str]], failed: bool
    ) -> None:
        """The cleaner is through with ``done`` (ref, outcome). A set's release is answered
        once every key of it had its try; a failed try answers it at once (the cleaner goes
        on in the background, and the release counts as done, as for a single key)."""
        for w in list(self._set_releases.values()):
            touched = False
            for ref, outcome in done:
                if ref not in w.refs:
                    continue
                touched = True
                if failed:
                    continue
                w.refs.discard(ref)
                if w.lost is None and outcome == "session_gone":
                    w.lost = LossReason.SESSION_INVALIDATED
                elif w.lost is None and outcome == "not_held":
                    w.lost = LossReason.RELEASED_BY_OTHER
            if (failed and touched) or (not failed and not w.refs):
                self._set_release_done(w, deferred=failed)

    def _set_release_done(self, w: _SetRelease, *, deferred: bool) -> None:
        del self._set_releases[w.actor]
        group = w.group
        first = group.lease_set.leases[0]
        if w.lost is not None and not deferred:
            # Some key was not ours any more: the set had been lost before the release.
            self._set_lock(group.lock_id, first.key, LockState.LOST)
            self._announce_loss(_Hold(first, group.lock_id, 0, group), w.lost, ended=False)
            self._set_lock(group.lock_id, first.key)
            if self.lock_state(group.lock_id) is LockState.LOST:
                self._set_lock(group.lock_id, first.key, LockState.UNLOCKED)  # reported
        else:
            self._set_lock(group.lock_id, first.key)
        self._emit(Finish(w.actor, deferred or w.lost is None))

    def _unqueue(self, a: _Attempt) -> None:
        q = self._queue.get(a.key)
        if q is not None and a.actor in q:
            q.remove(a.actor)
            if not q:
                del self._queue[a.key]

    def _need_session(self, a: _Attempt) -> None:
        if self.session_state is SessionState.ACTIVE:
            # Past its deadline, and the renewer has not said so yet: say it now.
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
        if self.session_state is SessionState.CREATING and self._creator != a.actor:
            if a.deadline.expired(self._now):
                self._timeout(a, "no session")
            else:
                self._wait(a, _P.WAIT_SESSION, a.deadline.at)
            return
        self.session_state = advance(self.session_state, SessionState.CREATING)
        self._creator = a.actor
        self._phase(a, _P.CREATING)
        budget = self._budget(a.deadline)
        if self.cfg.adopt is not None:
            self._emit(AdoptSession(a.actor, a.step, self.cfg.adopt, budget))
        else:
            self._emit(CreateSession(a.actor, a.step, budget))

    def _wake_session_waiters(self) -> None:
        for other in list(self._attempts.values()):
            if other.phase is _P.WAIT_SESSION:
                self._next(other)
        for actor in list(self._swaiters):
            if actor != self._creator:
                self._session_for(actor)

    def _on_session_wanted(self, ev: SessionWanted) -> None:
        if self.state is ManagerState.NEW:
            self.state = advance(self.state, ManagerState.RUNNING)
        self._swaiters[ev.actor] = (Deadline(ev.deadline), 0)
        self._session_for(ev.actor)

    def _session_for(self, actor: int) -> None:
        """Answer a session-only call, or have it wait for, or create, the session."""
        deadline, step = self._swaiters[actor]
        step += 1
        self._swaiters[actor] = (deadline, step)
        if self.state is not ManagerState.RUNNING:
            del self._swaiters[actor]
            self._emit(Finish(actor, ManagerClosed("the LockManager is closed")))
            return
        if self._session_valid():
            del self._swaiters[actor]
            assert self._sess is not None
            self._emit(Finish(actor, self._sess.sid))
            return
        if self.session_state is SessionState.ACTIVE:
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
        if self.session_state is SessionState.CREATING:
            if deadline.expired(self._now):
                del self._swaiters[actor]
                self._emit(Finish(actor, LockTimeout("no session in time")))
            else:
                self._emit(Sleep(actor, step, deadline.at))
            return
        self.session_state = advance(self.session_state, SessionState.CREATING)
        self._creator = actor
        budget = self._budget(deadline)
        if self.cfg.adopt is not None:
            self._emit(AdoptSession(actor, step, self.cfg.adopt, budget))
        else:
            self._emit(CreateSession(actor, step, budget))

    def _swaiter_failed(self, actor: int, step: int, err: Exception) -> None:
        deadline, current = self._swaiters[actor]
        if step != current:
            return
        if self._creator == actor:
            self.session_state = advance(self.session_state, SessionState.NONE)
            self._creator = None
        if not _transient(err) or deadline.expired(self._now):
            del self._swaiters[actor]
            if isinstance(err, ConsulUnavailable):
                timeout = LockTimeout(f"could not create a session in time ({err})")
                timeout.__cause__ = err
                err = timeout
            self._emit(Finish(actor, err))
        else:
            self._emit(Sleep(actor, current, min(deadline.at, self._now + self.cfg.retry.delay(1))))
        self._wake_session_waiters()

    def _on_session_created(self, ev: SessionCreated) -> None:
        mine = self.session_state is SessionState.CREATING and self._creator == ev.actor
        if not mine or self.state is not ManagerState.RUNNING:
            # Nobody waits for it any more (the caller left, the manager closes). It holds
            # no key: destroy it.
            if ev.owned:
                self._destroys.add(ev.sid)
            if mine:
                self.session_state = advance(self.session_state, SessionState.NONE)
                self._creator = None
                a = self._attempts.get(ev.actor)
                if a is not None:
                    self._finish(a, ManagerClosed("the LockManager is closed"))
                if self._swaiters.pop(ev.actor, None) is not None:
                    self._emit(Finish(ev.actor, ManagerClosed("the LockManager is closed")))
            return
        self._creator = None
        timer = LeaseTimer(ev.ttl, ev.started, self.cfg.renew_fraction)
        self._sess = _Session(ev.sid, ev.owned, ev.lock_delay, timer)
        self.session_state = advance(self.session_state, SessionState.ACTIVE)
        self.stats.sessions_created += 1
        self._log(
            logging.INFO,
            "session.created" if ev.owned else "session.adopted",
            session_id=ev.sid,
            ttl=ev.ttl,
            lock_delay=ev.lock_delay,
        )
        self._renewer.tries = 0
        self._schedule_renew()
        if ev.actor in self._swaiters:
            del self._swaiters[ev.actor]
            self._emit(Finish(ev.actor, ev.sid))
        a = self._attempts.get(ev.actor)
        if a is not None and a.step == ev.step:
            self._next(a)
        self._wake_session_waiters()

    def _on_key_read(self, ev: KeyRead) -> None:
        a = self._attempts.get(ev.actor)
        if a is None:
            self._on_release_read(ev)
            return
        if a.step != ev.step or a.phase is not _P.READING:
            return
        entry = ev.entry
        if entry is not None and entry.flags != a.flags:
            self._finish(
                a,
                LockConflict(
                    f"key {a.key!r} has flags {entry.flags:#x}, this lock uses {a.flags:#x}: "
                    "it belongs to another kind of lock"
                ),
            )
            return
        if len(self._flags_ok) >= _CACHE_CAP:
            self._flags_ok.clear()
        self._flags_ok.add(a.key)
        if a.check_flags:
            a.check_flags = False
            self._next(a)
            return
        a.read_entry, a.read_index = entry, ev.index
        holder = entry.session if entry is not None else None
        if holder is not None and holder not in self._holder_delays:
            # Learn the holder's lock-delay once: it is the window after its session ends.
            a.step += 1
            self._emit(ReadHolder(a.actor, a.step, holder, self._budget(a.deadline)))
            return
        self._plan_wait(a)

    def _on_holder_read(self, ev: HolderRead) -> None:
        if len(self._holder_delays) >= _CACHE_CAP:
            self._holder_delays.clear()
        self._holder_delays[ev.sid] = ev.lock_delay
        a = self._attempts.get(ev.actor)
        if a is not None and a.step == ev.step and a.phase is _P.READING:
            self._plan_wait(a)

    def _plan_wait(self, a: _Attempt) -> None:
        """After a refused acquire and a read of the key: wait for its holder or a window."""
        now = self._now
        entry = a.read_entry
        holder = entry.session if entry is not None else None
        if holder is not None and holder == a.sid:
            self._next(a)  # ours after all (a race with our own cleanup): try again
            return
        if a.planner is None:  # made on the first wait only: most acquires never wait
            a.planner = AcquirePlanner(
                None if a.deadline.at == INF else a.deadline.at, backoff=self.cfg.window
            )
        action = a.planner.after_failure(
            now, holder=holder, index=a.read_index, hint=self._hints.get(a.key)
        )
        if isinstance(action, GiveUp):
            self._timeout(a, f"held by session {holder}" if holder else "in a lock-delay window")
            return
        if isinstance(action, SleepUntil):
            if a.delay_known is None or a.delay_known != action.known:
                a.delay_known = action.known
                hint = self._hints.get(a.key)
                event = LockDelayEvent(
                    key=a.key,
                    until=action.until,
                    known=action.known,
                    previous_session=hint.session_id if hint else None,
                    wait=max(0.0, action.until - now),
                )
                self._log(
                    logging.INFO,
                    "lock.lock_delay",
                    key=a.key,
                    wait=round(event.wait, 3),
                    known=action.known,
                    previous_session=event.previous_session,
                )
                self._emit(Notify(event, a.lock_id))
                self.stats.lock_delay_waits += 1
                self.stats.lock_delay_wait.observe(event.wait)
            self._wait(a, _P.SLEEPING, action.until)
            return
        a.delay_known = None
        a.holder, a.watch_index = holder, a.read_index
        self._wait(a, _P.WAITING, a.deadline.at)
        if not self._follow(a.key, a.read_index):
            # A watch covering the key has news newer than our read: the key may have
            # changed in between. Try again rather than wait on stale news.
            self._next(a)

    def _on_txn_applied(self, ev: TxnApplied) -> None:
        a = self._attempts.get(ev.actor)
        if a is None or a.step != ev.step or a.phase is not _P.SENDING:
            return
        sid = a.sid
        assert sid is not None
        token = ev.entry.modify_index
        now = self._now
        sess = self._sess
        if self.state is not ManagerState.RUNNING or sess is None or sess.sid != sid:
            # The session ended (or the manager closes) while we acquired: give it back.
            self._queue_release(ReleaseItem(a.key, sid, a.value, a.flags))
            self._next(a)
            return
        if not sess.timer.valid(now):
            self._queue_release(ReleaseItem(a.key, sid, a.value, a.flags))
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
            self._next(a)
            return
        if token <= self._floor.get(a.key, 0):
            # Our session still held the key (a loss declared on a stale read, or a release
            # that never reached Consul), so Consul took the identical acquire as a no-op and
            # wrote nothing: its index would repeat a token. Give the key back, then take it.
            self._log(logging.INFO, "lock.reacquire_without_write", key=a.key, session_id=sid)
            a.undo = sid
            self._phase(a, _P.UNDOING)
            item = ReleaseItem(a.key, sid, a.value, a.flags)
            self._emit(SendRelease(a.actor, a.step, (item,), self._budget(a.deadline)))
            return
        lease = Lease(
            key=a.key,
            session_id=sid,
            fencing_token=token,
            value=a.value,
            acquired_at=now,
            flags=a.flags,
        )
        self._drop_pending((a.key, sid))
        self._owner.pop(a.key, None)
        self._holds[a.key] = _Hold(lease, a.lock_id, token)
        self._floor[a.key] = token
        self._hints.pop(a.key, None)
        self._phase(a, _P.DONE)
        del self._attempts[a.actor]
        self._set_lock(a.lock_id, a.key, LockState.HELD)
        self.stats.acquired += 1
        self.stats.acquire_latency.observe(now - a.started)
        self._log(logging.INFO, "lock.acquired", key=a.key, session_id=sid, fencing_token=token)
        self._emit(Finish(a.actor, lease))
        self._follow(a.key, token)

    def _on_txn_refused(self, ev: TxnRefused) -> None:
        a = self._attempts.get(ev.actor)
        if a is None or a.step != ev.step or a.phase is not _P.SENDING:
            return
        if self.state is not ManagerState.RUNNING:
            self._finish(a, ManagerClosed("the LockManager is closed"))
        elif not a.blocking:
            self._finish(a, None)
        else:
            if a.keys and ev.key is not None:
                a.key = ev.key  # the set waits for the key that was refused
            self._phase(a, _P.READING)
            self._emit(ReadKey(a.actor, a.step, a.key, self._budget(a.deadline)))

    def _on_request_failed(self, ev: RequestFailed) -> None:
        if ev.actor == CLEANER or (ev.actor == self._closer and self._closer is not None):
            self._releaser_failed(ev)
            return
        if not isinstance(ev.actor, int):
            return
        if ev.actor in self._swaiters:
            self._swaiter_failed(ev.actor, ev.step, ev.error)
            return
        a = self._attempts.get(ev.actor)
        if a is None:
            self._on_release_failed(ev)
            return
        if a.step != ev.step:
            return
        err = ev.error
        phase = a.phase
        if phase is _P.CREATING:
            self.session_state = advance(self.session_state, SessionState.NONE)
            self._creator = None
            self._wake_session_waiters()
        elif phase is _P.SENDING:
            sid = a.sid
            assert sid is not None
            if isinstance(err, SessionNotFound):
                if self.session_id == sid:
                    self._session_ended(LossReason.SESSION_INVALIDATED, confirmed=True)
                if self.cfg.adopt is not None:
                    self._finish(a, err)
                else:
                    self._next(a)
                return
            if ev.sent and not isinstance(err, BadRequest | PermissionDenied):
                # No answer: the acquire may have been applied. Unless this session takes the
                # key again first, the cleaner gives it back.
                for item in self._attempt_items(a, sid):
                    self._queue_release(item, ambiguous=True)
        elif phase is _P.READING and isinstance(err, ConsulUnavailable) and a.read_entry:
            pass
        if self.state is not ManagerState.RUNNING:
            if a.undo is not None:
                for item in self._attempt_items(a, a.undo):
                    self._queue_release(item)
            self._finish(a, ManagerClosed("the LockManager is closed"))
            return
        transient = _transient(err) or phase is _P.UNDOING
        if not transient:
            self._finish(a, err)
            return
        if not a.blocking or a.deadline.expired(self._now):
            if a.undo is not None:
                for item in self._attempt_items(a, a.undo):
                    self._queue_release(item)
            if a.blocking:
                self._timeout(a, str(err), cause=err)
            else:
                self._finish(a, err)
            return
        a.tries += 1
        self._log(logging.WARNING, "lock.acquire_retry", key=a.key, error=str(err))
        self._wait(a, _P.SLEEPING, min(self._now + self.cfg.retry.delay(a.tries), a.deadline.at))

    def _on_woke(self, ev: Woke) -> None:
        if ev.actor == RENEWER:
            if ev.step == self._renewer.step:
                self._renewer.sleeping_until = INF
                self._renew_due()
        elif ev.actor == CLEANER:
            if ev.step == self._cleaner.step:
                self._cleaner.sleeping_until = INF
        elif self._closer is not None and ev.actor == self._closer:
            if ev.step == self._closing.step:
                self._closing.sleeping_until = INF
        elif isinstance(ev.actor, int) and ev.actor in self._swaiters:
            if self._swaiters[ev.actor][1] == ev.step:
                self._session_for(ev.actor)
        elif isinstance(ev.actor, int):
            a = self._attempts.get(ev.actor)
            if a is None or a.step != ev.step:
                return
            if a.phase is _P.WAITING:
                self._timeout(a, f"held by session {a.holder}")
            elif a.phase in (_P.SLEEPING, _P.QUEUED, _P.WAIT_SESSION):
                self._next(a)

    def _on_aborted(self, ev: AttemptAborted) -> None:
        if self._swaiters.pop(ev.actor, None) is not None:
            if self._creator == ev.actor:
                self.session_state = advance(self.session_state, SessionState.NONE)
                self._creator = None
                self._wake_session_waiters()
            return
        a = self._attempts.get(ev.actor)
        if a is None:
            r = self._releases.pop(ev.actor, None)
            if r is not None:
                self._releasing.pop(r.hold.lease.key, None)
                # The release may or may not have reached Consul: make sure it happens.
                lease = r.hold.lease
                self._queue_release(
                    ReleaseItem(lease.key, lease.session_id, lease.value, lease.flags)
                )
                self._emit(LeaseEnded(lease, None))
                self._set_lock(r.hold.lock_id, r.hold.lease.key)
                self._wake_queue(lease.key)
            return
        if a.phase is _P.SENDING and a.sid is not None:
            for item in self._attempt_items(a, a.sid):
                self._queue_release(item, ambiguous=True)
        if a.undo is not None:
            for item in self._attempt_items(a, a.undo):
                self._queue_release(item)
        if a.phase is _P.CREATING:
            self.session_state = advance(self.session_state, SessionState.NONE)
            self._creator = None
            self._wake_session_waiters()
        self._finish(a, None, answer=False)

    def _timeout(self, a: _Attempt, why: str, cause: Exception | None = None) -> None:
        what = f"{len(a.keys)} keys from {a.keys[0]!r}" if a.keys else repr(a.key)
        err = LockTimeout(f"could not acquire {what} in time ({why})")
        err.__cause__ = cause
        self._finish(a, err)

    def _finish(self, a: _Attempt, result: Any, *, answer: bool = True) -> None:
        """End attempt ``a`` without a hold: free its key locally and answer its caller."""
        self._phase(a, _P.DONE)
        del self._attempts[a.actor]
        self._unqueue(a)
        if a.keys:
            self._drop_got(a)  # all or none: give back what was taken
            for k in a.keys:
                if self._owner.get(k) == a.actor:
                    del self._owner[k]
            self._set_lock(a.lock_id, a.keys[0])
        else:
            if self._owner.get(a.key) == a.actor:
                del self._owner[a.key]
            self._set_lock(a.lock_id, a.key)
        self.stats.acquire_failed += 1
        if answer:
            self._emit(Finish(a.actor, result))
        for k in a.keys or (a.key,):
            self._wake_queue(k)

    def _wake_queue(self, key: str) -> None:
        """The key may be free locally: the first call queued for it goes on."""
        q = self._queue.get(key)
        while q:
            first = self._attempts.get(q[0])
            if first is None:
                q.popleft()
                continue
            if not self._key_busy_locally(key, first.actor):
                self._next(first)
            return
        self._queue.pop(key, None)

    # ================================================================== release
    def _on_release(self, ev: ReleaseRequested) -> None:
        hold = self._holds.get(ev.key)
        if hold is not None and (
            hold.lock_id != ev.lock_id or (ev.lease is not None and hold.lease is not ev.lease)
        ):
            hold = None
        if hold is None:
            if ev.lease is not None and ev.lease.key in self._closed_keys:
                self._emit(Finish(ev.actor, True))  # released by close()
            elif self.lock_state(ev.lock_id) is LockState.LOST:
                self._set_lock(ev.lock_id, ev.key, LockState.UNLOCKED)  # the loss is acknowledged
                self._emit(Finish(ev.actor, False))
            elif ev.lease is not None:
                self._emit(Finish(ev.actor, False))  # that lease ended already
            else:
                self._emit(Finish(ev.actor, NotHeld(f"the lock on {ev.key!r} is not held")))
            return
        sess = self._sess
        if sess is None or sess.sid != hold.lease.session_id or not sess.timer.valid(self._now):
            # Past the lease deadline: the lock is presumed lost, whatever the server says.
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
            if self.lock_state(ev.lock_id) is LockState.LOST:
                self._set_lock(ev.lock_id, ev.key, LockState.UNLOCKED)
            self._emit(Finish(ev.actor, False))
            return
        lease = hold.lease
        del self._holds[lease.key]
        r = _Release(ev.actor, hold, step=1)
        self._releases[ev.actor] = r
        self._releasing[lease.key] = r
        self._set_lock(hold.lock_id, hold.lease.key, LockState.RELEASING)
        item = ReleaseItem(lease.key, lease.session_id, lease.value, lease.flags)
        self._emit(SendRelease(ev.actor, r.step, (item,), self.cfg.request_timeout))

    def _release_done(self, r: _Release, result: bool, reason: LossReason | None) -> None:
        del self._releases[r.actor]
        self._releasing.pop(r.hold.lease.key, None)
        lease = r.hold.lease
        if reason is None:
            self._count_release(lease)
            self._log(logging.INFO, "lock.released", key=lease.key, session_id=lease.session_id)
            self._emit(LeaseEnded(lease, None))
            self._set_lock(r.hold.lock_id, r.hold.lease.key)
        else:
            self._set_lock(r.hold.lock_id, r.hold.lease.key, LockState.LOST)
            self._announce_loss(r.hold, reason)
            self._set_lock(r.hold.lock_id, r.hold.lease.key)
            if self.lock_state(r.hold.lock_id) is LockState.LOST:
                self._set_lock(
                    r.hold.lock_id, r.hold.lease.key, LockState.UNLOCKED
                )  # reported to the caller
        self._emit(Finish(r.actor, result))
        self._wake_queue(lease.key)

    def _on_release_answered(self, ev: ReleaseAnswered) -> None:
        if ev.actor == CLEANER or (ev.actor == self._closer and self._closer is not None):
            self._releaser_answered(ev)
            return
        if not isinstance(ev.actor, int):
            return
        a = self._attempts.get(ev.actor)
        if a is not None:
            if a.step == ev.step and a.phase is _P.UNDOING:
                a.undo = None
                self._next(a)
            return
        r = self._releases.get(ev.actor)
        if r is None or r.step != ev.step:
            return
        outcome = ev.outcomes[0]
        if outcome == "released":
            self._release_done(r, True, None)
        elif outcome == "session_gone":
            sid = r.hold.lease.session_id
            self._release_done(r, False, LossReason.SESSION_INVALIDATED)
            if self.session_id == sid:
                self._session_ended(LossReason.SESSION_INVALIDATED, confirmed=True)
        else:
            # Consul says our session did not hold the key: the hold was already gone.
            # Read the key (from the leader) to say why.
            r.reading = True
            r.step += 1
            self._emit(ReadKey(r.actor, r.step, r.hold.lease.key, self.cfg.request_timeout, True))

    def _on_release_read(self, ev: KeyRead) -> None:
        r = self._releases.get(ev.actor)
        if r is None or r.step != ev.step or not r.reading:
            return
        e = ev.entry
        reason = classify_loss(
            r.hold.lease.session_id, e.session if e else None, e is not None, True
        )
        self._release_done(r, False, reason or LossReason.RELEASED_BY_OTHER)

    def _on_release_failed(self, ev: RequestFailed) -> None:
        r = self._releases.get(ev.actor) if isinstance(ev.actor, int) else None
        if r is None or r.step != ev.step:
            return
        lease = r.hold.lease
        if r.reading:
            self._release_done(r, False, LossReason.RELEASED_BY_OTHER)
            return
        if isinstance(ev.error, SessionNotFound):
            self._release_done(r, False, LossReason.SESSION_INVALIDATED)
            return
        # Unavailable, or refused mid leader change: the cleaner keeps trying in the
        # background; release() itself does not fail (the key is given up either way).
        self._queue_release(ReleaseItem(lease.key, lease.session_id, lease.value, lease.flags))
        self._log(
            logging.WARNING,
            "lock.release_deferred",
            key=lease.key,
            session_id=lease.session_id,
            error=str(ev.error),
        )
        del self._releases[r.actor]
        self._releasing.pop(r.hold.lease.key, None)
        self._count_release(lease)
        self._emit(LeaseEnded(lease, None))
        self._set_lock(r.hold.lock_id, r.hold.lease.key)
        self._emit(Finish(r.actor, True))
        self._wake_queue(lease.key)

    # ================================================================== losses
    def _count_release(self, lease: Lease) -> None:
        self.stats.released += 1
        self.stats.hold_duration.observe(self._now - lease.acquired_at)

    def _announce_loss(self, hold: _Hold, reason: LossReason, *, ended: bool = True) -> None:
        """Tell the world a hold was lost: its lease ends, and ``on_lost`` hears of it once
        (once per set for the keys of a set)."""
        lease = hold.lease
        if ended:
            self._emit(LeaseEnded(lease, reason))
        group = hold.group
        if group is not None:
            if group.lost:
                return
            group.lost = True
        self.stats.lost[reason.value] += 1
        self.stats.hold_duration.observe(self._now - lease.acquired_at)
        keys = group.lease_set.keys if group is not None else ()
        self._log(
            logging.WARNING,
            "lock.lost",
            key=lease.key,
            session_id=lease.session_id,
            reason=reason.value,
            fencing_token=lease.fencing_token,
            **({"keys": len(keys)} if keys else {}),
        )
        self._emit(Notify(LossEvent(lease.key, reason, lease, self._now, keys), hold.lock_id))

    def _lose_hold(self, hold: _Hold, reason: LossReason) -> None:
        """One hold is gone (released, deleted or taken by someone else). For a key of a
        set, the whole set is: the other keys, still held, are given back."""
        key = hold.lease.key
        del self._holds[key]
        if reason is not LossReason.SESSION_INVALIDATED:
            self._hints.pop(key, None)  # no lock-delay after a release or a delete
        group = hold.group
        if group is not None and group.lost:
            return  # (a second key of a set already given up)
        self._set_lock(hold.lock_id, hold.lease.key, LockState.LOST)
        self._announce_loss(hold, reason)
        woken = [key]
        if group is not None:
            for other in group.lease_set.leases:
                h = self._holds.get(other.key)
                if h is None or h.group is not group:
                    continue
                del self._holds[other.key]
                self._queue_release(ReleaseItem(other.key, other.session_id, other.value, 0))
                self._emit(LeaseEnded(other, reason))
                woken.append(other.key)
        for k in woken:
            self._wake_queue(k)

    def _session_ended(self, reason: LossReason, *, confirmed: bool) -> None:
        """The session is over: every hold of it is lost.

        Args:
            reason: What was observed.
            confirmed: Whether the server said the session is gone. If not, it may still
                hold our keys: they are released and the session destroyed in the
                background, so that nobody waits on locks nobody uses.
        """
        sess = self._sess
        if sess is None or self.session_state is not SessionState.ACTIVE:
            return
        now = self._now
        reason = settle_reason(reason, sess.timer.valid(now))
        self.session_state = advance(self.session_state, SessionState.NONE)
        self._sess = None
        self.stats.sessions_lost += 1
        lost = [h for h in self._holds.values() if h.lease.session_id == sess.sid]
        self._log(
            logging.WARNING,
            "session.lost",
            session_id=sess.sid,
            reason=reason.value,
            locks=len(lost),
        )
        for h in lost:
            lease = h.lease
            del self._holds[lease.key]
            self._hints[lease.key] = DelayHint(now, sess.lock_delay, sess.sid)
            if not confirmed:
                self._queue_release(ReleaseItem(lease.key, sess.sid, lease.value, lease.flags))
            if h.group is None or not h.group.lost:
                self._set_lock(h.lock_id, h.lease.key, LockState.LOST)
            self._announce_loss(h, reason)
        if not confirmed and sess.owned:
            self._destroys.add(sess.sid)
        self._renewer.step += 1
        self._renewer.sleeping_until = INF
        for h in lost:
            self._wake_queue(h.lease.key)

    # ================================================================== renewer
    def _schedule_renew(self) -> None:
        sess = self._sess
        if sess is None or sess.timer.ttl is None or sess.renewing:
            return
        timer = sess.timer
        assert timer.ttl is not None
        at = min(timer.started + timer.ttl * timer.renew_fraction, timer.deadline)
        w = self._renewer
        w.step += 1
        w.sleeping_until = at
        self._emit(Sleep(RENEWER, w.step, at))

    def _renew_due(self) -> None:
        sess = self._sess
        if (
            sess is None
            or self.session_state is not SessionState.ACTIVE
            or self.state is not ManagerState.RUNNING
        ):
            return
        now = self._now
        timer = sess.timer
        ttl = timer.ttl
        if ttl is None:
            return
        if not timer.valid(now):
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
        elif now >= timer.started + ttl * timer.renew_fraction:
            sess.renewing = True
            self._emit(Renew(sess.sid, timer.deadline))
        else:
            self._schedule_renew()

    def _on_renew_answered(self, ev: RenewAnswered) -> None:
        sess = self._sess
        if sess is None or sess.sid != ev.sid:
            return
        sess.renewing = False
        if not sess.timer.valid(self._now):
            # The deadline passed before the answer: the loss stands (it was due then).
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
            return
        if ev.gone:
            self._session_ended(LossReason.SESSION_INVALIDATED, confirmed=True)
            return
        if ev.started is not None:
            sess.timer.renewed(ev.started, ev.ttl)
            self.stats.renewals += 1
            self.stats.renew_latency.observe(self._now - ev.started)
            self._renewer.tries = 0
            self._log(logging.DEBUG, "session.renewed", session_id=ev.sid, ttl=ev.ttl)
            self._schedule_renew()
            return
        self.stats.renew_failures += 1
        self._log(logging.WARNING, "session.renew_failed", session_id=ev.sid, error=str(ev.error))
        # Nothing worked before the renew loop stopped (a refusal that retrying at once
        # does not heal): pause, then try again; the lease deadline still rules.
        w = self._renewer
        w.tries += 1
        w.step += 1
        w.sleeping_until = min(self._now + self.cfg.retry.delay(w.tries), sess.timer.deadline)
        self._emit(Sleep(RENEWER, w.step, w.sleeping_until))

    # ================================================================== watches
    def _follow(self, key: str, known: int) -> bool:
        """Make sure a watch follows ``key``, whose state we know as of index ``known``.

        Returns False when a watch already covers the key but has seen past ``known``
        (news about the key may have gone by before we cared): the caller looks again.
        """
        if self.state is not ManagerState.RUNNING:
            return True
        for slot in self._slots:
            if slot.target is not None and not slot.stopped and slot.target.covers(key):
                slot.unused_since = None
                if slot.seen > known:
                    # Its answers since ``known`` were read before this key mattered:
                    # follow again from ``known`` so nothing in between goes unseen.
                    slot.index = min(slot.index, known) if slot.index else known
                    self._refresh(slot)
                return True
        self._replan()
        return True

    def _follow_many(self, keys: list[tuple[str, int]]) -> None:
        """:meth:`_follow` for many keys (a set just taken), planning the watches once."""
        if self.state is not ManagerState.RUNNING:
            return
        uncovered = False
        refreshed: set[int] = set()
        live = [s for s in self._slots if s.target is not None and not s.stopped]
        for key, known in keys:
            slot = next((s for s in live if s.target is not None and s.target.covers(key)), None)
            if slot is None:
                uncovered = True
                continue
            slot.unused_since = None
            if slot.seen > known:
                slot.index = min(slot.index, known) if slot.index else known
                refreshed.add(slot.n)
        if uncovered:
            self._replan()
        for n in refreshed:
            slot = self._slots[n]
            if slot.target is not None and not slot.stopped and slot.index:
                self._refresh(slot)

    def _wanted_keys(self) -> dict[str, int]:
        """Keys to follow, each with the index its state is known at."""
        sid = self.session_id
        keys = {k: h.key_index for k, h in self._holds.items() if h.lease.session_id == sid}
        for a in self._attempts.values():
            if a.phase is _P.WAITING:
                keys[a.key] = min(keys.get(a.key, a.watch_index), a.watch_index)
        return keys

    def _replan(self) -> None:
        """Choose the watch targets afresh and hand them to the slots (a slot that keeps
        its target keeps its query)."""
        wanted = self._wanted_keys()
        targets = plan_watches(wanted, self.cfg.watch_budget)
        self._planned_keys = len(wanted)
        kept = {s.target for s in self._slots if s.target in targets and not s.stopped}
        fresh = [t for t in targets if t not in kept]
        for slot in self._slots:
            if slot.target in kept or slot.stopped:
                continue
            if fresh:
                self._retarget(slot, fresh.pop(0), wanted)
            elif slot.target is not None:
                self._retarget(slot, None, wanted)
        for target in fresh:
            slot = _Slot(len(self._slots))
            self._slots.append(slot)
            self._retarget(slot, target, wanted)

    def _retarget(self, slot: _Slot, target: WatchTarget | None, wanted: dict[str, int]) -> None:
        known = [i for k, i in wanted.items() if target is not None and target.covers(k)]
        slot.target = target
        slot.index = min(known) if known else 0
        slot.seen = 0
        slot.unused_since = None
        self._refresh(slot)

    def _refresh(self, slot: _Slot) -> None:
        """Start the slot's query afresh (a new generation cuts short the running one)."""
        slot.gen += 1
        slot.failures = 0
        self._emit(Watch(slot.n, slot.gen, slot.target, slot.index, self.cfg.watch_wait, self._now))

    def _slot(self, n: int, gen: int) -> _Slot | None:
        if n >= len(self._slots):
            return None
        slot = self._slots[n]
        if slot.gen != gen or slot.stopped or slot.target is None:
            return None
        return slot

    def _rewatch(self, slot: _Slot, delay: float) -> None:
        self._emit(
            Watch(slot.n, slot.gen, slot.target, slot.index, self.cfg.watch_wait, self._now + delay)
        )

    def _on_watch_saw(self, ev: WatchSaw) -> None:
        slot = self._slot(ev.slot, ev.gen)
        if slot is None:
            return
        target = slot.target
        assert target is not None
        slot.failures = 0
        slot.index = next_index(slot.index, ev.index)
        slot.seen = max(slot.seen, ev.index)
        entries = {e.key: e for e in ev.entries}
        now = self._now
        used = False
        # Calls waiting for a key another session holds: go again when its holder changed.
        for a in list(self._attempts.values()):
            if a.phase is not _P.WAITING or not target.covers(a.key):
                continue
            used = True
            if ev.index <= a.watch_index:
                continue
            e = entries.get(a.key)
            current = e.session if e is not None else None
            if current != a.holder:
                if current is None and a.holder is not None:
                    self._hints[a.key] = DelayHint(now, self._holder_delays.get(a.holder), a.holder)
                self._next(a)
        # Our holds: a key missing, or carrying another session (or none), is a suspect.
        sid = self.session_id
        suspects: list[str] = []
        for k, h in self._holds.items():
            if h.lease.session_id != sid or not target.covers(k):
                continue
            used = True
            e = entries.get(k)
            if ev.index >= h.key_index and (e is None or e.session != sid):
                suspects.append(k)
            elif e is not None and e.session == sid and e.modify_index > h.key_index:
                # Someone rewrote the key and left our session on it: Consul still counts it
                # ours, so fenced writes follow its new index.
                h.key_index = e.modify_index
        if suspects and sid is not None:
            # A default-consistency read can be stale while a deposed leader still answers:
            # read the suspects again from the leader, and renew, before deciding anything.
            self._emit(Confirm(slot.n, slot.gen, sid, tuple(suspects), self.cfg.request_timeout))
            return
        if not used:
            if slot.unused_since is None:
                slot.unused_since = now
            elif now - slot.unused_since >= _LINGER:
                slot.target = None
                self._refresh(slot)  # idle
                return
        else:
            slot.unused_since = None
        self._rewatch(slot, self.cfg.watch_coalesce)

    def _on_watch_failed(self, ev: WatchFailed) -> None:
        slot = self._slot(ev.slot, ev.gen)
        if slot is None:
            return
        assert slot.target is not None
        slot.failures += 1
        slot.index = 0
        self._log(
            logging.DEBUG,
            "watch.retry",
            target=slot.target.path,
            error=str(ev.error),
            failures=slot.failures,
        )
        self._rewatch(slot, self.cfg.retry.delay(slot.failures))

    def _on_confirmed(self, ev: Confirmed) -> None:
        sess = self._sess
        now = self._now
        if sess is not None and sess.sid == ev.sid and ev.alive and sess.timer.valid(now):
            sess.timer.renewed(ev.started, ev.ttl)
        slot = self._slot(ev.slot, ev.gen)
        if sess is None or sess.sid != ev.sid:
            if slot is not None:
                self._rewatch(slot, 0.0)
            return
        if ev.alive is False:
            self._session_ended(LossReason.SESSION_INVALIDATED, confirmed=True)
        elif ev.alive is None or not ev.entries:
            # Undecided (Consul unreachable): look again after a pause; the lease deadline
            # bounds how long the holds are believed meanwhile.
            if slot is not None:
                slot.failures += 1
                slot.index = 0
                self._rewatch(slot, self.cfg.retry.delay(slot.failures))
            return
        elif not sess.timer.valid(now):
            self._session_ended(LossReason.LEASE_EXPIRED, confirmed=False)
        else:
            for key, fresh in ev.entries.items():
                hold = self._holds.get(key)
                if hold is None or hold.lease.session_id != ev.sid:
                    continue
                reason = classify_loss(
                    ev.sid, fresh.session if fresh else None, fresh is not None, True
                )
                if reason is not None:
                    self._lose_hold(hold, reason)
        if self._slot(ev.slot, ev.gen) is slot and slot is not None:
            self._rewatch(slot, self.cfg.watch_coalesce)

    # ================================================================== cleaner
    def _queue_release(self, item: ReleaseItem, *, ambiguous: bool = False) -> None:
        """Have the cleaner give ``item`` back.

        Args:
            item: The key and session.
            ambiguous: The acquire's answer never came: it may still reach Consul after a
                first release, so a "not held" answer counts only once the request
                timeout has passed since (the transport resets a connection it gives up
                on, so nothing of the request is sent after that).
        """
        hold = self._holds.get(item.key)
        if hold is not None and hold.lease.session_id == item.sid:
            return  # held again by the same session: nothing to give back
        ref = (item.key, item.sid)
        self._pending[ref] = item
        if ambiguous:
            self._settle[ref] = max(
                self._settle.get(ref, 0.0), self._now + self.cfg.request_timeout
            )

    def _drop_pending(self, ref: tuple[str, str]) -> None:
        self._pending.pop(ref, None)
        self._settle.pop(ref, None)
        self._retry_at.pop(ref, None)

    def _blocked(self, key: str, sid: str) -> bool:
        """Whether releasing (key, sid) now could undo a local acquire of the key by ``sid``.

        While a call of this process owns the key with that same session, the release
        waits: the call's next acquire either succeeds (the hold is ours, the release is
        dropped) or the call ends, and then the release goes.
        """
        owner = self._owner.get(key)
        if owner is not None:
            a = self._attempts.get(owner)
            if a is not None and sid in (a.sid, a.undo):
                return True
        return (key, sid) in self._inflight

    def _batch(self) -> tuple[ReleaseItem, ...]:
        items: list[ReleaseItem] = []
        stale: list[tuple[str, str]] = []
        closing = self.state is ManagerState.CLOSING
        # (Stops at the 64th item: a close of 10,000 keys must not rescan them per batch.)
        for ref, item in self._pending.items():
            key, sid = ref
            hold = self._holds.get(key)
            if hold is not None and hold.lease.session_id == sid:
                stale.append(ref)
                continue
            if self._blocked(key, sid):
                continue
            if not closing and self._retry_at.get(ref, 0.0) > self._now:
                continue
            items.append(item)
            if len(items) == MAX_TXN_OPS:
                break
        for ref in stale:
            self._drop_pending(ref)
        return tuple(items)

    def _destroyable(self) -> str | None:
        busy = {sid for (_, sid) in self._pending} | {sid for (_, sid) in self._inflight}
        for sid in sorted(self._destroys - self._destroying):
            if sid not in busy and sid != self.session_id:
                return sid
        return None

    def _start_work(self, w: _Worker, actor: Actor, deadline: Deadline) -> bool:
        """Give worker ``w`` (the cleaner or the closer) its next release or destroy."""
        batch = self._batch()
        if batch:
            w.busy, w.batch = True, batch
            w.step += 1
            self._inflight.update((it.key, it.sid) for it in batch)
            self._emit(SendRelease(actor, w.step, batch, self._budget(deadline)))
            return True
        sid = self._destroyable()
        if sid is not None:
            w.busy, w.batch = True, ()
            w.step += 1
            self._destroying.add(sid)
            self._emit(Destroy(actor, w.step, sid, self._budget(deadline)))
            return True
        return False

    def _kick_cleaner(self) -> None:
        w = self._cleaner
        if not (self._pending or self._destroys):
            return
        if w.busy or w.sleeping_until != INF or self.state is ManagerState.CLOSED:
            return
        if not self._start_work(w, CLEANER, Deadline()) and self._retry_at:
            # Only ambiguous items wait, for their answers to settle: wake up for them.
            w.step += 1
            w.sleeping_until = min(self._retry_at.values())
            self._emit(Sleep(CLEANER, w.step, w.sleeping_until))

    def _worker(self, actor: Actor) -> _Worker:
        return self._cleaner if actor == CLEANER else self._closing

    def _releaser_answered(self, ev: ReleaseAnswered) -> None:
        w = self._worker(ev.actor)
        if ev.step != w.step or not w.busy:
            return
        batch, w.batch, w.busy, w.tries = w.batch, (), False, 0
        closing = ev.actor != CLEANER
        for item, outcome in zip(batch, ev.outcomes, strict=False):
            ref = (item.key, item.sid)
            self._inflight.discard(ref)
            settle = self._settle.get(ref, 0.0)
            if outcome == "not_held" and settle > self._now and not closing:
                # Not held *yet*, maybe: the acquire we gave up on could still land. Look
                # again once it cannot any more.
                self._retry_at[ref] = settle
                continue
            self._drop_pending(ref)
            if outcome == "released":
                self._log(
                    logging.INFO,
                    "lock.released" if closing else "lock.cleanup_released",
                    key=item.key,
                    session_id=item.sid,
                )
            self._wake_queue(item.key)
        if self._set_releases:
            done = [((it.key, it.sid), o) for it, o in zip(batch, ev.outcomes, strict=False)]
            self._set_release_progress(done, failed=False)
        for item in batch[len(ev.outcomes) :]:
            self._inflight.discard((item.key, item.sid))

    def _pause(self, w: _Worker, actor: Actor, error: Exception) -> None:
        w.tries += 1
        self._log(logging.INFO, "cleanup.retry", error=str(error), tries=w.tries)
        if actor == CLEANER:
            w.step += 1
            w.sleeping_until = self._now + self.cfg.cleanup.delay(w.tries)
            self._emit(Sleep(CLEANER, w.step, w.sleeping_until))
        else:
            w.pause_until = self._now + self.cfg.retry.delay(w.tries)

    def _releaser_failed(self, ev: RequestFailed) -> None:
        w = self._worker(ev.actor)
        if ev.step != w.step or not w.busy:
            return
        for item in w.batch:
            self._inflight.discard((item.key, item.sid))
        if self._set_releases:
            self._set_release_progress([((it.key, it.sid), "failed") for it in w.batch], True)
        w.batch, w.busy = (), False
        self._pause(w, ev.actor, ev.error)

    def _on_destroy_answered(self, ev: DestroyAnswered) -> None:
        w = self._worker(ev.actor)
        if ev.step != w.step or not w.busy:
            return
        w.busy = False
        self._destroying.discard(ev.sid)
        if ev.error is None:
            w.tries = 0
            self._destroys.discard(ev.sid)
            self._log(logging.INFO, "session.destroyed", session_id=ev.sid)
        elif isinstance(ev.error, ConsulUnavailable):
            self._pause(w, ev.actor, ev.error)
        else:
            self._destroys.discard(ev.sid)
            self._log(
                logging.WARNING, "session.destroy_failed", session_id=ev.sid, error=str(ev.error)
            )

    # ================================================================== close
    def _on_close(self, ev: CloseRequested) -> None:
        if self.state in (ManagerState.CLOSING, ManagerState.CLOSED):
            self._emit(Finish(ev.actor, None))
            return
        self.state = advance(self.state, ManagerState.CLOSING)
        self._closer = ev.actor
        self._close_deadline = Deadline(ev.deadline)
        for a in list(self._attempts.values()):
            if a.phase in (_P.CREATING, _P.READING, _P.SENDING, _P.UNDOING):
                self._emit(Interrupt(a.actor))  # its failure answer finishes it
            else:
                self._finish(a, ManagerClosed("the LockManager is closed"))
        for actor in list(self._swaiters):
            if actor == self._creator:
                self._emit(Interrupt(actor))
            else:
                del self._swaiters[actor]
                self._emit(Finish(actor, ManagerClosed("the LockManager is closed")))
        for hold in list(self._holds.values()):
            lease = hold.lease
            del self._holds[lease.key]
            self._pending[(lease.key, lease.session_id)] = ReleaseItem(
                lease.key, lease.session_id, lease.value, lease.flags
            )
            self._closed_keys.add(lease.key)
            self._count_release(lease)
            self._emit(LeaseEnded(lease, None))
            if hold.group is None or hold.group.lease_set.leases[0] is lease:
                self._set_lock(hold.lock_id, hold.lease.key, LockState.RELEASING)
                self._set_lock(hold.lock_id, hold.lease.key)
        sess = self._sess
        if sess is not None:
            if sess.owned:
                self._destroys.add(sess.sid)
            self.session_state = advance(self.session_state, SessionState.NONE)
            self._sess = None
        self._emit(Stop(RENEWER))
        for slot in self._slots:
            slot.stopped = True
            self._emit(Stop(("watch", slot.n)))

    def _close_progress(self) -> None:
        """Drive the close: wait for calls in flight, release, destroy, then finish."""
        closer = self._closer
        w = self._closing
        if closer is None or w.busy:
            return
        now = self._now
        dl = self._close_deadline
        if dl.expired(now):
            self._close_finish(timed_out=True)
            return
        until = dl.at
        if w.pause_until > now:
            until = w.pause_until
        elif not (self._attempts or self._releases or self._swaiters) and self._start_work(
            w, closer, dl
        ):
            w.sleeping_until = INF
            return
        elif not (self._attempts or self._releases or self._pending or self._inflight) and not (
            self._destroys or self._destroying
        ):
            self._close_finish(timed_out=False)
            return
        # Wait: for calls in flight to answer, the cleaner's request, or a pause to end.
        if w.sleeping_until != until:
            w.step += 1
            w.sleeping_until = until
            self._emit(Sleep(closer, w.step, until))

    def _close_finish(self, *, timed_out: bool) -> None:
        closer = self._closer
        assert closer is not None
        if timed_out and (self._pending or self._destroys):
            self._log(
                logging.WARNING,
                "manager.close_timeout",
                keys_left=sorted(k for (k, _) in self._pending),
                sessions_left=sorted(self._destroys),
            )
        for w in list(self._set_releases.values()):
            self._set_release_done(w, deferred=True)
        self.state = advance(self.state, ManagerState.CLOSED)
        self._closer = None
        self._emit(Stop(CLEANER))
        self._emit(Finish(closer, None))

    # ================================================================== misc
    def _on_key_written(self, ev: KeyWritten) -> None:
        hold = self._holds.get(ev.lease.key)
        if hold is not None and hold.lease is ev.lease:
            hold.key_index = max(hold.key_index, ev.index)
            # A later no-op re-acquire would hand this index out as a token: forbid it.
            self._floor[ev.lease.key] = max(self._floor.get(ev.lease.key, 0), ev.index)


def _transient(err: Exception) -> bool:
    """Whether retrying may help: Consul unreachable or busy, but not a TLS failure (a
    certificate problem does not heal by waiting)."""
    return isinstance(err, ConsulUnavailable) and not isinstance(err, TLSError)


_HANDLERS: dict[type, Callable[[LockMachine, Any], None]] = {
    Start: LockMachine._on_start,
    AcquireRequested: LockMachine._on_acquire,
    AcquireManyRequested: LockMachine._on_acquire_many,
    SessionWanted: LockMachine._on_session_wanted,
    SessionCreated: LockMachine._on_session_created,
    KeyRead: LockMachine._on_key_read,
    HolderRead: LockMachine._on_holder_read,
    TxnApplied: LockMachine._on_txn_applied,
    ManyApplied: LockMachine._on_many_applied,
    TxnRefused: LockMachine._on_txn_refused,
    RequestFailed: LockMachine._on_request_failed,
    Woke: LockMachine._on_woke,
    AttemptAborted: LockMachine._on_aborted,
    ReleaseRequested: LockMachine._on_release,
    ReleaseManyRequested: LockMachine._on_release_many,
    ReleaseAnswered: LockMachine._on_release_answered,
    RenewAnswered: LockMachine._on_renew_answered,
    WatchSaw: LockMachine._on_watch_saw,
    WatchFailed: LockMachine._on_watch_failed,
    Confirmed: LockMachine._on_confirmed,
    DestroyAnswered: LockMachine._on_destroy_answered,
    CloseRequested: LockMachine._on_close,
    KeyWritten: LockMachine._on_key_written,
}
