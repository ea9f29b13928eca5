"""``locksmith run`` and ``locksmith elect``: a command run while a lock or leadership is held.

Both build a :class:`~locksmith.LockManager`, take a guard (``run``: Consul's lock or
semaphore layout on PREFIX; ``elect``: the election's lock) and hand the child to
:func:`locksmith._child.run_exclusive`. While waiting, :class:`_HolderDisplay` shows who
holds the lock on stderr, and SIGTERM/SIGHUP end the wait cleanly (the session is destroyed
from a fresh thread, see :func:`_close_in_fresh_thread`).

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
from typing import IO, Any

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
from locksmith._cli._output import PROG, err, semaphore_state
from locksmith._client import Consul, next_index
from locksmith._compat import lock_key
from locksmith._exceptions import LocksmithError, ValidationError

__all__ = ["_HolderDisplay", "cmd_elect", "cmd_run"]

log = structlog.get_logger(__name__)


# -- waiting status ------------------------------------------------------------------------
class _HolderDisplay:
    """Shows who holds a lock while this process waits for it.

    On a terminal, one status line on stderr rewritten in place every second; otherwise a
    plain log line each time the holders change.
    """

    def __init__(
        self,
        consul: Consul,
        key: str,
        *,
        semaphore_prefix: str | None,
        is_done: Callable[[], bool],
        own: Callable[[], set[str]],
        stream: IO[str],
    ) -> None:
        self._own = own
        self._consul = consul
        self._key = key
        self._sem_prefix = semaphore_prefix
        self._is_done = is_done
        self._stream = stream
        self._tty = _isatty(stream)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._first_seen: dict[str, float] = {}
        self._names: dict[str, tuple[str, str]] = {}
        self._shown_line = False
        self._last_holders: tuple[str, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="locksmith-cli-status", daemon=True)

    def start(self) -> _HolderDisplay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._clear()

    def _clear(self) -> None:
        if self._tty and self._shown_line:
            with contextlib.suppress(ValueError, OSError):
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._shown_line = False

    def _holders(self, index: int) -> tuple[tuple[str, ...], int]:
        wait = 1.0 if self._tty else 10.0
        if self._sem_prefix is None:
            res = self._consul.kv.get_with_meta(self._key, index=index or None, wait=wait)
            holders = (res.value.session,) if res.value and res.value.session else ()
            return holders, res.meta.index
        lst = self._consul.kv.list_with_meta(self._sem_prefix + "/", index=index or None, wait=wait)
        lock_entry = next((e for e in lst.value if e.key == self._key), None)
        _, names = semaphore_state(lock_entry) if lock_entry else (None, [])
        return tuple(names), lst.meta.index

    def _describe(self, sid: str) -> str:
        if sid not in self._names:
            try:
                s = self._consul.sessions.info(sid)
            except LocksmithError:
                s = None
            self._names[sid] = (s.name if s and s.name else "?", s.node if s else "?")
        name, node = self._names[sid]
        held = time.monotonic() - self._first_seen.get(sid, self._started)
        return f"{name!r} on node {node} (session {sid[:8]}) for >={_seconds_text(held)}"

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set() and not self._is_done():
            try:
                holders, new_index = self._holders(index)
            except LocksmithError:
                self._stop.wait(1.0)
                index = 0
                continue
            index = next_index(index, new_index)
            own = self._own()
            holders = tuple(h for h in holders if h not in own)
            now = time.monotonic()
            for sid in holders:
                self._first_seen.setdefault(sid, now)
            if self._stop.is_set() or self._is_done():
                break
            waited = _seconds_text(now - self._started)
            if holders:
                who = "; ".join(self._describe(s) for s in holders)
                if self._is_done():
                    break
                line = f"waiting {waited} for {self._key}: held by {who}"
            else:
                line = f"waiting {waited} for {self._key}: free (maybe in lock-delay)"
            with contextlib.suppress(ValueError, OSError):
                if self._tty:
                    self._stream.write("\r\x1b[K" + line[:200])
                    self._stream.flush()
                    self._shown_line = True
                elif holders != self._last_holders:
                    self._stream.write(f"{PROG}: {line}\n")
                    self._stream.flush()
            self._last_holders = holders


def _seconds_text(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- the guarded child ---------------------------------------------------------------------
def _child_argv(args: argparse.Namespace) -> list[str]:
    if not args.command:
        raise CLIError(
            f"{PROG} {args.command_name}: COMMAND is missing (usage: {PROG} "
            f"{args.command_name} ... -- COMMAND [ARGS...])",
            EXIT_USAGE,
        )
    return list(args.command)


#: Seconds each request deleting an unused ``.lock`` key may take.
_CLEANUP_TIMEOUT = 5.0

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
    consul: Consul,
    key: str,
    semaphore_prefix: str | None,
    is_done: Callable[[], bool],
    own: Callable[[], set[str]],
) -> Iterator[None]:
    if ctx().quiet:
        yield
        return
    display = _HolderDisplay(
        consul,
        key,
        semaphore_prefix=semaphore_prefix,
        is_done=is_done,
        own=own,
        stream=sys.stderr,
    ).start()
    try:
        yield
    finally:
        display.stop()


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


def _clean_up(consul: Consul, cleanup: Callable[[Consul], Cleanup], key: str) -> None:
    """Delete the unused ``.lock`` key (see :mod:`._cleanup`); never fails the command."""
    try:
        outcome = cleanup(consul)
    except LocksmithError as exc:
        log.info("cli.lock_key_cleanup_failed", key=key, error=str(exc))
        return
    log.info("cli.lock_key_cleanup", key=key, outcome=outcome.value)


def _close_in_fresh_thread(
    mgr: Any, consul: Consul, cleanup: Callable[[], None] | None = None
) -> None:
    """Close the manager (release, destroy the session) from a new thread, then clean up.

    A Ctrl-C or SIGTERM while waiting interrupts a request half-way, leaving this thread's
    keep-alive connection unusable; a fresh thread gets a fresh connection, so the session is
    still destroyed and no contender key is left behind. ``cleanup`` runs once the manager
    released everything (so it sees the keys as others will).
    """

    def close() -> None:
        mgr.close()
        if cleanup is not None:
            cleanup()

    t = threading.Thread(target=close, name="locksmith-cli-close", daemon=True)
    t.start()
    t.join(timeout=30.0)
    consul.close()


def _own_sessions(mgr: Any) -> set[str]:
    """This process's session IDs (the manager's and its delete-behavior companion's)."""
    return set(mgr.session_ids)


def _run_guarded(
    args: argparse.Namespace,
    argv: list[str],
    *,
    make_guard: Callable[[Any], Any],
    key: str,
    semaphore_prefix: str | None,
    what: str,
    cleanup: Callable[[Consul], Cleanup] | None = None,
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
                consul,
                key,
                semaphore_prefix,
                lambda: started.is_set() or (guard is not None and guard.held),
                lambda: _own_sessions(mgr),
            ):
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
            after = lambda: _clean_up(consul, clean, key)  # noqa: E731
        _close_in_fresh_thread(mgr, consul, after)
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
            cleanup=lambda c: destroy_lock_key(c, prefix, timeout=_CLEANUP_TIMEOUT),
        )
    return _run_guarded(
        args,
        argv,
        make_guard=lambda m: m.semaphore(prefix, limit),
        key=key,
        semaphore_prefix=prefix,
        what="run",
        cleanup=lambda c: destroy_semaphore_key(c, prefix, timeout=_CLEANUP_TIMEOUT),
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
