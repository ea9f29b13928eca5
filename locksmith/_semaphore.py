"""A counting semaphore in Consul's ``api.Semaphore`` layout (``consul lock -n N``).

Layout under a prefix ``P`` (shared with Consul's Go recipe, so both exclude each other):

* contender keys ``P/<session>``, acquired by each contender's ``Behavior=delete`` session, so
  a dead contender's key disappears with its session;
* ``P/.lock`` holding ``{"Limit": N, "Holders": {"<session>": true, ...}}``, updated only by
  check-and-set, both marked with flags ``0xe0f69a2baa414de0``.

A contender takes a slot by adding its session to ``Holders`` once fewer than ``Limit`` live
holders remain (holders without a live contender key are pruned). The slot's fencing token
is the Raft index of that CAS write. While it holds, a monitor follows the prefix, as Go's
recipe does: if ``.lock`` no longer lists this holder (an operator reset it, say), the slot is
lost. One ``LockManager`` holds at most one slot per prefix (its contender key is named after
its session); use several managers for several slots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from locksmith._backoff import Backoff
from locksmith._cancel import Cancel, check_cancel
from locksmith._compat import CONSUL_SEMAPHORE_FLAGS, is_fair_flags, lock_key
from locksmith._exceptions import (
    Cancelled,
    ConsulUnavailable,
    LockConflict,
    LockError,
    LocksmithError,
    LockTimeout,
    ManagerClosed,
    NotHeld,
    ValidationError,
)
from locksmith._follow import follow
from locksmith._lease import Lease, LossEvent
from locksmith._lock import Lock
from locksmith._log import get_logger
from locksmith._models import KVEntry
from locksmith._ports import ManagerPort
from locksmith._states import LossReason, ManagerState
from locksmith._validate import check_callback, check_key, check_timeout, check_txn_value

__all__ = [
    "RETRY",
    "ContenderEndedError",
    "Semaphore",
    "SemaphoreState",
    "decode_semaphore",
    "encode_semaphore",
    "holder_verdict",
    "retry_after",
    "slot_write",
    "timeout_message",
]

log = get_logger("locksmith.semaphore")

#: How long one monitor query blocks (a release stops the monitor within this).
_MONITOR_WAIT = 5.0


@dataclass
class SemaphoreState:
    """``P/.lock`` as read.

    Attributes:
        limit: The semaphore's limit.
        holders: Holders with a live contender key (dead ones pruned).
        listed: Every holder ``.lock`` lists, dead or alive.
        index: ModifyIndex of ``P/.lock`` (0 when it does not exist).
        exists: Whether ``P/.lock`` exists.
    """

    limit: int
    holders: dict[str, bool]
    listed: frozenset[str]
    index: int
    exists: bool


def slot_write(state: SemaphoreState, sid: str) -> tuple[str, dict[str, bool]]:
    """What contender ``sid`` writes to ``.lock`` next (pure).

    Returns:
        ``("take", holders)``: take a slot with this CAS write; ``("wait", {})``: every
        slot is taken; ``("unlist", holders)``: ``sid`` is still listed from an earlier
        hold (a release that could not remove it): remove it first. Consul answers a write
        of the content a key already has with success and no new index, so taking a slot
        while still listed would hand out an old fencing token (partition finding P1).
    """
    if sid in state.listed:
        return "unlist", {h: True for h in state.holders if h != sid}
    if len(state.holders) >= state.limit:
        return "wait", {}
    return "take", {**state.holders, sid: True}


def holder_verdict(
    entries: list[KVEntry], lock_key: str, limit: int, sid: str
) -> LossReason | None:
    """Whether holder ``sid`` lost its slot, as ``P/``'s entries say (pure): ``.lock`` taken
    by another kind of lock, deleted, or no longer listing ``sid`` (as Consul's recipe
    monitors it); None while it holds."""
    try:
        state = decode_semaphore(entries, lock_key, limit)
    except LockConflict:
        return LossReason.KEY_TAKEN
    if not state.exists:
        return LossReason.KEY_DELETED
    if sid not in state.listed:
        return LossReason.RELEASED_BY_OTHER
    return None


def decode_semaphore(entries: list[KVEntry], lock_key: str, limit: int) -> SemaphoreState:
    """Read the semaphore under a prefix from its entries (pure).

    Raises:
        LockConflict: ``.lock`` belongs to another kind of lock, does not hold semaphore
            JSON, or has another limit; or the prefix holds entries of a fair queue (even
            with its ``.lock`` deleted from outside).
    """
    fair = next((e for e in entries if is_fair_flags(e.flags)), None)
    if fair is not None:
        raise LockConflict(
            f"{fair.key!r} has flags {fair.flags:#x}: the prefix is a fair queue, not a semaphore"
        )
    lock_entry = next((e for e in entries if e.key == lock_key), None)
    alive = {e.session for e in entries if e.session}
    if lock_entry is not None and lock_entry.flags != CONSUL_SEMAPHORE_FLAGS:
        raise LockConflict(f"{lock_key!r} has flags {lock_entry.flags:#x}: it is not a semaphore")
    if lock_entry is None or not lock_entry.value:
        index = lock_entry.modify_index if lock_entry else 0
        return SemaphoreState(limit, {}, frozenset(), index, lock_entry is not None)
    try:
        data: Any = json.loads(lock_entry.value)
        found = int(data["Limit"])
        listed = dict(data.get("Holders") or {})
    except (ValueError, KeyError, TypeError) as exc:
        raise LockConflict(f"{lock_key!r} does not hold semaphore JSON: {exc}") from exc
    if found != limit:
        raise LockConflict(
            f"semaphore limit conflict on {lock_key.rsplit('/', 1)[0]!r}: it is {found}, "
            f"this one is {limit}"
        )
    live = {h: True for h in listed if h in alive}
    return SemaphoreState(limit, live, frozenset(listed), lock_entry.modify_index, True)


def encode_semaphore(limit: int, holders: dict[str, bool]) -> bytes:
    """``P/.lock``'s JSON, as Consul's Go recipe writes it."""
    return json.dumps({"Limit": limit, "Holders": holders}, separators=(",", ":")).encode()


@dataclass(eq=False)
class _Slot:
    lease: Lease
    contender: Lock
    contender_lease: Lease
    ended: threading.Event
    stop: threading.Event


class ContenderEndedError(LockError):
    """The contender key was lost while an acquire waited (its session ended)."""


#: How a waiting acquire backs off between tries (both front-ends).
RETRY = Backoff(start=0.05, cap=2.0)


def retry_after(
    exc: LocksmithError,
    *,
    prefix: str,
    blocking: bool,
    now: float,
    deadline: float,
    seconds: float | None,
    attempt: int,
) -> float:
    """The pause before a waiting acquire tries again after ``exc`` (a read or slot write
    Consul did not answer, a contender session that ended), its ``attempt``-th in a row.

    Raises:
        LocksmithError: ``exc`` itself when the acquire does not block.
        LockTimeout: ``deadline`` has passed.
    """
    if not blocking:
        raise exc
    if now >= deadline:
        raise LockTimeout(f"no slot of semaphore {prefix!r} within {seconds}s ({exc})") from exc
    return min(RETRY.delay(attempt), deadline - now)


def timeout_message(prefix: str, seconds: float | None, state: SemaphoreState | None) -> str:
    """A timed-out acquire's message, with the holders when Consul could say (``state``)."""
    count = f" ({len(state.holders)}/{state.limit} held)" if state is not None else ""
    return f"no slot of semaphore {prefix!r} within {seconds}s{count}"


class Semaphore:
    """Up to ``limit`` holders at once on a prefix. Made by :meth:`LockManager.semaphore`."""

    def __init__(
        self, manager: ManagerPort, prefix: str, limit: int, value: bytes | str = b""
    ) -> None:
        self.prefix = check_key(prefix, "prefix").rstrip("/")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit", f"must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.value = check_txn_value(value)
        self._mgr = manager
        self._mu = threading.Lock()
        self._slot: _Slot | None = None
        self._callbacks: list[Callable[[LossEvent], object]] = []
        self.lock_key = lock_key(self.prefix)
        # Every key of the semaphore is under ``prefix/``: listing the bare prefix would also
        # read siblings (``jobs/enc`` would list ``jobs/encoders/...``).
        self._dir = self.prefix + "/"

    def __repr__(self) -> str:
        return f"<Semaphore {self.prefix!r} limit={self.limit} held={self.held}>"

    @property
    def key(self) -> str:
        """The prefix (what ``LOCKSMITH_KEY`` is set to for a child)."""
        return self.prefix

    @property
    def lease(self) -> Lease | None:
        """The slot's lease, or None."""
        slot = self._slot
        if slot is None or slot.ended.is_set() or not slot.contender.held:
            return None
        return slot.lease

    @property
    def held(self) -> bool:
        """Whether this semaphore holds a slot right now."""
        return self.lease is not None

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` when a held slot is lost (its contender session ended,
        or ``.lock`` no longer lists it)."""
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease: Lease | None = None) -> threading.Event:
        """An event set when the slot ``lease`` (default: the current one) ends: lost, or
        released. Already set when nothing is held."""
        slot = self._slot
        if slot is not None and (lease is None or slot.lease is lease):
            return slot.ended
        ev = threading.Event()
        ev.set()
        return ev

    # -- acquire -------------------------------------------------------------------------
    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: Cancel | None = None
    ) -> Lease | None:
        """Take a slot.

        Args:
            blocking: False: try once, return None when all slots are taken.
            timeout: Seconds to wait at most (None: forever); with ``blocking=False`` it
                bounds the one try's requests.
            cancel: Stop waiting when it is set: :class:`Cancelled` is raised and the
                contender key is deleted.

        Raises:
            LockTimeout: No slot within ``timeout``.
            Cancelled: ``cancel`` was set first.
            LockConflict: The prefix holds another lock kind, or another limit.
            ManagerClosed: The manager closed while it waited.
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
        cancel = check_cancel(cancel)
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"semaphore {self.prefix!r}: cancelled before it started")
        if self.held:
            raise LockError(f"semaphore {self.prefix!r} is already held by this object")
        eph = self._mgr.companion()
        clock = eph.clock
        now = clock.monotonic()
        if not blocking:
            seconds = eph.consul.config.timeout if seconds is None else seconds
        deadline = math.inf if seconds is None or math.isinf(seconds) else now + seconds
        again = 0
        while True:
            now = clock.monotonic()
            sid = eph.session(timeout=None if math.isinf(deadline) else max(0.0, deadline - now))
            contender = eph.lock(f"{self.prefix}/{sid}", self.value, flags=CONSUL_SEMAPHORE_FLAGS)
            c_lease = self._contend(contender, now, deadline, blocking, cancel)
            if c_lease is None:
                return None  # blocking=False, and our contender key is busy for now
            try:
                if c_lease.session_id != sid:  # the session changed under us: key it anew
                    raise ContenderEndedError(f"semaphore {self.prefix!r}: the session changed")
                lease = self._take_slot(sid, contender, deadline, blocking, seconds, cancel)
            except ContenderEndedError as exc:
                self._drop_contender(contender, c_lease)
                if eph.state in (ManagerState.CLOSING, ManagerState.CLOSED):
                    # The contender session ended because the manager is closing.
                    raise ManagerClosed("the manager closed while the semaphore waited") from exc
                # Invalidated or reaped while it waited (a partition, say): contend again
                # with the manager's next session, within the same deadline.
                again += 1
                now = clock.monotonic()
                pause = retry_after(
                    exc,
                    prefix=self.prefix,
                    blocking=blocking,
                    now=now,
                    deadline=deadline,
                    seconds=seconds,
                    attempt=again,
                )
                log.info("semaphore.contend_again", key=self.prefix, session_id=sid)
                clock.wait_until(now + pause, cancel.event if cancel is not None else None)
                continue
            except BaseException:
                self._drop_contender(contender, c_lease)
                raise
            break
        if lease is None:
            self._drop_contender(contender, c_lease)
            return None
        slot = _Slot(lease, contender, c_lease, threading.Event(), threading.Event())
        with self._mu:
            self._slot = slot
        contender.on_end(lambda reason: self._slot_ended(slot, reason), c_lease)
        self._mgr.adopt(self)
        threading.Thread(
            target=self._monitor,
            args=(slot,),
            name=f"locksmith-semaphore-{self.prefix}",
            daemon=True,
        ).start()
        log.info(
            "semaphore.acquired",
            key=self.prefix,
            session_id=sid,
            fencing_token=lease.fencing_token,
            limit=self.limit,
        )
        return lease

    def _contend(
        self,
        contender: Lock,
        now: float,
        deadline: float,
        blocking: bool,
        cancel: Cancel | None,
    ) -> Lease | None:
        """Create the contender key. It is unique to the session, but after a release of it
        that could not reach Consul, the manager keeps the session off it until that release
        can no longer land (seconds): a blocking acquire waits that out within its deadline.

        Raises:
            LockTimeout: ``deadline`` passed first.
        """
        if not blocking:
            return contender.acquire(blocking=False)
        left = None if math.isinf(deadline) else max(0.0, deadline - now)
        lease = contender.acquire(timeout=left, cancel=cancel)
        if lease is None:  # pragma: no cover - a blocking acquire returns a lease or raises
            raise LockError(f"semaphore {self.prefix!r}: cannot create the contender key")
        return lease

    def _take_slot(  # noqa: PLR0917 - a private step of acquire
        self,
        sid: str,
        contender: Lock,
        deadline: float,
        blocking: bool,
        seconds: float | None,
        cancel: Cancel | None,
    ) -> Lease | None:
        kv = self._mgr.consul.kv
        clock = self._mgr.clock
        failures = 0

        def pause(exc: ConsulUnavailable) -> None:
            """Consul did not answer: pause, then try again (see :func:`retry_after`)."""
            nonlocal failures
            failures += 1
            now = clock.monotonic()
            wait = retry_after(
                exc,
                prefix=self.prefix,
                blocking=blocking,
                now=now,
                deadline=deadline,
                seconds=seconds,
                attempt=failures,
            )
            clock.wait_until(now + wait, cancel.event if cancel is not None else None)

        for res in follow(
            lambda index, wait: kv.list_with_meta(self._dir, index=index, wait=wait, cancel=cancel),
            clock=clock,
            deadline=deadline if blocking else math.inf,
            stop=cancel.event if cancel is not None else None,
        ):
            entries: list[KVEntry] | None = list(res.value)
            while True:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled(f"semaphore {self.prefix!r}: cancelled")
                if entries is None:
                    try:
                        entries = kv.list(self._dir)
                    except ConsulUnavailable as exc:
                        pause(exc)
                        continue
                if not contender.held:
                    raise ContenderEndedError(
                        f"semaphore {self.prefix!r}: the contender session ended"
                    )
                state = decode_semaphore(entries, self.lock_key, self.limit)
                action, holders = slot_write(state, sid)
                if action == "wait":
                    break
                # Lost a CAS race, removed a stale listing of ours, or the write's fate is
                # unknown (it may have listed us: the next write removes that listing
                # first): read again at once.
                entries = None
                try:
                    entry = self._cas(state.index, holders)
                except ConsulUnavailable as exc:
                    pause(exc)
                    continue
                failures = 0
                if entry is not None and action == "take":
                    return Lease(
                        key=self.prefix,
                        session_id=sid,
                        fencing_token=entry.modify_index,
                        value=self.value,
                        acquired_at=clock.monotonic(),
                        flags=CONSUL_SEMAPHORE_FLAGS,
                    )
            if not blocking:
                return None
            if clock.monotonic() >= deadline:
                break
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"semaphore {self.prefix!r}: cancelled")
        seen: SemaphoreState | None = None
        with contextlib.suppress(LocksmithError):  # the holders, if Consul can say now
            seen = decode_semaphore(kv.list(self._dir), self.lock_key, self.limit)
        raise LockTimeout(timeout_message(self.prefix, seconds, seen))

    def _cas(self, index: int, holders: dict[str, bool]) -> KVEntry | None:
        body = encode_semaphore(self.limit, holders)
        out = self._mgr.consul.kv.txn(
            [
                {
                    "KV": {
                        "Verb": "cas",
                        "Key": self.lock_key,
                        "Value": base64.b64encode(body).decode(),
                        "Flags": CONSUL_SEMAPHORE_FLAGS,
                        "Index": index,
                    }
                }
            ],
            operation="semaphore.cas",
            resource=self.lock_key,
        )
        return out.entries[0] if out.ok and out.entries else None

    # -- loss ----------------------------------------------------------------------------
    def _slot_ended(self, slot: _Slot, reason: LossReason | None) -> None:
        """The slot is over: released (``reason`` None) or lost. Runs once per slot."""
        with self._mu:
            if slot.ended.is_set():
                return
            slot.ended.set()
            slot.stop.set()
        if reason is None:
            return
        log.warning(
            "semaphore.lost",
            key=self.prefix,
            session_id=slot.lease.session_id,
            reason=reason.value,
        )
        event = LossEvent(self.prefix, reason, slot.lease, self._mgr.clock.monotonic())
        self._mgr.dispatch(list(self._callbacks), event)

    def _monitor(self, slot: _Slot) -> None:
        """Follow the prefix while holding: lose the slot if ``.lock`` drops this holder."""
        kv = self._mgr.consul.kv
        sid = slot.lease.session_id
        try:
            for res in follow(
                lambda index, wait: kv.list_with_meta(self._dir, index=index, wait=wait),
                clock=self._mgr.clock,
                stop=slot.stop,
                max_wait=_MONITOR_WAIT,
            ):
                if slot.stop.is_set() or self._mgr.state is ManagerState.CLOSED:
                    return
                if not slot.contender.held:
                    # The contender's lease ended: its own end signal reports why, unless it
                    # is only its deadline passing with nobody to notice yet.
                    self._slot_ended(slot, LossReason.LEASE_EXPIRED)
                    return
                reason = holder_verdict(res.value, self.lock_key, self.limit, sid)
                if reason is not None:
                    self._slot_ended(slot, reason)
                    return
        except LocksmithError as exc:
            log.warning("semaphore.monitor_stopped", key=self.prefix, error=str(exc))

    # -- release -------------------------------------------------------------------------
    def release(self) -> bool:
        """Give the slot back: remove this holder from ``.lock``, drop the contender key.

        The contender key is released through the manager, whose cleaner retries in the
        background if Consul cannot be reached: other contenders then prune this holder
        (it has no live contender key), so the slot frees either way.

        Returns:
            True if a held slot was released, False if it had been lost.

        Raises:
            NotHeld: Nothing was acquired.
        """
        with self._mu:
            slot, self._slot = self._slot, None
        if slot is None:
            raise NotHeld(f"semaphore {self.prefix!r} is not held")
        was_held = not slot.ended.is_set() and slot.contender.held
        slot.stop.set()
        if was_held:
            self._remove_holder(slot.lease.session_id)
        self._slot_ended(slot, None)
        self._drop_contender(slot.contender, slot.contender_lease)
        self._mgr.forget(self)
        if was_held:
            log.info("semaphore.released", key=self.prefix, session_id=slot.lease.session_id)
        return was_held

    def _remove_holder(self, sid: str) -> None:
        kv = self._mgr.consul.kv
        try:
            for _ in range(5):
                entries = kv.list(self._dir)
                state = decode_semaphore(entries, self.lock_key, self.limit)
                if sid not in state.listed:
                    return
                raw = next(e for e in entries if e.key == self.lock_key)
                listed = dict(json.loads(raw.value).get("Holders") or {})
                listed.pop(sid, None)
                if self._cas(raw.modify_index, listed) is not None:
                    return
        except (LocksmithError, ValueError, StopIteration) as exc:
            # Not fatal: the contender key goes below, and other contenders prune holders
            # without one.
            log.info("semaphore.holder_cleanup_deferred", key=self.prefix, error=str(exc))

    def _drop_contender(self, contender: Lock, c_lease: Lease) -> None:
        contender.release(c_lease)
        try:
            entry = self._mgr.consul.kv.get(contender.key)
            if entry is not None and entry.session is None:
                self._mgr.consul.kv.delete(contender.key, cas=entry.modify_index)
        except LocksmithError as exc:
            log.info("semaphore.contender_cleanup_failed", key=contender.key, error=str(exc))

    def holders(self) -> list[str]:
        """The session IDs holding a slot now (dead holders pruned)."""
        entries = self._mgr.consul.kv.list(self._dir)
        return sorted(decode_semaphore(entries, self.lock_key, self.limit).holders)

    def close_for_manager(self) -> None:
        """Release the slot (called by the manager's close)."""
        if self._slot is not None:
            try:
                self.release()
            except LocksmithError as exc:
                log.warning("semaphore.close_failed", key=self.prefix, error=str(exc))

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> Lease:
        lease = self.acquire()
        assert lease is not None
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._slot is not None:
            self.release()
