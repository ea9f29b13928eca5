"""locksmith for asyncio and trio (through anyio): ``pip install 'consul-locksmith[async]'``.

:class:`AsyncConsul` is the async twin of :class:`locksmith.Consul`: the same settings,
and ``sessions``/``kv`` with an ``async def`` twin of every method. ``import locksmith``
does not import this package (nor anyio).
"""

try:
    import anyio as _anyio  # noqa: F401 - only to fail early, with the fix in the message
except ImportError as exc:  # pragma: no cover - exercised in a child process by the tests
    raise ImportError(
        "locksmith.aio needs anyio, which is not installed: pip install 'consul-locksmith[async]'"
    ) from exc

from locksmith.aio._client import AsyncConsul
from locksmith.aio._endpoints import AsyncKVStore, AsyncSessions

__all__ = [
    "AsyncConsul",
    "AsyncKVStore",
    "AsyncSessions",
]
