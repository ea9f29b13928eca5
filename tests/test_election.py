"""Leader election against a real Consul: campaign, proclaim, resign, observers, losses."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from support import PROC, Proc, agent_call, wait_for

from locksmith import (
    Consul,
    LeaderInfo,
    LeadershipEvent,
    Lease,
    LockManager,
    LockTimeout,
    LossReason,
)

TTL = 10.0
LOCK_DELAY = 1.0


def _mgr(consul: Consul, **kw: object) -> LockManager:
    kw.setdefault("ttl", "10s")
    kw.setdefault("lock_delay", "15s")
    return LockManager(consul, **kw).start()  # type: ignore[arg-type]


def test_campaign_proclaim_resign_and_observers(consul: Consul, key: str) -> None:
    seen: list[LeaderInfo | None] = []
    events: list[tuple[str, LeadershipEvent]] = []
    with _mgr(consul) as a, _mgr(consul) as b, _mgr(consul) as watcher:
        obs = watcher.election(key)
        obs.on_leader_change(seen.append)
        wait_for(lambda: seen, 10, "the observer's first report")
        assert seen == [None]

        ea, eb = a.election(key, b"host-a"), b.election(key, b"host-b")
        ea.on_elected(lambda e: events.append(("a-elected", e)))
        ea.on_deposed(lambda e: events.append(("a-deposed", e)))
        eb.on_elected(lambda e: events.append(("b-elected", e)))
        lease_a = ea.campaign(timeout=10)
        assert ea.is_leader and not eb.is_leader
        info = ea.leader()
        assert info is not None
        assert (info.value, info.session_id) == (b"host-a", lease_a.session_id)
        assert info.node and info.session_name == "locksmith"
        with pytest.raises(LockTimeout):
            eb.campaign(timeout=0.5)

        ea.proclaim(b"host-a:v2")
        assert eb.leader() is not None and eb.leader().value == b"host-a:v2"  # type: ignore[union-attr]

        # b waits; a resigns; b takes over at once, although lock-delay is 15 s.
        result: list[Lease] = []
        t = threading.Thread(target=lambda: result.append(eb.campaign(timeout=10)))
        t.start()
        time.sleep(0.3)
        assert ea.resign() is True
        t.join(12)
        assert result
        lease_b = result[0]
        assert eb.is_leader and not ea.is_leader
        assert lease_b.fencing_token > lease_a.fencing_token

        wait_for(lambda: seen[-1] and seen[-1].value == b"host-b", 10, "the observer to see b")
        eb.resign()
        wait_for(lambda: seen[-1] is None, 10, "the observer to see nobody leading")
    values = [s.value if s else None for s in seen]
    # Every change once, in order (the release between a and b may show as "nobody").
    assert values in (
        [None, b"host-a", b"host-a:v2", b"host-b", None],
        [None, b"host-a", b"host-a:v2", None, b"host-b", None],
    )
    leaders = [s for s in seen if s is not None]
    assert leaders[0].session_id == lease_a.session_id == leaders[1].session_id
    assert leaders[0].since_index == lease_a.fencing_token
    assert leaders[-1].since_index == lease_b.fencing_token
    names = [n for n, _ in events]  # each manager has its own callback thread: order per candidate
    assert [n for n in names if n.startswith("a-")] == ["a-elected", "a-deposed"]
    assert [n for n in names if n.startswith("b-")] == ["b-elected"]
    assert next(e for n, e in events if n == "a-deposed").reason is None  # resigned, not lost


def test_observe_iterator_stops_at_timeout(consul: Consul, key: str) -> None:
    with _mgr(consul) as a, _mgr(consul) as w:
        a.election(key, b"x").campaign(timeout=10)
        got = list(w.election(key).observe(timeout=1.0))
    assert [g.value if g else None for g in got] == [b"x"]


def test_session_destroyed_deposes_and_run_rejoins(consul: Consul, key: str) -> None:
    deposed: list[LeadershipEvent] = []
    runs: list[tuple[int, bool]] = []
    with _mgr(consul, lock_delay="1s") as a:
        ea = a.election(key, b"a")
        ea.on_deposed(deposed.append)
        stop = threading.Event()

        def work(lease: Lease, cancel: threading.Event) -> str:
            assert ea.lease is lease
            if len(runs) == 0:
                runs.append((lease.fencing_token, cancel.wait(30)))
                return "lost"
            runs.append((lease.fencing_token, cancel.is_set()))
            stop.wait(30)
            return "done"

        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(ea.run(work, rejoin=True, timeout=30)))
        t.start()
        first = wait_for(lambda: ea.lease, 10, "the first election")
        consul.sessions.destroy(first.session_id)
        wait_for(lambda: len(runs) >= 2, 30, "run() to campaign again and call fn again")
        stop.set()
        t.join(10)
    assert out == ["done"]
    assert runs[0] == (first.fencing_token, True)  # cancel was set by the loss
    assert runs[1][0] > first.fencing_token and runs[1][1] is False
    assert [d.reason for d in deposed][:1] == [LossReason.SESSION_INVALIDATED]


def test_check_critical_deposes(consul: Consul, consul_addr: str, key: str) -> None:
    check = f"locksmith-election-{key.split('/')[1]}"
    agent_call(
        consul_addr, "PUT", "/v1/agent/check/register", {"ID": check, "Name": check, "TTL": "60s"}
    )
    try:
        agent_call(consul_addr, "PUT", f"/v1/agent/check/pass/{check}")
        deposed: list[LeadershipEvent] = []
        with _mgr(consul, checks=["serfHealth", check]) as a:
            ea = a.election(key, b"a")
            ea.on_deposed(deposed.append)
            ea.campaign(timeout=10)
            agent_call(consul_addr, "PUT", f"/v1/agent/check/fail/{check}")
            wait_for(lambda: deposed, 15, "on_deposed after the check went critical")
            assert not ea.is_leader
            assert ea.leader() is None
        assert deposed[0].reason is LossReason.SESSION_INVALIDATED
    finally:
        agent_call(consul_addr, "PUT", f"/v1/agent/check/deregister/{check}")


@pytest.mark.slow
def test_ttl_expiry_with_renewals_suspended(consul: Consul, consul_addr: str, key: str) -> None:
    """A stopped leader (SIGSTOP: no renewals) loses at 2xTTL; on SIGCONT it knows it lost."""
    a = Proc.python(PROC, consul_addr, "--ttl", "10s", "--lock-delay", "1s", "candidate", key, "a")
    try:
        first = a.wait_event(lambda e: e["event"] == "elected", 20, "a elected")
        with _mgr(consul, lock_delay="1s") as b:
            eb = b.election(key, b"b")
            a.signal(signal.SIGSTOP)
            lease_b = eb.campaign(timeout=2 * TTL + LOCK_DELAY + 15)
            assert lease_b.fencing_token > first["token"]
            a.signal(signal.SIGCONT)
            lost = a.wait_event(lambda e: e["event"] == "deposed", 15, "a deposed after SIGCONT")
            assert lost["reason"] == LossReason.LEASE_EXPIRED.value
            assert eb.is_leader
            info = eb.leader()
            assert info is not None and info.value == b"b"
    finally:
        a.stop()


@pytest.mark.slow
def test_three_processes_failover_after_kill9(consul: Consul, consul_addr: str, key: str) -> None:
    """kill -9 the leader of 3 candidates: a new one within 2xTTL + lock-delay + 1 s."""
    names = ("c1", "c2", "c3")
    procs = {
        n: Proc.python(PROC, consul_addr, "--ttl", "10s", "--lock-delay", "1s", "candidate", key, n)
        for n in names
    }
    seen_cb: list[LeaderInfo | None] = []
    seen_iter: list[LeaderInfo | None] = []
    stop = threading.Event()
    try:
        with _mgr(consul) as w:
            obs = w.election(key)
            obs.on_leader_change(seen_cb.append)

            def follow() -> None:
                for info in obs.observe(timeout=120, stop=stop):
                    seen_iter.append(info)

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            for p in procs.values():
                p.wait_event(lambda e: e["event"] == "ready", 20, "candidate ready")
            first = wait_for(lambda: next((s for s in seen_cb if s), None), 20, "a leader")
            leader = first.value.decode()
            elected = procs[leader].wait_event(lambda e: e["event"] == "elected", 10, "elected")
            assert elected["session"] == first.session_id

            procs[leader].signal(signal.SIGKILL)
            killed_at = time.monotonic()
            second = wait_for(
                lambda: next((s for s in seen_cb if s and s.value.decode() != leader), None),
                2 * TTL + LOCK_DELAY + 30,
                "a new leader",
            )
            failover = time.monotonic() - killed_at
            new = second.value.decode()
            new_elected = procs[new].wait_event(lambda e: e["event"] == "elected", 10, "elected")
            assert new_elected["token"] > elected["token"]
            assert second.since_index == new_elected["token"]
            # Nobody else believes it leads.
            others = [n for n in names if n not in (leader, new)]
            assert not any(e["event"] == "elected" for e in procs[others[0]].events)

            def caught_up(seen: list[LeaderInfo | None]) -> bool:
                return (
                    bool(seen)
                    and seen[-1] is not None
                    and seen[-1].session_id == (second.session_id)
                )

            # Both observers caught up with the last change (a condition, not a sleep).
            wait_for(lambda: caught_up(seen_cb) and caught_up(seen_iter), 10, "observers")
            stop.set()
            follower.join(10)
    finally:
        for p in procs.values():
            p.stop()
    print(f"failover after kill -9: {failover:.2f}s")
    assert failover < 2 * TTL + LOCK_DELAY + 1.0
    for seen in (seen_cb, seen_iter):
        sessions = [s.session_id if s else None for s in seen]
        # once each, in order: nobody, first leader, (nobody during lock-delay), new leader
        assert sessions in (
            [None, first.session_id, second.session_id],
            [None, first.session_id, None, second.session_id],
        ), sessions
