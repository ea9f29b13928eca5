"""The one retry policy: exponential backoff with jitter, its randomness injected.

The state machine asks :meth:`Backoff.delay` how long to wait before the next try of
anything (an acquire while Consul is unreachable, a cleanup release, a watch that failed).
The same object is a tenacity ``wait`` strategy, so the renewal loops that tenacity runs
back off by exactly the same rule.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``start * 2**(n-1)`` capped at ``cap``, times a jitter factor.

    Args:
        start: The first delay.
        cap: The largest delay.
        jitter: The delay is multiplied by a factor in ``[1 - jitter, 1 + jitter]`` so that
            many clients retrying together spread out.
        rng: Returns floats in ``[0, 1)``; injected so that tests are deterministic.
    """

    start: float = 0.05
    cap: float = 2.0
    jitter: float = 0.2
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def base(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1-based), before jitter."""
        n = max(1, attempt)
        # 2**n overflows floats for huge n: stop doubling once past the cap.
        if n > 64:
            return self.cap
        return min(self.cap, self.start * 2.0 ** (n - 1))

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1-based), with jitter."""
        factor = 1.0 - self.jitter + 2.0 * self.jitter * self.rng()
        return self.base(attempt) * factor

    def __call__(self, retry_state: Any) -> float:
        """tenacity's ``wait`` protocol: the delay after ``retry_state.attempt_number``."""
        return self.delay(int(retry_state.attempt_number))
