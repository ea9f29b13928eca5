"""KV flags that tell lock recipes apart, so that locksmith and Consul's tools exclude each other.

Consul's Go ``api.Lock`` (and ``consul lock PREFIX``) locks ``PREFIX/.lock`` marked with
:data:`CONSUL_LOCK_FLAGS`; ``api.Semaphore`` (and ``consul lock -n N PREFIX``) keeps contender
keys ``PREFIX/<session>`` plus ``PREFIX/.lock`` holding ``{"Limit": N, "Holders": {...}}``,
all marked with :data:`CONSUL_SEMAPHORE_FLAGS`. locksmith's own fair queue (``FairLock``,
``RWLock``; Consul has no equivalent) marks ``PREFIX/.lock`` with :data:`FAIR_QUEUE_FLAGS` and
its entries with the next three values. A key carrying other flags belongs to another kind of
lock: every side refuses to take it over.
"""

from __future__ import annotations

__all__ = [
    "CONSUL_LOCK_FLAGS",
    "CONSUL_SEMAPHORE_FLAGS",
    "FAIR_EXCLUSIVE_FLAGS",
    "FAIR_QUEUE_FLAGS",
    "FAIR_RELEASED_FLAGS",
    "FAIR_SHARED_FLAGS",
    "LOCK_KEY",
    "is_fair_flags",
    "lock_key",
]

CONSUL_LOCK_FLAGS = 0x2DDCCBC058A50C18
"""KV flags of a key locked by Consul's ``api.Lock`` / ``consul lock``."""
CONSUL_SEMAPHORE_FLAGS = 0xE0F69A2BAA414DE0
"""KV flags of the keys of Consul's ``api.Semaphore`` / ``consul lock -n N``."""
FAIR_QUEUE_FLAGS = 0x7E470677FBA509A0
"""KV flags of the marker ``PREFIX/.lock`` of a fair queue (``FairLock``, ``RWLock``). Its
entries carry this value plus 1 (exclusive), 2 (shared) or 3 (an exclusive entry released)."""
#: KV flags of a fair queue entry that waits for, or holds, the lock alone.
FAIR_EXCLUSIVE_FLAGS = FAIR_QUEUE_FLAGS + 1
#: KV flags of a fair queue entry that waits for, or holds, a shared (read) lock.
FAIR_SHARED_FLAGS = FAIR_QUEUE_FLAGS + 2
#: KV flags of an exclusive entry whose holder released it (the next waiter's signal).
FAIR_RELEASED_FLAGS = FAIR_QUEUE_FLAGS + 3
#: The key, inside a prefix, that Consul's recipes coordinate on.
LOCK_KEY = ".lock"


def lock_key(prefix: str) -> str:
    """``PREFIX/.lock``, as Consul's recipes name it (``path.Join`` semantics)."""
    return f"{prefix.rstrip('/')}/{LOCK_KEY}"


def is_fair_flags(flags: int) -> bool:
    """Whether ``flags`` mark a key of a fair queue (its marker or one of its entries)."""
    return FAIR_QUEUE_FLAGS <= flags <= FAIR_RELEASED_FLAGS
