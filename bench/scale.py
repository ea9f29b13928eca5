"""Scale: many locks on one session, and many contenders on one key.

Part 1, **holding N locks** (N = 1, 100, 1,000, 10,000; ``--quick``: 1, 100, 1,000). Acquiring stops
after ``--budget`` seconds (300; quick 20) and the held count is reported. A child
process (this script with ``--child``) runs one ``LockManager`` (TTL ``--ttl``, default 15 s)
and acquires N keys ``bench/scale/<N>/k00000..`` through a counting TCP proxy run by the
parent. Reported: time to acquire all N, HTTP connections (``Consul.open_connections`` and
socket fds in ``/proc/self/fd``), RSS, then an idle window (``--idle``, default 60 s, quick 5 s)
during which the proxy counts every request (renewals, blocking queries) and the child its
CPU seconds; then ``close()`` time (releases every key, destroys the session).

Part 1b, **holding N keys as one set** (``lock_many``; N = 1,000 and 10,000, ``--sets``): the
same child and report, the keys taken by one ``LockSet.acquire`` in transactions of 64.

Part 2, **contenders on one key** (C = 1, 5, 50; quick: 5, 50). C ``LockManager`` s (own
session and client each) in threads of this process, all through one counting proxy, loop
``acquire(); hold 10 ms; release()`` for a window (``--window``, default 20 s, quick 5 s).
Reported: acquisitions, requests per acquisition (total and per endpoint) and the spread of
acquisitions among contenders.

Run: ``python bench/scale.py [--quick] [--counts 1 100 ...] [--contenders 1 5 50]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith import Consul, LockManager, LocksmithError

HOLD_S = 0.010


# --------------------------------------------------------------------------- part 1 child


def child_main(addr: str, n: int, ttl: str, idle: float, budget: float, *, mode: str) -> None:
    """In the child: hold *n* locks (``mode`` "locks": one ``Lock`` each; "set": one
    ``lock_many``), report JSON lines the parent reads."""

    def emit(**kw: Any) -> None:
        print(json.dumps(kw), flush=True)

    rss0 = c.rss_mib()
    consul = Consul(addr)
    mgr = LockManager(consul, ttl=ttl, lock_delay="0s", name=f"bench-scale-{n}")
    keys = [f"bench/scale/{mode}-{n}/k{i:05d}" for i in range(n)]
    t0 = time.perf_counter()
    if mode == "set":
        mgr.lock_many(keys, b"held").acquire(timeout=budget)
    else:
        for lk in [mgr.lock(k, b"held") for k in keys]:
            lk.acquire(timeout=60)
            if time.perf_counter() - t0 > budget:
                break  # reported: held < locks
    acquire_s = time.perf_counter() - t0
    time.sleep(1.0)
    held = len(mgr.held_locks())
    cpu0 = os.times()
    emit(
        phase="idle-start",
        acquire_s=acquire_s,
        held=held,
        open_connections=consul.open_connections,
        socket_fds=c.open_sockets(),
        threads=threading.active_count(),
        rss_mib_before=rss0,
        rss_mib_holding=c.rss_mib(),
    )
    time.sleep(idle)
    cpu1 = os.times()
    emit(
        phase="idle-end",
        idle_cpu_s=(cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        held=len(mgr.held_locks()),
        open_connections=consul.open_connections,
        socket_fds=c.open_sockets(),
        rss_mib_after_idle=c.rss_mib(),
    )
    t0 = time.perf_counter()
    mgr.close()
    emit(phase="closed", close_s=time.perf_counter() - t0)
    consul.close()


def hold_n(
    addr: str, n: int, ttl: str, idle: float, budget: float, *, mode: str = "locks"
) -> dict[str, Any]:
    """Run one child holding *n* locks (or one set of *n* keys) behind a counting proxy."""
    proxy = c.CountingProxy(addr)
    argv = [sys.executable, __file__, "--child", proxy.addr, str(n), ttl, str(idle), str(budget)]
    proc = subprocess.Popen([*argv, mode], stdout=subprocess.PIPE, text=True)
    out: dict[str, Any] = {"locks": n, "mode": mode}
    try:
        assert proc.stdout is not None
        t_idle = 0.0
        for line in proc.stdout:
            ev = json.loads(line)
            phase = ev.pop("phase")
            if phase == "idle-start":
                out["requests_while_acquiring"] = proxy.total()
                out["acquire_requests_by_endpoint"] = dict(proxy.snapshot().most_common())
                proxy.reset()
                t_idle = time.monotonic()
                out.update(ev)
            elif phase == "idle-end":
                dur = time.monotonic() - t_idle
                snap = proxy.snapshot()
                out["idle_s"] = dur
                out["idle_requests"] = sum(snap.values())
                out["idle_requests_per_min"] = sum(snap.values()) * 60 / dur
                out["idle_requests_by_endpoint"] = dict(snap.most_common())
                out["connections_opened_total"] = proxy.connections_total
                out["idle_cpu_pct"] = 100 * ev.pop("idle_cpu_s") / dur
                out.update({f"{k}_end": v for k, v in ev.items()})
                proxy.reset()
            elif phase == "closed":
                out["close_s"] = ev["close_s"]
                out["close_requests"] = proxy.total()
        proc.wait(60)
        out["exit_code"] = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
    return out


# --------------------------------------------------------------------------- part 2


def contend(addr: str, n: int, window: float) -> dict[str, Any]:
    """*n* managers loop acquire/hold/release on one key for *window* seconds."""
    proxy = c.CountingProxy(addr)
    key = f"bench/contend/{n}-{int(time.time())}"
    clients = [Consul(proxy.addr) for _ in range(n)]
    mgrs = [
        LockManager(cl, ttl="15s", lock_delay="0s", name=f"bench-c{i}")
        for i, cl in enumerate(clients)
    ]
    locks = [m.lock(key, f"c{i}".encode()) for i, m in enumerate(mgrs)]
    counts = [0] * n
    go = threading.Event()
    stop = threading.Event()
    errors: list[str] = []

    def worker(i: int) -> None:
        lk = locks[i]
        go.wait()
        while not stop.is_set():
            try:
                lk.acquire(timeout=window + 30)
            except LocksmithError as exc:
                if not stop.is_set():
                    errors.append(repr(exc))
                return
            if not stop.is_set():
                counts[i] += 1
                time.sleep(HOLD_S)
            try:
                lk.release()
            except LocksmithError:  # closed under us at the end of the window
                return

    try:
        for lk in locks:  # create every session first (not counted)
            lk.acquire(timeout=30)
            lk.release()
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        proxy.reset()
        c0 = sum(counts)
        t0 = time.monotonic()
        go.set()
        time.sleep(window)
        snap = proxy.snapshot()
        acq = sum(counts) - c0
        dur = time.monotonic() - t0
        stop.set()
    finally:
        stop.set()
        go.set()
        for m in mgrs:
            m.close()
        for cl in clients:
            cl.close()
        proxy.close()
    total = sum(snap.values())
    return {
        "contenders": n,
        "window_s": dur,
        "hold_s": HOLD_S,
        "acquisitions": acq,
        "acquisitions_per_s": acq / dur,
        "requests": total,
        "requests_per_acquisition": total / max(acq, 1),
        "requests_per_acquisition_per_contender": total / max(acq, 1) / n,
        "by_endpoint_per_acquisition": {k: v / max(acq, 1) for k, v in snap.most_common()},
        "acquisitions_min_max_per_contender": [min(counts), max(counts)],
        "errors": errors[:5],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(
            sys.argv[2],
            int(sys.argv[3]),
            sys.argv[4],
            float(sys.argv[5]),
            float(sys.argv[6]),
            mode=sys.argv[7],
        )
        return
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="*", default=None)
    p.add_argument("--contenders", type=int, nargs="*", default=None)
    p.add_argument("--sets", type=int, nargs="*", default=None, help="lock_many sizes")
    p.add_argument("--ttl", default="15s")
    p.add_argument("--idle", type=float, default=None)
    p.add_argument("--window", type=float, default=None)
    p.add_argument(
        "--budget", type=float, default=None, help="max seconds to spend acquiring (300; quick 20)"
    )
    args = p.parse_args()
    counts = (
        args.counts
        if args.counts is not None
        else ([1, 100, 1000] if args.quick else [1, 100, 1000, 10000])
    )
    conts = (
        args.contenders if args.contenders is not None else ([5, 50] if args.quick else [1, 5, 50])
    )
    sets = args.sets if args.sets is not None else [1000, 10000]
    idle = args.idle or (5.0 if args.quick else 60.0)
    window = args.window or (5.0 if args.quick else 20.0)
    budget = args.budget or (20.0 if args.quick else 300.0)
    repeat = args.repeat or 1
    holding: list[dict[str, Any]] = []
    contention: list[dict[str, Any]] = []
    with c.dev_agent(args.consul) as agent:
        info = c.machine_info(agent.binary)
        for _ in range(repeat):
            for n in counts:
                r = hold_n(agent.http_addr, n, args.ttl, idle, budget)
                print(
                    f"hold {n}: {json.dumps({k: v for k, v in r.items() if 'endpoint' not in k})}"
                )
                holding.append(r)
            for n in sets:
                r = hold_n(agent.http_addr, n, args.ttl, idle, budget, mode="set")
                print(f"set {n}: {json.dumps({k: v for k, v in r.items() if 'endpoint' not in k})}")
                holding.append(r)
            for n in conts:
                r = contend(agent.http_addr, n, window)
                print(f"contend {n}: {json.dumps(r)}")
                contention.append(r)
    print()
    c.print_table(
        [
            "locks",
            "as",
            "held",
            "acquire s",
            "conns",
            "socket fds",
            "RSS MiB",
            "idle req/min",
            "idle CPU %",
            "close s",
            "acquire requests",
        ],
        [
            [
                r["locks"],
                r.get("mode", "locks"),
                r.get("held"),
                c.fmt(r.get("acquire_s"), 2),
                r.get("open_connections"),
                r.get("socket_fds"),
                c.fmt(r.get("rss_mib_holding"), 1),
                c.fmt(r.get("idle_requests_per_min"), 1),
                c.fmt(r.get("idle_cpu_pct"), 2),
                c.fmt(r.get("close_s"), 2),
                r.get("requests_while_acquiring"),
            ]
            for r in holding
        ],
    )
    print()
    c.print_table(
        [
            "contenders",
            "acquisitions",
            "acq/s",
            "req/acq",
            "req/acq/contender",
            "min..max per contender",
        ],
        [
            [
                r["contenders"],
                r["acquisitions"],
                c.fmt(r["acquisitions_per_s"], 1),
                c.fmt(r["requests_per_acquisition"], 1),
                c.fmt(r["requests_per_acquisition_per_contender"], 2),
                "{}..{}".format(*r["acquisitions_min_max_per_contender"]),
            ]
            for r in contention
        ],
    )
    big = [r for r in holding if r["locks"] >= 10000 and r.get("mode", "locks") == "locks"]
    target = None
    if big:
        r = big[0]
        target = {
            "rss_under_100_mib": r.get("rss_mib_holding", 1e9) < 100,
            "connections_handful": (r.get("open_connections") or 99) <= 5,
        }
    big_sets = [r for r in holding if r["locks"] >= 10000 and r.get("mode") == "set"]
    if big_sets:
        r = big_sets[0]
        target = {
            **(target or {}),
            "lock_many_10000_under_2_s": r.get("acquire_s", 1e9) < 2.0,
            "close_10000_under_1_s": r.get("close_s", 1e9) < 1.0,
        }
        print(f"\ntarget 10,000 locks: RSS < 100 MiB and a handful of connections: {target}")
    if big_sets:
        print(f"target lock_many(10,000) < 2 s, close() < 1 s: {target}")
    data = {
        "benchmark": "scale",
        "quick": args.quick,
        "params": {
            "counts": counts,
            "contenders": conts,
            "sets": sets,
            "ttl": args.ttl,
            "idle_s": idle,
            "window_s": window,
            "hold_s": HOLD_S,
            "repeat": repeat,
        },
        "machine": info,
        "method": __doc__,
        "target": target,
        "holding": holding,
        "contention": contention,
    }
    c.save("scale", args.quick, args.out, data)
    if not args.no_chart:
        plain = [r for r in holding if r.get("mode", "locks") == "locks"]
        scale_chart(c.chart_path("scale", args.quick, args.out), plain, contention)


def scale_chart(
    path: Path, holding: list[dict[str, Any]], contention: list[dict[str, Any]]
) -> None:
    """Two panels: RSS / idle requests vs locks held; requests per acquisition vs contenders."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [str(r["locks"]) for r in holding]
    a1.bar(xs, [r.get("rss_mib_holding", 0) for r in holding], color="tab:blue", label="RSS MiB")
    a1.set_xlabel("locks held on one session")
    a1.set_ylabel("RSS MiB")
    a1b = a1.twinx()
    a1b.plot(
        xs,
        [r.get("idle_requests_per_min", 0) for r in holding],
        "o-",
        color="tab:red",
        label="idle requests/min",
    )
    a1b.set_ylabel("idle requests / min", color="tab:red")
    a1b.set_ylim(0, max([r.get("idle_requests_per_min", 0) for r in holding] + [1]) * 1.5)
    a1.set_title("holding N locks (one process)", fontsize=10)
    cx = [str(r["contenders"]) for r in contention]
    a2.bar(cx, [r["requests_per_acquisition"] for r in contention], color="tab:green")
    a2.set_xlabel("contenders on one key")
    a2.set_ylabel("HTTP requests per acquisition")
    a2.set_title("contention (hold 10 ms)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
