"""``make demo``: three workers elect a leader, the leader is killed, the failover is shown.

Run ``python -m locksmith.demo``. It starts a throwaway Consul dev agent (or uses
``CONSUL_HTTP_ADDR``), starts three worker processes that campaign for
``demo/leader``, SIGKILLs the first leader, and prints a timeline of elections, fenced
writes and the failover with every fencing token. Everything it started is stopped before it
exits.

``python -m locksmith.demo --worker NAME --address HOST:PORT`` runs one worker (the docker
compose demo service uses this).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["main"]

ELECTION_KEY = "demo/leader"
WORK_KEY = "demo/work"


def _emit(**fields: Any) -> None:
    fields["t"] = time.monotonic()
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def run_worker(name: str, address: str, ttl: str, lock_delay: str) -> int:
    """Campaign forever; while leader, write fenced progress every 0.5 s."""
    from locksmith import Consul, Lease, LockLost, LockManager, LockTimeout

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        Consul(address) as consul,
        LockManager(consul, ttl=ttl, lock_delay=lock_delay, name=f"demo-{name}") as mgr,
    ):
        election = mgr.election(ELECTION_KEY, value=name)
        election.on_deposed(
            lambda e: _emit(
                worker=name, event="deposed", reason=e.reason.value if e.reason else "resigned"
            )
        )
        _emit(worker=name, event="campaigning")

        def lead(lease: Lease, cancel: threading.Event) -> None:
            token = lease.fencing_token
            _emit(worker=name, event="elected", token=token)
            n = 0
            while not cancel.is_set() and not stop.is_set():
                n += 1
                try:
                    election.lock.fenced_put(WORK_KEY, f"{name} step {n} token {token}")
                    _emit(worker=name, event="write", token=token, step=n)
                except LockLost:
                    _emit(worker=name, event="write_refused", token=token)
                    return
                cancel.wait(0.5)

        while not stop.is_set():
            try:
                # Campaign in 1 s slices so that SIGTERM is noticed while waiting.
                election.run(lead, rejoin=True, timeout=1.0)
            except (LockLost, LockTimeout):
                continue
    _emit(worker=name, event="stopped")
    return 0


def _start_agent() -> tuple[str, Any]:
    addr = os.environ.get("CONSUL_HTTP_ADDR")
    if addr:
        return addr, None
    from locksmith.testing import ConsulAgent

    agent = ConsulAgent(node_name="demo").start()
    return agent.http_addr, agent


def run_demo(ttl: str = "10s", lock_delay: str = "2s") -> int:
    """Orchestrate the three-worker failover demo and print its timeline."""
    addr, agent = _start_agent()
    t0 = time.monotonic()
    procs: dict[str, subprocess.Popen[str]] = {}
    events: list[dict[str, Any]] = []
    cond = threading.Condition()

    def reader(name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with cond:
                events.append(ev)
                cond.notify_all()
            _show(ev, t0)

    def wait_for(pred: Any, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with cond:
            while True:
                for ev in events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                cond.wait(left)

    print(f"locksmith demo: Consul at {addr}; TTL {ttl}, lock-delay {lock_delay}")
    print("timeline (seconds since start):")
    try:
        for name in ("alpha", "bravo", "charlie"):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "locksmith.demo",
                    "--worker",
                    name,
                    "--address",
                    addr,
                    "--ttl",
                    ttl,
                    "--lock-delay",
                    lock_delay,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs[name] = proc
            threading.Thread(target=reader, args=(name, proc), daemon=True).start()
        first = wait_for(lambda e: e["event"] == "elected", 30)
        if first is None:
            print("no leader elected within 30 s", file=sys.stderr)
            return 1
        time.sleep(2.0)
        victim = first["worker"]
        killed_at = time.monotonic()
        print(f"{killed_at - t0:7.2f}s  ** SIGKILL {victim} (the leader) **")
        procs[victim].kill()
        second = wait_for(lambda e: e["event"] == "elected" and e["worker"] != victim, 60)
        if second is None:
            print("no failover within 60 s", file=sys.stderr)
            return 1
        time.sleep(1.5)
        survivor = second["worker"]
        print(f"{time.monotonic() - t0:7.2f}s  ** SIGTERM {survivor} (graceful resign) **")
        procs[survivor].send_signal(signal.SIGTERM)
        third = wait_for(
            lambda e: e["event"] == "elected" and e["worker"] not in (victim, survivor), 30
        )
        time.sleep(1.0)
        print()
        print(
            f"leader killed at {killed_at - t0:.2f}s; next leader at {second['t'] - t0:.2f}s "
            f"(failover {second['t'] - killed_at:.2f}s; the server's bound is 2xTTL + "
            f"lock-delay after the last renewal)"
        )
        if third is not None:
            print(
                f"graceful resign handed over in "
                f"{third['t'] - _resign_time(events, survivor):.3f}s (no lock-delay)"
            )
        tokens = [e["token"] for e in events if e["event"] == "elected"]
        print(
            f"fencing tokens in election order: {tokens} "
            f"({'strictly increasing' if tokens == sorted(set(tokens)) else 'NOT increasing'})"
        )
        return 0 if tokens == sorted(set(tokens)) else 1
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if agent is not None:
            agent.stop()


def _resign_time(events: list[dict[str, Any]], worker: str) -> float:
    for ev in events:
        if ev["worker"] == worker and ev["event"] == "deposed":
            return float(ev["t"])
    return float("nan")


def _show(ev: dict[str, Any], t0: float) -> None:
    what = ev["event"]
    if what == "write" and ev.get("step", 0) % 2 == 0:
        return
    detail = ""
    if "token" in ev:
        detail += f" fencing_token={ev['token']}"
    if "reason" in ev:
        detail += f" reason={ev['reason']}"
    if "step" in ev:
        detail += f" step={ev['step']}"
    print(f"{ev['t'] - t0:7.2f}s  {ev['worker']:<8} {what}{detail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m locksmith.demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m locksmith.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--worker", metavar="NAME", help="run one worker instead of the demo")
    parser.add_argument("--address", help="Consul HTTP address (worker mode)")
    parser.add_argument("--ttl", default="10s", help="session TTL (default 10s)")
    parser.add_argument("--lock-delay", default="2s", help="lock-delay (default 2s)")
    args = parser.parse_args(argv)
    if args.worker:
        address = args.address or os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        return run_worker(args.worker, address, args.ttl, args.lock_delay)
    return run_demo(args.ttl, args.lock_delay)


if __name__ == "__main__":
    sys.exit(main())
