"""Seeded partition schedules, run against workloads on a :class:`NetnsCluster`, and checked.

:func:`make_schedule` turns a seed into a list of :class:`Round` (kind, target, mechanism,
duration: reproducible from the seed alone). :class:`PartitionRun` builds a
:class:`~locksmith.testing.NetnsCluster`, starts one application process per application host
(:mod:`locksmith.testing._workload`) and, optionally, a ``consul lock`` loop beside it, then
plays the rounds: cut, wait, heal, wait until every lock is taken again. Meanwhile it samples
Consul (keys, registers, sessions) every second through a server's own loopback. At the end it
stops the applications, waits until Consul forgets them, merges every history and checks it
(:mod:`locksmith.testing._checker`).

Round kinds (a *holder* target, ``holder:<lock|election|semaphore|consul-lock>``, is
resolved when the round starts, from who holds that lock then; it falls back to the seed's
host when nobody does):

* ``isolate_host``: agent host ``hK`` (and so its applications) cut from every other host;
* ``isolate_leader``: the Raft leader cut from everyone;
* ``split_leader``: {the leader, ``hK``} on one side, the other servers and agent hosts on the
  other;
* ``cut_app``: application host ``aK`` cut from its agent;
* ``cut_agent``: agent host ``hK`` cut from every server (still gossiping with other agents);
* ``flap``: ``hK``'s or ``aK``'s link going down and up, seeded periods of 0.5-3 s.

Durations: ``short`` (2 s to 0.6xTTL: a renewal or two fail), ``long`` (2xTTL + lock-delay
+ 3-8 s: locksmith's server side reaps the cut session and a rival takes over while the cut
holder still runs) and ``very_long`` (53-60 s: long enough for ``consul lock``, whose session
has a 15 s TTL and a 15 s lock-delay, to be taken over too).
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._checker import CheckConfig, CheckResult, Violation, check_consul_lock, check_history
from ._history import Event, History, HistoryTail, read_history
from ._netns import CutKind, NetnsCluster
from ._workload import RUNNERS, ConsulLockConfig, WorkloadConfig

__all__ = [
    "ROUND_KINDS",
    "PartitionRun",
    "Round",
    "RunConfig",
    "RunResult",
    "check_run",
    "make_schedule",
    "recheck",
    "render_report",
]

ROUND_KINDS = ("isolate_host", "isolate_leader", "split_leader", "cut_app", "cut_agent", "flap")
HOLDER_TARGETS = (
    "holder:lock",
    "holder:election",
    "holder:semaphore",
    "holder:consul-lock",
)
#: ``consul lock``'s session: TTL 15 s (api.DefaultLockSessionTTL), lock-delay 15 s (default).
CONSUL_LOCK_TTL = 15.0
CONSUL_LOCK_DELAY = 15.0


@dataclass(frozen=True)
class Round:
    """One round of a schedule.

    Attributes:
        index: Its number (from 1).
        kind: One of :data:`ROUND_KINDS`.
        target: ``holder:<lock|election|semaphore|consul-lock>``, ``host:K`` or ``leader``.
        fallback: The host index used when a holder target finds no holder.
        how: ``drop`` or ``link`` (see :mod:`locksmith.testing._netns`).
        length: ``short``, ``long`` or ``very_long``.
        duration: Seconds the cut lasts.
        flaps: For ``flap``: the (down, up) periods.
        flap_side: For ``flap``: ``agent`` (hK's switch link) or ``app`` (aK's link).
        settle: Seconds of calm after the locks are live again.
    """

    index: int
    kind: str
    target: str
    fallback: int
    how: CutKind
    length: str
    duration: float
    flaps: tuple[tuple[float, float], ...] = ()
    flap_side: str = "agent"
    settle: float = 2.0


def _duration(rng: random.Random, length: str, ttl: float, lock_delay: float) -> float:
    if length == "short":
        return round(rng.uniform(2.0, max(2.5, 0.6 * ttl)), 2)
    if length == "long":
        return round(2 * ttl + lock_delay + rng.uniform(3.0, 8.0), 2)
    return round(2 * CONSUL_LOCK_TTL + CONSUL_LOCK_DELAY + rng.uniform(8.0, 15.0), 2)


def make_schedule(
    seed: int,
    rounds: int,
    *,
    hosts: int = 3,
    kinds: Sequence[str] = ROUND_KINDS,
    ttl: float = 10.0,
    lock_delay: float = 1.0,
    lengths: dict[str, float] | None = None,
    length_by_kind: dict[str, str] | None = None,
    cover_all: bool = True,
    targets: Sequence[str] | None = None,
) -> list[Round]:
    """The rounds for ``seed`` (the same seed and arguments give the same list).

    Args:
        seed: The seed.
        rounds: How many rounds.
        hosts: Application hosts in the cluster (for ``host:K`` targets).
        kinds: Round kinds to choose from.
        ttl: The applications' TTL (durations scale with it).
        lock_delay: Their lock-delay.
        lengths: Weights of ``short``, ``long`` and ``very_long``.
        length_by_kind: A fixed length for some kinds (the CI profile's).
        cover_all: The first ``len(kinds)`` rounds use every kind once, in a seeded order.
        targets: Target choices (default: the holder targets and ``host:K``); ``host:*``
            stands for the seed's host.
    """
    for k in kinds:
        if k not in ROUND_KINDS:
            raise ValueError(f"unknown round kind {k!r}")
    weights = lengths or {"short": 0.35, "long": 0.45, "very_long": 0.2}
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    out: list[Round] = []
    for i in range(1, rounds + 1):
        kind = order[i - 1] if cover_all and i <= len(order) else rng.choice(list(kinds))
        length = rng.choices(list(weights), weights=list(weights.values()))[0]
        length = (length_by_kind or {}).get(kind, length)
        fallback = rng.randrange(hosts)
        target = rng.choice(list(targets) if targets else [*HOLDER_TARGETS, "host:*"])
        target = target.replace("host:*", f"host:{fallback}")
        how: CutKind = rng.choice(["drop", "link"])
        flaps: tuple[tuple[float, float], ...] = ()
        side = "agent"
        if kind == "isolate_leader":
            target = "leader"
        if kind in ("split_leader", "cut_agent"):
            how = "drop"  # a link down would cut the host from everyone
        duration = _duration(rng, length, ttl, lock_delay)
        if kind == "flap":
            how = "link"
            side = rng.choice(["agent", "app"])
            periods = []
            total = 0.0
            while total < duration:
                down, up = round(rng.uniform(0.5, 3.0), 2), round(rng.uniform(0.5, 3.0), 2)
                periods.append((down, up))
                total += down + up
            flaps = tuple(periods)
            duration = round(total, 2)
        settle = round(rng.uniform(1.0, 3.0), 2)
        out.append(Round(i, kind, target, fallback, how, length, duration, flaps, side, settle))
    return out


@dataclass
class RunConfig:
    """One partition run.

    Attributes:
        seed: Seeds the schedule and the workloads.
        rounds: Rounds to play.
        kinds: Round kinds to choose from.
        lengths: Weights of the durations (see :func:`make_schedule`).
        length_by_kind: Fixed durations of some kinds (see :func:`make_schedule`).
        targets: Target choices (see :func:`make_schedule`).
        cover_all: Every kind once first.
        servers: Consul servers (3 or 5).
        hosts: Application hosts (each with its agent host).
        ttl: The applications' session TTL.
        lock_delay: Their lock-delay.
        request_timeout: Their client's per-request timeout.
        locks: Lock names each application contends for.
        election: Run the election workload.
        semaphore_limit: Slots of the semaphore (0: none).
        fair: Run the fair-lock workload (on the threaded applications).
        hold: (min, max) seconds of a hold, usually.
        long_hold_share: The share of long holds (12-25 s: past the TTL, so that a cut holder
            still wants its lock when its lease deadline comes).
        consul_lock: Run a ``consul lock`` loop on every application host too.
        cl_long_hold: (min, max) seconds of a long ``consul lock`` child: a job or a service
            that runs for minutes, as ``consul lock`` is often used for, and past the 45 s
            after which a rival can take over a cut holder's lock.
        cl_long_hold_share: The share of long children.
        front_end: Workload runner of every application: ``threaded``, ``async`` (see
            ``_workload.RUNNERS``), or ``mixed``: threaded on even application hosts, asyncio
            on odd ones, so that both front-ends contend for the same keys.
        factory: Manager factory of the runner.
        election_allowance: Time allowed for a Consul leader election (in the bounds).
        sample_every: Seconds between samples of Consul's state.
        raft_multiplier: Of the servers.
    """

    seed: int = 1
    rounds: int = 6
    kinds: tuple[str, ...] = ROUND_KINDS
    lengths: dict[str, float] | None = None
    length_by_kind: dict[str, str] | None = None
    cover_all: bool = True
    targets: tuple[str, ...] | None = None
    servers: int = 3
    hosts: int = 3
    ttl: float = 10.0
    lock_delay: float = 1.0
    request_timeout: float = 3.0
    locks: tuple[str, ...] = ("l0",)
    election: bool = True
    semaphore_limit: int = 2
    fair: bool = True
    hold: tuple[float, float] = (1.0, 4.0)
    long_hold_share: float = 0.2
    consul_lock: bool = True
    cl_long_hold: tuple[float, float] = (60.0, 120.0)
    cl_long_hold_share: float = 0.3
    front_end: str = "mixed"
    factory: str = "default"
    election_allowance: float = 20.0
    sample_every: float = 1.0
    raft_multiplier: int = 1

    def __post_init__(self) -> None:
        if self.front_end != "mixed" and self.front_end not in RUNNERS:
            raise ValueError(f"front_end {self.front_end!r}: not mixed or one of {sorted(RUNNERS)}")

    def front_end_of(self, host: int) -> str:
        """The workload runner of application host ``host``."""
        if self.front_end == "mixed":
            return "async" if host % 2 else "threaded"
        return self.front_end

    def check_config(self, session_prefix: str) -> CheckConfig:
        """The checker's bounds for this run."""
        return CheckConfig(
            ttl=self.ttl,
            lock_delay=self.lock_delay,
            election_allowance=self.election_allowance,
            semaphore_limit=self.semaphore_limit,
            session_prefix=session_prefix,
        )


@dataclass
class RunResult:
    """What a run produced (the raw histories stay in ``out_dir``)."""

    config: RunConfig
    run_id: str
    schedule: list[Round]
    out_dir: Path
    events: list[Event]
    locksmith: CheckResult
    consul_lock: CheckResult | None
    duration: float
    rounds_done: int
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        """locksmith's violations (``consul lock``'s are reported, not counted here)."""
        return self.locksmith.violations

    def summary(self) -> dict[str, Any]:
        """The figures of the run."""
        kinds: dict[str, dict[str, int]] = {}
        for e in self.events:
            if e.get("ev") == "cut" and e.get("proc") == "run":
                row = kinds.setdefault(str(e["kind"]), {"short": 0, "long": 0, "very_long": 0})
                row[str(e["length"])] += 1
        return {
            "run_id": self.run_id,
            "seed": self.config.seed,
            "rounds": self.rounds_done,
            "duration_s": round(self.duration, 1),
            "partitions": kinds,
            "locksmith": {
                **self.locksmith.stats,
                "violations": len(self.locksmith.violations),
                "by_rule": self.locksmith.by_rule(),
            },
            "consul_lock": (
                {**self.consul_lock.stats, "violations": len(self.consul_lock.violations)}
                if self.consul_lock is not None
                else None
            ),
        }

    def to_json(self) -> dict[str, Any]:
        """Summary, configuration, schedule, violations (with evidence) and notes."""
        return {
            "summary": self.summary(),
            "config": asdict(self.config),
            "schedule": [asdict(r) for r in self.schedule],
            "violations": [v.to_json() for v in self.locksmith.violations],
            "consul_lock_violations": [
                v.to_json() for v in (self.consul_lock.violations if self.consul_lock else [])
            ],
            "notes": self.notes,
        }


def _repo_pythonpath() -> str:
    """PYTHONPATH for child processes: the directory this locksmith package was loaded from,
    so that they run the very same code as the run."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


class PartitionRun:
    """Plays a seeded schedule against workloads on a fresh :class:`NetnsCluster`.

    Args:
        config: The run's configuration.
        out_dir: Where the histories (``*.jsonl``), process logs and ``result.json`` go.
        log: Progress lines.
        binary: The consul binary (default: ``find_consul``).
    """

    def __init__(
        self,
        config: RunConfig,
        out_dir: Path,
        *,
        log: Callable[[str], None] = print,
        binary: Path | str | None = None,
    ) -> None:
        self.cfg = config
        self.out_dir = Path(out_dir)
        self._log = log
        self._binary = binary
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_id = f"{stamp}-seed{config.seed}"
        self.prefix = f"lsnp/{self.run_id}/"
        self.session_prefix = f"lsnp-{self.run_id}-app"
        self.schedule = make_schedule(
            config.seed,
            config.rounds,
            hosts=config.hosts,
            kinds=config.kinds,
            ttl=config.ttl,
            lock_delay=config.lock_delay,
            lengths=config.lengths,
            length_by_kind=config.length_by_kind,
            cover_all=config.cover_all,
            targets=config.targets,
        )
        self.cluster: NetnsCluster | None = None
        self.hist: History | None = None
        self._apps: list[subprocess.Popen[bytes]] = []
        self._history_files: list[Path] = []
        self._tail = HistoryTail()
        self._sampler_stop = threading.Event()
        self._notes: list[str] = []
        self._rounds_done = 0
        self._seen_acquires: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ keys

    @property
    def lock_keys(self) -> list[str]:
        """Every key whose liveness the run waits for."""
        keys = [f"{self.prefix}locks/{n}" for n in self.cfg.locks]
        if self.cfg.election:
            keys.append(f"{self.prefix}election/leader")
        if self.cfg.semaphore_limit > 0:
            keys.append(f"{self.prefix}semaphore")
        return keys

    def _record(self, ev: str, **fields: Any) -> Event:
        assert self.hist is not None
        return self.hist.record(ev, **fields)

    # ------------------------------------------------------------------ run

    def run(self) -> RunResult:
        """Play the schedule; check the histories; write ``result.json``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.hist = History(self.out_dir / "run.jsonl", "run")
        self._history_files.append(self.out_dir / "run.jsonl")
        self._record(
            "run_start",
            run_id=self.run_id,
            config=asdict(self.cfg),
            schedule=[asdict(r) for r in self.schedule],
        )
        try:
            with NetnsCluster(
                self.cfg.servers,
                self.cfg.hosts,
                binary=self._binary,
                raft_multiplier=self.cfg.raft_multiplier,
                log=self._log,
            ) as cluster:
                self.cluster = cluster
                self._record("cluster_ready", tag=cluster.tag, leader=cluster.leader())
                self._start_workloads(cluster)
                sampler = threading.Thread(target=self._sampler, name="kv-sampler", daemon=True)
                sampler.start()
                try:
                    try:
                        self._warmup()
                        for rnd in self.schedule:
                            self._play(cluster, rnd)
                            self._rounds_done += 1
                    except Exception as exc:  # noqa: BLE001 - stop, check what was played
                        self._notes.append(f"run aborted: {type(exc).__name__}: {exc}"[:2000])
                        self._record("aborted", error=f"{type(exc).__name__}: {exc}"[:2000])
                        cluster.heal()
                    self._stop_workloads(cluster)
                    self._final_orphans(cluster)
                finally:
                    self._sampler_stop.set()
                    sampler.join(15)
                    for p in self._apps:
                        cluster.stop_process(p, timeout=5)
        finally:
            self._record("run_end")
            self.hist.close()
            self.cluster = None
        return self._result(time.monotonic() - t0)

    def _result(self, duration: float) -> RunResult:
        events = read_history(p for p in self._history_files if p.exists())
        result, cl = check_run(events, self.cfg, self.session_prefix)
        out = RunResult(
            config=self.cfg,
            run_id=self.run_id,
            schedule=self.schedule,
            out_dir=self.out_dir,
            events=events,
            locksmith=result,
            consul_lock=cl,
            duration=duration,
            rounds_done=self._rounds_done,
            notes=self._notes,
        )
        (self.out_dir / "result.json").write_text(json.dumps(out.to_json(), indent=1, default=str))
        return out

    # ------------------------------------------------------------------ workloads

    def _start_workloads(self, cluster: NetnsCluster) -> None:
        env = {**os.environ, "PYTHONPATH": _repo_pythonpath()}
        seeds = random.Random(self.cfg.seed * 7919 + 1)
        for k in range(self.cfg.hosts):
            path = self.out_dir / f"app{k}.jsonl"
            wcfg = WorkloadConfig(
                proc=f"app{k}",
                addr=cluster.agent_addr(k),
                history=str(path),
                prefix=self.prefix,
                session_name=f"{self.session_prefix}{k}",
                seed=seeds.getrandbits(32),
                front_end=self.cfg.front_end_of(k),
                factory=self.cfg.factory,
                ttl=self.cfg.ttl,
                lock_delay=self.cfg.lock_delay,
                request_timeout=self.cfg.request_timeout,
                locks=list(self.cfg.locks),
                election=self.cfg.election,
                semaphore_limit=self.cfg.semaphore_limit,
                fair=self.cfg.fair,
                hold=self.cfg.hold,
                long_hold_share=self.cfg.long_hold_share,
            )
            self._history_files.append(path)
            self._tail.add(path)
            argv = [sys.executable, "-m", "locksmith.testing._workload", "app", wcfg.to_json()]
            self._apps.append(
                cluster.spawn(
                    f"a{k}",
                    argv,
                    name=f"app{k}",
                    log_path=self.out_dir / f"app{k}.log",
                    env=env,
                    stdin=subprocess.PIPE,
                )
            )
            if self.cfg.consul_lock:
                cpath = self.out_dir / f"cl{k}.jsonl"
                ccfg = ConsulLockConfig(
                    proc=f"cl{k}",
                    addr=cluster.agent_addr(k),
                    history=str(cpath),
                    prefix=f"{self.prefix}consul-lock",
                    session_name=f"lsnp-{self.run_id}-cl{k}",
                    consul=str(cluster.binary),
                    seed=seeds.getrandbits(32),
                    hold=self.cfg.hold,
                    long_hold=self.cfg.cl_long_hold,
                    long_hold_share=self.cfg.cl_long_hold_share,
                )
                self._history_files.append(cpath)
                argv = [
                    sys.executable,
                    "-m",
                    "locksmith.testing._workload",
                    "consul-lock",
                    ccfg.to_json(),
                ]
                self._apps.append(
                    cluster.spawn(
                        f"a{k}",
                        argv,
                        name=f"cl{k}",
                        log_path=self.out_dir / f"cl{k}.log",
                        env=env,
                        stdin=subprocess.PIPE,
                    )
                )
        self._record("workloads_started", apps=self.cfg.hosts, consul_lock=self.cfg.consul_lock)

    def _stop_workloads(self, cluster: NetnsCluster) -> None:
        self._record("stopping_apps")
        for p in self._apps:
            if p.stdin is not None:
                try:
                    p.stdin.write(b"stop\n")
                    p.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + self.cfg.request_timeout * 4 + 60
        for p in self._apps:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._notes.append(f"pid {p.pid} did not stop in time: terminated")
            cluster.stop_process(p, timeout=5)
        self._record("apps_stopped", codes=[p.returncode for p in self._apps])

    def _warmup(self, timeout: float = 90.0) -> None:
        """Wait until every application has started, then until every key has been acquired
        since."""
        self._record("warmup")
        want = {f"app{k}" for k in range(self.cfg.hosts)}
        started: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while set(started) != want and time.monotonic() < deadline:
            for e in self._tail.poll():
                if e.get("ev") == "start":
                    started[str(e["proc"])] = float(e["t"])
                elif e.get("ev") == "acquire":
                    self._seen_acquires.setdefault(str(e["key"]), []).append(float(e["t"]))
            time.sleep(0.2)
        if set(started) != want:
            self._notes.append(f"warmup: only {sorted(started)} started")
        self._wait_live(max(started.values(), default=0.0), timeout, label="warmup")

    def _wait_live(self, since: float, timeout: float, label: Any) -> dict[str, float | None]:
        """Wait until every lock key has an ``acquire`` after ``since``."""
        want = set(self.lock_keys)
        got: dict[str, float | None] = dict.fromkeys(want)
        deadline = time.monotonic() + timeout
        seen = self._seen_acquires
        while True:
            for e in self._tail.poll():
                if e.get("ev") == "acquire":
                    seen.setdefault(str(e["key"]), []).append(float(e["t"]))
            for key in want:
                if got[key] is None:
                    later = [t for t in seen.get(key, []) if t > since]
                    if later:
                        got[key] = min(later) - since
            if all(v is not None for v in got.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self._record("live", round=label, after={k: v for k, v in got.items()})
        return got

    # ------------------------------------------------------------------ rounds

    def _holder_host(self, cluster: NetnsCluster, target: str) -> int | None:
        """The application host holding ``target``'s lock now (None: nobody, or unknown)."""
        what = target.split(":", 1)[1]
        sessions = cluster.consistent("/v1/session/list") or []
        names = {s.get("ID"): str(s.get("Name", "")) for s in sessions if isinstance(s, dict)}
        prefix = self.session_prefix
        if what in ("lock", "election", "consul-lock"):
            key = {
                "lock": f"{self.prefix}locks/{self.cfg.locks[0]}",
                "election": f"{self.prefix}election/leader",
                "consul-lock": f"{self.prefix}consul-lock/.lock",
            }[what]
            if what == "consul-lock":
                prefix = f"lsnp-{self.run_id}-cl"
            entries = cluster.consistent(f"/v1/kv/{key}") or []
            sids = [e.get("Session") for e in entries if isinstance(e, dict)]
        else:
            entries = cluster.consistent(f"/v1/kv/{self.prefix}semaphore/.lock") or []
            sids = []
            for e in entries:
                try:
                    holders = json.loads(base64.b64decode(e.get("Value") or b""))["Holders"]
                    sids = sorted(holders)
                except (ValueError, KeyError, TypeError):
                    pass
        for sid in sids:
            name = names.get(sid, "")
            if name.startswith(prefix):
                digits = name[len(prefix) :].split("-", 1)[0]
                if digits.isdigit():
                    return int(digits)
        return None

    def _play(self, cluster: NetnsCluster, rnd: Round) -> None:
        leader = cluster.leader() or cluster.wait_for_leader(60)
        host = rnd.fallback
        resolved = "fallback"
        if rnd.target.startswith("holder:"):
            found = self._holder_host(cluster, rnd.target)
            if found is not None:
                host, resolved = found, "holder"
        elif rnd.target.startswith("host:"):
            host, resolved = int(rnd.target.split(":")[1]), "host"
        desc = {
            "round": rnd.index,
            "kind": rnd.kind,
            "target": rnd.target,
            "resolved": resolved,
            "how": rnd.how,
            "length": rnd.length,
            "duration": rnd.duration,
            "leader": leader,
        }
        self._log(f"round {rnd.index}/{len(self.schedule)}: {rnd.kind} {desc}")
        stop = threading.Event()
        if rnd.kind == "isolate_host":
            cluster.isolate(f"h{host}", rnd.how)
            desc["host"] = f"h{host}"
        elif rnd.kind == "isolate_leader":
            cluster.isolate(leader, rnd.how)
            desc["host"] = leader
        elif rnd.kind == "split_leader":
            others = [s for s in cluster.servers if s != leader]
            others += [h for h in cluster.agents if h != f"h{host}"]
            cluster.partition([leader, f"h{host}"], others)
            desc["host"] = f"h{host}"
        elif rnd.kind == "cut_app":
            cluster.cut_app(host, rnd.how)
            desc["host"] = f"a{host}"
        elif rnd.kind == "cut_agent":
            cluster.cut_agent(host)
            desc["host"] = f"h{host}"
        elif rnd.kind == "flap":
            desc["host"] = f"h{host}" if rnd.flap_side == "agent" else f"a{host}"
        self._record("cut", **desc, cuts=cluster.active_cuts())
        if rnd.kind == "flap":
            n = cluster.flap(str(desc["host"]), rnd.flaps, stop)
            self._record("flap", round=rnd.index, host=desc["host"], flaps=n)
        else:
            time.sleep(rnd.duration)
        cluster.heal()
        heal_t = float(self._record("heal", round=rnd.index)["t"])
        try:
            new_leader = cluster.wait_for_leader(self.cfg.election_allowance * 3)
            self._record("leader", round=rnd.index, leader=new_leader)
        except Exception as exc:  # noqa: BLE001 - recorded; the checker judges liveness
            self._notes.append(f"round {rnd.index}: no leader after heal: {exc}"[:500])
        bound = self.cfg.check_config(self.session_prefix).liveness_bound
        self._wait_live(heal_t, bound + 5, label=rnd.index)
        time.sleep(rnd.settle)
        self._record("round_end", round=rnd.index)

    # ------------------------------------------------------------------ sampling

    def _sample(self, cluster: NetnsCluster, ev: str) -> bool:
        """Record one consistent view of the run's keys and sessions; True if it is clean
        (no session of an application, no held key)."""
        leader = cluster.leader()
        entries = cluster.consistent(f"/v1/kv/{self.prefix}?recurse")
        sessions = cluster.consistent("/v1/session/list")
        if entries is None or sessions is None:
            return False
        keys: dict[str, Any] = {}
        registers: dict[str, Any] = {}
        for e in entries:
            if not isinstance(e, dict):
                continue
            key = str(e.get("Key"))
            if "/registers/" in key:
                try:
                    value = json.loads(base64.b64decode(e.get("Value") or b""))
                except ValueError:
                    value = None
                registers[key] = {"index": e.get("ModifyIndex"), "value": value}
            elif "/locks/" in key or "/election/" in key or "/consul-lock/" in key:
                # Semaphore contender keys are left out: a waiting contender holds one.
                keys[key] = {"session": e.get("Session"), "index": e.get("ModifyIndex")}
        ours = [
            {"id": s.get("ID"), "name": s.get("Name")}
            for s in sessions
            if isinstance(s, dict) and str(s.get("Name", "")).startswith(f"lsnp-{self.run_id}-")
        ]
        # The leader matters to the checker: a leader change restarts every TTL timer.
        self._record(ev, keys=keys, registers=registers, sessions=ours, leader=leader)
        app_sessions = [s for s in ours if str(s["name"]).startswith(self.session_prefix)]
        held = [k for k, v in keys.items() if v.get("session") and "/consul-lock/" not in k]
        return not app_sessions and not held

    def _sampler(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        while not self._sampler_stop.wait(self.cfg.sample_every):
            try:
                self._sample(cluster, "kv_sample")
            except Exception as exc:  # noqa: BLE001 - a sampler must not die
                self._notes.append(f"sampler: {type(exc).__name__}: {exc}"[:300])

    def _final_orphans(self, cluster: NetnsCluster) -> None:
        """After the applications closed: sample until Consul holds nothing of theirs, or the
        orphan bound (plus a margin) has passed."""
        bound = self.cfg.check_config(self.session_prefix).orphan_bound
        deadline = time.monotonic() + bound + 5
        while True:
            clean = self._sample(cluster, "final_sample")
            if clean or time.monotonic() > deadline:
                self._record("final", clean=clean)
                return
            time.sleep(1.0)


def check_run(
    events: list[Event], cfg: RunConfig, session_prefix: str
) -> tuple[CheckResult, CheckResult | None]:
    """Check a run's merged events: locksmith's rules, and ``consul lock``'s exclusion."""
    ls_events = [e for e in events if not str(e.get("ev", "")).startswith("cl_")]
    result = check_history(ls_events, cfg.check_config(session_prefix))
    cl = None
    if cfg.consul_lock:
        cl_events = [
            e for e in events if str(e.get("ev", "")).startswith("cl_") or e.get("proc") == "run"
        ]
        cl = check_consul_lock(cl_events)
        cl.stats.update(_consul_lock_recovery(events))
    return result, cl


def recheck(out_dir: Path) -> RunResult:
    """Check the histories a run left in ``out_dir`` again (with this checker), e.g. the raw
    histories of a soak under ``bench/results/raw/``. Works on a run cut short, too."""
    out_dir = Path(out_dir)
    events = read_history(sorted(out_dir.glob("*.jsonl")))
    start = next(e for e in events if e.get("ev") == "run_start" and e.get("proc") == "run")
    raw = dict(start["config"])
    for k in ("kinds", "locks", "hold", "targets", "cl_long_hold"):
        if raw.get(k) is not None:
            raw[k] = tuple(raw[k])
    cfg = RunConfig(**raw)
    schedule = [
        Round(**{**r, "flaps": tuple(tuple(f) for f in r.get("flaps", ()))})
        for r in start["schedule"]
    ]
    run_id = str(start["run_id"])
    result, cl = check_run(events, cfg, f"lsnp-{run_id}-app")
    ends = [float(e["t"]) for e in events if e.get("proc") == "run"]
    notes = [str(e.get("error")) for e in events if e.get("ev") == "aborted"]
    return RunResult(
        config=cfg,
        run_id=run_id,
        schedule=schedule,
        out_dir=out_dir,
        events=events,
        locksmith=result,
        consul_lock=cl,
        duration=max(ends) - float(start["t"]),
        rounds_done=sum(1 for e in events if e.get("ev") == "round_end"),
        notes=notes,
    )


def _consul_lock_recovery(events: list[Event]) -> dict[str, Any]:
    """How long after each heal ``consul lock`` started a child again (report only)."""
    heals = [float(e["t"]) for e in events if e.get("ev") == "heal"]
    starts = sorted(float(e["t"]) for e in events if e.get("ev") == "cl_start")
    delays = []
    for th in heals:
        later = [s for s in starts if s > th]
        if later:
            delays.append(later[0] - th)
    return {"max_restart_after_heal_s": round(max(delays), 2) if delays else None}


# --------------------------------------------------------------------------- report


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _display(path: Path) -> str:
    """``path`` relative to the checkout (or the working directory) when inside it."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        try:
            return str(path.resolve().relative_to(base))
        except ValueError:
            continue
    return str(path)


#: The order of workload kinds in reports.
_KIND_ORDER = {"lock": 0, "election": 1, "semaphore": 2, "fair": 3}


def render_report(results: Sequence[RunResult], *, title: str, command: str) -> str:
    """A compact markdown summary of one or more runs (for ``bench/results/``)."""
    lines = [f"# {title}", "", f"Replay: `{command}`", ""]
    for r in results:
        s = r.summary()
        ls = s["locksmith"]
        lines += [
            f"## Run {r.run_id}",
            "",
            f"- seed {r.config.seed}, {s['rounds']} rounds in {s['duration_s']} s; "
            f"{r.config.servers} servers, {r.config.hosts} application hosts; TTL "
            f"{r.config.ttl:g} s, lock-delay {r.config.lock_delay:g} s; raw histories in "
            f"`{_display(r.out_dir)}`",
            "",
            "Partitions played:",
            "",
        ]
        rows = [
            [k, v["short"], v["long"], v["very_long"], sum(v.values())]
            for k, v in sorted(s["partitions"].items())
        ]
        lines += _table(["kind", "short", "long", "very long", "total"], rows)
        acq = ls["acquisitions"]
        fw = ls["fenced_writes"]
        cl = s["consul_lock"] or {}
        lines += [
            "",
            "Side by side, same schedule:",
            "",
        ]
        lines += _table(
            ["", "locksmith", "consul lock"],
            [
                [
                    "acquisitions",
                    f"{sum(acq.values())} ("
                    + ", ".join(
                        f"{k} {acq[k]}"
                        for k in sorted(acq, key=lambda k: (_KIND_ORDER.get(k, 9), k))
                    )
                    + ")",
                    cl.get("children", "-"),
                ],
                [
                    "fenced writes",
                    f"{fw['accepted']} accepted, {fw['refused']} refused, {fw['unknown']} unknown",
                    "- (no fencing token)",
                ],
                [
                    "losses reported",
                    ", ".join(f"{k} {v}" for k, v in sorted(ls["losses"].items())) or "0",
                    f"{cl.get('sigterm', '-')} SIGTERMs",
                ],
                [
                    "rivals taking over a lost lock or election (closest: loser's end of "
                    "belief to rival's acquire)",
                    f"{(ls.get('takeovers_after_loss') or {}).get('count')} "
                    f"({(ls.get('takeovers_after_loss') or {}).get('closest_s')} s)",
                    "-",
                ],
                [
                    "lease_expired signal vs. its deadline's upper bound (worst)",
                    f"{(ls.get('deadline_checks') or {}).get('worst_lateness_s')} s over "
                    f"{(ls.get('deadline_checks') or {}).get('leases')} leases",
                    "-",
                ],
                [
                    "slowest re-acquire after a heal",
                    f"{ls['liveness']['max_reacquire_s']} s",
                    f"{cl.get('max_restart_after_heal_s', '-')} s",
                ],
                [
                    "**violations**",
                    f"**{ls['violations']}** {ls['by_rule'] or ''}",
                    f"**{cl.get('violations', '-')}** (two children at once; "
                    f"longest {cl.get('overlap_max_s', '-')} s)",
                ],
            ],
        )
        for title_, vs in (
            ("locksmith violations", r.locksmith.violations),
            (
                "consul lock: two children at once",
                r.consul_lock.violations if r.consul_lock else [],
            ),
        ):
            if not vs:
                continue
            lines += ["", f"### {title_} ({len(vs)})", ""]
            groups: dict[tuple[str, str], list[Violation]] = {}
            for v in vs:
                groups.setdefault((v.known_finding or "", v.rule), []).append(v)
            # Unexplained ones first, then each known finding; two examples of each.
            for (finding, rule), group in sorted(groups.items()):
                known = f", known core finding {finding}" if finding else ", **unexplained**"
                lines += [f"- **{rule}**{known}: {len(group)}", ""]
                for v in group[:2]:
                    lines += [f"  - `{v.key}`: {v.message}", "", "    ```"]
                    lines += [f"    {line}" for line in v.excerpt(12).splitlines()]
                    lines += ["    ```", ""]
            lines.append(f"All of them, with their events: `{_display(r.out_dir)}/result.json`.")
        if r.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in r.notes[:10]]
        lines.append("")
    return "\n".join(lines)
