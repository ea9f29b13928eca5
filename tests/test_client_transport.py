"""The transport never reuses a connection in an unknown state (real Consul agent).

A request cut short by any exception (Ctrl-C included) must not leave its connection behind
mid-request, and a forked child must neither use nor shut down the connections it inherited:
they are its parent's. These tests look at the transport's connection objects on purpose: which
socket carries a request is what they are about.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from support import wait_for

from locksmith import Consul

#: A blocking query's wait: far longer than anything these tests do while it blocks.
LONG_WAIT = "120s"


def _conn_of(consul: Consul) -> http.client.HTTPConnection | None:
    """The calling thread's keep-alive connection of ``consul`` (None when it has none)."""
    return consul._transport._local.conn


def _fork_child(body: Callable[[], bool]) -> int:
    """Fork; the child runs ``body`` and exits 0 if it returns True (1: False, 2: raised).

    Returns:
        The child's exit code (in the parent).
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a process with threads may deadlock the child;
        # this child only does HTTP on its own connection and leaves with os._exit.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage does not follow it
        code = 2
        try:
            code = 0 if body() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


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


def test_forked_child_opens_its_own_connection(consul: Consul) -> None:
    leader = consul.leader()
    conn = _conn_of(consul)
    assert conn is not None
    assert conn.sock is not None
    local = conn.sock.getsockname()

    def child() -> bool:
        inherited_closed = conn.sock is None and consul.open_connections == 0
        answered = consul.leader() == leader
        own = _conn_of(consul)
        fresh = own is not None and own is not conn and own.sock is not None
        fresh = fresh and own is not None and own.sock.getsockname() != local
        consul.close()  # closes only the child's own connection
        return inherited_closed and answered and fresh

    assert _fork_child(child) == 0
    # The parent's connection is the same object on the same socket, and still works.
    assert _conn_of(consul) is conn
    assert conn.sock is not None
    assert conn.sock.getsockname() == local
    assert consul.leader() == leader
    assert _conn_of(consul) is conn
    assert consul.open_connections == 1


def test_fork_leaves_a_parent_threads_blocking_query_alone(consul: Consul, key: str) -> None:
    """The child closes its copy of an in-flight connection without shutting it down."""
    consul.kv.put(key, b"before")
    index = consul.kv.get_with_meta(key).meta.index
    result: list[bytes | None] = []

    def watch() -> None:
        got = consul.kv.get_with_meta(key, index=index, wait=LONG_WAIT).value
        result.append(got.value if got is not None else None)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    transport = consul._transport
    ident = watcher.ident
    wait_for(lambda: ident in transport._in_flight, what="the blocking query to be in flight")

    def child() -> bool:
        ok = consul.open_connections == 0 and consul.leader() != ""
        consul.close()
        return ok

    assert _fork_child(child) == 0
    assert watcher.is_alive()  # still blocked in its query
    consul.kv.put(key, b"after")
    watcher.join(60)
    assert result == [b"after"]  # woken by the change, on its untouched connection
