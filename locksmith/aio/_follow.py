"""The blocking-query follower, async: the same :class:`~locksmith._follow.FollowState`
rules (index bookkeeping, backoff, start over when the index goes back) driven by a task.

Stop it by cancelling (a cancel scope around the ``async for``), or with ``deadline``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

import anyio

from locksmith._clock import Clock
from locksmith._deadline import MAX_BLOCKING_WAIT, query_wait
from locksmith._exceptions import ConsulUnavailable, TLSError
from locksmith._follow import FollowState
from locksmith._models import QueryResult

__all__ = ["follow"]

T = TypeVar("T")


async def follow(
    read: Callable[[int | None, float | None], Awaitable[QueryResult[T]]],
    *,
    clock: Clock,
    deadline: float = math.inf,
    max_wait: float = MAX_BLOCKING_WAIT,
    on_error: Callable[[Exception], None] | None = None,
) -> AsyncGenerator[QueryResult[T], None]:
    """Yield the first answer of ``read(index, wait)``, then every answer whose index moved.

    Transient failures are retried with backoff; others (TLS, permission, bad request) are
    raised. The first query is always sent, even with a deadline already passed.
    """
    state = FollowState()
    first = True
    while True:
        now = clock.monotonic()
        if now >= deadline and not first:
            return
        first = False
        wait = query_wait(now, deadline, max_wait)
        try:
            res = await read(state.index or None, wait if state.index else None)
        except TLSError:
            raise
        except ConsulUnavailable as exc:
            if on_error is not None:
                on_error(exc)
            pause = state.failed()
            await anyio.sleep(max(0.0, min(pause, deadline - clock.monotonic())))
            continue
        if state.answered(res.meta.index):
            yield res
