"""Mutual exclusion under contention: threads and processes on one key, checked afterwards.

Every holder records its hold interval on ``time.monotonic`` (CLOCK_MONOTONIC: one clock for
every process on the machine) between the return of ``acquire`` and the call to ``release``,
plus the lease's fencing token. The checker then demands that no two intervals overlap and
that tokens strictly increase in acquisition order.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support import LOCK_CHILD, MakeManager, child_env, unique

from locksmith import Lock, LockManager

CYCLES = 8
HOLD = 0.005


@dataclass(frozen=True)
class Hold:
    """One recorded hold."""

    who: str
    start: float
    end: float
    token: int


def check_exclusion(holds: list[Hold]) -> None:
    """Fail unless the holds are disjoint and their tokens grow in acquisition order."""
    ordered = sorted(holds, key=lambda h: h.start)
    for prev, cur in itertools.pairwise(ordered):
        assert prev.end <= cur.start, f"overlap: {prev} and {cur}"
        assert prev.token < cur.token, f"fencing token did not increase: {prev} then {cur}"


def test_checker_catches_overlap_and_token_regressions() -> None:
    ok = [Hold("a", 0.0, 1.0, 5), Hold("b", 1.0, 2.0, 7)]
    check_exclusion(ok)
    with pytest.raises(AssertionError, match="overlap"):
        check_exclusion([Hold("a", 0.0, 1.5, 5), Hold("b", 1.0, 2.0, 7)])
    with pytest.raises(AssertionError, match="token"):
        check_exclusion([Hold("a", 0.0, 1.0, 7), Hold("b", 1.0, 2.0, 7)])


@pytest.fixture
def managers(make_manager: MakeManager) -> Callable[..., LockManager]:
    def make(**kwargs: Any) -> LockManager:
        return make_manager(
            timeout=10.0, ttl="15s", lock_delay="5s", name=unique("contend"), **kwargs
        )

    return make


def _cycle(lock: Lock, who: str, n: int, out: list[Hold], errors: list[BaseException]) -> None:
    try:
        for _ in range(n):
            lease = lock.acquire(timeout=120)
            assert lease is not None
            start = time.monotonic()
            time.sleep(HOLD)
            end = time.monotonic()
            assert lock.release() is True
            out.append(Hold(who, start, end, lease.fencing_token))
    except BaseException as exc:
        errors.append(exc)


def _spawn(consul_addr: str, key: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, LOCK_CHILD, "cycles", consul_addr, key, str(n), str(HOLD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def test_threads_and_processes_exclude_each_other(
    consul_addr: str, managers: Callable[..., LockManager]
) -> None:
    key = unique("c/key")
    holds: list[Hold] = []
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    # Three threads with a manager each.
    for i in range(3):
        lock = managers().lock(key, value=f"own-{i}")
        threads.append(
            threading.Thread(target=_cycle, args=(lock, f"own-{i}", CYCLES, holds, errors))
        )
    # Three threads sharing one manager: two with their own Lock, one pair sharing a Lock.
    shared = managers()
    shared_lock = shared.lock(key, value="shared")
    for i, lock in enumerate([shared.lock(key), shared.lock(key), shared_lock, shared_lock]):
        threads.append(
            threading.Thread(target=_cycle, args=(lock, f"shared-{i}", CYCLES, holds, errors))
        )
    # Two processes.
    procs = [_spawn(consul_addr, key, CYCLES) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdin is not None
            assert json.loads(p.stdout.readline()) == {"ready": True}
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        for i, p in enumerate(procs):
            assert p.stdout is not None
            for line in p.stdout:
                rec = json.loads(line)
                if rec.get("done"):
                    break
                holds.append(Hold(f"proc-{i}", rec["start"], rec["end"], rec["token"]))
            assert p.wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert len(holds) == CYCLES * (3 + 4 + 2)
    assert {h.who for h in holds} == {
        *(f"own-{i}" for i in range(3)),
        *(f"shared-{i}" for i in range(4)),
        "proc-0",
        "proc-1",
    }
    check_exclusion(holds)
    ordered = sorted(holds, key=lambda h: h.start)
    switches = sum(a.who != b.who for a, b in itertools.pairwise(ordered))
    print(f"contention: {len(holds)} holds, {switches} hand-overs between holders")
    assert switches >= 18  # the key changed hands often: they really contended
