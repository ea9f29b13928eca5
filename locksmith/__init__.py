"""locksmith: distributed locks, leader election and ephemeral keys on Consul sessions.

The public surface is re-exported here; everything in ``locksmith._*`` modules is private.
Importing the package loads only the exception tree: each other name is imported from its
module the first time it is used, so a program pays for what it uses (``import locksmith``
stays cheap, a CLI's ``--version`` does not load the client).
"""

import importlib as _importlib
import typing as _typing

from locksmith._exceptions import (
    ACLNotFound,
    BadRequest,
    Cancelled,
    ConfigurationError,
    ConsulError,
    ConsulUnavailable,
    LockConflict,
    LockError,
    LockLost,
    LocksmithError,
    LockTimeout,
    ManagerClosed,
    NotHeld,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    TLSError,
    ValidationError,
)

if _typing.TYPE_CHECKING:
    from locksmith._cancel import Cancel
    from locksmith._child import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, EXIT_USAGE, run_exclusive
    from locksmith._client import Consul
    from locksmith._clock import Clock, FakeClock, SystemClock
    from locksmith._compat import CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS, FAIR_QUEUE_FLAGS
    from locksmith._config import ConnectionConfig
    from locksmith._core import WatchTarget
    from locksmith._durations import format_duration, parse_duration
    from locksmith._election import Election, LeaderInfo, LeadershipEvent
    from locksmith._endpoints import KVStore, Sessions
    from locksmith._fair import FairLock, RWLock
    from locksmith._lease import Lease, LeaseSet, LockDelayEvent, LossEvent
    from locksmith._lock import Lock
    from locksmith._lockset import LockSet
    from locksmith._machine import ManagerSnapshot
    from locksmith._manager import LockManager
    from locksmith._models import KVEntry, QueryMeta, QueryResult, ServiceCheck, Session
    from locksmith._registration import Registration
    from locksmith._semaphore import Semaphore
    from locksmith._singleton import SingletonGuard
    from locksmith._states import LockState, LossReason, ManagerState, QueueState
    from locksmith._stats import Histogram, ManagerStats

__version__ = "0.1.0"

__all__ = [
    "CONSUL_LOCK_FLAGS",
    "CONSUL_SEMAPHORE_FLAGS",
    "EXIT_LOCK_LOST",
    "EXIT_NOT_ACQUIRED",
    "EXIT_USAGE",
    "FAIR_QUEUE_FLAGS",
    "ACLNotFound",
    "BadRequest",
    "Cancel",
    "Cancelled",
    "Clock",
    "ConfigurationError",
    "ConnectionConfig",
    "Consul",
    "ConsulError",
    "ConsulUnavailable",
    "Election",
    "FairLock",
    "FakeClock",
    "Histogram",
    "KVEntry",
    "KVStore",
    "LeaderInfo",
    "LeadershipEvent",
    "Lease",
    "LeaseSet",
    "Lock",
    "LockConflict",
    "LockDelayEvent",
    "LockError",
    "LockLost",
    "LockManager",
    "LockSet",
    "LockState",
    "LockTimeout",
    "LocksmithError",
    "LossEvent",
    "LossReason",
    "ManagerClosed",
    "ManagerSnapshot",
    "ManagerState",
    "ManagerStats",
    "NotHeld",
    "PermissionDenied",
    "ProtocolError",
    "QueryMeta",
    "QueryResult",
    "QueueState",
    "RWLock",
    "Registration",
    "Semaphore",
    "ServiceCheck",
    "Session",
    "SessionNotFound",
    "Sessions",
    "SingletonGuard",
    "SystemClock",
    "TLSError",
    "ValidationError",
    "WatchTarget",
    "format_duration",
    "parse_duration",
    "run_exclusive",
]


#: Where each lazily imported public name lives.
_LAZY: dict[str, str] = {
    "Cancel": "locksmith._cancel",
    "Clock": "locksmith._clock",
    "ConnectionConfig": "locksmith._config",
    "Consul": "locksmith._client",
    "CONSUL_LOCK_FLAGS": "locksmith._compat",
    "CONSUL_SEMAPHORE_FLAGS": "locksmith._compat",
    "Election": "locksmith._election",
    "EXIT_LOCK_LOST": "locksmith._child",
    "EXIT_NOT_ACQUIRED": "locksmith._child",
    "EXIT_USAGE": "locksmith._child",
    "FAIR_QUEUE_FLAGS": "locksmith._compat",
    "FairLock": "locksmith._fair",
    "FakeClock": "locksmith._clock",
    "format_duration": "locksmith._durations",
    "Histogram": "locksmith._stats",
    "KVEntry": "locksmith._models",
    "KVStore": "locksmith._endpoints",
    "LeaderInfo": "locksmith._election",
    "LeadershipEvent": "locksmith._election",
    "Lease": "locksmith._lease",
    "LeaseSet": "locksmith._lease",
    "Lock": "locksmith._lock",
    "LockDelayEvent": "locksmith._lease",
    "LockManager": "locksmith._manager",
    "LockSet": "locksmith._lockset",
    "LockState": "locksmith._states",
    "LossEvent": "locksmith._lease",
    "LossReason": "locksmith._states",
    "ManagerSnapshot": "locksmith._machine",
    "ManagerState": "locksmith._states",
    "ManagerStats": "locksmith._stats",
    "parse_duration": "locksmith._durations",
    "QueryMeta": "locksmith._models",
    "QueryResult": "locksmith._models",
    "QueueState": "locksmith._states",
    "RWLock": "locksmith._fair",
    "Registration": "locksmith._registration",
    "run_exclusive": "locksmith._child",
    "Semaphore": "locksmith._semaphore",
    "ServiceCheck": "locksmith._models",
    "Session": "locksmith._models",
    "Sessions": "locksmith._endpoints",
    "SingletonGuard": "locksmith._singleton",
    "SystemClock": "locksmith._clock",
    "WatchTarget": "locksmith._core",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'locksmith' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
