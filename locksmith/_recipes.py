"""The recipe factories of :class:`~locksmith.LockManager`.

``LockManager`` inherits these methods; each returns a recipe object built on the manager's
locks. Recipes that need a ``Behavior=delete`` session (ephemeral registrations, semaphore
contender keys) share one companion manager created on first use, with lock-delay 0 (their
keys are unique per session or per instance, so lock-delay would only slow re-registration)
unless health checks are bound, when it equals the TTL like the manager's own must.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from locksmith._compat import CONSUL_LOCK_FLAGS, lock_key
from locksmith._election import Election
from locksmith._registration import Registration
from locksmith._semaphore import Semaphore
from locksmith._singleton import SingletonGuard
from locksmith._validate import check_key

if TYPE_CHECKING:
    from locksmith._manager import Lock, LockManager

__all__ = ["RecipesMixin"]


class RecipesMixin:
    """Factories for locks in Consul's layout, elections, semaphores, singletons, registrations."""

    _recipes_lock: threading.Lock
    _ephemeral_mgr: LockManager | None
    _closables: list[Any]

    def _init_recipes(self) -> None:
        self._recipes_lock = threading.Lock()
        self._ephemeral_mgr = None
        self._closables = []

    def _track(self, obj: Any) -> None:
        with self._recipes_lock:
            self._closables.append(obj)

    def _untrack(self, obj: Any) -> None:
        with self._recipes_lock:
            if obj in self._closables:
                self._closables.remove(obj)

    def _ephemeral(self) -> LockManager:
        """The companion manager with a ``Behavior=delete`` session (made on first use)."""
        # _manager imports this module: import it when first needed.
        from locksmith._manager import LockManager  # noqa: PLC0415

        me: LockManager = self  # type: ignore[assignment]
        with self._recipes_lock:
            if self._ephemeral_mgr is None:
                # Lock-delay buys nothing for keys unique to a session or an instance, except
                # when health checks are bound: then it must cover the TTL (see _core).
                bound = bool(me.checks) or bool(me.service_checks)
                self._ephemeral_mgr = LockManager(
                    me.consul,
                    ttl=me.ttl if me.ttl is not None else 0,
                    lock_delay=me.ttl if (bound and me.ttl is not None) else 0,
                    behavior="delete",
                    name=f"{me.name or 'locksmith'}-ephemeral",
                    checks=me.checks,
                    service_checks=me.service_checks,
                    node=me.node,
                    renew_fraction=me.renew_fraction,
                    clock=me._clock,
                )
                self._ephemeral_mgr.start()
            return self._ephemeral_mgr

    def _close_recipes(self, timeout: float) -> None:
        """Close registrations and semaphores, then the companion manager."""
        with self._recipes_lock:
            closables = list(reversed(self._closables))
            self._closables.clear()
            eph, self._ephemeral_mgr = self._ephemeral_mgr, None
        for obj in closables:
            obj._close_for_manager()
        if eph is not None:
            eph.close(timeout)

    # -- factories -----------------------------------------------------------------------
    def consul_lock(self, prefix: str, value: bytes | str = b"") -> Lock:
        """A lock in Consul's ``api.Lock`` layout: ``PREFIX/.lock`` with Consul's flags.

        It excludes, and is excluded by, ``consul lock PREFIX cmd`` and Go's ``api.Lock``.
        """
        me: LockManager = self  # type: ignore[assignment]
        return me.lock(lock_key(check_key(prefix, "prefix")), value, flags=CONSUL_LOCK_FLAGS)

    def election(self, key: str, value: bytes | str = b"") -> Election:
        """A leader election on ``key``; ``value`` is published while leading."""
        return Election(self, key, value)  # type: ignore[arg-type]

    def semaphore(self, prefix: str, limit: int, value: bytes | str = b"") -> Semaphore:
        """A semaphore of ``limit`` holders in Consul's ``api.Semaphore`` layout."""
        return Semaphore(self, prefix, limit, value)  # type: ignore[arg-type]

    def singleton(
        self, key: str, timeout: float | None = 0, value: bytes | str = b""
    ) -> SingletonGuard:
        """A guard that lets one process of the fleet run a job (context manager/decorator)."""
        return SingletonGuard(self, key, timeout, value)  # type: ignore[arg-type]

    def register(
        self, key: str, value: bytes | str = b"", *, timeout: float | None = 30.0
    ) -> Registration:
        """Write an ephemeral key that exists while this process lives (Behavior=delete)."""
        reg = Registration(self, key, value)  # type: ignore[arg-type]
        reg.open(timeout)
        return reg
