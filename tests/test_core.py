"""Unit tests of the pure decision helpers (``locksmith._core``), the lifecycle table
(``locksmith._states``) and the clocks."""

from __future__ import annotations

import threading

import pytest

from locksmith import FakeClock, LockState, LossReason, ManagerState, SystemClock
from locksmith._backoff import Backoff
from locksmith._core import (
    MAX_LOCK_DELAY,
    WINDOW_SLACK,
    AcquirePlanner,
    DelayHint,
    GiveUp,
    LeaseTimer,
    PresumeLost,
    RenewAt,
    SleepUntil,
    WatchKey,
    WatchTarget,
    classify_loss,
    plan_watches,
    settle_reason,
)
from locksmith._deadline import MAX_BLOCKING_WAIT, WAIT_JITTER, query_wait
from locksmith._states import (
    AttemptPhase,
    InvalidTransition,
    SessionState,
    advance,
)

SID = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"


# --------------------------------------------------------------------------- clocks


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=10.0)
    assert clock.monotonic() == 10.0
    clock.advance(2.5)
    assert clock.monotonic() == 12.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_fake_clock_wait_blocks_until_advanced_or_event() -> None:
    clock = FakeClock(start=0.0)
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(clock.wait_until(5.0)))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # time does not move on its own
    clock.advance(4.0)
    t.join(0.2)
    assert t.is_alive()
    clock.advance(1.0)
    t.join(5)
    assert done == [False] and clock.monotonic() == 5.0
    ev = threading.Event()
    ev.set()
    assert clock.wait_until(100.0, ev) is True
    assert clock.monotonic() == 5.0
    assert clock.wait_until(3.0) is False  # already past
    with pytest.raises(ValueError, match="never return"):
        clock.wait_until(float("inf"))


def test_fake_clock_wait_on_event_is_cut_short_by_another_thread() -> None:
    clock = FakeClock(start=0.0)
    ev = threading.Event()
    threading.Timer(0.05, ev.set).start()
    assert clock.wait_until(float("inf"), ev) is True
    assert clock.monotonic() == 0.0


def test_fake_clock_autojump_moves_to_the_earliest_wait() -> None:
    clock = FakeClock(start=0.0, autojump_threshold=0.2)
    results: list[float] = []

    def waiter(deadline: float) -> None:
        clock.wait_until(deadline)
        results.append(clock.monotonic())

    threads = [threading.Thread(target=waiter, args=(d,)) for d in (30.0, 10.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(results) == [10.0, 30.0]


def test_fake_clock_rejects_a_negative_threshold() -> None:
    with pytest.raises(ValueError, match="autojump_threshold"):
        FakeClock(autojump_threshold=-1)


def test_system_clock_counts_suspended_time_where_it_can() -> None:
    import time

    clock = SystemClock()
    if hasattr(time, "CLOCK_BOOTTIME"):
        assert clock.suspend_aware
        assert abs(clock.monotonic() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0
        assert clock.max_slice <= 1.0  # a resumed wait re-reads the clock within a second
    else:  # pragma: no cover - not Linux
        assert not clock.suspend_aware


def test_system_clock_wait_until_infinite_returns_on_event() -> None:
    clock = SystemClock()
    ev = threading.Event()
    threading.Timer(0.05, ev.set).start()
    assert clock.wait_until(float("inf"), ev) is True
    assert clock.wait_until(clock.monotonic() - 1.0) is False


# --------------------------------------------------------------------------- lease timer


def test_lease_timer_renews_at_a_fraction_and_expires_at_ttl() -> None:
    clock = FakeClock(start=100.0)
    timer = LeaseTimer(ttl=15.0, started=clock.monotonic())
    assert timer.deadline == 115.0
    assert timer.decide(clock.monotonic()) == RenewAt(at=105.0, deadline=115.0)
    clock.advance(14.999)
    assert timer.valid(clock.monotonic())
    assert isinstance(timer.decide(clock.monotonic()), RenewAt)
    clock.advance(0.001)
    assert not timer.valid(clock.monotonic())
    assert timer.remaining(clock.monotonic()) == 0.0
    assert timer.decide(clock.monotonic()) == PresumeLost(deadline=115.0)


def test_deadline_measured_from_request_start_not_answer() -> None:
    clock = FakeClock(start=0.0)
    timer = LeaseTimer(ttl=10.0, started=0.0)
    sent = clock.monotonic()
    clock.advance(4.0)  # a slow renew: the answer arrives 4 s after the request was sent
    timer.renewed(sent, 10.0)
    assert timer.deadline == 10.0  # not 14


def test_renewal_adopts_server_raised_ttl() -> None:
    timer = LeaseTimer(ttl=10.0, started=0.0)
    timer.renewed(3.0, 30.0)  # the server asks for a longer TTL
    assert timer.ttl == 30.0
    assert timer.deadline == 33.0
    assert timer.decide(4.0) == RenewAt(at=13.0, deadline=33.0)


def test_out_of_order_renewal_cannot_move_deadline_back() -> None:
    timer = LeaseTimer(ttl=10.0, started=5.0)
    timer.renewed(2.0, 10.0)
    assert timer.deadline == 15.0


def test_presume_lost_after_a_pause_past_ttl() -> None:
    """A process paused past its TTL (GC, SIGSTOP) must presume the loss on resume."""
    clock = FakeClock(start=0.0)
    timer = LeaseTimer(ttl=10.0, started=clock.monotonic())
    clock.advance(3.0)
    timer.renewed(clock.monotonic(), 10.0)
    clock.advance(60.0)  # the pause
    decision = timer.decide(clock.monotonic())
    assert decision == PresumeLost(deadline=13.0)
    assert not timer.valid(clock.monotonic())


def test_no_ttl_means_no_deadline() -> None:
    timer = LeaseTimer(ttl=None, started=0.0)
    assert timer.deadline == float("inf")
    assert timer.valid(1e12)
    assert timer.decide(1e12) is None


# --------------------------------------------------------------------------- planner


def test_planner_watches_key_while_held() -> None:
    clock = FakeClock(start=0.0)
    planner = AcquirePlanner(deadline=30.0)
    action = planner.after_failure(clock.monotonic(), holder=SID, index=42, hint=None)
    assert action == WatchKey(index=42, wait=30.0)
    clock.advance(29.0)
    action = planner.after_failure(clock.monotonic(), holder=SID, index=43, hint=None)
    assert action == WatchKey(index=43, wait=1.0)


def test_planner_without_deadline_caps_blocking_wait() -> None:
    planner = AcquirePlanner(deadline=None)
    action = planner.after_failure(0.0, holder=SID, index=1, hint=None)
    assert isinstance(action, WatchKey)
    assert action.wait == 300.0
    assert planner.remaining(1e9) == float("inf")


def test_planner_gives_up_at_the_deadline() -> None:
    planner = AcquirePlanner(deadline=10.0)
    assert planner.after_failure(10.0, holder=SID, index=1, hint=None) == GiveUp()
    assert planner.after_failure(11.0, holder=None, index=1, hint=None) == GiveUp()


def test_planner_known_lock_delay_window_sleeps_to_its_end() -> None:
    planner = AcquirePlanner(deadline=None)
    hint = DelayHint(since=100.0, lock_delay=15.0, session_id=OTHER)
    assert hint.until == 115.0
    action = planner.after_failure(101.0, holder=None, index=5, hint=hint)
    assert action == SleepUntil(until=115.0 + WINDOW_SLACK, lock_delay=True, known=True)


def test_planner_known_window_is_cut_by_the_deadline() -> None:
    planner = AcquirePlanner(deadline=105.0)
    hint = DelayHint(since=100.0, lock_delay=15.0)
    action = planner.after_failure(101.0, holder=None, index=5, hint=hint)
    assert isinstance(action, SleepUntil)
    assert action.until == 105.0
    assert planner.after_failure(105.0, holder=None, index=5, hint=hint) == GiveUp()


def test_planner_unknown_window_backs_off_exponentially() -> None:
    clock = FakeClock(start=0.0)
    planner = AcquirePlanner(deadline=None, backoff=Backoff(start=0.1, cap=1.0))
    steps = []
    for _ in range(6):
        now = clock.monotonic()
        action = planner.after_failure(now, holder=None, index=1, hint=None)
        assert isinstance(action, SleepUntil)
        assert action.lock_delay and not action.known
        steps.append(action.until - now)
        clock.advance(action.until - now)
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for step, base in zip(steps, bases, strict=True):
        assert base * 0.8 - 1e-9 <= step <= base * 1.2 + 1e-9


def test_planner_estimate_too_short_falls_back_to_backoff() -> None:
    planner = AcquirePlanner(deadline=None)
    hint = DelayHint(since=100.0, lock_delay=5.0)
    # The attempt at the window's end failed again: the estimate was short.
    action = planner.after_failure(105.0 + WINDOW_SLACK, holder=None, index=1, hint=hint)
    assert isinstance(action, SleepUntil)
    assert action.known is False
    assert action.until > 105.0 + WINDOW_SLACK


def test_planner_unknown_window_never_sleeps_past_the_60s_cap() -> None:
    planner = AcquirePlanner(deadline=None, backoff=Backoff(start=30.0, cap=60.0))
    hint = DelayHint(since=0.0, lock_delay=None)
    action = planner.after_failure(50.0, holder=None, index=1, hint=hint)
    assert isinstance(action, SleepUntil)
    assert action.until <= MAX_LOCK_DELAY + WINDOW_SLACK


def test_planner_backoff_resets_when_a_holder_appears() -> None:
    planner = AcquirePlanner(deadline=None, backoff=Backoff(start=0.1, cap=10.0))
    for t in range(3):
        planner.after_failure(float(t), holder=None, index=1, hint=None)
    assert isinstance(planner.after_failure(3.0, holder=SID, index=2, hint=None), WatchKey)
    action = planner.after_failure(4.0, holder=None, index=3, hint=None)
    assert isinstance(action, SleepUntil)
    assert action.until - 4.0 <= 0.1 * 1.2 + 1e-9


# --------------------------------------------------------------------------- loss


@pytest.mark.parametrize(
    ("entry_session", "exists", "alive", "expected"),
    [
        (SID, True, True, None),
        (SID, True, False, None),  # still ours on the key: not (yet) a loss
        (None, True, False, LossReason.SESSION_INVALIDATED),
        (None, False, False, LossReason.SESSION_INVALIDATED),  # behavior=delete
        (OTHER, True, False, LossReason.SESSION_INVALIDATED),
        (None, False, True, LossReason.KEY_DELETED),
        (None, True, True, LossReason.RELEASED_BY_OTHER),
        (OTHER, True, True, LossReason.KEY_TAKEN),
    ],
)
def test_classify_loss(
    entry_session: str | None, exists: bool, alive: bool, expected: LossReason | None
) -> None:
    assert classify_loss(SID, entry_session, exists, alive) is expected


@pytest.mark.parametrize("observed", list(LossReason))
def test_settle_reason_prefers_lease_expired_after_the_deadline(observed: LossReason) -> None:
    assert settle_reason(observed, lease_valid=True) is observed
    assert settle_reason(observed, lease_valid=False) is LossReason.LEASE_EXPIRED


@pytest.mark.parametrize(
    ("keys", "budget", "targets"),
    [
        ([], 4, []),
        (["a/b/c"], 4, [WatchTarget("a/b/c")]),
        # Top-level keys with nothing in common are never merged into a watch of all of KV.
        (["alpha-x", "beta-x"], 4, [WatchTarget("alpha-x"), WatchTarget("beta-x")]),
        (["alpha-x", "beta-x"], 1, [WatchTarget("alpha-x"), WatchTarget("beta-x")]),
        # Siblings share their directory; a key alone in its directory is watched alone.
        (["jobs/a", "jobs/b", "etc/c"], 4, [WatchTarget("etc/c"), WatchTarget("jobs/", True)]),
        # Over budget: the deepest common directory first.
        (
            ["x/1/a", "x/2/b", "y/3/c", "y/4/d", "z"],
            2,
            [WatchTarget("x/", True), WatchTarget("y/", True), WatchTarget("z")],
        ),
        (["alpha-x", "alpha-y", "beta"], 1, [WatchTarget("alpha-", True), WatchTarget("beta")]),
    ],
)
def test_plan_watches(keys: list[str], budget: int, targets: list[WatchTarget]) -> None:
    plan = plan_watches(keys, budget)
    assert plan == targets
    assert all(any(t.covers(k) for t in plan) for k in keys)
    assert all(t.path for t in plan)  # never the whole KV store


def test_plan_watches_many_keys_in_one_directory_is_one_query() -> None:
    keys = [f"bench/scale/k{i}" for i in range(10_000)]
    assert plan_watches(keys, 4) == [WatchTarget("bench/scale/", True)]


def test_plan_watches_keeps_the_budget_with_many_directories() -> None:
    keys = [f"svc/{i % 50}/node-{i}" for i in range(5_000)]
    plan = plan_watches(keys, 4)
    assert len(plan) <= 4
    assert all(any(t.covers(k) for t in plan) for k in keys)


# --------------------------------------------------------------------------- states

_LOCK_ALLOWED = {
    (LockState.UNLOCKED, LockState.ACQUIRING),
    (LockState.ACQUIRING, LockState.HELD),
    (LockState.ACQUIRING, LockState.UNLOCKED),
    (LockState.HELD, LockState.RELEASING),
    (LockState.HELD, LockState.LOST),
    (LockState.RELEASING, LockState.UNLOCKED),
    (LockState.RELEASING, LockState.ACQUIRING),
    (LockState.RELEASING, LockState.LOST),
    (LockState.LOST, LockState.ACQUIRING),
    (LockState.LOST, LockState.UNLOCKED),
}
_MANAGER_ALLOWED = {
    (ManagerState.NEW, ManagerState.RUNNING),
    (ManagerState.NEW, ManagerState.CLOSING),
    (ManagerState.RUNNING, ManagerState.CLOSING),
    (ManagerState.CLOSING, ManagerState.CLOSED),
}
_SESSION_ALLOWED = {
    (SessionState.NONE, SessionState.CREATING),
    (SessionState.NONE, SessionState.ACTIVE),
    (SessionState.CREATING, SessionState.ACTIVE),
    (SessionState.CREATING, SessionState.NONE),
    (SessionState.ACTIVE, SessionState.NONE),
}


@pytest.mark.parametrize("current", list(LockState))
@pytest.mark.parametrize("new", list(LockState))
def test_lock_transitions(current: LockState, new: LockState) -> None:
    if (current, new) in _LOCK_ALLOWED or current is new:
        assert advance(current, new) is new
    else:
        with pytest.raises(InvalidTransition, match=f"{current.value} -> {new.value}"):
            advance(current, new)


@pytest.mark.parametrize("current", list(ManagerState))
@pytest.mark.parametrize("new", list(ManagerState))
def test_manager_transitions(current: ManagerState, new: ManagerState) -> None:
    if (current, new) in _MANAGER_ALLOWED or current is new:
        assert advance(current, new) is new
    else:
        with pytest.raises(InvalidTransition):
            advance(current, new)


@pytest.mark.parametrize("current", list(SessionState))
@pytest.mark.parametrize("new", list(SessionState))
def test_session_transitions(current: SessionState, new: SessionState) -> None:
    if (current, new) in _SESSION_ALLOWED or current is new:
        assert advance(current, new) is new
    else:
        with pytest.raises(InvalidTransition):
            advance(current, new)


@pytest.mark.parametrize("new", list(AttemptPhase))
def test_a_finished_attempt_goes_nowhere(new: AttemptPhase) -> None:
    if new is AttemptPhase.DONE:
        assert advance(AttemptPhase.DONE, new) is new
    else:
        with pytest.raises(InvalidTransition):
            advance(AttemptPhase.DONE, new)


def test_query_wait_leaves_room_for_consuls_jitter() -> None:
    # Consul may answer wait * 17/16 after the request: that must still be by the deadline.
    assert query_wait(0.0, 17.0) == pytest.approx(16.0)
    assert query_wait(5.0, 5.0 + 1.0) * (1 + WAIT_JITTER) == pytest.approx(1.0)
    assert query_wait(0.0, 1e6) == MAX_BLOCKING_WAIT
    assert query_wait(0.0, 1e6, max_wait=2.0) == 2.0
    assert query_wait(10.0, 9.0) == 0.001  # past: the shortest wait, never zero or negative
