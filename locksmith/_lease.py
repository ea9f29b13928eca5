"""What an acquisition hands out and what the manager reports: leases and their events.

These are plain frozen values, shared by the threaded and the asyncio front-ends. Each
acquisition makes a new :class:`Lease` object; locksmith compares leases by identity, so a
lease that ended can never be mistaken for a later acquisition of the same key, even by
the same session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from locksmith._states import LossReason

__all__ = ["Lease", "LeaseSet", "LockDelayEvent", "LossEvent"]


@dataclass(frozen=True, eq=False)
class Lease:
    """Proof that a lock was acquired.

    Two leases are equal only if they are the same object: every acquisition makes its
    own, and releases, fenced writes and loss reports act on one specific lease.

    Attributes:
        key: The KV key.
        session_id: The session that holds it.
        fencing_token: The Raft index this acquisition wrote. It strictly increases with
            every acquisition of the key, by any client, and survives PUTs and DELETEs of
            the key by others. Hand it to whatever you protect and reject smaller ones.
        value: The value written with the acquisition.
        acquired_at: When the acquisition succeeded, on the manager's clock.
        flags: The KV flags written.
    """

    key: str
    session_id: str
    fencing_token: int
    value: bytes = field(repr=False)
    acquired_at: float
    flags: int = 0


@dataclass(frozen=True, eq=False)
class LeaseSet:
    """Proof that a set of keys was acquired together (:meth:`LockManager.lock_many`).

    The keys are held all or none: a loss of any is the loss of the set, and a release
    gives them all back. Like :class:`Lease`, compared by identity.

    Attributes:
        keys: The keys, sorted.
        session_id: The session that holds them.
        fencing_token: The Raft index of the set's last acquiring transaction: larger than
            the token of any earlier acquisition of any of its keys, by anyone.
        leases: One :class:`Lease` per key, in ``keys`` order; each carries the index of
            the transaction that took its key.
        acquired_at: When the last key was taken, on the manager's clock.
    """

    keys: tuple[str, ...]
    session_id: str
    fencing_token: int
    leases: tuple[Lease, ...] = field(repr=False)
    acquired_at: float

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class LossEvent:
    """A lease ended without its owner releasing it.

    Attributes:
        key: The key.
        reason: Why (see :class:`~locksmith.LossReason`).
        lease: The lease that ended.
        detected_at: When locksmith noticed, on the manager's clock.
        keys: For a :class:`LeaseSet`: every key of the set, all given up with this one
            (``key`` is the one whose loss was seen). Empty for a single lock.
    """

    key: str
    reason: LossReason
    lease: Lease
    detected_at: float
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockDelayEvent:
    """An acquire is held up by a lock-delay window.

    Attributes:
        key: The key.
        until: When the window ends (``known``) or the next retry is due, on the manager's
            clock.
        known: Whether ``until`` is the computed end of the window.
        previous_session: The session whose invalidation started the window, if known.
        wait: Seconds from the event to ``until``.
    """

    key: str
    until: float
    known: bool
    previous_session: str | None
    wait: float = 0.0
