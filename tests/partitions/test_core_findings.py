"""Regression tests for what the partition runs found in the library core (not fixed here).

Each test reproduces one finding deterministically, without namespaces, on the session's dev
agent, and is marked ``xfail(strict=True)``: when the core is fixed, the test passes, strict
xfail turns that into a failure, and whoever fixed it removes the marker. The write-ups are in
``docs/faults.md`` ("Network partitions").
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time

import pytest

from locksmith import Consul, LockError, LockManager
from locksmith.testing import FaultProxy, NetnsCluster


@pytest.mark.xfail(
    strict=True,
    reason="core finding P1 (docs/faults.md): a semaphore slot's fencing token repeats when "
    "the holder's session is still listed in .lock from an earlier hold",
)
def test_semaphore_token_is_fresh_when_a_stale_listing_remains(consul_addr: str) -> None:
    """A's release cannot remove A from ``.lock`` (Consul unreachable), B took a slot after A,
    then A acquires again: A's CAS writes the very content ``.lock`` already has, Consul
    answers true without a new index, and A's "fresh" token is B's token."""
    prefix = f"partitions-findings/sem-{time.monotonic_ns()}"
    with FaultProxy(consul_addr) as proxy:
        a_consul = Consul(proxy.addr, timeout=1.0)
        b_consul = Consul(consul_addr, timeout=5.0)
        a = LockManager(a_consul, ttl=10, lock_delay=0, name="findings-sem-a")
        b = LockManager(b_consul, ttl=10, lock_delay=0, name="findings-sem-b")
        try:
            sem_a = a.semaphore(prefix, 2)
            sem_b = b.semaphore(prefix, 2)
            first = sem_a.acquire(timeout=10)
            lease_b = sem_b.acquire(timeout=10)
            assert first is not None and lease_b is not None
            proxy.blackhole()  # A's release: the holder removal times out, and is deferred
            sem_a.release()
            proxy.heal()
            again = None
            deadline = time.monotonic() + 30
            while again is None:
                try:  # the contender key may still wait for its deferred release
                    again = sem_a.acquire(timeout=10)
                except LockError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert lease_b.fencing_token < again.fencing_token, (
                f"A's new slot has token {again.fencing_token}; B's slot, taken before it, "
                f"has {lease_b.fencing_token}"
            )
        finally:
            proxy.heal()
            a.close()
            b.close()
            b_consul.kv.delete(prefix, recurse=True)
            a_consul.close()
            b_consul.close()


@pytest.mark.partitions
@pytest.mark.timeout(180)
def test_a_request_the_client_gave_up_on_still_executes_later(netns_ok: None) -> None:
    """Consul behaviour behind core finding P2 (docs/faults.md), measured: while there is no
    leader, a server holds (and retries) the writes it is given for up to
    ``rpc_hold_timeout`` (7 s); a client that gives up and closes its connection does not
    cancel them. Here a ``?release=<session>`` abandoned by its client after 1 s frees the key
    seconds later, once the remaining servers have elected a leader. (locksmith waits only its
    request timeout for an abandoned request to settle, and its releases are not fenced by
    index: a release that lands this late frees a newer acquisition by the same session.)"""
    with NetnsCluster(3, 1) as lab:
        key = f"findings/late-release-{time.monotonic_ns()}"

        def request(addr: str, method: str, path: str, body: bytes | None, timeout: float) -> str:
            conn = http.client.HTTPConnection(addr, timeout=timeout)
            try:
                conn.request(method, path, body=body)
                return conn.getresponse().read().decode()
            finally:
                conn.close()

        agent = lab.agent_addr(0)

        def setup() -> str:
            body = b'{"TTL": "60s", "LockDelay": "0s"}'
            sid = json.loads(request(agent, "PUT", "/v1/session/create", body, 5))["ID"]
            assert request(agent, "PUT", f"/v1/kv/{key}?acquire={sid}", b"x", 5) == "true"
            return str(sid)

        sid = lab.call("a0", setup)
        leader = lab.wait_for_leader(60, all_servers=True)
        follower = next(s for s in lab.servers if s != leader)
        # Every server cut from every other: no quorum, no leader, until healed.
        lab.partition(*([s] for s in lab.servers))
        deadline = time.monotonic() + 30
        while lab.leader_views()[follower] is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # until the follower knows it has no leader

        def abandoned_release() -> float:
            with contextlib.suppress(TimeoutError, OSError):
                request("127.0.0.1:8500", "PUT", f"/v1/kv/{key}?release={sid}", None, 1.0)
            return time.monotonic()

        gave_up = lab.call(follower, abandoned_release)
        # Nothing can commit without a leader: every server's own copy still has the holder.
        views = [lab.json(s, f"/v1/kv/{key}?stale", timeout=1.0) for s in lab.servers]
        time.sleep(max(0.0, gave_up + 1.0 - time.monotonic()))
        lab.heal()  # a leader is elected within the 7 s the follower holds the write for
        freed_at = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            entries = lab.consistent(f"/v1/kv/{key}")
            if entries and not entries[0].get("Session"):
                freed_at = time.monotonic()
                break
            time.sleep(0.05)
        lab.heal()
        held = [v[0].get("Session") == sid for v in views if v]
        assert held and all(held), views  # the release had not executed when abandoned
        assert freed_at is not None, "the abandoned release never executed"
        assert freed_at > gave_up, (freed_at, gave_up)
