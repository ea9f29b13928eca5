"""A child process holding locksmith locks, driven by the multi-process tests.

Usage (one JSON object per stdout line; logs go to stderr):
    lock_child.py cycles ADDR KEY N HOLD   # waits for "go" on stdin, then N acquire/release
                                           # cycles: {"start", "end", "token", "session"}
    lock_child.py hold ADDR KEY            # acquires (TTL 10s), reports, then reports the
                                           # first loss: {"lost", "held", "fenced", ...}
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import structlog

from locksmith import Consul, LockLost, LockManager, LossEvent


def emit(**fields: object) -> None:
    """Write one JSON line to stdout."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def cycles(addr: str, key: str, n: int, hold: float) -> None:
    """Acquire and release ``key`` ``n`` times, reporting each hold interval."""
    with LockManager(Consul(addr), ttl="15s", lock_delay="5s", name="lock-child") as mgr:
        lock = mgr.lock(key, value=f"pid-{os.getpid()}")
        emit(ready=True)
        sys.stdin.readline()  # "go"
        for _ in range(n):
            lease = lock.acquire(timeout=120)
            assert lease is not None
            start = time.monotonic()
            time.sleep(hold)
            end = time.monotonic()
            lock.release()
            emit(start=start, end=end, token=lease.fencing_token, session=lease.session_id)
    emit(done=True)


def hold(addr: str, key: str) -> None:
    """Hold ``key`` until its loss, then report what the process saw of it."""
    lost = threading.Event()
    events: list[LossEvent] = []

    def on_lost(event: LossEvent) -> None:
        events.append(event)
        lost.set()

    with LockManager(Consul(addr), ttl="10s", lock_delay="30s", name="lock-child") as mgr:
        lock = mgr.lock(key, value=b"child")
        lock.on_lost(on_lost)
        lease = lock.acquire(timeout=30)
        assert lease is not None
        emit(acquired=True, session=lease.session_id, token=lease.fencing_token)
        if not lost.wait(120):
            emit(error="no loss within 120 s")
            return
        held = lock.held
        try:
            lock.fenced_put(key + "-fenced", b"x")
            fenced = "written"
        except LockLost:
            fenced = "refused"
        time.sleep(1.0)  # a second on_lost would show up here
        emit(
            lost=events[0].reason.value,
            held=held,
            fenced=fenced,
            count=len(events),
            lease_session=events[0].lease.session_id,
        )
        sys.stdin.readline()  # "exit"
    emit(closed=True)


def main() -> None:
    """Dispatch on the first argument."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    mode, addr, key, *rest = sys.argv[1:]
    if mode == "cycles":
        cycles(addr, key, int(rest[0]), float(rest[1]))
    elif mode == "hold":
        hold(addr, key)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
