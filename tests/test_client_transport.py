"""The transport never reuses a connection in an unknown state (real Consul agent).

A request cut short by any exception (Ctrl-C included) must not leave its connection behind
mid-request. These tests look at the transport's connection objects on purpose: which socket
carries a request is what they are about.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
from types import FrameType
from typing import Any

import pytest

from locksmith import Consul

#: A blocking query's wait: far longer than anything these tests do while it blocks.
LONG_WAIT = "120s"


def _conn_of(consul: Consul) -> http.client.HTTPConnection | None:
    """The calling thread's keep-alive connection of ``consul`` (None when it has none)."""
    return consul._transport._local.conn


def test_ctrl_c_during_a_request_drops_its_connection(consul: Consul, key: str) -> None:
    """KeyboardInterrupt in a blocking query: the next request opens a fresh connection.

    Before the fix the interrupted connection stayed in the pool mid-request, and the next
    request on it failed with a false "cannot reach Consul ... Request-sent".
    """
    assert threading.current_thread() is threading.main_thread()  # signals go to it
    consul.kv.put(key, b"v")
    index = consul.kv.get_with_meta(key).meta.index
    assert consul.open_connections == 1

    def ctrl_c(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, ctrl_c)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, 0.3)  # pytest-timeout's alarm, if any
    armed = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            consul.kv.get_with_meta(key, index=index, wait=LONG_WAIT)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - armed)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
    assert consul.open_connections == 0  # closed and forgotten
    assert _conn_of(consul) is None
    entry = consul.kv.get(key)
    assert entry is not None
    assert entry.value == b"v"
    assert consul.open_connections == 1
