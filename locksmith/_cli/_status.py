"""The waiting status of ``run`` and ``elect``: what keeps this process from the lock.

Shown on stderr only after :data:`SHOW_AFTER` seconds of waiting, and only while something
really blocks: a holder (its session name and node, and since when it was seen), all slots of
a semaphore taken, or a lock-delay window whose end is known. An uncontended run, or one that
gets the lock within the first second, prints nothing: cron mails stay empty.

On a terminal with the console log format, one line is rewritten in place every second and
cleared when waiting ends. Otherwise one line per change: plain text (``locksmith: waiting
...``) or, with ``--log-format json``, a ``cli.waiting`` JSON event (see ``docs/cli.md``).

The status reads Consul on its own thread with its own client (blocking queries on the lock
key, or the semaphore's or fair queue's prefix), so it never holds up the acquisition;
lock-delay windows come from the manager's ``on_lock_delay`` events (Consul does not expose
them). For a fair queue, the holders shown are the entries that hold it now.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from locksmith._cli._output import PROG, semaphore_state
from locksmith._client import Consul, next_index
from locksmith._exceptions import LocksmithError
from locksmith._queue import decode_queue

__all__ = ["HOLDER_FIELDS", "SHOW_AFTER", "STATUS_EVENT", "STATUS_FIELDS", "WaitingStatus"]

#: Seconds of waiting before anything is shown.
SHOW_AFTER = 1.0
#: The structlog event name of the JSON status (``--log-format json``).
STATUS_EVENT = "cli.waiting"
#: Its fields (besides structlog's ``event``, ``level`` and ``timestamp``), in docs/cli.md.
STATUS_FIELDS = (
    "key",
    "state",
    "waited",
    "holders",
    "limit",
    "lock_delay_ends_in",
    "previous_session",
)
#: The fields of each of its ``holders``.
HOLDER_FIELDS = ("session", "name", "node", "held_for")
#: Seconds between checks while nothing blocks visibly (the acquire is about to succeed, or
#: retries after an error): short, so that a lock-delay window reported meanwhile shows soon.
_RECHECK = 0.25


@dataclass(frozen=True)
class _Holder:
    session: str
    name: str | None
    node: str | None
    held_for: float


@dataclass(frozen=True)
class _Blocked:
    """What blocks the acquisition right now."""

    state: str  # "held" or "lock_delay"
    holders: tuple[_Holder, ...] = ()
    delay_ends_in: float | None = None
    previous_session: str | None = None

    def change_key(self) -> tuple[object, ...]:
        """Equal for two states a pipe should not print twice."""
        return (self.state, tuple(h.session for h in self.holders), self.previous_session)


class WaitingStatus:
    """Shows what this process waits for, while it waits for a lock.

    Args:
        consul: A client for the status's own reads (closed when the status ends if
            ``owns_client``).
        key: The lock key (``PREFIX/.lock`` for ``run``).
        semaphore_prefix: For a semaphore, its prefix (holders are read from it).
        limit: For a semaphore, its limit.
        fair_prefix: For a fair lock, its prefix (the queue's holders are read from it).
        is_done: Whether waiting is over (the lock is held): the status stops showing.
        own: This process's session IDs, never shown as holders.
        stream: Where lines go (stderr).
        emit_json: With ``--log-format json``, called as ``emit_json(STATUS_EVENT, **fields)``
            instead of writing text.
        show_after: Seconds of waiting before anything is shown.
    """

    def __init__(
        self,
        consul: Consul,
        key: str,
        *,
        semaphore_prefix: str | None = None,
        limit: int = 1,
        fair_prefix: str | None = None,
        is_done: Callable[[], bool],
        own: Callable[[], set[str]],
        stream: IO[str],
        emit_json: Callable[..., object] | None = None,
        show_after: float = SHOW_AFTER,
        owns_client: bool = False,
    ) -> None:
        self._consul = consul
        self._owns_client = owns_client
        self._key = key
        self._sem_prefix = semaphore_prefix
        self._limit = limit
        self._fair_prefix = fair_prefix
        self._is_done = is_done
        self._own = own
        self._stream = stream
        self._emit_json = emit_json
        self._show_after = show_after
        self._tty = emit_json is None and _isatty(stream)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._out = threading.Lock()  # held while writing; stop() takes it to end output
        self._started = time.monotonic()
        self._first_seen: dict[str, float] = {}
        self._names: dict[str, tuple[str | None, str | None]] = {}
        self._delay: tuple[float, str | None] | None = None  # (monotonic end, previous)
        self._shown_line = False
        self._last: tuple[object, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="locksmith-cli-status", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> WaitingStatus:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop showing: no line is written after this returns; a terminal line is cleared."""
        self._stop.set()
        self._wake.set()
        with self._out:
            self._clear()

    def lock_delay(self, event: Any) -> None:
        """An ``on_lock_delay`` callback: remember a window on our key whose end is known."""
        if event.key != self._key or not event.known:
            return
        self._delay = (time.monotonic() + float(event.wait), event.previous_session)
        self._wake.set()

    # -- reading -------------------------------------------------------------------------
    def _read(self, index: int, wait: float) -> tuple[tuple[str, ...], int]:
        """The sessions holding the lock (all slots of a semaphore, or none), and the index."""
        kv = self._consul.kv
        idx, w = (index, wait) if index else (None, None)
        if self._fair_prefix is not None:
            queue = kv.list_with_meta(f"{self._fair_prefix}/", index=idx, wait=w)
            view = decode_queue(queue.value, self._fair_prefix)
            return tuple(e.session for e in view.holders() if e.session), queue.meta.index
        if self._sem_prefix is None:
            res = kv.get_with_meta(self._key, index=idx, wait=w)
            entry = res.value
            return ((entry.session,) if entry and entry.session else ()), res.meta.index
        lst = kv.list_with_meta(f"{self._sem_prefix}/", index=idx, wait=w)
        lock_entry = next((e for e in lst.value if e.key == self._key), None)
        listed = semaphore_state(lock_entry)[1] if lock_entry is not None else []
        alive = {e.session for e in lst.value if e.session}
        holders = tuple(h for h in listed if h in alive)
        return (holders if len(holders) >= self._limit else ()), lst.meta.index

    def _describe(self, sid: str, now: float) -> _Holder:
        if sid not in self._names:
            try:
                s = self._consul.sessions.info(sid)
            except LocksmithError:
                s = None
            self._names[sid] = (s.name or None, s.node) if s is not None else (None, None)
        name, node = self._names[sid]
        return _Holder(sid, name, node, now - self._first_seen.get(sid, self._started))

    def _blocked(self, holders: tuple[str, ...], now: float) -> _Blocked | None:
        if holders:
            return _Blocked("held", tuple(self._describe(s, now) for s in holders))
        delay = self._delay
        if delay is not None and delay[0] > now:
            return _Blocked("lock_delay", delay_ends_in=delay[0] - now, previous_session=delay[1])
        return None

    # -- the thread ----------------------------------------------------------------------
    def _done(self) -> bool:
        return self._stop.is_set() or self._is_done()

    def _run(self) -> None:
        try:
            self._note_first_holders()
            if self._stop.wait(max(0.0, self._started + self._show_after - time.monotonic())):
                return
            self._loop()
        finally:
            if self._owns_client:
                self._consul.close()

    def _note_first_holders(self) -> None:
        """Read once at the start, silently: a holder seen then has blocked us since."""
        try:
            holders, _ = self._read(0, 0.0)
        except LocksmithError:
            return
        for sid in holders:
            self._first_seen.setdefault(sid, self._started)

    def _loop(self) -> None:
        index = 0
        while not self._done():
            try:
                holders, new_index = self._read(index, 1.0 if self._tty else 10.0)
            except LocksmithError:
                index = 0
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            own = self._own()
            holders = tuple(h for h in holders if h not in own)
            now = time.monotonic()
            for sid in holders:
                self._first_seen.setdefault(sid, now)
            if self._done():
                return
            blocked = self._blocked(holders, now)
            self._show(blocked, now)
            if blocked is not None and blocked.state == "held":
                index = next_index(index, new_index)  # block until the holders change
                continue
            # Nothing Consul would wake us for: a window's end, or a lock about to be ours.
            index = 0
            pause = _RECHECK if blocked is None else min(1.0, blocked.delay_ends_in or 1.0)
            self._wake.wait(pause)
            self._wake.clear()

    # -- output --------------------------------------------------------------------------
    def _show(self, blocked: _Blocked | None, now: float) -> None:
        with self._out:
            if self._done():
                return
            if blocked is None:
                self._clear()
                self._last = None
                return
            changed = blocked.change_key() != self._last
            self._last = blocked.change_key()
            waited = now - self._started
            if self._emit_json is not None:
                if changed:
                    self._emit_json(STATUS_EVENT, **self._fields(blocked, waited))
                return
            line = f"waiting {_seconds_text(waited)} for {self._key}: {_reason(blocked)}"
            with contextlib.suppress(ValueError, OSError):
                if self._tty:
                    self._stream.write("\r\x1b[K" + line[:200])
                    self._stream.flush()
                    self._shown_line = True
                elif changed:
                    self._stream.write(f"{PROG}: {line}\n")
                    self._stream.flush()

    def _fields(self, blocked: _Blocked, waited: float) -> dict[str, Any]:
        ends_in = blocked.delay_ends_in
        return {
            "key": self._key,
            "state": blocked.state,
            "waited": round(waited, 3),
            "holders": [
                {
                    "session": h.session,
                    "name": h.name,
                    "node": h.node,
                    "held_for": round(h.held_for, 3),
                }
                for h in blocked.holders
            ],
            "limit": self._limit if self._sem_prefix is not None else None,
            "lock_delay_ends_in": round(ends_in, 3) if ends_in is not None else None,
            "previous_session": blocked.previous_session,
        }

    def _clear(self) -> None:
        if self._tty and self._shown_line:
            with contextlib.suppress(ValueError, OSError):
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._shown_line = False


def _reason(blocked: _Blocked) -> str:
    if blocked.state == "lock_delay":
        ends = _seconds_text(round(blocked.delay_ends_in or 0.0))
        why = (
            f" (its holder's session {blocked.previous_session[:8]} ended)"
            if blocked.previous_session
            else ""
        )
        return f"free, but in a lock-delay window for {ends} more{why}"
    who = "; ".join(
        f"{h.name or '?'!r} on node {h.node or '?'} (session {h.session[:8]}) for "
        f">={_seconds_text(h.held_for)}"
        for h in blocked.holders
    )
    return f"held by {who}"


def _seconds_text(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
