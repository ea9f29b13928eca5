"""The one blocking-query follower: index bookkeeping, backoff, and a loop that yields news.

Consul's blocking queries return when something under the query changed after ``index``,
or when ``wait`` runs out. Following one correctly means: start at 0 (answer at once),
block on the returned X-Consul-Index next, start over at 0 when the index goes backwards
(a snapshot restore, a new leader, an index above the server's), and back off after
failures without ever giving up. :class:`FollowState` is that rule without I/O (the lock
state machine's watch slots use it); :func:`follow` runs it on a thread for election
observers, semaphores and the CLI.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from locksmith._backoff import Backoff
from locksmith._clock import Clock
from locksmith._deadline import MAX_BLOCKING_WAIT, query_wait
from locksmith._exceptions import ConsulUnavailable, TLSError
from locksmith._models import QueryResult, next_index

__all__ = ["FollowState", "follow"]

T = TypeVar("T")


@dataclass
class FollowState:
    """Where one blocking query stands.

    Attributes:
        index: The index to block on next (0: answer at once).
        failures: Failures since the last answer.
        backoff: The retry policy after failures.
    """

    index: int = 0
    failures: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(start=0.1, cap=5.0))

    def answered(self, index: int) -> bool:
        """Record an answer with X-Consul-Index ``index``; True if it is news (first
        answer, or the index moved)."""
        first = self.index == 0
        previous = self.index
        self.index = next_index(previous, index)
        self.failures = 0
        return first or self.index != previous

    def failed(self) -> float:
        """Record a failure; return the pause before the next try. The next query starts
        over at index 0."""
        self.failures += 1
        self.index = 0
        return self.backoff.delay(self.failures)


def follow(
    read: Callable[[int | None, float | None], QueryResult[T]],
    *,
    clock: Clock,
    deadline: float = math.inf,
    stop: threading.Event | None = None,
    max_wait: float = MAX_BLOCKING_WAIT,
    on_error: Callable[[Exception], None] | None = None,
) -> Iterator[QueryResult[T]]:
    """Yield the first answer of ``read``, then every answer whose index moved.

    Args:
        read: ``read(index, wait)`` sends one query (``index`` None: answer at once).
        clock: The clock deadlines are on.
        deadline: Stop when the clock reaches it.
        stop: Stop when set (checked between queries; each query waits at most
            ``max_wait``, so a stop is noticed within that).
        max_wait: The longest wait of one query.
        on_error: Told about each transient failure (before the backoff pause).

    Raises:
        LocksmithError: A failure that retrying cannot heal (permission denied, TLS, a bad
            request); transient ones (Consul unreachable) are retried with backoff.
    """
    state = FollowState()
    first = True
    while stop is None or not stop.is_set():
        now = clock.monotonic()
        if now >= deadline and not first:
            return  # (the first query is always sent: a deadline of now still reads once)
        first = False
        wait = query_wait(now, deadline, max_wait)
        try:
            res = read(state.index or None, wait if state.index else None)
        except TLSError:
            raise
        except ConsulUnavailable as exc:
            if on_error is not None:
                on_error(exc)
            pause = state.failed()
            if clock.wait_until(min(clock.monotonic() + pause, deadline), stop):
                return
            continue
        if state.answered(res.meta.index):
            yield res
