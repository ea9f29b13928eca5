"""AsyncSemaphore: up to ``limit`` holders on a prefix, in Consul's ``api.Semaphore`` layout.

The same layout, decoding and rules as :class:`~locksmith.Semaphore` (the pure parts are
shared): a contender key ``P/<session>`` held by the companion ``Behavior=delete`` session,
and ``P/.lock`` updated by check-and-set. While it holds, a monitor task follows the prefix
and loses the slot if ``.lock`` no longer lists it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType

import anyio

from locksmith._compat import CONSUL_SEMAPHORE_FLAGS, lock_key
from locksmith._exceptions import (
    ConsulUnavailable,
    LockError,
    LocksmithError,
    LockTimeout,
    ManagerClosed,
    NotHeld,
    ValidationError,
)
from locksmith._lease import Lease, LossEvent
from locksmith._log import get_logger
from locksmith._models import KVEntry
from locksmith._semaphore import (
    ContenderEndedError,
    SemaphoreState,
    decode_semaphore,
    encode_semaphore,
    holder_verdict,
    retry_after,
    slot_write,
    timeout_message,
)
from locksmith._states import LossReason, ManagerState
from locksmith._validate import check_callback, check_key, check_timeout, check_txn_value
from locksmith.aio._engine import Callback
from locksmith.aio._follow import follow
from locksmith.aio._lock import AsyncLock
from locksmith.aio._ports import AsyncManagerPort

__all__ = ["AsyncSemaphore"]

log = get_logger("locksmith.semaphore")

_MONITOR_WAIT = 300.0
_CLEANUP_TIMEOUT = 10.0


@dataclass(eq=False)
class _Slot:
    lease: Lease
    contender: AsyncLock
    contender_lease: Lease
    ended: anyio.Event
    stop: anyio.CancelScope


class AsyncSemaphore:
    """Up to ``limit`` holders at once on a prefix. Made by :meth:`AsyncLockManager.semaphore`."""

    def __init__(
        self, manager: AsyncManagerPort, prefix: str, limit: int, value: bytes | str = b""
    ) -> None:
        self.prefix = check_key(prefix, "prefix").rstrip("/")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit", f"must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.value = check_txn_value(value)
        self._mgr = manager
        self._slot: _Slot | None = None
        self._callbacks: list[Callback] = []
        self.lock_key = lock_key(self.prefix)
        # Every key of the semaphore is under ``prefix/``: listing the bare prefix would also
        # read siblings (``jobs/enc`` would list ``jobs/encoders/...``).
        self._dir = self.prefix + "/"

    def __repr__(self) -> str:
        return f"<AsyncSemaphore {self.prefix!r} limit={self.limit} held={self.held}>"

    @property
    def key(self) -> str:
        """The prefix."""
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

    def on_lost(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` when a held slot is lost."""
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    def ended(self, lease: Lease | None = None) -> anyio.Event:
        """An event set when the slot ends (lost or released); set when nothing is held."""
        slot = self._slot
        if slot is not None and (lease is None or slot.lease is lease):
            return slot.ended
        ev = anyio.Event()
        ev.set()
        return ev

    # -- acquire -------------------------------------------------------------------------
    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> Lease | None:
        """Take a slot (cancellable: a cancelled call leaves no contender key behind).

        Raises:
            LockTimeout: No slot within ``timeout``.
            LockConflict: The prefix holds another lock kind, or another limit.
            ManagerClosed: The manager closed while it waited.
        """
        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        seconds = check_timeout(timeout)
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
            sid = await eph.session(
                timeout=None if math.isinf(deadline) else max(0.0, deadline - now)
            )
            contender = eph.lock(f"{self.prefix}/{sid}", self.value, flags=CONSUL_SEMAPHORE_FLAGS)
            # The key is unique to the session, but after a release of it that could not
            # reach Consul the manager keeps the session off it for seconds: a blocking
            # acquire waits that out within its deadline (LockTimeout after it).
            if blocking:
                left = None if math.isinf(deadline) else max(0.0, deadline - clock.monotonic())
                c_lease = await contender.acquire(timeout=left)
            else:
                c_lease = await contender.acquire(blocking=False)
            if c_lease is None:
                return None  # blocking=False, and our contender key is busy for now
            try:
                if c_lease.session_id != sid:  # the session changed under us: key it anew
                    raise ContenderEndedError(f"semaphore {self.prefix!r}: the session changed")
                lease = await self._take_slot(sid, contender, deadline, blocking, seconds)
            except BaseException as exc:
                with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                    await self._drop_contender(contender, c_lease)
                if not isinstance(exc, ContenderEndedError):
                    raise
                if eph.state in (ManagerState.CLOSING, ManagerState.CLOSED):
                    # The contender session ended because the manager is closing.
                    raise ManagerClosed("the manager closed while the semaphore waited") from exc
                # Invalidated or reaped while it waited (a partition, say): contend again
                # with the manager's next session, within the same deadline.
                again += 1
                pause = retry_after(
                    exc,
                    prefix=self.prefix,
                    blocking=blocking,
                    now=clock.monotonic(),
                    deadline=deadline,
                    seconds=seconds,
                    attempt=again,
                )
                log.info("semaphore.contend_again", key=self.prefix, session_id=sid)
                await anyio.sleep(pause)
                continue
            break
        if lease is None:
            await self._drop_contender(contender, c_lease)
            return None
        slot = _Slot(lease, contender, c_lease, anyio.Event(), anyio.CancelScope())
        self._slot = slot
        contender.on_end(lambda reason: self._slot_ended(slot, reason), c_lease)
        self._mgr.adopt(self)
        self._mgr.start_task(lambda: self._monitor(slot), name=f"locksmith-semaphore-{self.prefix}")
        log.info(
            "semaphore.acquired",
            key=self.prefix,
            session_id=sid,
            fencing_token=lease.fencing_token,
            limit=self.limit,
        )
        return lease

    async def _take_slot(
        self,
        sid: str,
        contender: AsyncLock,
        deadline: float,
        blocking: bool,
        seconds: float | None,
    ) -> Lease | None:
        kv = self._mgr.consul.kv
        clock = self._mgr.clock
        failures = 0

        async def pause(exc: ConsulUnavailable) -> None:
            """Consul did not answer: pause, then try again (see :func:`retry_after`)."""
            nonlocal failures
            failures += 1
            await anyio.sleep(
                retry_after(
                    exc,
                    prefix=self.prefix,
                    blocking=blocking,
                    now=clock.monotonic(),
                    deadline=deadline,
                    seconds=seconds,
                    attempt=failures,
                )
            )

        async with aclosing(
            follow(
                lambda index, wait: kv.list_with_meta(self._dir, index=index, wait=wait),
                clock=clock,
                deadline=deadline if blocking else math.inf,
            )
        ) as answers:
            async for res in answers:
                entries: list[KVEntry] | None = list(res.value)
                while True:
                    if entries is None:
                        try:
                            entries = await kv.list(self._dir)
                        except ConsulUnavailable as exc:
                            await pause(exc)
                            continue
                    if not contender.held:
                        raise ContenderEndedError(
                            f"semaphore {self.prefix!r}: the contender session ended"
                        )
                    state = decode_semaphore(entries, self.lock_key, self.limit)
                    action, holders = slot_write(state, sid)
                    if action == "wait":
                        break
                    # Lost a CAS race, removed a stale listing of ours, or the write's fate
                    # is unknown (it may have listed us: the next write removes that listing
                    # first): read again at once.
                    entries = None
                    try:
                        entry = await self._cas(state.index, holders)
                    except ConsulUnavailable as exc:
                        await pause(exc)
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
        seen: SemaphoreState | None = None
        with contextlib.suppress(LocksmithError):  # the holders, if Consul can say now
            seen = decode_semaphore(await kv.list(self._dir), self.lock_key, self.limit)
        raise LockTimeout(timeout_message(self.prefix, seconds, seen))

    async def _cas(self, index: int, holders: dict[str, bool]) -> KVEntry | None:
        body = encode_semaphore(self.limit, holders)
        out = await self._mgr.consul.kv.txn(
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
        if slot.ended.is_set():
            return
        slot.ended.set()
        slot.stop.cancel()
        if reason is None:
            return
        log.warning(
            "semaphore.lost", key=self.prefix, session_id=slot.lease.session_id, reason=reason.value
        )
        event = LossEvent(self.prefix, reason, slot.lease, self._mgr.clock.monotonic())
        self._mgr.dispatch(list(self._callbacks), event)

    async def _monitor(self, slot: _Slot) -> None:
        kv = self._mgr.consul.kv
        sid = slot.lease.session_id
        with slot.stop:
            try:
                async with aclosing(
                    follow(
                        lambda index, wait: kv.list_with_meta(self._dir, index=index, wait=wait),
                        clock=self._mgr.clock,
                        max_wait=_MONITOR_WAIT,
                    )
                ) as answers:
                    async for res in answers:
                        if self._mgr.state is ManagerState.CLOSED:
                            return
                        if not slot.contender.held:
                            self._slot_ended(slot, LossReason.LEASE_EXPIRED)
                            return
                        reason = holder_verdict(res.value, self.lock_key, self.limit, sid)
                        if reason is not None:
                            self._slot_ended(slot, reason)
                            return
            except LocksmithError as exc:
                log.warning("semaphore.monitor_stopped", key=self.prefix, error=str(exc))

    # -- release -------------------------------------------------------------------------
    async def release(self) -> bool:
        """Give the slot back; True if it was held, False if it had been lost.

        Raises:
            NotHeld: Nothing was acquired.
        """
        slot, self._slot = self._slot, None
        if slot is None:
            raise NotHeld(f"semaphore {self.prefix!r} is not held")
        was_held = not slot.ended.is_set() and slot.contender.held
        slot.stop.cancel()
        if was_held:
            await self._remove_holder(slot.lease.session_id)
        self._slot_ended(slot, None)
        await self._drop_contender(slot.contender, slot.contender_lease)
        self._mgr.forget(self)
        if was_held:
            log.info("semaphore.released", key=self.prefix, session_id=slot.lease.session_id)
        return was_held

    async def _remove_holder(self, sid: str) -> None:
        kv = self._mgr.consul.kv
        try:
            for _ in range(5):
                entries = await kv.list(self._dir)
                state = decode_semaphore(entries, self.lock_key, self.limit)
                if sid not in state.listed:
                    return
                raw = next(e for e in entries if e.key == self.lock_key)
                listed = dict(json.loads(raw.value).get("Holders") or {})
                listed.pop(sid, None)
                if await self._cas(raw.modify_index, listed) is not None:
                    return
        except (LocksmithError, ValueError, StopIteration) as exc:
            log.info("semaphore.holder_cleanup_deferred", key=self.prefix, error=str(exc))

    async def _drop_contender(self, contender: AsyncLock, c_lease: Lease) -> None:
        await contender.release(c_lease)
        kv = self._mgr.consul.kv
        try:
            entry = await kv.get(contender.key)
            if entry is not None and entry.session is None:
                await kv.delete(contender.key, cas=entry.modify_index)
        except LocksmithError as exc:
            log.info("semaphore.contender_cleanup_failed", key=contender.key, error=str(exc))

    async def holders(self) -> list[str]:
        """The session IDs holding a slot now (dead holders pruned)."""
        entries = await self._mgr.consul.kv.list(self._dir)
        return sorted(decode_semaphore(entries, self.lock_key, self.limit).holders)

    async def close_for_manager(self) -> None:
        """Release the slot (called by the manager's close)."""
        if self._slot is not None:
            try:
                await self.release()
            except LocksmithError as exc:
                log.warning("semaphore.close_failed", key=self.prefix, error=str(exc))

    async def __aenter__(self) -> Lease:
        lease = await self.acquire()
        assert lease is not None
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._slot is not None:
            with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                await self.release()
