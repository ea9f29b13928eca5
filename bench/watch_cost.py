"""Watch cost: bytes the holders' watches download while others write elsewhere.

A holder follows its keys with blocking queries. A recursive query wakes, and downloads its
whole listing, on every write under its prefix, so what a holder watches decides what writes
by *others* cost it. Two scenarios, each measured in bytes sent by Consul to the holders
(through a counting proxy), on a store that also holds 2,000 unrelated keys of 256 bytes:

* ``unrelated``: one manager holds ``alpha-x`` and ``beta-x`` (top-level keys with no common
  directory); 200 writes go to other keys of the store;
* ``siblings``: 40 managers each hold one key of one directory; 100 writes go to other keys of
  that same directory.

It also reports the connections a manager holding 10,000 keys of one directory uses.

With ``--baseline SRC`` (a checkout of an earlier locksmith, e.g. ``git worktree add
/tmp/old v0.1.0``) the same scenarios run with that code too, side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as c

from locksmith import Consul
from locksmith.testing import FaultProxy

STORE_KEYS = 2000


def run_child(src: Path, name: str, addr: str, proxy: FaultProxy) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_watch_child.py")), name, addr, proxy.addr],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        if line.strip() == "BYTES?":
            proc.stdin.write(f"{proxy.stats.bytes_down}\n")
            proc.stdin.flush()
        elif line.startswith("{"):
            result = json.loads(line)
    proc.wait(120)
    return result


def many_keys(addr: str, n: int) -> dict[str, Any]:
    from locksmith import LockManager

    with LockManager(Consul(addr), ttl="60s", lock_delay=0, name="watch-many") as mgr:
        started = time.monotonic()
        for i in range(n):
            mgr.lock(f"many/k{i:05d}").acquire(timeout=10)
        acquire_s = time.monotonic() - started
        time.sleep(1.0)
        snap = mgr.snapshot()
        return {
            "locks": n,
            "acquire_s": acquire_s,
            "watches": [t.path for t in snap.watches],
            "open_connections": mgr.consul.open_connections,
        }


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, default=None, help="an earlier locksmith checkout")
    args = p.parse_args()
    sources = {"locksmith": c.ROOT}
    if args.baseline is not None:
        sources["baseline"] = args.baseline.resolve()
    rows: list[dict[str, Any]] = []
    with c.dev_agent(args.consul) as agent:
        info = c.machine_info(agent.binary)
        store = Consul(agent.http_addr)
        for i in range(STORE_KEYS):
            store.kv.put(f"bulk/k{i:05d}", b"b" * 256)
        for label, src in sources.items():
            for name in ("unrelated", "siblings"):
                with FaultProxy(agent.http_addr) as proxy:
                    res = run_child(src, name, agent.http_addr, proxy)
                res["code"] = label
                rows.append(res)
                print(json.dumps(res))
        many = many_keys(agent.http_addr, 1000 if args.quick else 10_000)
        print(json.dumps(many))
        store.kv.delete("bulk", recurse=True)
        store.kv.delete("many", recurse=True)
    c.print_table(
        ["code", "scenario", "writes", "bytes down", "per write"],
        [
            [r["code"], r["scenario"], r["writes"], r["bytes_down"], r["bytes_down"] // r["writes"]]
            for r in rows
        ],
    )
    print(
        f"{many['locks']} keys of one directory: {many['open_connections']} connections, "
        f"watches {many['watches']}, acquired in {many['acquire_s']:.2f} s"
    )
    c.save(
        "watch_cost",
        args.quick,
        args.out,
        {"machine": info, "store_keys": STORE_KEYS, "rows": rows, "many_keys": many},
    )


if __name__ == "__main__":
    main()
