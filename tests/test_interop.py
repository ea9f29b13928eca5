"""locksmith and Consul's own lock recipes (`consul lock`, `consul lock -n N`) exclude each other.

Each holder's child appends ``start``/``end`` lines to one file with single O_APPEND writes, so
the file order is the real order: counting open intervals in it shows how many held at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import CHILD, max_concurrent, read_lines, wait_for
from support.child import append

from locksmith import (
    CONSUL_LOCK_FLAGS,
    Consul,
    LockConflict,
    LockManager,
    run_exclusive,
)
from locksmith.testing import find_consul


@pytest.fixture
def consul_lock(consul_addr: str) -> Iterator[type[ConsulLockProc]]:
    procs: list[ConsulLockProc] = []

    class Tracked(ConsulLockProc):
        def __init__(self, *args: str, n: int = 1) -> None:
            super().__init__(consul_addr, *args, n=n)
            procs.append(self)

    yield Tracked
    for p in procs:
        p.stop()


class ConsulLockProc:
    """``consul lock [-n N] PREFIX CHILD...`` (Consul's own recipe, from the same binary)."""

    def __init__(self, addr: str, prefix: str, *child: str, n: int = 1) -> None:
        argv = [
            str(find_consul()),
            "lock",
            f"-http-addr={addr}",
            f"-n={n}",
            "-verbose",
            prefix,
            *child,
        ]
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def finish(self, timeout: float) -> tuple[int, str]:
        """Wait for exit; (status, output)."""
        out, _ = self.popen.communicate(timeout=timeout)
        return self.popen.returncode, out.decode(errors="replace")

    def stop(self) -> None:
        """Kill it and its child (same process group), and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.communicate(timeout=10)


def _child(out: Path, tag: str, hold: float) -> list[str]:
    return [sys.executable, CHILD, str(out), "--tag", tag, "--hold", str(hold)]


def _order(out: Path) -> list[tuple[str, str]]:
    return [(ln["tag"], ln["event"]) for ln in read_lines(out) if ln["event"] in ("start", "end")]


def test_locksmith_holds_consul_lock_waits(
    consul: Consul, prefix: str, tmp_path: Path, consul_lock: type[ConsulLockProc]
) -> None:
    out = tmp_path / "markers.jsonl"
    with LockManager(consul, ttl="10s") as mgr:
        lock = mgr.consul_lock(prefix, b"locksmith")
        lease = lock.acquire(timeout=10)
        assert lease is not None and lease.flags == CONSUL_LOCK_FLAGS
        append(str(out), event="start", tag="locksmith")
        theirs = consul_lock(prefix, *_child(out, "consul", 0.3))
        time.sleep(1.5)  # consul lock is up and waiting
        assert _order(out) == [("locksmith", "start")]
        append(str(out), event="end", tag="locksmith")
        lock.release()
        code, text = theirs.finish(30)
        assert code == 0, text
    assert _order(out) == [
        ("locksmith", "start"),
        ("locksmith", "end"),
        ("consul", "start"),
        ("consul", "end"),
    ]


def test_consul_lock_holds_locksmith_waits(
    consul: Consul, prefix: str, tmp_path: Path, consul_lock: type[ConsulLockProc]
) -> None:
    out = tmp_path / "markers.jsonl"
    theirs = consul_lock(prefix, *_child(out, "consul", 1.5))
    wait_for(lambda: _order(out), 20, "consul lock's child to start")
    entry = consul.kv.get(f"{prefix}/.lock")
    assert entry is not None and entry.flags == CONSUL_LOCK_FLAGS and entry.session
    with LockManager(consul, ttl="10s") as mgr:
        lock = mgr.consul_lock(prefix)
        lease = lock.acquire(timeout=30)
        assert lease is not None and lease.session_id != entry.session
        append(str(out), event="start", tag="locksmith")
        append(str(out), event="end", tag="locksmith")
        lock.release()
    code, text = theirs.finish(30)
    assert code == 0, text
    assert _order(out) == [
        ("consul", "start"),
        ("consul", "end"),
        ("locksmith", "start"),
        ("locksmith", "end"),
    ]


def test_mixed_lock_holders_never_overlap(
    consul: Consul, prefix: str, tmp_path: Path, consul_lock: type[ConsulLockProc]
) -> None:
    out = tmp_path / "markers.jsonl"
    codes: list[int] = []

    def ours(i: int) -> None:
        with LockManager(consul, ttl="10s") as mgr:
            codes.append(
                run_exclusive(mgr.consul_lock(prefix), _child(out, f"ls{i}", 0.3), timeout=60)
            )

    theirs = [consul_lock(prefix, *_child(out, f"c{i}", 0.3)) for i in range(3)]
    threads = [threading.Thread(target=ours, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    results = [p.finish(90) for p in theirs]
    assert codes == [0, 0, 0]
    assert [c for c, _ in results] == [0, 0, 0], [t for _, t in results]
    order = _order(out)
    assert len(order) == 12 and {tag for tag, _ in order} == {"ls0", "ls1", "ls2", "c0", "c1", "c2"}
    assert max_concurrent(read_lines(out)) == 1
    # strictly alternating start/end of the same holder
    assert all(order[i][0] == order[i + 1][0] for i in range(0, 12, 2))


def test_semaphore_limit_3_with_consul_lock_n3(
    consul: Consul, prefix: str, tmp_path: Path, consul_lock: type[ConsulLockProc]
) -> None:
    out = tmp_path / "markers.jsonl"
    limit, each = 3, 4
    codes: list[int] = []

    def ours(i: int) -> None:
        with LockManager(consul, ttl="10s") as mgr:
            sem = mgr.semaphore(prefix, limit)
            codes.append(run_exclusive(sem, _child(out, f"ls{i}", 1.0), timeout=90))

    theirs = [consul_lock(prefix, *_child(out, f"c{i}", 1.0), n=limit) for i in range(each)]
    threads = [threading.Thread(target=ours, args=(i,)) for i in range(each)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    results = [p.finish(120) for p in theirs]
    assert codes == [0] * each
    assert [c for c, _ in results] == [0] * each, [t for _, t in results]
    lines = read_lines(out)
    assert sum(ln["event"] == "start" for ln in lines) == 2 * each
    assert sum(ln["event"] == "end" for ln in lines) == 2 * each
    peak = max_concurrent(lines)
    assert 1 < peak <= limit, peak  # a semaphore (not a mutex), never above the limit


@pytest.mark.parametrize(
    "case",
    [
        ("consul-semaphore", "locksmith-lock"),
        ("consul-lock", "locksmith-semaphore"),
        ("locksmith-semaphore", "consul-lock"),
        ("locksmith-lock", "consul-semaphore"),
    ],
    ids="-vs-".join,
)
def test_foreign_flags_conflict(
    consul: Consul,
    prefix: str,
    tmp_path: Path,
    consul_lock: type[ConsulLockProc],
    case: tuple[str, str],
) -> None:
    holder, contender = case
    out = tmp_path / "markers.jsonl"
    with LockManager(consul, ttl="10s") as mgr:
        if holder.startswith("consul"):
            n = 3 if holder == "consul-semaphore" else 1
            held = consul_lock(prefix, *_child(out, "holder", 300), n=n)
            wait_for(lambda: _order(out), 20, "consul lock's child to start")
        elif holder == "locksmith-lock":
            assert mgr.consul_lock(prefix).acquire(timeout=10) is not None
        else:
            assert mgr.semaphore(prefix, 3).acquire(timeout=10) is not None
        before = {e.key: (e.flags, e.session) for e in consul.kv.list(prefix)}

        if contender.startswith("locksmith"):
            with LockManager(consul, ttl="10s") as other:
                guard = (
                    other.consul_lock(prefix)
                    if contender == "locksmith-lock"
                    else other.semaphore(prefix, 3)
                )
                with pytest.raises(LockConflict):
                    guard.acquire(timeout=5)
        else:
            n = 3 if contender == "consul-semaphore" else 1
            code, text = consul_lock(prefix, *_child(out, "contender", 0.1), n=n).finish(30)
            assert code == 1, text
            assert "does not match" in text, text
        assert "contender" not in {tag for tag, _ in _order(out)}
        # The holder's keys are untouched (no takeover).
        after = {e.key: (e.flags, e.session) for e in consul.kv.list(prefix)}
        assert {k: after.get(k) for k in before} == before
        extra = set(after) - set(before)
        if contender == "consul-semaphore":
            # Go's refused semaphore exits before destroying its session: its contender key
            # lingers until the session's TTL. It is no holder and does not touch .lock.
            assert all(not k.endswith("/.lock") for k in extra)
        else:
            assert extra == set()  # locksmith's refused side leaves nothing behind
        if holder.startswith("consul"):
            held.stop()
