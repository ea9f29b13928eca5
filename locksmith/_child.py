"""Run a child process only while a lock (or semaphore slot) is held: ``consul lock``, safer.

The child starts only after the guard is acquired, in its own process group, with
``LOCKSMITH_KEY``, ``LOCKSMITH_SESSION``, ``LOCKSMITH_FENCING_TOKEN`` and
``CONSUL_LOCK_HELD=true`` in its environment. If the lock is lost (or presumed lost at the
lease deadline), the whole group gets SIGTERM, then SIGKILL after ``grace`` seconds: the loss
reaches the supervisor directly (the lease's end signal), never behind callbacks. Signals
sent to this process are forwarded to the child. On a normal exit the lock is released and
the child's exit status returned.

If the supervisor itself dies (SIGKILL, OOM), its lock goes at the lease deadline, so the
child must not outlive it: on Linux the child is started with ``PR_SET_PDEATHSIG`` (it gets
SIGKILL when the supervisor dies). Commands that start children of their own should end
them on SIGTERM/SIGKILL of their parent; the process group is not killed by the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Protocol

from locksmith._cancel import Cancel
from locksmith._exceptions import Cancelled, LockTimeout, ValidationError
from locksmith._lease import Lease, LossEvent
from locksmith._log import get_logger
from locksmith._validate import check_callback, check_timeout

__all__ = [
    "EXIT_LOCK_LOST",
    "EXIT_NOT_ACQUIRED",
    "EXIT_USAGE",
    "Guard",
    "run_exclusive",
]

log = get_logger("locksmith.child")

EXIT_USAGE = 64
"""Bad command line (sysexits EX_USAGE)."""
EXIT_NOT_ACQUIRED = 75
"""The lock could not be acquired within the timeout (sysexits EX_TEMPFAIL)."""
EXIT_LOCK_LOST = 76
"""The lock was lost while the child ran; the child was terminated."""

#: Seconds between checks of the guard while the child runs (besides its end signal).
_POLL = 0.5
#: Linux prctl option: signal the child when its parent dies.
_PR_SET_PDEATHSIG = 1

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class Guard(Protocol):
    """What :func:`run_exclusive` needs: a Lock or a Semaphore."""

    @property
    def key(self) -> str: ...

    @property
    def held(self) -> bool: ...

    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: Cancel | None = None
    ) -> Lease | None: ...

    def release(self) -> bool: ...

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]: ...

    def ended(self, lease: Lease | None = None) -> threading.Event: ...


def run_exclusive(
    guard: Guard,
    argv: Sequence[str],
    *,
    shell: bool = False,
    grace: float = 5.0,
    pass_stdin: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_started: Callable[[Lease, int], object] | None = None,
    cancel: Cancel | None = None,
) -> int:
    """Acquire ``guard``, run ``argv`` while holding it, release, return the exit status.

    Args:
        guard: A :class:`~locksmith.Lock` or :class:`~locksmith.Semaphore`.
        argv: The command. With ``shell`` it is joined and run by ``/bin/sh -c``.
        shell: Run through the shell.
        grace: Seconds between SIGTERM and SIGKILL when the lock is lost.
        pass_stdin: Give the child this process's standard input (otherwise /dev/null).
        env: Extra environment for the child.
        timeout: Seconds to wait for the lock (None: forever).
        on_started: Called with the lease and the child's PID once it runs.
        cancel: Stop waiting for the lock when it is set (a signal handler's way to give
            up): :class:`~locksmith.Cancelled` is raised and the child never starts.

    Returns:
        The child's exit status (128+N when killed by signal N), or
        :data:`EXIT_LOCK_LOST` when the lock was lost and the child terminated.

    Raises:
        LockTimeout: The lock was not acquired within ``timeout``.
        Cancelled: ``cancel`` was set before the child started (nothing is left held).
        ValidationError: A bad argument (before the lock is acquired).
    """
    _check_arguments(guard, argv, grace, env, timeout, on_started)
    guard.on_lost(
        lambda event: log.warning("child.lock_lost", key=event.key, reason=event.reason.value)
    )
    lease = guard.acquire(timeout=timeout, cancel=cancel)
    if lease is None:  # pragma: no cover - blocking acquire returns a lease or raises
        raise LockTimeout(f"could not acquire {guard.key!r}")
    if cancel is not None and cancel.cancelled:
        guard.release()  # cancelled as the lock came: the child must not start
        raise Cancelled(f"cancelled: {guard.key!r} released without running the command")
    ended = guard.ended(lease)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env.update(
        {
            "LOCKSMITH_KEY": guard.key,
            "LOCKSMITH_SESSION": lease.session_id,
            "LOCKSMITH_FENCING_TOKEN": str(lease.fencing_token),
            "CONSUL_LOCK_HELD": "true",
        }
    )
    if ended.is_set() or not guard.held:
        log.warning("child.not_started_lock_lost", key=guard.key)
        _release_quietly(guard)
        return EXIT_LOCK_LOST
    argv_spawn, preexec = _with_parent_death_signal(argv, shell)
    try:
        proc = subprocess.Popen(
            argv_spawn,
            env=child_env,
            stdin=None if pass_stdin else subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - one prctl, no locks taken
        )
    except OSError:
        guard.release()
        raise
    log.info("child.started", key=guard.key, pid=proc.pid, fencing_token=lease.fencing_token)
    if on_started is not None:
        on_started(lease, proc.pid)
    restore = _forward_signals(proc)
    wake = threading.Event()

    def wait_child() -> None:
        proc.wait()
        wake.set()

    def wait_end() -> None:
        ended.wait()
        wake.set()

    threading.Thread(target=wait_child, daemon=True, name="locksmith-child-wait").start()
    threading.Thread(target=wait_end, daemon=True, name="locksmith-lease-wait").start()
    lost = False
    try:
        while proc.poll() is None:
            # The lease's end signal wakes us at once; the poll also catches a lease
            # deadline passing while no thread of the manager could run (a stopped process).
            wake.wait(_POLL)
            if ended.is_set() or not guard.held:
                lost = True
                if proc.poll() is None:
                    _terminate_group(proc, grace)
        status = proc.returncode
    finally:
        restore()
    if lost or ended.is_set() or not guard.held:
        log.warning("child.stopped_lock_lost", key=guard.key, pid=proc.pid, status=status)
        _release_quietly(guard)
        return EXIT_LOCK_LOST
    guard.release()
    log.info("child.exited", key=guard.key, pid=proc.pid, status=status)
    return status if status >= 0 else 128 - status


def _with_parent_death_signal(
    argv: Sequence[str], shell: bool
) -> tuple[list[str], Callable[[], None] | None]:
    r"""The command to spawn so that the kernel SIGKILLs the child when this process dies.

    On Linux with util-linux's ``setpriv``: ``setpriv --pdeathsig KILL`` runs ``/bin/sh``,
    which checks that it is still this process's child (closing the window in which this
    process dies before the signal is armed), then runs the command: ``exec``\ s it, or with
    ``shell`` evaluates it itself. No ``preexec_fn``, so ``subprocess`` can use ``vfork``: a
    fork of this multi-threaded process to run one ``prctl`` costs milliseconds between
    acquiring the lock and starting the child. Without ``setpriv`` a ``preexec_fn`` does the
    same (:func:`_parent_death_signal`); elsewhere nothing is armed.
    """
    cmd = ["/bin/sh", "-c", " ".join(argv)] if shell else list(argv)
    setpriv = _setpriv()
    if setpriv is None:
        return cmd, _parent_death_signal()
    check = f'[ "$PPID" = {os.getpid()} ] || exit {EXIT_LOCK_LOST};'
    if shell:
        script = f'{check} command="$1"; shift; eval "$command"'
        tail = [" ".join(argv)]
    else:
        script = f'{check} exec "$@"'
        tail = list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", script, "locksmith", *tail], None


@functools.cache
def _setpriv() -> str | None:
    """util-linux's ``setpriv`` (Linux only), looked up once."""
    if not sys.platform.startswith("linux"):
        return None
    return shutil.which("setpriv")


@functools.cache
def _prctl() -> Any:
    """libc's ``prctl``, looked up once: from the symbols this process already has loaded
    (``ctypes.util.find_library`` would run ``ldconfig`` in a subprocess, milliseconds each
    time, between acquiring the lock and starting the child)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return None


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when this process dies.

    Linux only (``PR_SET_PDEATHSIG``); elsewhere None. The function is resolved here, before
    the fork, so that the child only makes one system call (no import, no lookup). If this
    process died before the call took effect, the child exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = _prctl()
    if prctl is None:  # pragma: no cover - no usable libc
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(EXIT_LOCK_LOST)

    return set_pdeathsig


def _check_arguments(  # noqa: PLR0917 - mirrors run_exclusive's arguments
    guard: object,
    argv: object,
    grace: object,
    env: object,
    timeout: object,
    on_started: object,
) -> None:
    """Validate run_exclusive's arguments before anything is acquired or started."""
    for attr in ("key", "held", "acquire", "release", "on_lost", "ended"):
        if not hasattr(guard, attr):
            raise ValidationError(
                "guard", f"must be a Lock or a Semaphore, got {type(guard).__name__}"
            )
    if isinstance(argv, str | bytes) or not isinstance(argv, Sequence):
        raise ValidationError(
            "argv", f"must be a list of strings (the command and its arguments), got {argv!r}"
        )
    if not argv:
        raise ValidationError("argv", "a command is required")
    if not all(isinstance(a, str) for a in argv):
        raise ValidationError("argv", f"every argument must be a string, got {list(argv)!r}")
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
        raise ValidationError("grace", f"must be seconds >= 0, got {grace!r}")
    if env is not None:
        if not isinstance(env, Mapping):
            raise ValidationError("env", f"must be a mapping of strings, got {env!r}")
        bad = [k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValidationError("env", f"names and values must be strings; bad entries: {bad!r}")
    check_timeout(timeout)
    if on_started is not None:
        check_callback(on_started, "on_started")


def _terminate_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        log.warning("child.kill", pid=proc.pid, grace=grace)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait()


def _release_quietly(guard: Guard) -> None:
    try:
        guard.release()
    except Exception as exc:  # noqa: BLE001 - best effort after a loss
        log.info("child.release_after_loss_failed", key=guard.key, error=str(exc))


def _forward_signals(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    """Forward termination signals to the child's group; returns a function restoring them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, object] = {}

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    for sig in _FORWARDED:
        previous[sig] = signal.signal(sig, forward)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    return restore
