"""The fair queue without I/O: reading a prefix, deciding who holds and whom to watch.

A fair queue is locksmith's own layout (Consul has no equivalent recipe). Under a prefix ``P``:

* ``P/.lock`` is the queue's **marker**, with flags :data:`FAIR_QUEUE_FLAGS` and an empty
  value (``closing`` while a cleanup deletes it). Its flags make Consul's lock and semaphore
  recipes, and locksmith's, refuse ``P``; the queue refuses ``P`` when ``.lock`` or any other
  key directly under ``P/`` carries other flags.
* ``P/<session>-<id>`` is one **entry** per contender, acquired (the ``lock`` verb) by the
  contender's ``Behavior=delete`` session, so that it vanishes with the session. Its flags say
  its kind: exclusive (``+1``), shared (``+2``), or an exclusive entry whose holder released
  it (``+3``, *released*). The value is the contender's.

Entries are served in the order of their ``CreateIndex`` (the Raft index of the write that
created them; ties, which one transaction could make, by key). An exclusive entry holds when
no live entry is ahead of it; a shared one when no live exclusive entry is ahead of it. A
waiter watches one entry only: an exclusive waiter the live entry just ahead of it, a shared
waiter the nearest live exclusive entry ahead of it.

Why the released mark is enough for the next waiter (no re-read of the queue): only a holder
marks its entry released, and an exclusive holder had no live entry ahead of it. Entries
ahead of an entry never come back to life (keys are never reused, a released or deleted entry
stays so, and a new entry gets a higher CreateIndex), so once a watched exclusive entry shows
released, nothing live is ahead of the watcher but what was behind that entry. Any other
change (deleted: a crash, a waiter that gave up, an outside delete) means a re-read.

Fencing: a holder's token is its entry's CreateIndex. Holders of exclusive entries follow
each other in CreateIndex order (each one held only once every entry before it was gone,
and entries before it never return), so the token strictly increases from one holder to the
next, across crashes and outside deletes (a snapshot restore, which can move Raft indexes
back, is the exception it shares with every Consul lock).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from locksmith._compat import (
    FAIR_EXCLUSIVE_FLAGS,
    FAIR_QUEUE_FLAGS,
    FAIR_RELEASED_FLAGS,
    FAIR_SHARED_FLAGS,
    LOCK_KEY,
)
from locksmith._exceptions import LockConflict
from locksmith._models import KVEntry

__all__ = [
    "CLOSING",
    "Advance",
    "Decision",
    "Gone",
    "Hold",
    "Marker",
    "QueueEntry",
    "QueueView",
    "Relist",
    "Rewatch",
    "Wait",
    "WatchOutcome",
    "decide",
    "decode_queue",
    "enqueue_ops",
    "entry_flags",
    "marker_ops",
    "release_ops",
    "seen_watched",
]

#: The marker's value while a cleanup deletes it (an enqueuer re-opens it).
CLOSING = b"closing"


class Marker(enum.Enum):
    """The state of ``P/.lock``, as read."""

    MISSING = "missing"
    OPEN = "open"
    CLOSING = "closing"


@dataclass(frozen=True)
class QueueEntry:
    """One entry of the queue, as read.

    Attributes:
        key: The entry's key.
        session: The session holding it (None: none, a dead entry).
        shared: Whether it is a shared (read) entry.
        released: Whether its holder released it (an exclusive entry only).
        create_index: Its CreateIndex: its place in the queue and its fencing token.
        modify_index: Its ModifyIndex (what a blocking query on it waits past).
    """

    key: str
    session: str | None
    shared: bool
    released: bool
    create_index: int
    modify_index: int

    @property
    def live(self) -> bool:
        """Whether it waits or holds (it has a session and was not released)."""
        return self.session is not None and not self.released

    @property
    def order(self) -> tuple[int, str]:
        """Its place in the queue."""
        return (self.create_index, self.key)


@dataclass(frozen=True)
class QueueView:
    """A prefix's queue at one instant.

    Attributes:
        prefix: The prefix (without a trailing ``/``).
        marker: The state of ``P/.lock``.
        marker_index: ``P/.lock``'s ModifyIndex (0 when missing).
        entries: Every entry, live or dead, in queue order.
    """

    prefix: str
    marker: Marker
    marker_index: int
    entries: tuple[QueueEntry, ...]

    def find(self, key: str) -> QueueEntry | None:
        """The entry ``key``, or None."""
        return next((e for e in self.entries if e.key == key), None)

    def live(self) -> tuple[QueueEntry, ...]:
        """The live entries (waiting or holding), in queue order."""
        return tuple(e for e in self.entries if e.live)

    def dead(self) -> tuple[QueueEntry, ...]:
        """Released or sessionless entries: nobody needs them, anyone may delete them."""
        return tuple(e for e in self.entries if not e.live)

    def holders(self) -> tuple[QueueEntry, ...]:
        """The live entries that hold the lock now: the first one if it is exclusive, else
        the shared ones before the first exclusive one."""
        out: list[QueueEntry] = []
        for e in self.live():
            if not e.shared:
                return (e,) if not out else tuple(out)
            out.append(e)
        return tuple(out)

    def without_through(self, key: str) -> QueueView:
        """The view once exclusive entry ``key`` was seen released: it and every entry
        ahead of it are gone (an exclusive holder had nothing live ahead of it)."""
        target = self.find(key)
        if target is None:
            return self
        rest = tuple(e for e in self.entries if e.order > target.order)
        return QueueView(self.prefix, self.marker, self.marker_index, rest)


@dataclass(frozen=True)
class Hold:
    """The entry holds the lock."""


@dataclass(frozen=True)
class Wait:
    """The entry waits: watch ``entry`` (a blocking query on its key past its ModifyIndex)."""

    entry: QueueEntry


@dataclass(frozen=True)
class Gone:
    """The entry is not live in the queue (deleted, its session ended): queue again."""


#: What :func:`decide` says.
Decision = Hold | Wait | Gone


@dataclass(frozen=True)
class Advance:
    """The watched exclusive entry was released: decide again on ``view``."""

    view: QueueView


@dataclass(frozen=True)
class Relist:
    """The watched entry vanished or died: read the queue again."""


@dataclass(frozen=True)
class Rewatch:
    """The watched entry changed but still waits or holds: watch it past ``index``."""

    entry: QueueEntry


#: What :func:`seen_watched` says.
WatchOutcome = Advance | Relist | Rewatch


def entry_flags(shared: bool) -> int:
    """The KV flags of a live entry of that kind."""
    return FAIR_SHARED_FLAGS if shared else FAIR_EXCLUSIVE_FLAGS


def _entry(e: KVEntry) -> QueueEntry:
    return QueueEntry(
        key=e.key,
        session=e.session,
        shared=e.flags == FAIR_SHARED_FLAGS,
        released=e.flags == FAIR_RELEASED_FLAGS,
        create_index=e.create_index,
        modify_index=e.modify_index,
    )


def _conflict(key: str, flags: int, prefix: str) -> LockConflict:
    return LockConflict(
        f"key {key!r} has flags {flags:#x}, a fair queue uses {FAIR_QUEUE_FLAGS:#x}..: "
        f"{prefix!r} belongs to another kind of lock"
    )


def decode_queue(entries: Iterable[KVEntry], prefix: str) -> QueueView:
    """Read the queue under ``prefix`` from every key under ``prefix/`` (pure).

    Keys deeper than one segment under the prefix are not part of the layout and are
    ignored.

    Raises:
        LockConflict: ``P/.lock`` or a key directly under ``P/`` carries flags of another
            kind of lock (Consul's lock or semaphore, a plain lock, plain data).
    """
    base = prefix.rstrip("/") + "/"
    marker, marker_index = Marker.MISSING, 0
    found: list[QueueEntry] = []
    for e in entries:
        if not e.key.startswith(base):
            continue
        name = e.key[len(base) :]
        if not name or "/" in name:
            continue
        if name == LOCK_KEY:
            if e.flags != FAIR_QUEUE_FLAGS:
                raise _conflict(e.key, e.flags, prefix)
            marker = Marker.CLOSING if e.value == CLOSING else Marker.OPEN
            marker_index = e.modify_index
        elif e.flags in (FAIR_EXCLUSIVE_FLAGS, FAIR_SHARED_FLAGS, FAIR_RELEASED_FLAGS):
            found.append(_entry(e))
        else:
            raise _conflict(e.key, e.flags, prefix)
    found.sort(key=lambda q: q.order)
    return QueueView(prefix.rstrip("/"), marker, marker_index, tuple(found))


def decide(view: QueueView, key: str, shared: bool) -> Decision:
    """Whether entry ``key`` holds, whom it watches, or that it is gone (pure).

    An exclusive entry holds when no live entry is ahead of it, and otherwise watches the
    live entry just ahead. A shared entry holds when no live exclusive entry is ahead of it
    (a writer that waits keeps later readers out: no writer starves), and otherwise watches
    the nearest live exclusive entry ahead (when that one is released, nothing that blocks
    the reader is left).
    """
    mine = view.find(key)
    if mine is None or not mine.live or mine.shared != shared:
        return Gone()
    ahead = [e for e in view.live() if e.order < mine.order]
    if shared:
        ahead = [e for e in ahead if not e.shared]
    return Wait(ahead[-1]) if ahead else Hold()


def seen_watched(view: QueueView, watched: QueueEntry, seen: KVEntry | None) -> WatchOutcome:
    """What the answer of the blocking query on ``watched`` means (pure).

    Args:
        view: The view the watch was chosen from.
        watched: The entry watched.
        seen: The key as the query returned it (None: deleted).
    """
    if seen is None or seen.session is None or seen.create_index != watched.create_index:
        return Relist()
    if seen.flags == FAIR_RELEASED_FLAGS and not watched.shared:
        return Advance(view.without_through(watched.key))
    if seen.flags != entry_flags(watched.shared):
        return Relist()
    return Rewatch(_entry(seen))


# -- transactions ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def enqueue_ops(  # noqa: PLR0917 - one transaction, every part of it named
    prefix: str, key: str, value: bytes, session: str, shared: bool, drop: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The one transaction that joins the queue and reads it.

    It creates the entry with the ``lock`` verb (retrying it is harmless: an identical
    re-lock by the same session changes nothing), deletes ``drop`` (dead entries this
    contender knows of; deleting a missing key succeeds), and reads every key under the
    prefix, the new entry included, at the same index.
    """
    ops: list[dict[str, Any]] = [
        {
            "KV": {
                "Verb": "lock",
                "Key": key,
                "Value": _b64(value),
                "Flags": entry_flags(shared),
                "Session": session,
            }
        }
    ]
    ops += [{"KV": {"Verb": "delete", "Key": k}} for k in drop if k != key]
    ops.append({"KV": {"Verb": "get-tree", "Key": prefix.rstrip("/") + "/"}})
    return ops


def release_ops(
    key: str, value: bytes, session: str, shared: bool, drop: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The one transaction that releases a held entry.

    An exclusive entry is marked released (the waiter behind it learns from that alone
    that the lock is its own); a shared one is deleted (whoever waits behind it reads the
    queue again anyway). Both only if the entry still carries ``session``; ``drop`` (dead
    entries) goes in the same transaction.
    """
    ops: list[dict[str, Any]] = [{"KV": {"Verb": "check-session", "Key": key, "Session": session}}]
    if shared:
        ops.append({"KV": {"Verb": "delete", "Key": key}})
    else:
        ops.append(
            {
                "KV": {
                    "Verb": "lock",
                    "Key": key,
                    "Value": _b64(value),
                    "Flags": FAIR_RELEASED_FLAGS,
                    "Session": session,
                }
            }
        )
    ops += [{"KV": {"Verb": "delete", "Key": k}} for k in drop if k != key]
    return ops


def marker_ops(prefix: str, index: int, value: bytes = b"") -> list[dict[str, Any]]:
    """Check-and-set ``P/.lock`` from ``index`` (0: create it) to ``value`` (open by default,
    :data:`CLOSING` for a cleanup)."""
    key = f"{prefix.rstrip('/')}/{LOCK_KEY}"
    return [
        {
            "KV": {
                "Verb": "cas",
                "Key": key,
                "Index": index,
                "Value": _b64(value),
                "Flags": FAIR_QUEUE_FLAGS,
            }
        }
    ]
