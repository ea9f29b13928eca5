"""AsyncElection: leader election on one key, for asyncio services.

The same layout and rules as :class:`~locksmith.Election` (the leader holds the key with its
session; ``resign`` releases it with no lock-delay). :meth:`AsyncElection.run` runs the
leader's work in a task that is cancelled the moment leadership ends, which is what async
code needs: no flag to poll.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import anyio

from locksmith._election import LeaderInfo, LeadershipEvent
from locksmith._exceptions import LockLost
from locksmith._lease import Lease, LossEvent
from locksmith._log import get_logger
from locksmith._models import KVEntry
from locksmith._states import LockState, LossReason, ManagerState
from locksmith._validate import check_callback, check_timeout, check_txn_value
from locksmith.aio._engine import Callback
from locksmith.aio._follow import follow
from locksmith.aio._lock import AsyncLock
from locksmith.aio._ports import AsyncManagerPort

__all__ = ["AsyncElection"]

log = get_logger("locksmith.election")

R = TypeVar("R")

#: Seconds a resign may take when the work it ends was cancelled.
_CLEANUP_TIMEOUT = 10.0


class AsyncElection:
    """A leader election on one key. Made by :meth:`AsyncLockManager.election`."""

    def __init__(self, manager: AsyncManagerPort, key: str, value: bytes | str = b"") -> None:
        self._mgr = manager
        self._lock: AsyncLock = manager.lock(key, value)
        self.key = self._lock.key
        self._elected_cbs: list[Callback] = []
        self._deposed_cbs: list[Callback] = []
        self._change_cbs: list[Callback] = []
        self._observing = False
        self._lock.on_lost(self._lost)

    def __repr__(self) -> str:
        return f"<AsyncElection {self.key!r} leader={self.is_leader}>"

    @property
    def lock(self) -> AsyncLock:
        """The underlying lock."""
        return self._lock

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads right now."""
        return self._lock.held

    @property
    def lease(self) -> Lease | None:
        """The leadership lease, or None."""
        return self._lock.lease

    # -- candidate -----------------------------------------------------------------------
    async def campaign(self, timeout: float | None = None) -> Lease:
        """Wait until elected (cancellable); return the leadership lease.

        Raises:
            LockTimeout: Not elected within ``timeout`` seconds.
        """
        lease = await self._lock.acquire(timeout=timeout)
        assert lease is not None
        log.info(
            "election.elected",
            key=self.key,
            session_id=lease.session_id,
            fencing_token=lease.fencing_token,
        )
        self._mgr.dispatch(list(self._elected_cbs), LeadershipEvent(self.key, lease))
        return lease

    async def resign(self) -> bool:
        """Step down; the next candidate takes over at once. True if this one was leading."""
        lease = self._lock.lease
        if lease is None:
            if self._lock.state is LockState.LOST:
                await self._lock.release()
            return False
        released = await self._lock.release(lease)
        if released:
            log.info("election.resigned", key=self.key, session_id=lease.session_id)
            self._mgr.dispatch(list(self._deposed_cbs), LeadershipEvent(self.key, lease, None))
        return released

    async def proclaim(self, value: bytes | str) -> None:
        """Change the published value while leading.

        Raises:
            LockLost: Not leading (anymore).
        """
        await self._lock.rewrite(check_txn_value(value))

    def _lost(self, event: LossEvent) -> None:
        log.warning("election.deposed", key=self.key, reason=event.reason.value)
        self._mgr.dispatch(
            list(self._deposed_cbs), LeadershipEvent(self.key, event.lease, event.reason)
        )

    def on_elected(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` each time this candidate is elected."""
        check_callback(callback)
        self._elected_cbs.append(callback)
        return callback

    def on_deposed(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` when leadership ends (loss, or ``resign``)."""
        check_callback(callback)
        self._deposed_cbs.append(callback)
        return callback

    async def run(
        self,
        fn: Callable[[Lease], Awaitable[R]],
        *,
        rejoin: bool = True,
        timeout: float | None = None,
    ) -> R:
        """Campaign, then run ``await fn(lease)`` while leading.

        ``fn`` is **cancelled** the moment leadership ends (a loss noticed, or the lease
        deadline passing while Consul cannot be reached). With ``rejoin`` the candidate then
        campaigns again and calls ``fn`` again; when ``fn`` returns, leadership is resigned
        and its result returned. If ``fn`` raises, leadership is resigned and the exception
        propagates.

        Raises:
            LockTimeout: Not elected within ``timeout`` (per campaign).
            LockLost: Leadership was lost while ``fn`` ran, and ``rejoin`` is False.
        """
        check_callback(fn, "fn")
        while True:
            lease = await self.campaign(timeout=timeout)
            lost: list[LossReason] = []
            with anyio.CancelScope() as scope:

                def on_end(
                    reason: LossReason | None,
                    scope: anyio.CancelScope = scope,
                    lost: list[LossReason] = lost,
                ) -> None:
                    if reason is not None:
                        lost.append(reason)
                        scope.cancel()

                self._lock.on_end(on_end, lease)
                try:
                    result = await fn(lease)
                except BaseException:
                    with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                        await self._lock.release(lease)
                    raise
            if lost:
                with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                    await self._lock.release(lease)  # acknowledge the loss
                if rejoin:
                    log.info("election.rejoin", key=self.key)
                    continue
                raise LockLost(f"leadership of {self.key!r} was lost while running")
            if self._lock.lease is lease:
                await self.resign()
            return result

    # -- observer ------------------------------------------------------------------------
    async def leader(self) -> LeaderInfo | None:
        """The current leader, or None when nobody leads."""
        entry = await self._mgr.consul.kv.get(self.key)
        return await self._info(entry, entry.modify_index if entry else 0)

    async def _info(self, entry: KVEntry | None, since: int) -> LeaderInfo | None:
        if entry is None or entry.session is None:
            return None
        try:
            sess = await self._mgr.consul.sessions.info(entry.session)
        except Exception:  # noqa: BLE001 - the leader's details are optional
            sess = None
        return LeaderInfo(
            key=self.key,
            value=entry.value,
            session_id=entry.session,
            node=sess.node if sess else "",
            session_name=sess.name if sess else "",
            since_index=since,
        )

    async def observe(
        self, timeout: float | None = None
    ) -> AsyncGenerator[LeaderInfo | None, None]:
        """Yield the current leader, then every change (new leader, new value, no leader).

        Stops after ``timeout`` seconds, when the manager closes, or when cancelled. Leaving
        the loop early: close it (``async with contextlib.aclosing(election.observe())``).
        """
        clock = self._mgr.clock
        seconds = check_timeout(timeout)
        deadline = float("inf") if seconds is None else clock.monotonic() + seconds
        last: tuple[str | None, bytes] | None = None
        since = 0
        kv = self._mgr.consul.kv
        async with aclosing(
            follow(
                lambda index, wait: kv.get_with_meta(self.key, index=index, wait=wait),
                clock=clock,
                deadline=deadline,
                on_error=lambda exc: log.info(
                    "election.observe_retry", key=self.key, error=str(exc)
                ),
            )
        ) as answers:
            async for res in answers:
                if self._mgr.state in (ManagerState.CLOSING, ManagerState.CLOSED):
                    return
                entry = res.value
                current = (entry.session if entry else None, entry.value if entry else b"")
                if current == last:
                    continue
                if (
                    entry is not None
                    and entry.session
                    and (last is None or last[0] != entry.session)
                ):
                    since = entry.modify_index
                last = current
                yield await self._info(entry, since)

    def on_leader_change(self, callback: Callback) -> Callback:
        """Call ``callback(leader)`` for the current leader and every change after it (an
        observer task in the manager's task group follows the key until it closes)."""
        check_callback(callback)
        self._change_cbs.append(callback)
        if not self._observing:
            self._observing = True
            self._mgr.start_task(self._observe_loop, name=f"locksmith-observe-{self.key}")
        return callback

    async def _observe_loop(self) -> None:
        try:
            async with aclosing(self.observe()) as changes:
                async for info in changes:
                    self._mgr.dispatch(list(self._change_cbs), info)
        except Exception as exc:  # noqa: BLE001 - report and stop
            log.warning("election.observer_stopped", key=self.key, error=str(exc))
