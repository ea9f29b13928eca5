"""locksmith: distributed locks, leader election and ephemeral keys on Consul sessions.

The public surface is re-exported here; everything in ``locksmith._*`` modules is private.
"""

from locksmith._child import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, EXIT_USAGE, run_exclusive
from locksmith._client import Consul
from locksmith._clock import Clock, FakeClock, SystemClock
from locksmith._compat import CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS
from locksmith._config import ConnectionConfig
from locksmith._core import WatchTarget
from locksmith._durations import format_duration, parse_duration
from locksmith._election import Election, LeaderInfo, LeadershipEvent
from locksmith._endpoints import KVStore, Sessions
from locksmith._exceptions import (
    ACLNotFound,
    BadRequest,
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
from locksmith._lease import Lease, LockDelayEvent, LossEvent
from locksmith._lock import Lock
from locksmith._machine import ManagerSnapshot
from locksmith._manager import LockManager
from locksmith._models import KVEntry, QueryMeta, QueryResult, ServiceCheck, Session
from locksmith._registration import Registration
from locksmith._semaphore import Semaphore
from locksmith._singleton import SingletonGuard
from locksmith._states import LockState, LossReason, ManagerState
from locksmith._stats import Histogram, ManagerStats

__version__ = "0.1.0"

__all__ = [
    "CONSUL_LOCK_FLAGS",
    "CONSUL_SEMAPHORE_FLAGS",
    "EXIT_LOCK_LOST",
    "EXIT_NOT_ACQUIRED",
    "EXIT_USAGE",
    "ACLNotFound",
    "BadRequest",
    "Clock",
    "ConfigurationError",
    "ConnectionConfig",
    "Consul",
    "ConsulError",
    "ConsulUnavailable",
    "Election",
    "FakeClock",
    "Histogram",
    "KVEntry",
    "KVStore",
    "LeaderInfo",
    "LeadershipEvent",
    "Lease",
    "Lock",
    "LockConflict",
    "LockDelayEvent",
    "LockError",
    "LockLost",
    "LockManager",
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
