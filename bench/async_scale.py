"""Async scale: one AsyncLockManager holding many locks, and many tasks waiting, in one loop.

Issue #11's targets, each measured in a child process (this script with ``--child``) that
runs one ``AsyncLockManager`` on asyncio, talking to a dev agent through a counting proxy run
by the parent:

* **holding N locks** (N = 10,000; ``--quick``: 1,000): time to acquire them one after the
  other (plain ``lock.acquire()``; ``lock_many`` would be one request per 64 keys), HTTP
  connections (``AsyncConsul.open_connections``, target at most 4), RSS (target under
  100 MB), then an idle window (``--idle``) in which every request is counted by endpoint:
  renewals and the watches' blocking queries, nothing else;
* **W tasks waiting** (W = 1,000) on W different keys of one directory, all held by another
  process (a raw-HTTP holder in the parent): connections while they wait (target at most
  4: the waiters share the directory's blocking query), requests while idle, then the
  holder releases every key and the time until every task holds its key is reported.

Run: ``python bench/async_scale.py [--quick] [--idle S]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith.aio import AsyncConsul, AsyncLockManager

PREFIX = "bench/async-scale"


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def child_hold(addr: str, n: int, idle: float) -> None:
    rss0 = c.rss_mib()
    async with (
        AsyncConsul(addr) as consul,
        AsyncLockManager(consul, ttl="15s", lock_delay=0, name=f"bench-async-hold-{n}") as mgr,
    ):
        locks = [mgr.lock(f"{PREFIX}/hold-{n}/k{i:05d}", b"held") for i in range(n)]
        t0 = time.perf_counter()
        for lock in locks:
            await lock.acquire(timeout=60)
        acquire_s = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        cpu0 = os.times()
        _emit(
            phase="idle-start",
            acquire_s=acquire_s,
            held=len(mgr.held_locks()),
            open_connections=consul.open_connections,
            socket_fds=c.open_sockets(),
            rss_mib_before=rss0,
            rss_mib_holding=c.rss_mib(),
            watches=len(mgr.snapshot().watches),
        )
        await asyncio.sleep(idle)
        cpu1 = os.times()
        _emit(
            phase="idle-end",
            idle_cpu_s=(cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            held=len(mgr.held_locks()),
            open_connections=consul.open_connections,
        )
        t0 = time.perf_counter()
    _emit(phase="closed", close_s=time.perf_counter() - t0)


async def child_wait(addr: str, n: int, idle: float) -> None:
    async with (
        AsyncConsul(addr) as consul,
        AsyncLockManager(consul, ttl="15s", lock_delay=0, name=f"bench-async-wait-{n}") as mgr,
    ):
        got: list[float] = []

        async def wait(i: int) -> None:
            lease = await mgr.lock(f"{PREFIX}/wait-{n}/k{i:05d}").acquire(timeout=300)
            assert lease is not None
            got.append(time.perf_counter())

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(wait(i))
            while len(mgr.snapshot().waiting) < n:
                await asyncio.sleep(0.05)
            _emit(
                phase="idle-start",
                waiting=len(mgr.snapshot().waiting),
                watches=[w.path for w in mgr.snapshot().watches],
                open_connections=consul.open_connections,
                rss_mib=c.rss_mib(),
            )
            await asyncio.sleep(idle)
            _emit(phase="idle-end", open_connections=consul.open_connections)
            line = await asyncio.to_thread(sys.stdin.readline)  # the parent released them all
            released_at = time.perf_counter()
            assert line.strip() == "released"
        _emit(phase="acquired", all_acquired_s=max(got) - released_at, acquired=len(got))


def hold(addr: str, n: int, idle: float) -> dict[str, Any]:
    proxy = c.CountingProxy(addr)
    argv = [sys.executable, __file__, "--child", "hold", proxy.addr, str(n), str(idle)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out: dict[str, Any] = {"locks": n}
    t_idle = 0.0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = json.loads(line)
            phase = ev.pop("phase")
            if phase == "idle-start":
                out["requests_while_acquiring"] = proxy.total()
                proxy.reset()
                t_idle = time.monotonic()
                out.update(ev)
            elif phase == "idle-end":
                dur = time.monotonic() - t_idle
                snap = proxy.snapshot()
                out["idle_requests_per_min"] = sum(snap.values()) * 60 / dur
                out["idle_requests_by_endpoint"] = dict(snap.most_common())
                out["idle_cpu_pct"] = 100 * ev.pop("idle_cpu_s") / dur
                out["open_connections_end"] = ev["open_connections"]
                out["connections_opened_total"] = proxy.connections_total
            elif phase == "closed":
                out["close_s"] = ev["close_s"]
        proc.wait(120)
        out["exit_code"] = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
    return out


def wait(addr: str, n: int, idle: float) -> dict[str, Any]:
    raw = c.RawConsul(addr)
    sid = raw.session(ttl="120s", lock_delay="0s", name="bench-async-holder")
    keys = [f"{PREFIX}/wait-{n}/k{i:05d}" for i in range(n)]
    for k in keys:
        assert raw.lock(k, b"held", sid) is not None
    proxy = c.CountingProxy(addr)
    argv = [sys.executable, __file__, "--child", "wait", proxy.addr, str(n), str(idle)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    out: dict[str, Any] = {"waiters": n}
    t_idle = 0.0
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            ev = json.loads(line)
            phase = ev.pop("phase")
            if phase == "idle-start":
                out.update(ev)
                out["requests_until_all_waiting"] = proxy.total()
                proxy.reset()
                t_idle = time.monotonic()
            elif phase == "idle-end":
                dur = time.monotonic() - t_idle
                snap = proxy.snapshot()
                out["idle_requests_per_min"] = sum(snap.values()) * 60 / dur
                out["idle_requests_by_endpoint"] = dict(snap.most_common())
                out["open_connections_end"] = ev["open_connections"]
                raw.destroy(sid)  # every key free at once (lock-delay 0)
                proc.stdin.write("released\n")
                proc.stdin.flush()
            elif phase == "acquired":
                out.update(ev)
        proc.wait(300)
        out["exit_code"] = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
        raw.close()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, addr, n, idle = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        asyncio.run((child_hold if kind == "hold" else child_wait)(addr, n, idle))
        return
    p = c.parser(__doc__.splitlines()[0] if __doc__ else "async scale")
    p.add_argument("--idle", type=float, default=None, help="idle window in seconds")
    args = p.parse_args()
    idle = args.idle or (5.0 if args.quick else 30.0)
    n_hold = 1000 if args.quick else 10000
    with c.dev_agent(args.consul) as agent:
        info = c.machine_info(agent.binary)
        held = hold(agent.http_addr, n_hold, idle)
        print(f"hold {n_hold}: {json.dumps(held)}")
        waited = wait(agent.http_addr, 1000, idle)
        print(f"wait 1000: {json.dumps(waited)}")
    target = {
        "hold_connections_at_most_4": held.get("open_connections", 99) <= 4,
        "hold_rss_under_100_mib": held.get("rss_mib_holding", 1e9) < 100,
        "wait_connections_at_most_4": waited.get("open_connections", 99) <= 4,
        "idle_only_renewals_and_blocking_queries": all(
            ep.startswith("PUT /v1/session/renew")
            or (ep.startswith("GET /v1/kv") and "blocking" in ep)
            for r in (held, waited)
            for ep in r.get("idle_requests_by_endpoint", {})
        ),
    }
    print()
    c.print_table(
        ["case", "n", "acquire s", "conns", "RSS MiB", "idle req/min", "idle endpoints"],
        [
            [
                "hold",
                n_hold,
                c.fmt(held.get("acquire_s"), 2),
                held.get("open_connections"),
                c.fmt(held.get("rss_mib_holding"), 1),
                c.fmt(held.get("idle_requests_per_min"), 1),
                ", ".join(held.get("idle_requests_by_endpoint", {})),
            ],
            [
                "wait",
                1000,
                c.fmt(waited.get("all_acquired_s"), 2),
                waited.get("open_connections"),
                c.fmt(waited.get("rss_mib"), 1),
                c.fmt(waited.get("idle_requests_per_min"), 1),
                ", ".join(waited.get("idle_requests_by_endpoint", {})),
            ],
        ],
    )
    print(f"\ntargets: {target}")
    c.save(
        "async_scale",
        args.quick,
        args.out,
        {
            "benchmark": "async_scale",
            "quick": args.quick,
            "params": {"hold": n_hold, "waiters": 1000, "idle_s": idle},
            "machine": info,
            "method": __doc__,
            "target": target,
            "hold": held,
            "wait": waited,
        },
    )


if __name__ == "__main__":
    main()
