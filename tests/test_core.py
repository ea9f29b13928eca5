"""Unit tests of the lock manager's pure core (``locksmith._core``) on a fake clock."""

from __future__ import annotations

import threading

import pytest

from locksmith import FakeClock, LockState, LossReason, ManagerState, SystemClock
from locksmith._core import (
    MAX_LOCK_DELAY,
    WINDOW_SLACK,
    AcquirePlanner,
    DelayHint,
    GiveUp,
    InvalidTransition,
    LeaseTimer,
    PresumeLost,
    RenewAt,
    SleepUntil,
    WatchKey,
    check_transition,
    classify_loss,
    settle_reason,
    watch_prefix,
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


def test_fake_clock_wait_until_jumps_unless_event_set() -> None:
    clock = FakeClock(start=0.0)
    assert clock.wait_until(5.0) is False
    assert clock.monotonic() == 5.0
    assert clock.wait_until(3.0) is False  # never backwards
    assert clock.monotonic() == 5.0
    ev = threading.Event()
    ev.set()
    assert clock.wait_until(100.0, ev) is True
    assert clock.monotonic() == 5.0
    with pytest.raises(RuntimeError):
        clock.wait_until(float("inf"))


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
    planner = AcquirePlanner(deadline=None, backoff_start=0.1, backoff_cap=1.0)
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
    planner = AcquirePlanner(deadline=None, backoff_start=30.0, backoff_cap=60.0)
    hint = DelayHint(since=0.0, lock_delay=None)
    action = planner.after_failure(50.0, holder=None, index=1, hint=hint)
    assert isinstance(action, SleepUntil)
    assert action.until <= MAX_LOCK_DELAY + WINDOW_SLACK


def test_planner_backoff_resets_when_a_holder_appears() -> None:
    planner = AcquirePlanner(deadline=None, backoff_start=0.1, backoff_cap=10.0)
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
    ("keys", "prefix"),
    [
        ([], ""),
        (["a/b/c"], "a/b/"),
        (["leader"], "leader"),
        (["lead", "leader"], "lead"),
        (["jobs/a", "jobs/b"], "jobs/"),
        (["service/leader", "service/lemon"], "service/"),
        (["a/x", "b/y"], ""),
        ({"z/1", "z/10", "z/2"}, "z/"),
    ],
)
def test_watch_prefix(keys: list[str] | set[str], prefix: str) -> None:
    result = watch_prefix(keys)
    assert result == prefix
    assert all(k.startswith(result) for k in keys)


# --------------------------------------------------------------------------- states

_LOCK_ALLOWED = {
    (LockState.UNLOCKED, LockState.ACQUIRING),
    (LockState.ACQUIRING, LockState.HELD),
    (LockState.ACQUIRING, LockState.UNLOCKED),
    (LockState.HELD, LockState.RELEASING),
    (LockState.HELD, LockState.LOST),
    (LockState.RELEASING, LockState.UNLOCKED),
    (LockState.LOST, LockState.ACQUIRING),
    (LockState.LOST, LockState.UNLOCKED),
}
_MANAGER_ALLOWED = {
    (ManagerState.NEW, ManagerState.RUNNING),
    (ManagerState.NEW, ManagerState.CLOSING),
    (ManagerState.RUNNING, ManagerState.CLOSING),
    (ManagerState.CLOSING, ManagerState.CLOSED),
}


@pytest.mark.parametrize("current", list(LockState))
@pytest.mark.parametrize("new", list(LockState))
def test_lock_transitions(current: LockState, new: LockState) -> None:
    if (current, new) in _LOCK_ALLOWED:
        check_transition(current, new)
    else:
        with pytest.raises(InvalidTransition, match=f"{current.value} -> {new.value}"):
            check_transition(current, new)


@pytest.mark.parametrize("current", list(ManagerState))
@pytest.mark.parametrize("new", list(ManagerState))
def test_manager_transitions(current: ManagerState, new: ManagerState) -> None:
    if (current, new) in _MANAGER_ALLOWED:
        check_transition(current, new)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(current, new)
