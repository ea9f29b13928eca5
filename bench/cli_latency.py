"""How soon does ``locksmith run`` exit after its deadline, a signal, or its command's end?

Target: within 100 ms, while still releasing the lock, destroying the session and deleting
an unused ``PREFIX/.lock`` (issue #12). Every case runs ``python -m locksmith`` as a real
process with stderr on a pipe (as under cron), against one dev agent, from the tree given by
``--tree`` (default: this checkout), so an older revision can be measured the same way::

    git archive <rev> | tar -x -C /tmp/before
    python bench/cli_latency.py --tree /tmp/before --label before

Cases, each ``--repeat`` times, interleaved in a shuffled order every round:

* ``timeout-lock`` / ``timeout-semaphore``: another holder holds the lock (all slots); the
  waiter runs with ``--timeout 1s``. Latency = process exit (``time.time()`` here) minus the
  deadline, which is the ``cli.acquiring`` event's timestamp (``-v --log-format json``) plus
  1 s. A tree without that event falls back to the library's ``session.created`` event,
  logged just after the acquisition started (so the latency is under-estimated by the
  session create's round trip, a millisecond or two).
* ``SIGTERM`` / ``SIGINT``: the waiter waits for a held lock; once its session exists, plus
  1.5 s (its waiting status is up), the signal is sent. Latency = exit minus the send, on
  ``time.monotonic()``.
* ``command-end``: uncontended; COMMAND prints ``time.time()`` and exits. Latency = exit
  minus that stamp (the release, the session destroy and the ``.lock`` cleanup included).

After each case the agent is checked for leftovers (sessions of the waiter; for
``command-end`` the ``.lock`` key): they are counted in the JSON (``leftovers``), not hidden.

Run: ``python bench/cli_latency.py [--quick] [--repeat N] [--tree DIR] [--label NAME]``.
Writes ``results/cli_latency[.<label>][.quick].json``.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from locksmith import Consul, LockManager
from locksmith.testing import find_consul

TIMEOUT = 1.0
SETTLE = 1.5
CASES = ("timeout-lock", "timeout-semaphore", "SIGTERM", "SIGINT", "command-end")


def _stamp(line: str, event: str) -> float | None:
    if not line.startswith("{"):
        return None
    data = json.loads(line)
    if data.get("event") != event:
        return None
    ts = str(data["timestamp"]).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(ts).timestamp()


class Bench:
    """Runs the cases against one agent; one holder manager per case keeps the lock busy."""

    def __init__(self, addr: str, tree: Path) -> None:
        self.addr = addr
        self.tree = tree
        self.consul = Consul(addr)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "CONSUL_HTTP_ADDR": addr,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop("CONSUL_HTTP_TOKEN", None)
        self.leftovers: dict[str, int] = dict.fromkeys(CASES, 0)
        self.references: dict[str, str] = {}
        self.n = 0

    def locksmith(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "locksmith", *args],
            env=self.env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def _names(self, case: str) -> tuple[str, str]:
        self.n += 1
        return f"bench/cli-latency/{case}-{self.n}", f"bench-cli-latency-{case}-{self.n}"

    def _held(self, prefix: str, limit: int) -> list[LockManager]:
        holders = []
        for _ in range(limit):
            mgr = LockManager(Consul(self.addr), name="bench-holder", lock_delay=0)
            guard = mgr.consul_lock(prefix) if limit == 1 else mgr.semaphore(prefix, limit)
            assert guard.acquire(timeout=30) is not None
            holders.append(mgr)
        return holders

    def _release(self, holders: list[LockManager]) -> None:
        for mgr in holders:
            mgr.close()
            mgr.consul.close()

    def _left(self, case: str, name: str) -> None:
        self.leftovers[case] += sum(1 for s in self.consul.sessions.list() if s.name == name)

    def timeout(self, case: str) -> float:
        limit = 1 if case == "timeout-lock" else 2
        prefix, name = self._names(case)
        holders = self._held(prefix, limit)
        try:
            proc = self.locksmith(
                "-v", "--log-format", "json", "run", "-n", str(limit), "--name", name,
                "--timeout", f"{TIMEOUT}s", prefix, "--", "true",
            )  # fmt: skip
            _out, err = proc.communicate(timeout=60)
            exited = time.time()
            assert proc.returncode == 75, err
            started = None
            for event in ("cli.acquiring", "session.created"):
                found = [t for line in err.splitlines() if (t := _stamp(line, event))]
                if found:
                    started = found[0]
                    self.references[case] = event
                    break
            assert started is not None, err
            self._left(case, name)
            return exited - (started + TIMEOUT)
        finally:
            self._release(holders)
            self.consul.kv.delete(prefix, recurse=True)

    def signal(self, case: str) -> float:
        sig = signal.SIGTERM if case == "SIGTERM" else signal.SIGINT
        prefix, name = self._names(case)
        holders = self._held(prefix, 1)
        try:
            proc = self.locksmith("run", "--name", name, prefix, "--", "true")
            deadline = time.monotonic() + 60
            while not any(s.name == name for s in self.consul.sessions.list()):
                assert time.monotonic() < deadline, "the waiter never made its session"
                time.sleep(0.02)
            time.sleep(SETTLE)
            sent = time.monotonic()
            proc.send_signal(sig)
            proc.wait(60)
            late = time.monotonic() - sent
            proc.communicate()
            assert proc.returncode in (130, 128 + sig), proc.returncode
            self._left(case, name)
            return late
        finally:
            self._release(holders)
            self.consul.kv.delete(prefix, recurse=True)

    def command_end(self, case: str) -> float:
        prefix, name = self._names(case)
        script = "import time; print(repr(time.time()), flush=True)"
        proc = self.locksmith(
            "run", "--lock-delay", "0", "--name", name, prefix, "--", sys.executable, "-c", script
        )
        out, err = proc.communicate(timeout=60)
        exited = time.time()
        assert proc.returncode == 0, err
        self._left(case, name)
        if self.consul.kv.get(f"{prefix}/.lock") is not None:
            self.leftovers[case] += 1
        self.consul.kv.delete(prefix, recurse=True)
        return exited - float(out.strip())

    def run(self, case: str) -> float:
        fn: Callable[[str], float] = {
            "timeout-lock": self.timeout,
            "timeout-semaphore": self.timeout,
            "SIGTERM": self.signal,
            "SIGINT": self.signal,
            "command-end": self.command_end,
        }[case]
        return fn(case)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0] if __doc__ else "cli latency")
    p.add_argument("--tree", type=Path, default=c.ROOT, help="source tree whose CLI to run")
    p.add_argument("--label", default=None, help="suffix of the result file (e.g. before)")
    args = p.parse_args()
    repeat = args.repeat or (3 if args.quick else 10)
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    binary = args.consul or find_consul()
    with c.dev_agent(binary, node="bench-cli-latency") as agent:
        bench = Bench(agent.http_addr, args.tree.resolve())
        for r in range(repeat):
            order = list(CASES)
            rng.shuffle(order)
            for case in order:
                samples[case].append(bench.run(case))
            print(f"round {r + 1}/{repeat} done", flush=True)
        bench.consul.close()
    rows = []
    results: dict[str, Any] = {}
    for case in CASES:
        ms = [x * 1000 for x in samples[case]]
        s = c.summarize(ms)
        results[case] = {"latency_ms": s, "samples_ms": ms, "leftovers": bench.leftovers[case]}
        if case in bench.references:
            results[case]["reference_event"] = bench.references[case]
        rows.append(
            [case, c.fmt(s["median"], 1), c.fmt(s["p90"], 1), c.fmt(s["max"], 1),
             bench.leftovers[case]]
        )  # fmt: skip
    print(f"\nlocksmith run exit latency (ms), tree {args.tree}, {repeat} rounds")
    c.print_table(["case", "median", "p90", "max", "leftovers"], rows)
    name = f"cli_latency.{args.label}" if args.label else "cli_latency"
    c.save(
        name,
        args.quick,
        args.out,
        {
            "benchmark": "cli_latency",
            "target_ms": 100,
            "tree": str(args.tree),
            "tree_source_sha256": c.source_digest(args.tree.resolve()),
            "repeat": repeat,
            "timeout_s": TIMEOUT,
            "machine": c.machine_info(binary),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
