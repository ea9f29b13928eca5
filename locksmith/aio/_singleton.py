"""AsyncSingletonGuard: one process of the fleet runs the job; the others skip or wait.

``async with mgr.singleton("jobs/nightly", timeout=0) as lease:`` gives the lease when this
process got the guard, or None when another process holds it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

import anyio

from locksmith._exceptions import LockTimeout, ValidationError
from locksmith._lease import Lease
from locksmith._log import get_logger
from locksmith.aio._lock import AsyncLock
from locksmith.aio._ports import AsyncManagerPort

__all__ = ["AsyncSingletonGuard"]

log = get_logger("locksmith.singleton")

P = ParamSpec("P")
R = TypeVar("R")


class AsyncSingletonGuard:
    """Runs a job in at most one process of the fleet. Made by
    :meth:`AsyncLockManager.singleton`.

    Args:
        manager: The manager whose session holds the guard.
        key: The guard's key.
        timeout: 0 skips at once when the guard is taken; None waits forever; otherwise
            seconds to wait before skipping.
        value: Written to the key while the job runs.
    """

    def __init__(
        self,
        manager: AsyncManagerPort,
        key: str,
        timeout: float | None = 0,
        value: bytes | str = b"",
    ) -> None:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ValidationError("timeout", f"must be seconds >= 0 or None, got {timeout!r}")
        self._lock: AsyncLock = manager.lock(key, value)
        self.key = self._lock.key
        self.timeout = timeout
        self._leases: dict[int, list[Lease | None]] = {}

    def __repr__(self) -> str:
        return f"<AsyncSingletonGuard {self.key!r}>"

    def cancelled(self, lease: Lease) -> anyio.Event:
        """An event set when the job's guard ``lease`` ends (lost, or presumed lost)."""
        return self._lock.ended(lease)

    async def __aenter__(self) -> Lease | None:
        try:
            if self.timeout == 0:
                lease = await self._lock.acquire(blocking=False)
            else:
                lease = await self._lock.acquire(timeout=self.timeout)
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
        self._leases.setdefault(anyio.get_current_task().id, []).append(lease)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = anyio.get_current_task().id
        stack = self._leases[task]
        lease = stack.pop()
        if not stack:
            del self._leases[task]
        if lease is not None:
            with anyio.move_on_after(10.0, shield=True):
                await self._lock.release(lease)

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | None]]:
        """Decorate a coroutine function so it runs only while this process holds the guard."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            async with self as lease:
                if lease is None:
                    return None
                return await fn(*args, **kwargs)

        return wrapper
