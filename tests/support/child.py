"""A child process for ``run_exclusive`` / ``consul lock`` tests.

``child.py OUT [--hold S] [--on-term exit|ignore] [--tag T]`` appends JSON lines to OUT:
``start`` (with the lock environment and its PID), every signal received, then ``end``.
With ``--on-term ignore`` it survives SIGTERM (the parent must SIGKILL it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

ENV = ("LOCKSMITH_KEY", "LOCKSMITH_SESSION", "LOCKSMITH_FENCING_TOKEN", "CONSUL_LOCK_HELD")


def append(path: str, **fields: Any) -> None:
    """Append one line with a single write (O_APPEND: lines of concurrent writers never mix)."""
    line = json.dumps({"t": time.time(), "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def main() -> int:
    """Record start, signals and end; exit 0 at the end of the hold (or 3 on SIGTERM)."""
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--hold", type=float, default=1.0)
    p.add_argument("--on-term", choices=("exit", "ignore"), default="exit")
    p.add_argument("--tag", default="")
    p.add_argument("--code", type=int, default=0)
    a = p.parse_args()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        append(a.out, event="signal", sig=signal.Signals(signum).name, tag=a.tag)
        if signum == signal.SIGTERM and a.on_term == "exit":
            append(a.out, event="end", tag=a.tag, why="sigterm")
            sys.exit(3)

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, on_signal)
    append(a.out, event="start", tag=a.tag, env={k: os.environ.get(k) for k in ENV})
    end = time.monotonic() + a.hold
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
    append(a.out, event="end", tag=a.tag, why="done")
    return int(a.code)


if __name__ == "__main__":
    sys.exit(main())
