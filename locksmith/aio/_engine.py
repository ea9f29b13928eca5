"""The asyncio (anyio) front-end: carries out the state machine's commands as tasks.

:class:`AsyncEngine` runs the very :class:`~locksmith._machine.LockMachine` the threaded
engine runs, and decides nothing itself: every safety rule holds in both because it is the
machine's. There are no threads: everything happens on the manager's event loop, so
:meth:`AsyncEngine.handle` needs no lock (it never awaits).

Tasks of an engine (children of the manager's task group):

* the **caller's own task** runs its call (acquire, release, close);
* ``renewer`` renews the session (tenacity's ``AsyncRetrying``, bounded by the deadline);
* ``cleaner`` gives back keys of presumed-lost or ambiguous holds, then destroys sessions;
* ``watch-N``: one per watch slot, one blocking query at a time;
* ``callbacks`` runs the application's callbacks (functions or coroutine functions), one at
  a time; an exception in one is logged.

Each I/O command runs inside its own cancel scope: an ``Interrupt`` from the machine (close)
or a newer watch generation cancels it, also before it started. Cancelling a caller's task
is an ``AttemptAborted`` for the machine, which resolves what the call left half done.
"""

from __future__ import annotations

import base64
import inspect
import itertools
import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio
import tenacity
from anyio.abc import TaskGroup

from locksmith._backoff import Backoff
from locksmith._clock import Clock, FakeClock
from locksmith._deadline import Deadline
from locksmith._exceptions import (
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
from locksmith.aio._client import AsyncConsul

__all__ = ["AsyncEngine"]

log = get_logger("locksmith.manager")
_STDLOG = logging.getLogger("locksmith.manager")

#: Commands the engine carries out itself rather than an actor.
_EFFECTS = (Log, Notify, LeaseEnded)
#: Commands that a newer command for the same actor makes pointless.
_SUPERSEDED = frozenset({Sleep, Watch, Confirm})
#: Longest single wait: waits are re-checked against the manager's clock this often, so a
#: suspend-aware clock (CLOCK_BOOTTIME) notices a resume within it.
_SLICE = 1.0
_FAKE_SLICE = 0.01

#: A callback: a function or a coroutine function of the event.
Callback = Callable[[Any], object]


class _HasCallbacks(Protocol):
    _callbacks: list[Callback]


class _Inbox:
    """One actor's pending commands; its wake-up; the cancel scope of its current I/O."""

    __slots__ = ("io_gen", "io_scope", "items", "wake")

    def __init__(self) -> None:
        self.items: deque[Command] = deque()
        self.wake: anyio.Event | None = None
        self.io_scope: anyio.CancelScope | None = None
        self.io_gen = -1


class AsyncEngine:
    """Runs a :class:`LockMachine` as tasks with an :class:`AsyncConsul`.

    Args:
        consul: The client.
        clock: The clock the machine reads (waits re-check it every second).
        config: The machine's settings.
        spec: How to create the session.
        backoff: The renewal loop's retry policy.
    """

    def __init__(
        self,
        consul: AsyncConsul,
        clock: Clock,
        config: MachineConfig,
        spec: SessionSpec,
        backoff: Backoff,
    ) -> None:
        self.consul = consul
        self.clock = clock
        self.config = config
        self.spec = spec
        self._backoff = backoff
        self._slice = _FAKE_SLICE if isinstance(clock, FakeClock) else _SLICE
        self._ids = itertools.count(1)
        self._machine = LockMachine(config)
        self._inboxes: dict[Actor, _Inbox] = {}
        self._tg: TaskGroup | None = None
        self._locks: weakref.WeakValueDictionary[int, _HasCallbacks] = weakref.WeakValueDictionary()
        self._ended: weakref.WeakKeyDictionary[Lease, anyio.Event] = weakref.WeakKeyDictionary()
        self._hooks: weakref.WeakKeyDictionary[
            Lease, list[Callable[[LossReason | None], object]]
        ] = weakref.WeakKeyDictionary()
        self._reasons: weakref.WeakKeyDictionary[Lease, LossReason | None] = (
            weakref.WeakKeyDictionary()
        )
        self._callback_queue: deque[tuple[list[Callback], Any]] = deque()
        self._callback_wake: anyio.Event | None = None
        self._callbacks_running = False
        self.lost_callbacks: list[Callback] = []
        self.delay_callbacks: list[Callback] = []

    # ================================================================== queries
    @property
    def state(self) -> ManagerState:
        """The manager's lifecycle state."""
        return self._machine.state

    @property
    def session_id(self) -> str | None:
        """The session in use now."""
        return self._machine.session_id

    def lease_of(self, lock_id: int, key: str) -> Lease | None:
        """The lease lock ``lock_id`` holds now, or None."""
        return self._machine.lease_of(lock_id, key, self.clock.monotonic())

    def is_held(self, lease: Lease) -> bool:
        """Whether ``lease`` is held right now."""
        return self._machine.is_held(lease, self.clock.monotonic())

    def set_of(self, lock_id: int, first_key: str) -> LeaseSet | None:
        """The lease set the set ``lock_id`` holds now, or None."""
        return self._machine.set_of(lock_id, first_key, self.clock.monotonic())

    def lock_state(self, lock_id: int) -> LockState:
        """Lock ``lock_id``'s lifecycle state."""
        return self._machine.lock_state(lock_id)

    def fence(self, lease: Lease) -> tuple[int, float] | None:
        """See :meth:`LockMachine.fence`."""
        return self._machine.fence(lease, self.clock.monotonic())

    def held_leases(self) -> list[Lease]:
        """Every lease held now."""
        return self._machine.held_leases(self.clock.monotonic())

    def snapshot(self) -> ManagerSnapshot:
        """See :meth:`LockMachine.snapshot`."""
        return self._machine.snapshot(self.clock.monotonic())

    def stats(self) -> ManagerStats:
        """See :meth:`LockMachine.stats_snapshot`."""
        return self._machine.stats_snapshot(self.clock.monotonic())

    # ================================================================== registration
    def new_id(self) -> int:
        """A fresh actor or lock ID."""
        return next(self._ids)

    def register_lock(self, lock: _HasCallbacks) -> int:
        """Give ``lock`` an ID under which the machine knows it."""
        lock_id = next(self._ids)
        self._locks[lock_id] = lock
        return lock_id

    def dispatch(self, callbacks: Iterable[Callback], event: Any) -> None:
        """Run ``callbacks(event)`` on the callback task."""
        todo = list(callbacks)
        if not todo:
            return
        self._callback_queue.append((todo, event))
        if self._callback_wake is not None:
            self._callback_wake.set()
        if not self._callbacks_running and self._tg is not None:
            self._callbacks_running = True
            self._tg.start_soon(self._run_callbacks, name="locksmith-callbacks")

    def ended(self, lease: Lease) -> anyio.Event:
        """An event set when ``lease`` ends (lost, presumed lost, released)."""
        ev = self._ended.get(lease)
        if ev is None:
            ev = anyio.Event()
            if self.is_held(lease):
                self._ended[lease] = ev
            else:
                ev.set()
        return ev

    def on_end(self, lease: Lease, hook: Callable[[LossReason | None], object]) -> None:
        """Call ``hook(reason)`` once when ``lease`` ends, at once (never awaited)."""
        if self.is_held(lease):
            self._hooks.setdefault(lease, []).append(hook)
        else:
            self._run_hook(hook, self._reasons.get(lease))

    # ================================================================== lifecycle
    def attach(self, tg: TaskGroup) -> None:
        """Run background tasks in ``tg`` (the manager's task group)."""
        self._tg = tg
        self.handle(Start())

    def check_open(self) -> None:
        """Raise :class:`ManagerClosed` unless the manager may still acquire."""
        if self._tg is None:
            raise ManagerClosed(
                "the AsyncLockManager is not running: use it as `async with AsyncLockManager(...)`"
            )
        if self._machine.state in (ManagerState.CLOSING, ManagerState.CLOSED):
            raise ManagerClosed("the AsyncLockManager is closed")

    async def close(self, timeout: float) -> None:
        """Release every key, destroy the session, end the tasks: one deadline."""
        if self._machine.state is ManagerState.CLOSED:
            return
        actor = self.new_id()
        await self.call(actor, CloseRequested(actor, self.clock.monotonic() + timeout))

    # ================================================================== the loop
    def handle(self, event: Event) -> None:
        """Feed ``event`` to the machine and route the commands it returns (never awaits)."""
        effects: list[Command] = []
        for command in self._machine.handle(event, self.clock.monotonic()):
            self._route(command, effects)
        for effect in effects:
            self._effect(effect)

    def _route(self, cmd: Command, effects: list[Command]) -> None:
        if isinstance(cmd, _EFFECTS):
            effects.append(cmd)
            return
        if isinstance(cmd, Interrupt):
            inbox = self._inboxes.get(cmd.actor)
            if inbox is not None and inbox.io_scope is not None:
                inbox.io_scope.cancel()
            return
        actor: Actor = cmd.actor
        inbox = self._inboxes.get(actor)
        if inbox is None:
            if isinstance(actor, int) or isinstance(cmd, Stop) or self._tg is None:
                return  # a call that has left already, or nothing to stop
            inbox = self._inboxes[actor] = _Inbox()
            name = (
                f"locksmith-watch-{actor[1]}" if isinstance(actor, tuple) else f"locksmith-{actor}"
            )
            self._tg.start_soon(self._actor_loop, actor, inbox, name=name)
        if inbox.io_scope is not None and isinstance(cmd, Watch | Stop):
            gen = cmd.gen if isinstance(cmd, Watch) else 1 << 62
            if gen > inbox.io_gen:
                inbox.io_scope.cancel()  # a newer generation wins at once
        inbox.items.append(cmd)
        if inbox.wake is not None:
            inbox.wake.set()

    def _effect(self, cmd: Command) -> None:
        if isinstance(cmd, Log):
            if _STDLOG.isEnabledFor(cmd.level):
                log.log(cmd.level, cmd.event, **cmd.fields)
        elif isinstance(cmd, LeaseEnded):
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
                self.dispatch([*own, *self.lost_callbacks], event)
            elif isinstance(event, LockDelayEvent):
                self.dispatch(list(self.delay_callbacks), event)

    def _run_hook(
        self, hook: Callable[[LossReason | None], object], reason: LossReason | None
    ) -> None:
        try:
            hook(reason)
        except Exception:
            log.exception("lease_hook.failed", hook=getattr(hook, "__qualname__", repr(hook)))

    async def _run_callbacks(self) -> None:
        cancelled = anyio.get_cancelled_exc_class()
        try:
            while True:
                while self._callback_queue:
                    callbacks, event = self._callback_queue.popleft()
                    for callback in callbacks:
                        try:
                            result = callback(event)
                            if inspect.isawaitable(result):
                                await result
                        except cancelled:
                            raise
                        except BaseException:
                            log.exception(
                                "callback.failed",
                                callback=getattr(callback, "__qualname__", repr(callback)),
                                event_type=type(event).__name__,
                                key=getattr(event, "key", None),
                            )
                self._callback_wake = anyio.Event()
                if self._callback_queue:
                    continue
                await self._callback_wake.wait()
        finally:
            self._callbacks_running = False

    async def _take(self, inbox: _Inbox) -> Command:
        while True:
            items = inbox.items
            while items:
                cmd = items.popleft()
                if items and type(cmd) in _SUPERSEDED:
                    continue
                inbox.wake = None
                return cmd
            inbox.wake = anyio.Event()
            await inbox.wake.wait()

    async def _sleep(self, inbox: _Inbox, until: float) -> bool:
        """Wait until ``until`` on the manager's clock; True if a newer command came."""
        if inbox.items:
            return True
        inbox.wake = wake = anyio.Event()
        try:
            while True:
                left = until - self.clock.monotonic()
                if left <= 0:
                    return False
                with anyio.move_on_after(min(left, self._slice)):
                    await wake.wait()
                    return True
        finally:
            inbox.wake = None

    async def call(self, actor: int, event: Event) -> Any:
        """Run one call on the caller's task to its Finish."""
        inbox = _Inbox()
        self._inboxes[actor] = inbox
        finished = False
        try:
            self.handle(event)
            while True:
                cmd = await self._take(inbox)
                if isinstance(cmd, Finish):
                    finished = True
                    result = cmd.result
                    if isinstance(result, BaseException):
                        raise result
                    return result
                if isinstance(cmd, Sleep):
                    if not await self._sleep(inbox, cmd.until):
                        self.handle(Woke(actor, cmd.step))
                    continue
                answer = await self._execute(inbox, cmd)
                if answer is not None:
                    self.handle(answer)
        except BaseException:
            if not finished:
                # Cancelled (or a bug): the machine resolves what the call left half done.
                self.handle(AttemptAborted(actor))
            raise
        finally:
            self._inboxes.pop(actor, None)

    async def _actor_loop(self, actor: Actor, inbox: _Inbox) -> None:
        cancelled = anyio.get_cancelled_exc_class()
        try:
            while True:
                cmd = await self._take(inbox)
                if isinstance(cmd, Stop):
                    return
                try:
                    if isinstance(cmd, Sleep):
                        if not await self._sleep(inbox, cmd.until):
                            self.handle(Woke(actor, cmd.step))
                        continue
                    answer = await self._execute(inbox, cmd)
                    if answer is not None:
                        self.handle(answer)
                except cancelled:
                    raise
                except Exception:  # a background task must never die of an error
                    log.exception("engine.actor_failed", actor=str(actor))
        finally:
            self._inboxes.pop(actor, None)

    # ================================================================== I/O
    async def _execute(self, inbox: _Inbox, cmd: Command) -> Event | None:
        """Carry out one I/O command in its own cancel scope; return the answer event."""
        if isinstance(cmd, Watch):
            return await self._watch(inbox, cmd)
        scope = anyio.CancelScope()
        inbox.io_scope = scope
        try:
            with scope:
                return await self._io(cmd)
            # Cut short (close, or a newer command): an interrupted request.
            return _interrupted(cmd)
        finally:
            inbox.io_scope = None

    async def _io(self, cmd: Command) -> Event | None:
        consul = self.consul
        if isinstance(cmd, SendAcquire):
            try:
                entry = await consul.kv.lock(
                    cmd.key, cmd.value, cmd.sid, flags=cmd.flags, timeout=cmd.timeout
                )
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
            if entry is None:
                return TxnRefused(cmd.actor, cmd.step)
            return TxnApplied(cmd.actor, cmd.step, entry)
        if isinstance(cmd, SendAcquireMany):
            try:
                entries, refused = await consul.kv.lock_many(
                    cmd.keys, cmd.value, cmd.sid, timeout=cmd.timeout
                )
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
            if refused is not None or not entries:
                return TxnRefused(cmd.actor, cmd.step, refused)
            return ManyApplied(cmd.actor, cmd.step, entries)
        if isinstance(cmd, SendRelease):
            return await self._release(cmd)
        if isinstance(cmd, ReadKey):
            try:
                res = await consul.kv.get_with_meta(
                    cmd.key,
                    consistency="consistent" if cmd.consistent else "default",
                    timeout=cmd.timeout,
                )
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=False)
            return KeyRead(cmd.actor, cmd.step, res.value, res.meta.index)
        if isinstance(cmd, ReadHolder):
            try:
                info = await consul.sessions.info(cmd.sid, timeout=cmd.timeout)
            except LocksmithError:
                info = None
            return HolderRead(cmd.actor, cmd.step, cmd.sid, info.lock_delay if info else None)
        if isinstance(cmd, CreateSession):
            spec = self.spec
            started = self.clock.monotonic()
            try:
                sid = await consul.sessions.create(
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
        if isinstance(cmd, AdoptSession):
            started = self.clock.monotonic()
            try:
                s = await consul.sessions.renew(cmd.sid, timeout=cmd.timeout)
            except LocksmithError as exc:
                return RequestFailed(cmd.actor, cmd.step, exc, sent=False)
            return SessionCreated(
                cmd.actor, cmd.step, cmd.sid, started, s.ttl, s.lock_delay, owned=False
            )
        if isinstance(cmd, Destroy):
            try:
                await consul.sessions.destroy(cmd.sid, timeout=cmd.timeout)
            except LocksmithError as exc:
                return DestroyAnswered(cmd.actor, cmd.step, cmd.sid, exc)
            return DestroyAnswered(cmd.actor, cmd.step, cmd.sid)
        if isinstance(cmd, Renew):
            return await self._renew(cmd)
        if isinstance(cmd, Confirm):
            return await self._confirm(cmd)
        raise AssertionError(f"no executor for {cmd!r}")  # pragma: no cover

    async def _release(self, cmd: SendRelease) -> Event:
        kv = self.consul.kv
        deadline = Deadline.after(self.clock.monotonic(), cmd.timeout)
        cap = self.consul.config.timeout
        outcomes: list[ReleaseOutcome] = []
        try:
            if len(cmd.items) > 1:
                ops = [
                    {
                        "KV": {
                            "Verb": "unlock",
                            "Key": it.key,
                            "Value": base64.b64encode(it.value).decode("ascii"),
                            "Flags": it.flags,
                            "Session": it.sid,
                        }
                    }
                    for it in cmd.items
                ]
                out = await kv.txn(
                    ops,
                    operation="kv.release",
                    resource=cmd.items[0].key,
                    timeout=deadline.budget(self.clock.monotonic(), cap),
                )
                if out.ok:
                    done: list[ReleaseOutcome] = ["released"] * len(cmd.items)
                    return ReleaseAnswered(cmd.actor, cmd.step, tuple(done))
            for it in cmd.items:
                try:
                    ok = await kv.put(
                        it.key,
                        it.value,
                        release=it.sid,
                        flags=it.flags,
                        timeout=deadline.budget(self.clock.monotonic(), cap),
                    )
                except SessionNotFound:
                    outcomes.append("session_gone")
                    continue
                outcomes.append("released" if ok else "not_held")
        except LocksmithError as exc:
            if outcomes:
                return ReleaseAnswered(cmd.actor, cmd.step, tuple(outcomes))
            return RequestFailed(cmd.actor, cmd.step, exc, sent=True)
        return ReleaseAnswered(cmd.actor, cmd.step, tuple(outcomes))

    async def _renew(self, cmd: Renew) -> Event:
        clock = self.clock
        until = cmd.until
        cap = self.consul.config.timeout
        inbox = self._inboxes.get(cmd.actor)

        async def attempt() -> tuple[float, float | None]:
            now = clock.monotonic()
            if now >= until:
                raise _DeadlinePassed
            session = await self.consul.sessions.renew(
                cmd.sid, timeout=Deadline(until).budget(now, cap)
            )
            return now, session.ttl

        def stop(state: tenacity.RetryCallState) -> bool:
            newer = inbox is not None and bool(inbox.items)
            return newer or clock.monotonic() >= until

        async def sleep(seconds: float) -> None:
            await anyio.sleep(max(0.0, min(seconds, until - clock.monotonic())))

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(ConsulUnavailable),
            wait=self._backoff,
            stop=stop,
            sleep=sleep,
            reraise=True,
        )
        try:
            started: float
            ttl: float | None
            started, ttl = await retrying(attempt)
        except SessionNotFound:
            return RenewAnswered(cmd.sid, None, gone=True)
        except (LocksmithError, _DeadlinePassed) as exc:
            return RenewAnswered(cmd.sid, None, error=exc)
        return RenewAnswered(cmd.sid, started, ttl)

    async def _watch(self, inbox: _Inbox, cmd: Watch) -> Event | None:
        target = cmd.target
        if target is None:
            return None
        if cmd.not_before > self.clock.monotonic() and await self._sleep(inbox, cmd.not_before):
            return None
        if inbox.items:
            return None  # superseded before the query went out: never send it
        scope = anyio.CancelScope()
        inbox.io_scope, inbox.io_gen = scope, cmd.gen
        kv = self.consul.kv
        index = cmd.index or None
        wait = cmd.wait if cmd.index else None
        try:
            with scope:
                try:
                    entries: tuple[KVEntry, ...]
                    if target.prefix:
                        res = await kv.list_with_meta(target.path, index=index, wait=wait)
                        entries = tuple(res.value)
                        idx = res.meta.index
                    else:
                        one = await kv.get_with_meta(target.path, index=index, wait=wait)
                        entries = (one.value,) if one.value is not None else ()
                        idx = one.meta.index
                except Exception as exc:  # noqa: BLE001 - any failure: the slot retries
                    return WatchFailed(cmd.slot, cmd.gen, exc)
                return WatchSaw(cmd.slot, cmd.gen, entries, idx)
            return WatchFailed(cmd.slot, cmd.gen, ConsulUnavailable("watch cut short"))
        finally:
            inbox.io_scope, inbox.io_gen = None, -1

    async def _confirm(self, cmd: Confirm) -> Event:
        kv = self.consul.kv
        started = self.clock.monotonic()
        alive: bool | None
        ttl = None
        try:
            ttl = (await self.consul.sessions.renew(cmd.sid, timeout=cmd.timeout)).ttl
            alive = True
        except SessionNotFound:
            return Confirmed(cmd.slot, cmd.gen, cmd.sid, {}, False, started)
        except Exception:  # noqa: BLE001 - undecided
            alive = None
        entries: dict[str, KVEntry | None] = {}
        try:
            for key in cmd.keys:
                entries[key] = await kv.get(key, consistency="consistent", timeout=cmd.timeout)
        except Exception:  # noqa: BLE001 - undecided
            entries = {}
        return Confirmed(cmd.slot, cmd.gen, cmd.sid, entries, alive, started, ttl)


class _DeadlinePassed(Exception):  # noqa: N818 - internal control flow
    """The lease deadline passed before a renewal could be sent."""


def _interrupted(cmd: Command) -> Event | None:
    """The answer of an I/O command that was cut short."""
    err = ConsulUnavailable("request interrupted (the manager closes, or a newer command)")
    if isinstance(cmd, Renew):
        return RenewAnswered(cmd.sid, None, error=err)
    if isinstance(cmd, Confirm):
        return Confirmed(cmd.slot, cmd.gen, cmd.sid, {}, None, 0.0)
    if isinstance(cmd, Destroy):
        return DestroyAnswered(cmd.actor, cmd.step, cmd.sid, err)
    if isinstance(cmd, ReadHolder):
        return HolderRead(cmd.actor, cmd.step, cmd.sid, None)
    actor = getattr(cmd, "actor", None)
    step = getattr(cmd, "step", None)
    if actor is None or step is None:
        return None
    return RequestFailed(actor, step, err, sent=True)
