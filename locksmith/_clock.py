"""The clock locksmith reads: monotonic time plus an interruptible wait.

Everything that reasons about leases and lock-delay windows takes ``now`` from a
:class:`Clock`. Production code uses :class:`SystemClock`; tests of the pure core use
:class:`FakeClock`, whose time only moves when the test says so.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]

#: Longest single sleep of :meth:`SystemClock.wait_until` (it loops for longer waits).
_MAX_STEP = 3600.0


@runtime_checkable
class Clock(Protocol):
    """Monotonic time and a wait that an event can cut short."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wait_until(self, deadline: float, event: threading.Event | None = None) -> bool:
        """Block until ``monotonic() >= deadline`` or ``event`` is set.

        Returns:
            True if the event was set, False if the deadline was reached.
        """
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :meth:`threading.Event.wait`."""

    def monotonic(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    def wait_until(self, deadline: float, event: threading.Event | None = None) -> bool:
        """Wait until ``deadline`` (``inf``: forever) or until ``event`` is set."""
        while True:
            remaining = deadline - time.monotonic()
            if event is not None and event.is_set():
                return True
            if remaining <= 0:
                return False
            # Event.wait/time.sleep overflow on huge timeouts: wait in bounded slices.
            step = min(remaining, _MAX_STEP)
            if event is None:
                time.sleep(step)
            elif event.wait(step):
                return True


class FakeClock:
    """A clock for tests: time advances only through :meth:`advance`.

    ``wait_until`` never blocks: it jumps the clock forward to the deadline (as if the
    wait had elapsed) unless the event is already set.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Return the fake current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        with self._lock:
            self._now += seconds

    def wait_until(self, deadline: float, event: threading.Event | None = None) -> bool:
        """Return at once: True if ``event`` is set, else jump to ``deadline``."""
        if event is not None and event.is_set():
            return True
        if deadline == float("inf"):
            raise RuntimeError("FakeClock.wait_until(inf) would never return")
        with self._lock:
            self._now = max(self._now, deadline)
        return False
