"""The vocabulary between the sans-IO state machine and the front-ends that run it.

:class:`~locksmith._machine.LockMachine` takes **events** (what happened: a request was
made, Consul answered, time passed) and returns **commands** (what to do next: send this,
wait until then, tell the application that). A front-end (the threaded
:class:`~locksmith.LockManager`, the asyncio one) executes commands and feeds the answers
back as events; it makes no decision of its own.

Every command names the **actor** that carries it out:

* an acquire, release or close call: the ``int`` ID the front-end gave it (the caller's own
  thread or task runs its commands, so fast paths need no hand-over);
* :data:`RENEWER`: renews the session and wakes at the lease deadline;
* :data:`CLEANER`: gives back keys of presumed-lost or ambiguous holds, destroys sessions;
* ``("watch", n)``: watch slot ``n``, one blocking query at a time.

User callbacks are not an actor of the machine: :class:`Notify` commands go to a callback
runner, never to the thread that produced them. Answers carry the ``step`` of the command
they answer, so a late answer to a superseded command is recognised and ignored.

Messages are never changed once made; they are plain slotted dataclasses rather than frozen
ones because a frozen dataclass costs a ``setattr`` per field to build, several times per
acquire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from locksmith._core import WatchTarget
from locksmith._lease import Lease, LeaseSet, LockDelayEvent, LossEvent
from locksmith._models import KVEntry
from locksmith._states import LossReason

__all__ = [
    "CLEANER",
    "RENEWER",
    "AcquireManyRequested",
    "AcquireRequested",
    "Actor",
    "AdoptSession",
    "AttemptAborted",
    "CloseRequested",
    "Command",
    "Confirm",
    "Confirmed",
    "CreateSession",
    "Destroy",
    "DestroyAnswered",
    "Event",
    "Finish",
    "HolderRead",
    "Interrupt",
    "KeyRead",
    "KeyWritten",
    "LeaseEnded",
    "Log",
    "ManyApplied",
    "Notify",
    "ReadHolder",
    "ReadKey",
    "ReleaseAnswered",
    "ReleaseItem",
    "ReleaseManyRequested",
    "ReleaseOutcome",
    "ReleaseRequested",
    "Renew",
    "RenewAnswered",
    "RequestFailed",
    "SendAcquire",
    "SendAcquireMany",
    "SendRelease",
    "SessionCreated",
    "SessionWanted",
    "Sleep",
    "Start",
    "Stop",
    "TxnApplied",
    "TxnRefused",
    "Watch",
    "WatchFailed",
    "WatchSaw",
    "Woke",
]

#: Who carries out a command: a call's ID, a background role, or a watch slot.
Actor = int | str | tuple[str, int]

#: The renewer: renews the session, wakes at the lease deadline.
RENEWER = "renewer"
#: The cleaner: releases keys nobody uses any more, destroys sessions.
CLEANER = "cleaner"


# ============================================================================ events


@dataclass(slots=True)
class Start:
    """The front-end starts: the manager runs."""


@dataclass(slots=True)
class AcquireRequested:
    """A caller wants ``key``.

    Attributes:
        actor: The call's ID.
        lock_id: The :class:`~locksmith.Lock` object asking (its callbacks, its state).
        key: The key.
        value: Written on acquisition.
        flags: KV flags.
        deadline: When the call gives up (inf: never).
        blocking: False: try once, never wait for a holder.
    """

    actor: int
    lock_id: int
    key: str
    value: bytes
    flags: int
    deadline: float
    blocking: bool


@dataclass(slots=True)
class AcquireManyRequested:
    """A caller wants every key of ``keys``, all or none (:meth:`LockManager.lock_many`).

    Attributes:
        actor: The call's ID.
        lock_id: The :class:`~locksmith.LockSet` asking.
        keys: The keys, sorted and distinct (the order every caller takes them in, so two
            overlapping sets never wait for each other in a cycle).
        value: Written to every key.
        deadline: When the call gives up (inf: never).
        blocking: False: try once.
    """

    actor: int
    lock_id: int
    keys: tuple[str, ...]
    value: bytes
    deadline: float
    blocking: bool


@dataclass(slots=True)
class SessionWanted:
    """A caller needs the session to exist (a semaphore names its key after it); it is
    answered with the session ID.

    Attributes:
        actor: The call's ID.
        deadline: When the call gives up.
    """

    actor: int
    deadline: float


@dataclass(slots=True)
class SessionCreated:
    """The session asked for by :class:`CreateSession`/:class:`AdoptSession` exists.

    Attributes:
        started: When the create (or adopting renew) request was sent.
        ttl: The session's TTL (None: none).
        lock_delay: Its lock-delay in seconds.
        owned: Whether this manager created it (and so destroys it).
    """

    actor: int
    step: int
    sid: str
    started: float
    ttl: float | None
    lock_delay: float
    owned: bool


@dataclass(slots=True)
class KeyRead:
    """A :class:`ReadKey` answered: the entry (None: missing) at X-Consul-Index ``index``."""

    actor: int
    step: int
    entry: KVEntry | None
    index: int


@dataclass(slots=True)
class HolderRead:
    """A :class:`ReadHolder` answered: the holder's lock-delay (None: session unreadable)."""

    actor: int
    step: int
    sid: str
    lock_delay: float | None


@dataclass(slots=True)
class TxnApplied:
    """The acquire transaction succeeded; ``entry`` is what it wrote."""

    actor: int
    step: int
    entry: KVEntry


@dataclass(slots=True)
class ManyApplied:
    """A :class:`SendAcquireMany` succeeded; ``entries`` are what it wrote, in its order."""

    actor: int
    step: int
    entries: tuple[KVEntry, ...]


@dataclass(slots=True)
class TxnRefused:
    """The acquire transaction was refused: the key is held, or in a lock-delay window.

    Attributes:
        key: For a :class:`SendAcquireMany`, the key that was refused (None: unknown).
    """

    actor: int
    step: int
    key: str | None = None


@dataclass(slots=True)
class RequestFailed:
    """A request failed.

    Attributes:
        error: What was raised (a :class:`~locksmith.LocksmithError`).
        sent: Whether the request may have reached Consul (its effect is unknown).
    """

    actor: Actor
    step: int
    error: Exception
    sent: bool = True


@dataclass(slots=True)
class Woke:
    """A :class:`Sleep` ran to its end (not cut short by a newer command)."""

    actor: Actor
    step: int


@dataclass(slots=True)
class AttemptAborted:
    """A call left without its answer: a BaseException (Ctrl-C) or a cancellation."""

    actor: int


@dataclass(slots=True)
class ReleaseRequested:
    """A caller releases ``lease`` (None: whatever the lock ``lock_id`` holds now)."""

    actor: int
    lock_id: int
    key: str
    lease: Lease | None


@dataclass(slots=True)
class ReleaseManyRequested:
    """A caller releases the set ``lease_set`` (None: whatever the set ``lock_id`` holds)."""

    actor: int
    lock_id: int
    key: str
    lease_set: LeaseSet | None


#: The outcome of one item of a release: done, not held by that session (any more), or
#: the session is gone.
ReleaseOutcome = Literal["released", "not_held", "session_gone"]


@dataclass(slots=True)
class ReleaseAnswered:
    """A :class:`SendRelease` answered, one outcome per item, in order."""

    actor: Actor
    step: int
    outcomes: tuple[ReleaseOutcome, ...]


@dataclass(slots=True)
class RenewAnswered:
    """A :class:`Renew` ended.

    Attributes:
        sid: The session.
        started: When the successful attempt was sent (None: no success).
        ttl: The TTL the server asks for now.
        gone: The server said the session does not exist.
        error: The last error when there was no success.
    """

    sid: str
    started: float | None
    ttl: float | None = None
    gone: bool = False
    error: Exception | None = None


@dataclass(slots=True)
class WatchSaw:
    """A watch slot's query answered: every entry under its target at ``index``."""

    slot: int
    gen: int
    entries: tuple[KVEntry, ...]
    index: int


@dataclass(slots=True)
class WatchFailed:
    """A watch slot's query failed (any exception: the slot lives on)."""

    slot: int
    gen: int
    error: Exception


@dataclass(slots=True)
class Confirmed:
    """A :class:`Confirm` answered.

    Attributes:
        entries: Each suspect key read with ``consistent`` (None: missing); empty if the
            reads failed.
        alive: Whether the session still exists (a renew answered), None: undecided.
        started: When the confirming renew was sent (it counts as a renewal).
        ttl: The TTL that renew returned.
    """

    slot: int
    gen: int
    sid: str
    entries: dict[str, KVEntry | None]
    alive: bool | None
    started: float
    ttl: float | None = None


@dataclass(slots=True)
class DestroyAnswered:
    """A :class:`Destroy` ended (``error`` None: destroyed)."""

    actor: Actor
    step: int
    sid: str
    error: Exception | None = None


@dataclass(slots=True)
class CloseRequested:
    """The manager closes: release everything, destroy the session, by ``deadline``."""

    actor: int
    deadline: float


@dataclass(slots=True)
class KeyWritten:
    """The lease's key was written at ``index`` and still carries its session (an
    election's proclaim, or a plain PUT by someone else that Consul lets keep the lock)."""

    lease: Lease
    index: int


#: Everything the machine takes.
Event = (
    Start
    | AcquireRequested
    | AcquireManyRequested
    | SessionWanted
    | SessionCreated
    | KeyRead
    | HolderRead
    | TxnApplied
    | ManyApplied
    | TxnRefused
    | RequestFailed
    | Woke
    | AttemptAborted
    | ReleaseRequested
    | ReleaseManyRequested
    | ReleaseAnswered
    | RenewAnswered
    | WatchSaw
    | WatchFailed
    | Confirmed
    | DestroyAnswered
    | CloseRequested
    | KeyWritten
)


# ============================================================================ commands


@dataclass(slots=True)
class CreateSession:
    """Create the manager's session (the front-end knows its settings); answer
    :class:`SessionCreated` or :class:`RequestFailed`."""

    actor: int
    step: int
    timeout: float


@dataclass(slots=True)
class AdoptSession:
    """Renew the existing session ``sid`` given to the manager, to adopt it."""

    actor: int
    step: int
    sid: str
    timeout: float


@dataclass(slots=True)
class ReadKey:
    """Read ``key`` (non-blocking); answer :class:`KeyRead`."""

    actor: int
    step: int
    key: str
    timeout: float
    consistent: bool = False


@dataclass(slots=True)
class ReadHolder:
    """Read session ``sid``'s lock-delay; answer :class:`HolderRead`."""

    actor: int
    step: int
    sid: str
    timeout: float


@dataclass(slots=True)
class SendAcquire:
    """Acquire ``key`` with session ``sid`` in one ``/v1/txn`` ``lock`` operation."""

    actor: int
    step: int
    key: str
    value: bytes
    flags: int
    sid: str
    timeout: float


@dataclass(slots=True)
class SendAcquireMany:
    """Acquire ``keys`` (at most 64) with session ``sid`` in one ``/v1/txn``, all or none;
    answer :class:`ManyApplied`, :class:`TxnRefused` (naming the refused key) or
    :class:`RequestFailed`."""

    actor: int
    step: int
    keys: tuple[str, ...]
    value: bytes
    sid: str
    timeout: float


@dataclass(slots=True)
class ReleaseItem:
    """One key to give back: ``?release=`` semantics, keeping the value and flags."""

    key: str
    sid: str
    value: bytes
    flags: int


@dataclass(slots=True)
class SendRelease:
    """Release ``items`` (at most 64, one transaction); answer :class:`ReleaseAnswered`."""

    actor: Actor
    step: int
    items: tuple[ReleaseItem, ...]
    timeout: float


@dataclass(slots=True)
class Destroy:
    """Destroy session ``sid``; answer :class:`DestroyAnswered`."""

    actor: Actor
    step: int
    sid: str
    timeout: float


@dataclass(slots=True)
class Sleep:
    """Wait until ``until`` (inf: until the next command), then answer :class:`Woke`."""

    actor: Actor
    step: int
    until: float


@dataclass(slots=True)
class Finish:
    """The call ``actor`` is over: return ``result``, or raise it if it is an exception."""

    actor: int
    result: Any


@dataclass(slots=True)
class Renew:
    """Renew ``sid``, retrying transient failures until ``until`` (the lease deadline);
    answer :class:`RenewAnswered`."""

    sid: str
    until: float
    actor: str = RENEWER


@dataclass(slots=True)
class Watch:
    """Watch slot ``slot``: follow ``target`` from ``index`` (None: idle).

    A newer ``gen`` supersedes an older one: the front-end cuts short a query of an older
    generation at once (the interrupt is sticky: a command that arrives before the query
    starts is seen before it is sent). ``not_before`` spaces out wake-ups so that a burst
    of writes costs one re-read.
    """

    slot: int
    gen: int
    target: WatchTarget | None
    index: int
    wait: float
    not_before: float

    @property
    def actor(self) -> tuple[str, int]:
        """The slot's actor."""
        return ("watch", self.slot)


@dataclass(slots=True)
class Confirm:
    """Read ``keys`` with ``consistent`` and renew ``sid``: is the loss real? Answer
    :class:`Confirmed`."""

    slot: int
    gen: int
    sid: str
    keys: tuple[str, ...]
    timeout: float

    @property
    def actor(self) -> tuple[str, int]:
        """The slot's actor."""
        return ("watch", self.slot)


@dataclass(slots=True)
class Interrupt:
    """Cut short whatever request ``actor`` is waiting in (it answers with a failure)."""

    actor: Actor


@dataclass(slots=True)
class Stop:
    """The background actor ``actor`` ends."""

    actor: Actor


@dataclass(slots=True)
class Notify:
    """Run the application's callbacks for ``event`` (on the callback runner).

    Attributes:
        event: A :class:`~locksmith.LossEvent` or :class:`~locksmith.LockDelayEvent`.
        lock_id: The lock whose own callbacks also run (besides the manager's).
    """

    event: LossEvent | LockDelayEvent
    lock_id: int


@dataclass(slots=True)
class LeaseEnded:
    """``lease`` ended (``reason`` None: released). The front-end signals it at once to
    whatever waits on the lease (a recipe cancelling its work), never through user code."""

    lease: Lease
    reason: LossReason | None


@dataclass(slots=True)
class Log:
    """Emit one structured log event (each event is emitted once, by the front-end)."""

    level: int
    event: str
    fields: dict[str, Any]


#: Everything the machine returns.
Command = (
    CreateSession
    | AdoptSession
    | ReadKey
    | ReadHolder
    | SendAcquire
    | SendAcquireMany
    | SendRelease
    | Destroy
    | Sleep
    | Finish
    | Renew
    | Watch
    | Confirm
    | Interrupt
    | Stop
    | Notify
    | LeaseEnded
    | Log
)
