"""Constants of Consul's own lock recipes, so locksmith and Consul's tools exclude each other.

Consul's Go ``api.Lock`` (and ``consul lock PREFIX``) locks ``PREFIX/.lock`` marked with
:data:`CONSUL_LOCK_FLAGS`; ``api.Semaphore`` (and ``consul lock -n N PREFIX``) keeps contender
keys ``PREFIX/<session>`` plus ``PREFIX/.lock`` holding ``{"Limit": N, "Holders": {...}}``,
all marked with :data:`CONSUL_SEMAPHORE_FLAGS`. A key carrying other flags belongs to another
kind of lock: both sides refuse to take it over.
"""

from __future__ import annotations

__all__ = ["CONSUL_LOCK_FLAGS", "CONSUL_SEMAPHORE_FLAGS", "LOCK_KEY", "lock_key"]

CONSUL_LOCK_FLAGS = 0x2DDCCBC058A50C18
"""KV flags of a key locked by Consul's ``api.Lock`` / ``consul lock``."""
CONSUL_SEMAPHORE_FLAGS = 0xE0F69A2BAA414DE0
"""KV flags of the keys of Consul's ``api.Semaphore`` / ``consul lock -n N``."""
#: The key, inside a prefix, that Consul's recipes coordinate on.
LOCK_KEY = ".lock"


def lock_key(prefix: str) -> str:
    """``PREFIX/.lock``, as Consul's recipes name it (``path.Join`` semantics)."""
    return f"{prefix.rstrip('/')}/{LOCK_KEY}"
