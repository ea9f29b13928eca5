"""The child of ``watch_cost.py``: one scenario, with whichever locksmith is on sys.path.

It imports nothing of the benchmark harness, so that ``PYTHONPATH`` decides which locksmith
(this checkout, or a baseline) runs. It asks its parent for the proxy's byte count over
stdin/stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def scenario(name: str, addr: str, proxy_addr: str) -> dict[str, Any]:
    """Run one scenario in this process (the locksmith on sys.path) and measure it."""
    from locksmith import Consul, LockManager  # the code under test (maybe a baseline)

    direct = Consul(addr)
    run = f"{name}-{os.getpid()}"
    managers: list[Any] = []
    writes = 0
    try:
        if name == "unrelated":
            mgr = LockManager(Consul(proxy_addr), ttl="60s", lock_delay=0, name=run)
            managers.append(mgr)
            for key in (f"alpha-{run}", f"beta-{run}"):
                mgr.lock(key).acquire(timeout=10)
        elif name == "siblings":
            for i in range(40):
                mgr = LockManager(Consul(proxy_addr), ttl="60s", lock_delay=0, name=run)
                managers.append(mgr)
                mgr.lock(f"dir-{run}/holder-{i:02d}").acquire(timeout=10)
        time.sleep(1.5)  # the watches settle into their blocking queries
        before = _proxy_bytes()
        n = 200 if name == "unrelated" else 100
        for i in range(n):
            target = f"other-{run}/k{i}" if name == "unrelated" else f"dir-{run}/other-{i}"
            direct.kv.put(target, b"x" * 256)
            writes += 1
        time.sleep(2.0)  # every wake-up they cause has been answered
        after = _proxy_bytes()
        return {"scenario": name, "writes": writes, "bytes_down": after - before}
    finally:
        for mgr in managers:
            mgr.close()
        direct.kv.delete(f"other-{run}", recurse=True)
        direct.kv.delete(f"dir-{run}", recurse=True)
        for key in (f"alpha-{run}", f"beta-{run}"):
            direct.kv.delete(key)


def _proxy_bytes() -> int:
    # The parent owns the proxy; it answers on stdin/stdout with its byte count.
    sys.stdout.write("BYTES?\n")
    sys.stdout.flush()
    return int(sys.stdin.readline())


if __name__ == "__main__":
    print(json.dumps(scenario(*sys.argv[1:4])), flush=True)
