"""Cancelling a request: at once while it waits, and before it starts (sticky)."""

from __future__ import annotations

import threading
import time

import pytest

from locksmith import Consul, ConsulUnavailable
from locksmith._cancel import Cancel


def test_cancel_cuts_a_blocking_query_short(consul: Consul, key: str) -> None:
    consul.kv.put(key, b"v")
    index = consul.kv.get_with_meta(key).meta.index
    cancel = Cancel()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(ConsulUnavailable, match="cancelled"):
        consul.kv.get_with_meta(key, index=index, wait="30s", cancel=cancel)
    assert time.monotonic() - started < 20  # not the 30 s wait
    assert consul.kv.get(key) is not None  # the next request works


def test_a_cancel_before_the_request_is_not_lost(consul: Consul, key: str) -> None:
    consul.kv.put(key, b"v")
    index = consul.kv.get_with_meta(key).meta.index
    cancel = Cancel()
    cancel.cancel()  # before the request: it must not be sent, let alone wait 30 s
    started = time.monotonic()
    with pytest.raises(ConsulUnavailable, match="cancelled"):
        consul.kv.get_with_meta(key, index=index, wait="30s", cancel=cancel)
    assert time.monotonic() - started < 20
    assert cancel.cancelled and cancel.wait(0)


def test_a_cancel_after_the_answer_touches_nothing(consul: Consul, key: str) -> None:
    consul.kv.put(key, b"v")
    cancel = Cancel()
    assert consul.kv.get(key, cancel=cancel) is not None
    cancel.cancel()  # the request is over: the connection stays usable
    assert consul.open_connections == 1
    assert consul.kv.get(key) is not None
    assert consul.open_connections == 1
