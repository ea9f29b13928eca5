"""Leader election: campaign for a key, publish a value while leading, observe the leader.

The leader is whoever holds the election key with a session. ``resign`` releases it with
``?release=`` so the next candidate takes over at once (no lock-delay); a leader that dies
is replaced after its session ends (at most 2xTTL) plus lock-delay. Observers, candidates
or not, follow the key with blocking queries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from locksmith._cancel import Cancel, check_cancel
from locksmith._exceptions import LockLost, ValidationError
from locksmith._follow import follow
from locksmith._lease import Lease, LossEvent
from locksmith._lock import Lock
from locksmith._log import get_logger
from locksmith._models import KVEntry
from locksmith._ports import ManagerPort
from locksmith._states import LockState, LossReason, ManagerState
from locksmith._validate import check_callback, check_timeout, check_txn_value

__all__ = ["Election", "LeaderInfo", "LeadershipEvent"]

log = get_logger("locksmith.election")

R = TypeVar("R")


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads, as seen by an observer.

    Attributes:
        key: The election key.
        value: The value the leader publishes.
        session_id: The leader's session.
        node: The node of the leader's session ("" if unreadable).
        session_name: The leader's session name ("" if unreadable).
        since_index: The Raft index of the first write this observer saw from this leader
            (its acquisition, when observed live); also the leader's fencing token then.
    """

    key: str
    value: bytes
    session_id: str
    node: str
    session_name: str
    since_index: int

    @property
    def fencing_token(self) -> int:
        """Same as :attr:`since_index`."""
        return self.since_index


@dataclass(frozen=True)
class LeadershipEvent:
    """This candidate became leader, or stopped being leader.

    Attributes:
        key: The election key.
        lease: The leadership's lease.
        reason: Why leadership ended (None when elected or after :meth:`Election.resign`).
    """

    key: str
    lease: Lease
    reason: LossReason | None = None


class Election:
    """A leader election on one key. Made by :meth:`LockManager.election`."""

    def __init__(self, manager: ManagerPort, key: str, value: bytes | str = b"") -> None:
        self._mgr = manager
        self._lock: Lock = manager.lock(key, value)
        self.key = self._lock.key
        self._mu = threading.Lock()
        self._elected_cbs: list[Callable[[LeadershipEvent], object]] = []
        self._deposed_cbs: list[Callable[[LeadershipEvent], object]] = []
        self._change_cbs: list[Callable[[LeaderInfo | None], object]] = []
        self._observer: threading.Thread | None = None
        self._lock.on_lost(self._lost)

    def __repr__(self) -> str:
        return f"<Election {self.key!r} leader={self.is_leader}>"

    @property
    def lock(self) -> Lock:
        """The underlying lock (for :func:`~locksmith.run_exclusive`)."""
        return self._lock

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads right now (False as soon as loss is presumed)."""
        return self._lock.held

    @property
    def lease(self) -> Lease | None:
        """The leadership lease, or None."""
        return self._lock.lease

    # -- candidate -----------------------------------------------------------------------
    def campaign(self, timeout: float | None = None, *, cancel: Cancel | None = None) -> Lease:
        """Block until elected; return the leadership lease (with its fencing token).

        Args:
            timeout: Seconds to campaign at most (None: forever).
            cancel: Stop campaigning when it is set (a SIGTERM handler calls
                ``cancel.cancel()``): :class:`Cancelled` is raised, nothing is left behind.

        Raises:
            LockTimeout: Not elected within ``timeout`` seconds.
            Cancelled: ``cancel`` was set first.
        """
        lease = self._lock.acquire(timeout=timeout, cancel=cancel)
        assert lease is not None
        log.info(
            "election.elected",
            key=self.key,
            session_id=lease.session_id,
            fencing_token=lease.fencing_token,
        )
        self._mgr.dispatch(list(self._elected_cbs), LeadershipEvent(self.key, lease))
        return lease

    def resign(self) -> bool:
        """Step down; the next candidate takes over at once (no lock-delay).

        Returns:
            True if this candidate was leading.
        """
        lease = self._lock.lease
        if lease is None:
            if self._lock.state is LockState.LOST:
                self._lock.release()  # acknowledge the loss
            return False
        released = self._lock.release(lease)
        if released:
            log.info("election.resigned", key=self.key, session_id=lease.session_id)
            self._mgr.dispatch(list(self._deposed_cbs), LeadershipEvent(self.key, lease, None))
        return released

    def proclaim(self, value: bytes | str) -> None:
        """Change the published value while leading.

        Raises:
            LockLost: Not leading (anymore).
        """
        self._lock.rewrite(check_txn_value(value))

    def _lost(self, event: LossEvent) -> None:
        log.warning("election.deposed", key=self.key, reason=event.reason.value)
        for cb in list(self._deposed_cbs):
            # Already on the callback thread: call directly, guarding each callback.
            try:
                cb(LeadershipEvent(self.key, event.lease, event.reason))
            except Exception:
                log.exception("callback.failed", key=self.key, callback="on_deposed")

    def on_elected(
        self, callback: Callable[[LeadershipEvent], object]
    ) -> Callable[[LeadershipEvent], object]:
        """Call ``callback(event)`` each time this candidate is elected."""
        check_callback(callback)
        self._elected_cbs.append(callback)
        return callback

    def on_deposed(
        self, callback: Callable[[LeadershipEvent], object]
    ) -> Callable[[LeadershipEvent], object]:
        """Call ``callback(event)`` when leadership ends (loss, or ``resign``)."""
        check_callback(callback)
        self._deposed_cbs.append(callback)
        return callback

    def run(
        self,
        fn: Callable[[Lease, threading.Event], R],
        *,
        rejoin: bool = True,
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> R:
        """Campaign, then run ``fn(lease, stop)`` while leading.

        ``stop`` (a :class:`threading.Event`) is set the moment leadership ends (a loss
        noticed, or the lease deadline passing while Consul cannot be reached), directly by
        the thread that learns it, never behind other callbacks, and when ``cancel`` is
        set; ``fn`` should return promptly then. Hand ``lease.fencing_token`` to whatever
        ``fn`` writes, or write with ``election.lock.fenced_put``. With ``rejoin`` the
        candidate campaigns again after a loss and calls ``fn`` again; when ``fn`` returns
        without a loss, leadership is resigned and its result returned. If ``fn`` raises,
        leadership is resigned and the exception propagates.

        Args:
            fn: The leader's work.
            rejoin: Campaign again after a loss.
            timeout: Seconds each campaign may take (None: forever).
            cancel: Stop campaigning, and stop ``fn``, when it is set (a SIGTERM handler).

        Raises:
            LockTimeout: Not elected within ``timeout`` (per campaign).
            LockLost: Leadership was lost while ``fn`` ran, and ``rejoin`` is False.
            Cancelled: ``cancel`` was set while campaigning.
        """
        check_callback(fn, "fn")
        cancel = check_cancel(cancel)
        while True:
            lease = self.campaign(timeout=timeout, cancel=cancel)
            ended = self._lock.ended(lease)
            stop = threading.Event()
            self._lock.on_end(_setter(stop), lease)
            if cancel is not None and not cancel.link(stop):
                stop.set()
            try:
                result = fn(lease, stop)
            except BaseException:
                self._lock.release(lease)  # step down: fn failed (or was interrupted)
                raise
            finally:
                if cancel is not None:
                    cancel.unlink(stop)
            if ended.is_set() and not self._lock.release(lease):
                # Lost while fn ran (release() returned False: it was lost).
                if rejoin:
                    log.info("election.rejoin", key=self.key)
                    continue
                raise LockLost(f"leadership of {self.key!r} was lost while running")
            if self._lock.lease is lease:
                self.resign()
            return result

    # -- observer ------------------------------------------------------------------------
    def leader(self) -> LeaderInfo | None:
        """The current leader, or None when nobody leads."""
        entry = self._mgr.consul.kv.get(self.key)
        return self._info(entry, entry.modify_index if entry else 0)

    def _info(self, entry: KVEntry | None, since: int) -> LeaderInfo | None:
        if entry is None or entry.session is None:
            return None
        try:
            sess = self._mgr.consul.sessions.info(entry.session)
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

    def observe(
        self,
        timeout: float | None = None,
        *,
        stop: threading.Event | None = None,
        cancel: Cancel | None = None,
    ) -> Iterator[LeaderInfo | None]:
        """Yield the current leader, then every change (new leader, new value, no leader).

        Uses blocking queries; each change is yielded once, in order. Stops when
        ``timeout`` seconds have passed, when ``cancel`` is set (at once: the blocking
        query is cut short), when ``stop`` is set (noticed within about 5 s), or the
        manager closes.
        """
        clock = self._mgr.clock
        seconds = check_timeout(timeout)
        cancel = check_cancel(cancel)
        if cancel is not None and stop is not None:
            raise ValidationError("stop", "give stop or cancel, not both")
        deadline = float("inf") if seconds is None else clock.monotonic() + seconds
        last: tuple[str | None, bytes] | None = None
        since = 0
        kv = self._mgr.consul.kv

        for res in follow(
            lambda index, wait: kv.get_with_meta(self.key, index=index, wait=wait, cancel=cancel),
            clock=clock,
            deadline=deadline,
            stop=cancel.event if cancel is not None else stop,
            max_wait=5.0 if stop is not None else 60.0,
            on_error=lambda exc: log.info("election.observe_retry", key=self.key, error=str(exc)),
        ):
            if self._mgr.state in (ManagerState.CLOSING, ManagerState.CLOSED):
                return
            entry = res.value
            current = (entry.session if entry else None, entry.value if entry else b"")
            if current == last:
                continue
            if entry is not None and entry.session and (last is None or last[0] != entry.session):
                since = entry.modify_index
            last = current
            yield self._info(entry, since)

    def on_leader_change(
        self, callback: Callable[[LeaderInfo | None], object]
    ) -> Callable[[LeaderInfo | None], object]:
        """Call ``callback(leader)`` for the current leader and every change after it.

        A background observer (one per election) follows the key until the manager closes.
        """
        with self._mu:
            check_callback(callback)
            self._change_cbs.append(callback)
            if self._observer is None:
                self._observer = threading.Thread(
                    target=self._observe_loop, name=f"locksmith-observe-{self.key}", daemon=True
                )
                self._observer.start()
        return callback

    def _observe_loop(self) -> None:
        try:
            for info in self.observe():
                self._mgr.dispatch(list(self._change_cbs), info)
        except Exception as exc:  # noqa: BLE001 - report and stop; nothing else to do
            log.warning("election.observer_stopped", key=self.key, error=str(exc))


def _setter(event: threading.Event) -> Callable[[LossReason | None], None]:
    """A lease-end hook that sets ``event``."""

    def hook(_reason: LossReason | None) -> None:
        event.set()

    return hook
