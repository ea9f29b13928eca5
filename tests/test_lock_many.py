"""lock_many: a set of keys held all or none, against a real Consul."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from support import MakeManager, wait_for

from locksmith import (
    Consul,
    LeaseSet,
    LockState,
    LockTimeout,
    LossEvent,
    LossReason,
    NotHeld,
    ValidationError,
)


def _holders(consul: Consul, prefix: str) -> dict[str, str | None]:
    return {e.key: e.session for e in consul.kv.list(prefix + "/")}


def test_a_set_is_taken_in_one_transaction_with_one_token(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    mgr = make_manager()
    keys = [f"{prefix}/{c}" for c in "dcbae"]  # any order: taken sorted
    locks = mgr.lock_many(keys, value="worker-1")
    assert locks.keys == tuple(sorted(keys)) and locks.state is LockState.UNLOCKED
    ls = locks.acquire(timeout=10)
    assert isinstance(ls, LeaseSet) and locks.held and locks.lease_set is ls
    entries = {e.key: e for e in consul.kv.list(prefix + "/")}
    assert {k: e.session for k, e in entries.items()} == dict.fromkeys(ls.keys, ls.session_id)
    # One transaction: every key was written at the same Raft index, the set's token.
    assert {e.modify_index for e in entries.values()} == {ls.fencing_token}
    assert all(e.value == b"worker-1" for e in entries.values())
    assert [lease.key for lease in ls.leases] == list(ls.keys)
    assert locks.release() is True
    assert not locks.held and locks.state is LockState.UNLOCKED
    assert set(_holders(consul, prefix).values()) == {None}
    with pytest.raises(NotHeld):
        locks.release()


def test_a_large_set_goes_in_batches_and_its_token_is_the_last(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    mgr = make_manager()
    keys = [f"{prefix}/k{i:04d}" for i in range(300)]
    with mgr.lock_many(keys) as ls:
        indexes = Counter(e.modify_index for e in consul.kv.list(prefix + "/"))
        assert sorted(indexes.values()) == [44, 64, 64, 64, 64]  # 300 = 4 x 64 + 44
        assert ls.fencing_token == max(indexes)
        assert len(ls) == 300
    assert set(_holders(consul, prefix).values()) == {None}


def test_all_or_none_a_busy_key_in_the_last_batch_leaves_nothing_held(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    a, b = make_manager(lock_delay=0), make_manager(lock_delay=0)
    keys = [f"{prefix}/k{i:03d}" for i in range(130)]
    blocker = b.lock(keys[-1])
    assert blocker.acquire(timeout=10) is not None
    locks = a.lock_many(keys)
    with pytest.raises(LockTimeout, match="130 keys"):
        locks.acquire(timeout=1.5)
    assert locks.state is LockState.UNLOCKED and not locks.held
    sid = a.session()
    # The two batches taken are given back at once (no key left to wait out a TTL).
    wait_for(lambda: sid not in _holders(consul, prefix).values(), 10, "the rollback")
    assert locks.acquire(blocking=False) is None
    wait_for(lambda: sid not in _holders(consul, prefix).values(), 10, "the second rollback")
    # The blocker leaves: a waiting set takes everything.
    got: list[LeaseSet | None] = []
    t = threading.Thread(target=lambda: got.append(locks.acquire(timeout=20)))
    t.start()
    wait_for(lambda: a.snapshot().waiting == (keys[-1],), 10, "the set to wait for the key")
    blocker.release()
    t.join(20)
    assert got and got[0] is not None
    assert set(_holders(consul, prefix).values()) == {sid}
    locks.release()


def test_overlapping_sets_never_deadlock_and_never_overlap(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    keys = [f"{prefix}/k{i:03d}" for i in range(100)]
    left, right = keys[:70], keys[30:][::-1]  # overlap in the middle, named in any order
    inside: list[str] = []
    errors: list[BaseException] = []
    rounds = 5

    def worker(name: str, mine: list[str]) -> None:
        try:
            locks = make_manager(lock_delay=0).lock_many(mine)
            for _ in range(rounds):
                with locks:
                    inside.append(name)
                    held = _holders(consul, prefix)
                    assert all(held.get(k) == locks.lease_set.session_id for k in mine)  # type: ignore[union-attr]
                    inside.append(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=("left", left)),
        threading.Thread(target=worker, args=("right", right)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors
    # Never interleaved: each holder's enter and exit marks are adjacent.
    assert len(inside) == 4 * rounds
    assert all(inside[i] == inside[i + 1] for i in range(0, len(inside), 2))


def test_losing_one_key_loses_the_set_once_and_frees_the_others(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    mgr = make_manager()
    keys = [f"{prefix}/{c}" for c in "abc"]
    locks = mgr.lock_many(keys)
    lost: list[LossEvent] = []
    locks.on_lost(lost.append)
    ls = locks.acquire(timeout=10)
    assert ls is not None
    ended = locks.ended(ls)
    consul.kv.delete(keys[1])
    assert ended.wait(10)
    wait_for(lambda: lost, 10, "the loss callback")
    assert len(lost) == 1
    assert lost[0].key == keys[1] and lost[0].keys == tuple(keys)
    assert lost[0].reason is LossReason.KEY_DELETED
    assert not locks.held
    assert locks.state is LockState.LOST
    # The keys still held are given back: nobody waits on a set nobody has.
    wait_for(lambda: set(_holders(consul, prefix).values()) == {None}, 10, "the other keys freed")
    assert locks.release() is False  # the loss is acknowledged
    assert locks.state.value == "unlocked"


def test_session_invalidation_is_one_loss_for_the_set(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    mgr = make_manager()
    locks = mgr.lock_many([f"{prefix}/{i}" for i in range(80)])
    lost: list[LossEvent] = []
    locks.on_lost(lost.append)
    ls = locks.acquire(timeout=10)
    assert ls is not None
    consul.sessions.destroy(ls.session_id)
    wait_for(lambda: lost, 10, "the loss callback")
    assert len(lost) == 1 and len(lost[0].keys) == 80
    assert lost[0].reason is LossReason.SESSION_INVALIDATED
    assert not locks.held


def test_a_local_lock_and_a_set_wait_for_each_other(prefix: str, make_manager: MakeManager) -> None:
    mgr = make_manager()
    single = mgr.lock(f"{prefix}/b")
    lease = single.acquire(timeout=10)
    assert lease is not None
    locks = mgr.lock_many([f"{prefix}/a", f"{prefix}/b"])
    # The same session: Consul would let the set take b; the manager must not.
    assert locks.acquire(blocking=False) is None
    with pytest.raises(LockTimeout):
        locks.acquire(timeout=0.3)
    got: list[LeaseSet | None] = []
    t = threading.Thread(target=lambda: got.append(locks.acquire(timeout=20)))
    t.start()
    wait_for(lambda: mgr.snapshot().queued == (f"{prefix}/b",), 10, "the set to queue")
    single.release(lease)
    t.join(20)
    assert got and got[0] is not None
    assert single.acquire(blocking=False) is None  # and the other way round
    locks.release()


def test_close_releases_a_held_set(consul: Consul, prefix: str, make_manager: MakeManager) -> None:
    mgr = make_manager()
    ls = mgr.lock_many([f"{prefix}/{i:03d}" for i in range(150)]).acquire(timeout=10)
    assert ls is not None
    mgr.close(timeout=10)
    assert set(_holders(consul, prefix).values()) == {None}


@pytest.mark.parametrize(
    ("keys", "value", "match"),
    [
        ([], b"", "at least one key"),
        ("abc", b"", "iterable of keys"),
        (["a", 3], b"", "must be a string"),
        (["a", "b", "a"], b"", "'a' is named twice"),
        (["jobs/x/.lock"], b"", "consul_lock and semaphores"),
        (["a/../b"], b"", "key"),
        ([f"k{i}" for i in range(64)], b"x" * 9000, "smaller value"),
    ],
)
def test_bad_sets_are_refused_before_any_request(
    make_manager: MakeManager, keys: object, value: bytes, match: str
) -> None:
    mgr = make_manager()
    with pytest.raises(ValidationError, match=match):
        mgr.lock_many(keys, value)  # type: ignore[arg-type]
    assert not mgr.session_ids  # no session was created: nothing went to Consul
