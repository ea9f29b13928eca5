"""The history checker, fed histories that keep or break each rule (no Consul needed).

Each rule is shown to catch what it claims to, and not to fire on the history next to it that
keeps it.
"""

from __future__ import annotations

from typing import Any

import pytest

from locksmith.testing import CheckConfig, check_consul_lock, check_history
from locksmith.testing._checker import build_holds
from locksmith.testing._history import Event

KEY = "run/locks/l0"
CFG = CheckConfig(
    ttl=10.0,
    lock_delay=1.0,
    election_allowance=20.0,
    slack=5.0,
    semaphore_limit=2,
    session_prefix="run-app",
)


def ev(t: float, proc: str, name: str, **fields: Any) -> Event:
    return {"t": t, "proc": proc, "ev": name, **fields}


def hold(
    proc: str,
    token: int,
    t0: float,
    t1: float,
    *,
    how: str = "release",
    writes: tuple[tuple[float, int], ...] = (),
    key: str = KEY,
    kind: str = "lock",
    session: str | None = None,
    last_held: float | None = None,
) -> list[Event]:
    """One hold's events: acquire at t0; writes (held_at, index); a release (belief ends at t1)
    or a loss (the end signal at t1, the callback just after); ``held`` last read True at
    ``last_held`` (default: t1 for a release, t1 - 0.1 for a loss)."""
    base = {"kind": kind, "key": key, "token": token}
    sid = session or f"sess-{proc}"
    out = [ev(t0, proc, "acquire", **base, session=sid, acquired_at=t0)]
    out += [ev(h + 0.001, proc, "write", **base, index=i, held_at=h) for h, i in writes]
    if how == "release":
        out += [
            ev(t1, proc, "release_called", **base, last_held=last_held or t1),
            ev(t1 + 0.001, proc, "ended", **base, session=sid, reason="released"),
            ev(t1 + 0.002, proc, "released", **base, ok=True),
        ]
    else:
        out += [
            ev(t1, proc, "ended", **base, session=sid, reason="lease_expired"),
            ev(t1 + 0.001, proc, "lost", **base, session=sid, reason="lease_expired"),
            ev(t1 + 0.05, proc, "noticed_loss", **base, last_held=last_held or t1 - 0.1),
        ]
    return out


def check(*groups: list[Event], cfg: CheckConfig = CFG) -> list[str]:
    events = sorted((e for g in groups for e in g), key=lambda e: float(e["t"]))
    return [f"{v.rule}: {v.message}" for v in check_history(events, cfg).violations]


def rules(*groups: list[Event], cfg: CheckConfig = CFG) -> set[str]:
    return {v.split(":", 1)[0] for v in check(*groups, cfg=cfg)}


# --------------------------------------------------------------------------- a clean history


def clean() -> list[list[Event]]:
    return [
        hold("app0", 10, 1.0, 3.0, writes=((1.5, 11), (2.5, 12))),
        hold("app1", 20, 3.1, 20.0, how="lost", writes=((4.0, 21),)),
        # app1 was cut off: its session is reaped at 2xTTL, then app2 acquires.
        hold("app2", 40, 32.0, 34.0, writes=((33.0, 41),)),
        [ev(40.0, "app0", "stop"), ev(40.0, "app1", "stop"), ev(40.0, "app2", "stop")],
    ]


def test_a_clean_history_has_no_violation() -> None:
    events = sorted((e for g in clean() for e in g), key=lambda e: float(e["t"]))
    result = check_history(events, CFG)
    assert result.violations == []
    assert result.stats["acquisitions"] == {"lock": 3}
    assert result.stats["fenced_writes"] == {"accepted": 4, "refused": 0, "unknown": 0}
    assert result.stats["losses"] == {"lease_expired": 1}


def test_belief_ends_at_the_first_end_signal() -> None:
    events = hold("app1", 20, 3.0, 9.0, how="lost")
    holds, problems = build_holds(events)
    (h,) = holds[KEY]
    assert problems == []
    assert h.belief_end == 9.0  # the end signal, before the callback and the worker noticing
    assert h.was_lost
    released = build_holds(hold("app0", 10, 1.0, 3.0))[0][KEY][0]
    assert released.belief_end == 3.0 and not released.was_lost
    # No end at all: believed until the process's last event.
    open_hold = build_holds([hold("app2", 5, 1.0, 2.0)[0], ev(7.5, "app2", "stop")])[0][KEY][0]
    assert open_hold.belief_end == 7.5


# --------------------------------------------------------------------------- exclusion


def test_overlapping_beliefs_break_exclusion() -> None:
    out = check(hold("app0", 10, 1.0, 5.0, last_held=3.5), hold("app1", 20, 4.0, 6.0))
    assert len(out) == 1 and out[0].startswith("exclusion:")
    assert "1.000s of overlap" in out[0] and "hard" not in out[0]


def test_a_held_sample_in_the_rivals_tenure_is_hard_evidence() -> None:
    writes = ((4.5, 11),)
    out = check(
        hold("app0", 10, 1.0, 5.0, writes=writes, last_held=3.5), hold("app1", 20, 4.0, 6.0)
    )
    assert any("hard: app0 read held=True at 4.500" in v for v in out)


def test_touching_but_not_overlapping_beliefs_are_fine() -> None:
    assert check(hold("app0", 10, 1.0, 3.9999), hold("app1", 20, 4.0, 6.0)) == []


def test_a_loss_after_the_rivals_acquire_breaks_two_rules() -> None:
    assert rules(hold("app0", 10, 1.0, 12.0, how="lost"), hold("app1", 20, 11.5, 13.0)) == {
        "exclusion",
        "loss-reported-first",
    }


def test_held_read_true_after_the_end_signal() -> None:
    events = hold("app0", 10, 1.0, 5.0, how="lost")
    events.append(ev(5.5, "app0", "write", kind="lock", key=KEY, token=10, index=11, held_at=5.2))
    assert rules(events) == {"held-after-end"}


def test_a_loss_must_be_reported() -> None:
    events = [e for e in hold("app0", 10, 1.0, 5.0, how="lost") if e["ev"] != "lost"]
    assert rules(events, [ev(30.0, "app0", "stop")]) == {"loss-unreported"}
    # A process that stopped right after cannot be blamed for a callback it never got to run.
    assert rules(events, [ev(6.0, "app0", "stop")]) == set()


def test_a_loss_reported_before_the_acquire_was_recorded() -> None:
    """Found by the soak (seed 1): a semaphore slot lost while acquire() was still returning;
    the callback's event came first and must still count, and the worker's first ``held``
    read being False is no ``held`` sample."""
    kw: dict[str, Any] = {"kind": "semaphore", "key": "run/semaphore", "token": 7}
    events = [
        ev(10.000, "app2", "lost", **kw, reason="released_by_other", session="s"),
        ev(10.001, "app2", "acquire", **kw, session="s", acquired_at=9.999),
        ev(10.002, "app2", "ended", **kw, session="s", reason="event"),
        ev(10.003, "app2", "noticed_loss", **kw, last_held=10.001),  # = the acquire's t
        ev(40.0, "app2", "stop"),
    ]
    (h,) = build_holds(events)[0]["run/semaphore"]
    assert h.lost is not None and h.was_lost and h.held_samples() == []
    assert h.t_acq == 9.999  # belief starts at the lease's own timestamp
    assert check(events) == []


# --------------------------------------------------------------------------- semaphore


def test_a_semaphore_slot_may_be_taken_beside_a_lost_one() -> None:
    """Found on the way: the loss-before-the-next-acquire rule was applied to a semaphore,
    whose next holder may rightly hold beside a holder that is losing its slot."""
    kw: dict[str, Any] = {"key": "run/semaphore", "kind": "semaphore"}
    lost = hold("app1", 10, 0.0, 12.0, how="lost", **kw)  # lost at 12.0
    beside = hold("app0", 20, 8.0, 9.0, **kw)  # a free slot: fine while app1 still holds
    assert check(lost, beside, [ev(40.0, "app1", "stop")]) == []


def test_a_late_release_victim_is_labelled_p2() -> None:
    """Found by the soak (seed 1): app2 released its slot during a cut, took a slot again
    after the heal, and its contender key was freed by its own earlier release arriving late
    (P2): app0 took the freed slot 1.3 ms before app2 learned of it."""
    kw: dict[str, Any] = {"key": "run/semaphore", "kind": "semaphore"}
    a = hold("app1", 10, 0.0, 20.0, **kw)
    earlier = hold("app2", 12, 1.0, 2.0, session="s2", **kw)
    victim = hold("app2", 15, 8.0, 9.0, session="s2", **kw)
    for e in victim:
        if e["ev"] in ("ended", "lost"):
            e["reason"] = "released_by_other"
    rival = hold("app0", 18, 8.999, 12.0, **kw)
    cut = [ev(1.5, "run", "cut", round=1), ev(4.0, "run", "heal", round=1)]
    events = sorted(a + earlier + victim + rival + cut, key=lambda e: e["t"])
    (v,) = check_history(events, CFG).violations
    assert v.rule == "semaphore-limit" and v.known_finding == "P2"
    # Without the earlier release by the same session during a cut, it is no known finding.
    (v,) = check_history(sorted(a + victim + rival + cut, key=lambda e: e["t"]), CFG).violations
    assert v.rule == "semaphore-limit" and v.known_finding is None
    no_cut = sorted(a + earlier + victim + rival, key=lambda e: e["t"])
    (v,) = check_history(no_cut, CFG).violations
    assert v.known_finding is None


def test_semaphore_limit() -> None:
    kw: dict[str, Any] = {"key": "run/semaphore", "kind": "semaphore"}
    two = [hold("app0", 10, 1.0, 5.0, **kw), hold("app1", 20, 2.0, 6.0, **kw)]
    assert check(*two) == []
    out = check(*two, hold("app2", 30, 3.0, 4.0, **kw))
    assert len(out) == 1 and out[0].startswith("semaphore-limit: 3 holders believed at 3.000")


# --------------------------------------------------------------------------- tokens, fencing


def test_a_token_handed_out_twice() -> None:
    out = check(hold("app0", 10, 1.0, 2.0), hold("app1", 10, 3.0, 4.0))
    assert out == ["token-order: token 10 handed to both app0 and app1"]


def test_one_process_acquiring_a_token_twice_gets_two_holds() -> None:
    kw: dict[str, Any] = {"key": "run/semaphore", "kind": "semaphore"}
    events = hold("app0", 10, 1.0, 2.0, **kw) + hold("app0", 10, 3.0, 4.0, **kw)
    holds, problems = build_holds(events)
    assert [(h.t_acq, h.belief_end) for h in holds["run/semaphore"]] == [(1.0, 2.0), (3.0, 4.0)]
    assert [p.message for p in problems] == ["app0 acquired token 10 twice"]
    assert problems[0].known_finding == "P1"  # see docs/faults.md
    assert check_history(events, CFG).by_rule() == {"token-order": 1}


def test_tokens_going_backwards() -> None:
    assert rules(hold("app0", 30, 1.0, 2.0), hold("app1", 20, 3.0, 4.0)) == {"token-order"}
    # Semaphore slots are taken concurrently: their tokens need not follow the recorded times.
    kw: dict[str, Any] = {"key": "run/semaphore", "kind": "semaphore"}
    assert check(hold("app0", 30, 1.0, 2.0, **kw), hold("app1", 20, 1.1, 4.0, **kw)) == []


def test_a_write_accepted_under_a_superseded_token() -> None:
    # app0's write landed at index 25, after app1's acquisition wrote 20.
    out = check(hold("app0", 10, 1.0, 5.0, writes=((2.0, 25),)), hold("app1", 20, 6.0, 7.0))
    assert len(out) == 1 and out[0].startswith("fencing: a write with token 10")


def test_a_register_value_seen_by_a_sample_covers_unknown_writes() -> None:
    target = "run/registers/l0"
    a = hold("app0", 10, 1.0, 5.0, writes=((2.0, 11),))
    for e in a:
        if e["ev"] == "write":
            e["target"] = target
    b = hold("app1", 20, 6.0, 9.0)
    good = ev(7.0, "run", "kv_sample", registers={target: {"index": 15, "value": {"token": 10}}})
    assert check(a, b, [good]) == []
    bad = ev(8.0, "run", "kv_sample", registers={target: {"index": 31, "value": {"token": 10}}})
    assert rules(a, b, [bad]) == {"fencing"}


# --------------------------------------------------------------------------- orphans


def samples(t0: float, t1: float, **fields: Any) -> list[Event]:
    return [ev(float(t), "run", "kv_sample", **fields) for t in range(int(t0), int(t1) + 1)]


def test_a_key_held_by_a_session_nobody_believes_in() -> None:
    held = {"keys": {KEY: {"session": "ghost", "index": 5}}}
    someone = hold("app1", 3, 0.0, 0.5)  # the key is one the applications use
    assert CFG.orphan_bound == 45.0
    assert rules(samples(0, 30, **held), someone) == set()  # within the bound: reaping
    out = check(samples(0, 60, **held), someone)
    assert len(out) == 1 and out[0].startswith("orphan: ") and "ghost" in out[0]
    # A key no application ever took (consul lock's) is not theirs to answer for.
    assert rules(samples(0, 60, **held)) == set()
    # The same samples while a holder believes it holds with that session: no orphan.
    believer = hold("app0", 10, 0.0, 61.0, session="ghost")
    assert rules(samples(0, 60, **held), believer) == set()


def test_a_session_no_application_uses() -> None:
    sess = {"sessions": [{"id": "s1", "name": "run-app0"}]}
    assert rules(samples(0, 60, **sess)) == {"orphan"}
    listed = [ev(0.0, "app0", "sessions", ids=["s1"]), ev(70.0, "app0", "stop")]
    assert rules(samples(0, 60, **sess), listed) == set()
    # Sessions of others (consul lock's, say) are not the applications' business.
    other = {"sessions": [{"id": "s2", "name": "run-cl0"}]}
    assert rules(samples(0, 60, **other)) == set()


def test_a_leader_change_restarts_the_orphan_clock() -> None:
    """Found by the soak (seed 1): sessions whose create answer never came back lived 54 s,
    because two leader changes in a row each restarted their TTL timers (Consul does so)."""
    sess = {"sessions": [{"id": "s9", "name": "run-app2-ephemeral"}]}
    seen = [{**e, "leader": "s0"} for e in samples(0, 54, **sess)]
    assert rules(seen) == {"orphan"}
    for e in seen:
        if e["t"] >= 20.0:
            e["leader"] = "s1"  # a new leader from t=20: reaped 2xTTL later at the earliest
    assert rules(seen) == set()
    # Histories without leaders in their samples: the heal of a round that moves the leader.
    plain = samples(0, 54, **sess)
    heal = [
        ev(5.0, "run", "cut", kind="isolate_leader", duration=10.0),
        ev(15.0, "run", "heal", round=1),
    ]
    assert rules(plain, heal) == set()
    assert rules(samples(0, 80, **sess), heal) == {"orphan"}


def test_anything_left_after_the_applications_stopped() -> None:
    stop = [ev(10.0, "app0", "stop")]
    left = {"sessions": [{"id": "s1", "name": "run-app0"}], "keys": {}}
    assert rules(stop, [ev(60.0, "run", "final_sample", **left)]) == {"final-orphan"}
    assert rules(stop, [ev(60.0, "run", "final_sample", sessions=[], keys={})]) == set()
    # Checked only once the bound has passed.
    assert rules(stop, [ev(20.0, "run", "final_sample", **left)]) == set()


# --------------------------------------------------------------------------- liveness


def test_liveness_after_a_heal() -> None:
    heal = [ev(100.0, "run", "heal", round=1)]
    assert CFG.liveness_bound == 46.0
    assert check(heal, hold("app0", 10, 130.0, 131.0)) == []
    out = check(heal, hold("app0", 10, 150.0, 151.0))
    assert len(out) == 1 and out[0].startswith("liveness: nobody acquired")
    # A holder whose belief spans the heal keeps its lock; the clock starts at its end.
    spanning = hold("app1", 5, 90.0, 140.0)
    assert check(heal, spanning, hold("app0", 10, 150.0, 151.0)) == []
    # The next cut came first: not enough time to judge.
    assert check(heal, [ev(120.0, "run", "cut", round=2)], hold("app0", 10, 150.0, 151.0)) == []


def test_a_late_end_signal() -> None:
    lost = hold("app0", 10, 1.0, 12.0, how="lost", session="s1")  # lease_expired at 12.0
    renewed = [ev(1.0, "app0", "renewed", session="s1", ttl=10.0)]
    result = check_history(sorted(lost + renewed, key=lambda e: float(e["t"])), CFG)
    assert result.stats["deadline_checks"] == {"leases": 1, "worst_lateness_s": 1.0}
    assert result.violations == []  # 1 s late: within TTL/4 (a stalled thread)
    renewed = [ev(-3.0, "app0", "renewed", session="s1", ttl=10.0)]  # deadline <= 7.0
    assert rules(lost, renewed) == {"late-end-signal"}
    in_time = [ev(2.5, "app0", "renewed", session="s1", ttl=10.0)]
    stats = check_history(sorted(lost + in_time, key=lambda e: float(e["t"])), CFG).stats
    assert stats["deadline_checks"]["worst_lateness_s"] == -0.5


# --------------------------------------------------------------------------- consul lock


def child(name: str, t0: float, t1: float, how: str = "done") -> list[Event]:
    proc = name.split(".", maxsplit=1)[0]
    return [
        ev(t0, proc, "cl_start", child=name),
        ev(t1, proc, "cl_end", child=name, how=how),
    ]


def test_consul_lock_children_overlapping() -> None:
    ok = check_consul_lock(child("cl0.1", 0.0, 5.0) + child("cl1.1", 5.1, 9.0))
    assert ok.violations == [] and ok.stats["children"] == 2
    events = sorted(
        child("cl0.1", 0.0, 10.0, "sigterm") + child("cl1.1", 8.0, 12.0),
        key=lambda e: float(e["t"]),
    )
    bad = check_consul_lock(events)
    assert len(bad.violations) == 1
    assert bad.stats["overlap_max_s"] == pytest.approx(2.0)
    assert "2.00s with two children running" in bad.violations[0].message
    assert [e["ev"] for e in bad.violations[0].events] == [
        "cl_start",
        "cl_start",
        "cl_end",
        "cl_end",
    ]


# --------------------------------------------------------------------------- fair lock

FAIR = "run/fair"


def test_a_fair_lock_token_is_its_queue_index_not_its_handoff() -> None:
    """app1 queued (token 15) while app0 (token 10) held and wrote at indices 20 and 22:
    valid, though 15 < 20; then app1 held and wrote at 30."""
    a = hold("app0", 10, 1.0, 3.0, kind="fair", key=FAIR, writes=((1.5, 20), (2.5, 22)))
    b = hold("app1", 15, 3.1, 5.0, kind="fair", key=FAIR, writes=((3.5, 30),))
    assert check(a, b) == []


def test_a_fair_lock_write_below_an_accepted_higher_token_is_caught() -> None:
    """app0's write with token 10 accepted at index 35, after app1's with token 15 at 30."""
    a = hold("app0", 10, 1.0, 3.0, kind="fair", key=FAIR, writes=((1.5, 20), (2.9, 35)))
    b = hold("app1", 15, 3.1, 5.0, kind="fair", key=FAIR, writes=((3.5, 30),))
    found = check(a, b)
    assert any(
        v.startswith("fencing: a write with token 10 was accepted at index 35") for v in found
    )


def test_a_fair_lock_write_sent_after_a_rival_acquired_is_caught() -> None:
    """app0 still wrote (sent at 3.2, accepted at 29) after app1 had acquired at 3.1."""
    a = hold("app0", 10, 1.0, 3.3, kind="fair", key=FAIR, writes=((1.5, 20), (3.2, 29)))
    b = hold("app1", 15, 3.1, 5.0, kind="fair", key=FAIR, writes=((3.5, 30),))
    found = check(a, b)
    assert any(v.startswith("fencing") and "though fair app1#15" in v for v in found), found
