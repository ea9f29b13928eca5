"""Lifecycle enums and the one transition table every state change goes through.

Each object locksmith tracks has exactly one lifecycle enum: a manager
(:class:`ManagerState`), its session (:class:`SessionState`), a lock (:class:`LockState`),
one acquire call (:class:`AttemptPhase`) and a place in a fair queue (:class:`QueueState`).
:func:`advance` is the only way the state machine (and the fair queue) changes any of them;
it refuses a transition the table does not list with :class:`InvalidTransition` (which would
be a locksmith bug).
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = [
    "AttemptPhase",
    "InvalidTransition",
    "LockState",
    "LossReason",
    "ManagerState",
    "QueueState",
    "SessionState",
    "advance",
    "allowed",
]


class LossReason(enum.Enum):
    """Why a lease ended without its owner releasing it."""

    #: The session is gone on the server: destroyed, TTL expired, or a bound check went critical.
    SESSION_INVALIDATED = "session_invalidated"
    #: No renewal succeeded within TTL; the lease is presumed lost (Consul may be unreachable,
    #: or the process was paused or suspended).
    LEASE_EXPIRED = "lease_expired"
    #: Someone else released the key (``?release=`` with our session ID).
    RELEASED_BY_OTHER = "released_by_other"
    #: The key was deleted.
    KEY_DELETED = "key_deleted"
    #: The key now carries another session.
    KEY_TAKEN = "key_taken"


class ManagerState(enum.Enum):
    """The lifecycle of a lock manager."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionState(enum.Enum):
    """The lifecycle of the manager's session: NONE -> CREATING -> ACTIVE -> NONE."""

    NONE = "none"
    CREATING = "creating"
    ACTIVE = "active"


class LockState(enum.Enum):
    """The lifecycle of one :class:`~locksmith.Lock`.

    ``LOST`` means the lock's latest lease ended without a release and nobody has
    acknowledged it yet (``release()`` does, and so does the next acquire).
    """

    UNLOCKED = "unlocked"
    ACQUIRING = "acquiring"
    HELD = "held"
    RELEASING = "releasing"
    LOST = "lost"


class AttemptPhase(enum.Enum):
    """Where one acquire call stands.

    QUEUED: another local attempt or hold has the key; CREATING: creating the session for
    everyone; WAIT_SESSION: another attempt creates it; READING: reading the key (flags,
    holder); SENDING: the acquire transaction is in flight (its outcome is unknown until
    answered); UNDOING: giving back a no-op re-acquire; WAITING: the key is held elsewhere,
    a watch follows it; SLEEPING: a lock-delay window or a retry backoff; DONE: finished.
    """

    QUEUED = "queued"
    CREATING = "creating"
    WAIT_SESSION = "wait_session"
    READING = "reading"
    SENDING = "sending"
    UNDOING = "undoing"
    WAITING = "waiting"
    SLEEPING = "sleeping"
    DONE = "done"


class QueueState(enum.Enum):
    """The lifecycle of one contender of a fair queue (a ``FairLock``, or a side of an
    ``RWLock``).

    IDLE: no entry in the queue; ENQUEUING: adding the entry; WAITING: the entry is queued
    behind others; HELD: the lock is held; RELEASING: the release is being written; LOST: the
    held lease ended without a release and nobody has acknowledged it yet (``release()``
    does, and so does the next acquire).
    """

    IDLE = "idle"
    ENQUEUING = "enqueuing"
    WAITING = "waiting"
    HELD = "held"
    RELEASING = "releasing"
    LOST = "lost"


class InvalidTransition(RuntimeError):  # noqa: N818 - public name
    """A state machine was asked for a transition it does not allow (a locksmith bug)."""


_A = AttemptPhase
_L = LockState
_M = ManagerState
_S = SessionState
_Q = QueueState

_STEPS = (_A.CREATING, _A.WAIT_SESSION, _A.READING, _A.SENDING, _A.WAITING, _A.SLEEPING)

#: Every allowed transition, per enum. Nothing changes state except through this table.
_TABLE: dict[enum.Enum, frozenset[enum.Enum]] = {
    _M.NEW: frozenset({_M.RUNNING, _M.CLOSING}),
    _M.RUNNING: frozenset({_M.CLOSING}),
    _M.CLOSING: frozenset({_M.CLOSED}),
    _M.CLOSED: frozenset(),
    _S.NONE: frozenset({_S.CREATING, _S.ACTIVE}),
    _S.CREATING: frozenset({_S.ACTIVE, _S.NONE}),
    _S.ACTIVE: frozenset({_S.NONE}),
    _L.UNLOCKED: frozenset({_L.ACQUIRING}),
    _L.ACQUIRING: frozenset({_L.HELD, _L.UNLOCKED}),
    _L.HELD: frozenset({_L.RELEASING, _L.LOST}),
    # A release in flight ends unlocked; a second thread's attempt on the same Lock may be
    # queued behind it and go on.
    _L.RELEASING: frozenset({_L.UNLOCKED, _L.ACQUIRING, _L.LOST}),
    _L.LOST: frozenset({_L.ACQUIRING, _L.UNLOCKED}),
    _A.QUEUED: frozenset({*_STEPS, _A.DONE}),
    _A.CREATING: frozenset({*_STEPS, _A.QUEUED, _A.DONE}),
    _A.WAIT_SESSION: frozenset({*_STEPS, _A.QUEUED, _A.DONE}),
    _A.READING: frozenset({*_STEPS, _A.QUEUED, _A.DONE}),
    _A.SENDING: frozenset({*_STEPS, _A.QUEUED, _A.UNDOING, _A.DONE}),
    _A.UNDOING: frozenset({*_STEPS, _A.QUEUED, _A.DONE}),
    _A.WAITING: frozenset({*_STEPS, _A.QUEUED, _A.DONE}),
    _A.SLEEPING: frozenset({*_STEPS, _A.QUEUED, _A.DONE}),
    _A.DONE: frozenset(),
    _Q.IDLE: frozenset({_Q.ENQUEUING}),
    # A waiter whose entry vanished (its session ended, someone deleted it) queues again.
    _Q.ENQUEUING: frozenset({_Q.WAITING, _Q.HELD, _Q.IDLE}),
    _Q.WAITING: frozenset({_Q.HELD, _Q.ENQUEUING, _Q.IDLE}),
    _Q.HELD: frozenset({_Q.RELEASING, _Q.LOST}),
    _Q.RELEASING: frozenset({_Q.IDLE, _Q.LOST}),
    _Q.LOST: frozenset({_Q.ENQUEUING, _Q.IDLE}),
}

E = TypeVar("E", ManagerState, SessionState, LockState, AttemptPhase, QueueState)

#: The table by identity: an enum member's hash is computed in Python, its id() is not, and
#: this check runs several times per acquire.
_BY_ID: dict[int, frozenset[int]] = {
    id(state): frozenset(id(n) for n in targets) for state, targets in _TABLE.items()
}


def allowed(current: enum.Enum, new: enum.Enum) -> bool:
    """Whether the table allows ``current -> new`` (staying put is always allowed)."""
    return new is current or id(new) in _BY_ID[id(current)]


def advance(current: E, new: E) -> E:
    """Return ``new`` if ``current -> new`` is in the table; raise otherwise.

    Raises:
        InvalidTransition: The table does not list the transition.
    """
    if not allowed(current, new):
        raise InvalidTransition(f"{type(current).__name__}: {current.value} -> {new.value}")
    return new
