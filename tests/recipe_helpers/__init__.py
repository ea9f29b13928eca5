"""Shared helpers of the recipe tests: helper processes, bounded waits, agent calls."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from locksmith import Consul

HERE = Path(__file__).parent
PROC = str(HERE / "proc.py")
CHILD = str(HERE / "child.py")
REPO = str(HERE.parent.parent)

T = TypeVar("T")


def wait_for(pred: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``pred`` until it returns something truthy; fail the test after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def http(addr: str, method: str, path: str, body: Any = None) -> Any:
    """One call to the agent's HTTP API (for what the client does not cover: checks)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text.strip() else None


def wait_node_ready(addr: str) -> None:
    """Wait until the agent's node and serfHealth are registered (sessions need them)."""
    node = http(addr, "GET", "/v1/agent/self")["Config"]["NodeName"]

    def ready() -> bool:
        checks = http(addr, "GET", f"/v1/health/node/{node}")
        return any(c["CheckID"] == "serfHealth" and c["Status"] == "passing" for c in checks)

    wait_for(ready, 60, "the agent's node registration")


def fresh_prefix() -> str:
    """A unique key prefix for one test."""
    return f"locksmith-recipes/{uuid.uuid4().hex[:10]}"


def consul_client(addr: str) -> Iterator[Consul]:
    """A client for a fixture (``yield from``)."""
    with Consul(addr) as client:
        yield client


class Proc:
    """A helper process whose JSON event lines (stdout) are collected by a thread."""

    def __init__(self, argv: list[str], *, group: bool = False) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=group,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.group = group
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    @classmethod
    def python(cls, script: str, *args: str, group: bool = False) -> Proc:
        """Run one of the helper scripts with this interpreter."""
        return cls([sys.executable, script, *args], group=group)

    @property
    def pid(self) -> int:
        """The process ID."""
        return self.popen.pid

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the pipe was closed by stop()
            self._read_events()
        with self._cv:
            self._cv.notify_all()

    def _read_events(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                with self._cv:
                    self.events.append(event)
                    self._cv.notify_all()

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        try:
            for raw in self.popen.stderr:
                self.stderr.append(raw.decode(errors="replace"))
                del self.stderr[:-200]
        except (OSError, ValueError):  # the pipe was closed by stop()
            pass

    def wait_event(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """The first event matching ``pred`` (waiting up to ``timeout`` seconds)."""
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = end - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    pytest.fail(
                        f"no event {what} within {timeout}s from pid {self.pid} "
                        f"(rc={self.popen.poll()}); events={self.events}; "
                        f"stderr tail={''.join(self.stderr[-20:])}"
                    )
                self._cv.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (if it still runs)."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self) -> None:
        """Kill the process (and its group if it leads one) and reap it."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._reader.join(5)
        self._err_reader.join(5)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a child wrote (empty if the file does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def max_concurrent(lines: list[dict[str, Any]]) -> int:
    """The most holders between ``start`` and ``end`` at once, in file (= time) order."""
    running = peak = 0
    for line in lines:
        if line["event"] == "start":
            running += 1
            peak = max(peak, running)
        elif line["event"] == "end":
            running -= 1
    return peak
