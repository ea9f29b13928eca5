"""AsyncLockManager: the asyncio twin of :class:`~locksmith.LockManager`.

Same settings (validated by the same code), same state machine, same Consul layout, fencing
tokens and log events: an async holder, a threaded holder and ``consul lock`` exclude each
other on one key. No threads: renewals, watches and callbacks are tasks in the manager's
task group, so the manager must be entered (``async with AsyncLockManager(...) as mgr``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from locksmith._clock import Clock
from locksmith._compat import CONSUL_LOCK_FLAGS, lock_key
from locksmith._deadline import Deadline
from locksmith._durations import Duration
from locksmith._exceptions import ValidationError
from locksmith._lease import Lease
from locksmith._machine import ManagerSnapshot
from locksmith._protocol import SessionWanted
from locksmith._settings import ManagerSettings, check_keys
from locksmith._states import ManagerState
from locksmith._stats import ManagerStats
from locksmith._validate import Behavior, check_callback, check_key, check_timeout, check_txn_value
from locksmith.aio._client import AsyncConsul
from locksmith.aio._election import AsyncElection
from locksmith.aio._engine import AsyncEngine, Callback
from locksmith.aio._lock import AsyncLock
from locksmith.aio._lockset import AsyncLockSet
from locksmith.aio._registration import AsyncRegistration
from locksmith.aio._semaphore import AsyncSemaphore
from locksmith.aio._singleton import AsyncSingletonGuard

__all__ = ["AsyncLockManager"]


class _Closable(Protocol):
    async def close_for_manager(self) -> None: ...


class AsyncLockManager:
    """Creates a session, acquires KV keys with it, renews it, and reports losses: async.

    Use it as ``async with AsyncLockManager(...) as mgr:``; leaving the block releases every
    held key, destroys the session and ends the manager's tasks. The arguments are those of
    :class:`~locksmith.LockManager` (``consul`` is an :class:`AsyncConsul`).

    Raises:
        ValidationError: An argument is out of range (no I/O is done).
    """

    def __init__(
        self,
        consul: AsyncConsul | None = None,
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
        unsafe_no_ttl: bool = False,
        watch_budget: int = 4,
        rng: Callable[[], float] | None = None,
    ) -> None:
        if consul is not None and not isinstance(consul, AsyncConsul):
            raise ValidationError(
                "consul", f"must be a locksmith.aio.AsyncConsul or None, got {consul!r}"
            )
        settings = ManagerSettings.resolve(
            ttl=ttl,
            lock_delay=lock_delay,
            behavior=behavior,
            name=name,
            checks=checks,
            service_checks=service_checks,
            node=node,
            session_id=session_id,
            renew_fraction=renew_fraction,
            clock=clock,
            unsafe_no_ttl=unsafe_no_ttl,
            watch_budget=watch_budget,
            rng=rng,
        )
        self._settings = settings
        self.ttl = settings.ttl
        self.lock_delay = settings.lock_delay
        self.behavior = settings.behavior
        self.name = settings.name
        self.session_id = settings.session_id
        self._owns_consul = consul is None
        self._consul = consul if consul is not None else AsyncConsul()
        self._clock = settings.clock
        self._engine = AsyncEngine(
            self._consul,
            self._clock,
            settings.machine_config(self._consul.config.timeout),
            settings.session_spec(),
            settings.renew_backoff(),
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._companion: AsyncLockManager | None = None
        self._closables: list[_Closable] = []

    def __repr__(self) -> str:
        return f"<AsyncLockManager {self.state.value} session={self.current_session_id}>"

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> AsyncLockManager:
        if self._stack is not None or self.state is not ManagerState.NEW:
            raise ValidationError("manager", "an AsyncLockManager can be entered only once")
        stack = contextlib.AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack, self._tg = stack, tg
        self._engine.attach(tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            stack, self._stack = self._stack, None
            if self._tg is not None:
                self._tg.cancel_scope.cancel()  # the background tasks end with the manager
            if stack is not None:
                await stack.__aexit__(exc_type, exc, tb)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Release every held key, destroy the session, stop the tasks: one deadline.

        Idempotent. Errors talking to Consul are logged, not raised. Shielded from
        cancellation (a cancelled close would leave keys held until the session's TTL): it
        ends by its deadline either way.
        """
        seconds = check_timeout(timeout)
        if seconds is None or math.isinf(seconds):
            raise ValidationError("timeout", "aclose() needs a finite timeout")
        with anyio.CancelScope(shield=True):
            await self._close(seconds)

    async def _close(self, seconds: float) -> None:
        deadline = self._clock.monotonic() + seconds
        closables, self._closables = list(reversed(self._closables)), []
        for obj in closables:
            await obj.close_for_manager()
        companion, self._companion = self._companion, None
        if companion is not None:
            await companion.aclose(max(0.0, deadline - self._clock.monotonic()))
        if self._tg is not None:
            await self._engine.close(max(0.0, deadline - self._clock.monotonic()))
        if self._owns_consul:
            await self._consul.aclose()

    # -- public --------------------------------------------------------------------------
    @property
    def consul(self) -> AsyncConsul:
        """The client this manager uses."""
        return self._consul

    @property
    def clock(self) -> Clock:
        """The clock leases are measured on."""
        return self._clock

    @property
    def state(self) -> ManagerState:
        """The lifecycle state."""
        return self._engine.state

    @property
    def current_session_id(self) -> str | None:
        """The session in use now."""
        return self._engine.session_id

    @property
    def session_ids(self) -> frozenset[str]:
        """This manager's sessions now: its own and its companion's."""
        ids = {
            self.current_session_id,
            self._companion.current_session_id if self._companion else None,
        }
        return frozenset(sid for sid in ids if sid)

    def lock(self, key: str, value: bytes | str = b"", *, flags: int = 0) -> AsyncLock:
        """Make an :class:`AsyncLock` on ``key`` (no I/O).

        Raises:
            ValidationError: A bad key, value or flags.
        """
        key = check_key(key)
        data = check_txn_value(value)
        if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 2**64:
            raise ValidationError("flags", f"must be an unsigned 64-bit integer, got {flags!r}")
        return AsyncLock(self._engine, key, data, flags)

    def lock_many(self, keys: Iterable[str], value: bytes | str = b"") -> AsyncLockSet:
        """Make an :class:`AsyncLockSet`: ``keys`` acquired together, all or none (no I/O).

        Raises:
            ValidationError: Bad, duplicate or ``.lock`` keys, or a value too large for a
                transaction of 64 keys.
        """
        data = check_txn_value(value)
        return AsyncLockSet(self._engine, check_keys(keys, data), data)

    def on_lost(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` (function or coroutine function) on any loss."""
        check_callback(callback)
        self._engine.lost_callbacks.append(callback)
        return callback

    def on_lock_delay(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` when an acquire is held up by a lock-delay window."""
        check_callback(callback)
        self._engine.delay_callbacks.append(callback)
        return callback

    def snapshot(self) -> ManagerSnapshot:
        """What this manager holds, waits for and follows right now."""
        return self._engine.snapshot()

    def stats(self) -> ManagerStats:
        """What this manager did so far: acquisitions and their latency, hold durations,
        lock-delay waits, losses by reason, renewals and their latency, sessions (no I/O)."""
        return self._engine.stats()

    def held_locks(self) -> list[Lease]:
        """The leases held right now."""
        return self._engine.held_leases()

    async def session(self, timeout: float | None = None) -> str:
        """The session's ID, creating the session now if there is none."""
        seconds = check_timeout(timeout)
        engine = self._engine
        engine.check_open()
        deadline = Deadline.after(
            self._clock.monotonic(), None if seconds is None or math.isinf(seconds) else seconds
        )
        actor = engine.new_id()
        sid: str = await engine.call(actor, SessionWanted(actor, deadline.at))
        return sid

    # -- for recipes ---------------------------------------------------------------------
    def companion(self) -> AsyncLockManager:
        """The companion manager with a ``Behavior=delete`` session (its tasks run in this
        manager's task group)."""
        self._engine.check_open()
        if self._companion is None:
            companion = AsyncLockManager(self._consul, **self._settings.companion_kwargs())
            assert self._tg is not None
            companion._tg = self._tg
            companion._engine.attach(self._tg)
            self._companion = companion
        return self._companion

    def adopt(self, obj: _Closable) -> None:
        """Close ``obj`` when this manager closes."""
        self._closables.append(obj)

    def forget(self, obj: _Closable) -> None:
        """Undo :meth:`adopt`."""
        if obj in self._closables:
            self._closables.remove(obj)

    def dispatch(self, callbacks: Iterable[Callback], event: Any) -> None:
        """Run ``callback(event)`` for each callback on the callback task."""
        self._engine.dispatch(callbacks, event)

    def start_task(self, fn: Callable[[], Any], name: str) -> None:
        """Run ``fn()`` (a coroutine function) in the manager's task group."""
        self._engine.check_open()
        assert self._tg is not None
        self._tg.start_soon(fn, name=name)

    # -- recipes -------------------------------------------------------------------------
    def consul_lock(self, prefix: str, value: bytes | str = b"") -> AsyncLock:
        """A lock in Consul's ``api.Lock`` layout (``PREFIX/.lock``, Consul's flags)."""
        return self.lock(lock_key(check_key(prefix, "prefix")), value, flags=CONSUL_LOCK_FLAGS)

    def election(self, key: str, value: bytes | str = b"") -> AsyncElection:
        """A leader election on ``key``; ``value`` is published while leading."""
        return AsyncElection(self, key, value)

    def semaphore(self, prefix: str, limit: int, value: bytes | str = b"") -> AsyncSemaphore:
        """A semaphore of ``limit`` holders in Consul's ``api.Semaphore`` layout."""
        return AsyncSemaphore(self, prefix, limit, value)

    def singleton(
        self, key: str, timeout: float | None = 0, value: bytes | str = b""
    ) -> AsyncSingletonGuard:
        """A guard that lets one process of the fleet run a job (``async with``)."""
        return AsyncSingletonGuard(self, key, timeout, value)

    async def register(
        self, key: str, value: bytes | str = b"", *, timeout: float | None = 30.0
    ) -> AsyncRegistration:
        """Write an ephemeral key that exists while this process lives (Behavior=delete)."""
        reg = AsyncRegistration(self, key, value)
        await reg.open(timeout)
        return reg
