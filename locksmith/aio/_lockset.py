"""AsyncLockSet: the asyncio twin of :class:`~locksmith.LockSet` (many keys, all or none).

The same state machine takes the keys in sorted batches of 64 and gives back what it took
when the call ends without the whole set, also when the task is cancelled.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from types import TracebackType

import anyio

from locksmith._deadline import Deadline
from locksmith._exceptions import ValidationError
from locksmith._lease import LeaseSet
from locksmith._protocol import AcquireManyRequested, ReleaseManyRequested
from locksmith._states import LockState, LossReason
from locksmith._validate import MAX_TXN_OPS, check_callback, check_timeout
from locksmith.aio._engine import AsyncEngine, Callback

__all__ = ["AsyncLockSet"]

#: Seconds a release may take when the block it closes was cancelled (shielded).
_CLEANUP_TIMEOUT = 10.0


class AsyncLockSet:
    """Many keys held together. Made by :meth:`AsyncLockManager.lock_many`.

    Attributes:
        keys: The keys, sorted.
        value: Written to every key on acquisition.
    """

    def __init__(self, engine: AsyncEngine, keys: tuple[str, ...], value: bytes) -> None:
        self._engine = engine
        self.keys = keys
        self.value = value
        self._callbacks: list[Callback] = []
        self._id = engine.register_lock(self)
        self._sets: weakref.WeakSet[LeaseSet] = weakref.WeakSet()
        self._blocks: dict[int, list[LeaseSet]] = {}

    def __repr__(self) -> str:
        return f"<AsyncLockSet {len(self.keys)} keys from {self.keys[0]!r} {self.state.value}>"

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def state(self) -> LockState:
        """The lifecycle state."""
        return self._engine.lock_state(self._id)

    @property
    def lease_set(self) -> LeaseSet | None:
        """The set held right now, or None."""
        return self._engine.set_of(self._id, self.keys[0])

    @property
    def held(self) -> bool:
        """Whether the set is held right now."""
        return self.lease_set is not None

    def on_lost(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` (a function or a coroutine function) once per lost set."""
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease_set: LeaseSet | None = None) -> anyio.Event:
        """An event set when the set ends (already set when nothing is held)."""
        lease_set = self._check(lease_set) if lease_set is not None else self.lease_set
        if lease_set is None:
            ev = anyio.Event()
            ev.set()
            return ev
        return self._engine.ended(lease_set.leases[0])

    def on_end(
        self, hook: Callable[[LossReason | None], object], lease_set: LeaseSet | None = None
    ) -> None:
        """Call ``hook(reason)`` (not awaited) once when the set ends (None: released)."""
        check_callback(hook, "hook")
        lease_set = self._check(lease_set) if lease_set is not None else self.lease_set
        if lease_set is None:
            hook(LossReason.LEASE_EXPIRED)
            return
        self._engine.on_end(lease_set.leases[0], hook)

    def _check(self, lease_set: object) -> LeaseSet:
        if not isinstance(lease_set, LeaseSet) or (
            lease_set not in self._sets and self.lease_set is not lease_set
        ):
            raise ValidationError(
                "lease_set", f"must be a LeaseSet this set handed out, got {lease_set!r}"
            )
        return lease_set

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> LeaseSet | None:
        """Acquire every key, or none; cancellable at any point (nothing stays held).

        Raises:
            LockTimeout: The deadline passed; nothing of the set is held.
            LockConflict: A key belongs to another kind of lock.
            ManagerClosed: The manager is closed.
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
        engine = self._engine
        engine.check_open()
        if not blocking and seconds is None:
            seconds = engine.consul.config.timeout * (1 + len(self.keys) // MAX_TXN_OPS)
        now = engine.clock.monotonic()
        deadline = Deadline.after(now, None if seconds is None or math.isinf(seconds) else seconds)
        actor = engine.new_id()
        lease_set: LeaseSet | None = await engine.call(
            actor,
            AcquireManyRequested(actor, self._id, self.keys, self.value, deadline.at, blocking),
        )
        if lease_set is not None:
            self._sets.add(lease_set)
        return lease_set

    async def release(self, lease_set: LeaseSet | None = None) -> bool:
        """Release every key of the set. Returns False if it had been lost already.

        Raises:
            NotHeld: No ``lease_set`` given and nothing is held.
        """
        if lease_set is not None:
            lease_set = self._check(lease_set)
        engine = self._engine
        actor = engine.new_id()
        released: bool = await engine.call(
            actor, ReleaseManyRequested(actor, self._id, self.keys[0], lease_set)
        )
        return released

    async def __aenter__(self) -> LeaseSet:
        lease_set = await self.acquire()
        assert lease_set is not None
        self._blocks.setdefault(anyio.get_current_task().id, []).append(lease_set)
        return lease_set

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = anyio.get_current_task().id
        stack = self._blocks[task]
        lease_set = stack.pop()
        if not stack:
            del self._blocks[task]
        with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
            await self.release(lease_set)
