"""Singleton job guards against a real Consul: in-process guard and the child runner."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from support import CHILD, PROC, Proc, read_lines, wait_for

from locksmith import EXIT_LOCK_LOST, Consul, Lease, LockManager, run_exclusive

TTL = 10.0


def _mgr(consul: Consul, **kw: object) -> LockManager:
    kw.setdefault("ttl", "10s")
    kw.setdefault("lock_delay", "1s")
    return LockManager(consul, **kw).start()  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_guard_skips_waits_and_decorates(consul: Consul, key: str) -> None:
    calls: list[str] = []
    with _mgr(consul) as a, _mgr(consul) as b:

        @b.singleton(key)
        def nightly(tag: str) -> str:
            calls.append(tag)
            return tag

        waited: list[Lease | None] = []
        release_waiter = threading.Event()

        def wait_then_run() -> None:
            with b.singleton(key, timeout=20) as got:
                waited.append(got)
                release_waiter.wait(20)

        with a.singleton(key, value=b"host-a") as lease:
            assert lease is not None
            with b.singleton(key) as other:
                assert other is None  # someone else runs the job: skip at once
            assert nightly("skipped") is None
            with a.singleton(key) as again:  # a second guard in the same process, too
                assert again is None
            t = threading.Thread(target=wait_then_run)
            t.start()
            time.sleep(0.3)
            assert waited == []  # still waiting while a runs the job
        wait_for(lambda: waited, 20, "the waiting guard to run")
        assert waited[0] is not None and waited[0].fencing_token > lease.fencing_token
        release_waiter.set()
        t.join(10)
        assert nightly("ran") == "ran"
    assert calls == ["ran"]


def test_guard_runs_after_release_and_cancels_on_loss(consul: Consul, key: str) -> None:
    with _mgr(consul) as a, _mgr(consul) as b:
        guard = b.singleton(key)

        @guard
        def job() -> str:
            return "ran"

        with a.singleton(key):
            assert job() is None
        assert job() == "ran"
        with guard as lease:
            assert lease is not None
            consul.sessions.destroy(lease.session_id)
            assert guard.cancelled.wait(10), "the guard's cancel event was not set on loss"
        with b.singleton(key, timeout=10) as lease2:  # again, on a new session (after lock-delay)
            assert lease2 is not None and lease2.session_id != lease.session_id


def test_child_env_status_and_release(consul: Consul, key: str, tmp_path: Path) -> None:
    out = tmp_path / "child.jsonl"
    with _mgr(consul) as m:
        lock = m.lock(key, b"runner")
        started: list[tuple[Lease, int]] = []
        code = run_exclusive(
            lock,
            [sys.executable, CHILD, str(out), "--hold", "0.2", "--code", "5"],
            on_started=lambda lease, pid: started.append((lease, pid)),
        )
        assert code == 5
        assert not lock.held
        entry = consul.kv.get(key)
        assert entry is not None and entry.session is None  # released, not left locked
    lines = read_lines(out)
    assert [ln["event"] for ln in lines] == ["start", "end"]
    lease, pid = started[0]
    assert lines[0]["pid"] == pid
    assert lines[0]["env"] == {
        "LOCKSMITH_KEY": key,
        "LOCKSMITH_SESSION": lease.session_id,
        "LOCKSMITH_FENCING_TOKEN": str(lease.fencing_token),
        "CONSUL_LOCK_HELD": "true",
    }


@pytest.mark.parametrize("on_term", ["exit", "ignore"])
def test_child_terminated_within_grace_after_loss(
    consul: Consul, key: str, tmp_path: Path, on_term: str
) -> None:
    """Session destroyed from outside: SIGTERM to the group, SIGKILL after the grace period."""
    out = tmp_path / "child.jsonl"
    gc_pid = tmp_path / "grandchild.pid"
    grace = 1.5
    shell_cmd = (
        f"sleep 300 & echo $! > {gc_pid}; "
        f"exec {sys.executable} {CHILD} {out} --hold 300 --on-term {on_term}"
    )
    result: list[int] = []
    with _mgr(consul) as m:
        lock = m.lock(key)
        t = threading.Thread(
            target=lambda: result.append(run_exclusive(lock, [shell_cmd], shell=True, grace=grace))
        )
        t.start()
        wait_for(lambda: any(ln["event"] == "start" for ln in read_lines(out)), 20, "child start")
        grandchild = int(gc_pid.read_text())
        lease = lock.lease
        assert lease is not None
        consul.sessions.destroy(lease.session_id)
        lost_at = time.monotonic()
        t.join(grace + 15)
        took = time.monotonic() - lost_at
    assert result == [EXIT_LOCK_LOST]
    assert took < grace + 10, f"child outlived the lock by {took:.1f}s"
    events = [(ln["event"], ln.get("sig")) for ln in read_lines(out)]
    assert ("signal", "SIGTERM") in events
    if on_term == "ignore":
        assert events[-1] == ("signal", "SIGTERM")  # never reached its end: SIGKILLed
    else:
        assert events[-1] == ("end", None)
    wait_for(lambda: not _alive(grandchild), 5, "the grandchild (same group) to die")


def _got_signal(out: Path, name: str) -> bool:
    return any(ln.get("sig") == name for ln in read_lines(out))


def test_signals_forwarded_to_child(consul_addr: str, key: str, tmp_path: Path) -> None:
    out = tmp_path / "child.jsonl"
    p = Proc.python(
        PROC, consul_addr, "run", key, "--", sys.executable, CHILD, str(out), "--hold", "300"
    )
    try:
        p.wait_event(lambda e: e["event"] == "started", 20, "child started")
        wait_for(lambda: read_lines(out), 10, "the child's start line")
        for sig in (signal.SIGUSR1, signal.SIGHUP):
            p.signal(sig)
            name = sig.name
            wait_for(
                functools.partial(_got_signal, out, name),
                10,
                f"{name} forwarded",
            )
        p.signal(signal.SIGTERM)  # forwarded: the child exits 3, which the runner returns
        exited = p.wait_event(lambda e: e["event"] == "exited", 15, "runner exit")
        assert exited["code"] == 3
        assert p.popen.wait(10) == 3
    finally:
        p.stop()


@pytest.mark.slow
def test_child_killed_after_runner_stopped_past_ttl(
    consul: Consul, consul_addr: str, key: str, tmp_path: Path
) -> None:
    """Renewals suspended (runner SIGSTOPped): resumed past its deadline, it stops the child."""
    out = tmp_path / "child.jsonl"
    p = Proc.python(
        PROC,
        consul_addr,
        "--ttl",
        "10s",
        "run",
        "--grace",
        "1",
        key,
        "--",
        sys.executable,
        CHILD,
        str(out),
        "--hold",
        "300",
    )
    try:
        started = p.wait_event(lambda e: e["event"] == "started", 20, "child started")
        p.signal(signal.SIGSTOP)
        with _mgr(consul) as other:
            lease = other.lock(key).acquire(timeout=2 * TTL + 20)  # the server expired it
            assert lease is not None and lease.session_id != started["session"]
            p.signal(signal.SIGCONT)
            exited = p.wait_event(lambda e: e["event"] == "exited", 20, "runner exit")
            assert exited["code"] == EXIT_LOCK_LOST
            lost = p.wait_event(lambda e: e["event"] == "lost", 1, "loss event")
            assert lost["reason"] == "lease_expired"
        assert not _alive(started["pid"])
        assert ("signal", "SIGTERM") in [(ln["event"], ln.get("sig")) for ln in read_lines(out)]
    finally:
        p.stop()
