"""What ``run``, ``elect`` and ``hold`` share: one lock taken for the command's lifetime.

A :class:`Holding` builds the command's :class:`~locksmith.LockManager` from the options
(``--ttl``, ``--lock-delay``, ``--name``), takes the guard a :class:`Target` describes (a
Consul-layout lock or semaphore on PREFIX, a fair lock on PREFIX with ``--fair``, or an
election's lock), shows the waiting status while it waits (:mod:`._status`), and at the end
releases and destroys what it made and deletes an unused ``PREFIX/.lock`` (:mod:`._cleanup`),
all within one deadline (:data:`EXIT_BUDGET`), so that the command exits within milliseconds
of its deadline, a signal, or its end. :func:`signals_cancel` turns signals into a
:class:`~locksmith.Cancel` of the wait (a second signal raises :class:`Terminated`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from locksmith._cancel import Cancel
from locksmith._cli._cleanup import (
    Cleanup,
    destroy_fair_key,
    destroy_lock_key,
    destroy_semaphore_key,
)
from locksmith._cli._context import ctx
from locksmith._cli._exit import EXIT_INTERRUPTED
from locksmith._cli._logging import status_event
from locksmith._cli._output import PROG
from locksmith._cli._status import WaitingStatus
from locksmith._client import Consul
from locksmith._compat import lock_key
from locksmith._exceptions import LocksmithError, ValidationError

__all__ = [
    "EXIT_BUDGET",
    "Holding",
    "Signalled",
    "Target",
    "Terminated",
    "Tracked",
    "lock_target",
    "signals_cancel",
    "timeout_of",
]

log = structlog.get_logger(__name__)

#: Seconds Consul gets, once waiting or holding is over, to release the lock, destroy the
#: session and delete an unused ``.lock`` key: all of it, one deadline. Milliseconds are
#: normal; what is not done by then is left to the session's TTL.
EXIT_BUDGET = 5.0


@dataclass(frozen=True)
class Target:
    """The lock a command takes.

    Attributes:
        key: The key waited for and shown (``PREFIX/.lock``, the election key, or for a fair
            lock its prefix).
        what: The command (``run``, ``elect``, ``hold``), for the default session name.
        make_guard: Makes the guard (a Lock, a Semaphore or a FairLock) from the manager.
        semaphore_prefix: For a semaphore, its prefix.
        limit: For a semaphore, its limit.
        cleanup: Deletes the unused ``.lock`` key after a release, within a budget.
        fair_prefix: For a fair lock, its prefix.
    """

    key: str
    what: str
    make_guard: Callable[[Any], Any]
    semaphore_prefix: str | None = None
    limit: int = 1
    cleanup: Callable[[Consul, float], Cleanup] | None = None
    fair_prefix: str | None = None


def lock_target(args: argparse.Namespace, what: str) -> Target:
    """``PREFIX`` and ``-n N``: Consul's lock layout (N = 1) or semaphore layout (N > 1); with
    ``--fair``, locksmith's fair queue (one holder at a time, in order of arrival)."""
    prefix = str(args.prefix).rstrip("/")
    if not prefix:
        raise ValidationError("PREFIX", "must be a non-empty key prefix")
    limit = int(args.limit)
    if getattr(args, "fair", False):
        if limit != 1:
            raise ValidationError(
                "--fair", f"takes the lock one holder at a time: it does not go with -n {limit}"
            )
        return Target(
            key=prefix,
            what=what,
            make_guard=lambda m: m.fair_lock(prefix),
            cleanup=lambda c, budget: destroy_fair_key(c, prefix, timeout=budget),
            fair_prefix=prefix,
        )
    if limit == 1:
        return Target(
            key=lock_key(prefix),
            what=what,
            make_guard=lambda m: m.consul_lock(prefix),
            cleanup=lambda c, budget: destroy_lock_key(c, prefix, timeout=budget),
        )
    return Target(
        key=lock_key(prefix),
        what=what,
        make_guard=lambda m: m.semaphore(prefix, limit),
        semaphore_prefix=prefix,
        limit=limit,
        cleanup=lambda c, budget: destroy_semaphore_key(c, prefix, timeout=budget),
    )


def timeout_of(args: argparse.Namespace) -> float | None:
    """``--timeout``: seconds, or None for 0 (wait forever)."""
    if args.timeout < 0:
        raise ValidationError("--timeout", f"must be >= 0 (0: wait forever), got {args.timeout}")
    return None if args.timeout == 0 else float(args.timeout)


class Terminated(Exception):  # noqa: N818 - control flow, not an error
    """A second signal: the command ends at once (see :func:`signals_cancel`)."""


class Signalled:
    """The signals that came while :func:`signals_cancel` ran; the first one decides."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @property
    def name(self) -> str:
        """The first signal's name (``SIGTERM``)."""
        return signal.Signals(self.seen[0]).name

    @property
    def exit_status(self) -> int:
        """130 for SIGINT (as a shell reports Ctrl-C), else 128 + N."""
        first = self.seen[0]
        return EXIT_INTERRUPTED if first == signal.SIGINT else 128 + first


@contextlib.contextmanager
def signals_cancel(signals: Iterable[int], cancel: Cancel) -> Iterator[Signalled]:
    """While the block runs, the first of ``signals`` sets ``cancel``; a second one raises
    :class:`Terminated`. The yielded :class:`Signalled` records them.

    Setting a :class:`Cancel` is what a signal handler should do: the waiting call wakes and
    leaves with :class:`~locksmith.Cancelled` at a point of its own choosing. An exception
    raised from a handler lands between any two bytecodes, inside locking code of the
    standard library included, where it can leave a lock held that another thread needs.
    Outside the main thread (a test calling ``main``), nothing changes.
    """
    got = Signalled()
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: object) -> None:
        del frame
        got.seen.append(signum)
        cancel.cancel()
        if len(got.seen) > 1:
            raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield got
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Tracked:
    """A guard that remembers whether it was ever acquired (only then is there cleanup)."""

    def __init__(self, guard: Any) -> None:
        self._guard = guard
        self.acquired = False

    @property
    def key(self) -> str:
        return str(self._guard.key)

    @property
    def held(self) -> bool:
        return bool(self._guard.held)

    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: Cancel | None = None
    ) -> Any:
        lease = self._guard.acquire(blocking=blocking, timeout=timeout, cancel=cancel)
        if lease is not None:
            self.acquired = True
        return lease

    def release(self) -> bool:
        return bool(self._guard.release())

    def on_lost(self, callback: Callable[[Any], object]) -> Callable[[Any], object]:
        return self._guard.on_lost(callback)  # type: ignore[no-any-return]

    def ended(self, lease: Any = None) -> threading.Event:
        return self._guard.ended(lease)  # type: ignore[no-any-return]


class Holding:
    """One command's lock: its manager, its guard, the waiting status, the shut-down.

    Building it does no I/O. Use it as a context manager: leaving it shuts down (see
    :meth:`close`), whatever happened.
    """

    def __init__(self, args: argparse.Namespace, target: Target) -> None:
        from locksmith._manager import LockManager  # noqa: PLC0415 - the heavy part, on demand

        self.target = target
        self.consul = ctx().consul()
        try:
            self.mgr = LockManager(
                self.consul,
                ttl=args.ttl,
                lock_delay=args.lock_delay,
                name=_session_name(args, target.what, target.key),
            )
            self.guard = Tracked(target.make_guard(self.mgr))
        except BaseException:
            self.consul.close()
            raise

    def __enter__(self) -> Holding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def waiting(self, is_done: Callable[[], bool] | None = None) -> Iterator[None]:
        """Show what blocks the lock while the block runs (nothing with ``-q``)."""
        c = ctx()
        if c.quiet:
            yield
            return
        guard = self.guard
        status = WaitingStatus(
            c.consul(),
            self.target.key,
            semaphore_prefix=self.target.semaphore_prefix,
            limit=self.target.limit,
            fair_prefix=self.target.fair_prefix,
            is_done=is_done or (lambda: guard.held),
            own=lambda: set(self.mgr.session_ids),
            stream=sys.stderr,
            emit_json=status_event if getattr(c.args, "log_format", "") == "json" else None,
            owns_client=True,
        )
        self.mgr.on_lock_delay(status.lock_delay)
        status.start()
        try:
            yield
        finally:
            status.stop()

    def close(self) -> None:
        """Release and destroy what was made, then delete an unused ``.lock`` key, all
        within :data:`EXIT_BUDGET`.

        Takes milliseconds when Consul answers. When it does not, whatever is not done by
        the deadline is left to the session's TTL. It runs on a fresh thread: a second
        SIGINT/SIGTERM then ends the process at once instead of interrupting the close
        half-way (and a request interrupted by the first signal never shares a connection
        with the close).
        """
        deadline = time.monotonic() + EXIT_BUDGET
        cleanup = self.target.cleanup if self.guard.acquired else None

        def close() -> None:
            self.mgr.close(timeout=EXIT_BUDGET)
            left = deadline - time.monotonic()
            if cleanup is not None and left > 0:
                _clean_up(self.consul, cleanup, self.target.key, left)

        t = threading.Thread(target=close, name="locksmith-cli-close", daemon=True)
        t.start()
        t.join(timeout=EXIT_BUDGET + 0.5)
        if t.is_alive():
            log.warning("cli.close_unfinished", budget=EXIT_BUDGET)
        self.consul.close()


def _session_name(args: argparse.Namespace, what: str, key: str) -> str:
    if args.name:
        return str(args.name)
    return f"{PROG} {what} {key} on {os.uname().nodename} (pid {os.getpid()})"


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
