"""Regression tests for what the partition runs found in the library core (not fixed here).

Each test reproduces one finding deterministically, without namespaces, on the session's dev
agent, and is marked ``xfail(strict=True)``: when the core is fixed, the test passes, strict
xfail turns that into a failure, and whoever fixed it removes the marker. The write-ups are in
``docs/faults.md`` ("Network partitions").
"""

from __future__ import annotations

import time

import pytest

from locksmith import Consul, LockError, LockManager
from locksmith.testing import FaultProxy


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
