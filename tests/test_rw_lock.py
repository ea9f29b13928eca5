"""RWLock (shared readers, exclusive writers, first come first served) against a real Consul."""

from __future__ import annotations

import itertools
import threading
import time

from support import MakeManager, in_thread, wait_for

from locksmith import FAIR_QUEUE_FLAGS, Consul, FairLock, KVEntry, Lease, RWLock

LIVE = (FAIR_QUEUE_FLAGS + 1, FAIR_QUEUE_FLAGS + 2)
#: Long enough for a wrong grant to happen before the check that it did not.
SETTLE = 0.3


def live(consul: Consul, prefix: str) -> list[KVEntry]:
    entries = [e for e in consul.kv.list(prefix + "/") if e.flags in LIVE and e.session]
    return sorted(entries, key=lambda e: (e.create_index, e.key))


def queued(consul: Consul, prefix: str, n: int) -> list[KVEntry]:
    return wait_for(
        lambda: q if len(q := live(consul, prefix)) == n else None, 15, f"{n} entries queued"
    )


def test_readers_overlap_and_a_waiting_writer_keeps_later_readers_out(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    rw = [make_manager(ttl="10s").rw_lock(prefix) for _ in range(4)]
    assert isinstance(rw[0], RWLock)
    r1, r2, w, r3 = rw[0].read(), rw[1].read(), rw[2].write(), rw[3].read()
    assert isinstance(r1, FairLock) and r1.shared and not w.shared
    l1, l2 = r1.acquire(timeout=10), r2.acquire(timeout=10)
    assert l1 is not None and l2 is not None
    assert r1.held and r2.held  # readers share
    tw, rw_ = in_thread(lambda: w.acquire(timeout=60))
    queued(consul, prefix, 3)
    tr, rr = in_thread(lambda: r3.acquire(timeout=60))  # arrives after the waiting writer
    queued(consul, prefix, 4)
    time.sleep(SETTLE)
    assert not w.held and not r3.held  # r3 queues behind w: no writer starves
    assert r1.release() is True
    time.sleep(SETTLE)
    assert not w.held  # r2 still reads
    assert r2.release() is True
    tw.join(30)
    lw = rw_[0]
    assert isinstance(lw, Lease) and w.held
    assert not r3.held and tr.is_alive()
    assert lw.fencing_token > max(l1.fencing_token, l2.fencing_token)
    assert w.release() is True
    tr.join(30)
    l3 = rr[0]
    assert isinstance(l3, Lease) and r3.held and l3.fencing_token > lw.fencing_token
    assert r3.release() is True
    assert live(consul, prefix) == []


def test_writers_never_overlap_anyone(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    """Three readers and two writers loop; a shared tally checks every grant."""
    mu = threading.Lock()
    now = {"r": 0, "w": 0}
    bad: list[str] = []
    writer_tokens: list[int] = []

    def loop(side: FairLock, rounds: int) -> None:
        kind = "r" if side.shared else "w"
        for _ in range(rounds):
            lease = side.acquire(timeout=60)
            assert lease is not None
            with mu:
                now[kind] += 1
                if now["w"] > 1 or (now["w"] and now["r"]):
                    bad.append(f"{now}")
                if kind == "w":
                    writer_tokens.append(lease.fencing_token)
            time.sleep(0.02)
            with mu:
                now[kind] -= 1
            assert side.release() is True

    sides = [make_manager(ttl="10s").rw_lock(prefix).read() for _ in range(3)]
    sides += [make_manager(ttl="10s").rw_lock(prefix).write() for _ in range(2)]
    runs = [in_thread(lambda s=s: loop(s, 5)) for s in sides]  # type: ignore[misc]
    for t, result in runs:
        t.join(120)
        assert result == [None], result
    assert bad == []
    assert len(writer_tokens) == 10
    assert all(a < b for a, b in itertools.pairwise(writer_tokens)), writer_tokens


def test_a_stream_of_readers_never_starves_a_writer(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    """Readers overlap without a gap, so a writer that waited for a moment without readers
    would wait forever; readers that queue after it wait for it instead."""
    mu = threading.Lock()
    log: list[tuple[str, str, int]] = []  # (who, what, token), in order
    stop = threading.Event()
    writer_done = threading.Event()

    def reader(side: FairLock) -> None:
        while not stop.is_set():
            lease = side.acquire(timeout=60)
            assert lease is not None
            with mu:
                log.append(("r", "acquired", lease.fencing_token))
            time.sleep(0.05)
            with mu:
                log.append(("r", "released", lease.fencing_token))
            assert side.release() is True

    readers = [make_manager(ttl="10s").rw_lock(prefix).read() for _ in range(3)]
    runs = [in_thread(lambda s=s: reader(s)) for s in readers]  # type: ignore[misc]
    wait_for(lambda: sum(1 for e in log if e[1] == "acquired") >= 6, 20, "readers streaming")
    writer = make_manager(ttl="10s").rw_lock(prefix).write()
    lease = writer.acquire(timeout=30)
    assert lease is not None
    with mu:
        log.append(("w", "acquired", lease.fencing_token))
        assert all(not s.held for s in readers)
    time.sleep(0.05)
    with mu:
        log.append(("w", "released", lease.fencing_token))
    assert writer.release() is True
    writer_done.set()
    wait_for(lambda: sum(1 for e in log if e[2] > lease.fencing_token) >= 2, 20, "readers after")
    stop.set()
    for t, result in runs:
        t.join(60)
        assert result == [None], result
    w_in = log.index(("w", "acquired", lease.fencing_token))
    w_out = log.index(("w", "released", lease.fencing_token))
    for i, (who, what, token) in enumerate(log):
        if who == "r" and what == "acquired" and token > lease.fencing_token:
            assert i > w_out, "a reader that queued after the writer went first"
        if who == "r" and what == "acquired" and i < w_in:
            assert token < lease.fencing_token


def test_a_writer_waiting_on_readers_survives_a_reader_crash(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    """The writer watches the reader just ahead; that reader's session ends: the writer
    reads the queue again and watches the other reader, which still holds."""
    r1, r2 = (make_manager(ttl="10s").rw_lock(prefix).read() for _ in range(2))
    w = make_manager(ttl="10s").rw_lock(prefix).write()
    l1, l2 = r1.acquire(timeout=10), r2.acquire(timeout=10)
    assert l1 is not None and l2 is not None
    tw, rw_ = in_thread(lambda: w.acquire(timeout=60))
    queued(consul, prefix, 3)
    consul.sessions.destroy(l2.session_id)  # r2, just ahead of the writer, crashes
    queued(consul, prefix, 2)
    time.sleep(SETTLE)
    assert not w.held and r1.held
    assert r1.release() is True
    tw.join(30)
    assert isinstance(rw_[0], Lease) and w.held
    assert w.release() is True
    assert r2.release() is False  # its lease had been lost


def test_a_fair_lock_is_a_writer_of_the_same_queue(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    a, b = make_manager(ttl="10s"), make_manager(ttl="10s")
    reader = a.rw_lock(prefix).read()
    exclusive = b.fair_lock(prefix)
    with reader:
        assert exclusive.acquire(blocking=False) is None
    with exclusive:
        assert a.rw_lock(prefix).read().acquire(blocking=False) is None
        assert a.rw_lock(prefix).write().acquire(blocking=False) is None
    assert live(consul, prefix) == []
