"""locksmith for asyncio and trio (through anyio): the same locks, on the same state machine.

``pip install 'consul-locksmith[async]'``. :class:`AsyncConsul` is the async twin of
:class:`locksmith.Consul` (the same settings, and an ``async def`` twin of every
``sessions``/``kv`` method); :class:`AsyncLockManager` runs the threaded manager's sans-IO
state machine in tasks, and makes :class:`AsyncLock` and the recipes
(:class:`AsyncElection`, :class:`AsyncSemaphore`, :class:`AsyncSingletonGuard`,
:class:`AsyncRegistration`). ``import locksmith`` does not import this package (nor anyio).
"""

try:
    import anyio as _anyio  # noqa: F401 - only to fail early, with the fix in the message
except ImportError as exc:  # pragma: no cover - exercised in a child process by the tests
    raise ImportError(
        "locksmith.aio needs anyio, which is not installed: pip install 'consul-locksmith[async]'"
    ) from exc

from locksmith.aio._client import AsyncConsul
from locksmith.aio._election import AsyncElection
from locksmith.aio._endpoints import AsyncKVStore, AsyncSessions
from locksmith.aio._lock import AsyncLock
from locksmith.aio._lockset import AsyncLockSet
from locksmith.aio._manager import AsyncLockManager
from locksmith.aio._registration import AsyncRegistration
from locksmith.aio._semaphore import AsyncSemaphore
from locksmith.aio._singleton import AsyncSingletonGuard

__all__ = [
    "AsyncConsul",
    "AsyncElection",
    "AsyncKVStore",
    "AsyncLock",
    "AsyncLockManager",
    "AsyncLockSet",
    "AsyncRegistration",
    "AsyncSemaphore",
    "AsyncSessions",
    "AsyncSingletonGuard",
]
