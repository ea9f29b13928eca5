"""LockManager: KV locks on one renewed Consul session, with loss and lock-delay callbacks.

The public face of the threaded front-end. A manager validates its settings, builds an
:class:`~locksmith._engine.Engine` (which runs the sans-IO state machine on threads), hands
out :class:`~locksmith.Lock` objects, and offers the recipes (election, singleton guard,
registration, semaphore, Consul-layout lock, fair and readers-writer locks) as factory
methods. The recipes see the manager only through :class:`~locksmith._ports.ManagerPort`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

from locksmith._client import Consul
from locksmith._clock import Clock
from locksmith._compat import CONSUL_LOCK_FLAGS, lock_key
from locksmith._deadline import Deadline
from locksmith._durations import Duration
from locksmith._election import Election
from locksmith._engine import Engine
from locksmith._exceptions import ValidationError
from locksmith._fair import FairLock, RWLock
from locksmith._lease import Lease, LockDelayEvent, LossEvent
from locksmith._lock import Lock
from locksmith._lockset import LockSet
from locksmith._machine import ManagerSnapshot
from locksmith._ports import Closable
from locksmith._protocol import RenewAnswered, SessionWanted
from locksmith._registration import Registration
from locksmith._semaphore import Semaphore
from locksmith._settings import ManagerSettings, check_keys
from locksmith._singleton import SingletonGuard
from locksmith._states import ManagerState
from locksmith._stats import ManagerStats
from locksmith._validate import (
    Behavior,
    check_callback,
    check_key,
    check_timeout,
    check_txn_value,
)

__all__ = ["LockManager"]


class LockManager:
    """Creates a session, acquires KV keys with it, renews it, and reports losses.

    Constructing a manager does no I/O; the session is created on the first acquire (or
    :meth:`session`). Use it as a context manager, or call :meth:`close`: closing releases
    every held key first, then destroys the session, so the next holder gets the lock at
    once and no session is left behind. A manager still running at interpreter exit is
    closed then; in a child made by ``os.fork()`` the manager starts afresh, with its own
    session, holding nothing.

    Args:
        consul: The client to use; None builds one from Consul's environment variables.
        ttl: Session TTL (10s..86400s). It sets the lease deadline: a lock is presumed lost
            TTL after the start of the last successful renewal. ``None``/``0`` (no TTL, no
            deadline: a cut-off holder would believe it holds its locks indefinitely) is
            refused unless ``unsafe_no_ttl=True``.
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
        clock: The clock (tests inject :class:`~locksmith.FakeClock`).
        unsafe_no_ttl: Accept ``ttl=None``: locks without a lease deadline.
        watch_budget: Blocking queries the manager may use to follow its keys (see
            ``docs/internals.md``): keys in one directory share one query; keys with nothing
            in common are followed one by one.
        rng: Randomness for backoff jitter (tests inject a seeded one).

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
        unsafe_no_ttl: bool = False,
        watch_budget: int = 4,
        rng: Callable[[], float] | None = None,
    ) -> None:
        if consul is not None and not isinstance(consul, Consul):
            raise ValidationError("consul", f"must be a locksmith.Consul or None, got {consul!r}")
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
        self.checks = settings.checks
        self.service_checks = settings.service_checks
        self.node = settings.node
        self.session_id = settings.session_id
        self.renew_fraction = settings.renew_fraction
        self.unsafe_no_ttl = settings.unsafe_no_ttl
        self.watch_budget = settings.watch_budget
        self._owns_consul = consul is None
        self._consul = consul if consul is not None else Consul()
        self._clock: Clock = settings.clock
        self._engine = Engine(
            self._consul,
            self._clock,
            settings.machine_config(self._consul.config.timeout),
            settings.session_spec(),
            settings.renew_backoff(),
        )
        self._recipes_lock = threading.Lock()
        self._companion: LockManager | None = None
        self._closables: list[Closable] = []

    def __repr__(self) -> str:
        return f"<LockManager {self.state.value} session={self.current_session_id}>"

    # -- public --------------------------------------------------------------------------
    @property
    def consul(self) -> Consul:
        """The Consul client this manager uses."""
        return self._consul

    @property
    def clock(self) -> Clock:
        """The clock leases and deadlines are measured on."""
        return self._clock

    @property
    def state(self) -> ManagerState:
        """The lifecycle state."""
        return self._engine.state

    @property
    def current_session_id(self) -> str | None:
        """The session in use now (None before the first acquire or after a loss)."""
        return self._engine.session_id

    @property
    def session_ids(self) -> frozenset[str]:
        """The sessions this manager uses now: its own, and its companion's (the
        ``Behavior=delete`` session of registrations and semaphores), if they exist."""
        with self._recipes_lock:
            companion = self._companion
        ids = {self.current_session_id, companion.current_session_id if companion else None}
        return frozenset(sid for sid in ids if sid)

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
        data = check_txn_value(value)
        if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 2**64:
            raise ValidationError("flags", f"must be an unsigned 64-bit integer, got {flags!r}")
        return Lock(self._engine, key, data, flags)

    def lock_many(self, keys: Iterable[str], value: bytes | str = b"") -> LockSet:
        """Make a :class:`LockSet`: ``keys`` acquired together, all or none (no I/O).

        Up to 64 keys go in one transaction, larger sets in sorted batches; one fencing
        token for the set. See :class:`LockSet`.

        Args:
            keys: The keys (plain lock keys, each once).
            value: Written to every key on acquisition.

        Raises:
            ValidationError: Bad, duplicate or ``.lock`` keys, or a value too large for a
                transaction of 64 keys.
        """
        data = check_txn_value(value)
        return LockSet(self._engine, check_keys(keys, data), data)

    def on_lock_delay(
        self, callback: Callable[[LockDelayEvent], object]
    ) -> Callable[[LockDelayEvent], object]:
        """Call ``callback(event)`` when an acquire is held up by a lock-delay window."""
        check_callback(callback)
        self._engine.delay_callbacks.append(callback)
        return callback

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` when any lock of this manager is lost."""
        check_callback(callback)
        self._engine.lost_callbacks.append(callback)
        return callback

    def start(self) -> LockManager:
        """Mark the manager running (threads start when first needed). Returns itself."""
        self._engine.check_open()
        self._engine.start()
        return self

    def session(self, timeout: float | None = None) -> str:
        """The session's ID, creating the session now if there is none.

        Raises:
            LockTimeout: No session within ``timeout`` seconds (Consul unreachable).
            ManagerClosed: The manager is closed.
        """
        seconds = check_timeout(timeout)
        engine = self._engine
        engine.check_open()
        deadline = Deadline.after(
            self._clock.monotonic(), None if seconds is None or math.isinf(seconds) else seconds
        )
        actor = engine.new_id()
        sid: str = engine.call(actor, SessionWanted(actor, deadline.at))
        return sid

    def lease_deadline(self, session_id: str) -> float:
        """When the lease of ``session_id`` must be presumed lost, on :attr:`clock` (no I/O).

        TTL after the start of the session's last successful renewal (inf without TTL), the
        deadline every lock of the session keeps; -inf once this manager no longer uses
        ``session_id`` (it ended, or was never this manager's).
        """
        return self._engine.lease_deadline(session_id)

    def snapshot(self) -> ManagerSnapshot:
        """What this manager holds, waits for and follows right now (no I/O)."""
        return self._engine.snapshot()

    def stats(self) -> ManagerStats:
        """What this manager did so far: acquisitions and their latency, hold durations,
        lock-delay waits, losses by reason, renewals and their latency, sessions (no I/O)."""
        return self._engine.stats()

    def held_locks(self) -> list[Lease]:
        """The leases held right now."""
        return self._engine.held_leases()

    def close(self, timeout: float = 10.0) -> None:
        """Release every held key, destroy the session (if created here), stop threads.

        Idempotent. One deadline covers it all: calls in flight end (acquires blocked in
        other threads raise :class:`ManagerClosed`), keys are released in transactions of
        up to 64, then the session is destroyed (never before its keys are released, which
        would start lock-delay). Errors talking to Consul are logged, not raised: the
        session's TTL cleans up whatever could not be released in time.

        Args:
            timeout: Seconds for all of it.
        """
        seconds = check_timeout(timeout)
        if seconds is None or math.isinf(seconds):
            raise ValidationError("timeout", "close() needs a finite timeout")
        deadline = self._clock.monotonic() + seconds
        with self._recipes_lock:
            closables = list(reversed(self._closables))
            self._closables.clear()
            companion, self._companion = self._companion, None
        for obj in closables:
            obj.close_for_manager()
        if companion is not None:
            companion.close(max(0.0, deadline - self._clock.monotonic()))
        self._engine.close(max(0.0, deadline - self._clock.monotonic()))
        if self._owns_consul:
            self._consul.close()

    def __enter__(self) -> LockManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for recipes (ManagerPort) -------------------------------------------------------
    def companion(self) -> LockManager:
        """The companion manager with a ``Behavior=delete`` session, made on first use.

        Registrations, semaphore contender keys and fair queue entries use it: their keys
        vanish with its session. Its lock-delay is 0 (its keys are unique to a session or an
        instance), unless health checks are bound, when it equals the TTL like the manager's
        own must.
        """
        with self._recipes_lock:
            self._engine.check_open()
            if self._companion is None:
                self._companion = LockManager(self._consul, **self._settings.companion_kwargs())
                self._companion.start()
            return self._companion

    def adopt(self, obj: Closable) -> None:
        """Close ``obj`` (a registration, a semaphore) when this manager closes."""
        with self._recipes_lock:
            self._closables.append(obj)

    def forget(self, obj: Closable) -> None:
        """Undo :meth:`adopt`."""
        with self._recipes_lock:
            if obj in self._closables:
                self._closables.remove(obj)

    def dispatch(self, callbacks: Iterable[Callable[[Any], object]], event: Any) -> None:
        """Run ``callback(event)`` for each of ``callbacks`` on the callback thread."""
        self._engine.dispatch(callbacks, event)

    def session_gone(self, session_id: str) -> None:
        """Consul said ``session_id`` does not exist (a recipe's request was refused with
        :class:`SessionNotFound`): end it as a renewal answered "not found" would, so that
        the next call that needs a session creates one at once. Nothing happens if this
        manager uses another session by now."""
        if self._engine.session_id == session_id:
            self._engine.handle(RenewAnswered(session_id, None, gone=True))

    # -- recipes -------------------------------------------------------------------------
    def consul_lock(self, prefix: str, value: bytes | str = b"") -> Lock:
        """A lock in Consul's ``api.Lock`` layout: ``PREFIX/.lock`` with Consul's flags.

        It excludes, and is excluded by, ``consul lock PREFIX cmd`` and Go's ``api.Lock``.
        """
        return self.lock(lock_key(check_key(prefix, "prefix")), value, flags=CONSUL_LOCK_FLAGS)

    def election(self, key: str, value: bytes | str = b"") -> Election:
        """A leader election on ``key``; ``value`` is published while leading."""
        return Election(self, key, value)

    def fair_lock(self, prefix: str, value: bytes | str = b"") -> FairLock:
        """A lock served first come, first served: a FIFO queue of contenders under ``prefix``.

        Each waiter watches only the entry just ahead of it, so a release wakes exactly one
        waiter. See ``docs/recipes/fair-lock.md`` for the layout (locksmith's own).
        """
        return FairLock(self, prefix, value)

    def rw_lock(self, prefix: str, value: bytes | str = b"") -> RWLock:
        """A readers-writer lock on a FIFO queue under ``prefix``: ``.read()`` shared,
        ``.write()`` exclusive; readers that arrive after a waiting writer queue behind it."""
        return RWLock(self, prefix, value)

    def semaphore(self, prefix: str, limit: int, value: bytes | str = b"") -> Semaphore:
        """A semaphore of ``limit`` holders in Consul's ``api.Semaphore`` layout."""
        return Semaphore(self, prefix, limit, value)

    def singleton(
        self, key: str, timeout: float | None = 0, value: bytes | str = b""
    ) -> SingletonGuard:
        """A guard that lets one process of the fleet run a job (context manager/decorator)."""
        return SingletonGuard(self, key, timeout, value)

    def register(
        self, key: str, value: bytes | str = b"", *, timeout: float | None = 30.0
    ) -> Registration:
        """Write an ephemeral key that exists while this process lives (Behavior=delete)."""
        reg = Registration(self, key, value)
        reg.open(timeout)
        return reg
