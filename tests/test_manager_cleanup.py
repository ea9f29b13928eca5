"""The cleanup thread must never undo a hold that the same session took again.

An acquire whose request timed out may have succeeded, so its key is queued for release. If
the same Lock then takes the key on the same session, that queued release must not run.
"""

from __future__ import annotations

from locksmith import Consul, LockManager, LockState


def test_queued_release_does_not_undo_a_new_hold_of_the_same_session(
    consul: Consul, key: str
) -> None:
    with LockManager(consul, ttl="10s", lock_delay=0, name="cleanup-race") as mgr:
        lock = mgr.lock(key, b"v")
        lease = lock.acquire(timeout=10)
        assert lease is not None
        # As if an earlier acquire of this key on this session had timed out and given up.
        with mgr._mu:
            mgr._pending_releases[(key, lease.session_id)] = (b"v", 0)
        mgr._cleanup_once()
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == lease.session_id
        assert lock.held
        lock.release()
        entry = consul.kv.get(key)
        assert entry is not None and entry.session is None


def test_queued_release_of_an_old_session_still_runs_while_the_key_is_claimed(
    consul: Consul, key: str
) -> None:
    old = consul.sessions.create(ttl="10s", lock_delay="0s", name="cleanup-race-old")
    try:
        assert consul.kv.put(key, b"old", acquire=old)
        with LockManager(consul, ttl="10s", lock_delay=0, name="cleanup-race") as mgr:
            lock = mgr.lock(key, b"new")
            assert mgr._claim(lock, None)  # a local acquire is under way
            try:
                with mgr._mu:
                    mgr._pending_releases[(key, old)] = (b"old", 0)
                mgr._cleanup_once()
            finally:
                mgr._unclaim(lock, LockState.UNLOCKED)
            entry = consul.kv.get(key)
            assert entry is not None and entry.session is None  # released for the old session
    finally:
        consul.sessions.destroy(old)
