"""``locksmith run`` and ``locksmith elect``: a command run while a lock or leadership is held.

``run`` takes Consul's lock or semaphore layout on PREFIX, ``elect`` the election's lock,
through a :class:`~._guard.Holding`; the child is handed to
:func:`locksmith._child.run_exclusive`. COMMAND is looked up before anything is acquired
(:func:`check_command`). SIGTERM/SIGHUP while waiting end the wait cleanly; while COMMAND
runs, ``run_exclusive`` forwards signals to it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import threading
from typing import Any

import structlog

from locksmith._cancel import Cancel
from locksmith._cli._exit import (
    EXIT_CANNOT_EXECUTE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_LOCK_LOST,
    EXIT_USAGE,
    CLIError,
)
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

__all__ = ["SHELL", "check_command", "cmd_elect", "cmd_run"]

log = structlog.get_logger(__name__)

#: The shell of ``--shell`` (:func:`locksmith._child.run_exclusive` runs ``/bin/sh -c``).
SHELL = "/bin/sh"


def _child_argv(args: argparse.Namespace) -> list[str]:
    if not args.command:
        raise CLIError(
            f"{PROG} {args.command_name}: COMMAND is missing (usage: {PROG} "
            f"{args.command_name} ... -- COMMAND [ARGS...])",
            EXIT_USAGE,
        )
    return list(args.command)


def _not_found(what: str) -> CLIError:
    return CLIError(f"COMMAND not found: {what!r}", EXIT_COMMAND_NOT_FOUND)


def _not_executable(path: str) -> CLIError:
    return CLIError(f"COMMAND is not executable: {path!r}", EXIT_CANNOT_EXECUTE)


def check_command(argv: list[str], shell: bool) -> None:
    """Find COMMAND before any lock is taken, as the exec that runs it later would.

    A command that cannot run exits 127 (not found) or 126 (found, not executable) at once,
    instead of after waiting for the lock and taking it for nothing. A name without ``/`` is
    looked up on ``PATH``; a path must be an executable file. With ``--shell`` the shell
    resolves COMMAND itself, so only the shell is checked.
    """
    if shell:
        if not os.path.isfile(SHELL):
            raise CLIError(f"--shell needs {SHELL}, which does not exist", EXIT_COMMAND_NOT_FOUND)
        if not os.access(SHELL, os.X_OK):
            raise CLIError(f"--shell needs {SHELL}, which is not executable", EXIT_CANNOT_EXECUTE)
        return
    prog = argv[0]
    if "/" in prog:
        if not os.path.exists(prog):
            raise _not_found(prog)
        if os.path.isdir(prog) or not os.access(prog, os.X_OK):
            raise _not_executable(prog)
        return
    if shutil.which(prog) is not None:
        return
    # Not found as an executable: a file of that name on PATH is "not executable" (126).
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", prog)
        if os.path.exists(candidate):
            raise _not_executable(candidate)
    raise _not_found(prog)


#: Signals that give up a wait (while COMMAND runs they are forwarded to it instead).
_GIVE_UP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _run_guarded(args: argparse.Namespace, argv: list[str], target: Target) -> int:
    from locksmith._child import run_exclusive  # noqa: PLC0415 - loaded on demand

    timeout = timeout_of(args)
    check_command(argv, args.shell)
    started = threading.Event()

    def on_started(lease: Any, pid: int) -> None:
        started.set()
        log.info("cli.child_started", key=lease.key, pid=pid, fencing_token=lease.fencing_token)

    cancel = Cancel()
    with Holding(args, target) as holding:
        guard = holding.guard
        signalled = Signalled()
        try:
            with (
                signals_cancel(_GIVE_UP, cancel) as signalled,
                holding.waiting(lambda: started.is_set() or guard.held),
            ):
                log.info("cli.acquiring", key=target.key, timeout=timeout)
                status = run_exclusive(
                    guard,
                    argv,
                    shell=args.shell,
                    grace=args.grace,
                    pass_stdin=args.pass_stdin,
                    timeout=timeout,
                    on_started=on_started,
                    cancel=cancel,
                )
        except (Terminated, Cancelled):
            err(f"{PROG}: {signalled.name} while waiting for {target.key}: gave up")
            return signalled.exit_status
    if status == EXIT_LOCK_LOST:
        log.warning("cli.lock_lost", key=target.key)
    return int(status)


def cmd_run(args: argparse.Namespace) -> int:
    """``run [-n N] PREFIX -- COMMAND``: a lock (N = 1) or a semaphore slot (N > 1)."""
    argv = _child_argv(args)
    return _run_guarded(args, argv, lock_target(args, "run"))


def cmd_elect(args: argparse.Namespace) -> int:
    """``elect KEY --value V -- COMMAND``: COMMAND runs while this process leads KEY."""
    argv = _child_argv(args)
    key = str(args.key)
    value = str(args.value)
    target = Target(key=key, what="elect", make_guard=lambda m: m.election(key, value).lock)
    return _run_guarded(args, argv, target)
