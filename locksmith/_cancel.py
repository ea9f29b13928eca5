"""Cancellation of blocking work: a signal that is set once and cuts short a request.

A :class:`Cancel` is handed to a blocking call (``lock.acquire(cancel=...)``,
``election.campaign(cancel=...)``, a semaphore's ``acquire``, ``observe``) or to a single
request (``cancel=``). Cancelling it wakes the call at once (it raises
:class:`~locksmith.Cancelled` after giving back whatever it took) and shuts down the socket
a request waits on, so a blocking query returns at once. It is sticky: cancelling *before*
the call or request starts makes it fail as it starts, so a cancellation can never be lost
in the gap between deciding to send and sending (which a per-thread interrupt could miss).

:meth:`Cancel.cancel` may be called from any thread and from a signal handler (SIGTERM):
its lock is reentrant, so a handler that interrupts the main thread inside a
:class:`Cancel` method cannot deadlock.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from locksmith._exceptions import ValidationError

__all__ = ["Cancel", "check_cancel"]


class Cancel:
    """A one-shot cancellation signal for blocking work (requests, waits)."""

    __slots__ = ("_event", "_links", "_mu", "_set", "_socks")

    def __init__(self) -> None:
        self._mu = threading.RLock()
        self._set = False
        self._socks: list[socket.socket] = []
        self._event: threading.Event | None = None
        self._links: list[threading.Event] = []

    def __repr__(self) -> str:
        return f"<Cancel {'set' if self._set else 'clear'}>"

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._set

    def cancel(self) -> None:
        """Set the signal: cut short the requests waiting on it, now and later. Idempotent."""
        with self._mu:
            if self._set:
                return
            self._set = True
            socks, self._socks = self._socks, []
            events = [*self._links, *([self._event] if self._event is not None else [])]
            self._links = []
        for event in events:
            event.set()
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
