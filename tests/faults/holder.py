"""A lock holder for the fault scenarios: a thread in the test process or a process of its own.

The holder runs a :class:`~locksmith.LockManager` loop: pick a key, acquire it, hold it for a
random time doing fenced writes (checking ``lock.held`` before each), release it. Every step is
reported as one JSON event with ``time.monotonic()`` timestamps (CLOCK_MONOTONIC is system-wide on
Linux, so events of different processes compare):

* ``ready`` (pid, session name), ``closed``;
* ``acquire``: key, token (the fencing token), session, t (when ``acquire`` returned);
* ``write``: a fenced write that succeeded: key, token, index (ModifyIndex it wrote), held_at
  (when ``lock.held`` was last seen True, just before the write);
* ``write_refused`` / ``write_error``: a fenced write refused (LockLost) / with unknown fate;
* ``lost``: the loss callback fired: key, token, reason, detected_at, t;
* ``end``: the hold is over: how (``released``, ``release_false``, ``lost``), last_held,
  release_called; after a loss also loss_seen (callback fired within 10 s), local_refused
  (``fenced_put`` refused locally) and stale_ok / stale_index (the same write sent to Consul
  with the old lease's session, bypassing the local check);
* ``error``: an acquire failed with a locksmith error (the loop retries).

Run as a script: ``python holder.py '<json config>'``; events go to stdout, one per line; the
holder stops (releasing and closing everything) when its stdin closes or reads ``stop``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from locksmith import (
    Consul,
    Lease,
    LockLost,
    LockManager,
    LocksmithError,
    LockTimeout,
    LossEvent,
    ManagerClosed,
    NotHeld,
    SessionNotFound,
)

Event = dict[str, Any]
Emit = Callable[[Event], None]


@dataclass
class HolderConfig:
    """What one holder does.

    Attributes:
        holder: Unique name (also in the session name).
        addr: Consul HTTP address (a server, or a FaultProxy in front of one).
        keys: Lock keys to contend for.
        data_prefix: Fenced writes go to ``data_prefix + <last segment of the key>``.
        session_name: Session name (the runner lists sessions by this prefix).
        ttl: Session TTL in seconds.
        lock_delay: Session lock-delay in seconds.
        checks: Node checks to bind the session to (None: LockManager's default, none).
        seed: Seed of this holder's RNG.
        hold: (min, max) seconds a lock is held.
        step: (min, max) seconds between fenced writes.
        acquire_timeout: Seconds one acquire may wait.
        request_timeout: The client's per-request timeout.
        member_key: If set, an ephemeral registration (Behavior=delete) of this key.
    """

    holder: str
    addr: str
    keys: list[str]
    data_prefix: str
    session_name: str
    ttl: float = 10.0
    lock_delay: float = 2.0
    checks: list[str] | None = None
    seed: int = 0
    hold: tuple[float, float] = (0.5, 3.0)
    step: tuple[float, float] = (0.05, 0.3)
    acquire_timeout: float = 15.0
    request_timeout: float = 3.0
    member_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize for the process holder's command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HolderConfig:
        """Parse :meth:`to_json`'s output."""
        data = json.loads(text)
        data["hold"] = tuple(data["hold"])
        data["step"] = tuple(data["step"])
        return cls(**data)


def now() -> float:
    """The shared clock (CLOCK_MONOTONIC)."""
    return time.monotonic()


def data_key(cfg: HolderConfig, key: str) -> str:
    """Where fenced writes for lock ``key`` go."""
    return cfg.data_prefix + key.rsplit("/", 1)[-1]


def stale_write(consul: Consul, lease: Lease, target: str, body: str) -> tuple[bool | None, int]:
    """The write a paused process would send: checked against the old lease's session only.

    Returns:
        (True, index) if Consul accepted it, (False, 0) if it refused, (None, 0) if unknown.
    """
    ops = [
        {"KV": {"Verb": "check-session", "Key": lease.key, "Session": lease.session_id}},
        {"KV": {"Verb": "set", "Key": target, "Value": base64.b64encode(body.encode()).decode()}},
    ]
    try:
        out = consul.kv.txn(ops, operation="kv.stale_write", resource=target)
    except SessionNotFound:
        return False, 0
    except LocksmithError:
        return None, 0
    if not out.ok:
        return False, 0
    entry = out.entries[1] if len(out.entries) > 1 else None
    return True, entry.modify_index if entry is not None else out.index


def run_holder(cfg: HolderConfig, emit: Emit, stop: threading.Event) -> None:
    """Run the acquire / hold / release loop until ``stop`` is set, then close everything."""
    rng = random.Random(cfg.seed)
    base = {"holder": cfg.holder}

    def send(ev: str, **fields: Any) -> None:
        emit({**base, "ev": ev, **fields})

    consul = Consul(cfg.addr, timeout=cfg.request_timeout)
    mgr = LockManager(
        consul,
        ttl=cfg.ttl,
        lock_delay=cfg.lock_delay,
        name=cfg.session_name,
        checks=cfg.checks,
    )
    seen_loss: dict[int, threading.Event] = {}
    seen_mu = threading.Lock()

    def loss_flag(token: int) -> threading.Event:
        with seen_mu:
            return seen_loss.setdefault(token, threading.Event())

    @mgr.on_lost
    def on_lost(event: LossEvent) -> None:
        if event.key == cfg.member_key:
            send("member_lost", key=event.key, reason=event.reason.value, t=now())
            return
        send(
            "lost",
            key=event.key,
            token=event.lease.fencing_token,
            session=event.lease.session_id,
            reason=event.reason.value,
            detected_at=event.detected_at,
            t=now(),
        )
        loss_flag(event.lease.fencing_token).set()

    send("ready", pid=os.getpid(), session_name=cfg.session_name, t=now())
    registration = None
    locks = {k: mgr.lock(k, cfg.holder) for k in cfg.keys}
    seq = 0
    try:
        if cfg.member_key is not None:
            while registration is None and not stop.is_set():
                try:
                    registration = mgr.register(cfg.member_key, cfg.holder, timeout=cfg.ttl * 3)
                    send("member", key=cfg.member_key, t=now())
                except ManagerClosed:
                    raise
                except LocksmithError as exc:
                    send("error", op="register", error=f"{type(exc).__name__}: {exc}", t=now())
                    stop.wait(0.5)
        while not stop.is_set():
            key = rng.choice(cfg.keys)
            lock = locks[key]
            try:
                lease = lock.acquire(timeout=cfg.acquire_timeout)
            except LockTimeout:
                send("timeout", key=key, t=now())
                continue
            except ManagerClosed:
                break
            except LocksmithError as exc:
                send("error", op="acquire", key=key, error=f"{type(exc).__name__}: {exc}", t=now())
                stop.wait(0.5)
                continue
            assert lease is not None
            t_acq = now()
            token = lease.fencing_token
            send(
                "acquire",
                key=key,
                token=token,
                session=lease.session_id,
                acquired_at=lease.acquired_at,
                t=t_acq,
            )
            hold_until = t_acq + rng.uniform(*cfg.hold)
            last_held = t_acq
            how = "release"
            while True:
                t = now()
                if not lock.held:
                    how = "lost"
                    break
                last_held = t
                if t >= hold_until or stop.is_set():
                    break
                seq += 1
                body = json.dumps({"holder": cfg.holder, "token": token, "seq": seq})
                try:
                    index = lock.fenced_put(data_key(cfg, key), body)
                except LockLost as exc:
                    send("write_refused", key=key, token=token, held_at=t, error=str(exc), t=now())
                    how = "lost"
                    break
                except LocksmithError as exc:
                    send("write_error", key=key, token=token, held_at=t, error=str(exc), t=now())
                else:
                    send("write", key=key, token=token, index=index, held_at=t, t=now())
                stop.wait(rng.uniform(*cfg.step))
            if how == "release":
                t_rel = now()
                try:
                    ok = lock.release()
                except NotHeld:
                    ok = False
                send(
                    "end",
                    key=key,
                    token=token,
                    how="released" if ok else "release_false",
                    last_held=last_held,
                    release_called=t_rel,
                    t=now(),
                )
                continue
            loss_seen = loss_flag(token).wait(10.0)
            seq += 1
            body = json.dumps({"holder": cfg.holder, "token": token, "seq": seq, "stale": True})
            try:
                lock.fenced_put(data_key(cfg, key), body)
                local_refused = False
            except LockLost:
                local_refused = True
            except LocksmithError:
                local_refused = False
            stale_ok, stale_index = stale_write(consul, lease, data_key(cfg, key), body)
            with contextlib.suppress(NotHeld):
                lock.release()
            send(
                "end",
                key=key,
                token=token,
                how="lost",
                last_held=last_held,
                loss_seen=loss_seen,
                local_refused=local_refused,
                stale_ok=stale_ok,
                stale_index=stale_index,
                t=now(),
            )
    finally:
        if registration is not None:
            registration.close()
        mgr.close()
        consul.close()
        send("closed", t=now())


def main(argv: list[str]) -> int:
    """Process entry point: config JSON in argv[1], events on stdout, stop on stdin EOF."""
    cfg = HolderConfig.from_json(argv[1])
    # Library logs go to stderr: stdout carries the events.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    out_mu = threading.Lock()

    def emit(event: Event) -> None:
        line = json.dumps(event)
        with out_mu:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, name="holder-stdin", daemon=True).start()
    run_holder(cfg, emit, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
