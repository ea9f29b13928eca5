"""A counting semaphore in Consul's ``api.Semaphore`` layout (``consul lock -n N``).

Layout under a prefix ``P`` (shared with Consul's Go recipe, so both exclude each other):

* contender keys ``P/<session>``, acquired by each contender's ``Behavior=delete`` session, so
  a dead contender's key disappears with its session;
* ``P/.lock`` holding ``{"Limit": N, "Holders": {"<session>": true, ...}}``, updated only by
  check-and-set, both marked with flags ``0xe0f69a2baa414de0``.

A contender takes a slot by adding its session to ``Holders`` once fewer than ``Limit`` live
holders remain (holders without a live contender key are pruned). The slot's fencing token
is the Raft index of that CAS write. One ``LockManager`` holds at most one slot per prefix
(its contender key is named after its session); use several managers for several slots.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from locksmith._compat import CONSUL_SEMAPHORE_FLAGS, lock_key
from locksmith._core import LockState
from locksmith._exceptions import (
    ConsulUnavailable,
    LockConflict,
    LockError,
    LockLost,
    LockTimeout,
    NotHeld,
    ValidationError,
)
from locksmith._validate import check_callback, check_key, check_timeout, check_value

if TYPE_CHECKING:
    from locksmith._client import KVEntry
    from locksmith._manager import Lease, Lock, LockManager, LossEvent

__all__ = ["Semaphore"]

log = structlog.get_logger(__name__)


@dataclass
class _SemState:
    limit: int
    holders: dict[str, bool]
    index: int  # ModifyIndex of P/.lock, 0 when it does not exist


class Semaphore:
    """Up to ``limit`` holders at once on a prefix. Made by :meth:`LockManager.semaphore`."""

    def __init__(
        self, manager: LockManager, prefix: str, limit: int, value: bytes | str = b""
    ) -> None:
        self.prefix = check_key(prefix, "prefix").rstrip("/")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit", f"must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.value = check_value(value)
        self._parent = manager
        self._mu = threading.Lock()
        self._contender: Lock | None = None
        self._lease: Lease | None = None
        self._callbacks: list[Callable[[LossEvent], object]] = []
        self.lock_key = lock_key(self.prefix)

    def __repr__(self) -> str:
        return f"<Semaphore {self.prefix!r} limit={self.limit} held={self.held}>"

    @property
    def key(self) -> str:
        """The prefix (what ``LOCKSMITH_KEY`` is set to for a child)."""
        return self.prefix

    @property
    def held(self) -> bool:
        """Whether this semaphore holds a slot right now."""
        c = self._contender
        return self._lease is not None and c is not None and c.held

    @property
    def lease(self) -> Lease | None:
        """The slot's lease, or None."""
        return self._lease if self.held else None

    def on_lost(self, callback: Callable[[LossEvent], object]) -> Callable[[LossEvent], object]:
        """Call ``callback(event)`` when a held slot is lost (its contender session ended)."""
        check_callback(callback)
        self._callbacks.append(callback)
        return callback

    # -- acquire -------------------------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Lease | None:
        """Take a slot.

        Args:
            blocking: False: try once, return None when all slots are taken.
            timeout: Seconds to wait at most (None: forever).

        Raises:
            LockTimeout: No slot within ``timeout``.
            LockConflict: The prefix holds another lock kind, or another limit.
        """
        from locksmith._manager import Lease  # noqa: PLC0415 - _manager imports this module

        if not isinstance(blocking, bool):
            raise ValidationError("blocking", f"must be True or False, got {blocking!r}")
        if check_timeout(timeout) is not None and not blocking:
            raise ValidationError("timeout", "cannot be combined with blocking=False")
        if self.held:
            raise LockError(f"semaphore {self.prefix!r} is already held by this object")
        eph = self._parent._ephemeral()
        clock = eph._clock
        now = clock.monotonic()
        if not blocking:
            deadline: float | None = now
        elif timeout is None:
            deadline = None
        else:
            deadline = now + timeout
        contender = self._make_contender(eph)
        sid = contender.lease.session_id if contender.lease else ""
        kv = self._parent.consul.kv
        index = 0
        try:
            while True:
                if not contender.held:
                    raise LockLost(f"semaphore {self.prefix!r}: contender session ended")
                left = math.inf if deadline is None else deadline - clock.monotonic()
                try:
                    res = kv.list_with_meta(
                        self.prefix,
                        index=index or None,
                        wait=max(0.001, min(left, 300.0)) if index else None,
                    )
                except ConsulUnavailable:
                    if left <= 0:
                        raise
                    clock.wait_until(min(clock.monotonic() + 0.2, deadline or math.inf))
                    index = 0
                    continue
                state = self._decode(res.value)
                if len(state.holders) < state.limit or sid in state.holders:
                    state.holders[sid] = True
                    entry = self._cas(state)
                    if entry is not None:
                        lease = Lease(
                            key=self.prefix,
                            session_id=sid,
                            fencing_token=entry.modify_index,
                            value=self.value,
                            acquired_at=clock.monotonic(),
                            flags=CONSUL_SEMAPHORE_FLAGS,
                        )
                        with self._mu:
                            self._lease = lease
                        self._parent._track(self)
                        log.info(
                            "semaphore.acquired",
                            key=self.prefix,
                            session_id=sid,
                            fencing_token=lease.fencing_token,
                            limit=self.limit,
                        )
                        return lease
                    index = 0  # lost a CAS race: read again at once
                    continue
                if left <= 0:
                    if not blocking:
                        self._drop_contender()
                        return None
                    raise LockTimeout(
                        f"no slot of semaphore {self.prefix!r} within {timeout}s "
                        f"({len(state.holders)}/{state.limit} held)"
                    )
                index = res.meta.index
        except BaseException:
            self._drop_contender()
            raise

    def _make_contender(self, eph: LockManager) -> Lock:
        sess = eph._ensure_session()
        contender = eph.lock(f"{self.prefix}/{sess.id}", self.value, flags=CONSUL_SEMAPHORE_FLAGS)
        contender.on_lost(self._contender_lost)
        if contender.acquire(blocking=False) is None:
            raise LockError(f"semaphore {self.prefix!r}: cannot create the contender key")
        with self._mu:
            self._contender = contender
        return contender

    def _contender_lost(self, event: LossEvent) -> None:
        with self._mu:
            lease, self._lease = self._lease, None
        if lease is None:
            return
        log.warning(
            "semaphore.lost",
            key=self.prefix,
            session_id=lease.session_id,
            reason=event.reason.value,
        )
        from locksmith._manager import LossEvent as _LossEvent  # noqa: PLC0415 - import cycle

        slot_event = _LossEvent(self.prefix, event.reason, lease, event.detected_at)
        for cb in list(self._callbacks):
            try:
                cb(slot_event)
            except Exception:
                log.exception("callback.failed", key=self.prefix, callback="on_lost")

    def _decode(self, entries: list[KVEntry]) -> _SemState:
        lock_entry = next((e for e in entries if e.key == self.lock_key), None)
        alive = {e.session for e in entries if e.session}
        if lock_entry is None or not lock_entry.value:
            if lock_entry is not None and lock_entry.flags != CONSUL_SEMAPHORE_FLAGS:
                raise LockConflict(f"{self.lock_key!r} exists with flags {lock_entry.flags:#x}")
            return _SemState(self.limit, {}, lock_entry.modify_index if lock_entry else 0)
        if lock_entry.flags != CONSUL_SEMAPHORE_FLAGS:
            raise LockConflict(
                f"{self.lock_key!r} has flags {lock_entry.flags:#x}: it is not a semaphore"
            )
        try:
            data: Any = json.loads(lock_entry.value)
            limit = int(data["Limit"])
            holders = dict(data.get("Holders") or {})
        except (ValueError, KeyError, TypeError) as exc:
            raise LockConflict(f"{self.lock_key!r} does not hold semaphore JSON: {exc}") from exc
        if limit != self.limit:
            raise LockConflict(
                f"semaphore limit conflict on {self.prefix!r}: it is {limit}, this one is "
                f"{self.limit}"
            )
        live = {h: True for h in holders if h in alive}
        return _SemState(limit, live, lock_entry.modify_index)

    def _cas(self, state: _SemState) -> KVEntry | None:
        body = json.dumps(
            {"Limit": state.limit, "Holders": state.holders}, separators=(",", ":")
        ).encode()
        out = self._parent.consul.kv.txn(
            [
                {
                    "KV": {
                        "Verb": "cas",
                        "Key": self.lock_key,
                        "Value": base64.b64encode(body).decode(),
                        "Flags": CONSUL_SEMAPHORE_FLAGS,
                        "Index": state.index,
                    }
                }
            ],
            operation="semaphore.cas",
            resource=self.lock_key,
        )
        return out.entries[0] if out.ok and out.entries else None

    # -- release -------------------------------------------------------------------------
    def release(self) -> bool:
        """Give the slot back: remove this holder from ``.lock``, delete the contender key.

        Returns:
            True if a held slot was released, False if it had been lost.

        Raises:
            NotHeld: Nothing was acquired.
        """
        with self._mu:
            lease, self._lease = self._lease, None
            contender = self._contender
        if contender is None:
            raise NotHeld(f"semaphore {self.prefix!r} is not held")
        was_held = lease is not None and contender.held
        if lease is not None:
            self._remove_holder(lease.session_id)
        self._drop_contender()
        self._parent._untrack(self)
        if was_held:
            log.info(
                "semaphore.released",
                key=self.prefix,
                session_id=lease.session_id if lease else None,
            )
        return was_held

    def _remove_holder(self, sid: str) -> None:
        kv = self._parent.consul.kv
        for _ in range(20):
            raw = kv.get(self.lock_key)
            if raw is None or not raw.value:
                return
            holders = dict(json.loads(raw.value).get("Holders") or {})
            if sid not in holders:
                return
            del holders[sid]
            state = _SemState(self.limit, holders, raw.modify_index)
            if self._cas(state) is not None:
                return

    def _drop_contender(self) -> None:
        with self._mu:
            contender, self._contender = self._contender, None
        if contender is None:
            return
        key = contender.key
        if contender.state in (LockState.HELD, LockState.LOST):
            contender.release()
        try:
            self._parent.consul.kv.delete(key)
        except ConsulUnavailable as exc:
            log.warning("semaphore.cleanup_failed", key=key, error=str(exc))

    def holders(self) -> list[str]:
        """The session IDs holding a slot now (dead holders pruned)."""
        return sorted(self._decode(self._parent.consul.kv.list(self.prefix)).holders)

    def _close_for_manager(self) -> None:
        if self._contender is not None:
            try:
                self.release()
            except (LockError, ConsulUnavailable) as exc:
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
        if self._contender is not None:
            self.release()
