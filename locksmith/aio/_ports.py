"""What the async recipes need from an async manager (they never import it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from locksmith._clock import Clock
from locksmith._states import ManagerState
from locksmith.aio._client import AsyncConsul
from locksmith.aio._lock import AsyncLock

__all__ = ["AsyncClosable", "AsyncManagerPort"]


class AsyncClosable(Protocol):
    """A recipe object the manager closes when it closes."""

    async def close_for_manager(self) -> None:
        """Give back what the object holds."""
        ...


class AsyncManagerPort(Protocol):
    """The async manager as the recipes see it."""

    @property
    def consul(self) -> AsyncConsul:
        """The client."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock leases are measured on."""
        ...

    @property
    def state(self) -> ManagerState:
        """The manager's lifecycle state."""
        ...

    def lock(self, key: str, value: bytes | str = b"", *, flags: int = 0) -> AsyncLock:
        """A lock with this manager's session."""
        ...

    def companion(self) -> AsyncManagerPort:
        """The ``Behavior=delete`` companion manager."""
        ...

    async def session(self, timeout: float | None = None) -> str:
        """The session ID, creating the session if needed."""
        ...

    def adopt(self, obj: AsyncClosable) -> None:
        """Close ``obj`` when the manager closes."""
        ...

    def forget(self, obj: AsyncClosable) -> None:
        """Undo :meth:`adopt`."""
        ...

    def dispatch(self, callbacks: Iterable[Callable[[Any], object]], event: Any) -> None:
        """Run the callbacks on the manager's callback task."""
        ...

    def start_task(self, fn: Callable[[], Any], name: str) -> None:
        """Run ``fn()`` in the manager's task group."""
        ...
