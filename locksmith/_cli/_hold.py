"""``locksmith hold PREFIX``: hold a lock until a signal, for shell scripts.

Like ``etcdctl lock NAME`` without a command: the lock (or, with ``-n N``, a semaphore slot)
is taken exactly as ``run`` takes it, through a :class:`~._guard.Holding`; once it is held
the lease is printed on stdout (one line, flushed), and it is held until SIGINT, SIGTERM or
SIGHUP, then released (an unused ``PREFIX/.lock`` deleted) with exit 0. A lock lost while
held exits 76 at once; a signal while still waiting exits 128+N and prints nothing.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

import structlog

from locksmith._cancel import Cancel
from locksmith._cli._exit import EXIT_ERROR, EXIT_LOCK_LOST, EXIT_OK
from locksmith._cli._guard import (
    Holding,
    Signalled,
    Target,
    Terminated,
    lock_target,
    signals_cancel,
    timeout_of,
)
from locksmith._cli._output import PROG, err
from locksmith._exceptions import Cancelled

__all__ = ["HOLD_FIELDS", "cmd_hold", "lease_line"]

log = structlog.get_logger(__name__)

#: The fields of ``hold --json`` (documented in docs/cli.md).
HOLD_FIELDS = ("key", "session", "fencing_token", "limit")

#: The signals that end a hold (and, while waiting, the wait).
_ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def lease_line(target: Target, key: str, lease: Any, as_json: bool) -> str:
    """The line ``hold`` prints once the lock is held.

    Text: ``FENCING_TOKEN SESSION KEY``, the key last so that ``read -r token session key``
    reads any key, spaces included. JSON: one object on one line.
    """
    if as_json:
        limit = target.limit if target.semaphore_prefix is not None else None
        data = {
            "key": key,
            "session": lease.session_id,
            "fencing_token": lease.fencing_token,
            "limit": limit,
        }
        return json.dumps(data)
    return f"{lease.fencing_token} {lease.session_id} {key}"


def cmd_hold(args: argparse.Namespace) -> int:
    """``hold [-n N] PREFIX``: print the lease once held, hold until SIGINT/SIGTERM/SIGHUP."""
    timeout = timeout_of(args)
    target = lock_target(args, "hold")
    lost: list[Any] = []
    got = threading.Event()
    with Holding(args, target) as holding:
        guard = holding.guard

        def on_lost(event: Any) -> None:
            lost.append(event)
            got.set()

        guard.on_lost(on_lost)
        cancel = Cancel()
        signalled = Signalled()
        try:
            with signals_cancel(_ENDING, cancel) as signalled:
                with holding.waiting():
                    log.info("cli.acquiring", key=target.key, timeout=timeout)
                    lease = guard.acquire(timeout=timeout, cancel=cancel)
                if cancel.cancelled:
                    raise Cancelled("a signal came as the lock did")
                ended = guard.ended(lease)
                log.info("cli.held", key=guard.key, fencing_token=lease.fencing_token)
                try:
                    sys.stdout.write(lease_line(target, guard.key, lease, args.json) + "\n")
                    sys.stdout.flush()
                except (BrokenPipeError, OSError, ValueError) as exc:
                    err(f"{PROG}: error: cannot print the lease ({exc}): released {guard.key}")
                    return EXIT_ERROR
                # Held until a signal (the cancel) or the lease's end, whichever comes first.
                while not ended.is_set() and not cancel.event.wait(0.05):
                    pass
                if cancel.cancelled:
                    raise Cancelled("signalled while holding")
        except (Terminated, Cancelled):
            if not guard.acquired:
                err(f"{PROG}: {signalled.name} while waiting for {target.key}: gave up")
                return signalled.exit_status
            if guard.held:
                log.info("cli.releasing", key=guard.key, signal=signalled.name)
                return EXIT_OK
        got.wait(0.2)  # the loss report comes on the manager's callback thread
        reason = f" ({lost[0].reason.value})" if lost else ""
        err(f"{PROG}: error: lost the lock on {guard.key}{reason}")
        return EXIT_LOCK_LOST
