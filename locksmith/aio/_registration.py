"""AsyncRegistration: a key that exists while this process lives (Behavior=delete).

As :class:`~locksmith.Registration`: the key is held by the manager's companion
``Behavior=delete`` session and vanishes with it; if it is lost while the process lives, a
task writes it again.
"""

from __future__ import annotations

import anyio

from locksmith._backoff import Backoff
from locksmith._exceptions import (
    ConsulUnavailable,
    LockConflict,
    LockError,
    LocksmithError,
    ManagerClosed,
    ValidationError,
)
from locksmith._lease import Lease, LossEvent
from locksmith._log import get_logger
from locksmith._states import LockState
from locksmith._validate import check_callback
from locksmith.aio._engine import Callback
from locksmith.aio._lock import AsyncLock
from locksmith.aio._ports import AsyncManagerPort

__all__ = ["AsyncRegistration"]

log = get_logger("locksmith.registration")


class AsyncRegistration:
    """One ephemeral key. Made by :meth:`AsyncLockManager.register`."""

    def __init__(self, manager: AsyncManagerPort, key: str, value: bytes | str = b"") -> None:
        self._parent = manager
        self._eph = manager.companion()
        self._lock: AsyncLock = self._eph.lock(key, value)
        self.key = self._lock.key
        self._closed = False
        self._rereg_cbs: list[Callback] = []
        self._lost_cbs: list[Callback] = []
        self._backoff = Backoff(start=0.1, cap=5.0)
        self._lock.on_lost(self._lost)

    def __repr__(self) -> str:
        return f"<AsyncRegistration {self.key!r} active={self.active}>"

    @property
    def active(self) -> bool:
        """Whether the key is registered right now."""
        return self._lock.held

    @property
    def lease(self) -> Lease | None:
        """The current lease of the key, or None."""
        return self._lock.lease

    def on_lost(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` when the key disappeared (before re-registering)."""
        check_callback(callback)
        self._lost_cbs.append(callback)
        return callback

    def on_reregistered(self, callback: Callback) -> Callback:
        """Call ``callback(lease)`` after the key was written again on a new session."""
        check_callback(callback)
        self._rereg_cbs.append(callback)
        return callback

    async def open(self, timeout: float | None = 30.0) -> Lease:
        """Write the key (done by :meth:`AsyncLockManager.register`)."""
        lease = await self._lock.acquire(timeout=timeout)
        assert lease is not None
        self._parent.adopt(self)
        log.info("registration.registered", key=self.key, session_id=lease.session_id)
        return lease

    def _lost(self, event: LossEvent) -> None:
        if self._closed:
            return
        self._parent.dispatch(list(self._lost_cbs), event)
        log.warning("registration.lost", key=self.key, reason=event.reason.value)
        self._parent.start_task(self._reregister, name=f"locksmith-reregister-{self.key}")

    async def _reregister(self) -> None:
        tries = 0
        while not self._closed:
            try:
                if self._lock.state is LockState.LOST:
                    await self._lock.release()
                lease = await self._lock.acquire(timeout=30.0)
            except (ManagerClosed, LockConflict, ValidationError) as exc:
                log.warning("registration.abandoned", key=self.key, error=str(exc))
                return
            except LocksmithError as exc:
                tries += 1
                log.info("registration.retry", key=self.key, error=str(exc))
                await anyio.sleep(self._backoff.delay(tries))
                continue
            if lease is None:
                continue
            if self._closed:
                await self._delete_own(lease)
                return
            log.info("registration.reregistered", key=self.key, session_id=lease.session_id)
            self._parent.dispatch(list(self._rereg_cbs), lease)
            return

    async def aclose(self) -> None:
        """Delete the key now and stop re-registering. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._parent.forget(self)
        await self._delete_own(self._lock.lease)
        log.info("registration.closed", key=self.key)

    async def close_for_manager(self) -> None:
        """Close (called by the manager's close)."""
        await self.aclose()

    async def _delete_own(self, lease: Lease | None) -> None:
        try:
            if lease is not None:
                await self._lock.release(lease)
            elif self._lock.state is LockState.LOST:
                await self._lock.release()
            kv = self._parent.consul.kv
            entry = await kv.get(self.key)
            if entry is not None and entry.session is None:
                await kv.delete(self.key, cas=entry.modify_index)
        except (LockError, ConsulUnavailable) as exc:
            log.warning("registration.close_failed", key=self.key, error=str(exc))

    async def __aenter__(self) -> AsyncRegistration:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
