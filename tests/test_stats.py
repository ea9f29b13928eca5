"""Manager statistics against a real agent: the counts match what happened; the Prometheus
collector exports them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from support import MakeManager, Recorder, unique, wait_for

from locksmith import Consul, LossEvent
from locksmith.prometheus import LocksmithCollector


def test_counts_match_what_happened(consul: Consul, make_manager: MakeManager) -> None:
    mgr = make_manager(lock_delay=0)
    other = make_manager(lock_delay="2s")
    lost: Recorder[LossEvent] = Recorder()
    mgr.on_lost(lost)
    keys = [unique("locksmith-test/stats") for _ in range(3)]
    for k in keys:
        lock = mgr.lock(k)
        lease = lock.acquire(timeout=10)
        assert lease is not None
        lock.release(lease)
    held = mgr.lock(keys[0]).acquire(timeout=10)
    assert held is not None
    consul.kv.delete(keys[0])  # a loss
    assert lost.wait(1, timeout=15)
    assert mgr.lock(keys[1]).acquire(blocking=False) is not None
    # A lock-delay wait: the other manager's session is destroyed while it holds keys[2].
    taken = other.lock(keys[2]).acquire(timeout=10)
    assert taken is not None
    consul.sessions.destroy(taken.session_id)
    assert mgr.lock(keys[2]).acquire(timeout=15) is not None
    stats = mgr.stats()
    assert stats.acquired == 6
    assert stats.released == 3
    assert stats.lost["key_deleted"] == 1 and sum(stats.lost.values()) == 1
    assert stats.held == 2
    assert stats.sessions_created == 1 and stats.sessions_lost == 0
    assert stats.lock_delay_waits >= 1 and stats.lock_delay_wait.max > 0
    assert stats.acquire_latency.count == 6 and stats.acquire_latency.total > 0
    assert stats.hold_duration.count == 4
    assert stats.acquire_latency.buckets[-1] == 6  # cumulative, +Inf holds every one


def test_renewals_are_counted(make_manager: MakeManager) -> None:
    mgr = make_manager(ttl="10s", lock_delay=0, renew_fraction=0.1)
    assert mgr.lock(unique("locksmith-test/renew")).acquire(timeout=10) is not None
    wait_for(lambda: mgr.stats().renewals >= 2, 20, "two renewals")
    stats = mgr.stats()
    assert stats.renew_failures == 0 and stats.renew_latency.count == stats.renewals


def test_the_prometheus_collector_exports_every_metric(make_manager: MakeManager) -> None:
    mgr = make_manager(lock_delay=0)
    lock = mgr.lock(unique("locksmith-test/prom"))
    lease = lock.acquire(timeout=10)
    assert lease is not None
    time.sleep(0.01)
    lock.release(lease)
    registry = CollectorRegistry()
    collector = LocksmithCollector()
    registry.register(collector)
    collector.add(mgr, name="billing")
    text = generate_latest(registry).decode()
    assert 'locksmith_acquisitions_total{manager="billing"} 1.0' in text
    assert 'locksmith_releases_total{manager="billing"} 1.0' in text
    assert 'locksmith_losses_total{manager="billing",reason="key_deleted"} 0.0' in text
    assert 'locksmith_held_locks{manager="billing"} 0.0' in text
    assert 'locksmith_hold_seconds_count{manager="billing"} 1.0' in text
    assert 'locksmith_acquire_seconds_bucket{le="+Inf",manager="billing"} 1.0' in text
    collector.remove("billing")
    assert "billing" not in generate_latest(registry).decode()
