"""``locksmith run`` and ``locksmith elect``: a command run while a lock or leadership is held.

Both build a :class:`~locksmith.LockManager`, take a guard (``run``: Consul's lock or
semaphore layout on PREFIX; ``elect``: the election's lock) and hand the child to
:func:`locksmith._child.run_exclusive`. COMMAND is looked up first (:func:`check_command`).
While waiting, :class:`~._status.WaitingStatus` shows what blocks the lock on stderr, and
SIGTERM/SIGHUP end the wait cleanly. At the end, :func:`_shut_down` releases the lock and
destroys the session within one deadline, and, after ``run``, an unused ``PREFIX/.lock`` is
deleted (:mod:`._cleanup`): the command exits within milliseconds of its deadline, a signal
or COMMAND's end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from locksmith._cli._cleanup import Cleanup, destroy_lock_key, destroy_semaphore_key
from locksmith._cli._context import ctx
from locksmith._cli._exit import (
    EXIT_CANNOT_EXECUTE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_LOCK_LOST,
    EXIT_USAGE,
    CLIError,
)
from locksmith._cli._logging import status_event
from locksmith._cli._output import PROG, err
from locksmith._cli._status import WaitingStatus
from locksmith._client import Consul
from locksmith._compat import lock_key
from locksmith._exceptions import LocksmithError, ValidationError

__all__ = ["EXIT_BUDGET", "check_command", "cmd_elect", "cmd_run"]

log = structlog.get_logger(__name__)


# -- the guarded child ---------------------------------------------------------------------
def _child_argv(args: argparse.Namespace) -> list[str]:
    if not args.command:
        raise CLIError(
            f"{PROG} {args.command_name}: COMMAND is missing (usage: {PROG} "
            f"{args.command_name} ... -- COMMAND [ARGS...])",
            EXIT_USAGE,
        )
    return list(args.command)


#: Seconds Consul gets, once waiting or COMMAND is over, to release the lock, destroy the
#: session and delete an unused ``.lock`` key: all of it, one deadline. Milliseconds are
#: normal; what is not done by then is left to the session's TTL.
EXIT_BUDGET = 5.0

#: The shell of ``--shell`` (:func:`locksmith._child.run_exclusive` runs ``/bin/sh -c``).
SHELL = "/bin/sh"


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


def _session_name(args: argparse.Namespace, what: str, key: str) -> str:
    if args.name:
        return str(args.name)
    return f"{PROG} {what} {key} on {os.uname().nodename} (pid {os.getpid()})"


def _timeout(args: argparse.Namespace) -> float | None:
    if args.timeout < 0:
        raise ValidationError("--timeout", f"must be >= 0 (0: wait forever), got {args.timeout}")
    return None if args.timeout == 0 else float(args.timeout)


class _Terminated(Exception):  # noqa: N818 - internal control flow
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """While waiting for a lock, SIGTERM/SIGHUP end the wait cleanly (session destroyed).

    run_exclusive installs its own forwarding handlers while the child runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        del frame
        raise _Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _waiting_status(
    mgr: Any,
    key: str,
    *,
    semaphore_prefix: str | None,
    limit: int,
    is_done: Callable[[], bool],
) -> Iterator[None]:
    """Show what blocks the lock while waiting (see :mod:`._status`); nothing with ``-q``."""
    c = ctx()
    if c.quiet:
        yield
        return
    status = WaitingStatus(
        c.consul(),
        key,
        semaphore_prefix=semaphore_prefix,
        limit=limit,
        is_done=is_done,
        own=lambda: set(mgr.session_ids),
        stream=sys.stderr,
        emit_json=status_event if getattr(c.args, "log_format", "console") == "json" else None,
        owns_client=True,
    )
    mgr.on_lock_delay(status.lock_delay)
    status.start()
    try:
        yield
    finally:
        status.stop()


class _Tracked:
    """The guard handed to ``run_exclusive``, remembering whether it was ever acquired."""

    def __init__(self, guard: Any) -> None:
        self._guard = guard
        self.acquired = False

    @property
    def key(self) -> str:
        return str(self._guard.key)

    @property
    def held(self) -> bool:
        return bool(self._guard.held)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        lease = self._guard.acquire(blocking=blocking, timeout=timeout)
        if lease is not None:
            self.acquired = True
        return lease

    def release(self) -> bool:
        return bool(self._guard.release())

    def on_lost(self, callback: Callable[[Any], object]) -> Callable[[Any], object]:
        return self._guard.on_lost(callback)  # type: ignore[no-any-return]

    def ended(self, lease: Any = None) -> threading.Event:
        return self._guard.ended(lease)  # type: ignore[no-any-return]


def _clean_up(
    consul: Consul, cleanup: Callable[[Consul, float], Cleanup], key: str, budget: float
) -> None:
    """Delete the unused ``.lock`` key (see :mod:`._cleanup`); never fails the command."""
    try:
        outcome = cleanup(consul, budget)
    except LocksmithError as exc:
        log.info("cli.lock_key_cleanup_failed", key=key, error=str(exc))
        return
    log.info("cli.lock_key_cleanup", key=key, outcome=outcome.value)


def _shut_down(mgr: Any, consul: Consul, cleanup: Callable[[float], None] | None) -> None:
    """Release and destroy what this run made, then clean up, all within :data:`EXIT_BUDGET`.

    Takes milliseconds when Consul answers: the caller exits right after. When Consul does
    not answer, whatever is not done by the deadline is left to the session's TTL. It runs
    on a fresh thread: a second SIGINT/SIGTERM then ends the process at once instead of
    interrupting the close half-way (and a request interrupted by the first signal never
    shares a connection with the close).
    """
    deadline = time.monotonic() + EXIT_BUDGET

    def close() -> None:
        mgr.close(timeout=EXIT_BUDGET)
        left = deadline - time.monotonic()
        if cleanup is not None and left > 0:
            cleanup(left)

    t = threading.Thread(target=close, name="locksmith-cli-close", daemon=True)
    t.start()
    t.join(timeout=EXIT_BUDGET + 0.5)
    if t.is_alive():
        log.warning("cli.close_unfinished", budget=EXIT_BUDGET)
    consul.close()


def _run_guarded(
    args: argparse.Namespace,
    argv: list[str],
    *,
    make_guard: Callable[[Any], Any],
    key: str,
    semaphore_prefix: str | None,
    what: str,
    limit: int = 1,
    cleanup: Callable[[Consul, float], Cleanup] | None = None,
) -> int:
    from locksmith._child import run_exclusive  # noqa: PLC0415 - loaded on demand
    from locksmith._manager import LockManager  # noqa: PLC0415

    timeout = _timeout(args)
    check_command(argv, args.shell)
    consul = ctx().consul()
    mgr = LockManager(
        consul,
        ttl=args.ttl,
        lock_delay=args.lock_delay,
        name=_session_name(args, what, key),
    )
    started = threading.Event()

    def on_started(lease: Any, pid: int) -> None:
        started.set()
        log.info("cli.child_started", key=lease.key, pid=pid, fencing_token=lease.fencing_token)

    guard: _Tracked | None = None
    try:
        with _terminate_raises():
            guard = _Tracked(make_guard(mgr))
            with _waiting_status(
                mgr,
                key,
                semaphore_prefix=semaphore_prefix,
                limit=limit,
                is_done=lambda: started.is_set() or (guard is not None and guard.held),
            ):
                log.info("cli.acquiring", key=key, timeout=timeout)
                status = run_exclusive(
                    guard,
                    argv,
                    shell=args.shell,
                    grace=args.grace,
                    pass_stdin=args.pass_stdin,
                    timeout=timeout,
                    on_started=on_started,
                )
    except _Terminated as exc:
        err(f"{PROG}: {signal.Signals(exc.signum).name} while waiting for {key}: gave up")
        return 128 + exc.signum
    finally:
        after = None
        if cleanup is not None and guard is not None and guard.acquired:
            clean = cleanup
            after = lambda budget: _clean_up(consul, clean, key, budget)  # noqa: E731
        _shut_down(mgr, consul, after)
    if status == EXIT_LOCK_LOST:
        log.warning("cli.lock_lost", key=key)
    return int(status)


# -- the commands --------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """``run [-n N] PREFIX -- COMMAND``: a lock (N = 1) or a semaphore slot (N > 1)."""
    argv = _child_argv(args)
    prefix = str(args.prefix).rstrip("/")
    if not prefix:
        raise ValidationError("PREFIX", "must be a non-empty key prefix")
    key = lock_key(prefix)
    limit = int(args.limit)
    if limit == 1:
        return _run_guarded(
            args,
            argv,
            make_guard=lambda m: m.consul_lock(prefix),
            key=key,
            semaphore_prefix=None,
            what="run",
            cleanup=lambda c, budget: destroy_lock_key(c, prefix, timeout=budget),
        )
    return _run_guarded(
        args,
        argv,
        make_guard=lambda m: m.semaphore(prefix, limit),
        key=key,
        semaphore_prefix=prefix,
        what="run",
        limit=limit,
        cleanup=lambda c, budget: destroy_semaphore_key(c, prefix, timeout=budget),
    )


def cmd_elect(args: argparse.Namespace) -> int:
    """``elect KEY --value V -- COMMAND``: COMMAND runs while this process leads KEY."""
    argv = _child_argv(args)
    key = str(args.key)
    value = str(args.value)
    return _run_guarded(
        args,
        argv,
        make_guard=lambda m: m.election(key, value).lock,
        key=key,
        semaphore_prefix=None,
        what="elect",
    )
