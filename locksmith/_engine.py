"""The threaded front-end: carries out the state machine's commands on threads.

:class:`Engine` owns one :class:`~locksmith._machine.LockMachine` and makes no decision of
its own. Every event goes through :meth:`Engine.handle`, which runs the machine under one
mutex and routes the commands it returns to their actors' inboxes; the I/O then happens
outside the mutex on the actor's thread, and its answer goes back through ``handle``.

Threads of an engine (see ``docs/internals.md``):

* the **caller's thread** runs its own call (acquire, release, close): no hand-over on the
  fast path;
* ``locksmith-renewer`` renews the session (a tenacity loop bounded by the lease deadline)
  and wakes at the deadline;
* ``locksmith-cleaner`` gives back keys of presumed-lost or ambiguous holds, in
  transactions of up to 64, then destroys their sessions;
* ``locksmith-watch-N``: one per watch slot (at most the watch budget), one blocking query
  each;
* ``locksmith-callbacks`` runs the application's callbacks, one at a time; an exception
  (any BaseException) in a callback is logged and the thread lives on.

What a recipe must know at once (its lease ended) never waits for a callback: lease-end
signals (:meth:`Engine.ended`, :meth:`Engine.on_end`) fire on the thread that learned of
the end, at the lease deadline at the latest. Nothing runs under the mutex but the
machine itself.

After ``os.fork()`` the child's engines start afresh: no holds, no threads, no session (the
parent's session stays the parent's); the child's first acquire creates its own. At
interpreter exit, running engines of this process are closed (keys released, session
destroyed) so that other clients do not wait out TTLs.
"""

from __future__ import annotations

import atexit
import base64
import itertools
import logging
import math
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import tenacity

from locksmith._backoff import Backoff
from locksmith._cancel import Cancel
from locksmith._client import Consul
from locksmith._clock import Clock
from locksmith._deadline import Deadline
from locksmith._exceptions import (
    Cancelled,
    ConsulUnavailable,
    LocksmithError,
    ManagerClosed,
    SessionNotFound,
)
from locksmith._lease import Lease, LeaseSet, LockDelayEvent, LossEvent
from locksmith._log import get_logger
from locksmith._machine import LockMachine, MachineConfig, ManagerSnapshot
from locksmith._models import KVEntry
from locksmith._protocol import (
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
    LeaseEnded,
    Log,
    ManyApplied,
    Notify,
    ReadHolder,
    ReadKey,
    ReleaseAnswered,
    ReleaseOutcome,
    Renew,
    RenewAnswered,
    RequestFailed,
    SendAcquire,
    SendAcquireMany,
    SendRelease,
    SessionCreated,
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
from locksmith._settings import SessionSpec
from locksmith._states import LockState, LossReason, ManagerState
from locksmith._stats import ManagerStats

__all__ = ["Engine"]

log = get_logger("locksmith.manager")
_STDLOG = logging.getLogger("locksmith.manager")

#: Seconds allowed to close running managers at interpreter exit.
EXIT_CLOSE_TIMEOUT = 5.0

_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


class _HasCallbacks(Protocol):
    _callbacks: list[Callable[[LossEvent], object]]


class _Inbox:
    """One actor's pending commands, and what it is doing right now.

    ``ready`` is set only while the actor waits (``waiting``): routing a command to a busy
    actor costs a deque append, nothing more.
    """

    __slots__ = ("io_cancel", "io_gen", "io_ident", "items", "ready", "waiting")

    def __init__(self) -> None:
        self.items: deque[Command] = deque()
        self.ready = threading.Event()
        self.waiting = False
        self.io_ident: int | None = None
        #: A watch slot's query: its generation and its cancellation (sticky: a cancel
        #: that comes before the query is sent stops it from being sent).
        self.io_gen = -1
        self.io_cancel: Cancel | None = None


@dataclass(frozen=True, slots=True)
class _CutShort:
    """An effect: interrupt the request thread ``ident`` is waiting in, or cancel a watch."""

    ident: int
    cancel: Cancel | None = None


#: Commands the engine carries out itself, outside the mutex, rather than an actor.
_EFFECTS = (Log, Notify, LeaseEnded)

#: Commands that a newer command for the same actor makes pointless.
_SUPERSEDED = frozenset({Sleep, Watch, Confirm})


class _CallbackRunner:
    """Runs the application's callbacks on one thread; survives anything they raise."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[Callable[[Any], object]], Any] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, callbacks: list[Callable[[Any], object]], event: Any) -> None:
        if not callbacks:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="locksmith-callbacks", daemon=True
                )
                self._thread.start()
        self._queue.put((callbacks, event))

    def stop(self, timeout: float) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        if thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            callbacks, event = item
            for callback in callbacks:
                try:
                    callback(event)
                except BaseException:
                    log.exception(
                        "callback.failed",
                        callback=getattr(callback, "__qualname__", repr(callback)),
                        event_type=type(event).__name__,
                        key=getattr(event, "key", None),
                    )


class Engine:
    """Runs a :class:`LockMachine` with threads and a :class:`~locksmith.Consul` client.

    Args:
        consul: The client.
        clock: The clock (its waits are the only way threads sleep).
        config: The machine's settings.
        spec: How to create the session.
        backoff: The retry policy of the renewal loop (tenacity's ``wait``).
    """

    def __init__(
        self,
        consul: Consul,
        clock: Clock,
        config: MachineConfig,
        spec: SessionSpec,
        backoff: Backoff | None = None,
    ) -> None:
        self.consul = consul
        self.clock = clock
        self.config = config
        self.spec = spec
        self._backoff = backoff or config.retry
        self._ids = itertools.count(1)
        self._init_state()
        self.lost_callbacks: list[Callable[[LossEvent], object]] = []
        self.delay_callbacks: list[Callable[[LockDelayEvent], object]] = []
        _ENGINES.add(self)

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._mu = threading.Lock()
        self._machine = LockMachine(self.config)
        self._inboxes: dict[Actor, _Inbox] = {}
        self._local = threading.local()
        self._threads: dict[Actor, threading.Thread] = {}
        self._callbacks = _CallbackRunner()
        self._locks: weakref.WeakValueDictionary[int, _HasCallbacks] = weakref.WeakValueDictionary()
        self._ended: weakref.WeakKeyDictionary[Lease, threading.Event] = weakref.WeakKeyDictionary()
        self._hooks: weakref.WeakKeyDictionary[
            Lease, list[Callable[[LossReason | None], object]]
        ] = weakref.WeakKeyDictionary()
        #: Why leases ended (None: released), for hooks registered after the end.
        self._reasons: weakref.WeakKeyDictionary[Lease, LossReason | None] = (
            weakref.WeakKeyDictionary()
        )

    # ================================================================== queries
    @property
    def state(self) -> ManagerState:
        """The manager's lifecycle state."""
        return self._machine.state

    @property
    def session_id(self) -> str | None:
        """The session in use now."""
        with self._mu:
            return self._machine.session_id

    def is_held(self, lease: Lease) -> bool:
        """Whether ``lease`` is held right now."""
        with self._mu:
            return self._machine.is_held(lease, self.clock.monotonic())

    def lease_of(self, lock_id: int, key: str) -> Lease | None:
        """The lease lock ``lock_id`` holds now, or None."""
        with self._mu:
            return self._machine.lease_of(lock_id, key, self.clock.monotonic())

    def set_of(self, lock_id: int, first_key: str) -> LeaseSet | None:
        """The lease set the set ``lock_id`` holds now, or None."""
        with self._mu:
            return self._machine.set_of(lock_id, first_key, self.clock.monotonic())

    def lease_deadline(self, session_id: str) -> float:
        """The lease deadline of ``session_id`` if it is the session in use, else -inf."""
        with self._mu:
            m = self._machine
            return m.lease_deadline() if m.session_id == session_id else -math.inf

    def lock_state(self, lock_id: int) -> LockState:
        """Lock ``lock_id``'s lifecycle state."""
        with self._mu:
            return self._machine.lock_state(lock_id)

    def fence(self, lease: Lease) -> tuple[int, float] | None:
        """See :meth:`LockMachine.fence`."""
        with self._mu:
            return self._machine.fence(lease, self.clock.monotonic())

    def held_leases(self) -> list[Lease]:
        """Every lease held now."""
        with self._mu:
            return self._machine.held_leases(self.clock.monotonic())

    def snapshot(self) -> ManagerSnapshot:
        """See :meth:`LockMachine.snapshot`."""
        with self._mu:
            return self._machine.snapshot(self.clock.monotonic())

    def stats(self) -> ManagerStats:
        """See :meth:`LockMachine.stats_snapshot`."""
        with self._mu:
            return self._machine.stats_snapshot(self.clock.monotonic())

    def machine_view(self) -> LockMachine:
        """The machine (for tests and diagnostics: read it, never change it)."""
        return self._machine

    # ================================================================== registration
    def new_id(self) -> int:
        """A fresh actor or lock ID."""
        return next(self._ids)

    def register_lock(self, lock: _HasCallbacks) -> int:
        """Give ``lock`` an ID under which the machine knows it."""
        lock_id = next(self._ids)
        self._locks[lock_id] = lock
        return lock_id

    def dispatch(self, callbacks: Iterable[Callable[[Any], object]], event: Any) -> None:
        """Run ``callbacks(event)`` on the callback thread."""
        self._callbacks.submit(list(callbacks), event)

    def ended(self, lease: Lease) -> threading.Event:
        """An event set when ``lease`` ends: lost, presumed lost (at its deadline at the
        latest), or released. Already set if it has ended."""
        with self._mu:
            ev = self._ended.get(lease)
            if ev is None:
                ev = threading.Event()
                if self._machine.is_held(lease, self.clock.monotonic()):
                    self._ended[lease] = ev
                else:
                    ev.set()
            return ev

    def on_end(self, lease: Lease, hook: Callable[[LossReason | None], object]) -> None:
        """Call ``hook(reason)`` once when ``lease`` ends (``reason`` None: released), on the
        thread that learns of it. For recipes: keep it short, never block."""
        with self._mu:
            held = self._machine.is_held(lease, self.clock.monotonic())
            if held:
                self._hooks.setdefault(lease, []).append(hook)
            reason = self._reasons.get(lease)  # (None: it was released)
        if not held:
            self._run_hook(hook, reason)

    # ================================================================== the loop
    def handle(self, event: Event) -> None:
        """Feed ``event`` to the machine and route the commands it returns."""
        effects: list[Command | _CutShort] = []
        with self._mu:
            for command in self._machine.handle(event, self.clock.monotonic()):
                self._route(command, effects)
        for effect in effects:
            self._effect(effect)

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # pragma: no cover - after_in_child reset it
            self._init_state()

    def _route(self, cmd: Command, effects: list[Command | _CutShort]) -> None:
        """Put ``cmd`` in its actor's inbox, or keep it as an effect (under the mutex)."""
        if isinstance(cmd, _EFFECTS):
            effects.append(cmd)
            return
        kind = type(cmd)
        if isinstance(cmd, Interrupt):
            inbox = self._inboxes.get(cmd.actor)
            if inbox is not None and inbox.io_ident is not None:
                effects.append(_CutShort(inbox.io_ident))
            return
        actor: Actor = cmd.actor
        inbox = self._inboxes.get(actor)
        if inbox is None:
            if isinstance(actor, int):
                return  # a call that has left already
            if isinstance(cmd, Stop):
                return
            inbox = self._inboxes[actor] = _Inbox()
            self._start_actor(actor, inbox)
        if inbox.io_cancel is not None and (kind is Watch or kind is Stop):
            gen = cmd.gen if isinstance(cmd, Watch) else 1 << 62
            if gen > inbox.io_gen:
                # A newer generation wins at once, even over a query not yet sent.
                effects.append(_CutShort(0, inbox.io_cancel))
        inbox.items.append(cmd)
        if inbox.waiting:
            inbox.ready.set()

    def _start_actor(self, actor: Actor, inbox: _Inbox) -> None:
        name = f"locksmith-watch-{actor[1]}" if isinstance(actor, tuple) else f"locksmith-{actor}"
        thread = threading.Thread(target=self._actor_loop, args=(actor, inbox), name=name)
        thread.daemon = True
        self._threads[actor] = thread
        thread.start()

    def _effect(self, cmd: Command | _CutShort) -> None:
        if isinstance(cmd, Log):
            if _STDLOG.isEnabledFor(cmd.level):  # one level check when nobody listens
                log.log(cmd.level, cmd.event, **cmd.fields)
        elif isinstance(cmd, LeaseEnded):
            if cmd.reason is None and not self._ended and not self._hooks:
                return  # a release nobody waits on (the fast path): nothing to signal
            with self._mu:
                ev = self._ended.pop(cmd.lease, None)
                hooks = self._hooks.pop(cmd.lease, [])
                if cmd.reason is not None:
                    self._reasons[cmd.lease] = cmd.reason
            if ev is not None:
                ev.set()
            for hook in hooks:
                self._run_hook(hook, cmd.reason)
        elif isinstance(cmd, Notify):
            event = cmd.event
            lock = self._locks.get(cmd.lock_id)
            if isinstance(event, LossEvent):
                own = list(lock._callbacks) if lock is not None else []
                self._callbacks.submit([*own, *self.lost_callbacks], event)
            else:
                self._callbacks.submit(list(self.delay_callbacks), event)
        elif isinstance(cmd, _CutShort):
            if cmd.cancel is not None:
                cmd.cancel.cancel()
                return
            try:
                self.consul._interrupt(cmd.ident)
            except LocksmithError as exc:  # pragma: no cover - best effort
                log.debug("interrupt.failed", error=str(exc))

    def _run_hook(
        self, hook: Callable[[LossReason | None], object], reason: LossReason | None
    ) -> None:
        try:
            hook(reason)
        except Exception:
            log.exception("lease_hook.failed", hook=getattr(hook, "__qualname__", repr(hook)))

    def _take(self, inbox: _Inbox, cancel: Cancel | None = None) -> Command | None:
        """The actor's next command (superseded sleeps and watches are skipped); None when
        ``cancel`` is set first."""
        while True:
            with self._mu:
                inbox.waiting = False
                items = inbox.items
                while items:
                    cmd = items.popleft()
                    if items and type(cmd) in _SUPERSEDED:
                        continue
                    return cmd
                inbox.waiting = True
                inbox.ready.clear()
            if cancel is not None and cancel.cancelled:
                return None
            inbox.ready.wait()

    def _sleep(self, inbox: _Inbox, until: float, cancel: Cancel | None = None) -> bool:
        """Wait until ``until``; True if a newer command (or ``cancel``) cut the wait short.

        ``cancel`` wakes the wait by setting ``inbox.ready``, so it is looked at after the
        event is cleared: a cancel that came just before would otherwise be wiped out.
        """
        with self._mu:
            if inbox.items:
                return True
            inbox.waiting = True
            inbox.ready.clear()
        if cancel is not None and cancel.cancelled:
            inbox.waiting = False
            return True
        try:
            return self.clock.wait_until(until, inbox.ready)
        finally:
            inbox.waiting = False

    def call(self, actor: int, event: Event, cancel: Cancel | None = None) -> Any:
        """Run one call (acquire, release, close) on the caller's thread to its Finish.

        With ``cancel``: when it is set, the call stops waiting and raises
        :class:`Cancelled` (the machine gives back what the call took), unless its answer
        had already come.
        """
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled before it started")
        inbox: _Inbox | None = getattr(self._local, "inbox", None)
        if inbox is None or inbox.items:
            inbox = self._local.inbox = _Inbox()  # one per thread, reused call after call
        with self._mu:
            self._inboxes[actor] = inbox
        if cancel is not None:
            cancel.link(inbox.ready)
        finished = False
        try:
            self.handle(event)
            while True:
                cmd = self._take(inbox, cancel)
                if cmd is None:
                    raise Cancelled("cancelled")
                if isinstance(cmd, Finish):
                    finished = True
                    result = cmd.result
                    if isinstance(result, BaseException):
                        raise result
                    return result
                if isinstance(cmd, Sleep):
                    if not self._sleep(inbox, cmd.until, cancel):
                        self.handle(Woke(actor, cmd.step))
                    continue
                answer = self._execute(inbox, actor, cmd)
                if answer is not None:
                    self.handle(answer)
        except BaseException:
            if not finished:
                # Ctrl-C, a cancellation, or a bug: the machine resolves what the call left
                # half done (an acquire that may have been applied is given back).
                self.handle(AttemptAborted(actor))
            raise
        finally:
            if cancel is not None:
                cancel.unlink(inbox.ready)
            with self._mu:
                self._inboxes.pop(actor, None)

    def _actor_loop(self, actor: Actor, inbox: _Inbox) -> None:
        """A background actor: carry out its commands until Stop; survive every error."""
        while True:
            cmd = self._take(inbox)
            if cmd is None or isinstance(cmd, Stop):  # (None: only with a cancel)
                return
            try:
                if isinstance(cmd, Sleep):
                    if not self._sleep(inbox, cmd.until):
                        self.handle(Woke(actor, cmd.step))
                    continue
                answer = self._execute(inbox, actor, cmd)
                if answer is not None:
                    self.handle(answer)
            except Exception:
                log.exception("engine.actor_failed", actor=str(actor))

    # ================================================================== I/O
    def _execute(self, inbox: _Inbox, actor: Actor, cmd: Command) -> Event | None:
        """Carry out one I/O command; return the answer event."""
        inbox.io_ident = threading.get_ident()
        try:
            return self._dispatch_io(inbox, actor, cmd)
        finally:
            inbox.io_ident = None
            inbox.io_gen = -1
            inbox.io_cancel = None

    def _dispatch_io(self, inbox: _Inbox, actor: Actor, cmd: Command) -> Event | None:
        consul = self.consul
        if isinstance(cmd, SendAcquire):
            try:
                entry = consul.kv.lock(
                    cmd.key, cmd.value, cmd.sid, flags=cmd.flags, timeout=cmd.timeout
                )
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
            if entry is None:
                return TxnRefused(cmd.actor, cmd.step)
            return TxnApplied(cmd.actor, cmd.step, entry)
        if isinstance(cmd, SendAcquireMany):
            try:
                entries, refused = consul.kv.lock_many(
                    cmd.keys, cmd.value, cmd.sid, timeout=cmd.timeout
                )
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
            if refused is not None or not entries:
                return TxnRefused(cmd.actor, cmd.step, refused)
            return ManyApplied(cmd.actor, cmd.step, entries)
        if isinstance(cmd, SendRelease):
            return self._release(cmd)
        if isinstance(cmd, ReadKey):
            try:
                res = consul.kv.get_with_meta(
                    cmd.key,
                    consistency="consistent" if cmd.consistent else "default",
                    timeout=cmd.timeout,
                )
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=False)
            return KeyRead(cmd.actor, cmd.step, res.value, res.meta.index)
        if isinstance(cmd, ReadHolder):
            try:
                info = consul.sessions.info(cmd.sid, timeout=cmd.timeout)
            except LocksmithError:
                info = None
            return HolderRead(cmd.actor, cmd.step, cmd.sid, info.lock_delay if info else None)
        if isinstance(cmd, CreateSession):
            return self._create(cmd)
        if isinstance(cmd, AdoptSession):
            started = self.clock.monotonic()
            try:
                s = consul.sessions.renew(cmd.sid, timeout=cmd.timeout)
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=False)
            return SessionCreated(
                cmd.actor, cmd.step, cmd.sid, started, s.ttl, s.lock_delay, owned=False
            )
        if isinstance(cmd, Destroy):
            try:
                consul.sessions.destroy(cmd.sid, timeout=cmd.timeout)
            except LocksmithError as exc:
                return DestroyAnswered(cmd.actor, cmd.step, cmd.sid, exc)
            return DestroyAnswered(cmd.actor, cmd.step, cmd.sid)
        if isinstance(cmd, Renew):
            return self._renew(inbox, cmd)
        if isinstance(cmd, Watch):
            return self._watch(inbox, cmd)
        if isinstance(cmd, Confirm):
            return self._confirm(cmd)
        raise AssertionError(f"no executor for {cmd!r}")  # pragma: no cover

    def _create(self, cmd: CreateSession) -> Event:
        spec = self.spec
        started = self.clock.monotonic()
        try:
            sid = self.consul.sessions.create(
                name=spec.name,
                node=spec.node,
                node_checks=spec.node_checks,
                service_checks=spec.service_checks,
                lock_delay=spec.lock_delay,
                behavior=spec.behavior,
                ttl=spec.ttl if spec.ttl is not None else 0,
                timeout=cmd.timeout,
            )
        except LocksmithError as exc:
            return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
        return SessionCreated(
            cmd.actor, cmd.step, sid, started, spec.ttl, spec.lock_delay, owned=True
        )

    def _release(self, cmd: SendRelease) -> Event:
        kv = self.consul.kv
        deadline = Deadline.after(self.clock.monotonic(), cmd.timeout)
        timeout = self.consul.config.timeout
        outcomes: list[ReleaseOutcome] = []
        try:
            if len(cmd.items) > 1:
                ops = [
                    {
                        "KV": {
                            "Verb": "unlock",
                            "Key": it.key,
                            "Value": _b64(it.value),
                            "Flags": it.flags,
                            "Session": it.sid,
                        }
                    }
                    for it in cmd.items
                ]
                out = kv.txn(
                    ops,
                    operation="kv.release",
                    resource=cmd.items[0].key,
                    timeout=deadline.budget(self.clock.monotonic(), timeout),
                )
                if out.ok:
                    done: list[ReleaseOutcome] = ["released"] * len(cmd.items)
                    return ReleaseAnswered(cmd.actor, cmd.step, tuple(done))
            # One key, or a batch of which some key was not held: release them one by one
            # (``?release=`` answers each: true, false, or an invalid session).
            for it in cmd.items:
                try:
                    ok = kv.put(
                        it.key,
                        it.value,
                        release=it.sid,
                        flags=it.flags,
                        timeout=deadline.budget(self.clock.monotonic(), timeout),
                    )
                except SessionNotFound:
                    outcomes.append("session_gone")
                    continue
                outcomes.append("released" if ok else "not_held")
        except LocksmithError as exc:
            if outcomes:
                # What was answered stands; the rest is tried again.
                return ReleaseAnswered(cmd.actor, cmd.step, tuple(outcomes))
            return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
        return ReleaseAnswered(cmd.actor, cmd.step, tuple(outcomes))

    def _renew(self, inbox: _Inbox, cmd: Renew) -> Event:
        clock = self.clock
        until = cmd.until
        timeout = self.consul.config.timeout
        wake = inbox.ready  # a newer command (a new session, Stop) ends the retries

        def attempt() -> tuple[float, float | None]:
            now = clock.monotonic()
            if now >= until:
                raise _DeadlinePassed
            session = self.consul.sessions.renew(
                cmd.sid, timeout=Deadline(until).budget(now, timeout)
            )
            return now, session.ttl

        def stop(state: tenacity.RetryCallState) -> bool:
            return wake.is_set() or clock.monotonic() >= until

        def sleep(seconds: float) -> None:
            clock.wait_until(min(clock.monotonic() + seconds, until), wake)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.debug(
                "session.renew_retry",
                session_id=cmd.sid,
                attempt=state.attempt_number,
                error=str(exc),
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ConsulUnavailable),
            wait=self._backoff,
            stop=stop,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            started, ttl = retrying(attempt)
        except SessionNotFound:
            return RenewAnswered(cmd.sid, None, gone=True)
        except (LocksmithError, _DeadlinePassed) as exc:
            return RenewAnswered(cmd.sid, None, error=exc)
        return RenewAnswered(cmd.sid, started, ttl)

    def _watch(self, inbox: _Inbox, cmd: Watch) -> Event | None:
        target = cmd.target
        if target is None:
            return None  # idle until the next command
        if cmd.not_before > self.clock.monotonic() and self._sleep(inbox, cmd.not_before):
            return None  # a newer command came meanwhile
        cancel = Cancel()
        with self._mu:
            if inbox.items:
                return None  # superseded before the query went out: never send it
            inbox.io_gen = cmd.gen
            inbox.io_cancel = cancel
        kv = self.consul.kv
        index = cmd.index or None
        wait = cmd.wait if cmd.index else None
        try:
            entries: tuple[KVEntry, ...]
            if target.prefix:
                res = kv.list_with_meta(target.path, index=index, wait=wait, cancel=cancel)
                entries = tuple(res.value)
                idx = res.meta.index
            else:
                one = kv.get_with_meta(target.path, index=index, wait=wait, cancel=cancel)
                entries = (one.value,) if one.value is not None else ()
                idx = one.meta.index
        except Exception as exc:  # noqa: BLE001 - any failure: the slot retries, never dies
            return WatchFailed(cmd.slot, cmd.gen, exc)
        return WatchSaw(cmd.slot, cmd.gen, entries, idx)

    def _confirm(self, cmd: Confirm) -> Event:
        kv = self.consul.kv
        started = self.clock.monotonic()
        alive: bool | None
        ttl = None
        try:
            ttl = self.consul.sessions.renew(cmd.sid, timeout=cmd.timeout).ttl
            alive = True
        except SessionNotFound:
            return Confirmed(cmd.slot, cmd.gen, cmd.sid, {}, False, started)
        except Exception:  # noqa: BLE001 - undecided
            alive = None
        entries: dict[str, KVEntry | None] = {}
        try:
            for key in cmd.keys:
                entries[key] = kv.get(key, consistency="consistent", timeout=cmd.timeout)
        except Exception:  # noqa: BLE001 - undecided
            entries = {}
        return Confirmed(cmd.slot, cmd.gen, cmd.sid, entries, alive, started, ttl)

    # ================================================================== lifecycle
    def start(self) -> None:
        """Mark the manager running (threads start when first needed)."""
        self.handle(Start())

    def close(self, timeout: float) -> None:
        """Release every key, destroy the session, stop the threads: one deadline."""
        self._check_pid()
        if self._machine.state is ManagerState.CLOSED:
            return
        deadline = self.clock.monotonic() + timeout
        actor = self.new_id()
        self.call(actor, CloseRequested(actor, deadline))
        with self._mu:
            threads = [t for t in self._threads.values() if t is not threading.current_thread()]
            self._threads.clear()
        for t in threads:
            t.join(max(0.0, deadline - self.clock.monotonic()))
        self._callbacks.stop(max(0.0, deadline - self.clock.monotonic()))

    def _after_fork_in_child(self) -> None:
        closed = self._machine.state in (ManagerState.CLOSING, ManagerState.CLOSED)
        self._init_state()
        if closed:
            self._machine.state = ManagerState.CLOSED

    def check_open(self) -> None:
        """Raise :class:`ManagerClosed` unless the manager may still acquire."""
        if self._machine.state in (ManagerState.CLOSING, ManagerState.CLOSED):
            raise ManagerClosed("the LockManager is closed")


class _DeadlinePassed(Exception):  # noqa: N818 - internal control flow
    """The lease deadline passed before a renewal could be sent."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _reinit_after_fork() -> None:
    for engine in list(_ENGINES):
        engine._after_fork_in_child()


def _close_at_exit() -> None:
    pid = os.getpid()
    for engine in list(_ENGINES):
        if engine._pid == pid and engine._machine.state is ManagerState.RUNNING:
            try:
                engine.close(EXIT_CLOSE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - best effort at exit
                log.warning("manager.exit_close_failed", error=str(exc))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
atexit.register(_close_at_exit)
