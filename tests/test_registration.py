"""Ephemeral registration (Behavior=delete) against a real Consul."""

from __future__ import annotations

import functools
import signal
import time
from typing import Any

import pytest
from support import PROC, Proc, agent_call, wait_for

from locksmith import Consul, Lease, LockManager, LossEvent, LossReason

TTL = 10.0


def test_shared_session_reregistered_and_closed(consul: Consul, prefix: str) -> None:
    k1, k2 = f"{prefix}/svc/a", f"{prefix}/svc/b"
    rereg: list[tuple[str, Lease]] = []
    lost: list[LossEvent] = []
    with LockManager(consul, ttl="10s", lock_delay="15s") as mgr:
        r1, r2 = mgr.register(k1, b'{"port":1}'), mgr.register(k2, b'{"port":2}')
        for r in (r1, r2):
            r.on_reregistered(functools.partial(lambda k, lease: rereg.append((k, lease)), r.key))
            r.on_lost(lost.append)
        e1, e2 = consul.kv.get(k1), consul.kv.get(k2)
        assert e1 is not None and e2 is not None
        assert e1.value == b'{"port":1}'
        assert e1.session is not None and e1.session == e2.session  # one shared session
        info = consul.sessions.info(e1.session)
        assert info is not None and info.behavior == "delete"

        consul.sessions.destroy(e1.session)  # from outside, while this process lives
        wait_for(lambda: len(rereg) == 2, 15, "both keys re-registered")
        assert {k for k, _ in rereg} == {k1, k2}
        assert {lease.session_id for _, lease in rereg} != {e1.session}
        assert len({lease.session_id for _, lease in rereg}) == 1  # shared again
        n1, n2 = consul.kv.get(k1), consul.kv.get(k2)
        assert n1 is not None and n2 is not None
        assert n1.session == n2.session == rereg[0][1].session_id
        assert n1.value == b'{"port":1}'
        assert {ev.reason for ev in lost} == {LossReason.SESSION_INVALIDATED}
        assert r1.active and r2.active

        r1.close()  # deleted at once
        assert consul.kv.get(k1) is None and not r1.active
        assert consul.kv.get(k2) is not None
    # Closing the manager removes the remaining registration.
    assert consul.kv.get(k2) is None
    assert len(lost) == 2  # close() is not reported as a loss


def test_reregistered_once_critical_check_passes(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    check = f"locksmith-reg-{prefix.rsplit('/', 1)[1]}"
    agent_call(
        consul_addr, "PUT", "/v1/agent/check/register", {"ID": check, "Name": check, "TTL": "60s"}
    )
    key = f"{prefix}/svc/c"
    rereg: list[Lease] = []
    try:
        agent_call(consul_addr, "PUT", f"/v1/agent/check/pass/{check}")
        with LockManager(consul, ttl="10s", checks=["serfHealth", check]) as mgr:
            reg = mgr.register(key, b"c")
            reg.on_reregistered(rereg.append)
            first = consul.kv.get(key)
            assert first is not None and first.session
            agent_call(consul_addr, "PUT", f"/v1/agent/check/fail/{check}")
            wait_for(lambda: consul.kv.get(key) is None, 10, "the key to vanish")
            time.sleep(1.0)  # Consul refuses sessions on a critical check meanwhile
            assert consul.kv.get(key) is None and rereg == []
            agent_call(consul_addr, "PUT", f"/v1/agent/check/pass/{check}")
            wait_for(lambda: rereg, 20, "re-registration after the check passed")
            again = consul.kv.get(key)
            assert again is not None and again.session == rereg[0].session_id != first.session
    finally:
        agent_call(consul_addr, "PUT", f"/v1/agent/check/deregister/{check}")


def _registered(key: str, event: dict[str, Any]) -> bool:
    return bool(event["event"] == "registered" and event["key"] == key)


@pytest.mark.slow
def test_key_gone_after_holder_killed(consul: Consul, consul_addr: str, prefix: str) -> None:
    keys = [f"{prefix}/svc/k{i}" for i in range(3)]
    p = Proc.python(PROC, consul_addr, "--ttl", "10s", "register", *keys)
    try:
        for k in keys:
            p.wait_event(functools.partial(_registered, k), 20, k)
        sessions = {consul.kv.get(k).session for k in keys}  # type: ignore[union-attr]
        assert len(sessions) == 1 and None not in sessions
        p.signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: all(consul.kv.get(k) is None for k in keys), 2 * TTL + 10, "keys gone")
        took = time.monotonic() - killed
    finally:
        p.stop()
    print(f"keys gone {took:.1f}s after SIGKILL")
    assert took > TTL / 2  # gone by the TTL, not by anything the dead process did


@pytest.mark.slow
def test_reregistered_after_ttl_expiry_while_stopped(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    key = f"{prefix}/svc/stopped"
    p = Proc.python(PROC, consul_addr, "--ttl", "10s", "register", key)
    try:
        reg = p.wait_event(lambda e: e["event"] == "registered", 20, "registered")
        p.signal(signal.SIGSTOP)  # renewals suspended
        wait_for(lambda: consul.kv.get(key) is None, 2 * TTL + 10, "the key to expire")
        p.signal(signal.SIGCONT)
        again = p.wait_event(lambda e: e["event"] == "reregistered", 20, "re-registration")
        assert again["session"] != reg["session"]
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == again["session"]
    finally:
        p.stop()
