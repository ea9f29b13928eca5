"""Crash failover: the holder process is SIGKILLed; when does the next holder acquire?

Method. One dev agent. The holder is a separate Python process (this script with
``--holder``) running a locksmith ``LockManager``; it prints, as JSON lines, the wall-clock
time of every successful session create and renew (hooked from locksmith's log events
``session.created`` / ``session.renewed``, so within one loopback round trip of the
server's timer reset). The waiter is started and parked first, then the holder is SIGKILLed
at a random moment 1-5 s after it acquired. Consul invalidates an unrenewed session at
last renew + 2 x TTL (measured: +0..50 ms, never earlier) and keeps the key unacquirable for
the lock-delay after that, so the **server bound** is ``last renew + 2 x TTL + lock-delay``:
no client can acquire earlier. Reported per run: ``excess = acquired - bound`` (target:
<= 100 ms) and ``failover = acquired - kill``.

Settings:

* locksmith holder and locksmith waiter, TTL 10 s, lock-delay 0 / 2 / 15 s;
* at ``consul lock``'s fixed settings (TTL 15 s, lock-delay 15 s, recipe key flags): a
  locksmith holder with those settings, and as waiter either locksmith or
  ``consul lock PREFIX 'date +%s%N > F'`` (Consul's Go recipe retries a lock-delayed key on a
  fixed 5 s step: its excess lands anywhere in 0..5 s unless the lock-delay is a multiple
  of 5 s, as the CLI's own 15 s is);
* ``consul lock`` as the waiter behind a holder with TTL 10 s and lock-delay 2 s (a
  locksmith holder, recipe flags), to show that 5 s step.

All trials of one repetition run concurrently (different keys, all idle while they wait);
repetitions run one after another. ``--quick`` runs the lock-delay 0 setting once (~30 s).

Run: ``python bench/failover.py [--quick] [--repeat N] [--settings ...]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith import Consul, LockManager


@dataclass(frozen=True)
class Setting:
    name: str
    ttl: float
    lock_delay: float
    waiter: str  # "locksmith" or "consul-lock"
    recipe_flags: bool


SETTINGS = {
    s.name: s
    for s in (
        Setting("locksmith ttl10 ld0", 10, 0, "locksmith", False),
        Setting("locksmith ttl10 ld2", 10, 2, "locksmith", False),
        Setting("locksmith ttl10 ld15", 10, 15, "locksmith", False),
        Setting("cli-settings ttl15 ld15: locksmith waiter", 15, 15, "locksmith", True),
        Setting("cli-settings ttl15 ld15: consul-lock waiter", 15, 15, "consul-lock", True),
        Setting("holder ttl10 ld2: consul-lock waiter", 10, 2, "consul-lock", True),
    )
}
QUICK = ["locksmith ttl10 ld0"]


# --------------------------------------------------------------------------- holder process


def holder_main(addr: str, key: str, ttl: float, lock_delay: float, flags: int) -> None:
    """Run in the child: acquire *key*, report creates/renews on stdout, wait to be killed."""

    class Hook(logging.Handler):
        """locksmith's events arrive as stdlib records whose message is the event dict."""

        def emit(self, record: logging.LogRecord) -> None:
            event = record.msg if isinstance(record.msg, Mapping) else {}
            name = event.get("event")
            if name in ("session.created", "session.renewed", "session.lost", "lock.lost"):
                print(json.dumps({"event": name, "t": time.time()}), flush=True)

    logger = logging.getLogger("locksmith")
    logger.addHandler(Hook())
    logger.setLevel(logging.DEBUG)
    consul = Consul(addr)
    mgr = LockManager(consul, ttl=f"{ttl}s", lock_delay=f"{lock_delay}s", name="bench-holder")
    mgr.lock(key, b"holder", flags=flags).acquire(timeout=60)
    print(json.dumps({"event": "acquired", "t": time.time(), "pid": os.getpid()}), flush=True)
    while True:
        time.sleep(3600)


class HolderProc:
    """The holder child process and what it reported."""

    def __init__(self, addr: str, key: str, s: Setting) -> None:
        flags = c.CONSUL_LOCK_FLAGS if s.recipe_flags else 0
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--holder",
                addr,
                key,
                str(s.ttl),
                str(s.lock_delay),
                str(flags),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.acquired = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.events.append(ev)
            if ev["event"] == "acquired":
                self.acquired.set()

    def last_renew(self) -> float:
        return max(
            float(e["t"])
            for e in self.events
            if e["event"] in ("session.created", "session.renewed")
        )

    def kill(self) -> float:
        t = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._t.join(5)
        return t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- one trial


def trial(
    addr: str, binary: Path, s: Setting, key_prefix: str, rng: random.Random
) -> dict[str, Any]:
    key = f"{key_prefix}/.lock" if s.recipe_flags else key_prefix
    holder = HolderProc(addr, key, s)
    got: list[float] = []
    err: list[str] = []
    mgr: LockManager | None = None
    consul: Consul | None = None
    proc: subprocess.Popen[bytes] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    try:
        if not holder.acquired.wait(60):
            raise RuntimeError("holder did not acquire")
        if s.waiter == "locksmith":
            consul = Consul(addr)
            mgr = LockManager(consul, ttl="10s", lock_delay="0s", name="bench-waiter")
            lock = mgr.lock(key, b"waiter", flags=c.CONSUL_LOCK_FLAGS if s.recipe_flags else 0)

            def wait() -> None:
                try:
                    lock.acquire(timeout=120)
                    got.append(time.time())
                except Exception as exc:  # noqa: BLE001 - reported in the result
                    err.append(repr(exc))

            t = threading.Thread(target=wait, daemon=True)
            t.start()
        else:
            stamp = tmp / "stamp"
            proc = subprocess.Popen(
                [
                    str(binary),
                    "lock",
                    f"-http-addr=http://{addr}",
                    "-timeout=120s",
                    key_prefix,
                    f"date +%s%N > {stamp}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(rng.uniform(1.0, 5.0))
        t_kill = holder.kill()
        last = holder.last_renew()
        bound = last + 2 * s.ttl + s.lock_delay
        deadline = time.monotonic() + 2 * s.ttl + s.lock_delay + 30
        if s.waiter == "locksmith":
            t.join(max(1.0, deadline - time.monotonic()))
        else:
            assert proc is not None
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                err.append("consul lock did not finish")
            stamp = tmp / "stamp"
            if stamp.exists() and stamp.read_text().strip():
                got.append(int(stamp.read_text().strip()) / 1e9)
        if not got:
            return {"setting": s.name, "error": "; ".join(err) or "waiter did not acquire"}
        return {
            "setting": s.name,
            "ttl_s": s.ttl,
            "lock_delay_s": s.lock_delay,
            "waiter": s.waiter,
            "kill_after_last_renew_s": t_kill - last,
            "excess_over_bound_ms": (got[0] - bound) * 1000,
            "failover_s": got[0] - t_kill,
            "renews_seen": sum(1 for e in holder.events if e["event"] == "session.renewed"),
        }
    finally:
        holder.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if mgr is not None:
            mgr.close()
        if consul is not None:
            consul.close()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def run_into(  # noqa: PLR0917 - a thread target
    results: list[dict[str, Any]], addr: str, binary: Path, s: Setting, key: str, rng: random.Random
) -> None:
    """Run one trial and append its result (a thread target)."""
    try:
        results.append(trial(addr, binary, s, key, rng))
    except Exception as exc:  # noqa: BLE001 - reported in the result
        results.append({"setting": s.name, "error": repr(exc)})


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--holder":
        addr, key, ttl, ld, flags = sys.argv[2:7]
        holder_main(addr, key, float(ttl), float(ld), int(flags))
        return
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="*", choices=list(SETTINGS), default=None)
    args: argparse.Namespace = p.parse_args()
    names = args.settings or (QUICK if args.quick else list(SETTINGS))
    repeat = args.repeat or (1 if args.quick else 2)
    rng = random.Random(args.seed)
    runs: list[dict[str, Any]] = []
    with c.dev_agent(args.consul) as agent:
        info = c.machine_info(agent.binary)
        for r in range(repeat):
            results: list[dict[str, Any]] = []
            threads = []
            for i, n in enumerate(names):
                key = f"bench/failover/r{r}-s{i}-{int(time.time())}"
                sub = random.Random(rng.random())
                th = threading.Thread(
                    target=run_into,
                    args=(results, agent.http_addr, agent.binary, SETTINGS[n], key, sub),
                    daemon=True,
                )
                th.start()
                threads.append(th)
            for th in threads:
                th.join()
            for res in sorted(results, key=lambda x: names.index(x["setting"])):
                print(f"rep {r + 1}/{repeat}: {json.dumps(res)}")
            runs += results
    summary: dict[str, Any] = {}
    rows = []
    for n in names:
        ok = [x for x in runs if x["setting"] == n and "error" not in x]
        errors = [x["error"] for x in runs if x["setting"] == n and "error" in x]
        exc = c.summarize([x["excess_over_bound_ms"] for x in ok])
        fo = c.summarize([x["failover_s"] for x in ok])
        met = bool(ok) and exc["max"] <= 100.0
        summary[n] = {
            "excess_over_bound_ms": exc,
            "failover_s": fo,
            "errors": errors,
            "target_le_100ms_met": met,
        }
        rows.append(
            [
                n,
                len(ok),
                c.fmt(exc.get("median"), 1),
                c.fmt(exc.get("max"), 1),
                c.fmt(fo.get("median"), 2),
                "MET" if met else "MISSED",
                len(errors),
            ]
        )
    print()
    c.print_table(
        [
            "setting",
            "runs",
            "excess med ms",
            "excess max ms",
            "failover med s",
            "<=bound+100ms",
            "errors",
        ],
        rows,
    )
    data = {
        "benchmark": "failover",
        "quick": args.quick,
        "params": {"repeat": repeat, "settings": names, "seed": args.seed},
        "machine": info,
        "method": __doc__,
        "results": summary,
        "runs": runs,
    }
    c.save("failover", args.quick, args.out, data)
    if not args.no_chart:
        c.bar_chart(
            c.chart_path("failover", args.quick, args.out),
            "Crash failover: acquired minus server bound (last renew + 2xTTL + lock-delay)",
            {n: {"excess ms": summary[n]["excess_over_bound_ms"]} for n in names},
            "ms after the server bound (log)",
            log=True,
            ref_lines={"target +100 ms": 100.0},
        )


if __name__ == "__main__":
    main()
