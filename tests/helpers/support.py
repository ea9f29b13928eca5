"""Small helpers for tests against a real agent: polling, recorders, agent API calls."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Recorder", "agent_call", "unique", "wait_for", "wait_node_registered"]

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A key or name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class Recorder(Generic[T]):
    """A callback that records the events it receives (thread-safe)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.events: list[T] = []
        self.threads: list[str] = []

    def __call__(self, event: T) -> None:
        with self._cv:
            self.events.append(event)
            self.threads.append(threading.current_thread().name)
            self._cv.notify_all()

    def wait(self, count: int = 1, timeout: float = 20.0) -> bool:
        """Wait until at least ``count`` events arrived."""
        with self._cv:
            return self._cv.wait_for(lambda: len(self.events) >= count, timeout)


def agent_call(addr: str, method: str, path: str, body: Any = None) -> tuple[int, str]:
    """Call the agent's HTTP API directly (for endpoints locksmith does not wrap)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_node_registered(addr: str, timeout: float = 30.0) -> None:
    """Wait until the agent's node is in the catalog (sessions need it: else "Missing node
    registration"), which happens a moment after the agent first reports a leader."""

    def registered() -> bool:
        status, text = agent_call(addr, "GET", "/v1/agent/self")
        if status != 200:
            return False
        node = json.loads(text)["Config"]["NodeName"]
        status, text = agent_call(addr, "GET", f"/v1/catalog/node/{node}")
        return status == 200 and json.loads(text) is not None

    if not wait_for(registered, timeout=timeout, interval=0.1):
        raise TimeoutError(f"the agent at {addr} did not register its node in {timeout}s")
