"""What recipes need from a lock manager: a small protocol, so they never import it.

The recipes (election, singleton guard, registration, semaphore, fair and readers-writer
locks) are built on a :class:`ManagerPort`. :class:`~locksmith.LockManager` implements it and
offers the recipes as factory methods; the manager's engine knows nothing of recipes, and no
recipe reaches into a manager's private state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from locksmith._client import Consul
from locksmith._clock import Clock
from locksmith._lock import Lock
from locksmith._states import ManagerState

__all__ = ["Closable", "ManagerPort"]


class Closable(Protocol):
    """A recipe object that the manager closes when it closes (registrations, semaphores)."""

    def close_for_manager(self) -> None:
        """Give back what the object holds; called once by the manager's close."""
        ...


class ManagerPort(Protocol):
    """The manager as the recipes see it."""

    @property
    def consul(self) -> Consul:
        """The Consul client."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock leases are measured on."""
        ...

    @property
    def state(self) -> ManagerState:
        """The manager's lifecycle state."""
        ...

    def lock(self, key: str, value: bytes | str = b"", *, flags: int = 0) -> Lock:
        """A lock on ``key`` with this manager's session."""
        ...

    def companion(self) -> ManagerPort:
        """The manager's companion with a ``Behavior=delete`` session (made on first use)."""
        ...

    def session(self, timeout: float | None = None) -> str:
        """The manager's session ID, creating the session if needed."""
        ...

    def lease_deadline(self, session_id: str) -> float:
        """When the lease of ``session_id`` must be presumed lost, on :attr:`clock` (TTL after
        the start of its last successful renewal; inf without TTL; -inf once the manager no
        longer uses that session)."""
        ...

    def session_gone(self, session_id: str) -> None:
        """Consul said ``session_id`` does not exist: stop using it (the next call that needs a
        session creates one). Nothing happens if the manager uses another session by now."""
        ...

    def adopt(self, obj: Closable) -> None:
        """Close ``obj`` when the manager closes."""
        ...

    def forget(self, obj: Closable) -> None:
        """Undo :meth:`adopt`."""
        ...

    def dispatch(self, callbacks: Iterable[Callable[[Any], object]], event: Any) -> None:
        """Run ``callback(event)`` for each callback on the manager's callback thread."""
        ...
