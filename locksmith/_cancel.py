"""Cancellation of blocking work: a signal that is set once and cuts short a request.

A :class:`Cancel` is handed to a blocking call (``lock.acquire(cancel=...)``,
``election.campaign(cancel=...)``, a semaphore's ``acquire``, ``observe``) or to a single
request (``cancel=``). Cancelling it wakes the call at once (it raises
:class:`~locksmith.Cancelled` after giving back whatever it took) and shuts down the socket
a request waits on, so a blocking query returns at once. It is sticky: cancelling *before*
the call or request starts makes it fail as it starts, so a cancellation can never be lost
in the gap between deciding to send and sending (which a per-thread interrupt could miss).

:meth:`Cancel.cancel` may be called from any thread and from a signal handler (SIGTERM).
A handler runs on the main thread between two bytecodes, possibly inside the lock of the
very :class:`threading.Event` it would set (a plain lock: that would deadlock). So on the
main thread :meth:`Cancel.cancel` only marks the cancel and hands it to one daemon thread
per process (through a :class:`queue.SimpleQueue`, whose ``put`` is safe in a handler),
which sets the events and shuts the sockets down; elsewhere it does that work itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading

from locksmith._exceptions import ValidationError

__all__ = ["Cancel", "check_cancel"]


class _Waker:
    """The daemon thread that carries out cancels made on the main thread (see above)."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._pid = 0
        self._queue: queue.SimpleQueue[Cancel] = queue.SimpleQueue()

    def start(self) -> None:
        """Start the thread in this process if it does not run (never from a handler)."""
        if self._pid == os.getpid():
            return
        with self._mu:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()  # after a fork: the parent's thread is gone
            thread = threading.Thread(
                target=self._run, args=(self._queue,), name="locksmith-cancel", daemon=True
            )
            thread.start()
            self._pid = os.getpid()

    def hand_over(self, cancel: Cancel) -> bool:
        """Queue ``cancel``'s work for the thread; False if it does not run here."""
        if self._pid != os.getpid():
            return False
        self._queue.put(cancel)
        return True

    def after_fork(self) -> None:
        """In a forked child: the lock may have been held by a thread that is gone."""
        self._mu = threading.Lock()

    @staticmethod
    def _run(work: queue.SimpleQueue[Cancel]) -> None:
        while True:
            cancel = work.get()
            with contextlib.suppress(Exception):  # setting events cannot fail; stay alive
                cancel._wake()


_waker = _Waker()
os.register_at_fork(after_in_child=_waker.after_fork)


class Cancel:
    """A one-shot cancellation signal for blocking work (requests, waits)."""

    __slots__ = ("_chained", "_event", "_links", "_mu", "_set", "_socks")

    def __init__(self) -> None:
        self._mu = threading.RLock()
        self._set = False
        self._socks: list[socket.socket] = []
        self._event: threading.Event | None = None
        self._links: list[threading.Event] = []
        self._chained: list[Cancel] = []
        _waker.start()

    def __repr__(self) -> str:
        return f"<Cancel {'set' if self._set else 'clear'}>"

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._set

    def cancel(self) -> None:
        """Set the signal: cut short the requests waiting on it, now and later. Idempotent.

        Safe in a signal handler: on the main thread, the waiting calls are woken by the
        cancel thread a moment later (:attr:`cancelled` is true at once).
        """
        if self._set:
            return
        self._set = True  # seen at once by every check (the waits re-check it after a clear)
        if threading.current_thread() is threading.main_thread() and _waker.hand_over(self):
            return
        self._wake()

    def _wake(self) -> None:
        """Set the linked events and shut the attached sockets down (once)."""
        with self._mu:
            socks, self._socks = self._socks, []
            events = [*self._links, *([self._event] if self._event is not None else [])]
            self._links = []
            chained, self._chained = self._chained, []
        for event in events:
            event.set()
        for other in chained:
            other.cancel()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds passed; True if cancelled."""
        with self._mu:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    @property
    def event(self) -> threading.Event:
        """A :class:`threading.Event` set when cancelled (for waits that take one)."""
        with self._mu:
            if self._event is None:
                self._event = threading.Event()
                if self._set:
                    self._event.set()
            return self._event

    def link(self, event: threading.Event) -> bool:
        """Have :meth:`cancel` set ``event`` too. False if already cancelled (not linked)."""
        with self._mu:
            if self._set:
                return False
            self._links.append(event)
            return True

    def unlink(self, event: threading.Event) -> None:
        """Forget ``event`` (the call that linked it is over)."""
        with self._mu, contextlib.suppress(ValueError):
            self._links.remove(event)

    def _chain(self, other: Cancel) -> None:
        """Have :meth:`cancel` cancel ``other`` too (at once if this one is set already)."""
        with self._mu:
            if not self._set:
                self._chained.append(other)
                return
        other.cancel()

    def _unchain(self, other: Cancel) -> None:
        """Forget ``other`` (its wait is over)."""
        with self._mu, contextlib.suppress(ValueError):
            self._chained.remove(other)

    def attach(self, sock: socket.socket) -> bool:
        """Have :meth:`cancel` shut ``sock`` down. False if already cancelled (do not send)."""
        with self._mu:
            if self._set:
                return False
            self._socks.append(sock)
            return True

    def detach(self, sock: socket.socket) -> None:
        """The request on ``sock`` is over: a later cancel leaves the socket alone."""
        with self._mu, contextlib.suppress(ValueError):
            self._socks.remove(sock)


def check_cancel(cancel: object) -> Cancel | None:
    """Return ``cancel`` if it is None or a :class:`Cancel`.

    Raises:
        ValidationError: Anything else (a ``threading.Event`` cannot wake a waiting call:
            use a :class:`Cancel`, whose :attr:`Cancel.event` is one).
    """
    if cancel is None or isinstance(cancel, Cancel):
        return cancel
    raise ValidationError(
        "cancel", f"must be a locksmith.Cancel (or None), got {type(cancel).__name__}"
    )
