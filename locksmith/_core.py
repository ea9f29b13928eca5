"""Pure decision helpers of the lock state machine: lease deadlines, waits, watch plans.

Nothing here does I/O, reads a clock, starts a thread or draws randomness of its own: each
function takes ``now`` (seconds on the manager's clock) and returns a decision.
:mod:`locksmith._machine` holds the state and calls these.

Lease deadline rule (see ``docs/concepts/lease-deadline.md``): the server invalidates an
unrenewed session no earlier than TTL after its last renewal (in practice 2xTTL), so a
client that measures TTL from the *start* of its last successful renew request can never
believe it holds a lock the server has already given away.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from locksmith._backoff import Backoff
from locksmith._deadline import MAX_BLOCKING_WAIT
from locksmith._exceptions import ValidationError
from locksmith._states import LossReason

__all__ = [
    "MAX_LOCK_DELAY",
    "WINDOW_SLACK",
    "AcquirePlanner",
    "DelayHint",
    "GiveUp",
    "LeaseTimer",
    "PresumeLost",
    "RenewAt",
    "SleepUntil",
    "WatchKey",
    "WatchTarget",
    "classify_loss",
    "key_directory",
    "plan_watches",
    "session_node_checks",
    "settle_reason",
]


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


#: Upper bound of an unknown lock-delay window (Consul caps lock-delay at 60 s).
MAX_LOCK_DELAY = 60.0
#: Slack added after a computed window end: server and client clocks start the window
#: a few milliseconds apart.
WINDOW_SLACK = 0.01


@dataclass
class AcquirePlanner:
    """Decides, after each failed acquire attempt, what to do next: one deadline per call.

    Args:
        deadline: Instant when the acquire call gives up (None: never).
        backoff: The retry policy used while a lock-delay window's end is unknown.
    """

    deadline: float | None
    backoff: Backoff = field(default_factory=lambda: Backoff(start=0.05, cap=5.0))
    _tries: int = field(default=0, init=False)
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
            now: The clock's time.
            holder: The session holding the key now, or None if the key is free or missing.
            index: X-Consul-Index of the read that saw ``holder``.
            hint: What is known of a lock-delay window on the key.
        """
        left = self.remaining(now)
        if left <= 0:
            return GiveUp()
        if holder is not None:
            self._tries, self._unknown_since = 0, None
            return WatchKey(index=index, wait=min(left, MAX_BLOCKING_WAIT))
        # The key is free but the acquire failed: a lock-delay window is in force.
        end = hint.until if hint is not None else None
        if end is not None and end + WINDOW_SLACK > now:
            return SleepUntil(min(end + WINDOW_SLACK, now + left), lock_delay=True)
        # Unknown window (or our estimate was short): back off. Consul caps lock-delay at
        # 60 s, so no sleep is planned past 60 s after the window could have started.
        if self._unknown_since is None:
            self._unknown_since = hint.since if hint is not None else now
        self._tries += 1
        until = now + self.backoff.delay(self._tries)
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


@dataclass(frozen=True, order=True)
class WatchTarget:
    """What one blocking query follows: a single key, or every key under a prefix.

    Attributes:
        path: The key, or the prefix (a directory ending in ``/``, or a string prefix).
        prefix: Whether ``path`` is read recursively.
    """

    path: str
    prefix: bool = False

    def covers(self, key: str) -> bool:
        """Whether a change of ``key`` shows in this query's answer."""
        return key.startswith(self.path) if self.prefix else key == self.path


def key_directory(key: str) -> str:
    """The directory of ``key``: everything up to its last ``/`` ("" for a top-level key)."""
    slash = key.rfind("/")
    return key[: slash + 1] if slash >= 0 else ""


def _common_string(a: str, b: str) -> str:
    """The longest common prefix of two strings."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _common_dir(a: str, b: str) -> str:
    """The longest common prefix of ``a`` and ``b`` that ends at a ``/`` ("" if none)."""
    return key_directory(_common_string(a, b))


def plan_watches(keys: Iterable[str], budget: int) -> list[WatchTarget]:
    """Choose the blocking queries that follow ``keys`` with at most ``budget`` of them.

    Every query costs a connection (HTTP/1.1 carries one blocking query at a time), and a
    recursive query wakes, and downloads its whole listing, on every write under its prefix.
    The plan balances the two:

    * a key alone in its directory is followed by itself: writes to any other key, its
      siblings included, cost it nothing;
    * keys sharing a directory share one recursive query on that directory: only writes under
      that directory wake it;
    * while there are more queries than ``budget``, the two whose directories have the
      longest common parent directory are merged, then (for top-level keys) the two with the
      longest common string prefix. A query never covers the whole KV store: keys with
      nothing in common stay apart even past the budget.

    Args:
        keys: The keys to follow (held keys and keys that acquires wait for).
        budget: The number of queries wanted at most (>= 1).

    Returns:
        The targets, sorted.
    """
    by_dir: dict[str, set[str]] = {}
    for key in keys:
        d = key_directory(key)
        # A top-level key has no directory to share: it is its own group.
        by_dir.setdefault(d if d else key, set()).add(key)
    targets: set[WatchTarget] = set()
    for d, members in by_dir.items():
        if len(members) == 1:
            targets.add(WatchTarget(next(iter(members))))
        else:
            targets.add(WatchTarget(d, prefix=True))
    return _merge_to_budget(sorted(targets), max(1, budget))


def _merge_rank(a: WatchTarget, b: WatchTarget) -> tuple[int, int, WatchTarget] | None:
    """How good merging neighbours ``a`` and ``b`` is (higher first), and the merged target."""
    d = _common_dir(a.path, b.path)
    if d:
        return 1, len(d), WatchTarget(d, prefix=True)
    s = _common_string(a.path, b.path)
    if s:
        return 0, len(s), WatchTarget(s, prefix=True)
    return None  # only the whole KV store would cover both: never


def _merge_to_budget(targets: list[WatchTarget], budget: int) -> list[WatchTarget]:
    """Merge sorted neighbours, best first, until at most ``budget`` remain (O(n log n)).

    Sorted by path, the targets sharing the deepest prefix are neighbours, and a merged
    target takes their place in the order, so only neighbour pairs need ranking. A heap of
    candidate merges with lazy invalidation (a version per slot) picks the best each round.
    """
    n = len(targets)
    if n <= budget:
        return targets
    items: list[WatchTarget | None] = list(targets)
    prev = list(range(-1, n - 1))
    nxt = [*range(1, n), -1]
    version = [0] * n
    heap: list[tuple[int, int, int, int, int, int, WatchTarget]] = []

    def push(i: int) -> None:
        j = nxt[i]
        if j < 0:
            return
        a, b = items[i], items[j]
        assert a is not None and b is not None
        ranked = _merge_rank(a, b)
        if ranked is not None:
            rank, depth, merged = ranked
            heapq.heappush(heap, (-rank, -depth, i, j, version[i], version[j], merged))

    for i in range(n - 1):
        push(i)
    count = n
    while count > budget and heap:
        _, _, i, j, vi, vj, merged = heapq.heappop(heap)
        if items[i] is None or items[j] is None or version[i] != vi or version[j] != vj:
            continue
        # i absorbs j; then drop the neighbours the merged prefix now covers.
        items[i], items[j] = merged, None
        version[i] += 1
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prev[nxt[j]] = i
        count -= 1
        for side in (nxt, prev):
            k = side[i]
            while k >= 0 and (t := items[k]) is not None and merged.covers(t.path):
                items[k] = None
                count -= 1
                nn, pp = nxt[k], prev[k]
                if pp >= 0:
                    nxt[pp] = nn
                if nn >= 0:
                    prev[nn] = pp
                k = side[i]
        push(i)
        if prev[i] >= 0:
            push(prev[i])
    return sorted(t for t in items if t is not None)


def session_node_checks(
    ttl: float | None,
    lock_delay: float,
    checks: tuple[str, ...] | None,
    service_checks: tuple[str, ...] | None,
) -> tuple[str, ...] | None:
    """The NodeChecks a manager's session is created with, refusing unsafe combinations.

    A session with a TTL is bound to no health check unless checks are asked for: the
    server then ends it by TTL (never earlier than TTL after the last renewal), which the
    client's lease deadline always precedes, or when its node is deregistered (force-leave,
    autopilot pruning a dead server), which only a lock-delay of at least the TTL covers.
    A bound check may end the session at any moment, and a client that cannot reach Consul
    then keeps believing it holds its locks until its deadline, up to TTL later; only a
    lock-delay of at least the TTL keeps the next holder out that long.

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
