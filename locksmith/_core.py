"""The pure core of the lock manager: lease deadlines, lifecycle states, lock-delay windows.

Nothing here does I/O, reads a clock or starts a thread. Every function takes ``now``
(monotonic seconds) and returns a decision; ``_manager`` carries decisions out. This is
what the unit tests drive with a fake clock.

Lease deadline rule (see ``docs/concepts.md``): the server invalidates an unrenewed session
no earlier than TTL after its last renewal (in practice 2xTTL), so a client that measures
TTL from the *start* of its last successful renew request can never believe it holds a lock
the server has already given away.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from locksmith._exceptions import ValidationError

__all__ = [
    "AcquirePlanner",
    "Attempt",
    "DelayHint",
    "GiveUp",
    "InvalidTransition",
    "LeaseTimer",
    "LockState",
    "LossReason",
    "ManagerState",
    "PresumeLost",
    "RenewAt",
    "SleepUntil",
    "WatchKey",
    "check_transition",
    "classify_loss",
    "session_node_checks",
    "settle_reason",
    "watch_prefix",
]


class LossReason(enum.Enum):
    """Why a lease ended without its owner releasing it."""

    #: The session is gone on the server: destroyed, TTL expired, or a bound check went critical.
    SESSION_INVALIDATED = "session_invalidated"
    #: No renewal succeeded within TTL; the lease is presumed lost (Consul may be unreachable,
    #: or the process was paused).
    LEASE_EXPIRED = "lease_expired"
    #: Someone else released the key (``?release=`` with our session ID).
    RELEASED_BY_OTHER = "released_by_other"
    #: The key was deleted.
    KEY_DELETED = "key_deleted"
    #: The key now carries another session.
    KEY_TAKEN = "key_taken"


class LockState(enum.Enum):
    """The lifecycle of one :class:`~locksmith.Lock`."""

    UNLOCKED = "unlocked"
    ACQUIRING = "acquiring"
    HELD = "held"
    RELEASING = "releasing"
    LOST = "lost"


class ManagerState(enum.Enum):
    """The lifecycle of a :class:`~locksmith.LockManager`."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class InvalidTransition(RuntimeError):  # noqa: N818 - public name
    """A state machine was asked for a transition it does not allow (a locksmith bug)."""


_LOCK_TRANSITIONS: dict[LockState, frozenset[LockState]] = {
    LockState.UNLOCKED: frozenset({LockState.ACQUIRING}),
    LockState.ACQUIRING: frozenset({LockState.HELD, LockState.UNLOCKED}),
    LockState.HELD: frozenset({LockState.RELEASING, LockState.LOST}),
    LockState.RELEASING: frozenset({LockState.UNLOCKED}),
    LockState.LOST: frozenset({LockState.ACQUIRING, LockState.UNLOCKED}),
}
_MANAGER_TRANSITIONS: dict[ManagerState, frozenset[ManagerState]] = {
    ManagerState.NEW: frozenset({ManagerState.RUNNING, ManagerState.CLOSING}),
    ManagerState.RUNNING: frozenset({ManagerState.CLOSING}),
    ManagerState.CLOSING: frozenset({ManagerState.CLOSED}),
    ManagerState.CLOSED: frozenset(),
}


def check_transition(current: LockState | ManagerState, new: LockState | ManagerState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> new`` is allowed."""
    table: dict[object, frozenset[object]]
    table = _LOCK_TRANSITIONS if isinstance(current, LockState) else _MANAGER_TRANSITIONS  # type: ignore[assignment]
    if new not in table[current]:
        raise InvalidTransition(f"{type(current).__name__}: {current.value} -> {new.value}")


# --------------------------------------------------------------------------- lease deadline


@dataclass(frozen=True)
class RenewAt:
    """Renew when the clock reaches ``at``; the lease is valid until ``deadline``."""

    at: float
    deadline: float


@dataclass(frozen=True)
class PresumeLost:
    """The lease deadline passed without a successful renewal."""

    deadline: float


@dataclass
class LeaseTimer:
    """The client-side deadline of one session's lease.

    Args:
        ttl: The session TTL in seconds, or None for a session without TTL (no deadline).
        started: When the request that created (or last renewed) the session was *sent*.
        renew_fraction: Renew after this fraction of the TTL has passed.
    """

    ttl: float | None
    started: float
    renew_fraction: float = 1 / 3

    @property
    def deadline(self) -> float:
        """The instant after which the lease must be presumed lost (inf without TTL)."""
        return float("inf") if self.ttl is None else self.started + self.ttl

    def valid(self, now: float) -> bool:
        """Whether the lease may still be relied on at ``now``."""
        return now < self.deadline

    def remaining(self, now: float) -> float:
        """Seconds left until the deadline (0 when past it)."""
        return max(0.0, self.deadline - now)

    def renewed(self, started: float, ttl: float | None) -> None:
        """Record a successful renewal whose request was sent at ``started``.

        The server may hand back a TTL higher than requested; it is adopted. A renewal
        that started before the one already recorded cannot move the deadline back.
        """
        self.started = max(started, self.started)
        if ttl is not None:
            self.ttl = ttl

    def decide(self, now: float) -> RenewAt | PresumeLost | None:
        """What the renew loop should do at ``now`` (None: nothing, no TTL)."""
        if self.ttl is None:
            return None
        if now >= self.deadline:
            return PresumeLost(self.deadline)
        return RenewAt(self.started + self.ttl * self.renew_fraction, self.deadline)


# --------------------------------------------------------------------------- acquire waits


@dataclass(frozen=True)
class DelayHint:
    """What is known about a lock-delay window on one key.

    Attributes:
        since: When the previous holder's session was seen to end (monotonic).
        lock_delay: That session's LockDelay in seconds, or None when unknown.
        session_id: The previous holder's session ID, if known.
    """

    since: float
    lock_delay: float | None
    session_id: str | None = None

    @property
    def until(self) -> float | None:
        """When the window ends, if known."""
        return None if self.lock_delay is None else self.since + self.lock_delay


@dataclass(frozen=True)
class Attempt:
    """Try to acquire now."""


@dataclass(frozen=True)
class WatchKey:
    """Block on the key (a blocking query from ``index``) until it changes or ``wait`` ends."""

    index: int
    wait: float


@dataclass(frozen=True)
class SleepUntil:
    """Sleep until ``until``; ``lock_delay`` tells whether this is a lock-delay window."""

    until: float
    lock_delay: bool
    known: bool = True


@dataclass(frozen=True)
class GiveUp:
    """The deadline passed."""


#: Longest blocking wait used while waiting for a holder (Consul caps waits at 10 minutes).
MAX_BLOCKING_WAIT = 300.0
#: Upper bound of an unknown lock-delay window (Consul caps lock-delay at 60 s).
MAX_LOCK_DELAY = 60.0
#: Slack added after a computed window end: server and client clocks start the window
#: a few milliseconds apart.
WINDOW_SLACK = 0.01


@dataclass
class AcquirePlanner:
    """Decides, after each failed acquire attempt, what to do next: one deadline per call.

    Args:
        deadline: Monotonic instant when the acquire call gives up (None: never).
        backoff_start: First retry interval when a lock-delay window's end is unknown.
        backoff_cap: Largest such interval.
    """

    deadline: float | None
    backoff_start: float = 0.05
    backoff_cap: float = 5.0
    _backoff: float = field(default=0.0, init=False)
    _unknown_since: float | None = field(default=None, init=False)

    def remaining(self, now: float) -> float:
        """Seconds left (inf without deadline)."""
        return float("inf") if self.deadline is None else max(0.0, self.deadline - now)

    def after_failure(
        self,
        now: float,
        *,
        holder: str | None,
        index: int,
        hint: DelayHint | None,
    ) -> WatchKey | SleepUntil | GiveUp:
        """Plan the next step after an acquire attempt failed.

        Args:
            now: Monotonic time.
            holder: The session holding the key now, or None if the key is free or missing.
            index: X-Consul-Index of the read that saw ``holder``.
            hint: What is known of a lock-delay window on the key.
        """
        left = self.remaining(now)
        if left <= 0:
            return GiveUp()
        if holder is not None:
            self._backoff, self._unknown_since = 0.0, None
            return WatchKey(index=index, wait=min(left, MAX_BLOCKING_WAIT))
        # The key is free but the acquire failed: a lock-delay window is in force.
        end = hint.until if hint is not None else None
        if end is not None and end + WINDOW_SLACK > now:
            return SleepUntil(min(end + WINDOW_SLACK, now + left), lock_delay=True)
        # Unknown window (or our estimate was short): back off. Consul caps lock-delay at
        # 60 s, so no sleep is planned past 60 s after the window could have started.
        if self._unknown_since is None:
            self._unknown_since = hint.since if hint is not None else now
        self._backoff = (
            self.backoff_start if self._backoff == 0 else min(self._backoff * 2, self.backoff_cap)
        )
        # Spread retries of many waiters by +-20% (os.urandom: no shared RNG state).
        jitter = 0.8 + 0.4 * (int.from_bytes(os.urandom(2), "big") / 65535)
        until = now + self._backoff * jitter
        latest = self._unknown_since + MAX_LOCK_DELAY + WINDOW_SLACK
        if latest > now:
            until = min(until, latest)
        return SleepUntil(min(until, now + left), lock_delay=True, known=False)


# --------------------------------------------------------------------------- noticing loss


def classify_loss(
    session_id: str, entry_session: str | None, exists: bool, session_alive: bool
) -> LossReason | None:
    """Why a held key no longer belongs to ``session_id`` (None: it still does).

    Args:
        session_id: Our session.
        entry_session: The session the key carries now.
        exists: Whether the key exists.
        session_alive: Whether our session still exists on the server.
    """
    if exists and entry_session == session_id:
        return None
    if not session_alive:
        return LossReason.SESSION_INVALIDATED
    if not exists:
        return LossReason.KEY_DELETED
    if entry_session is None:
        return LossReason.RELEASED_BY_OTHER
    return LossReason.KEY_TAKEN


def settle_reason(observed: LossReason, lease_valid: bool) -> LossReason:
    """The reason to report for a loss noticed while the lease was (in)valid locally.

    Once the local lease deadline has passed, the lease was presumed lost at that deadline,
    before whatever the server did afterwards (e.g. reap the session at 2xTTL): report
    :attr:`LossReason.LEASE_EXPIRED` then, whatever was observed.
    """
    return observed if lease_valid else LossReason.LEASE_EXPIRED


def watch_prefix(keys: list[str] | set[str] | frozenset[str]) -> str:
    """The prefix one recursive blocking query watches ``keys`` with.

    Their longest common prefix, cut back to its last ``/`` when it has one: siblings
    acquired later (``jobs/a`` then ``jobs/b``) then fall under the same watch.
    """
    if not keys:
        return ""
    common = os.path.commonprefix(sorted(keys))  # noqa: RUF071 - KV prefixes are strings
    slash = common.rfind("/")
    return common[: slash + 1] if slash >= 0 else common


def session_node_checks(
    ttl: float | None,
    lock_delay: float,
    checks: tuple[str, ...] | None,
    service_checks: tuple[str, ...] | None,
) -> tuple[str, ...] | None:
    """The NodeChecks a manager's session is created with, refusing unsafe combinations.

    A session with a TTL is bound to no health check unless checks are asked for: the
    server then ends it only by TTL (never earlier than TTL after the last renewal), which
    the client's lease deadline always precedes. A bound check may end the session at any
    moment, and a client that cannot reach Consul then keeps believing it holds its locks
    until its deadline, up to TTL later; only a lock-delay of at least the TTL keeps the next
    holder out that long.

    Returns:
        The NodeChecks to send (``()``: none), or None for the server default (serfHealth),
        which is kept for sessions without TTL (nothing else would ever end them).

    Raises:
        ValidationError: Health checks are bound to a TTL session whose lock-delay is
            shorter than its TTL.
    """
    node_checks = (None if ttl is None else ()) if checks is None else checks
    bound = bool(node_checks) or bool(service_checks)
    if ttl is not None and bound and lock_delay < ttl:
        raise ValidationError(
            "lock_delay",
            f"{lock_delay:g}s is shorter than the TTL ({ttl:g}s) while health checks are "
            "bound: a check failing while this client cannot reach Consul would let another "
            "holder in before this client's lease deadline. Use lock_delay >= ttl, or bind "
            "no checks (the default for TTL sessions)",
        )
    return node_checks
