"""The clock locksmith reads: a time that never goes back, plus an interruptible wait.

Everything that reasons about leases and lock-delay windows takes ``now`` from a
:class:`Clock`. Production code uses :class:`SystemClock`, which counts the time a machine
spends suspended (``CLOCK_BOOTTIME`` on Linux): a laptop or VM that sleeps past its lease
deadline wakes up knowing that its locks are gone. Tests use :class:`FakeClock`, whose time
moves only when the test says so, or, with ``autojump_threshold``, on its own to the next
deadline anyone waits for once nothing else happens (trio's ``MockClock`` is the model).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Seconds on a clock that never goes backwards, and a wait that an event cuts short."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wait_until(self, deadline: float, event: threading.Event | None = None) -> bool:
        """Block until ``monotonic() >= deadline`` or ``event`` is set.

        Returns:
            True if the event was set, False if the deadline was reached.
        """
        ...


def _boottime() -> Callable[[], float] | None:
    """``CLOCK_BOOTTIME`` if this system has it (it keeps counting during suspend)."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None:
        return None
    try:
        time.clock_gettime(clock_id)
    except OSError:
        return None
    return lambda: time.clock_gettime(clock_id)


class SystemClock:
    """The real clock: ``CLOCK_BOOTTIME`` where it exists, else :func:`time.monotonic`.

    ``CLOCK_MONOTONIC`` stops while Linux is suspended, so a process that sleeps through its
    lease deadline would wake up still "holding". ``CLOCK_BOOTTIME`` does not stop. Waits
    themselves run on the interpreter's monotonic clock, so they are cut into slices of at
    most :attr:`max_slice` seconds and re-checked against this clock: after a resume, a wait
    whose deadline passed during the suspend returns within one slice.

    Attributes:
        suspend_aware: Whether the clock counts suspended time.
        max_slice: The longest single wait, in seconds.
    """

    def __init__(self) -> None:
        boottime = _boottime()
        self.suspend_aware = boottime is not None
        self._now: Callable[[], float] = boottime or time.monotonic
        self.max_slice = 1.0 if self.suspend_aware else 3600.0

    def monotonic(self) -> float:
        """Seconds since boot, suspended time included (or :func:`time.monotonic`)."""
        return self._now()

    def wait_until(self, deadline: float, event: threading.Event | None = None) -> bool:
        """Wait until ``deadline`` (``inf``: forever) or until ``event`` is set."""
        if event is None and math.isinf(deadline):
            raise ValueError("wait_until(inf) without an event would never return")
        while True:
            if event is not None and event.is_set():
                return True
            remaining = deadline - self._now()
            if remaining <= 0:
                return False
            step = min(remaining, self.max_slice)
            if event is None:
                time.sleep(step)
            elif event.wait(step):
                return True


class FakeClock:
    """A clock for tests: time moves only through :meth:`advance` (or by autojump).

    It works with a started manager: a thread waiting in :meth:`wait_until` blocks until
    the test advances time past its deadline, or its event is set.

    Args:
        start: The initial time.
        autojump_threshold: If set, whenever waits are pending and the clock has not moved
            for this many real seconds, it jumps to the earliest pending deadline (``0``:
            at once). Threads busy with real I/O do not hold a jump back.
    """

    #: Real seconds between checks of a waiter's event.
    _POLL = 0.01

    def __init__(self, start: float = 1000.0, *, autojump_threshold: float | None = None) -> None:
        if autojump_threshold is not None and not autojump_threshold >= 0:
            raise ValueError(f"autojump_threshold must be >= 0, got {autojump_threshold!r}")
        self._now = start
        self._cond = threading.Condition()
        self._waiting: dict[int, float] = {}
        self._ticket = 0
        self._moved_at = time.monotonic()
        self.autojump_threshold = autojump_threshold

    def monotonic(self) -> float:
        """Return the fake current time."""
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the waits that are due."""
        if not seconds >= 0:
            raise ValueError("a monotonic clock cannot go backwards")
        with self._cond:
            self._now += seconds
            self._moved_at = time.monotonic()
            self._cond.notify_all()

    def jump_to_next(self) -> float | None:
        """Jump to the earliest deadline anyone waits for; return it (None: no waiter)."""
        with self._cond:
            return self._jump_locked()

    def _jump_locked(self) -> float | None:
        finite = [d for d in self._waiting.values() if not math.isinf(d)]
        if not finite:
            return None
        target = max(self._now, min(finite))
        self._now = target
        self._moved_at = time.monotonic()
        self._cond.notify_all()
        return target

    @property
    def waiters(self) -> int:
        """How many threads wait on this clock now."""
        with self._cond:
            return len(self._waiting)

    def wait_until(self, deadline: float, event: threading.Event | None = None) -> bool:
        """Block until the fake time reaches ``deadline`` or ``event`` is set."""
        if event is None and math.isinf(deadline):
            raise ValueError("wait_until(inf) without an event would never return")
        with self._cond:
            self._ticket += 1
            ticket = self._ticket
            self._waiting[ticket] = deadline
            try:
                while True:
                    if event is not None and event.is_set():
                        return True
                    if self._now >= deadline:
                        return False
                    threshold = self.autojump_threshold
                    if (
                        threshold is not None
                        and time.monotonic() - self._moved_at >= threshold
                        and min(self._waiting.values()) == deadline
                    ):
                        self._jump_locked()
                        continue
                    step = self._POLL if event is not None or threshold is not None else None
                    self._cond.wait(step)
            finally:
                del self._waiting[ticket]
