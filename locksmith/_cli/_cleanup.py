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

A fair queue's marker needs one more step, because joining the queue writes an entry, not
the marker: the marker is first marked ``closing`` (check-and-set), the queue read again, and
the marker deleted (check-and-set on the closing write) only if still no entry waits or
holds. A contender that joined before the mark is seen by the second read; one that joins
after it sees ``closing`` and re-opens the marker (which fails the delete), or finds it gone
and creates it again. Dead entries (released, sessionless) go in the same transaction.
"""

from __future__ import annotations

import enum

from locksmith._client import Consul
from locksmith._compat import CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS, lock_key
from locksmith._exceptions import LockConflict
from locksmith._models import KVEntry
from locksmith._queue import CLOSING, Marker, decode_queue, marker_ops

__all__ = [
    "Cleanup",
    "delete_if_unchanged",
    "destroy_fair_key",
    "destroy_lock_key",
    "destroy_semaphore_key",
]


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


def destroy_fair_key(consul: Consul, prefix: str, *, timeout: float | None = None) -> Cleanup:
    """Delete a fair queue's marker ``PREFIX/.lock`` (and its dead entries) if nobody waits or
    holds, without ever deleting it under a contender that joins meanwhile (see above)."""
    directory = f"{prefix.rstrip('/')}/"
    key = lock_key(prefix)
    try:
        view = decode_queue(consul.kv.list(directory, timeout=timeout), prefix)
    except LockConflict:
        return Cleanup.FOREIGN
    if view.marker is Marker.MISSING:
        return Cleanup.ABSENT
    if view.live():
        return Cleanup.IN_USE
    closing = consul.kv.txn(
        marker_ops(prefix, view.marker_index, CLOSING),
        operation="kv.cas",
        resource=key,
        timeout=timeout,
    )
    if not closing.ok or not closing.entries or closing.entries[0] is None:
        return Cleanup.CHANGED
    index = closing.entries[0].modify_index
    try:
        again = decode_queue(
            consul.kv.list(directory, consistency="consistent", timeout=timeout), prefix
        )
    except LockConflict:
        return Cleanup.FOREIGN
    if again.live():
        # Someone joined before the mark: open the marker again (or they will, later).
        consul.kv.txn(marker_ops(prefix, index), operation="kv.cas", resource=key, timeout=timeout)
        return Cleanup.IN_USE
    ops = [{"KV": {"Verb": "delete-cas", "Key": key, "Index": index}}]
    ops += [{"KV": {"Verb": "delete", "Key": e.key}} for e in again.dead()[:63]]
    out = consul.kv.txn(ops, operation="kv.delete_cas", resource=key, timeout=timeout)
    return Cleanup.DELETED if out.ok else Cleanup.CHANGED
