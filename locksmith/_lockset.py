"""LockSet: many KV keys acquired together, all or none, with the manager's session.

A :class:`LockSet` takes its keys in sorted order, up to 64 per ``/v1/txn`` (Consul 1.8's
limit per transaction), each transaction all or nothing. Between batches the keys already
taken stay held while the next batch waits, and every caller takes its keys in the same
(sorted) order, so two overlapping sets never wait for each other in a cycle; a call that
gives up (timeout, error, Ctrl-C) gives back what it took, so it never returns holding part
of its set. Once held, the keys are one unit: a loss of any key is the loss of the set (one
``on_lost`` event naming every key; the others are given back), and a release gives them all
back in transactions of 64.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from types import TracebackType

from locksmith._cancel import Cancel, check_cancel
from locksmith._deadline import Deadline
from locksmith._engine import Engine
from locksmith._exceptions import ValidationError
from locksmith._lease import LeaseSet, LossEvent
from locksmith._protocol import AcquireManyRequested, ReleaseManyRequested
from locksmith._states import LockState, LossReason
from locksmith._validate import MAX_TXN_OPS, check_callback, check_timeout

__all__ = ["LockSet"]


class LockSet:
    """Many keys held together. Made by :meth:`LockManager.lock_many`; not reentrant.

    Attributes:
        keys: The keys, sorted.
        value: Written to every key on acquisition.
    """

    def __init__(self, engine: Engine, keys: tuple[str, ...], value: bytes) -> None:
        self._engine = engine
        self.keys = keys
        self.value = value
        self._callbacks: list[Callable[[LossEvent], object]] = []
        self._id = engine.register_lock(self)
        self._local = threading.local()
        self._sets: weakref.WeakSet[LeaseSet] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<LockSet {len(self.keys)} keys from {self.keys[0]!r} {self.state.value}>"

    def __len__(self) -> int:
        return len(self.keys)

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> LockState:
        """The lifecycle state."""
        return self._engine.lock_state(self._id)

    @property
    def lease_set(self) -> LeaseSet | None:
        """The set held right now, or None (as soon as a loss is known or presumed)."""
        return self._engine.set_of(self._id, self.keys[0])

    @property
    def held(self) -> bool:
        """Whether the set is held right now."""
        return self.lease_set is not None

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` once per lost set (``event.keys`` names every key).

        Callbacks run on the manager's callback thread; an exception in one is logged.
        Returns the callback, so this works as a decorator.
        """
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease_set: LeaseSet | None = None) -> threading.Event:
        """An event set when ``lease_set`` (default: the current one) ends; already set if
        nothing is held. Every key of a set ends at once, so this is its first key's."""
        lease_set = self._check(lease_set) if lease_set is not None else self.lease_set
        if lease_set is None:
            ev = threading.Event()
            ev.set()
            return ev
        return self._engine.ended(lease_set.leases[0])

    def on_end(
        self, hook: Callable[[LossReason | None], object], lease_set: LeaseSet | None = None
    ) -> None:
        """Call ``hook(reason)`` once when the set ends (``reason`` None: released), on the
        thread that learns of it; keep it short. If nothing is held, it runs now."""
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
                "lease_set", f"must be a LeaseSet this LockSet handed out, got {lease_set!r}"
            )
        return lease_set

    # -- acquire / release ---------------------------------------------------------------
    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: Cancel | None = None
    ) -> LeaseSet | None:
        """Acquire every key, or none.

        Args:
            blocking: False: try each batch once; None if a key is busy.
            timeout: Seconds to wait at most (None: forever).
            cancel: Stop waiting when it is set: :class:`Cancelled` is raised and every key
                taken is given back.

        Returns:
            The new :class:`LeaseSet`, or None (only with ``blocking=False``).

        Raises:
            ValidationError: Bad ``blocking`` or ``timeout`` (before any request).
            LockTimeout: The deadline passed; nothing of the set is held.
            Cancelled: ``cancel`` was set first; nothing of the set is held.
            LockConflict: A key belongs to another kind of lock (foreign flags).
            ManagerClosed: The manager is closed.
            PermissionDenied: The ACL token may not write a key.
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
        cancel = check_cancel(cancel)
        engine = self._engine
        engine.check_open()
        now = engine.clock.monotonic()
        if not blocking and seconds is None:
            seconds = engine.consul.config.timeout * (1 + len(self.keys) // MAX_TXN_OPS)
        deadline = Deadline.after(now, None if seconds is None or math.isinf(seconds) else seconds)
        actor = engine.new_id()
        lease_set: LeaseSet | None = engine.call(
            actor,
            AcquireManyRequested(actor, self._id, self.keys, self.value, deadline.at, blocking),
            cancel,
        )
        if lease_set is not None:
            self._sets.add(lease_set)
        return lease_set

    def release(self, lease_set: LeaseSet | None = None) -> bool:
        """Release every key of the set (no lock-delay for the next holders).

        Args:
            lease_set: The set to release; only that one (None: whatever is held now).

        Returns:
            True if it was released; False if it had been lost already (reported to
            ``on_lost``), or, with ``lease_set``, had ended already.

        Raises:
            NotHeld: No ``lease_set`` was given and nothing is held.
        """
        if lease_set is not None:
            lease_set = self._check(lease_set)
        engine = self._engine
        actor = engine.new_id()
        released: bool = engine.call(
            actor, ReleaseManyRequested(actor, self._id, self.keys[0], lease_set)
        )
        return released

    # -- context manager -----------------------------------------------------------------
    def _stack(self) -> list[LeaseSet]:
        stack: list[LeaseSet] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def __enter__(self) -> LeaseSet:
        lease_set = self.acquire()
        assert lease_set is not None  # a blocking acquire returns a set or raises
        self._stack().append(lease_set)
        return lease_set

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(self._stack().pop())
