"""Lock: a distributed lock on one KV key, acquired with its manager's session.

A :class:`Lock` is a thin handle: it validates arguments and asks the manager's engine,
whose state machine decides everything. One ``Lock`` may be shared by threads: a second
``acquire`` queues behind the first like a competing process would, and every release or
fenced write can name the very lease it means, so a thread whose lease ended can never
release, or write under, a lease another thread took later.
"""

from __future__ import annotations

import base64
import math
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from locksmith._cancel import Cancel, check_cancel
from locksmith._deadline import Deadline
from locksmith._engine import Engine
from locksmith._exceptions import LockLost, SessionNotFound, ValidationError
from locksmith._fencing import ReadLockKey, RunTxn, guarded_write
from locksmith._lease import Lease, LossEvent
from locksmith._models import KVEntry, TxnOutcome
from locksmith._protocol import AcquireRequested, KeyWritten, ReleaseRequested
from locksmith._states import LockState, LossReason
from locksmith._validate import check_callback, check_key, check_timeout, check_txn_value

__all__ = ["Lock"]


class Lock:
    """A distributed lock on one KV key. Made by :meth:`LockManager.lock`; not reentrant.

    Attributes:
        key: The KV key.
        value: Written to the key on acquisition.
        flags: KV flags written with it.
    """

    def __init__(self, engine: Engine, key: str, value: bytes, flags: int) -> None:
        self._engine = engine
        self.key = key
        self.value = value
        self.flags = flags
        self._callbacks: list[Callable[[LossEvent], object]] = []
        self._id = engine.register_lock(self)
        self._local = threading.local()
        #: Every lease this Lock handed out (weakly): release and fenced writes take no other.
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<Lock {self.key!r} {self.state.value}>"

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> LockState:
        """The lifecycle state."""
        return self._engine.lock_state(self._id)

    @property
    def lease(self) -> Lease | None:
        """The lease held right now, or None.

        None as soon as a loss is known or presumed: this reads the lease deadline on the
        clock, so it turns None at the deadline even if no thread has run since.
        """
        return self._engine.lease_of(self._id, self.key)

    @property
    def held(self) -> bool:
        """Whether the lock is held right now (see :attr:`lease`)."""
        return self.lease is not None

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` whenever a lease of this lock is lost (once per lease).

        Callbacks run on the manager's callback thread, one at a time; an exception in one
        is logged. Returns the callback, so this works as a decorator.
        """
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease: Lease | None = None) -> threading.Event:
        """An event that is set when ``lease`` (default: the current one) ends.

        It is set on loss, at the lease deadline at the latest when Consul cannot be
        reached, and on release; never later than :attr:`held` turns False, and never
        held up by callbacks. Use it as a cancellation signal for work done under the lock.
        If nothing is held, the returned event is already set.
        """
        lease = self._check_lease(lease) if lease is not None else self.lease
        if lease is None:
            ev = threading.Event()
            ev.set()
            return ev
        return self._engine.ended(lease)

    def _check_lease(self, lease: object) -> Lease:
        if not isinstance(lease, Lease) or (
            lease not in self._leases and self._engine.lease_of(self._id, self.key) is not lease
        ):
            raise ValidationError(
                "lease", f"must be a Lease this Lock on {self.key!r} handed out, got {lease!r}"
            )
        return lease

    # -- acquire -------------------------------------------------------------------------
    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: Cancel | None = None
    ) -> Lease | None:
        """Acquire the lock.

        Args:
            blocking: False: try once, never wait for a holder; None if the key is busy.
            timeout: Seconds to wait at most (None: forever); ``0`` tries once and raises
                :class:`LockTimeout` if the key is busy. With ``blocking=False`` it bounds
                the one try's requests (default: the client's timeout).
            cancel: Stop waiting when it is set (from another thread or a signal handler):
                :class:`Cancelled` is raised and nothing of the call is left on the server.

        Returns:
            The new :class:`Lease`, or None (only with ``blocking=False``).

        Raises:
            ValidationError: Bad ``blocking`` or ``timeout`` (before any request).
            LockTimeout: The deadline passed (every request gets only the time left).
            Cancelled: ``cancel`` was set first.
            LockConflict: The key belongs to another kind of lock (foreign flags).
            ManagerClosed: The manager is closed.
            ConsulUnavailable: Consul could not be reached (``blocking=False`` only;
                blocking calls retry until their deadline).
            PermissionDenied: The ACL token may not do this.
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
        cancel = check_cancel(cancel)
        engine = self._engine
        engine.check_open()
        now = engine.clock.monotonic()
        if not blocking:
            if seconds is None:
                seconds = engine.consul.config.timeout
            deadline = Deadline.after(now, seconds)
        else:
            deadline = Deadline.after(
                now, None if seconds is None or math.isinf(seconds) else seconds
            )
        actor = engine.new_id()
        lease: Lease | None = engine.call(
            actor,
            AcquireRequested(
                actor, self._id, self.key, self.value, self.flags, deadline.at, blocking
            ),
            cancel,
        )
        if lease is not None:
            self._leases.add(lease)
        return lease

    # -- release -------------------------------------------------------------------------
    def release(self, lease: Lease | None = None) -> bool:
        """Release the lock with ``?release=`` (no lock-delay for the next holder).

        Args:
            lease: The lease to release. Only that lease is released: if it has ended
                already (lost, or released) nothing else is touched, even if this Lock has
                been acquired again since. None: whatever this Lock holds now.

        Returns:
            True if a held lease was released; False if it had been lost already (the loss
            was reported to ``on_lost``), or, with ``lease``, ended already.

        Raises:
            NotHeld: No ``lease`` was given and the lock is not held (never acquired, or
                already released).
        """
        if lease is not None:
            lease = self._check_lease(lease)
        engine = self._engine
        actor = engine.new_id()
        released: bool = engine.call(actor, ReleaseRequested(actor, self._id, self.key, lease))
        return released

    # -- fenced writes -------------------------------------------------------------------
    def fenced_put(self, key: str, value: bytes | str, *, lease: Lease | None = None) -> int:
        """Write ``key`` only while the lease is still held, atomically.

        The write is one transaction that also checks, on the server, that the lock key
        still carries this lease's session and has not been acquired again since (a later
        acquisition changes the key's index, even by the same session). It is refused
        locally once the lease deadline has passed, or once this lease is not the lock's
        current one.

        Args:
            key: The key to write.
            value: Its value.
            lease: The lease to write under (default: the current one).

        Returns:
            The ModifyIndex of the written key.

        Raises:
            ValidationError: Bad ``key`` or ``value`` (before any request).
            LockLost: The lease is gone (locally presumed, or refused by Consul).
        """
        key = check_key(key)
        data = check_txn_value(value)
        lease = self._check_lease(lease) if lease is not None else self.lease
        write = {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(data).decode()}}
        out = self._guarded(lease, write, "kv.fenced_put", f"fenced write to {key!r}")
        entry = out.entries[-1] if out.entries else None
        return entry.modify_index if entry is not None else out.index

    def rewrite(self, value: bytes | str, *, lease: Lease | None = None) -> int:
        """Change the key's value while holding it (an election's proclaim).

        One transaction re-acquires the key with the new value, under the same checks as
        :meth:`fenced_put`, so a lock lost in between is never silently taken again.

        Returns:
            The key's new ModifyIndex (the fencing token stays the acquisition's).

        Raises:
            ValidationError: A bad value (before any request).
            LockLost: The lease is gone.
        """
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
        out = self._guarded(lease, op, "kv.rewrite", f"rewrite of {self.key!r}")
        entry = out.entries[-1] if out.entries else None
        if entry is None:  # pragma: no cover - Consul answers a lock op with its entry
            raise LockLost(f"rewrite of {self.key!r}: Consul's answer had no entry")
        self.value = data
        assert lease is not None
        self._engine.handle(KeyWritten(lease, entry.modify_index))
        return entry.modify_index

    def _guarded(
        self, lease: Lease | None, op: dict[str, Any], operation: str, what: str
    ) -> TxnOutcome:
        """Run ``op`` under the lease's checks (see :func:`locksmith._fencing.guarded_write`)."""
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
                    answer = kv.txn(
                        step.ops, operation=operation, resource=self.key, timeout=step.timeout
                    )
                elif isinstance(step, ReadLockKey):
                    answer = kv.get(self.key, consistency="consistent", timeout=step.timeout)
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

    def on_end(
        self, hook: Callable[[LossReason | None], object], lease: Lease | None = None
    ) -> None:
        """Call ``hook(reason)`` once when ``lease`` (default: the current one) ends.

        ``reason`` is None for a release. Unlike :meth:`on_lost` callbacks, the hook runs at
        once on the thread that learns of the end (at the lease deadline at the latest),
        never queued behind other callbacks: keep it short and never block in it (set an
        event, signal a process). If nothing is held, it runs now.
        """
        check_callback(hook, "hook")
        lease = self._check_lease(lease) if lease is not None else self.lease
        if lease is None:
            hook(LossReason.LEASE_EXPIRED)
            return
        self._engine.on_end(lease, hook)

    # -- context manager -----------------------------------------------------------------
    def _stack(self) -> list[Lease]:
        stack: list[Lease] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def __enter__(self) -> Lease:
        lease = self.acquire()
        assert lease is not None  # a blocking acquire returns a lease or raises
        self._stack().append(lease)
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Release the lease *this* block acquired, never one another thread took since.
        self.release(self._stack().pop())
