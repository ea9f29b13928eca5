"""The child that ``consul lock`` runs in a partition run's comparison workload.

``python _consul_lock_child.py HISTORY NAME HOLD_SECONDS``: run as a plain script (it imports
nothing from locksmith, so it starts fast). ``consul lock`` starts it only once it holds the
lock, so the child believes it holds the lock from its first instant: it appends ``cl_start``
to the history, then runs for HOLD_SECONDS and appends ``cl_end`` with ``how: done``; on
SIGTERM (what ``consul lock`` sends when it thinks the lock is lost, or when it is stopped)
it appends ``cl_end`` with ``how: sigterm`` at once and exits. Times are ``time.monotonic()``,
comparable with every other history of the run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType


def _append(path: str, event: dict[str, object]) -> None:
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """Entry point (see the module docstring)."""
    path, name, hold = argv[1], argv[2], float(argv[3])
    proc = name.split(".", 1)[0]
    base = {"proc": proc, "child": name, "pid": os.getpid()}

    def on_term(signum: int, frame: FrameType | None) -> None:
        _append(path, {"t": time.monotonic(), "ev": "cl_end", "how": "sigterm", **base})
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    held = os.environ.get("CONSUL_LOCK_HELD", "")
    _append(path, {"t": time.monotonic(), "ev": "cl_start", "held_env": held, **base})
    end = time.monotonic() + hold
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _append(path, {"t": time.monotonic(), "ev": "cl_end", "how": "done", **base})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
