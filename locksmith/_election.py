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
from typing import TYPE_CHECKING, TypeVar

import structlog

from locksmith._client import KVEntry, next_index
from locksmith._core import LockState, LossReason
from locksmith._exceptions import ConsulUnavailable, LockLost, LocksmithError
from locksmith._validate import check_callback, check_timeout, check_value

if TYPE_CHECKING:
    from locksmith._manager import Lease, Lock, LockManager, LossEvent

__all__ = ["Election", "LeaderInfo", "LeadershipEvent"]

log = structlog.get_logger(__name__)

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

    def __init__(self, manager: LockManager, key: str, value: bytes | str = b"") -> None:
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
    def campaign(self, timeout: float | None = None) -> Lease:
        """Block until elected; return the leadership lease (with its fencing token).

        Raises:
            LockTimeout: Not elected within ``timeout`` seconds.
        """
        lease = self._lock.acquire(timeout=timeout)
        assert lease is not None
        log.info(
            "election.elected",
            key=self.key,
            session_id=lease.session_id,
            fencing_token=lease.fencing_token,
        )
        self._mgr._emit(self._elected_cbs, LeadershipEvent(self.key, lease))
        return lease

    def resign(self) -> bool:
        """Step down; the next candidate takes over at once (no lock-delay).

        Returns:
            True if this candidate was leading.
        """
        lease = self._lock.lease
        if lease is None:
            if self._lock.state is LockState.LOST:
                self._lock.release()
            return False
        released = self._lock.release()
        if released:
            log.info("election.resigned", key=self.key, session_id=lease.session_id)
            self._mgr._emit(self._deposed_cbs, LeadershipEvent(self.key, lease, None))
        return released

    def proclaim(self, value: bytes | str) -> None:
        """Change the published value while leading.

        Raises:
            LockLost: Not leading (anymore).
        """
        data = check_value(value)
        lease = self._lock.lease
        if lease is None:
            raise LockLost(f"cannot proclaim on {self.key!r}: not the leader")
        ok = self._mgr.consul.kv.put(
            self.key, data, acquire=lease.session_id, flags=self._lock.flags
        )
        if not ok:
            raise LockLost(f"cannot proclaim on {self.key!r}: leadership was lost")
        self._lock.value = data

    def _lost(self, event: LossEvent) -> None:
        log.warning("election.deposed", key=self.key, reason=event.reason.value)
        for cb in list(self._deposed_cbs):
            # Already on the dispatcher thread: call directly, guarding each callback.
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
        fn: Callable[[threading.Event], R],
        *,
        rejoin: bool = True,
        timeout: float | None = None,
    ) -> R:
        """Campaign, then run ``fn(cancel)`` while leading.

        ``cancel`` is set as soon as leadership is lost; ``fn`` should return promptly then.
        With ``rejoin`` the candidate campaigns again after a loss and calls ``fn`` again;
        when ``fn`` returns without a loss, leadership is resigned and its result returned.

        Raises:
            LockTimeout: Not elected within ``timeout`` (per campaign).
        """
        while True:
            cancel = threading.Event()
            lease = self.campaign(timeout=timeout)
            remove = self._watch_loss(lease, cancel)
            try:
                result = fn(cancel)
            finally:
                remove()
            if cancel.is_set() or not self._lock.held:
                cancel.set()
                if self._lock.state is LockState.LOST:
                    self._lock.release()
                if rejoin:
                    log.info("election.rejoin", key=self.key)
                    continue
                raise LockLost(f"leadership of {self.key!r} was lost while running")
            self.resign()
            return result

    def _watch_loss(self, lease: Lease, cancel: threading.Event) -> Callable[[], None]:
        def on_deposed(event: LeadershipEvent) -> None:
            if event.lease is lease:
                cancel.set()

        self._deposed_cbs.append(on_deposed)

        def remove() -> None:
            if on_deposed in self._deposed_cbs:
                self._deposed_cbs.remove(on_deposed)

        # The loss may have happened before the callback was registered.
        if not self._lock.held:
            cancel.set()
        return remove

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
        except LocksmithError:
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
        self, timeout: float | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[LeaderInfo | None]:
        """Yield the current leader, then every change (new leader, new value, no leader).

        Uses blocking queries; each change is yielded once, in order. Stops when
        ``timeout`` seconds have passed, when ``stop`` is set (noticed within about 5 s),
        or the manager closes.
        """
        clock = self._mgr._clock
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else clock.monotonic() + timeout
        index = 0
        last: tuple[str | None, bytes] | None = None
        since = 0
        kv = self._mgr.consul.kv
        while stop is None or not stop.is_set():
            now = clock.monotonic()
            if deadline is not None and now >= deadline:
                return
            if self._mgr.state.value in ("closing", "closed"):
                return
            # With a stop event, block in shorter queries so that setting it takes effect soon.
            cap = 60.0 if stop is None else 5.0
            wait = cap if deadline is None else max(0.001, min(cap, deadline - now))
            try:
                res = kv.get_with_meta(self.key, index=index or None, wait=wait if index else None)
            except ConsulUnavailable as exc:
                log.info("election.observe_retry", key=self.key, error=str(exc))
                clock.wait_until(clock.monotonic() + 0.5, stop)
                index = 0
                continue
            index = next_index(index, res.meta.index)
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
                self._mgr._emit(list(self._change_cbs), info)
        except LocksmithError as exc:
            log.warning("election.observer_stopped", key=self.key, error=str(exc))
