"""AsyncLock: the asyncio twin of :class:`~locksmith.Lock`, on the same state machine.

Every call is cancellable: cancelling a task blocked in :meth:`AsyncLock.acquire` (a cancel
scope, ``asyncio.timeout``, ``task.cancel()``) leaves nothing behind: an acquire that may
have been applied is given back in the background, and the connection it used is closed, so
the next request works. :meth:`AsyncLock.guard` runs a block that is *cancelled* the moment
the lease is lost or presumed lost, then raises :class:`~locksmith.LockLost`.
"""

from __future__ import annotations

import base64
import math
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import anyio

from locksmith._deadline import Deadline
from locksmith._exceptions import LockLost, SessionNotFound, ValidationError
from locksmith._fencing import ReadLockKey, RunTxn, guarded_write
from locksmith._lease import Lease
from locksmith._models import KVEntry, TxnOutcome
from locksmith._protocol import AcquireRequested, KeyWritten, ReleaseRequested
from locksmith._states import LockState, LossReason
from locksmith._validate import check_callback, check_key, check_timeout, check_txn_value
from locksmith.aio._engine import AsyncEngine, Callback

__all__ = ["AsyncLock"]

#: Seconds a release may take when the block it closes was cancelled (shielded).
_CLEANUP_TIMEOUT = 10.0


class AsyncLock:
    """A distributed lock on one KV key. Made by :meth:`AsyncLockManager.lock`.

    Attributes:
        key: The KV key.
        value: Written to the key on acquisition.
        flags: KV flags written with it.
    """

    def __init__(self, engine: AsyncEngine, key: str, value: bytes, flags: int) -> None:
        self._engine = engine
        self.key = key
        self.value = value
        self.flags = flags
        self._callbacks: list[Callback] = []
        self._id = engine.register_lock(self)
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        #: The leases of ``async with lock:`` blocks, per task (tasks may share a lock).
        self._blocks: dict[int, list[Lease]] = {}

    def __repr__(self) -> str:
        return f"<AsyncLock {self.key!r} {self.state.value}>"

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> LockState:
        """The lifecycle state."""
        return self._engine.lock_state(self._id)

    @property
    def lease(self) -> Lease | None:
        """The lease held right now (None as soon as a loss is known or presumed)."""
        return self._engine.lease_of(self._id, self.key)

    @property
    def held(self) -> bool:
        """Whether the lock is held right now."""
        return self.lease is not None

    def on_lost(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` (a function or a coroutine function) when a lease of this
        lock is lost. Returns the callback (a decorator)."""
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease: Lease | None = None) -> anyio.Event:
        """An event set when ``lease`` (default: the current one) ends: lost, presumed lost
        at its deadline, or released. Already set when nothing is held."""
        lease = self._check_lease(lease) if lease is not None else self.lease
        if lease is None:
            ev = anyio.Event()
            ev.set()
            return ev
        return self._engine.ended(lease)

    def on_end(
        self, hook: Callable[[LossReason | None], object], lease: Lease | None = None
    ) -> None:
        """Call ``hook(reason)`` (not awaited) once when ``lease`` ends (None: released)."""
        check_callback(hook, "hook")
        lease = self._check_lease(lease) if lease is not None else self.lease
        if lease is None:
            hook(LossReason.LEASE_EXPIRED)
            return
        self._engine.on_end(lease, hook)

    def _check_lease(self, lease: object) -> Lease:
        if not isinstance(lease, Lease) or (
            lease not in self._leases and self._engine.lease_of(self._id, self.key) is not lease
        ):
            raise ValidationError(
                "lease", f"must be a Lease this lock on {self.key!r} handed out, got {lease!r}"
            )
        return lease

    # -- acquire / release ---------------------------------------------------------------
    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> Lease | None:
        """Acquire the lock; cancellable at any point.

        Args:
            blocking: False: try once, never wait for a holder; None if the key is busy.
            timeout: Seconds to wait at most (None: forever; cancel scopes work too).

        Raises:
            LockTimeout: The deadline passed.
            LockConflict: The key belongs to another kind of lock.
            ManagerClosed: The manager is closed (or not running).
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
        engine = self._engine
        engine.check_open()
        now = engine.clock.monotonic()
        if not blocking:
            deadline = Deadline.after(
                now, engine.consul.config.timeout if seconds is None else seconds
            )
        else:
            deadline = Deadline.after(
                now, None if seconds is None or math.isinf(seconds) else seconds
            )
        actor = engine.new_id()
        lease: Lease | None = await engine.call(
            actor,
            AcquireRequested(
                actor, self._id, self.key, self.value, self.flags, deadline.at, blocking
            ),
        )
        if lease is not None:
            self._leases.add(lease)
        return lease

    async def release(self, lease: Lease | None = None) -> bool:
        """Release the lock (``?release=``: no lock-delay for the next holder).

        Args:
            lease: Only that lease (default: whatever this lock holds now).

        Returns:
            True if a held lease was released; False if it had been lost already.

        Raises:
            NotHeld: No ``lease`` given and the lock is not held.
        """
        if lease is not None:
            lease = self._check_lease(lease)
        engine = self._engine
        actor = engine.new_id()
        released: bool = await engine.call(
            actor, ReleaseRequested(actor, self._id, self.key, lease)
        )
        return released

    # -- guarded writes ------------------------------------------------------------------
    async def fenced_put(self, key: str, value: bytes | str, *, lease: Lease | None = None) -> int:
        """Write ``key`` only while the lease is held, atomically (see
        :meth:`locksmith.Lock.fenced_put`). Returns the written key's ModifyIndex.

        Raises:
            LockLost: The lease is gone.
        """
        key = check_key(key)
        data = check_txn_value(value)
        lease = self._check_lease(lease) if lease is not None else self.lease
        write = {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(data).decode()}}
        out = await self._guarded(lease, write, "kv.fenced_put", f"fenced write to {key!r}")
        entry = out.entries[-1] if out.entries else None
        return entry.modify_index if entry is not None else out.index

    async def rewrite(self, value: bytes | str, *, lease: Lease | None = None) -> int:
        """Change the key's value while holding it (see :meth:`locksmith.Lock.rewrite`)."""
        data = check_txn_value(value)
        lease = self._check_lease(lease) if lease is not None else self.lease
        op = {
            "KV": {
                "Verb": "lock",
                "Key": self.key,
                "Value": base64.b64encode(data).decode(),
                "Flags": self.flags,
            }
        }
        out = await self._guarded(lease, op, "kv.rewrite", f"rewrite of {self.key!r}")
        entry = out.entries[-1] if out.entries else None
        if entry is None:  # pragma: no cover - Consul answers a lock op with its entry
            raise LockLost(f"rewrite of {self.key!r}: Consul's answer had no entry")
        self.value = data
        assert lease is not None
        self._engine.handle(KeyWritten(lease, entry.modify_index))
        return entry.modify_index

    async def _guarded(
        self, lease: Lease | None, op: dict[str, Any], operation: str, what: str
    ) -> TxnOutcome:
        engine = self._engine
        kv = engine.consul.kv
        steps = guarded_write(
            self.key,
            lease,
            op,
            engine.fence,
            engine.clock.monotonic,
            engine.consul.config.timeout,
            what,
        )
        answer: TxnOutcome | KVEntry | None = None
        try:
            step = next(steps)
            while True:
                if isinstance(step, RunTxn):
                    answer = await kv.txn(
                        step.ops, operation=operation, resource=self.key, timeout=step.timeout
                    )
                elif isinstance(step, ReadLockKey):
                    answer = await kv.get(self.key, consistency="consistent", timeout=step.timeout)
                else:
                    assert lease is not None
                    engine.handle(KeyWritten(lease, step.index))
                    answer = None
                step = steps.send(answer)
        except StopIteration as done:
            outcome: TxnOutcome = done.value
            return outcome
        except SessionNotFound as exc:
            sid = lease.session_id if lease else None
            raise LockLost(f"{what} refused: session {sid} is gone") from exc

    # -- blocks --------------------------------------------------------------------------
    @asynccontextmanager
    async def guard(self, timeout: float | None = None) -> AsyncIterator[Lease]:
        """Acquire, run the block, release; the block is **cancelled** the moment the lease
        is lost or presumed lost (at its deadline at the latest), and then
        :class:`~locksmith.LockLost` is raised.

        Raises:
            LockLost: The lease ended while the block ran.
            LockTimeout: Not acquired within ``timeout``.
        """
        lease = await self.acquire(timeout=timeout)
        assert lease is not None
        lost: list[LossReason] = []
        with anyio.CancelScope() as scope:

            def on_end(reason: LossReason | None) -> None:
                if reason is not None:
                    lost.append(reason)
                    scope.cancel()

            self._engine.on_end(lease, on_end)
            try:
                yield lease
            finally:
                with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                    await self.release(lease)
        if lost:
            raise LockLost(
                f"the lock on {self.key!r} was lost while its block ran ({lost[0].value})"
            )

    async def __aenter__(self) -> Lease:
        lease = await self.acquire()
        assert lease is not None
        self._blocks.setdefault(anyio.get_current_task().id, []).append(lease)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = anyio.get_current_task().id
        stack = self._blocks[task]
        lease = stack.pop()
        if not stack:
            del self._blocks[task]
        with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
            await self.release(lease)
