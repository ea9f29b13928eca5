"""FairLock and RWLock: locks served first come, first served, on a fair queue.

The decisions (who holds, whom to watch, what a prefix holds) are pure functions of
:mod:`locksmith._queue`, which also describes the layout. This module does their I/O:

* **acquire**: one transaction adds the entry (the ``lock`` verb with the manager's
  ``Behavior=delete`` companion session, so a crashed contender's entry goes with its
  session) and reads the queue at the same index. Then, until the entry holds: a blocking
  query on the one entry it watches; a released exclusive entry hands the lock on at once,
  anything else (a crash mid-queue, a waiter that gave up, an outside delete) means one
  re-read of the queue and a new entry to watch. Every query answers by the call's
  deadline (:func:`locksmith._deadline.query_wait`).
* **monitor**: from the moment the entry exists, a thread follows it (one blocking query,
  answered only when the entry changes). While waiting, an entry that vanishes makes the
  waiter queue again at the end; while holding, it is a loss (``on_lost``), as is the lease
  deadline of the companion session passing without a renewal.
* **release**: one transaction marks the entry released (exclusive) or deletes it
  (shared), only if it still carries the session, and deletes the dead entries this
  contender knows of. A waiter that gives up (timeout, ``blocking=False``, an exception)
  deletes its entry. What cannot reach Consul is retried in the background; the
  session's end removes the entries in any case.

Requests per handoff between two waiting contenders: the holder's release, the next
waiter's answered blocking query, its monitor's query (answered at its own release), and
the transaction that queued it: four.
"""

from __future__ import annotations

import base64
import contextlib
import math
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from locksmith._backoff import Backoff
from locksmith._cancel import Cancel, check_cancel
from locksmith._compat import lock_key
from locksmith._deadline import MAX_BLOCKING_WAIT, Deadline, query_wait
from locksmith._exceptions import (
    Cancelled,
    ConsulUnavailable,
    LockError,
    LockLost,
    LocksmithError,
    LockTimeout,
    ManagerClosed,
    NotHeld,
    SessionNotFound,
    ValidationError,
)
from locksmith._fencing import ReadLockKey, RunTxn, guarded_write
from locksmith._lease import Lease, LossEvent
from locksmith._log import get_logger
from locksmith._models import KVEntry, TxnOutcome, next_index
from locksmith._ports import ManagerPort
from locksmith._queue import (
    Advance,
    Gone,
    Hold,
    Marker,
    QueueView,
    Relist,
    Rewatch,
    Wait,
    decide,
    decode_queue,
    enqueue_ops,
    entry_flags,
    marker_ops,
    release_ops,
    seen_watched,
)
from locksmith._states import LossReason, ManagerState, QueueState, advance
from locksmith._validate import check_callback, check_key, check_timeout, check_txn_value

__all__ = ["FairLock", "RWLock"]

log = get_logger("locksmith.fair")

#: The longest wait of one monitor query (it also ends by the lease deadline).
_MONITOR_WAIT = MAX_BLOCKING_WAIT
#: Dead entries a contender deletes in one of its transactions at most.
_MAX_DROP = 16
#: Attempts to open (create or re-open) the queue's marker before giving up.
_MARKER_ATTEMPTS = 8
#: Seconds a caller that gives up waits for its entry's delete (then the background retries).
_WITHDRAW_TIMEOUT = 2.0
#: Seconds the monitor thread of a contender lingers without an entry before it ends (the
#: next acquisition reuses it, and its keep-alive connection, if it comes sooner).
_MONITOR_LINGER = 2.0


@dataclass(eq=False)
class _Entry:
    """One acquisition's entry, from the transaction that queued it to its release."""

    key: str
    #: The companion manager whose session holds the entry (its lease is the entry's).
    port: ManagerPort
    session_id: str
    shared: bool
    create_index: int
    #: The index of our latest known write to the entry (what fenced writes check).
    modify_index: int
    #: Cuts short the waiter's blocking query (its entry vanished, the manager closes).
    wake: Cancel = field(default_factory=Cancel)
    #: Cuts short the monitor's query.
    cancel: Cancel = field(default_factory=Cancel)
    #: Set once the entry is over (released, lost, withdrawn): the monitor stops.
    done: threading.Event = field(default_factory=threading.Event)
    #: Set when the lease ends (lost or released).
    ended: threading.Event = field(default_factory=threading.Event)
    #: What the monitor saw happen to the entry while it waited (None: nothing).
    vanished: LossReason | None = None
    #: Set when our own release was sent (the monitor then expects the change).
    releasing: bool = False
    lease: Lease | None = None


class FairLock:
    """A lock on a fair (FIFO) queue under a prefix: contenders hold it in order of arrival.

    Made by :meth:`LockManager.fair_lock` (exclusive), or by :meth:`RWLock.read` (shared)
    and :meth:`RWLock.write` (exclusive). It has the API of :class:`~locksmith.Lock`. One
    object is one contender: it holds at most one lease at a time (use one object per
    thread that contends).

    Attributes:
        prefix: The queue's prefix (also the :attr:`Lease.key` of its leases).
        value: Written to the entry (shown to observers).
        shared: True for the read side of an :class:`RWLock`.
        lock_key: The queue's marker, ``PREFIX/.lock``.
    """

    def __init__(
        self, manager: ManagerPort, prefix: str, value: bytes | str = b"", *, shared: bool = False
    ) -> None:
        self.prefix = check_key(prefix, "prefix").rstrip("/")
        if not self.prefix:
            raise ValidationError("prefix", f"must name a key prefix, got {prefix!r}")
        self.value = check_txn_value(value)
        if not isinstance(shared, bool):
            raise ValidationError("shared", f"must be True or False, got {shared!r}")
        self.shared = shared
        self.lock_key = lock_key(self.prefix)
        self._mgr = manager
        self._dir = self.prefix + "/"
        self._mu = threading.Lock()
        self._state = QueueState.IDLE
        self._entry: _Entry | None = None
        self._callbacks: list[Callable[[LossEvent], object]] = []
        #: Dead entries (released or sessionless) to delete with our next transaction.
        self._dead: set[str] = set()
        #: Our latest released entry: deleted only after our next release (see release()).
        self._last_released: str | None = None
        self._closing = False
        self._adopted = False
        #: The caller's cancel while an acquire runs, and the entries' wakes chained to it.
        self._cancel: Cancel | None = None
        self._chained: list[Cancel] = []
        #: Entries for the monitor thread to follow, one after the other.
        self._watchlist: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._monitoring = False

    def __repr__(self) -> str:
        kind = "shared" if self.shared else "exclusive"
        return f"<FairLock {self.prefix!r} {kind} {self._state.value}>"

    # -- state ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The prefix (what ``LOCKSMITH_KEY`` is set to for a child)."""
        return self.prefix

    @property
    def state(self) -> QueueState:
        """The lifecycle state."""
        return self._state

    @property
    def lease(self) -> Lease | None:
        """The lease held right now, or None.

        None as soon as a loss is known or presumed: it reads the lease deadline of the
        session on the clock, so it turns None at the deadline even if no thread has run.
        """
        entry = self._entry
        if (
            entry is None
            or self._state is not QueueState.HELD
            or entry.lease is None
            or entry.ended.is_set()
        ):
            return None
        if self._mgr.clock.monotonic() >= entry.port.lease_deadline(entry.session_id):
            return None
        return entry.lease

    @property
    def held(self) -> bool:
        """Whether the lock is held right now (see :attr:`lease`)."""
        return self.lease is not None

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` whenever a lease of this lock is lost (once per lease).

        Callbacks run on the manager's callback thread, one at a time. Returns the
        callback, so this works as a decorator.
        """
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease: Lease | None = None) -> threading.Event:
        """An event set when ``lease`` (default: the current one) ends: lost, presumed lost
        at the lease deadline, or released. Already set if nothing is held."""
        entry = self._entry
        if entry is not None and entry.lease is not None:
            if lease is None and self.lease is not None:
                return entry.ended
            if lease is not None and entry.lease is lease:
                return entry.ended
        if lease is not None and not isinstance(lease, Lease):
            raise ValidationError("lease", f"must be a Lease, got {lease!r}")
        ev = threading.Event()
        ev.set()
        return ev

    def _set(self, new: QueueState) -> None:
        self._state = advance(self._state, new)

    # -- acquire -------------------------------------------------------------------------
    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: Cancel | None = None
    ) -> Lease | None:
        """Join the queue and wait for the lock.

        Args:
            blocking: False: join, and leave at once (returning None) if anyone is ahead.
            timeout: Seconds to wait at most (None: forever); ``0`` tries once and raises
                :class:`LockTimeout` if anyone is ahead. With ``blocking=False`` it bounds
                the one try's requests (default: the client's timeout).
            cancel: A :class:`~locksmith.Cancel`: when set, the wait ends at once with
                :class:`~locksmith.Cancelled` and the entry leaves the queue.

        Returns:
            The new :class:`Lease`, or None (only with ``blocking=False``).

        Raises:
            ValidationError: Bad ``blocking`` or ``timeout`` (before any request).
            LockError: This object holds, or is acquiring, already.
            LockTimeout: The deadline passed; the entry was taken out of the queue.
            LockConflict: The prefix holds another kind of lock.
            ManagerClosed: The manager is closed (or closes while this waits).
            Cancelled: ``cancel`` was set before the lock was held.
            ConsulUnavailable: Consul could not be reached (``blocking=False`` only;
                blocking calls retry until their deadline).
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
        cancel = check_cancel(cancel)
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"fair lock {self.prefix!r}: cancelled before it started")
        with self._mu:
            if self._state not in (QueueState.IDLE, QueueState.LOST):
                raise LockError(
                    f"fair lock {self.prefix!r} is already {self._state.value} by this object"
                )
            self._set(QueueState.ENQUEUING)
            self._entry = None
            self._closing = False
            self._cancel = cancel
        try:
            eph = self._mgr.companion()
        except BaseException:
            with self._mu:
                self._set(QueueState.IDLE)
            raise
        now = self._mgr.clock.monotonic()
        if not blocking and seconds is None:
            seconds = self._mgr.consul.config.timeout
        deadline = Deadline.after(now, seconds)
        with self._mu:
            adopt, self._adopted = not self._adopted, True
        if adopt:
            self._mgr.adopt(self)
        lease: Lease | None = None
        try:
            lease = self._acquire(eph, deadline, blocking, seconds)
        finally:
            self._cancel = None
            if cancel is not None:
                for wake in self._chained:
                    cancel._unchain(wake)
            self._chained.clear()
            if lease is None:
                self._give_up()
        return lease

    def _acquire(
        self, eph: ManagerPort, deadline: Deadline, blocking: bool, seconds: float | None
    ) -> Lease | None:
        while True:
            entry, view = self._enqueue(eph, deadline, blocking, seconds)
            lease = self._wait(entry, view, deadline, blocking, seconds)
            if lease is not None or entry.vanished is None:
                return lease
            # The entry vanished while it waited: queue again, at the end.
            log.info(
                "fair_lock.requeued",
                key=self.prefix,
                entry=entry.key,
                reason=entry.vanished.value,
            )
            self._withdraw(entry)
            with self._mu:
                self._set(QueueState.ENQUEUING)
                self._entry = None

    def _budget(self, deadline: Deadline) -> float:
        return deadline.budget(self._mgr.clock.monotonic(), self._mgr.consul.config.timeout)

    def _enqueue(
        self, eph: ManagerPort, deadline: Deadline, blocking: bool, seconds: float | None
    ) -> tuple[_Entry, QueueView]:
        """Add our entry and read the queue (one transaction); open the marker if needed."""
        kv = self._mgr.consul.kv
        clock = self._mgr.clock
        backoff = Backoff(start=0.05, cap=2.0)
        failures = 0
        sid: str | None = None
        key = ""
        while True:
            self._check_open()
            if sid is None:
                left = deadline.remaining(clock.monotonic())
                sid = eph.session(timeout=None if math.isinf(left) else left)
                key = f"{self.prefix}/{sid}-{secrets.token_hex(6)}"
            drop = self._drop_list()
            ops = enqueue_ops(self.prefix, key, self.value, sid, self.shared, drop)
            try:
                out = kv.txn(
                    ops, operation="fair.enqueue", resource=key, timeout=self._budget(deadline)
                )
            except SessionNotFound:
                eph.session_gone(sid)
                sid = None
                continue
            except ConsulUnavailable as exc:
                # The entry may exist: the same transaction again is harmless (same key).
                failures += 1
                now = clock.monotonic()
                if not blocking or deadline.expired(now):
                    self._forget_entry_key(key, eph, sid)
                    if not blocking:
                        raise
                    raise self._timeout(seconds, exc) from exc
                pause = backoff.delay(failures)
                self._pause(min(now + pause, deadline.at))
                continue
            if not out.ok:
                errors = "; ".join(out.errors)
                raise LockError(f"fair lock {self.prefix!r}: Consul refused the entry: {errors}")
            self._forget_dead(drop)
            try:
                view = decode_queue(_tree(out, self._dir), self.prefix)
                mine = view.find(key)
                if mine is None:  # pragma: no cover - the transaction read it back
                    raise LockError(f"fair lock {self.prefix!r}: the new entry was not read back")
                view = self._open_marker(view)
            except BaseException:
                self._forget_entry_key(key, eph, sid)
                raise
            entry = _Entry(key, eph, sid, self.shared, mine.create_index, mine.modify_index)
            self._note_dead(view)
            with self._mu:
                self._entry = entry
            if self._cancel is not None:  # the caller's cancel wakes the entry's wait
                self._cancel._chain(entry.wake)
                self._chained.append(entry.wake)
            self._follow(entry)
            return entry, view

    def _open_marker(self, view: QueueView) -> QueueView:
        """Make sure ``P/.lock`` exists and is open (first use of the prefix, or a cleanup
        half done), so that other kinds of lock keep refusing the prefix."""
        kv = self._mgr.consul.kv
        for _ in range(_MARKER_ATTEMPTS):
            if view.marker is Marker.OPEN:
                return view
            out = kv.txn(
                marker_ops(self.prefix, view.marker_index),
                operation="fair.marker",
                resource=self.lock_key,
            )
            if out.ok:
                entry = out.entries[0] if out.entries else None
                index = entry.modify_index if entry is not None else view.marker_index
                return QueueView(view.prefix, Marker.OPEN, index, view.entries)
            view = decode_queue(kv.list(self._dir), self.prefix)
        raise LockError(f"fair lock {self.prefix!r}: could not open {self.lock_key!r}")

    def _wait(
        self,
        entry: _Entry,
        view: QueueView,
        deadline: Deadline,
        blocking: bool,
        seconds: float | None,
    ) -> Lease | None:
        """Wait until ``entry`` holds; None when it vanished (queue again) or must not wait."""
        kv = self._mgr.consul.kv
        clock = self._mgr.clock
        backoff = Backoff(start=0.05, cap=2.0)
        while True:
            decision = decide(view, entry.key, self.shared)
            if isinstance(decision, Gone):
                if entry.vanished is None:
                    entry.vanished = LossReason.KEY_DELETED
                return None
            if isinstance(decision, Hold):
                return self._hold(entry)
            assert isinstance(decision, Wait)
            with self._mu:
                if self._state is QueueState.ENQUEUING:
                    self._set(QueueState.WAITING)
            if not blocking:
                return None
            watched = decision.entry
            failures = 0
            while True:
                self._check_open()
                if entry.vanished is not None:
                    return None
                now = clock.monotonic()
                if deadline.expired(now):
                    raise self._timeout(seconds)
                wait = query_wait(now, deadline.at)
                try:
                    res = kv.get_with_meta(
                        watched.key, index=watched.modify_index, wait=wait, cancel=entry.wake
                    )
                except ConsulUnavailable:
                    if entry.wake.cancelled:
                        self._check_open()
                        return None
                    failures += 1
                    pause = backoff.delay(failures)
                    self._pause(min(clock.monotonic() + pause, deadline.at))
                    continue
                failures = 0
                outcome = seen_watched(view, watched, res.value)
                if isinstance(outcome, Rewatch):
                    watched = outcome.entry
                    continue
                if isinstance(outcome, Advance):
                    self._dead.add(watched.key)
                    view = outcome.view
                    break
                assert isinstance(outcome, Relist)
                view = self._relist(deadline, seconds)
                break

    def _relist(self, deadline: Deadline, seconds: float | None) -> QueueView:
        """Read the queue again (retrying until the deadline)."""
        kv = self._mgr.consul.kv
        clock = self._mgr.clock
        backoff = Backoff(start=0.05, cap=2.0)
        failures = 0
        while True:
            self._check_open()
            try:
                view = decode_queue(kv.list(self._dir, timeout=self._budget(deadline)), self.prefix)
            except ConsulUnavailable as exc:
                failures += 1
                now = clock.monotonic()
                if deadline.expired(now):
                    raise self._timeout(seconds, exc) from exc
                self._pause(min(now + backoff.delay(failures), deadline.at))
                continue
            self._note_dead(view)
            return view

    def _hold(self, entry: _Entry) -> Lease | None:
        """The entry is first: take the lease, unless the entry vanished or the session's
        lease deadline passed meanwhile (then queue again)."""
        clock = self._mgr.clock
        now = clock.monotonic()
        at = entry.port.lease_deadline(entry.session_id)
        with self._mu:
            if self._closing:
                raise ManagerClosed("the LockManager was closed")
            if entry is not self._entry or entry.vanished is not None:
                entry.vanished = entry.vanished or LossReason.KEY_DELETED
                return None
            if now >= at:
                entry.vanished = LossReason.LEASE_EXPIRED
                return None
            lease = Lease(
                key=self.prefix,
                session_id=entry.session_id,
                fencing_token=entry.create_index,
                value=self.value,
                acquired_at=now,
                flags=entry_flags(self.shared),
            )
            entry.lease = lease
            self._set(QueueState.HELD)
        threading.Thread(
            target=self._expire,
            args=(entry,),
            name=f"locksmith-fair-deadline-{self.prefix}",
            daemon=True,
        ).start()
        log.info(
            "fair_lock.acquired",
            key=self.prefix,
            session_id=entry.session_id,
            fencing_token=entry.create_index,
            shared=self.shared,
        )
        return lease

    def _timeout(self, seconds: float | None, cause: Exception | None = None) -> LockTimeout:
        exc = LockTimeout(f"fair lock {self.prefix!r} not acquired within {seconds}s")
        if cause is not None:
            exc.__cause__ = cause
        return exc

    def _check_open(self) -> None:
        if self._closing or self._mgr.state in (ManagerState.CLOSING, ManagerState.CLOSED):
            raise ManagerClosed("the LockManager was closed")
        cancel = self._cancel
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"fair lock {self.prefix!r}: cancelled")

    def _pause(self, until: float) -> None:
        """Sleep until ``until`` (a retry's backoff), or until the caller's cancel."""
        cancel = self._cancel
        self._mgr.clock.wait_until(until, cancel.event if cancel is not None else None)

    # -- giving up -----------------------------------------------------------------------
    def _give_up(self) -> None:
        """The acquire ends without a lease: take the entry out of the queue."""
        with self._mu:
            entry, self._entry = self._entry, None
            if self._state is not QueueState.IDLE:
                self._set(QueueState.IDLE)
        if entry is not None:
            self._withdraw(entry)
        self._unadopt()

    def _unadopt(self) -> None:
        with self._mu:
            forget, self._adopted = self._adopted, False
        if forget:
            self._mgr.forget(self)

    def _withdraw(self, entry: _Entry) -> None:
        """Delete a waiting entry (its successor then watches the one ahead of it)."""
        entry.done.set()
        entry.ended.set()
        self._delete_entry(entry.key, entry.port, entry.session_id)
        entry.cancel.cancel()

    def _forget_entry_key(self, key: str, port: ManagerPort, sid: str) -> None:
        """An entry we may have created, and will not use: delete it."""
        self._delete_entry(key, port, sid)

    def _delete_entry(self, key: str, port: ManagerPort, sid: str) -> None:
        ops: list[dict[str, Any]] = [{"KV": {"Verb": "delete", "Key": key}}]
        timeout = min(_WITHDRAW_TIMEOUT, self._mgr.consul.config.timeout)
        try:
            out = self._mgr.consul.kv.txn(
                ops, operation="fair.withdraw", resource=key, timeout=timeout
            )
            if out.ok:
                return
        except SessionNotFound:  # pragma: no cover - a delete names no session
            return
        except LocksmithError as exc:
            log.info("fair_lock.withdraw_deferred", key=self.prefix, entry=key, error=str(exc))
        self._retry_later(ops, key, port, sid)

    def _retry_later(
        self, ops: list[dict[str, Any]], key: str, port: ManagerPort, sid: str
    ) -> None:
        """Retry ``ops`` in the background until Consul answers (applied, or a check failed
        because the entry is gone), the session that holds ``key`` ends (its entries go
        with it), or the manager closes (which ends the session)."""

        def run() -> None:
            backoff = Backoff(start=0.1, cap=5.0)
            clock = self._mgr.clock
            attempt = 0
            while True:
                attempt += 1
                clock.wait_until(clock.monotonic() + backoff.delay(attempt))
                if port.state is ManagerState.CLOSED or port.lease_deadline(sid) == -math.inf:
                    return  # the session ended (or will, at close): its entries go with it
                try:
                    port.consul.kv.txn(ops, operation="fair.retry", resource=key)
                except SessionNotFound:
                    return
                except LocksmithError:
                    continue
                return

        threading.Thread(target=run, name=f"locksmith-fair-retry-{key}", daemon=True).start()

    # -- dead entries --------------------------------------------------------------------
    def _note_dead(self, view: QueueView) -> None:
        for e in view.dead():
            if len(self._dead) >= _MAX_DROP:
                break
            self._dead.add(e.key)

    def _drop_list(self) -> list[str]:
        return sorted(self._dead)[:_MAX_DROP]

    def _forget_dead(self, keys: list[str]) -> None:
        for k in keys:
            self._dead.discard(k)

    # -- monitor -------------------------------------------------------------------------
    def _follow(self, entry: _Entry) -> None:
        """Have the monitor thread follow ``entry`` (starting the thread if none runs).

        One thread per contender follows its entries one after the other, and lingers a
        little after the last, so that a contender that acquires again keeps its thread and
        its keep-alive connection. A new entry that waits for the thread to finish with
        the previous one misses nothing: the first query asks past the entry's creation.
        """
        with self._mu:
            self._watchlist.put(entry)
            if self._monitoring:
                return
            self._monitoring = True
        threading.Thread(
            target=self._monitor_loop, name=f"locksmith-fair-{self.prefix}", daemon=True
        ).start()

    def _monitor_loop(self) -> None:
        while True:
            try:
                entry = self._watchlist.get(timeout=_MONITOR_LINGER)
            except queue.Empty:
                with self._mu:
                    if self._watchlist.empty():
                        self._monitoring = False
                        return
                continue
            try:
                self._monitor(entry)
            except Exception as exc:  # a bug: logged, and the next entry is still followed
                log.exception("fair_lock.monitor_failed", key=self.prefix, error=str(exc))

    def _monitor(self, entry: _Entry) -> None:
        """Follow our own entry from its creation to its end (one blocking query, answered
        when it changes): a waiter whose entry vanishes queues again; a holder loses."""
        kv = self._mgr.consul.kv
        clock = self._mgr.clock
        backoff = Backoff(start=0.1, cap=5.0)
        failures = 0
        index = entry.modify_index
        while not entry.done.is_set():
            now = clock.monotonic()
            at = entry.port.lease_deadline(entry.session_id)
            if now >= at:
                # The session's lease is over: holders learn it from _expire; a waiter
                # learns it here (its entry goes with the session).
                self._vanished(entry, LossReason.LEASE_EXPIRED)
                return
            try:
                res = kv.get_with_meta(
                    entry.key,
                    index=index,
                    wait=query_wait(now, at, _MONITOR_WAIT),
                    cancel=entry.cancel,
                )
            except ConsulUnavailable:
                if entry.done.is_set() or entry.cancel.cancelled:
                    return
                failures += 1
                clock.wait_until(min(clock.monotonic() + backoff.delay(failures), at), entry.done)
                index = entry.modify_index
                continue
            except LocksmithError as exc:
                log.warning(
                    "fair_lock.monitor_stopped", key=self.prefix, entry=entry.key, error=str(exc)
                )
                return
            failures = 0
            if entry.done.is_set() or entry.releasing:
                return
            reason = _lost_reason(entry, res.value)
            if reason is LossReason.KEY_DELETED:
                reason = self._why_deleted(entry)
            if reason is not None:
                self._vanished(entry, reason)
                return
            seen = res.value
            assert seen is not None
            entry.modify_index = seen.modify_index  # rewritten by someone, still ours
            index = next_index(index, res.meta.index)

    def _why_deleted(self, entry: _Entry) -> LossReason:
        """Our entry is gone: its session ended (Behavior=delete), or someone deleted it."""
        try:
            self._mgr.consul.sessions.renew(entry.session_id)
        except SessionNotFound:
            entry.port.session_gone(entry.session_id)
            return LossReason.SESSION_INVALIDATED
        except LocksmithError:
            pass
        return LossReason.KEY_DELETED

    def _vanished(self, entry: _Entry, reason: LossReason) -> None:
        """The monitor saw the entry end (or the lease deadline pass)."""
        with self._mu:
            if entry is not self._entry or entry.done.is_set():
                return
            state = self._state
            if state in (QueueState.ENQUEUING, QueueState.WAITING):
                entry.vanished = reason
        if state in (QueueState.ENQUEUING, QueueState.WAITING):
            entry.wake.cancel()  # the waiter queues again
        elif state is QueueState.HELD:
            self._lose(entry, reason)

    def _expire(self, entry: _Entry) -> None:
        """While held: lose the lease at the session's lease deadline, unless renewed."""
        clock = self._mgr.clock
        port = entry.port
        known = port.lease_deadline(entry.session_id)
        while True:
            at = port.lease_deadline(entry.session_id)
            if at != -math.inf:
                known = at
            if clock.wait_until(at, entry.done):
                return
            if clock.monotonic() < port.lease_deadline(entry.session_id):
                continue  # renewed meanwhile
            gone_early = clock.monotonic() < known
            reason = LossReason.SESSION_INVALIDATED if gone_early else LossReason.LEASE_EXPIRED
            self._lose(entry, reason)
            return

    def _lose(self, entry: _Entry, reason: LossReason) -> None:
        """A held lease ended without a release: tell ``ended`` waiters and ``on_lost``."""
        with self._mu:
            if entry is not self._entry or self._state is not QueueState.HELD:
                return
            self._set(QueueState.LOST)
            lease = entry.lease
        entry.done.set()
        entry.ended.set()
        entry.cancel.cancel()
        assert lease is not None
        log.warning(
            "fair_lock.lost",
            key=self.prefix,
            session_id=entry.session_id,
            reason=reason.value,
            fencing_token=lease.fencing_token,
        )
        if reason in (LossReason.RELEASED_BY_OTHER, LossReason.KEY_TAKEN):
            # Our key, no longer a valid entry (someone rewrote it): take it out of the
            # queue, so that nobody waits for it.
            self._delete_entry(entry.key, entry.port, entry.session_id)
        event = LossEvent(self.prefix, reason, lease, self._mgr.clock.monotonic())
        self._mgr.dispatch(list(self._callbacks), event)

    # -- release -------------------------------------------------------------------------
    def release(self, lease: Lease | None = None) -> bool:
        """Leave the queue: the next waiter holds at once.

        An exclusive entry is marked released (one write; the waiter behind it needs no
        other request), a shared one deleted; only while it still carries the session.

        Args:
            lease: The lease to release; if it ended already, nothing is touched. None:
                whatever this object holds now.

        Returns:
            True if a held lease was released; False if it had been lost (the loss was
            reported to ``on_lost``), or, with ``lease``, ended already.

        Raises:
            NotHeld: No ``lease`` was given and nothing is held (or it was released).
        """
        if lease is not None and not isinstance(lease, Lease):
            raise ValidationError("lease", f"must be a Lease, got {lease!r}")
        with self._mu:
            entry = self._entry
            if lease is not None and (entry is None or entry.lease is not lease):
                return False
            if self._state is QueueState.LOST:
                self._set(QueueState.IDLE)
                self._entry = None
                released = False
            elif self._state is not QueueState.HELD or entry is None:
                raise NotHeld(f"fair lock {self.prefix!r} is not held")
            else:
                self._set(QueueState.RELEASING)
                entry.releasing = True
                released = True
        if not released:
            self._unadopt()
            return False
        assert entry is not None
        if not self.shared and self._last_released is not None:
            # Our previous released entry: whoever waited behind it was ahead of us now, so
            # has held and let go since; delete it with this release.
            self._dead.add(self._last_released)
            self._last_released = None
        ok = self._send_release(entry)
        with self._mu:
            self._set(QueueState.IDLE)
            self._entry = None
        entry.done.set()
        entry.ended.set()
        self._unadopt()
        if ok:
            log.info("fair_lock.released", key=self.prefix, session_id=entry.session_id)
            if not self.shared:
                # The waiter behind our released entry may not have seen it yet: it is
                # deleted with our next release (or its successor's, or our session's end),
                # never by our next enqueue, which could beat that waiter's query to it.
                self._last_released = entry.key
            return True
        reason = self._why_deleted(entry)
        assert entry.lease is not None
        log.warning(
            "fair_lock.lost", key=self.prefix, session_id=entry.session_id, reason=reason.value
        )
        event = LossEvent(self.prefix, reason, entry.lease, self._mgr.clock.monotonic())
        self._mgr.dispatch(list(self._callbacks), event)
        return False

    def _send_release(self, entry: _Entry) -> bool:
        """Send the release; False if the entry was gone (the lease had been lost)."""
        drop = self._drop_list()
        ops = release_ops(entry.key, self.value, entry.session_id, self.shared, drop)
        try:
            out = self._mgr.consul.kv.txn(ops, operation="fair.release", resource=entry.key)
        except SessionNotFound:
            return False
        except LocksmithError as exc:
            # Not fatal: retried in the background, and the session's end removes the
            # entry in any case.
            log.info("fair_lock.release_deferred", key=self.prefix, error=str(exc))
            self._retry_later(ops, entry.key, entry.port, entry.session_id)
            entry.cancel.cancel()  # nothing will answer the monitor's query soon
            return True
        if out.ok:
            self._forget_dead(drop)
        return out.ok

    # -- fenced writes -------------------------------------------------------------------
    def fenced_put(self, key: str, value: bytes | str, *, lease: Lease | None = None) -> int:
        """Write ``key`` only while the lease is held, atomically.

        One transaction checks, on the server, that our entry still carries our session and
        has not been written since (a release marks it), then writes ``key``.

        Returns:
            The ModifyIndex of the written key.

        Raises:
            ValidationError: Bad ``key`` or ``value`` (before any request).
            LockLost: The lease is gone (locally presumed, or refused by Consul).
        """
        key = check_key(key)
        data = check_txn_value(value)
        if lease is not None and not isinstance(lease, Lease):
            raise ValidationError("lease", f"must be a Lease, got {lease!r}")
        lease = lease if lease is not None else self.lease
        entry = self._entry
        if lease is None or entry is None or entry.lease is not lease:
            raise LockLost(f"fenced write to {key!r}: the fair lock {self.prefix!r} is not held")
        write = {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(data).decode()}}
        kv = self._mgr.consul.kv
        steps = guarded_write(
            entry.key,
            lease,
            write,
            self._fence,
            self._mgr.clock.monotonic,
            self._mgr.consul.config.timeout,
            f"fenced write to {key!r}",
        )
        answer: TxnOutcome | KVEntry | None = None
        try:
            step = next(steps)
            while True:
                if isinstance(step, RunTxn):
                    answer = kv.txn(
                        step.ops, operation="kv.fenced_put", resource=key, timeout=step.timeout
                    )
                elif isinstance(step, ReadLockKey):
                    answer = kv.get(entry.key, consistency="consistent", timeout=step.timeout)
                else:
                    entry.modify_index = step.index
                    answer = None
                step = steps.send(answer)
        except StopIteration as done:
            out: TxnOutcome = done.value
        except SessionNotFound as exc:
            raise LockLost(
                f"fenced write to {key!r} refused: session {lease.session_id} is gone"
            ) from exc
        written = out.entries[-1] if out.entries else None
        return written.modify_index if written is not None else out.index

    def _fence(self, lease: Lease) -> tuple[int, float] | None:
        entry = self._entry
        if entry is None or entry.lease is not lease or self.lease is not lease:
            return None
        now = self._mgr.clock.monotonic()
        return entry.modify_index, max(0.0, entry.port.lease_deadline(entry.session_id) - now)

    # -- manager ------------------------------------------------------------------------
    def close_for_manager(self) -> None:
        """Release what is held, end a wait in progress (called by the manager's close)."""
        with self._mu:
            self._closing = True
            entry = self._entry
            state = self._state
        if entry is not None and state in (QueueState.ENQUEUING, QueueState.WAITING):
            entry.wake.cancel()
        if state is QueueState.HELD:
            with contextlib.suppress(LocksmithError):
                self.release()

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> Lease:
        lease = self.acquire()
        assert lease is not None  # a blocking acquire returns a lease or raises
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state in (QueueState.HELD, QueueState.LOST):
            self.release()


class RWLock:
    """A readers-writer lock on a fair queue: shared readers, exclusive writers, in order of
    arrival. Made by :meth:`LockManager.rw_lock`.

    A reader holds once no writer is ahead of it in the queue, so readers overlap each
    other but never a writer, and readers that arrive after a waiting writer queue behind it
    (a stream of readers never starves a writer). ``.read()`` and ``.write()`` each make a
    new :class:`FairLock` (one contender); a :meth:`LockManager.fair_lock` on the same
    prefix is a writer of the same queue.

    Attributes:
        prefix: The queue's prefix.
        value: Written to each entry (shown to observers).
    """

    def __init__(self, manager: ManagerPort, prefix: str, value: bytes | str = b"") -> None:
        self.prefix = check_key(prefix, "prefix").rstrip("/")
        if not self.prefix:
            raise ValidationError("prefix", f"must name a key prefix, got {prefix!r}")
        self.value = check_txn_value(value)
        self._mgr = manager

    def __repr__(self) -> str:
        return f"<RWLock {self.prefix!r}>"

    def read(self) -> FairLock:
        """A new reader: a shared :class:`FairLock` on this queue."""
        return FairLock(self._mgr, self.prefix, self.value, shared=True)

    def write(self) -> FairLock:
        """A new writer: an exclusive :class:`FairLock` on this queue."""
        return FairLock(self._mgr, self.prefix, self.value)


def _tree(out: TxnOutcome, directory: str) -> list[KVEntry]:
    """The entries a transaction's ``get-tree`` read (the last result for each key)."""
    found: dict[str, KVEntry] = {}
    for e in out.entries:
        if e is not None and e.key.startswith(directory):
            found[e.key] = e
    return list(found.values())


def _lost_reason(entry: _Entry, seen: KVEntry | None) -> LossReason | None:
    """What an answer of the monitor's query says about our entry (None: still ours)."""
    if seen is None or seen.create_index != entry.create_index:
        return LossReason.KEY_DELETED
    if seen.session is None:
        return LossReason.RELEASED_BY_OTHER
    if seen.session != entry.session_id:
        return LossReason.KEY_TAKEN  # pragma: no cover - a held key cannot change hands
    if seen.flags != entry_flags(entry.shared):
        return LossReason.KEY_TAKEN  # rewritten by someone with other flags, or released
    return None
