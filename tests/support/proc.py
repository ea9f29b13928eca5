"""A locksmith process for the recipe tests: election candidate, registration holder, runner.

Prints one JSON object per line on stdout for each event (``{"event": ..., "t": ...}``);
library logs go to stderr. Usage::

    proc.py ADDR [--ttl 10s] [--lock-delay 1s] candidate KEY NAME
    proc.py ADDR [--ttl 10s] register KEY [KEY ...]
    proc.py ADDR [--ttl 10s] run [--consul-layout] [--grace 5] KEY -- CMD...
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
from typing import Any

import structlog

from locksmith import Consul, Lease, LockManager, run_exclusive


def emit(event: str, **fields: Any) -> None:
    """Print one event line (flushed at once: the test reads it live)."""
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def candidate(mgr: LockManager, key: str, name: str) -> None:
    """Campaign forever (rejoining after a loss); report elections and depositions."""
    election = mgr.election(key, value=name)
    election.on_elected(
        lambda e: emit(
            "elected", name=name, token=e.lease.fencing_token, session=e.lease.session_id
        )
    )
    election.on_deposed(
        lambda e: emit(
            "deposed",
            name=name,
            reason=e.reason.value if e.reason else None,
            token=e.lease.fencing_token,
        )
    )
    emit("ready", name=name)
    election.run(lambda lease, cancel: cancel.wait(), rejoin=True)


def _reregistered(key: str, lease: Lease) -> None:
    emit("reregistered", key=key, session=lease.session_id)


def register(mgr: LockManager, keys: list[str]) -> None:
    """Register the keys, report their sessions, then live until killed."""
    regs = []
    for key in keys:
        reg = mgr.register(key, value=key)
        reg.on_reregistered(functools.partial(_reregistered, key))
        regs.append(reg)
        lease = reg.lease
        emit("registered", key=key, session=lease.session_id if lease else None)
    threading.Event().wait()


def run(mgr: LockManager, key: str, consul_layout: bool, grace: float, cmd: list[str]) -> int:
    """run_exclusive on a lock (in the main thread, so signals are forwarded)."""
    lock = mgr.consul_lock(key) if consul_layout else mgr.lock(key)
    lock.on_lost(lambda e: emit("lost", key=e.key, reason=e.reason.value))
    code = run_exclusive(
        lock,
        cmd,
        grace=grace,
        on_started=lambda lease, pid: emit(
            "started", pid=pid, session=lease.session_id, token=lease.fencing_token
        ),
    )
    emit("exited", code=code)
    return code


def main() -> int:
    """Parse the command line and run one role."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("--ttl", default="10s")
    p.add_argument("--lock-delay", default="1s")
    sub = p.add_subparsers(dest="role", required=True)
    c = sub.add_parser("candidate")
    c.add_argument("key")
    c.add_argument("name")
    r = sub.add_parser("register")
    r.add_argument("keys", nargs="+")
    x = sub.add_parser("run")
    x.add_argument("key")
    x.add_argument("--consul-layout", action="store_true")
    x.add_argument("--grace", type=float, default=5.0)
    x.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    with LockManager(Consul(a.addr), ttl=a.ttl, lock_delay=a.lock_delay, name=a.role) as mgr:
        if a.role == "candidate":
            candidate(mgr, a.key, a.name)
        elif a.role == "register":
            register(mgr, a.keys)
        else:
            cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
            return run(mgr, a.key, a.consul_layout, a.grace, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
