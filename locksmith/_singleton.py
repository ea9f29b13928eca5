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
from typing import ParamSpec, TypeVar

from locksmith._exceptions import LockTimeout, ValidationError
from locksmith._lease import Lease, LossEvent
from locksmith._lock import Lock
from locksmith._log import get_logger
from locksmith._ports import ManagerPort
from locksmith._validate import check_value

__all__ = ["SingletonGuard"]

log = get_logger("locksmith.singleton")

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
        self, manager: ManagerPort, key: str, timeout: float | None = 0, value: bytes | str = b""
    ) -> None:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ValidationError("timeout", f"must be seconds >= 0 or None, got {timeout!r}")
        self._lock: Lock = manager.lock(key, value)
        self.key = self._lock.key
        self.value = check_value(value)
        self.timeout = timeout
        self._local = threading.local()
        self._lock.on_lost(self._lost)

    def __repr__(self) -> str:
        return f"<SingletonGuard {self.key!r}>"

    def _stack(self) -> list[Lease | None]:
        stack: list[Lease | None] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @property
    def cancelled(self) -> threading.Event:
        """Set when the guard of the job running in this thread ends (lost, or presumed
        lost at its lease deadline): long jobs should check it. Outside a job it is set."""
        stack = self._stack()
        lease = stack[-1] if stack else None
        return self._lock.ended(lease) if lease is not None else self._lock.ended()

    def __enter__(self) -> Lease | None:
        try:
            if self.timeout == 0:
                lease = self._lock.acquire(blocking=False)
            else:
                lease = self._lock.acquire(timeout=self.timeout)
        except LockTimeout:
            lease = None
        if lease is None:
            log.info("singleton.skipped", key=self.key)
        else:
            log.info(
                "singleton.running",
                key=self.key,
                session_id=lease.session_id,
                fencing_token=lease.fencing_token,
            )
        self._stack().append(lease)
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._stack().pop()
        if lease is not None:
            self._lock.release(lease)

    def _lost(self, event: LossEvent) -> None:
        log.warning("singleton.lost", key=self.key, reason=event.reason.value)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | None]:
        """Decorate ``fn`` so it runs only while this process holds the guard."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            with self as lease:
                if lease is None:
                    return None
                return fn(*args, **kwargs)

        return wrapper
