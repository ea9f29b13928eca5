"""Histories: JSON lines of timestamped events, one file per process.

Every process of a partition run (the orchestrator, each application, each ``consul lock``
child) appends its own events to its own file, one JSON object a line, each with ``t``, the
host's ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide on Linux, and every namespace of
the run is on this one machine: the times of all processes compare exactly), ``proc`` (who
wrote it) and ``ev`` (what happened). Lines are written with one ``write(2)`` on an
``O_APPEND`` descriptor, so a process killed at any instant leaves whole lines behind, and
several processes may share a file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["Event", "History", "HistoryTail", "read_history"]

Event = dict[str, Any]


class History:
    """Appends events to a history file (thread-safe; each event is one ``write``).

    Args:
        path: The file (created; appended to if it exists).
        proc: Written into every event as ``proc``.
    """

    def __init__(self, path: Path | str, proc: str) -> None:
        self.path = Path(path)
        self.proc = proc
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._mu = threading.Lock()

    def record(self, ev: str, /, **fields: Any) -> Event:
        """Append one event; ``t`` defaults to ``time.monotonic()`` now. Returns the event."""
        event: Event = {"t": fields.pop("t", None) or time.monotonic(), "proc": self.proc, "ev": ev}
        event.update(fields)
        line = (json.dumps(event, default=str, separators=(",", ":")) + "\n").encode()
        with self._mu:
            if self._fd is not None:
                os.write(self._fd, line)
        return event

    def close(self) -> None:
        """Close the file (later records are dropped)."""
        with self._mu:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(lines: Iterable[str], source: str) -> Iterator[Event]:
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            # A line cut short by a crash mid-write cannot happen with one write(2) per line,
            # but a disk full can: keep going, and say so.
            yield {"t": 0.0, "proc": source, "ev": "unparseable", "line": n, "text": line[:200]}
            continue
        if isinstance(event, dict):
            yield event


def read_history(paths: Iterable[Path | str]) -> list[Event]:
    """All events of the given files, sorted by ``t`` (stable: a file's order is kept)."""
    events: list[Event] = []
    for path in paths:
        p = Path(path)
        with p.open(encoding="utf-8", errors="replace") as fh:
            events.extend(_parse(fh, p.name))
    events.sort(key=lambda e: float(e.get("t", 0.0)))
    return events


class HistoryTail:
    """Reads what has been appended to some history files since the last call."""

    def __init__(self, paths: Iterable[Path | str] = ()) -> None:
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        for p in paths:
            self.add(p)

    def add(self, path: Path | str) -> None:
        """Follow ``path`` too (from its beginning)."""
        self._offsets.setdefault(Path(path), 0)

    def poll(self) -> list[Event]:
        """The events appended since the last poll (whole lines only)."""
        out: list[Event] = []
        for path, offset in list(self._offsets.items()):
            try:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            text = self._partial.pop(path, "") + data.decode("utf-8", errors="replace")
            self._offsets[path] = offset + len(data)
            lines = text.split("\n")
            if lines[-1]:
                self._partial[path] = lines[-1]
            out.extend(_parse(lines[:-1], path.name))
        return out
