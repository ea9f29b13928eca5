"""One deadline per call: computed once, and the time left passed down to every request.

A call with a time limit (``acquire(timeout=...)``, ``close(timeout=...)``, a renewal that
must end by the lease deadline) computes one :class:`Deadline` at its start. Each request it
makes gets :meth:`Deadline.budget`: the time left, capped by the client's own request
timeout, never a fresh full timeout (trio's ``move_on_at`` is the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MAX_BLOCKING_WAIT", "MIN_REQUEST_TIMEOUT", "WAIT_JITTER", "Deadline", "query_wait"]

#: The shortest timeout a request is sent with: below it nothing can be answered anyway.
MIN_REQUEST_TIMEOUT = 0.05
#: The longest wait locksmith asks of one blocking query (Consul caps waits at 10 minutes).
MAX_BLOCKING_WAIT = 300.0
#: Consul adds up to wait/16 of random jitter to a blocking query's wait.
WAIT_JITTER = 1 / 16


def query_wait(now: float, deadline: float, max_wait: float = MAX_BLOCKING_WAIT) -> float:
    """The ``wait`` of one blocking query that must be answered by ``deadline``.

    The time left, shrunk by Consul's jitter: the answer comes by the deadline, not up to
    1/16 after it.
    """
    return max(0.001, min(max_wait, (deadline - now) / (1 + WAIT_JITTER)))


@dataclass(frozen=True, slots=True)
class Deadline:
    """An instant on the manager's clock (``inf``: none).

    Attributes:
        at: The instant, in the clock's seconds.
    """

    at: float = math.inf

    @classmethod
    def after(cls, now: float, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` after ``now`` (None or inf: no deadline)."""
        if seconds is None or math.isinf(seconds):
            return cls(math.inf)
        return cls(now + seconds)

    @property
    def bounded(self) -> bool:
        """Whether there is a deadline at all."""
        return not math.isinf(self.at)

    def remaining(self, now: float) -> float:
        """Seconds left at ``now`` (0 once passed, inf without a deadline)."""
        return max(0.0, self.at - now)

    def expired(self, now: float) -> bool:
        """Whether the deadline has passed at ``now``."""
        return now >= self.at

    def earlier(self, at: float) -> Deadline:
        """This deadline or ``at``, whichever comes first."""
        return self if self.at <= at else Deadline(at)

    def budget(self, now: float, cap: float) -> float:
        """The timeout for one request sent at ``now``: the time left, at most ``cap``."""
        return max(MIN_REQUEST_TIMEOUT, min(cap, self.remaining(now)))
