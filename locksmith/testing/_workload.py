"""Workloads of a partition run: what an application process does, and what it records.

An application process (``python -m locksmith.testing._workload app '<json>'``, started by
the run inside its application host's namespace) talks only to its local Consul agent. It
makes one manager through a *manager factory* and runs, on threads of its own:

* a **lock** worker per lock name: acquire, hold for a seeded random time doing fenced writes
  (``Lock.fenced_put``) to the lock's register key, checking ``lock.held`` before each, release;
* an **election** worker: campaign, lead (fenced writes through ``election.lock``), resign;
* a **semaphore** worker: take a slot of an N-slot semaphore, hold it, give it back;
* a **session** reporter: the manager's session IDs (``session_ids``) whenever they change.

It records (see :mod:`locksmith.testing._history`; every event has ``t``, ``proc``, ``ev``):

* ``acquire``: kind (lock/election/semaphore), key, token (the fencing token), session,
  acquired_at (the lease's own timestamp);
* ``write`` (index: the ModifyIndex Consul wrote), ``write_refused`` (LockLost: the write was
  not made), ``write_unknown`` (an error: fate unknown), each with token, target, seq and
  held_at (when ``held`` was last seen True, just before the write);
* ``ended``: the library's own end signal for a lease, with reason (``released`` or a
  :class:`~locksmith.LossReason`). For locks and elections it comes from ``Lock.on_end``,
  which runs at once on the thread that learns of the end, at the lease deadline at the latest;
  for semaphores from a thread waiting on ``Semaphore.ended(lease)``;
* ``lost``: the ``on_lost`` callback fired (reason, detected_at);
* ``release_called`` (last_held) before ``release()``, and ``released`` (ok) after it; or
  ``noticed_loss`` (last_held) when the worker saw ``held`` turn False;
* ``sessions`` (ids), ``error``, ``timeout``, ``start``, ``stop``;
* ``renewed`` (session, ttl): a session created or renewed, taken from the manager's own log
  events (``session.created``, ``session.renewed``), logged after the answer: the lease
  deadline, TTL after the renewal *started*, is at most TTL after this.

The public API does not expose a lease's deadline (last renewal start + TTL), so the end of
belief is taken from the end signal (``ended``/``lost``) and the ``held`` samples, and the
``renewed`` events bound the deadline from above; the checker
(:mod:`locksmith.testing._checker`) explains how.

**Other front-ends.** The history format is the contract: the checker never looks at how it
was produced. :data:`RUNNERS` maps a front-end name to a runner; ``threaded`` runs the workers
above on a :class:`~locksmith.LockManager` made by :data:`MANAGER_FACTORIES`; ``async`` runs
them as tasks of a :class:`~locksmith.aio.AsyncLockManager` on one asyncio loop (the same
events).

The ``consul-lock`` mode runs Consul's own ``consul lock`` in a loop, with
:mod:`locksmith.testing._consul_lock_child` as its child, for the side-by-side comparison.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from locksmith import (
    Consul,
    Election,
    FairLock,
    Lease,
    Lock,
    LockLost,
    LockManager,
    LocksmithError,
    LockTimeout,
    LossEvent,
    LossReason,
    ManagerClosed,
    NotHeld,
    Semaphore,
)

from ._history import History

__all__ = [
    "CHILD_SCRIPT",
    "MANAGER_FACTORIES",
    "RUNNERS",
    "ConsulLockConfig",
    "WorkloadConfig",
    "main",
    "run_consul_lock_loop",
    "run_threaded",
    "threaded_manager",
]

CHILD_SCRIPT = Path(__file__).with_name("_consul_lock_child.py")


@dataclass
class WorkloadConfig:
    """What one application process does.

    Attributes:
        proc: Its name in the history (``app0``, ...).
        addr: Its local agent's HTTP address.
        history: Its history file.
        prefix: Key prefix of the run (ends with ``/``).
        session_name: Name of its manager's session (the run finds its sessions by it).
        seed: Seeds its random choices.
        front_end: Key of :data:`RUNNERS`.
        factory: Key of :data:`MANAGER_FACTORIES`.
        ttl: Session TTL (seconds).
        lock_delay: Session lock-delay (seconds).
        request_timeout: The client's per-request timeout.
        locks: Lock names (keys ``<prefix>locks/<name>``).
        election: Run an election worker (key ``<prefix>election/leader``).
        semaphore_limit: Slots of the semaphore (prefix ``<prefix>semaphore``); 0: none.
        fair: Run a fair-lock worker (prefix ``<prefix>fair``; the threaded front-end only:
            there is no asyncio fair lock).
        hold: (min, max) seconds a lock, leadership or slot is held, usually.
        long_hold: (min, max) seconds of a long hold, past the TTL, so that a cut holder
            still wants its lock when the lease deadline comes.
        long_hold_share: The share of long holds.
        gap: (min, max) seconds between a release and the next acquire.
        write_every: (min, max) seconds between fenced writes.
        acquire_timeout: Seconds one acquire may wait.
    """

    proc: str
    addr: str
    history: str
    prefix: str
    session_name: str
    seed: int = 0
    front_end: str = "threaded"
    factory: str = "default"
    ttl: float = 10.0
    lock_delay: float = 1.0
    request_timeout: float = 3.0
    locks: list[str] = field(default_factory=lambda: ["l0"])
    election: bool = True
    semaphore_limit: int = 2
    fair: bool = True
    hold: tuple[float, float] = (1.0, 4.0)
    long_hold: tuple[float, float] = (12.0, 25.0)
    long_hold_share: float = 0.2
    gap: tuple[float, float] = (0.0, 0.5)
    write_every: tuple[float, float] = (0.1, 0.3)
    acquire_timeout: float = 30.0

    def to_json(self) -> str:
        """For the process's command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkloadConfig:
        """Parse :meth:`to_json`'s output."""
        data = json.loads(text)
        for k in ("hold", "long_hold", "gap", "write_every"):
            data[k] = tuple(data[k])
        return cls(**data)

    def lock_key(self, name: str) -> str:
        """The key of lock ``name``."""
        return f"{self.prefix}locks/{name}"

    def register_key(self, name: str) -> str:
        """Where fenced writes under lock ``name`` (or ``election``) go."""
        return f"{self.prefix}registers/{name}"

    @property
    def election_key(self) -> str:
        """The election's key."""
        return f"{self.prefix}election/leader"

    @property
    def semaphore_prefix(self) -> str:
        """The semaphore's prefix."""
        return f"{self.prefix}semaphore"

    @property
    def fair_prefix(self) -> str:
        """The fair lock's prefix."""
        return f"{self.prefix}fair"


ManagerFactory = Callable[[WorkloadConfig, Consul], LockManager]


def threaded_manager(cfg: WorkloadConfig, consul: Consul) -> LockManager:
    """The default factory: a :class:`~locksmith.LockManager` with the run's TTL and
    lock-delay and LockManager's defaults otherwise (no health checks bound)."""
    return LockManager(consul, ttl=cfg.ttl, lock_delay=cfg.lock_delay, name=cfg.session_name)


#: Manager factories by name (``WorkloadConfig.factory``).
MANAGER_FACTORIES: dict[str, ManagerFactory] = {"default": threaded_manager}


class _Target:
    """One primitive a worker contends for: what to call to acquire, check, write, release.

    The worker loop (:meth:`_Workers.run_target`) is the same for all of them.
    """

    kind = ""

    def __init__(self, key: str, register: str | None) -> None:
        self.key = key
        self.register = register

    def acquire(self, timeout: float) -> Lease | None:
        raise NotImplementedError

    def held(self, lease: Lease) -> bool:
        raise NotImplementedError

    def write(self, lease: Lease, body: str) -> int:
        raise NotImplementedError

    def release(self, lease: Lease) -> bool:
        raise NotImplementedError

    def on_lost(self, callback: Callable[[LossEvent], None]) -> None:
        raise NotImplementedError

    def watch_end(self, lease: Lease, hook: Callable[[LossReason | None], None]) -> None:
        raise NotImplementedError


class _LockTarget(_Target):
    kind = "lock"

    def __init__(self, lock: Lock, register: str) -> None:
        super().__init__(lock.key, register)
        self.lock = lock

    def acquire(self, timeout: float) -> Lease | None:
        return self.lock.acquire(timeout=timeout)

    def held(self, lease: Lease) -> bool:
        return self.lock.lease is lease

    def write(self, lease: Lease, body: str) -> int:
        assert self.register is not None
        return self.lock.fenced_put(self.register, body, lease=lease)

    def release(self, lease: Lease) -> bool:
        return self.lock.release(lease)

    def on_lost(self, callback: Callable[[LossEvent], None]) -> None:
        self.lock.on_lost(callback)

    def watch_end(self, lease: Lease, hook: Callable[[LossReason | None], None]) -> None:
        # Runs at once on the thread that learns of the end (at the deadline at the latest).
        self.lock.on_end(hook, lease)


class _ElectionTarget(_LockTarget):
    kind = "election"

    def __init__(self, election: Election, register: str) -> None:
        super().__init__(election.lock, register)
        self.election = election

    def acquire(self, timeout: float) -> Lease | None:
        return self.election.campaign(timeout=timeout)

    def held(self, lease: Lease) -> bool:
        return self.election.is_leader and self.election.lease is lease

    def release(self, lease: Lease) -> bool:
        return self.election.resign()


class _SemaphoreTarget(_Target):
    kind = "semaphore"

    def __init__(self, sem: Semaphore) -> None:
        super().__init__(sem.prefix, None)
        self.sem = sem

    def acquire(self, timeout: float) -> Lease | None:
        return self.sem.acquire(timeout=timeout)

    def held(self, lease: Lease) -> bool:
        return self.sem.lease is lease

    def release(self, lease: Lease) -> bool:
        return self.sem.release()

    def on_lost(self, callback: Callable[[LossEvent], None]) -> None:
        self.sem.on_lost(callback)

    def watch_end(self, lease: Lease, hook: Callable[[LossReason | None], None]) -> None:
        _wait_then(self.sem.ended(lease), hook, "semaphore-ended")


class _FairTarget(_Target):
    kind = "fair"

    def __init__(self, lock: FairLock, register: str) -> None:
        super().__init__(lock.prefix, register)
        self.lock = lock

    def acquire(self, timeout: float) -> Lease | None:
        return self.lock.acquire(timeout=timeout)

    def held(self, lease: Lease) -> bool:
        return self.lock.lease is lease

    def write(self, lease: Lease, body: str) -> int:
        assert self.register is not None
        return self.lock.fenced_put(self.register, body, lease=lease)

    def release(self, lease: Lease) -> bool:
        return self.lock.release(lease)

    def on_lost(self, callback: Callable[[LossEvent], None]) -> None:
        self.lock.on_lost(callback)

    def watch_end(self, lease: Lease, hook: Callable[[LossReason | None], None]) -> None:
        _wait_then(self.lock.ended(lease), hook, "fair-ended")


def _wait_then(
    ended: threading.Event, hook: Callable[[LossReason | None], None], name: str
) -> None:
    """Call ``hook(None)`` from a thread once ``ended`` is set (an event, not a hook: the
    reason is the ``lost`` callback's; the event alone says only "ended")."""

    def wait() -> None:
        ended.wait()
        hook(None)

    threading.Thread(target=wait, name=name, daemon=True).start()


class _Workers:
    """The threaded front-end's workers (module docstring)."""

    def __init__(self, cfg: WorkloadConfig, mgr: LockManager | None, hist: History) -> None:
        self.cfg = cfg
        self.mgr = mgr
        self.hist = hist
        self.stop = threading.Event()
        self._seq = 0
        self._mu = threading.Lock()

    def next_seq(self) -> int:
        with self._mu:
            self._seq += 1
            return self._seq

    def _loss_recorder(self, kind: str) -> Callable[[LossEvent], None]:
        def on_lost(event: LossEvent) -> None:
            self.hist.record(
                "lost",
                kind=kind,
                key=event.key,
                token=event.lease.fencing_token,
                session=event.lease.session_id,
                reason=event.reason.value,
                detected_at=event.detected_at,
            )

        return on_lost

    def _end_recorder(self, kind: str, lease: Lease) -> Callable[[LossReason | None], None]:
        def on_end(reason: LossReason | None) -> None:
            self.hist.record(
                "ended",
                kind=kind,
                key=lease.key,
                token=lease.fencing_token,
                session=lease.session_id,
                # A semaphore's or fair lock's end event carries no reason (its ``lost``
                # callback does).
                reason=(
                    reason.value
                    if reason is not None
                    else ("event" if kind in ("semaphore", "fair") else "released")
                ),
            )

        return on_end

    def _hold(
        self, target: _Target, lease: Lease, t_acq: float, rng: random.Random
    ) -> tuple[bool, float | None]:
        """Hold until the hold time is over or ``stop``, writing to the register if any.

        Returns:
            (still held: False if ``held`` turned False or a fenced write was refused first,
            the last time ``held`` was read True, None if never).
        """
        long = rng.random() < self.cfg.long_hold_share
        until = t_acq + rng.uniform(*(self.cfg.long_hold if long else self.cfg.hold))
        last_held: float | None = None
        token = lease.fencing_token
        base = {"kind": target.kind, "key": lease.key, "token": token, "target": target.register}
        while True:
            t0 = time.monotonic()
            if not target.held(lease):
                return False, last_held
            last_held = t0
            if t0 >= until or self.stop.is_set():
                return True, last_held
            if target.register is not None:
                seq = self.next_seq()
                body = json.dumps({"proc": self.cfg.proc, "token": token, "seq": seq})
                try:
                    index = target.write(lease, body)
                except LockLost as exc:
                    self.hist.record("write_refused", **base, seq=seq, held_at=t0, error=_err(exc))
                    return False, last_held
                except LocksmithError as exc:
                    self.hist.record("write_unknown", **base, seq=seq, held_at=t0, error=_err(exc))
                else:
                    self.hist.record("write", **base, seq=seq, index=index, held_at=t0)
            self.stop.wait(rng.uniform(*self.cfg.write_every))

    def _finish(self, target: _Target, lease: Lease, still: bool, last: float | None) -> None:
        base = {"kind": target.kind, "key": lease.key, "token": lease.fencing_token}
        if still:
            self.hist.record("release_called", **base, last_held=last)
        else:
            self.hist.record("noticed_loss", **base, last_held=last)
        try:
            ok = target.release(lease)
        except NotHeld:
            ok = False
        except LocksmithError as exc:
            self.hist.record("error", op="release", **base, error=_err(exc))
            return
        if still:
            self.hist.record("released", **base, ok=ok)

    def run_target(self, target: _Target, seed: int) -> None:
        """Acquire, hold, release ``target`` until ``stop``."""
        rng = random.Random(seed)
        target.on_lost(self._loss_recorder(target.kind))
        while not self.stop.is_set():
            try:
                lease = target.acquire(self.cfg.acquire_timeout)
            except LockTimeout:
                self.hist.record("timeout", kind=target.kind, key=target.key)
                continue
            except ManagerClosed:
                break
            except LocksmithError as exc:
                self.hist.record(
                    "error", op="acquire", kind=target.kind, key=target.key, error=_err(exc)
                )
                self.stop.wait(0.5)
                continue
            if lease is None:
                continue
            t_acq = float(
                self.hist.record(
                    "acquire",
                    kind=target.kind,
                    key=lease.key,
                    token=lease.fencing_token,
                    session=lease.session_id,
                    acquired_at=lease.acquired_at,
                )["t"]
            )
            target.watch_end(lease, self._end_recorder(target.kind, lease))
            still, last = self._hold(target, lease, t_acq, rng)
            self._finish(target, lease, still, last)
            self.stop.wait(rng.uniform(*self.cfg.gap))

    def session_reporter(self) -> None:
        assert self.mgr is not None, "the threaded front-end's workers have a manager"
        last: list[str] | None = None
        while not self.stop.wait(0.2):
            ids = sorted(self.mgr.session_ids)
            if ids != last:
                self.hist.record("sessions", ids=ids)
                last = ids


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def run_threaded(
    cfg: WorkloadConfig,
    hist: History,
    stop: threading.Event,
    factory: ManagerFactory | None = None,
) -> None:
    """Run the workers on a manager from ``factory`` until ``stop``; then close everything."""
    factory = factory or MANAGER_FACTORIES[cfg.factory]
    consul = Consul(cfg.addr, timeout=cfg.request_timeout)
    mgr = factory(cfg, consul)
    workers = _Workers(cfg, mgr, hist)
    seeds = random.Random(cfg.seed)
    targets: list[_Target] = [
        _LockTarget(mgr.lock(cfg.lock_key(name), cfg.proc), cfg.register_key(name))
        for name in cfg.locks
    ]
    if cfg.election:
        election = mgr.election(cfg.election_key, cfg.proc)
        targets.append(_ElectionTarget(election, cfg.register_key("election")))
    if cfg.semaphore_limit > 0:
        targets.append(_SemaphoreTarget(mgr.semaphore(cfg.semaphore_prefix, cfg.semaphore_limit)))
    if cfg.fair:
        fair = mgr.fair_lock(cfg.fair_prefix, cfg.proc)
        targets.append(_FairTarget(fair, cfg.register_key("fair")))
    threads = [
        threading.Thread(
            target=workers.run_target, args=(t, seeds.getrandbits(32)), name=f"worker-{t.kind}"
        )
        for t in targets
    ]
    threads.append(threading.Thread(target=workers.session_reporter, daemon=True))
    for t in threads:
        t.start()
    stop.wait()
    workers.stop.set()
    hist.record("stopping")
    # Holders release within a write period; a worker blocked in an acquire is freed by the
    # close (ManagerClosed), so give the holders a moment first.
    deadline = time.monotonic() + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    try:
        mgr.close(timeout=10)
    finally:
        for t in threads:
            t.join(15)
        consul.close()
        hist.record("stop", sessions=sorted(mgr.session_ids))


# --------------------------------------------------------------------------- asyncio


@dataclass
class _AsyncTarget:
    """One primitive of the asyncio front-end: ``obj`` is an AsyncLock, AsyncElection or
    AsyncSemaphore; ``lock`` the AsyncLock behind it (None for a semaphore)."""

    kind: str
    obj: Any
    register: str | None

    @property
    def lock(self) -> Any:
        return self.obj.lock if self.kind == "election" else self.obj

    def held(self, lease: Lease) -> bool:
        if self.kind == "election":
            return bool(self.obj.is_leader and self.obj.lease is lease)
        return self.obj.lease is lease

    async def acquire(self, timeout: float) -> Lease | None:
        if self.kind == "election":
            return await self.obj.campaign(timeout=timeout)  # type: ignore[no-any-return]
        return await self.obj.acquire(timeout=timeout)  # type: ignore[no-any-return]

    async def release(self, lease: Lease) -> bool:
        if self.kind == "election":
            return bool(await self.obj.resign())
        if self.kind == "semaphore":
            return bool(await self.obj.release())
        return bool(await self.obj.release(lease))


class _AsyncWorkers:
    """The asyncio front-end's workers: the same events as :class:`_Workers`, from tasks of
    one :class:`~locksmith.aio.AsyncLockManager` on one event loop (no threads)."""

    def __init__(self, cfg: WorkloadConfig, workers: _Workers, stop: anyio.Event) -> None:
        self.cfg = cfg
        self.w = workers  # its recorders, sequence and history
        self.stop = stop
        self._tg: TaskGroup | None = None

    async def _pause(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self.stop.wait()

    async def run_target(self, t: _AsyncTarget, seed: int) -> None:
        """Acquire, hold, release ``t`` until ``stop``."""
        rng = random.Random(seed)
        cfg, hist, kind = self.cfg, self.w.hist, t.kind
        t.lock.on_lost(self.w._loss_recorder(kind))
        key = t.lock.key
        while not self.stop.is_set():
            try:
                lease = await t.acquire(cfg.acquire_timeout)
            except LockTimeout:
                hist.record("timeout", kind=kind, key=key)
                continue
            except ManagerClosed:
                break
            except LocksmithError as exc:
                hist.record("error", op="acquire", kind=kind, key=key, error=_err(exc))
                await self._pause(0.5)
                continue
            if lease is None:
                continue
            t_acq = float(
                hist.record(
                    "acquire",
                    kind=kind,
                    key=lease.key,
                    token=lease.fencing_token,
                    session=lease.session_id,
                    acquired_at=lease.acquired_at,
                )["t"]
            )
            on_end = self.w._end_recorder(kind, lease)
            if kind == "semaphore":
                ended = t.obj.ended(lease)

                async def wait_end(ended: anyio.Event = ended, hook: Any = on_end) -> None:
                    await ended.wait()
                    hook(None)

                assert self._tg is not None  # run_target runs in main's task group
                self._tg.start_soon(wait_end)
            else:
                t.lock.on_end(on_end, lease)  # called at once by the task that learns of it
            still, last = await self._hold(t, lease, t_acq, rng)
            await self._finish(t, lease, still, last)
            await self._pause(rng.uniform(*cfg.gap))

    async def _hold(
        self, t: _AsyncTarget, lease: Lease, t_acq: float, rng: random.Random
    ) -> tuple[bool, float | None]:
        cfg, hist, register = self.cfg, self.w.hist, t.register
        long = rng.random() < cfg.long_hold_share
        until = t_acq + rng.uniform(*(cfg.long_hold if long else cfg.hold))
        last_held: float | None = None
        token = lease.fencing_token
        base = {"kind": t.kind, "key": lease.key, "token": token, "target": register}
        while True:
            t0 = time.monotonic()
            if not t.held(lease):
                return False, last_held
            last_held = t0
            if t0 >= until or self.stop.is_set():
                return True, last_held
            if register is not None:
                seq = self.w.next_seq()
                body = json.dumps({"proc": cfg.proc, "token": token, "seq": seq})
                try:
                    index = await t.lock.fenced_put(register, body, lease=lease)
                except LockLost as exc:
                    hist.record("write_refused", **base, seq=seq, held_at=t0, error=_err(exc))
                    return False, last_held
                except LocksmithError as exc:
                    hist.record("write_unknown", **base, seq=seq, held_at=t0, error=_err(exc))
                else:
                    hist.record("write", **base, seq=seq, index=index, held_at=t0)
            await self._pause(rng.uniform(*cfg.write_every))

    async def _finish(self, t: _AsyncTarget, lease: Lease, still: bool, last: float | None) -> None:
        hist = self.w.hist
        base = {"kind": t.kind, "key": lease.key, "token": lease.fencing_token}
        hist.record("release_called" if still else "noticed_loss", **base, last_held=last)
        try:
            ok = await t.release(lease)
        except NotHeld:
            ok = False
        except LocksmithError as exc:
            hist.record("error", op="release", **base, error=_err(exc))
            return
        if still:
            hist.record("released", **base, ok=ok)

    async def session_reporter(self, mgr: Any) -> None:
        last: list[str] | None = None
        while not self.stop.is_set():
            ids = sorted(mgr.session_ids)
            if ids != last:
                self.w.hist.record("sessions", ids=ids)
                last = ids
            await self._pause(0.2)

    async def main(self, mgr: Any, targets: list[_AsyncTarget]) -> None:
        seeds = random.Random(self.cfg.seed)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for t in targets:
                tg.start_soon(self.run_target, t, seeds.getrandbits(32))
            tg.start_soon(self.session_reporter, mgr)
            await self.stop.wait()
            self.w.hist.record("stopping")
            # Holders release within a write period; then the close ends blocked acquires.
            with anyio.move_on_after(5):
                while any(t.obj.lease is not None and t.held(t.obj.lease) for t in targets):
                    await anyio.sleep(0.05)
            await mgr.aclose(timeout=10)


def run_async(cfg: WorkloadConfig, hist: History, stop: threading.Event) -> None:
    """Run the workers as tasks of an :class:`~locksmith.aio.AsyncLockManager` (asyncio)
    until ``stop``; then close everything."""
    from locksmith.aio import AsyncConsul, AsyncLockManager  # noqa: PLC0415 - on demand

    async def main() -> None:
        consul = AsyncConsul(cfg.addr, timeout=cfg.request_timeout)
        mgr = AsyncLockManager(
            consul, ttl=cfg.ttl, lock_delay=cfg.lock_delay, name=cfg.session_name
        )
        done = anyio.Event()
        workers = _AsyncWorkers(cfg, _Workers(cfg, None, hist), done)

        async def relay() -> None:  # the process's stop (a thread's Event) into the loop
            await anyio.to_thread.run_sync(stop.wait, abandon_on_cancel=True)
            done.set()

        try:
            async with mgr, anyio.create_task_group() as tg:
                tg.start_soon(relay)
                targets = [
                    _AsyncTarget(
                        "lock", mgr.lock(cfg.lock_key(name), cfg.proc), cfg.register_key(name)
                    )
                    for name in cfg.locks
                ]
                if cfg.election:
                    election = mgr.election(cfg.election_key, cfg.proc)
                    targets.append(_AsyncTarget("election", election, cfg.register_key("election")))
                if cfg.semaphore_limit > 0:
                    sem = mgr.semaphore(cfg.semaphore_prefix, cfg.semaphore_limit)
                    targets.append(_AsyncTarget("semaphore", sem, None))
                await workers.main(mgr, targets)
                tg.cancel_scope.cancel()
        finally:
            await consul.aclose()
            hist.record("stop", sessions=sorted(mgr.session_ids))

    anyio.run(main)


#: Front-ends by name (``WorkloadConfig.front_end``).
RUNNERS: dict[str, Callable[[WorkloadConfig, History, threading.Event], None]] = {
    "threaded": run_threaded,
    "async": run_async,
}


# --------------------------------------------------------------------------- consul lock


@dataclass
class ConsulLockConfig:
    """The ``consul lock`` loop of one application host.

    Attributes:
        proc: Its name in the history (``cl0``, ...).
        addr: Its local agent's HTTP address.
        history: History file (shared with its children, who append their own events).
        prefix: The lock prefix (``consul lock`` locks ``<prefix>/.lock``).
        session_name: ``-name`` of the session.
        consul: The consul binary.
        seed: Seeds the hold times.
        hold: (min, max) seconds a child runs when not stopped, usually.
        long_hold: (min, max) seconds of a long run.
        long_hold_share: The share of long runs.
        gap: (min, max) seconds between one ``consul lock`` and the next.
    """

    proc: str
    addr: str
    history: str
    prefix: str
    session_name: str
    consul: str
    seed: int = 0
    hold: tuple[float, float] = (1.0, 4.0)
    long_hold: tuple[float, float] = (12.0, 25.0)
    long_hold_share: float = 0.2
    gap: tuple[float, float] = (0.0, 0.5)

    def to_json(self) -> str:
        """For the process's command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConsulLockConfig:
        """Parse :meth:`to_json`'s output."""
        data = json.loads(text)
        for k in ("hold", "long_hold", "gap"):
            data[k] = tuple(data[k])
        return cls(**data)


def run_consul_lock_loop(cfg: ConsulLockConfig, hist: History, stop: threading.Event) -> None:
    """Run ``consul lock PREFIX child`` again and again until ``stop``.

    The child records ``cl_start`` when it starts (it runs only while ``consul lock`` holds
    the lock) and ``cl_end`` when it ends: ``done`` after its hold time, ``sigterm`` when
    ``consul lock`` signals it (on a loss, or on our stop). This loop records ``cl_spawn`` and
    ``cl_exit`` (the exit status of ``consul lock``).
    """
    rng = random.Random(cfg.seed)
    pdeath = ["setpriv", "--pdeathsig", "KILL", "--"] if _has_setpriv() else []
    n = 0
    while not stop.is_set():
        n += 1
        hold = rng.uniform(*(cfg.long_hold if rng.random() < cfg.long_hold_share else cfg.hold))
        child = [*pdeath, sys.executable, str(CHILD_SCRIPT), cfg.history, f"{cfg.proc}.{n}"]
        cmd = [
            *pdeath,
            cfg.consul,
            "lock",
            f"-http-addr={cfg.addr}",
            f"-name={cfg.session_name}",
            cfg.prefix,
            *child,
            f"{hold:.3f}",
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        hist.record("cl_spawn", pid=proc.pid, child=f"{cfg.proc}.{n}", hold=round(hold, 3))
        while proc.poll() is None:
            if stop.wait(0.1):
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        hist.record("cl_exit", pid=proc.pid, child=f"{cfg.proc}.{n}", code=proc.returncode)
        stop.wait(rng.uniform(*cfg.gap))


def _has_setpriv() -> bool:
    return shutil.which("setpriv") is not None


# --------------------------------------------------------------------------- entry point

#: The manager's log events that end a successful create or renewal (after the answer).
_RENEWAL_EVENTS = ("session.created", "session.renewed")


def main(argv: list[str]) -> int:
    """``python -m locksmith.testing._workload (app|consul-lock) '<json config>'``.

    The process stops (closing everything) when its stdin reaches EOF or reads ``stop``,
    or on SIGTERM.
    """
    if len(argv) != 3 or argv[1] not in ("app", "consul-lock"):
        sys.stderr.write(f"{main.__doc__}\n")
        return 64

    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    taps: list[History] = []

    class Tap(logging.Handler):
        """Renewals, as the manager logs them (after the answer): a lease's deadline is at
        most TTL after this (it is TTL after the renewal *started*)."""

        def emit(self, record: logging.LogRecord) -> None:
            event = record.msg
            if taps and isinstance(event, dict) and event.get("event") in _RENEWAL_EVENTS:
                taps[0].record("renewed", session=event.get("session_id"), ttl=event.get("ttl"))

    threading.Thread(target=watch_stdin, name="workload-stdin", daemon=True).start()
    # The library logs through the stdlib tree (locksmith.*): tap it, and send every event
    # to stderr, which the run keeps in a log file.
    library = logging.getLogger("locksmith")
    library.setLevel(logging.DEBUG)
    library.addHandler(Tap())
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter("%(created).3f %(levelname)s %(message)s"))
    library.addHandler(to_stderr)
    if argv[1] == "app":
        cfg = WorkloadConfig.from_json(argv[2])
        with History(cfg.history, cfg.proc) as hist:
            taps.append(hist)
            hist.record("start", pid=os.getpid(), config=asdict(cfg))
            RUNNERS[cfg.front_end](cfg, hist, stop)
    else:
        ccfg = ConsulLockConfig.from_json(argv[2])
        with History(ccfg.history, ccfg.proc) as hist:
            hist.record("start", pid=os.getpid(), config=asdict(ccfg))
            run_consul_lock_loop(ccfg, hist, stop)
            hist.record("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
