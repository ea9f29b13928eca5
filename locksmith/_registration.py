"""Ephemeral registration: a key that exists while this process lives (Behavior=delete).

The key is acquired by the manager's companion ``Behavior=delete`` session, so it vanishes
with that session: a crash, a partition or a missed TTL deletes it. If the session ends while
the process is still alive, the registration re-creates a session and writes the key again,
then notifies. :meth:`Registration.close` removes the key at once. Many registrations share
one session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

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
from locksmith._lock import Lock
from locksmith._log import get_logger
from locksmith._ports import ManagerPort
from locksmith._states import LockState
from locksmith._validate import check_callback

__all__ = ["Registration"]

log = get_logger("locksmith.registration")


class Registration:
    """One ephemeral key. Made by :meth:`LockManager.register`."""

    def __init__(self, manager: ManagerPort, key: str, value: bytes | str = b"") -> None:
        self._parent = manager
        self._eph = manager.companion()
        self._lock: Lock = self._eph.lock(key, value)
        self.key = self._lock.key
        self._closed = threading.Event()
        self._rereg_cbs: list[Callable[[Lease], object]] = []
        self._lost_cbs: list[Callable[[LossEvent], object]] = []
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(start=0.1, cap=5.0)
        self._lock.on_lost(self._lost)

    def __repr__(self) -> str:
        return f"<Registration {self.key!r} active={self.active}>"

    @property
    def active(self) -> bool:
        """Whether the key is registered right now."""
        return self._lock.held

    @property
    def lease(self) -> Lease | None:
        """The current lease of the key, or None."""
        return self._lock.lease

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` when the key disappeared (before re-registering)."""
        check_callback(callback)
        self._lost_cbs.append(callback)
        return callback

    def on_reregistered(self, callback: Callable[[Lease], object]) -> Callable[[Lease], object]:
        """Call ``callback(lease)`` after the key was written again on a new session."""
        check_callback(callback)
        self._rereg_cbs.append(callback)
        return callback

    def open(self, timeout: float | None = 30.0) -> Lease:
        """Write the key (done by :meth:`LockManager.register`).

        Raises:
            LockTimeout: The key is held by another session for longer than ``timeout``.
        """
        lease = self._lock.acquire(timeout=timeout)
        assert lease is not None
        self._parent.adopt(self)
        log.info("registration.registered", key=self.key, session_id=lease.session_id)
        return lease

    def _lost(self, event: LossEvent) -> None:
        if self._closed.is_set():
            return
        for cb in list(self._lost_cbs):
            try:
                cb(event)
            except Exception:
                log.exception("callback.failed", key=self.key, callback="on_lost")
        if self._closed.is_set():
            return
        log.warning("registration.lost", key=self.key, reason=event.reason.value)
        # Re-register off the callback thread: acquiring may wait.
        self._thread = threading.Thread(
            target=self._reregister, name=f"locksmith-reregister-{self.key}", daemon=True
        )
        self._thread.start()

    def _reregister(self) -> None:
        tries = 0
        while not self._closed.is_set():
            try:
                if self._lock.state is LockState.LOST:
                    self._lock.release()
                lease = self._lock.acquire(timeout=30.0)
            except (ManagerClosed, LockConflict, ValidationError) as exc:
                log.warning("registration.abandoned", key=self.key, error=str(exc))
                return
            except LocksmithError as exc:
                # Consul unreachable, key held elsewhere, or a bound check still critical
                # (Consul refuses new sessions on it): keep trying while the process lives.
                tries += 1
                log.info("registration.retry", key=self.key, error=str(exc))
                self._closed.wait(self._backoff.delay(tries))
                continue
            if lease is None:
                continue
            if self._closed.is_set():
                self._delete_own(lease)
                return
            log.info("registration.reregistered", key=self.key, session_id=lease.session_id)
            self._eph.dispatch(list(self._rereg_cbs), lease)
            return

    def close(self) -> None:
        """Delete the key now and stop re-registering. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._parent.forget(self)
        self._delete_own(self._lock.lease)
        log.info("registration.closed", key=self.key)

    def close_for_manager(self) -> None:
        """Close (called by the manager's close)."""
        self.close()

    def _delete_own(self, lease: Lease | None) -> None:
        """Release the key, then delete it unless someone else took it in between."""
        try:
            if lease is not None:
                self._lock.release(lease)
            elif self._lock.state is LockState.LOST:
                self._lock.release()
            entry = self._parent.consul.kv.get(self.key)
            if entry is not None and entry.session is None:
                self._parent.consul.kv.delete(self.key, cas=entry.modify_index)
        except (LockError, ConsulUnavailable) as exc:
            log.warning("registration.close_failed", key=self.key, error=str(exc))

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
