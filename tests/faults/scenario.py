"""A seeded, randomized fault scenario against a real 3-server Consul cluster.

:class:`Scenario` starts lock holders — threads in this process and separate processes
(``holder.py``) — pointed at different servers, some directly and some through a
:class:`~locksmith.testing._proxy.FaultProxy`, all contending for a few keys. Then, round after
round, it injects one fault chosen by a seeded RNG, heals it, and lets the holders settle. At the
end it stops every holder, and :meth:`Scenario.finish` checks the invariants of
:mod:`faults.invariants` plus what must be left on the cluster: no session and no held key of a
holder that closed, and the sessions and ephemeral keys of killed holders gone once Consul reaped
them.

The same seed gives the same holders, the same fault sequence and the same targets (timing on a
shared machine still varies: the invariants do not depend on it).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults.holder import HolderConfig, now, run_holder
from faults.invariants import Event, Fault, check
from locksmith import Consul, LocksmithError
from locksmith.testing import ConsulCluster
from locksmith.testing._proxy import FaultProxy

__all__ = ["ALL_FAULTS", "Scenario", "ScenarioConfig", "ScenarioResult"]

HOLDER_SCRIPT = Path(__file__).with_name("holder.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
FAULT_CHECK = "locksmith-fault"

ALL_FAULTS = (
    "leader_kill",
    "follower_kill",
    "server_freeze",
    "server_restart",
    "proxy_blackhole",
    "proxy_delay",
    "proxy_reset",
    "holder_pause",
    "holder_kill",
    "session_destroy",
    "key_delete",
    "check_critical",
)


@dataclass
class ScenarioConfig:
    """Knobs of one scenario run.

    Attributes:
        seed: Seeds everything random (holders, faults, targets, durations).
        rounds: Faults to inject; with ``cover_all`` the first ``len(faults)`` rounds use each
            kind once, in a seeded order.
        faults: Fault kinds to choose from.
        ttl: Session TTL of every holder.
        lock_delay: Lock-delay of the TTL-only holders (LockManager's default: no checks);
            holders bound to serfHealth and the scenario's check use ``ttl``, as LockManager
            requires (``docs/concepts/health-checks.md``: a check may end a session before
            TTL).
        thread_holders: Holders running as threads of this process.
        process_holders: Holders running as processes.
        keys: Lock keys contended for.
        settle: (min, max) seconds of normal operation after each healed fault.
        cover_all: Use every fault kind once before choosing at random.
        strict_orphans: A session of a holder that closed normally still existing right after
            the close is a violation. False: it is noted, and must only be gone (reaped by its
            TTL) within 2xTTL + 30 s. (Seen after a blackhole: a session create that reached
            Consul but whose answer never came back, so the client never knew the ID.)
    """

    seed: int = 1
    rounds: int = 12
    faults: tuple[str, ...] = ALL_FAULTS
    ttl: float = 10.0
    lock_delay: float = 2.0
    thread_holders: int = 2
    process_holders: int = 3
    keys: int = 2
    settle: tuple[float, float] = (1.0, 3.0)
    cover_all: bool = True
    strict_orphans: bool = True


@dataclass
class ScenarioResult:
    """What a run produced."""

    config: ScenarioConfig
    run_id: str
    events: list[Event]
    faults: list[Fault]
    violations: list[str]
    paused: dict[str, list[tuple[float, float]]]
    killed: dict[str, float]
    duration: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for reports."""
        kinds: dict[str, int] = {}
        for ev in self.events:
            kinds[ev["ev"]] = kinds.get(ev["ev"], 0) + 1
        reasons: dict[str, int] = {}
        for ev in self.events:
            if ev["ev"] == "lost":
                reasons[ev["reason"]] = reasons.get(ev["reason"], 0) + 1
        fault_kinds: dict[str, int] = {}
        for f in self.faults:
            fault_kinds[f.kind] = fault_kinds.get(f.kind, 0) + 1
        return {
            "seed": self.config.seed,
            "run_id": self.run_id,
            "rounds": len(self.faults),
            "duration_s": round(self.duration, 1),
            "events": kinds,
            "loss_reasons": reasons,
            "faults": fault_kinds,
            "violations": len(self.violations),
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {
            "summary": self.summary(),
            "config": asdict(self.config),
            "violations": self.violations,
            "notes": self.notes,
            "faults": [asdict(f) for f in self.faults],
            "paused": self.paused,
            "killed": self.killed,
            "events": self.events,
        }


class _Holder:
    """One running holder: a thread or a process, and what it is holding now."""

    def __init__(self, cfg: HolderConfig, kind: str, server: int, proxied: bool) -> None:
        self.cfg = cfg
        self.kind = kind  # "thread" | "process"
        self.server = server
        self.proxied = proxied
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.current: Event | None = None  # the open hold's acquire event
        self.closed = False
        self.killed = False
        self.crashed: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.holder


class Scenario:
    """Runs one seeded scenario on ``cluster`` (see the module docstring)."""

    def __init__(
        self,
        cluster: ConsulCluster,
        config: ScenarioConfig,
        log: Callable[[str], None] = print,
        log_dir: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.run_id = f"{config.seed}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.prefix = f"faults/{self.run_id}/"
        self.session_prefix = f"faults-{self.run_id}-"
        self.keys = [f"{self.prefix}locks/k{i}" for i in range(config.keys)]
        self._log = log
        self.log_dir = log_dir
        self._mu = threading.Lock()
        self.events: list[Event] = []
        self.faults: list[Fault] = []
        self.paused: dict[str, list[tuple[float, float]]] = {}
        self.killed: dict[str, float] = {}
        self.notes: list[str] = []
        self.holders: list[_Holder] = []
        self.proxies: list[FaultProxy] = []
        self._next_holder = 0
        self._started = 0.0

    # ------------------------------------------------------------------ plumbing

    def log(self, msg: str) -> None:
        self._log(f"[faults {now():.3f}] {msg}")

    def _emit(self, holder: _Holder, ev: Event) -> None:
        with self._mu:
            self.events.append(ev)
            if ev["ev"] == "acquire":
                holder.current = ev
            elif ev["ev"] == "end":
                holder.current = None

    def admin(self) -> Consul:
        """A direct client to a running server (the leader when there is one)."""
        idx = self.cluster.leader()
        if idx is None:
            running = self.cluster.running()
            idx = running[0] if running else 0
        return Consul(self.cluster.http_addrs[idx], timeout=10.0)

    def _agent_call(self, server: int, method: str, path: str, body: Any = None) -> None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.cluster.http_urls[server]}{path}", data=data, method=method
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def _retry(self, what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except (OSError, LocksmithError) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what}: still failing after {timeout}s: {exc}") from exc
                time.sleep(0.5)

    def _ensure_check(self, server: int) -> None:
        """Register the scenario's health check on a server's agent, passing (if it is not)."""

        def ensure() -> None:
            req = urllib.request.Request(f"{self.cluster.http_urls[server]}/v1/agent/checks")
            with urllib.request.urlopen(req, timeout=10) as resp:
                checks = json.loads(resp.read())
            if checks.get(FAULT_CHECK, {}).get("Status") == "passing":
                return
            self._agent_call(
                server,
                "PUT",
                "/v1/agent/check/register",
                {"ID": FAULT_CHECK, "Name": FAULT_CHECK, "TTL": "24h", "Status": "passing"},
            )

        self._retry(f"register {FAULT_CHECK} on server {server}", ensure)

    def _set_check(self, server: int, status: str) -> None:
        self._retry(
            f"check {status} on server {server}",
            lambda: self._agent_call(server, "PUT", f"/v1/agent/check/{status}/{FAULT_CHECK}"),
        )

    # ------------------------------------------------------------------ holders

    def _holder_config(self, name: str, server: int, proxied: bool) -> HolderConfig:
        idx = int(name.rsplit("-", 1)[-1].lstrip("tp"))
        # Every other holder binds health checks (serfHealth and the scenario's own check);
        # LockManager then requires lock-delay >= TTL. The others are TTL-only (the default).
        bound = idx % 2 == 1
        addr = self.proxies[server].addr if proxied else self.cluster.http_addrs[server]
        return HolderConfig(
            holder=name,
            addr=addr,
            keys=list(self.keys),
            data_prefix=f"{self.prefix}data/",
            session_name=f"{self.session_prefix}{name}",
            ttl=self.cfg.ttl,
            lock_delay=self.cfg.ttl if bound else self.cfg.lock_delay,
            checks=["serfHealth", FAULT_CHECK] if bound else None,
            seed=self.rng.randrange(2**31),
            member_key=f"{self.prefix}members/{name}",
        )

    def _start_holder(self, kind: str) -> _Holder:
        n = self._next_holder
        self._next_holder += 1
        server = n % len(self.cluster.nodes)
        proxied = (n // len(self.cluster.nodes)) % 2 == 0 if kind == "process" else n % 2 == 1
        name = f"{kind[0]}-{n}"
        h = _Holder(self._holder_config(name, server, proxied), kind, server, proxied)
        if kind == "thread":

            def target() -> None:
                try:
                    run_holder(h.cfg, lambda ev: self._emit(h, ev), h.stop)
                    h.closed = True
                except BaseException as exc:  # recorded as a violation
                    h.crashed = f"{type(exc).__name__}: {exc}"
                    raise

            h.thread = threading.Thread(target=target, name=f"holder-{name}", daemon=True)
            h.thread.start()
        else:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO_ROOT), str(REPO_ROOT / "tests"), env.get("PYTHONPATH", "")]
            )
            stderr: Any = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                stderr = (self.log_dir / f"{name}.log").open("w")
            try:
                h.proc = subprocess.Popen(
                    [sys.executable, str(HOLDER_SCRIPT), h.cfg.to_json()],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=env,
                )
            finally:
                if stderr is not subprocess.DEVNULL:
                    stderr.close()
            h.reader = threading.Thread(
                target=self._read_process, args=(h,), name=f"reader-{name}", daemon=True
            )
            h.reader.start()
        self.holders.append(h)
        self.log(f"holder {name} ({kind}) -> server {server}{' via proxy' if proxied else ''}")
        return h

    def _read_process(self, h: _Holder) -> None:
        assert h.proc is not None and h.proc.stdout is not None
        for raw in h.proc.stdout:
            line = raw.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                self.notes.append(f"{h.name}: non-JSON output {line[:200]!r}")
                continue
            if ev.get("ev") == "closed":
                h.closed = True
            self._emit(h, ev)

    def _stop_holders(self, timeout: float) -> None:
        for h in self.holders:
            h.stop.set()
            if h.proc is not None and h.proc.poll() is None and h.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    h.proc.stdin.write("stop\n")
                    h.proc.stdin.close()
        deadline = time.monotonic() + timeout
        for h in self.holders:
            left = max(0.1, deadline - time.monotonic())
            if h.thread is not None:
                h.thread.join(left)
                if h.thread.is_alive():
                    self.notes.append(f"{h.name}: thread still running after {timeout}s")
            if h.proc is not None:
                try:
                    h.proc.wait(left)
                except subprocess.TimeoutExpired:
                    self.notes.append(f"{h.name}: process did not stop in {timeout}s: killed")
                    h.proc.kill()
                    h.proc.wait(10)
                if h.reader is not None:
                    h.reader.join(10)
                _close_pipes(h.proc)

    def _holding(self, kind: str | None = None) -> list[_Holder]:
        with self._mu:
            return [
                h
                for h in self.holders
                if h.current is not None
                and not h.killed
                and (kind is None or h.kind == kind)
                and (h.proc is None or h.proc.poll() is None)
            ]

    def _holding_wait(self) -> float:
        """How long a fault may wait for a holder to hold: a key can stay unavailable for
        2xTTL (a dead holder's session) plus the longest lock-delay (TTL, checks bound)."""
        return 3 * self.cfg.ttl + 5.0

    def _wait_holding(self, kind: str | None, timeout: float) -> _Holder | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cands = self._holding(kind)
            if cands:
                return self.rng.choice(sorted(cands, key=lambda h: h.name))
            time.sleep(0.1)
        return None

    # ------------------------------------------------------------------ faults

    def _target_server(self, pred: Callable[[_Holder], bool], n: int) -> int:
        """A server (or proxy) index behind a holder that holds a lock now, if any matches."""
        cands = sorted((h for h in self._holding() if pred(h)), key=lambda h: h.name)
        if cands:
            return self.rng.choice(cands).server
        return self.rng.randrange(n)

    def _fault(self, kind: str, t0: float, **kw: Any) -> Fault:
        f = Fault(kind=kind, t_start=t0, t_end=now(), **kw)
        self.faults.append(f)
        return f

    def _sleep(self, lo: float, hi: float) -> float:
        d = self.rng.uniform(lo, hi)
        time.sleep(d)
        return d

    def inject(self, kind: str) -> Fault | None:
        """Inject one fault, wait, heal it. Returns what was done (None: no target)."""
        c = self.cluster
        t0 = now()
        if kind == "leader_kill":
            i = c.wait_for_leader(60)
            c.kill(i)
            c.wait_for_leader(60, exclude=(i,))
            d = self._sleep(0.5, 3.0)
            c.restart(i)
            return self._fault(kind, t0, detail={"server": i, "down_s": d})
        if kind == "follower_kill":
            lead = c.wait_for_leader(60)
            i = self.rng.choice([j for j in c.running() if j != lead])
            c.kill(i)
            d = self._sleep(1.0, 6.0)
            c.restart(i)
            return self._fault(kind, t0, detail={"server": i, "down_s": d})
        if kind == "server_freeze":
            i = self.rng.randrange(len(c.nodes))
            c.freeze(i)
            d = self._sleep(2.0, 8.0)
            c.cont(i)
            return self._fault(kind, t0, detail={"server": i, "frozen_s": d})
        if kind == "server_restart":
            i = self.rng.randrange(len(c.nodes))
            c.restart(i)
            return self._fault(kind, t0, detail={"server": i})
        if kind in ("proxy_blackhole", "proxy_delay", "proxy_reset"):
            i = self._target_server(lambda h: h.proxied, len(self.proxies))
            p = self.proxies[i]
            if kind == "proxy_blackhole":
                p.blackhole()
                d = self._sleep(2.0, self.cfg.ttl * 1.5)
                detail: dict[str, Any] = {"proxy": i, "blackhole_s": d}
            elif kind == "proxy_delay":
                lag = self.rng.uniform(0.2, 2.5)
                p.delay(lag)
                d = self._sleep(3.0, 10.0)
                detail = {"proxy": i, "lag_s": lag, "for_s": d}
            else:
                p.reset()
                d = self._sleep(0.5, 3.0)
                detail = {"proxy": i, "reset_s": d}
            p.heal()
            return self._fault(kind, t0, detail=detail)
        if kind == "holder_pause":
            h = self._wait_holding("process", self._holding_wait())
            if h is None or h.proc is None:
                return None
            held = h.current
            pause = 2 * self.cfg.ttl + self.rng.uniform(2.0, 5.0)
            t_stop = now()
            h.proc.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            h.proc.send_signal(signal.SIGCONT)
            t_cont = now()
            self.paused.setdefault(h.name, []).append((t_stop, t_cont))
            return self._fault(
                kind,
                t0,
                holder=h.name,
                key=held["key"] if held else None,
                detail={"paused_s": t_cont - t_stop, "token": held and held["token"]},
            )
        if kind == "holder_kill":
            h = self._wait_holding("process", self._holding_wait())
            if h is None or h.proc is None:
                return None
            held = h.current
            h.proc.kill()
            h.killed = True
            self.killed[h.name] = now()
            h.proc.wait(10)
            if h.reader is not None:
                h.reader.join(10)
            _close_pipes(h.proc)
            repl = self._start_holder("process")
            return self._fault(
                kind,
                t0,
                holder=h.name,
                key=held["key"] if held else None,
                detail={"replacement": repl.name, "token": held and held["token"]},
            )
        if kind in ("session_destroy", "key_delete"):
            h = self._wait_holding(None, self._holding_wait())
            if h is None:
                return None
            held = h.current
            assert held is not None
            with self.admin() as admin:
                if kind == "session_destroy":
                    admin.sessions.destroy(held["session"])
                else:
                    admin.kv.delete(held["key"])
            t1 = now()
            time.sleep(0.5)
            f = Fault(
                kind,
                t0,
                t1,
                holder=h.name,
                key=held["key"],
                session=held["session"],
                detail={"token": held["token"]},
            )
            self.faults.append(f)
            return f
        if kind == "check_critical":
            i = self._target_server(lambda h: FAULT_CHECK in (h.cfg.checks or []), len(c.nodes))
            bound = [h.name for h in self.holders if h.server == i and h.cfg.checks]
            self._set_check(i, "fail")
            d = self._sleep(0.5, 3.0)
            self._set_check(i, "pass")
            return self._fault(kind, t0, detail={"server": i, "critical_s": d, "holders": bound})
        raise ValueError(f"unknown fault {kind!r}")

    def _heal_all(self) -> None:
        for p in self.proxies:
            p.heal()
        for i in range(len(self.cluster.nodes)):
            state = self.cluster.state(i)
            if state == "stopped":
                self.cluster.cont(i)
            elif state == "killed":
                self.cluster.restart(i)
        self.cluster.wait_for_leader(90, all_nodes=True)
        for i in range(len(self.cluster.nodes)):
            self._ensure_check(i)

    # ------------------------------------------------------------------ run

    def _plan(self) -> Iterator[str]:
        kinds = list(self.cfg.faults)
        if self.cfg.cover_all:
            order = list(kinds)
            self.rng.shuffle(order)
            yield from order
        while True:
            yield self.rng.choice(kinds)

    def run(self) -> ScenarioResult:
        """Run every round, stop the holders, check the invariants and the leftovers."""
        self._started = now()
        c = self.cluster
        c.wait_for_leader(90, all_nodes=True)
        for i in range(len(c.nodes)):
            self._ensure_check(i)
        self.proxies = [FaultProxy(addr).start() for addr in c.http_addrs]
        try:
            for _ in range(self.cfg.thread_holders):
                self._start_holder("thread")
            for _ in range(self.cfg.process_holders):
                self._start_holder("process")
            time.sleep(2.0)
            plan = self._plan()
            for r in range(self.cfg.rounds):
                kind = next(plan)
                self.log(f"round {r}: {kind}")
                try:
                    f = self.inject(kind)
                finally:
                    self._heal_all()
                if f is None:
                    self.notes.append(f"round {r}: {kind} found no target")
                else:
                    self.log(f"round {r}: {kind} done {f.detail}")
                self._sleep(*self.cfg.settle)
            self._stop_holders(timeout=4 * self.cfg.ttl)
        finally:
            for h in self.holders:
                if h.proc is not None and h.proc.poll() is None:
                    h.proc.kill()
                    h.proc.wait(10)
            for p in self.proxies:
                p.stop()
        return self.finish()

    def finish(self) -> ScenarioResult:
        """Check invariants and leftovers on the cluster."""
        closed = {h.name for h in self.holders if h.closed and not h.killed}
        violations = check(
            self.events,
            self.faults,
            ttl=self.cfg.ttl,
            paused=self.paused,
            killed=self.killed,
            closed=closed,
        )
        for h in self.holders:
            if h.crashed:
                violations.append(f"{h.name}: holder crashed: {h.crashed}")
            elif not h.killed and not h.closed:
                violations.append(f"{h.name}: holder did not close normally")
        violations += self._check_leftovers(closed)
        return ScenarioResult(
            config=self.cfg,
            run_id=self.run_id,
            events=sorted(self.events, key=lambda e: float(e.get("t", 0.0))),
            faults=self.faults,
            violations=violations,
            paused=self.paused,
            killed=self.killed,
            duration=now() - self._started,
            notes=self.notes,
        )

    def _sessions(self) -> list[tuple[str, str]]:
        def list_them() -> list[tuple[str, str]]:
            with self.admin() as admin:
                return [
                    (s.id, s.name or "")
                    for s in admin.sessions.list()
                    if (s.name or "").startswith(self.session_prefix)
                ]

        out: list[tuple[str, str]] = self._retry("list sessions", list_them)
        return out

    def _check_leftovers(self, closed: set[str]) -> list[str]:
        out: list[str] = []
        owner = {f"{self.session_prefix}{h.name}": h.name for h in self.holders}
        owner.update({f"{self.session_prefix}{h.name}-ephemeral": h.name for h in self.holders})
        for sid, name in self._sessions():
            if owner.get(name) in closed:
                msg = f"orphaned session {sid} ({name}) after its holder closed"
                if self.cfg.strict_orphans:
                    out.append(msg)
                else:
                    self.notes.append(msg + " (must be reaped by its TTL)")
        # Killed holders: Consul reaps their sessions at up to 2xTTL after the last renewal
        # (a leader change restarts that timer): wait for it, bounded.
        deadline = time.monotonic() + 4 * self.cfg.ttl + 30
        left = self._sessions()
        while left and time.monotonic() < deadline:
            time.sleep(1.0)
            left = self._sessions()
        for sid, name in left:
            out.append(f"session {sid} ({name}) still exists long after every holder ended")

        def list_keys() -> list[Any]:
            with self.admin() as admin:
                return admin.kv.list(self.prefix)

        for e in self._retry("list keys", list_keys):
            if e.key.startswith(f"{self.prefix}members/"):
                out.append(f"ephemeral key {e.key} outlived its session {e.session}")
            elif e.session is not None:
                out.append(f"key {e.key} still held by session {e.session} after every holder")
        return out


def write_report(result: ScenarioResult, directory: Path) -> tuple[Path, Path]:
    """Write the summary ``faults-<run>.md`` under ``directory`` and the raw report (every
    event and fault, megabytes of JSON) as ``raw/faults-<run>.json`` under it.

    ``bench/results/raw/`` is git-ignored: summaries are committed, raw reports are not.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"faults-{stamp}-seed{result.config.seed}"
    (directory / "raw").mkdir(parents=True, exist_ok=True)
    js = directory / "raw" / f"{name}.json"
    md = directory / f"{name}.md"
    js.write_text(json.dumps(result.to_json(), indent=1, default=str))
    s = result.summary()
    lines = [
        f"# Fault soak {stamp} (seed {result.config.seed})",
        "",
        f"- rounds: {s['rounds']}, duration: {s['duration_s']} s, TTL {result.config.ttl} s",
        f"- holders: {result.config.thread_holders} threads, {result.config.process_holders} "
        f"processes (+ replacements), keys: {result.config.keys}",
        f"- events: {s['events']}",
        f"- loss reasons: {s['loss_reasons']}",
        f"- violations: **{s['violations']}**",
        "",
        "| fault | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(s["faults"].items())],
        "",
        "## Violations",
        "",
        *([f"- {v}" for v in result.violations] or ["none"]),
        "",
        "## Notes",
        "",
        *([f"- {n}" for n in result.notes] or ["none"]),
        "",
        f"Raw report (not committed): `raw/{js.name}`",
        "",
        f"Reproduce: `LOCKSMITH_SOAK=1 LOCKSMITH_FAULT_SEED={result.config.seed} "
        f"LOCKSMITH_SOAK_ROUNDS={result.config.rounds} python -m pytest -m soak "
        "tests/faults/test_faults_soak.py`",
    ]
    md.write_text("\n".join(lines) + "\n")
    return js, md


def _close_pipes(proc: subprocess.Popen[str]) -> None:
    """Close a holder process's pipes (unclosed ones warn later, in whatever test runs next)."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
