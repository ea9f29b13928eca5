"""Delete ``PREFIX/.lock`` after a release when nobody uses it, as Consul's own recipes do.

Consul's ``api.Lock.Destroy`` and ``api.Semaphore.Destroy`` (which ``consul lock`` calls once
its child exited and the lock was released) delete the ``.lock`` key when it is unused; without
this, every prefix ever locked keeps a free ``.lock`` key forever, which ``locksmith locks``
lists as "free (maybe in lock-delay)".

Unused means, for a lock, no session holds the key; for a semaphore, no contender key under the
prefix is held by a session (so no holder listed in ``.lock`` is alive, and nobody waits). The
key is then deleted with a check-and-set on the ModifyIndex that was read, so a concurrent
acquirer is never hurt: if anyone took or changed the key in between, the delete does nothing.
A key of another recipe (other flags) is never touched. Deleting does not cut a lock-delay
window short: Consul ties the window to the key's name, not to the entry.
"""

from __future__ import annotations

import enum

from locksmith._client import Consul
from locksmith._compat import CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS, lock_key
from locksmith._models import KVEntry

__all__ = ["Cleanup", "delete_if_unchanged", "destroy_lock_key", "destroy_semaphore_key"]


class Cleanup(enum.Enum):
    """What became of ``PREFIX/.lock``."""

    DELETED = "deleted"
    ABSENT = "absent"  # nothing to delete
    IN_USE = "in_use"  # held (lock), or a holder or contender is alive (semaphore)
    FOREIGN = "foreign"  # another recipe's key (other flags): never ours to delete
    CHANGED = "changed"  # someone wrote the key between the read and the delete


def delete_if_unchanged(consul: Consul, key: str, index: int, timeout: float | None) -> bool:
    """Delete ``key`` only if its ModifyIndex is still ``index`` (one ``delete-cas``)."""
    out = consul.kv.txn(
        [{"KV": {"Verb": "delete-cas", "Key": key, "Index": index}}],
        operation="kv.delete_cas",
        resource=key,
        timeout=timeout,
    )
    return out.ok


def destroy_lock_key(consul: Consul, prefix: str, *, timeout: float | None = None) -> Cleanup:
    """Delete ``PREFIX/.lock`` of a lock (``api.Lock.Destroy``) if no session holds it."""
    key = lock_key(prefix)
    entry = consul.kv.get(key, timeout=timeout)
    if entry is None:
        return Cleanup.ABSENT
    if entry.flags != CONSUL_LOCK_FLAGS:
        return Cleanup.FOREIGN
    if entry.session is not None:
        return Cleanup.IN_USE
    if delete_if_unchanged(consul, key, entry.modify_index, timeout):
        return Cleanup.DELETED
    return Cleanup.CHANGED


def _semaphore_in_use(entries: list[KVEntry], key: str) -> bool:
    """Whether a contender key under the prefix is held: a live holder or a waiter.

    A holder listed in ``.lock`` without a live contender key is dead (every semaphore
    implementation prunes it), so no held contender key means no live holder.
    """
    return any(e.session is not None for e in entries if e.key != key)


def destroy_semaphore_key(consul: Consul, prefix: str, *, timeout: float | None = None) -> Cleanup:
    """Delete ``PREFIX/.lock`` of a semaphore (``api.Semaphore.Destroy``) if unused."""
    key = lock_key(prefix)
    entries = consul.kv.list(f"{prefix.rstrip('/')}/", timeout=timeout)
    entry = next((e for e in entries if e.key == key), None)
    if entry is None:
        return Cleanup.ABSENT
    if entry.flags != CONSUL_SEMAPHORE_FLAGS:
        return Cleanup.FOREIGN
    if _semaphore_in_use(entries, key):
        return Cleanup.IN_USE
    if delete_if_unchanged(consul, key, entry.modify_index, timeout):
        return Cleanup.DELETED
    return Cleanup.CHANGED
