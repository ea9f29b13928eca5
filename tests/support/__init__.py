"""Helpers shared by the tests: unique names, bounded polling, callback recorders, agent HTTP
calls and child processes.

The scripts next to this module run as child processes:

* ``lock_child.py``: a process holding locksmith locks (the manager's multi-process tests);
* ``proc.py``: an election candidate, registration holder or ``run_exclusive`` runner;
* ``child.py``: the command run under a lock, logging its start, signals and end.

The fixtures built on these (``consul``, ``prefix``, ``key``, ``new_session``,
``make_manager``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

import pytest

from locksmith import LockManager

__all__ = [
    "CHILD",
    "LOCK_CHILD",
    "PROC",
    "REPO",
    "MakeManager",
    "Proc",
    "Recorder",
    "agent_call",
    "child_env",
    "ctrl_c_after",
    "in_thread",
    "max_concurrent",
    "read_lines",
    "unique",
    "wait_for",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROC = str(HERE / "proc.py")
CHILD = str(HERE / "child.py")
LOCK_CHILD = str(HERE / "lock_child.py")

T = TypeVar("T")

#: The ``make_manager`` fixture: ``make_manager(addr=None, timeout=5.0, **manager_kwargs)``.
MakeManager = Callable[..., LockManager]


def unique(name: str) -> str:
    """``name`` with a random suffix: a key, prefix or session name no other test uses."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def wait_for(
    pred: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "the condition",
    interval: float = 0.05,
) -> T:
    """Poll ``pred`` until it returns something truthy and return that; fail the test after
    ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
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


def in_thread(fn: Callable[[], T]) -> tuple[threading.Thread, list[T | BaseException]]:
    """Run ``fn`` in a started thread; its return value or exception lands in the list."""
    result: list[T | BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def agent_call(
    addr: str, method: str, path: str, body: Any = None, *, check: bool = True
) -> tuple[int, str]:
    """Call the agent's HTTP API directly (for what the client does not wrap: checks, services).

    Args:
        addr: The agent's ``host:port``.
        method: HTTP method.
        path: Path with query, e.g. ``/v1/agent/check/pass/web``.
        body: Sent as JSON unless None.
        check: Fail the test unless the status is 2xx.

    Returns:
        The status and the body's text.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    if check and not 200 <= status < 300:
        pytest.fail(f"{method} {path}: {status} {text}")
    return status, text


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one's, locksmith importable, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Proc:
    """A helper process whose JSON event lines (stdout) are collected by a thread."""

    def __init__(self, argv: list[str], *, group: bool = False) -> None:
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=child_env(),
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


@contextlib.contextmanager
def ctrl_c_after(seconds: float) -> Iterator[None]:
    """Raise KeyboardInterrupt in the main thread after ``seconds`` (as Ctrl-C would).

    Keeps pytest-timeout's own alarm, if one is set, and puts it back afterwards.
    """

    def ctrl_c(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, ctrl_c)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    armed = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - armed)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
