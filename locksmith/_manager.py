"""LockManager: KV locks on one renewed Consul session, with loss and lock-delay callbacks.

Threads of a running manager (all daemons, all stopped by :meth:`LockManager.close`):

* **renewer**: renews the shared session at a fraction of its TTL (tenacity, jittered
  backoff, never past the lease deadline) and presumes every lock lost when the local
  deadline passes without a successful renewal;
* **watcher**: one recursive blocking query over the common prefix of all held keys
  notices keys released, deleted or taken by others and sessions invalidated;
* **cleanup**: releases the keys of a session presumed lost, then destroys it (retried
  until Consul answers, so nobody waits on a lock nobody uses);
* **dispatcher**: runs user callbacks, one at a time, never under an internal lock and
  never on the renewer's or watcher's thread; an exception in a callback is logged.

The decisions (when to renew, when a lease is over, how long a lock-delay window lasts,
why a key was lost) are made by the pure functions of ``_core``.
"""

from __future__ import annotations

import base64
import enum
import math
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog
import tenacity

from locksmith._client import Consul, KVEntry, next_index
from locksmith._clock import Clock, SystemClock
from locksmith._core import (
    AcquirePlanner,
    DelayHint,
    GiveUp,
    LeaseTimer,
    LockState,
    LossReason,
    ManagerState,
    PresumeLost,
    RenewAt,
    SleepUntil,
    check_transition,
    classify_loss,
    session_node_checks,
    settle_reason,
    watch_prefix,
)
from locksmith._durations import Duration
from locksmith._exceptions import (
    ConsulUnavailable,
    LockConflict,
    LockLost,
    LocksmithError,
    LockTimeout,
    ManagerClosed,
    NotHeld,
    SessionNotFound,
    TLSError,
    ValidationError,
)
from locksmith._recipes import RecipesMixin
from locksmith._validate import (
    Behavior,
    check_behavior,
    check_callback,
    check_checks,
    check_key,
    check_lock_delay,
    check_name,
    check_session_id,
    check_timeout,
    check_ttl,
    check_value,
)

__all__ = ["Lease", "Lock", "LockDelayEvent", "LockManager", "LossEvent"]

log = structlog.get_logger(__name__)


#: How long the watcher blocks per query when nothing changes.
_WATCH_WAIT = 300.0
#: Pause after each watch wake so a burst of writes under the prefix costs one re-list.
_WATCH_COALESCE = 0.05


@dataclass(frozen=True)
class Lease:
    """Proof that a lock was acquired.

    Attributes:
        key: The KV key.
        session_id: The session that holds it.
        fencing_token: The Raft index this acquisition wrote. It strictly increases with
            every acquisition of the key, by any client, and survives PUTs and DELETEs of
            the key by others. Hand it to whatever you protect and reject smaller ones.
        value: The value written with the acquisition.
        acquired_at: When the acquisition succeeded, on the manager's monotonic clock.
        flags: The KV flags written.
    """

    key: str
    session_id: str
    fencing_token: int
    value: bytes
    acquired_at: float
    flags: int = 0


@dataclass(frozen=True)
class LossEvent:
    """A lease ended without its owner releasing it.

    Attributes:
        key: The key.
        reason: Why (see :class:`LossReason`).
        lease: The lease that ended.
        detected_at: When locksmith noticed, on the manager's monotonic clock.
    """

    key: str
    reason: LossReason
    lease: Lease
    detected_at: float


@dataclass(frozen=True)
class LockDelayEvent:
    """An acquire is blocked by a lock-delay window.

    Attributes:
        key: The key.
        until: Monotonic instant when the window ends (known) or the next retry (unknown).
        known: Whether ``until`` is the computed end of the window.
        previous_session: The session whose invalidation started the window, if known.
    """

    key: str
    until: float
    known: bool
    previous_session: str | None


class _SessionState(enum.Enum):
    """A session's lifecycle as the manager sees it: ACTIVE -> ENDED, never back."""

    ACTIVE = "active"
    ENDED = "ended"


class _SessionHandle:
    """One session as the manager tracks it."""

    def __init__(self, sid: str, *, owned: bool, lock_delay: float, timer: LeaseTimer) -> None:
        self.id = sid
        self.owned = owned
        self.lock_delay = lock_delay
        self.timer = timer
        self.state = _SessionState.ACTIVE


@dataclass
class _Hold:
    lock: Lock
    lease: Lease
    session: _SessionHandle


class _Again:
    """Internal: the acquire loop should go round again."""


_AGAIN = _Again()


class _Dispatcher:
    """Runs callbacks on its own thread; logs their exceptions."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], object], Any] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, callback: Callable[[Any], object], event: Any) -> None:
        self._queue.put((callback, event))

    def stop(self, timeout: float) -> None:
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            callback, event = item
            try:
                callback(event)
            except Exception:
                log.exception(
                    "callback.failed",
                    callback=getattr(callback, "__qualname__", repr(callback)),
                    event_type=type(event).__name__,
                    key=getattr(event, "key", None),
                )


class Lock:
    """A distributed lock on one KV key, acquired with the manager's session.

    Made by :meth:`LockManager.lock`; not reentrant. One ``Lock`` may be used from many
    threads: a second ``acquire`` waits like a competing process would.
    """

    def __init__(self, manager: LockManager, key: str, value: bytes, flags: int) -> None:
        self._mgr = manager
        self.key = key
        self.value = value
        self.flags = flags
        self._state = LockState.UNLOCKED
        self._lease: Lease | None = None
        self._callbacks: list[Callable[[LossEvent], object]] = []
        self._flags_checked = False

    def __repr__(self) -> str:
        return f"<Lock {self.key!r} {self._state.value}>"

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> LockState:
        """The lifecycle state."""
        return self._state

    @property
    def held(self) -> bool:
        """Whether the lock is held right now.

        False as soon as a loss is known or presumed: this reads the lease deadline on
        the clock, so it turns False at the deadline even if no thread has run since.
        """
        mgr = self._mgr
        with mgr._mu:
            if self._state is not LockState.HELD:
                return False
            hold = mgr._holds.get(self.key)
            if hold is None or hold.lock is not self:
                return False
            return hold.session.timer.valid(mgr._clock.monotonic())

    @property
    def lease(self) -> Lease | None:
        """The current lease, or None when not held."""
        return self._lease if self.held else None

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` whenever a lease of this lock is lost (once per lease).

        Callbacks run on the manager's callback thread. Returns the callback, so this
        works as a decorator.
        """
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def _set_state(self, new: LockState) -> None:
        check_transition(self._state, new)
        self._state = new

    # -- acquire -------------------------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Lease | None:
        """Acquire the lock.

        Args:
            blocking: False: try once and return None if the key is busy.
            timeout: Seconds to wait at most (None: forever). ``0`` tries once and raises
                :class:`LockTimeout` if busy. Not allowed with ``blocking=False``.

        Returns:
            The :class:`Lease`, or None (only with ``blocking=False``).

        Raises:
            ValidationError: Bad ``blocking`` or ``timeout`` (before any request).
            LockTimeout: The deadline passed.
            LockConflict: The key belongs to another kind of lock (foreign flags).
            ManagerClosed: The manager was closed.
            ConsulUnavailable: Consul could not be reached (non-blocking calls only;
                blocking calls retry until their deadline).
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        if check_timeout(timeout) is not None and not blocking:
            raise ValidationError("timeout", "cannot be combined with blocking=False")
        mgr = self._mgr
        clock = mgr._clock
        mgr._ensure_running()
        now = clock.monotonic()
        deadline: float | None
        if not blocking:
            deadline = now
        elif timeout is None or math.isinf(timeout):
            deadline = None
        else:
            deadline = now + timeout
        if not mgr._claim(self, deadline):
            if not blocking:
                return None
            raise LockTimeout(f"could not acquire {self.key!r} within {timeout}s (held locally)")
        try:
            lease = self._acquire_remote(deadline, blocking, timeout)
        except BaseException:
            mgr._unclaim(self, LockState.UNLOCKED)
            raise
        if lease is None:
            mgr._unclaim(self, LockState.UNLOCKED)
        return lease

    def _acquire_remote(
        self, deadline: float | None, blocking: bool, timeout: float | None
    ) -> Lease | None:
        mgr = self._mgr
        clock = mgr._clock
        planner = AcquirePlanner(deadline)
        backoff = _RETRY_START
        ambiguous: set[str] = set()  # sessions whose acquire request got no answer
        delay_seen: list[bool | None] = [None]  # known-ness of the last lock-delay event
        try:
            while True:
                mgr._check_open()
                try:
                    step = self._attempt(planner, blocking, ambiguous, delay_seen)
                except TLSError:
                    raise  # a certificate problem does not heal by waiting
                except ConsulUnavailable as exc:
                    now = clock.monotonic()
                    if not blocking:
                        raise
                    if planner.remaining(now) <= 0:
                        raise LockTimeout(
                            f"could not acquire {self.key!r} within {timeout}s: {exc}"
                        ) from exc
                    log.warning("lock.acquire_retry", key=self.key, error=str(exc))
                    end = deadline if deadline is not None else math.inf
                    mgr._wait_until(min(now + backoff, end))
                    backoff = min(backoff * 2, _RETRY_CAP)
                    continue
                except GiveUpError as exc:
                    raise LockTimeout(f"could not acquire {self.key!r} within {timeout}s") from exc
                backoff = _RETRY_START
                if isinstance(step, Lease):
                    ambiguous.discard(step.session_id)
                    return step
                if step is None:
                    return None
        finally:
            # An acquire request that timed out may have succeeded on the server: give such
            # a key back so it is not held by a session nobody uses for it.
            for sid in ambiguous:
                mgr._queue_release(self.key, sid, self.value, self.flags)

    def _attempt(
        self,
        planner: AcquirePlanner,
        blocking: bool,
        ambiguous: set[str],
        delay_seen: list[bool | None],
    ) -> Lease | _Again | None:
        mgr = self._mgr
        clock = mgr._clock
        kv = mgr._consul.kv
        if not self._flags_checked:
            self._check_flags(kv.get(self.key))
        sess = mgr._ensure_session()
        with mgr._claims_cv:
            mgr._check_open()
            mgr._inflight += 1
        try:
            try:
                entry = kv.lock(self.key, self.value, sess.id, flags=self.flags)
            except SessionNotFound:
                mgr._session_gone(sess, LossReason.SESSION_INVALIDATED, confirmed=True)
                if not sess.owned:
                    raise
                return _AGAIN
            except ConsulUnavailable:
                ambiguous.add(sess.id)
                raise
            if entry is not None:
                if entry.modify_index <= mgr._last_token(self.key):
                    # Our session still held the key (a loss declared on a stale read, or a
                    # release that never reached Consul), so Consul took the identical
                    # re-acquire as a no-op and wrote nothing: the token would repeat. Give the
                    # key back and take it again so that the fencing token moves forward.
                    log.info("lock.reacquire_without_write", key=self.key, session_id=sess.id)
                    kv.put(self.key, self.value, release=sess.id, flags=self.flags)
                    return _AGAIN
                lease = Lease(
                    key=self.key,
                    session_id=sess.id,
                    fencing_token=entry.modify_index,
                    value=self.value,
                    acquired_at=clock.monotonic(),
                    flags=self.flags,
                )
                if mgr._register_hold(self, sess, lease):
                    return lease
                return _AGAIN  # the session ended while we acquired: start over on a new one
        finally:
            with mgr._claims_cv:
                mgr._inflight -= 1
                mgr._claims_cv.notify_all()
        if not blocking:
            return None
        # Busy, or in a lock-delay window: find out which, then wait accordingly.
        res = kv.get_with_meta(self.key)
        cur = res.value
        self._check_flags(cur)
        holder = cur.session if cur is not None else None
        if holder is not None:
            mgr._remember_holder(holder)
        action = planner.after_failure(
            clock.monotonic(), holder=holder, index=res.meta.index, hint=mgr._hint(self.key)
        )
        if isinstance(action, GiveUp):
            raise GiveUpError
        if isinstance(action, SleepUntil):
            if delay_seen[0] is None or delay_seen[0] != action.known:
                delay_seen[0] = action.known
                mgr._lock_delay_entered(self.key, action)
            mgr._wait_until(action.until)
            return _AGAIN
        delay_seen[0] = None
        # WatchKey: block until the key changes (the holder releases or its session ends).
        woke = mgr._watch_key(self.key, action.index, action.wait)
        if holder is not None and woke.session != holder:
            mgr._holder_gone(self.key, holder)
        return _AGAIN

    def _check_flags(self, entry: KVEntry | None) -> None:
        if entry is not None and entry.flags != self.flags:
            raise LockConflict(
                f"key {self.key!r} has flags {entry.flags:#x}, this lock uses {self.flags:#x}: "
                "it belongs to another kind of lock"
            )
        self._flags_checked = True

    # -- release -------------------------------------------------------------------------
    def release(self) -> bool:
        """Release the lock with ``?release=`` (no lock-delay for the next holder).

        Returns:
            True if a held lock was released; False if its lease had already been lost
            (or its deadline had passed: then it is presumed lost now, and ``on_lost``
            fires).

        Raises:
            NotHeld: The lock is not held (never acquired, or already released).
        """
        return self._mgr._release(self)

    # -- fenced writes -------------------------------------------------------------------
    def fenced_put(self, key: str, value: bytes | str) -> int:
        """Write ``key`` only while this lock is still held, atomically.

        The write is a transaction that first checks, on the server, that the lock key is
        still held by this lease's session; it is also refused locally once the lease
        deadline has passed.

        Returns:
            The ModifyIndex of the written key.

        Raises:
            ValidationError: Bad ``key`` or ``value`` (before any request).
            LockLost: The lease is gone (locally presumed or refused by Consul).
        """
        key = check_key(key)
        data = check_value(value)
        mgr = self._mgr
        lease = self.lease
        if lease is None:
            raise LockLost(f"fenced write to {key!r}: the lock on {self.key!r} is not held")
        with mgr._mu:
            hold = mgr._holds.get(self.key)
            remaining = hold.session.timer.remaining(mgr._clock.monotonic()) if hold else 0.0
        ops = [
            {"KV": {"Verb": "check-session", "Key": self.key, "Session": lease.session_id}},
            {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(data).decode()}},
        ]
        try:
            out = mgr._consul.kv.txn(
                ops,
                operation="kv.fenced_put",
                resource=key,
                timeout=mgr._request_timeout(remaining),
            )
        except SessionNotFound as exc:
            raise LockLost(
                f"fenced write to {key!r} refused: session {lease.session_id} is gone"
            ) from exc
        if not out.ok:
            raise LockLost(
                f"fenced write to {key!r} refused: the lock on {self.key!r} is no longer held "
                f"by session {lease.session_id} ({'; '.join(out.errors)})"
            )
        entry = out.entries[1] if len(out.entries) > 1 else None
        return entry.modify_index if entry is not None else out.index

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> Lease:
        lease = self.acquire()
        assert lease is not None  # blocking acquire returns a lease or raises
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state in (LockState.HELD, LockState.LOST):
            self.release()


class GiveUpError(Exception):
    """Internal: the acquire deadline passed."""


@dataclass(frozen=True)
class _KeyWake:
    """What a blocking read on one key returned."""

    session: str | None


#: First and largest retry interval of an acquire while Consul is unreachable.
_RETRY_START = 0.05
_RETRY_CAP = 2.0
#: Timeout of one cleanup request (release of a presumed-lost key, destroy).
_CLEANUP_TIMEOUT = 2.0
#: Retry intervals of the cleanup thread.
_CLEANUP_START = 0.25
_CLEANUP_CAP = 2.0


class LockManager(RecipesMixin):
    """Creates a session, acquires KV keys with it, renews it, and reports losses.

    Constructing a manager does no I/O; the session is created on the first acquire (or
    :meth:`start`). Use it as a context manager, or call :meth:`close`: closing releases
    every held key first, then destroys the session, so the next holder gets the lock at
    once and no session is left behind.

    Args:
        consul: The client to use; None builds one from Consul's environment variables.
        ttl: Session TTL (10s..86400s, or 0/None for none: then nothing is renewed and
            locks live as long as the session's health checks pass, serfHealth by default).
        lock_delay: 0..60s during which an invalidated session's keys cannot be taken.
        behavior: ``"release"`` or ``"delete"`` (keys vanish with the session).
        name: Session name (shown by ``locksmith locks``).
        checks: Node health checks to bind the session to (NodeChecks). Default: none for
            a session with TTL (only the TTL ends it, so the lease deadline always comes
            first), serfHealth for a session without TTL. With checks bound, ``lock_delay``
            must be at least ``ttl`` (see ``docs/concepts/health-checks.md``).
        service_checks: Service health checks to bind the session to (same rule).
        node: Node to bind the session to (default: the agent's).
        session_id: Use this existing session instead of creating one. The manager renews
            it but never destroys it; if it ends, acquires raise SessionNotFound.
        renew_fraction: Renew after this fraction of the TTL (default 1/3).
        clock: The clock (tests of timing logic inject one).

    Raises:
        ValidationError: An argument is out of range (no I/O is done).
    """

    def __init__(
        self,
        consul: Consul | None = None,
        *,
        ttl: Duration | None = "15s",
        lock_delay: Duration = "15s",
        behavior: Behavior = "release",
        name: str | None = "locksmith",
        checks: Iterable[str] | None = None,
        service_checks: Iterable[str] | None = None,
        node: str | None = None,
        session_id: str | None = None,
        renew_fraction: float = 1 / 3,
        clock: Clock | None = None,
    ) -> None:
        if consul is not None and not isinstance(consul, Consul):
            raise ValidationError("consul", f"must be a locksmith.Consul or None, got {consul!r}")
        self.ttl = check_ttl(ttl)
        self.lock_delay = check_lock_delay(lock_delay)
        self.behavior = check_behavior(behavior)
        self.name = check_name(name, "name") if name is not None else None
        self.checks = check_checks(checks, "checks")
        self.service_checks = check_checks(service_checks, "service_checks")
        self._node_checks = session_node_checks(
            self.ttl, self.lock_delay, self.checks, self.service_checks
        )
        self.node = check_name(node, "node") if node is not None else None
        self.session_id = check_session_id(session_id) if session_id is not None else None
        if (
            isinstance(renew_fraction, bool)
            or not isinstance(renew_fraction, int | float)
            or not 0 < renew_fraction < 1
        ):
            raise ValidationError("renew_fraction", f"must be in (0, 1), got {renew_fraction!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise ValidationError("clock", f"must be a locksmith.Clock, got {clock!r}")
        self.renew_fraction = float(renew_fraction)
        self._owns_consul = consul is None
        self._consul = consul if consul is not None else Consul()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._mu = threading.Lock()
        self._claims_cv = threading.Condition(self._mu)
        self._create_lock = threading.Lock()
        self._state = ManagerState.NEW
        self._session: _SessionHandle | None = None
        self._holds: dict[str, _Hold] = {}
        #: Highest fencing token handed out per key: a re-acquire must exceed it.
        self._tokens: dict[str, int] = {}
        self._claims: dict[str, Lock] = {}
        self._inflight = 0
        self._hints: dict[str, DelayHint] = {}
        self._holder_delays: dict[str, float | None] = {}
        self._pending_releases: dict[tuple[str, str], tuple[bytes, int]] = {}
        self._pending_destroys: set[str] = set()
        #: Keys the cleanup thread is releasing right now: local acquires of them wait.
        self._cleaning: set[str] = set()
        self._lock_delay_callbacks: list[Callable[[LockDelayEvent], object]] = []
        self._lost_callbacks: list[Callable[[LossEvent], object]] = []
        self._stop = threading.Event()
        self._renew_wake = threading.Event()
        self._watch_wake = threading.Event()
        self._cleanup_wake = threading.Event()
        self._watch_prefix: str | None = None
        self._rewatch = False
        self._watcher_ident: int | None = None
        self._waiting: set[int] = set()
        self._threads: list[threading.Thread] = []
        self._dispatcher = _Dispatcher()
        self._init_recipes()

    def __repr__(self) -> str:
        return f"<LockManager {self._state.value} session={self.current_session_id}>"

    # -- public --------------------------------------------------------------------------
    @property
    def consul(self) -> Consul:
        """The Consul client this manager uses."""
        return self._consul

    @property
    def state(self) -> ManagerState:
        """The lifecycle state."""
        return self._state

    @property
    def current_session_id(self) -> str | None:
        """The session in use now (None before the first acquire or after a loss)."""
        s = self._session
        return s.id if s is not None else None

    def lock(self, key: str, value: bytes | str = b"", *, flags: int = 0) -> Lock:
        """Make a :class:`Lock` on ``key`` (no I/O).

        Args:
            key: The KV key to lock.
            value: Written to the key on acquisition (shown to observers).
            flags: KV flags to mark the key with (Consul's recipes use them).

        Raises:
            ValidationError: A bad key, value or flags.
        """
        key = check_key(key)
        data = check_value(value)
        if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 2**64:
            raise ValidationError("flags", f"must be an unsigned 64-bit integer, got {flags!r}")
        return Lock(self, key, data, flags)

    def on_lock_delay(
        self, callback: Callable[[LockDelayEvent], object]
    ) -> Callable[[LockDelayEvent], object]:
        """Call ``callback(event)`` when an acquire is held up by a lock-delay window."""
        check_callback(callback)
        self._lock_delay_callbacks.append(callback)
        return callback

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` when any lock of this manager is lost."""
        check_callback(callback)
        self._lost_callbacks.append(callback)
        return callback

    def start(self) -> LockManager:
        """Start the background threads (done by the first acquire if not called)."""
        self._ensure_running()
        return self

    def held_locks(self) -> list[Lease]:
        """The leases held right now."""
        now = self._clock.monotonic()
        with self._mu:
            return [h.lease for h in self._holds.values() if h.session.timer.valid(now)]

    def close(self, timeout: float = 10.0) -> None:
        """Release every held key, destroy the session (if created here), stop threads.

        Idempotent. Errors talking to Consul are logged, not raised: the session's TTL
        cleans up whatever could not be released. Acquires blocked in other threads end
        with :class:`ManagerClosed`.

        Args:
            timeout: Seconds to wait for in-flight acquires and for each thread to stop.
        """
        if self._state in (ManagerState.NEW, ManagerState.RUNNING):
            self._close_recipes(timeout)  # registrations, semaphores, the companion manager
        with self._claims_cv:
            if self._state in (ManagerState.CLOSING, ManagerState.CLOSED):
                return
            check_transition(self._state, ManagerState.CLOSING)
            self._state = ManagerState.CLOSING
            self._claims_cv.notify_all()
        self._stop.set()
        self._renew_wake.set()
        self._watch_wake.set()
        self._cleanup_wake.set()
        with self._claims_cv:
            # An acquire request in flight either registers its hold (released below) or
            # gives its key back itself: wait for those before the session is destroyed,
            # else the destroy would put its key under lock-delay.
            self._claims_cv.wait_for(lambda: self._inflight == 0, timeout)
            holds = list(self._holds.values())
            self._holds.clear()
            session = self._session
            self._session = None
            if session is not None:
                session.state = _SessionState.ENDED
            for h in holds:
                h.lock._set_state(LockState.RELEASING)
            waiting = list(self._waiting)
        for h in holds:
            try:
                self._consul.kv.put(
                    h.lease.key, h.lease.value, release=h.lease.session_id, flags=h.lease.flags
                )
                log.info("lock.released", key=h.lease.key, session_id=h.lease.session_id)
            except LocksmithError as exc:
                log.warning(
                    "lock.release_failed",
                    key=h.lease.key,
                    session_id=h.lease.session_id,
                    error=str(exc),
                )
            with self._claims_cv:
                h.lock._set_state(LockState.UNLOCKED)
                h.lock._lease = None
                if self._claims.get(h.lock.key) is h.lock:
                    del self._claims[h.lock.key]
        if session is not None and session.owned:
            try:
                self._consul.sessions.destroy(session.id)
                log.info("session.destroyed", session_id=session.id)
            except LocksmithError as exc:
                log.warning("session.destroy_failed", session_id=session.id, error=str(exc))
        for ident in [*waiting, self._watcher_ident]:
            if ident is not None:
                self._interrupt(ident)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        if self._has_cleanup():
            self._cleanup_once()  # last try for presumed-lost keys and sessions
        self._dispatcher.stop(timeout)
        if self._owns_consul:
            self._consul.close()
        with self._mu:
            self._state = ManagerState.CLOSED

    def __enter__(self) -> LockManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle internals -------------------------------------------------------------
    def _ensure_running(self) -> None:
        with self._mu:
            if self._state is ManagerState.RUNNING:
                return
            if self._state is not ManagerState.NEW:
                raise ManagerClosed("the LockManager is closed")
            self._state = ManagerState.RUNNING
        self._dispatcher.start("locksmith-callbacks")
        for name, target in (
            ("locksmith-renew", self._renew_loop),
            ("locksmith-watch", self._watch_loop),
            ("locksmith-cleanup", self._cleanup_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def _interrupt(self, ident: int) -> None:
        """Cut short a blocking query that thread ``ident`` is waiting in."""
        try:
            self._consul._interrupt(ident)
        except LocksmithError as exc:
            log.debug("interrupt.failed", error=str(exc))

    def _check_open(self) -> None:
        if self._state is not ManagerState.RUNNING:
            raise ManagerClosed("the LockManager is closed")

    def _request_timeout(self, remaining: float) -> float:
        return max(0.05, min(self._consul.config.timeout, remaining))

    def _wait_until(self, until: float) -> None:
        self._clock.wait_until(until, self._stop)
        self._check_open()

    def _emit(self, callbacks: Iterable[Callable[[Any], object]], event: Any) -> None:
        for cb in callbacks:
            self._dispatcher.submit(cb, event)

    # -- local exclusion -----------------------------------------------------------------
    def _claim(self, lock: Lock, deadline: float | None) -> bool:
        with self._claims_cv:
            while lock.key in self._claims or lock.key in self._cleaning:
                self._check_open()
                now = self._clock.monotonic()
                if deadline is not None and now >= deadline:
                    return False
                self._claims_cv.wait(None if deadline is None else deadline - now)
            self._check_open()
            self._claims[lock.key] = lock
            lock._set_state(LockState.ACQUIRING)
            return True

    def _unclaim(self, lock: Lock, state: LockState) -> None:
        with self._claims_cv:
            if self._claims.get(lock.key) is lock:
                del self._claims[lock.key]
            if lock._state is not state:
                lock._set_state(state)
            self._claims_cv.notify_all()

    # -- sessions ------------------------------------------------------------------------
    def _current_session(self) -> _SessionHandle | None:
        now = self._clock.monotonic()
        with self._mu:
            s = self._session
            if s is not None and s.state is _SessionState.ACTIVE and s.timer.valid(now):
                return s
        return None

    def _ensure_session(self) -> _SessionHandle:
        s = self._current_session()
        if s is not None:
            return s
        with self._create_lock:
            s = self._current_session()
            if s is not None:
                return s
            stale = self._session
            if stale is not None:
                # Past its deadline but not yet handled by the renewer: handle it here.
                self._session_gone(stale, LossReason.LEASE_EXPIRED, confirmed=False)
            self._check_open()
            started = self._clock.monotonic()
            if self.session_id is not None:
                s = self._adopt_session(self.session_id, started)
            else:
                sid = self._consul.sessions.create(
                    name=self.name,
                    node=self.node,
                    node_checks=self._node_checks,
                    service_checks=self.service_checks,
                    lock_delay=self.lock_delay,
                    behavior=self.behavior,
                    ttl=self.ttl if self.ttl is not None else 0,
                )
                s = _SessionHandle(
                    sid,
                    owned=True,
                    lock_delay=self.lock_delay,
                    timer=LeaseTimer(self.ttl, started, self.renew_fraction),
                )
            with self._mu:
                closing = self._state is not ManagerState.RUNNING
                if not closing:
                    self._session = s
            if closing:
                if s.owned:
                    self._consul.sessions.destroy(s.id)
                raise ManagerClosed("the LockManager is closed")
            log.info("session.created", session_id=s.id, ttl=s.timer.ttl, lock_delay=s.lock_delay)
            self._renew_wake.set()
            return s

    def _adopt_session(self, sid: str, started: float) -> _SessionHandle:
        info = self._consul.sessions.renew(sid)  # proves it exists and that we may use it
        return _SessionHandle(
            sid,
            owned=False,
            lock_delay=info.lock_delay,
            timer=LeaseTimer(info.ttl, started, self.renew_fraction),
        )

    def _session_gone(self, s: _SessionHandle, reason: LossReason, *, confirmed: bool) -> None:
        """End a session: every lock it held is lost; clean up what it may still hold.

        Args:
            s: The session.
            reason: What was observed.
            confirmed: Whether the server said the session is gone (else it may still
                hold our keys: they are released and the session destroyed, in the
                background, so that nobody waits on locks nobody uses).
        """
        now = self._clock.monotonic()
        with self._claims_cv:
            if s.state is not _SessionState.ACTIVE:
                return
            s.state = _SessionState.ENDED
            reason = settle_reason(reason, s.timer.valid(now))
            if self._session is s:
                self._session = None
            lost = [h for h in self._holds.values() if h.session is s]
            for h in lost:
                del self._holds[h.lease.key]
                self._lose_locked(h, now)
            if not confirmed:
                for h in lost:
                    self._pending_releases[(h.lease.key, s.id)] = (h.lease.value, h.lease.flags)
                if s.owned:
                    self._pending_destroys.add(s.id)
            self._claims_cv.notify_all()
        log.warning("session.lost", session_id=s.id, reason=reason.value, locks=len(lost))
        for h in lost:
            self._announce_loss(h, reason, now)
        if not confirmed:
            self._cleanup_wake.set()
        self._watch_wake.set()

    def _lose_locked(self, h: _Hold, now: float) -> None:
        """Mark one hold lost (caller holds _mu)."""
        lock = h.lock
        if lock._state is LockState.HELD:
            lock._set_state(LockState.LOST)
        if self._claims.get(lock.key) is lock:
            del self._claims[lock.key]
        self._hints[h.lease.key] = DelayHint(now, h.session.lock_delay, h.session.id)

    def _announce_loss(self, h: _Hold, reason: LossReason, now: float) -> None:
        event = LossEvent(key=h.lease.key, reason=reason, lease=h.lease, detected_at=now)
        log.warning(
            "lock.lost",
            key=h.lease.key,
            session_id=h.lease.session_id,
            reason=reason.value,
            fencing_token=h.lease.fencing_token,
        )
        self._emit([*h.lock._callbacks, *self._lost_callbacks], event)

    def _lose_hold(self, key: str, lease: Lease, reason: LossReason) -> None:
        now = self._clock.monotonic()
        with self._claims_cv:
            h = self._holds.get(key)
            if h is None or h.lease is not lease:
                return
            del self._holds[key]
            self._lose_locked(h, now)
            if reason is not LossReason.SESSION_INVALIDATED:
                # Released or deleted by someone else: no lock-delay applies.
                self._hints.pop(key, None)
            self._claims_cv.notify_all()
        self._announce_loss(h, reason, now)

    # -- holds ---------------------------------------------------------------------------
    def _last_token(self, key: str) -> int:
        """The highest fencing token this manager handed out for ``key`` (0: none)."""
        with self._mu:
            return self._tokens.get(key, 0)

    def _register_hold(self, lock: Lock, s: _SessionHandle, lease: Lease) -> bool:
        now = self._clock.monotonic()
        rewatch = False
        with self._mu:
            ok = (
                self._state is ManagerState.RUNNING
                and s.state is _SessionState.ACTIVE
                and self._session is s
                and s.timer.valid(now)
            )
            if ok:
                self._holds[lease.key] = _Hold(lock, lease, s)
                # A release queued for an earlier hold of this key by this session (an
                # acquire that timed out) must not undo the hold just taken.
                self._pending_releases.pop((lease.key, s.id), None)
                self._tokens[lease.key] = max(self._tokens.get(lease.key, 0), lease.fencing_token)
                lock._lease = lease
                lock._set_state(LockState.HELD)
                self._hints.pop(lease.key, None)
                prefix = self._watch_prefix
                rewatch = prefix is not None and not lease.key.startswith(prefix)
                if rewatch:
                    self._rewatch = True
        if not ok:
            try:
                self._consul.kv.put(lease.key, lease.value, release=s.id, flags=lease.flags)
            except SessionNotFound:
                pass
            except LocksmithError as exc:
                log.info("lock.cleanup_release_failed", key=lease.key, error=str(exc))
                self._queue_release(lease.key, s.id, lease.value, lease.flags)
            self._check_open()
            return False
        log.info(
            "lock.acquired",
            key=lease.key,
            session_id=lease.session_id,
            fencing_token=lease.fencing_token,
        )
        self._watch_wake.set()
        if rewatch and self._watcher_ident is not None:
            self._interrupt(self._watcher_ident)
        return True

    def _release(self, lock: Lock) -> bool:
        now = self._clock.monotonic()
        with self._claims_cv:
            if lock._state is LockState.LOST:
                lock._set_state(LockState.UNLOCKED)
                lock._lease = None
                return False
            h = self._holds.get(lock.key)
            if lock._state is not LockState.HELD or h is None or h.lock is not lock:
                raise NotHeld(f"the lock on {lock.key!r} is not held by this Lock")
            expired = not h.session.timer.valid(now)
            if not expired:
                del self._holds[lock.key]
                lock._set_state(LockState.RELEASING)
        if expired:
            # Past the lease deadline: the lock is presumed lost, whatever the server says.
            self._session_gone(h.session, LossReason.LEASE_EXPIRED, confirmed=False)
            with self._claims_cv:
                if lock.state is LockState.LOST:  # (not if another thread re-acquired)
                    lock._set_state(LockState.UNLOCKED)
                    lock._lease = None
            return False
        lease = h.lease
        try:
            self._consul.kv.put(lease.key, lease.value, release=lease.session_id, flags=lease.flags)
        except SessionNotFound:
            pass  # the session ended: the key is released (or deleted) already
        except LocksmithError as exc:
            # Unavailable, or refused mid leader change: keep trying in the background; a key
            # we no longer use must not stay locked, and release() itself must not fail.
            self._queue_release(lease.key, lease.session_id, lease.value, lease.flags)
            log.warning(
                "lock.release_deferred",
                key=lease.key,
                session_id=lease.session_id,
                error=str(exc),
            )
        finally:
            lock._lease = None
            self._unclaim(lock, LockState.UNLOCKED)
        log.info("lock.released", key=lease.key, session_id=lease.session_id)
        return True

    # -- waiting for holders -------------------------------------------------------------
    def _hint(self, key: str) -> DelayHint | None:
        with self._mu:
            return self._hints.get(key)

    def _remember_holder(self, sid: str) -> None:
        with self._mu:
            if sid in self._holder_delays:
                return
        try:
            info = self._consul.sessions.info(sid)
        except LocksmithError:
            info = None
        with self._mu:
            if len(self._holder_delays) > 4096:
                self._holder_delays.clear()
            self._holder_delays[sid] = info.lock_delay if info is not None else None

    def _holder_gone(self, key: str, sid: str) -> None:
        now = self._clock.monotonic()
        with self._mu:
            self._hints[key] = DelayHint(now, self._holder_delays.get(sid), sid)

    def _lock_delay_entered(self, key: str, action: SleepUntil) -> None:
        hint = self._hint(key)
        event = LockDelayEvent(
            key=key,
            until=action.until,
            known=action.known,
            previous_session=hint.session_id if hint else None,
        )
        log.info(
            "lock.lock_delay",
            key=key,
            until=action.until,
            known=action.known,
            previous_session=event.previous_session,
        )
        self._emit(self._lock_delay_callbacks, event)

    def _watch_key(self, key: str, index: int, wait: float) -> _KeyWake:
        ident = threading.get_ident()
        with self._mu:
            self._check_open()
            self._waiting.add(ident)
        try:
            res = self._consul.kv.get_with_meta(key, index=index or None, wait=max(wait, 0.001))
        except ConsulUnavailable:
            self._check_open()  # interrupted by close(): ManagerClosed
            raise
        finally:
            with self._mu:
                self._waiting.discard(ident)
        self._check_open()
        e = res.value
        return _KeyWake(session=e.session if e else None)

    # -- renewer -------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        clock = self._clock
        while not self._stop.is_set():
            self._renew_wake.clear()
            with self._mu:
                s = self._session
            wake = math.inf
            if s is not None and s.state is _SessionState.ACTIVE:
                decision = s.timer.decide(clock.monotonic())
                if isinstance(decision, PresumeLost):
                    self._session_gone(s, LossReason.LEASE_EXPIRED, confirmed=False)
                    continue
                if isinstance(decision, RenewAt):
                    if clock.monotonic() >= decision.at:
                        self._renew(s)
                        continue
                    wake = decision.at
            clock.wait_until(wake, self._renew_wake)

    def _renew(self, s: _SessionHandle) -> None:
        clock = self._clock

        def attempt() -> None:
            now = clock.monotonic()
            if self._stop.is_set() or s.state is not _SessionState.ACTIVE or not s.timer.valid(now):
                raise _LeaseOverError
            info = self._consul.sessions.renew(
                s.id, timeout=self._request_timeout(s.timer.remaining(now))
            )
            with self._mu:
                s.timer.renewed(now, info.ttl)
            log.debug("session.renewed", session_id=s.id, ttl=info.ttl)

        def sleep(seconds: float) -> None:
            self._stop.wait(seconds)

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome is not None else None
            log.warning(
                "session.renew_failed", session_id=s.id, attempt=rs.attempt_number, error=str(exc)
            )

        budget = s.timer.remaining(clock.monotonic())
        ttl = s.timer.ttl or 10.0
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ConsulUnavailable),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=max(0.5, ttl / 10)),
            stop=tenacity.stop_before_delay(budget),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except SessionNotFound:
            self._session_gone(s, LossReason.SESSION_INVALIDATED, confirmed=True)
        except _LeaseOverError:
            pass  # the loop presumes the loss (or the manager is closing)
        except LocksmithError as exc:
            log.warning("session.renew_failed", session_id=s.id, error=str(exc), final=True)
            # Nothing more to try before the deadline: wait for it, then presume the loss
            # (a renewal by the watcher in the meantime moves the deadline).
            clock.wait_until(s.timer.deadline, self._renew_wake)

    # -- cleanup -------------------------------------------------------------------------
    def _queue_release(self, key: str, sid: str, value: bytes, flags: int = 0) -> None:
        with self._mu:
            self._pending_releases[(key, sid)] = (value, flags)
        self._cleanup_wake.set()

    def _has_cleanup(self) -> bool:
        with self._mu:
            return bool(self._pending_releases or self._pending_destroys)

    def _cleanup_loop(self) -> None:
        backoff = _CLEANUP_START
        while not self._stop.is_set():
            self._cleanup_wake.clear()
            if not self._has_cleanup():
                self._cleanup_wake.wait()
                continue
            if self._cleanup_once():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _CLEANUP_CAP)
            else:
                backoff = _CLEANUP_START

    def _cleanup_once(self) -> bool:
        """Release presumed-lost keys, then destroy their sessions. True if work remains."""
        with self._mu:
            releases = dict(self._pending_releases)
            destroys = set(self._pending_destroys)
        for (key, sid), (value, flags) in releases.items():
            with self._claims_cv:
                # A local Lock holding or acquiring the key with this very session (an earlier
                # acquire of it timed out) could have its hold undone by this release: leave
                # the key to it (taking it drops this entry). Releases for other sessions
                # cannot touch its hold. Local acquires wait while a release is under way.
                if (key, sid) not in self._pending_releases:
                    continue
                current = self._session
                if key in self._claims and current is not None and current.id == sid:
                    continue
                self._cleaning.add(key)
            try:
                self._consul.kv.put(key, value, release=sid, flags=flags, timeout=_CLEANUP_TIMEOUT)
                log.info("lock.cleanup_released", key=key, session_id=sid)
            except SessionNotFound:
                pass  # the session is gone: so is its hold on the key
            except ConsulUnavailable as exc:
                log.info("lock.cleanup_retry", key=key, session_id=sid, error=str(exc))
                continue
            except LocksmithError as exc:
                log.warning("lock.cleanup_release_failed", key=key, session_id=sid, error=str(exc))
            finally:
                with self._claims_cv:
                    self._cleaning.discard(key)
                    self._claims_cv.notify_all()
            with self._mu:
                self._pending_releases.pop((key, sid), None)
        with self._mu:
            busy = {sid for (_, sid) in self._pending_releases}
        # Destroy only after the keys are released: a destroy would put them under lock-delay.
        for sid in destroys - busy:
            try:
                self._consul.sessions.destroy(sid, timeout=_CLEANUP_TIMEOUT)
                log.info("session.destroyed", session_id=sid, cleanup=True)
            except ConsulUnavailable as exc:
                log.info("session.cleanup_retry", session_id=sid, error=str(exc))
                continue
            except LocksmithError as exc:
                log.warning("session.cleanup_destroy_failed", session_id=sid, error=str(exc))
            with self._mu:
                self._pending_destroys.discard(sid)
        return self._has_cleanup()

    # -- watcher -------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        self._watcher_ident = threading.get_ident()
        index = 0
        prefix: str | None = None
        backoff = 0.1
        while not self._stop.is_set():
            self._watch_wake.clear()
            with self._mu:
                s = self._session
                holds = {k: h for k, h in self._holds.items() if h.session is s}
                if s is None or not holds:
                    self._watch_prefix = None
                else:
                    p = watch_prefix(set(holds))
                    if p != prefix:
                        index = 0
                    prefix = self._watch_prefix = p
                self._rewatch = False
            if s is None or not holds or prefix is None:
                prefix, index = None, 0
                self._watch_wake.wait()
                continue
            try:
                res = self._consul.kv.list_with_meta(
                    prefix, index=index or None, wait=_WATCH_WAIT if index else None
                )
            except ConsulUnavailable as exc:
                if self._stop.is_set():
                    return
                index = 0
                if self._rewatch:
                    continue  # interrupted on purpose: a key outside the prefix was added
                log.debug("watch.retry", prefix=prefix, error=str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except LocksmithError as exc:
                log.warning("watch.failed", prefix=prefix, error=str(exc))
                self._stop.wait(5.0)
                index = 0
                continue
            backoff = 0.1
            index = next_index(index, res.meta.index)
            if self._check_holds(s, holds, {e.key: e for e in res.value}):
                index = 0
                self._stop.wait(0.2)
            elif index:
                # Coalesce bursts (e.g. acquiring many keys under the prefix): each write wakes
                # the watch, and each wake re-lists every held key.
                self._stop.wait(_WATCH_COALESCE)

    def _check_holds(
        self, s: _SessionHandle, holds: dict[str, _Hold], entries: dict[str, KVEntry]
    ) -> bool:
        """Report the holds the watch shows lost. True: undecided, look again."""
        with self._mu:
            # Keys released (or re-acquired) by us since the snapshot are not suspects: our own
            # release must not cost a confirming renew.
            suspects = [
                (k, h)
                for k, h in holds.items()
                if (entries.get(k) is None or entries[k].session != s.id)
                and (cur := self._holds.get(k)) is not None
                and cur.lease is h.lease
            ]
        if not suspects:
            return False
        # A default-consistency read can be stale while a deposed leader still answers: read
        # the suspects again from the leader before declaring anything lost.
        try:
            fresh = {k: self._consul.kv.get(k, consistency="consistent") for k, _ in suspects}
        except ConsulUnavailable:
            return True
        suspects = [(k, h) for k, h in suspects if (e := fresh[k]) is None or e.session != s.id]
        if not suspects:
            return False
        if not s.timer.valid(self._clock.monotonic()):
            self._session_gone(s, LossReason.LEASE_EXPIRED, confirmed=False)
            return False
        alive = self._confirm_alive(s)
        if alive is None:
            return True
        if alive is False:
            self._session_gone(s, LossReason.SESSION_INVALIDATED, confirmed=True)
            return False
        for key, h in suspects:
            e = fresh[key]
            reason = classify_loss(s.id, e.session if e else None, e is not None, True)
            if reason is not None:
                self._lose_hold(key, h.lease, reason)
        return False

    def _confirm_alive(self, s: _SessionHandle) -> bool | None:
        """Renew to learn whether the session exists (info says [] without session:read)."""
        started = self._clock.monotonic()
        try:
            info = self._consul.sessions.renew(s.id, timeout=self._request_timeout(5.0))
        except SessionNotFound:
            return False
        except LocksmithError:
            return None
        with self._mu:
            s.timer.renewed(started, info.ttl)
        return True


class _LeaseOverError(Exception):
    """Internal: the lease deadline passed during a renew attempt."""
