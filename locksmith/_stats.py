"""What a manager did, counted by its state machine: the numbers services watch.

:class:`Recorder` lives inside :class:`~locksmith._machine.LockMachine` and is updated on the
events the machine already handles, so the threaded and the asyncio managers count the same
things the same way, with no I/O and no clock of its own. :meth:`LockManager.stats` hands out
a frozen :class:`ManagerStats`; ``locksmith.prometheus`` exports it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from locksmith._states import LossReason

__all__ = ["BUCKETS", "Histogram", "ManagerStats", "Recorder"]

#: Upper bounds (seconds) of the histogram buckets: sub-millisecond acquires to minutes of
#: lock-delay and hours of holding.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
    float("inf"),
)


@dataclass(frozen=True)
class Histogram:
    """A distribution of durations in seconds.

    Attributes:
        count: Observations.
        total: Their sum.
        max: The largest (0 when none).
        buckets: Cumulative counts per upper bound of :data:`BUCKETS` (Prometheus style).
    """

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    buckets: tuple[int, ...] = ()

    @property
    def mean(self) -> float:
        """The mean (0 when empty)."""
        return self.total / self.count if self.count else 0.0


@dataclass
class _Dist:
    count: int = 0
    total: float = 0.0
    max: float = 0.0
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1

    def frozen(self) -> Histogram:
        running = 0
        cumulative = []
        for n in self.counts:
            running += n
            cumulative.append(running)
        return Histogram(self.count, self.total, self.max, tuple(cumulative))


@dataclass(frozen=True)
class ManagerStats:
    """A manager's counters since it was made.

    Attributes:
        acquired: Acquisitions (leases handed out).
        acquire_failed: Acquire calls that ended without a lease (timeout, busy, error).
        released: Leases released by their holder.
        lost: Leases lost, by :class:`~locksmith.LossReason` value.
        lock_delay_waits: Waits for a lock-delay window.
        sessions_created: Sessions this manager created (or adopted).
        sessions_lost: Sessions that ended under it (invalidated, or presumed at the deadline).
        renewals: Successful renewals.
        renew_failures: Renewal loops that ended without success.
        held: Leases held now.
        acquire_latency: From the acquire call to the lease, in seconds.
        hold_duration: From acquisition to release or loss, in seconds.
        lock_delay_wait: Seconds planned per lock-delay wait.
        renew_latency: From sending a successful renewal to its answer, in seconds.
    """

    acquired: int
    acquire_failed: int
    released: int
    lost: dict[str, int]
    lock_delay_waits: int
    sessions_created: int
    sessions_lost: int
    renewals: int
    renew_failures: int
    held: int
    acquire_latency: Histogram
    hold_duration: Histogram
    lock_delay_wait: Histogram
    renew_latency: Histogram


class Recorder:
    """The machine's counters (updated by the machine only)."""

    def __init__(self) -> None:
        self.acquired = 0
        self.acquire_failed = 0
        self.released = 0
        self.lost: dict[str, int] = {r.value: 0 for r in LossReason}
        self.lock_delay_waits = 0
        self.sessions_created = 0
        self.sessions_lost = 0
        self.renewals = 0
        self.renew_failures = 0
        self.acquire_latency = _Dist()
        self.hold_duration = _Dist()
        self.lock_delay_wait = _Dist()
        self.renew_latency = _Dist()

    def snapshot(self, held: int) -> ManagerStats:
        """A frozen copy, with ``held`` leases held now."""
        return ManagerStats(
            acquired=self.acquired,
            acquire_failed=self.acquire_failed,
            released=self.released,
            lost=dict(self.lost),
            lock_delay_waits=self.lock_delay_waits,
            sessions_created=self.sessions_created,
            sessions_lost=self.sessions_lost,
            renewals=self.renewals,
            renew_failures=self.renew_failures,
            held=held,
            acquire_latency=self.acquire_latency.frozen(),
            hold_duration=self.hold_duration.frozen(),
            lock_delay_wait=self.lock_delay_wait.frozen(),
            renew_latency=self.renew_latency.frozen(),
        )
