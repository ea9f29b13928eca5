"""A re-acquire by a session that still holds the key must not hand out the same token.

Consul takes an identical acquire by the holding session as a no-op and returns the old
ModifyIndex. That happens when a loss was declared on a stale read (a deposed leader still
answering) or a release never reached Consul; the manager must then force a new write.
"""

from __future__ import annotations

from locksmith import Consul, LockManager, LossReason


def test_reacquire_while_the_session_still_holds_gets_a_new_token(consul: Consul, key: str) -> None:
    with LockManager(consul, ttl="10s", lock_delay=0, name="token-monotonic") as mgr:
        lock = mgr.lock(key, b"v")
        first = lock.acquire(timeout=10)
        assert first is not None
        # What a false loss looks like from inside: the manager forgets the hold while
        # Consul still has the key under our session.
        mgr._lose_hold(key, first, LossReason.RELEASED_BY_OTHER)
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == first.session_id
        assert lock.release() is False  # the lost lease is acknowledged
        second = lock.acquire(timeout=10)
        assert second is not None
        assert second.session_id == first.session_id
        assert second.fencing_token > first.fencing_token
        entry = consul.kv.get(key)
        assert entry is not None and entry.modify_index == second.fencing_token
