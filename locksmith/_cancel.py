"""Cancellation of blocking work: a signal that is set once and cuts short a request.

A :class:`Cancel` is handed to a request (``cancel=``); cancelling it shuts down the socket
that request waits on, so a blocking query returns at once with
:class:`~locksmith.ConsulUnavailable`. It is sticky: cancelling *before* the request starts
makes the request fail as it starts, so a cancellation can never be lost in the gap between
deciding to send and sending (which a per-thread interrupt could miss).
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["Cancel"]


class Cancel:
    """A one-shot cancellation signal for blocking work (requests, waits)."""

    __slots__ = ("_event", "_mu", "_set", "_socks")

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._set = False
        self._socks: list[socket.socket] = []
        self._event: threading.Event | None = None

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
            event = self._event
        if event is not None:
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
