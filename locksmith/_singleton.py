"""Singleton job guard: one process in the fleet runs the job; the others skip or wait.

``with mgr.singleton("jobs/nightly", timeout=0) as lease:`` yields the lease when this process
got the guard, or None when another process holds it (with ``timeout=0`` nobody waits). The
block must check (Python cannot skip a ``with`` body). As a decorator the function is simply
not called, and returns None, when the guard is taken elsewhere.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import structlog

from locksmith._core import LockState
from locksmith._exceptions import LockTimeout, ValidationError

if TYPE_CHECKING:
    from locksmith._manager import Lease, Lock, LockManager, LossEvent

__all__ = ["SingletonGuard"]

log = structlog.get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class SingletonGuard:
    """Runs a job in at most one process of the fleet. Made by :meth:`LockManager.singleton`.

    Args:
        manager: The manager whose session holds the guard.
        key: The guard's KV key.
        timeout: 0 skips at once when the guard is taken; None waits forever; otherwise
            seconds to wait before skipping.
        value: Written to the key while the job runs (e.g. host name, start time).
    """

    def __init__(
        self, manager: LockManager, key: str, timeout: float | None = 0, value: bytes | str = b""
    ) -> None:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
        ):
            raise ValidationError("timeout", f"must be seconds >= 0 or None, got {timeout!r}")
        self._mgr = manager
        self.key = manager.lock(key, value).key
        self.value = value
        self.timeout = timeout
        self._local = threading.local()
        #: Set when the running job's guard is lost; long jobs should check it.
        self.cancelled = threading.Event()

    def __repr__(self) -> str:
        return f"<SingletonGuard {self.key!r}>"

    def _stack(self) -> list[Lock]:
        stack: list[Lock] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def __enter__(self) -> Lease | None:
        lock = self._mgr.lock(self.key, self.value)
        lock.on_lost(self._lost)
        try:
            if self.timeout == 0:
                lease = lock.acquire(blocking=False)
            else:
                lease = lock.acquire(timeout=self.timeout)
        except LockTimeout:
            lease = None
        if lease is None:
            log.info("singleton.skipped", key=self.key)
        else:
            self.cancelled.clear()
            log.info(
                "singleton.running",
                key=self.key,
                session_id=lease.session_id,
                fencing_token=lease.fencing_token,
            )
        self._stack().append(lock)
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lock = self._stack().pop()
        if lock.state in (LockState.HELD, LockState.LOST):
            lock.release()

    def _lost(self, event: LossEvent) -> None:
        log.warning("singleton.lost", key=self.key, reason=event.reason.value)
        self.cancelled.set()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | None]:
        """Decorate ``fn`` so it runs only while this process holds the guard."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            with self as lease:
                if lease is None:
                    return None
                return fn(*args, **kwargs)

        return wrapper
