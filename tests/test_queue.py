"""The fair queue's pure decisions (locksmith._queue): no Consul, KV entries in, answers out."""

from __future__ import annotations

import base64
import itertools
import random
from typing import Any

import pytest

from locksmith import (
    CONSUL_LOCK_FLAGS,
    CONSUL_SEMAPHORE_FLAGS,
    FAIR_QUEUE_FLAGS,
    KVEntry,
    LockConflict,
)
from locksmith._compat import (
    FAIR_EXCLUSIVE_FLAGS,
    FAIR_RELEASED_FLAGS,
    FAIR_SHARED_FLAGS,
    is_fair_flags,
)
from locksmith._queue import (
    CLOSING,
    Advance,
    Gone,
    Hold,
    Marker,
    QueueView,
    Relist,
    Rewatch,
    Wait,
    decide,
    decode_queue,
    enqueue_ops,
    marker_ops,
    release_ops,
    seen_watched,
)
from locksmith._states import InvalidTransition, QueueState, advance

P = "jobs/q"
SID = "11111111-2222-3333-4444-555555555555"


def kv(
    name: str,
    index: int,
    *,
    flags: int = FAIR_EXCLUSIVE_FLAGS,
    session: str | None = SID,
    modify: int | None = None,
    value: bytes = b"",
) -> KVEntry:
    return KVEntry(f"{P}/{name}", value, flags, session, 1, index, modify or index)


def marker(index: int = 1, value: bytes = b"") -> KVEntry:
    return KVEntry(f"{P}/.lock", value, FAIR_QUEUE_FLAGS, None, 0, index, index)


def W(name: str, index: int, **kw: Any) -> KVEntry:  # noqa: N802 - reads like the queue
    """An exclusive (writer) entry."""
    kw.setdefault("flags", FAIR_EXCLUSIVE_FLAGS)
    return kv(name, index, **kw)


def R(name: str, index: int, **kw: Any) -> KVEntry:  # noqa: N802
    """A shared (reader) entry."""
    kw.setdefault("flags", FAIR_SHARED_FLAGS)
    return kv(name, index, **kw)


def view(*entries: KVEntry) -> QueueView:
    return decode_queue([marker(), *entries], P)


def key(name: str) -> str:
    return f"{P}/{name}"


# -- layout --------------------------------------------------------------------------------


def test_flags_are_a_family_distinct_from_consuls() -> None:
    fam = [FAIR_QUEUE_FLAGS, FAIR_EXCLUSIVE_FLAGS, FAIR_SHARED_FLAGS, FAIR_RELEASED_FLAGS]
    assert len(set(fam)) == 4 and all(is_fair_flags(f) for f in fam)
    assert not any(is_fair_flags(f) for f in (0, CONSUL_LOCK_FLAGS, CONSUL_SEMAPHORE_FLAGS))
    assert all(0 <= f < 2**64 for f in fam)


def test_decode_orders_by_create_index_and_reads_the_marker() -> None:
    v = decode_queue([W("c", 30), marker(5), R("a", 10), W("b", 20)], P)
    assert [e.key for e in v.entries] == [key("a"), key("b"), key("c")]
    assert v.marker is Marker.OPEN and v.marker_index == 5
    assert v.entries[0].shared and not v.entries[1].shared
    assert decode_queue([W("a", 1)], P).marker is Marker.MISSING
    assert decode_queue([marker(value=CLOSING)], P).marker is Marker.CLOSING


def test_decode_ignores_deeper_keys_and_other_prefixes() -> None:
    deeper = KVEntry(f"{P}/sub/x", b"", 0, None, 0, 3, 3)
    sibling = KVEntry(f"{P}x/y", b"", 0, None, 0, 4, 4)
    v = decode_queue([marker(), deeper, sibling, W("a", 9)], P)
    assert [e.key for e in v.entries] == [key("a")]


@pytest.mark.parametrize(
    "foreign",
    [
        KVEntry(f"{P}/.lock", b"", CONSUL_LOCK_FLAGS, SID, 1, 2, 2),  # consul lock
        KVEntry(f"{P}/.lock", b"{}", CONSUL_SEMAPHORE_FLAGS, None, 0, 2, 2),  # semaphore
        KVEntry(f"{P}/.lock", b"", 0, SID, 1, 2, 2),  # a plain lock on P/.lock
        KVEntry(f"{P}/{SID}", b"", CONSUL_SEMAPHORE_FLAGS, SID, 1, 2, 2),  # a contender key
        KVEntry(f"{P}/data", b"x", 0, None, 0, 2, 2),  # plain data
    ],
)
def test_decode_refuses_a_prefix_of_another_kind(foreign: KVEntry) -> None:
    with pytest.raises(LockConflict, match="another kind of lock"):
        decode_queue([foreign, W("a", 9)], P)


# -- who holds, whom to watch ------------------------------------------------------------


def test_exclusive_holds_when_first_and_watches_the_one_just_ahead() -> None:
    v = view(W("a", 10), W("b", 20), W("c", 30))
    assert decide(v, key("a"), False) == Hold()
    assert decide(v, key("b"), False) == Wait(v.entries[0])
    assert decide(v, key("c"), False) == Wait(v.entries[1])  # not the head


def test_dead_entries_ahead_do_not_count() -> None:
    v = view(
        W("a", 10, flags=FAIR_RELEASED_FLAGS),  # released by its holder
        W("b", 20, session=None),  # sessionless: released by someone else
        W("c", 30),
    )
    assert decide(v, key("c"), False) == Hold()
    assert [e.key for e in v.dead()] == [key("a"), key("b")]
    assert v.live() == (v.entries[2],)


def test_a_crashed_waiter_mid_queue_makes_its_successor_watch_the_next_one() -> None:
    before = view(W("a", 10), W("b", 20), W("c", 30))
    assert decide(before, key("c"), False) == Wait(before.entries[1])
    after = view(W("a", 10), W("c", 30))  # b's session ended: its entry is gone
    assert decide(after, key("c"), False) == Wait(after.entries[0])  # a, not the head's...
    assert decide(view(W("c", 30)), key("c"), False) == Hold()


def test_my_entry_gone_or_dead_means_queue_again() -> None:
    assert decide(view(W("a", 10)), key("x"), False) == Gone()
    assert decide(view(W("x", 10, flags=FAIR_RELEASED_FLAGS)), key("x"), False) == Gone()
    assert decide(view(W("x", 10, session=None)), key("x"), False) == Gone()


def test_readers_share_and_wait_only_for_a_writer_ahead() -> None:
    v = view(R("r1", 10), R("r2", 20), W("w", 30), R("r3", 40), R("r4", 50))
    assert decide(v, key("r1"), True) == Hold()
    assert decide(v, key("r2"), True) == Hold()  # readers overlap
    assert decide(v, key("w"), False) == Wait(v.entries[1])  # the reader just ahead
    # A reader arriving after a waiting writer queues behind it: no writer starves.
    assert decide(v, key("r3"), True) == Wait(v.entries[2])
    assert decide(v, key("r4"), True) == Wait(v.entries[2])  # the nearest writer, not r3
    assert [e.key for e in v.holders()] == [key("r1"), key("r2")]


def test_a_reader_behind_a_holding_writer_and_a_waiting_one_watches_the_nearest() -> None:
    v = view(W("w1", 10), R("r1", 20), W("w2", 30), R("r2", 40))
    assert decide(v, key("r1"), True) == Wait(v.entries[0])
    assert decide(v, key("r2"), True) == Wait(v.entries[2])
    assert v.holders() == (v.entries[0],)


def test_holders_of_an_empty_or_all_dead_queue() -> None:
    assert view().holders() == ()
    assert view(W("a", 1, flags=FAIR_RELEASED_FLAGS)).holders() == ()


# -- what a watch answer means -----------------------------------------------------------


def test_a_released_exclusive_entry_hands_over_without_a_reread() -> None:
    v = view(W("a", 10), W("b", 20), W("c", 30), W("d", 40))
    watched = v.entries[2]  # d watches c
    out = seen_watched(v, watched, W("c", 30, flags=FAIR_RELEASED_FLAGS, modify=45))
    assert isinstance(out, Advance)
    # c held, so a and b were gone: d holds.
    assert [e.key for e in out.view.entries] == [key("d")]
    assert decide(out.view, key("d"), False) == Hold()


def test_a_released_writer_lets_every_reader_behind_it_in() -> None:
    v = view(W("w", 10), R("r1", 20), R("r2", 30), W("w2", 40), R("r3", 50))
    out = seen_watched(v, v.entries[0], W("w", 10, flags=FAIR_RELEASED_FLAGS, modify=60))
    assert isinstance(out, Advance)
    assert decide(out.view, key("r1"), True) == Hold()
    assert decide(out.view, key("r2"), True) == Hold()
    assert decide(out.view, key("r3"), True) == Wait(out.view.find(key("w2")))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (None, Relist),  # deleted: a crash, a waiter that gave up, an outside delete
        (W("b", 20, session=None, modify=25), Relist),  # released by someone else
        (W("b", 99), Relist),  # deleted and recreated: not the entry we watched
        (W("b", 20, flags=0, modify=25), Relist),  # rewritten with foreign flags
        (W("b", 20, modify=25, value=b"new"), Rewatch),  # rewritten, still waiting
    ],
)
def test_other_changes_of_the_watched_entry(seen: KVEntry | None, expected: type) -> None:
    v = view(W("a", 10), W("b", 20), W("c", 30))
    out = seen_watched(v, v.entries[1], seen)
    assert isinstance(out, expected)
    if isinstance(out, Rewatch):
        assert out.entry.modify_index == 25


def test_a_shared_entry_marked_released_is_not_trusted() -> None:
    v = view(R("r", 10), W("w", 20))
    assert isinstance(seen_watched(v, v.entries[0], R("r", 10, flags=FAIR_RELEASED_FLAGS)), Relist)


# -- properties: mutual exclusion and FIFO over random queues -------------------------------


def _random_queue(rng: random.Random, n: int) -> list[KVEntry]:
    out = []
    for i in range(n):
        roll = rng.random()
        flags = FAIR_SHARED_FLAGS if roll < 0.4 else FAIR_EXCLUSIVE_FLAGS
        if roll > 0.9:
            flags = FAIR_RELEASED_FLAGS
        session = None if rng.random() < 0.05 else SID
        out.append(kv(f"e{i}", 10 + i * 3, flags=flags, session=session))
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_holders_are_one_writer_or_only_readers_and_always_the_first(seed: int) -> None:
    rng = random.Random(seed)
    v = view(*_random_queue(rng, rng.randint(0, 12)))
    holding = [e for e in v.live() if isinstance(decide(v, e.key, e.shared), Hold)]
    assert holding == list(v.holders())
    writers = [e for e in holding if not e.shared]
    assert len(writers) <= 1 and (not writers or len(holding) == 1)
    if v.live():
        assert holding and holding[0] == v.live()[0]  # the first live entry always holds
    # Every waiter watches a live entry ahead of it.
    for e in v.live():
        d = decide(v, e.key, e.shared)
        if isinstance(d, Wait):
            assert d.entry.live and d.entry.order < e.order


@pytest.mark.parametrize("seed", range(20))
def test_serving_the_queue_by_releases_is_fifo_for_writers(seed: int) -> None:
    """Release whoever holds, over and over: exclusive holders come in CreateIndex order, so
    their fencing tokens strictly increase."""
    rng = random.Random(seed)
    entries = [
        kv(f"e{i}", 10 + i, flags=FAIR_SHARED_FLAGS if rng.random() < 0.5 else FAIR_EXCLUSIVE_FLAGS)
        for i in range(10)
    ]
    served: list[int] = []
    live = {e.key: e for e in entries}
    while live:
        v = view(*live.values())
        holders = [e for e in v.live() if isinstance(decide(v, e.key, e.shared), Hold)]
        assert holders
        out = rng.choice(holders)
        served.append(out.create_index)
        del live[out.key]
    writers = [e.create_index for e in entries if e.flags == FAIR_EXCLUSIVE_FLAGS]
    assert [i for i in served if i in writers] == sorted(writers)
    # A writer is served only after everything that arrived before it.
    for w in writers:
        assert all(i in served[: served.index(w)] for i in served if i < w)


# -- transactions --------------------------------------------------------------------------


def test_enqueue_locks_deletes_dead_then_reads_the_tree() -> None:
    ops = enqueue_ops(P, key("me"), b"v", SID, True, drop=[key("old"), key("me")])
    assert [o["KV"]["Verb"] for o in ops] == ["lock", "delete", "get-tree"]
    lock = ops[0]["KV"]
    assert lock["Key"] == key("me") and lock["Session"] == SID
    assert lock["Flags"] == FAIR_SHARED_FLAGS and base64.b64decode(lock["Value"]) == b"v"
    assert ops[1]["KV"]["Key"] == key("old")  # never our own new entry
    assert ops[2]["KV"]["Key"] == f"{P}/"


def test_release_marks_exclusive_and_deletes_shared_under_a_session_check() -> None:
    ex = release_ops(key("me"), b"v", SID, False, drop=[key("d")])
    assert [o["KV"]["Verb"] for o in ex] == ["check-session", "lock", "delete"]
    assert ex[1]["KV"]["Flags"] == FAIR_RELEASED_FLAGS and ex[1]["KV"]["Session"] == SID
    sh = release_ops(key("me"), b"v", SID, True)
    assert [(o["KV"]["Verb"], o["KV"]["Key"]) for o in sh] == [
        ("check-session", key("me")),
        ("delete", key("me")),
    ]


def test_marker_ops_create_or_reopen_with_the_queue_flags() -> None:
    (op,) = marker_ops(P + "/", 0)
    assert op["KV"] == {
        "Verb": "cas",
        "Key": f"{P}/.lock",
        "Index": 0,
        "Value": "",
        "Flags": FAIR_QUEUE_FLAGS,
    }
    (closing,) = marker_ops(P, 7, CLOSING)
    assert base64.b64decode(closing["KV"]["Value"]) == CLOSING and closing["KV"]["Index"] == 7


# -- lifecycle -----------------------------------------------------------------------------


def test_queue_state_transitions() -> None:
    q = QueueState
    path = [q.ENQUEUING, q.WAITING, q.HELD, q.RELEASING, q.IDLE]
    state = q.IDLE
    for nxt in path:
        state = advance(state, nxt)
    assert advance(q.WAITING, q.ENQUEUING) is q.ENQUEUING  # an entry that vanished
    assert advance(advance(q.HELD, q.LOST), q.ENQUEUING) is q.ENQUEUING
    for bad in itertools.product([q.IDLE], [q.HELD, q.WAITING, q.LOST]):
        with pytest.raises(InvalidTransition):
            advance(*bad)
    with pytest.raises(InvalidTransition):
        advance(q.WAITING, q.LOST)  # only a held lease is lost
