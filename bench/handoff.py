"""Graceful handoff: the holder releases, how long until the waiter holds the lock?

Method. One dev agent; the key is ``bench/handoff/<waiter>/.lock`` with the KV flags of
Consul's lock recipe, so all three waiters can compete for the same kind of key. The
holder is always a locksmith ``Lock`` in this process; only the waiter varies:

* ``raw-http``: a thread with its own session and keep-alive ``http.client`` connection:
  txn ``lock``; when busy, a blocking ``GET /v1/kv/<key>?index=N`` and a new attempt each
  time the key shows no session (the minimal correct waiter; the floor);
* ``locksmith``: a thread in ``lock.acquire()`` of a second ``LockManager`` (own session and
  client);
* ``locksmith-async``: a task in ``await lock.acquire()`` of an ``AsyncLockManager`` running
  on its own asyncio event loop (in a thread of this process), own session and client;
* ``consul-lock``: ``consul lock -http-addr ... bench/handoff/consul-lock 'date +%s%N > F'``
  (Consul's own Go recipe, same binary). Its time is the child's timestamp, so it includes
  the fork/exec of ``sh`` and ``date`` that running a command under ``consul lock`` costs. A
  second number, ``consul-lock (key)``, is when an observer thread's blocking query saw the
  key taken by consul's session (an upper bound on the acquire itself: it includes the
  observer's own wake-up).
* ``locksmith-run``: ``locksmith run --shell PREFIX -- 'date +%s%N > F'``, the CLI twin of
  ``consul lock`` on the same kind of key (Consul's layout), timed the same two ways.

Each round: the holder acquires; the waiter is started and given 0.4 s to park in its
blocking query (for ``consul lock``: until its session exists, plus 0.4 s); then
``t0 = time.time_ns()`` and ``holder.release()``; the handoff is ``t_acquired - t0``, all on
CLOCK_REALTIME of this host (``date +%s%N`` uses the same clock). Waiters rotate in a
shuffled order every round.

Run: ``python bench/handoff.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith import Consul, LockManager
from locksmith.aio import AsyncConsul, AsyncLock, AsyncLockManager

PREFIX = "bench/handoff/"
SETTLE = 0.4
TIMEOUT = 30.0


class Holder:
    """The holder: raw HTTP, its own session; keeps the recipe's flags on release."""

    def __init__(self, addr: str, key: str) -> None:
        self.key = key
        self.http = c.RawConsul(addr)
        self.sid = self.http.session(ttl="120s", lock_delay="15s", name="bench-holder")

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.http.lock(self.key, b"holder", self.sid, c.CONSUL_LOCK_FLAGS) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"holder could not acquire {self.key}")
            time.sleep(0.01)

    def release(self) -> None:
        path = f"/v1/kv/{self.key}?release={self.sid}&flags={c.CONSUL_LOCK_FLAGS}"
        status, _, data = self.http.call("PUT", path, b"holder")
        if status != 200 or data.strip() != b"true":
            raise RuntimeError(f"holder release: {status} {data!r}")

    def close(self) -> None:
        self.http.destroy(self.sid)
        self.http.close()


class RawWaiter:
    """The floor: blocking query + retry on a keep-alive connection, own session."""

    def __init__(self, addr: str, key: str) -> None:
        self.key = key
        self.http = c.RawConsul(addr)
        self.sid = self.http.session(ttl="120s", lock_delay="0s", name="bench-raw-waiter")

    def wait(self) -> int:
        """Block until acquired; return time.time_ns() of the acquire."""
        index = 0
        while True:
            if self.http.lock(self.key, b"raw", self.sid, c.CONSUL_LOCK_FLAGS) is not None:
                return time.time_ns()
            idx, entries = self.http.get(self.key)
            index = idx
            while True:
                idx, entries = self.http.get(self.key, index=index, wait="30s")
                index = idx if idx >= index else 0
                if not entries or not entries[0].get("Session"):
                    break

    def release(self) -> None:
        self.http.release(self.key, b"raw", self.sid)

    def close(self) -> None:
        self.http.destroy(self.sid)
        self.http.close()


class LocksmithWaiter:
    """A second LockManager waiting in ``lock.acquire()``."""

    def __init__(self, addr: str, key: str) -> None:
        self.consul = Consul(addr)
        self.mgr = LockManager(self.consul, ttl="120s", lock_delay="0s", name="bench-waiter")
        self.lock = self.mgr.lock(key, b"locksmith", flags=c.CONSUL_LOCK_FLAGS)

    def wait(self) -> int:
        self.lock.acquire(timeout=TIMEOUT)
        return time.time_ns()

    def release(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.mgr.close()
        self.consul.close()


class AsyncWaiter:
    """An AsyncLockManager on an event loop of its own (a thread), waiting in a task."""

    def __init__(self, addr: str, key: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lock: AsyncLock | None = None
        self.stop: asyncio.Event | None = None
        ready = threading.Event()
        self.main = asyncio.run_coroutine_threadsafe(self._main(addr, key, ready), self.loop)
        if not ready.wait(TIMEOUT):
            raise RuntimeError("the async waiter did not start")

    async def _main(self, addr: str, key: str, ready: threading.Event) -> None:
        async with (
            AsyncConsul(addr) as consul,
            AsyncLockManager(consul, ttl="120s", lock_delay=0, name="bench-async-waiter") as mgr,
        ):
            self.lock = mgr.lock(key, b"async", flags=c.CONSUL_LOCK_FLAGS)
            self.stop = asyncio.Event()
            ready.set()
            await self.stop.wait()

    async def _acquire(self) -> int:
        assert self.lock is not None
        await self.lock.acquire(timeout=TIMEOUT)
        return time.time_ns()

    async def _release(self) -> None:
        assert self.lock is not None
        await self.lock.release()

    def wait(self) -> int:
        return asyncio.run_coroutine_threadsafe(self._acquire(), self.loop).result(TIMEOUT + 5)

    def release(self) -> None:
        asyncio.run_coroutine_threadsafe(self._release(), self.loop).result(TIMEOUT)

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.main.result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


def threaded_round(holder: Holder, waiter: RawWaiter | LocksmithWaiter | AsyncWaiter) -> float:
    """One handoff to an in-process waiter; milliseconds."""
    holder.acquire(timeout=TIMEOUT)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(waiter.wait()), daemon=True)
    t.start()
    time.sleep(SETTLE)
    t0 = time.time_ns()
    holder.release()
    t.join(TIMEOUT)
    if not got:
        raise RuntimeError("waiter did not acquire")
    waiter.release()
    return (got[0] - t0) / 1e6


def sessions(http: c.RawConsul) -> dict[str, str]:
    """ID -> name of every session."""
    _, _, data = http.call("GET", "/v1/session/list")
    return {s["ID"]: s["Name"] for s in json.loads(data)}


def observe_taken(addr: str, key: str, not_sid: str, out: list[int], stop: threading.Event) -> None:
    """Record time.time_ns() when *key* is held by a session other than *not_sid*."""
    http = c.RawConsul(addr)
    try:
        index, _ = http.get(key)
        while not stop.is_set():
            idx, entries = http.get(key, index=index, wait="5s")
            index = idx if idx >= index else 0
            sid = entries[0].get("Session") if entries else None
            if sid and sid != not_sid:
                out.append(time.time_ns())
                return
    finally:
        http.close()


def consul_lock_argv(binary: Path, addr: str, prefix: str, command: str) -> list[str]:
    """``consul lock`` running ``command`` through a shell (its default)."""
    return [str(binary), "lock", f"-http-addr=http://{addr}", f"-timeout={TIMEOUT:.0f}s", prefix,
            command]  # fmt: skip


def locksmith_run_argv(binary: Path, addr: str, prefix: str, command: str) -> list[str]:
    """``locksmith run --shell`` running ``command``, the CLI twin of ``consul lock``."""
    del binary
    return [sys.executable, "-m", "locksmith", "--address", addr, "run", "--shell",
            "--timeout", f"{TIMEOUT:.0f}s", prefix, "--", command]  # fmt: skip


def cli_round(
    argv: list[str] | None, binary: Path, addr: str, holder: Holder, tmp: Path
) -> tuple[float, float | None]:
    """One handoff to a command-line waiter (``consul lock``, or ``argv``'s tool); (ms to
    its child running, ms to the key observed taken)."""
    key_prefix = holder.key.rsplit("/.lock", 1)[0]
    stamp = tmp / "stamp"
    stamp.unlink(missing_ok=True)
    http = c.RawConsul(addr)
    holder.acquire(timeout=TIMEOUT)
    before = set(sessions(http))
    command = f"date +%s%N > {stamp}"
    make = locksmith_run_argv if argv is not None else consul_lock_argv
    proc = subprocess.Popen(
        make(binary, addr, key_prefix, command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not set(sessions(http)) - before:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{make.__name__}: no session was created")
            time.sleep(0.01)
        seen: list[int] = []
        stop = threading.Event()
        obs = threading.Thread(
            target=observe_taken, args=(addr, holder.key, holder.sid, seen, stop), daemon=True
        )
        obs.start()
        time.sleep(SETTLE)
        t0 = time.time_ns()
        holder.release()
        proc.wait(TIMEOUT)
        stop.set()
        obs.join(10)
        if proc.returncode != 0 or not stamp.exists():
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"{make.__name__} exited {proc.returncode}: {err[-500:]}")
        child = int(stamp.read_text().strip())
        return (child - t0) / 1e6, ((seen[0] - t0) / 1e6 if seen else None)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        http.close()


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--log-info", action="store_true", help="log locksmith's INFO events")
    args = p.parse_args()
    if args.log_info:
        c.log_info()
    repeat = args.repeat or (5 if args.quick else 20)
    rng = random.Random(args.seed)
    names = ["raw-http", "locksmith", "locksmith-async", "consul-lock", "locksmith-run"]
    extra = ["consul-lock (key)", "locksmith-run (key)"]
    samples: dict[str, list[float]] = {n: [] for n in [*names, *extra]}
    with c.dev_agent(args.consul) as agent, tempfile.TemporaryDirectory() as tmpd:
        addr = agent.http_addr
        info = c.machine_info(agent.binary)
        holders = {n: Holder(addr, f"{PREFIX}{n}/.lock") for n in names}
        raw = RawWaiter(addr, holders["raw-http"].key)
        ls = LocksmithWaiter(addr, holders["locksmith"].key)
        aio = AsyncWaiter(addr, holders["locksmith-async"].key)
        try:
            # warm-up round each (connections, sessions, flag checks)
            threaded_round(holders["raw-http"], raw)
            threaded_round(holders["locksmith"], ls)
            threaded_round(holders["locksmith-async"], aio)
            cli_round(None, agent.binary, addr, holders["consul-lock"], Path(tmpd))
            cli_round([], agent.binary, addr, holders["locksmith-run"], Path(tmpd))
            for r in range(repeat):
                order = list(names)
                rng.shuffle(order)
                line = []
                for n in order:
                    if n == "raw-http":
                        ms = threaded_round(holders[n], raw)
                    elif n == "locksmith":
                        ms = threaded_round(holders[n], ls)
                    elif n == "locksmith-async":
                        ms = threaded_round(holders[n], aio)
                    else:
                        argv: list[str] | None = None if n == "consul-lock" else []
                        ms, key_ms = cli_round(argv, agent.binary, addr, holders[n], Path(tmpd))
                        if key_ms is not None:
                            samples[f"{n} (key)"].append(key_ms)
                    samples[n].append(ms)
                    line.append(f"{n} {ms:.2f}")
                print(f"round {r + 1}/{repeat}: " + ", ".join(line) + " ms")
        finally:
            raw.close()
            ls.close()
            aio.close()
            for h in holders.values():
                h.close()
    stats = {n: c.summarize(v) for n, v in samples.items()}
    floor = stats["raw-http"]["median"]
    rows = []
    for n, s in stats.items():
        rows.append(
            [
                n,
                s["n"],
                c.fmt(s["median"], 2),
                c.fmt(s["p90"], 2),
                c.fmt(s["p99"], 2),
                f"{s['median'] / floor:.2f}x",
                f"{s['median'] - floor:+.2f}",
            ]
        )
    print()
    c.print_table(["waiter", "rounds", "median ms", "p90 ms", "p99 ms", "vs raw", "diff ms"], rows)
    ls_med = stats["locksmith"]["median"]
    aio_med = stats["locksmith-async"]["median"]
    t1 = ls_med <= floor + 2.0
    t3 = aio_med <= floor + 2.0
    t2 = ls_med < stats["consul-lock"]["median"]
    print(
        f"\ntarget locksmith <= raw + 2 ms: {ls_med:.2f} vs {floor + 2:.2f} -> "
        f"{'MET' if t1 else 'MISSED'}; faster than consul lock: "
        f"{ls_med:.2f} vs {stats['consul-lock']['median']:.2f} -> {'MET' if t2 else 'MISSED'}"
    )
    run_med = stats["locksmith-run"]["median"]
    t4 = run_med <= stats["consul-lock"]["median"]
    print(
        f"target locksmith run no slower than consul lock (child running): {run_med:.2f} vs "
        f"{stats['consul-lock']['median']:.2f} -> {'MET' if t4 else 'MISSED'}"
    )
    print(
        f"target locksmith-async <= raw + 2 ms: {aio_med:.2f} vs {floor + 2:.2f} -> "
        f"{'MET' if t3 else 'MISSED'}"
    )
    data = {
        "benchmark": "handoff",
        "quick": args.quick,
        "params": {"repeat": repeat, "settle_s": SETTLE, "seed": args.seed},
        "machine": info,
        "method": __doc__,
        "target": {
            "locksmith_max_ms_over_raw": 2.0,
            "met_raw_plus_2ms": t1,
            "met_vs_consul_lock": t2,
            "async_met_raw_plus_2ms": t3,
            "run_met_vs_consul_lock": t4,
        },
        "results": {
            n: {"ms": s, "ratio_median_vs_raw": s["median"] / floor, "samples_ms": samples[n]}
            for n, s in stats.items()
        },
    }
    c.save("handoff", args.quick, args.out, data)
    if not args.no_chart:
        c.bar_chart(
            c.chart_path("handoff", args.quick, args.out),
            f"Graceful handoff (release -> next holder), dev agent, {info['consul']}",
            {"handoff": stats},
            "ms",
        )


if __name__ == "__main__":
    main()
