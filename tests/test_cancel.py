"""Cancelling a request: at once while it waits, and before it starts (sticky)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from support import MakeManager, Proc, unique, wait_for

from locksmith import (
    Cancel,
    Cancelled,
    Consul,
    ConsulUnavailable,
    Lease,
    LockState,
    ValidationError,
)


def test_cancel_cuts_a_blocking_query_short(consul: Consul, key: str) -> None:
    consul.kv.put(key, b"v")
    index = consul.kv.get_with_meta(key).meta.index
    cancel = Cancel()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(ConsulUnavailable, match="cancelled"):
        consul.kv.get_with_meta(key, index=index, wait="30s", cancel=cancel)
    assert time.monotonic() - started < 20  # not the 30 s wait
    assert consul.kv.get(key) is not None  # the next request works


def test_a_cancel_before_the_request_is_not_lost(consul: Consul, key: str) -> None:
    consul.kv.put(key, b"v")
    index = consul.kv.get_with_meta(key).meta.index
    cancel = Cancel()
    cancel.cancel()  # before the request: it must not be sent, let alone wait 30 s
    started = time.monotonic()
    with pytest.raises(ConsulUnavailable, match="cancelled"):
        consul.kv.get_with_meta(key, index=index, wait="30s", cancel=cancel)
    assert time.monotonic() - started < 20
    assert cancel.cancelled and cancel.wait(0)


def test_a_cancel_after_the_answer_touches_nothing(consul: Consul, key: str) -> None:
    consul.kv.put(key, b"v")
    cancel = Cancel()
    assert consul.kv.get(key, cancel=cancel) is not None
    cancel.cancel()  # the request is over: the connection stays usable
    assert consul.open_connections == 1
    assert consul.kv.get(key) is not None
    assert consul.open_connections == 1


# --------------------------------------------------------------------------- blocking calls


def _cancel_after(seconds: float) -> Cancel:
    cancel = Cancel()
    timer = threading.Timer(seconds, cancel.cancel)
    timer.daemon = True
    timer.start()
    return cancel


def test_a_waiting_acquire_is_cancelled_and_leaves_nothing(
    consul: Consul, key: str, make_manager: MakeManager
) -> None:
    holder, waiter = make_manager(), make_manager()
    holder_lock = holder.lock(key)
    held = holder_lock.acquire(timeout=10)
    assert held is not None
    lock = waiter.lock(key)
    with pytest.raises(Cancelled):
        lock.acquire(cancel=_cancel_after(0.3))  # no timeout: only the cancel ends it
    assert lock.state is LockState.UNLOCKED and not lock.held
    snap = waiter.snapshot()
    assert snap.waiting == () and snap.held == () and snap.pending_releases == ()
    entry = consul.kv.get(key)
    assert entry is not None and entry.session == held.session_id  # untouched
    # The manager goes on: the next acquire works once the key is free.
    holder_lock.release(held)
    assert lock.acquire(timeout=10) is not None
    lock.release()


def test_a_cancel_just_before_the_wait_starts_is_not_lost(
    key: str, make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel (a signal handler's) landing as the waiting call is about to sleep.

    The call's wake-up event is cleared as its sleep begins; a cancel set just before used
    to be wiped out with it, and ``locksmith run`` hung after SIGTERM under load.
    """
    holder, waiter = make_manager(), make_manager()
    assert holder.lock(key).acquire(timeout=10) is not None
    engine = waiter._engine
    real_sleep = engine._sleep
    cancel = Cancel()

    def sleep_after_a_cancel(*args: object) -> bool:
        cancel.cancel()  # exactly in the gap between taking the Sleep and clearing the event
        return real_sleep(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_sleep", sleep_after_a_cancel)
    outcome: list[BaseException | Lease | None] = []

    def wait() -> None:
        try:
            outcome.append(waiter.lock(key).acquire(cancel=cancel))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the acquire slept through its cancel"
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)


def test_a_cancel_set_before_the_call_sends_nothing(key: str, make_manager: MakeManager) -> None:
    mgr = make_manager()
    cancel = Cancel()
    cancel.cancel()
    with pytest.raises(Cancelled):
        mgr.lock(key).acquire(cancel=cancel)
    with pytest.raises(Cancelled):
        mgr.semaphore(key, 2).acquire(cancel=cancel)
    assert not mgr.session_ids  # not even a session was created


def test_only_a_cancel_object_is_taken(key: str, make_manager: MakeManager) -> None:
    with pytest.raises(ValidationError, match=r"locksmith\.Cancel"):
        make_manager().lock(key).acquire(cancel=threading.Event())  # type: ignore[arg-type]


def test_a_cancelled_set_gives_back_what_it_took(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    a, b = make_manager(lock_delay=0), make_manager(lock_delay=0)
    keys = [f"{prefix}/k{i:03d}" for i in range(100)]
    assert b.lock(keys[-1]).acquire(timeout=10) is not None
    with pytest.raises(Cancelled):
        a.lock_many(keys).acquire(cancel=_cancel_after(0.5))
    sid = a.session()
    wait_for(
        lambda: all(e.session != sid for e in consul.kv.list(prefix + "/")), 10, "the rollback"
    )


def test_a_cancelled_semaphore_wait_deletes_its_contender_key(
    consul: Consul, prefix: str, make_manager: MakeManager
) -> None:
    a, b = make_manager(), make_manager()
    assert a.semaphore(prefix, 1).acquire(timeout=10) is not None
    sem = b.semaphore(prefix, 1)
    with pytest.raises(Cancelled):
        sem.acquire(cancel=_cancel_after(0.3))
    assert not sem.held
    contender = b.companion().session()
    wait_for(
        lambda: consul.kv.get(f"{prefix}/{contender}") is None, 10, "the contender key deleted"
    )


def test_a_cancelled_campaign_and_run(key: str, make_manager: MakeManager) -> None:
    leader, candidate = make_manager(), make_manager()
    leading = leader.election(key)
    assert leading.campaign(timeout=10) is not None
    election = candidate.election(key)
    with pytest.raises(Cancelled):
        election.campaign(cancel=_cancel_after(0.3))
    with pytest.raises(Cancelled):
        election.run(lambda lease, stop: None, cancel=_cancel_after(0.3))
    assert not election.is_leader
    # While leading: the cancel reaches fn's stop event, and leadership is resigned.
    assert leading.resign()
    cancel = Cancel()

    def work(lease: Lease, stop: threading.Event) -> str:
        threading.Timer(0.2, cancel.cancel).start()
        return "stopped" if stop.wait(20) else "not stopped"

    assert election.run(work, cancel=cancel) == "stopped"
    assert not election.is_leader and election.leader() is None


def test_observe_ends_at_once_when_cancelled(key: str, make_manager: MakeManager) -> None:
    election = make_manager().election(key)
    cancel = Cancel()
    seen: list[object] = []
    started = time.monotonic()
    for info in election.observe(cancel=cancel):
        seen.append(info)
        cancel.cancel()  # the next blocking query is cut short, not waited out (60 s)
    assert seen == [None]
    assert time.monotonic() - started < 30
    with pytest.raises(ValidationError, match="not both"):
        next(iter(election.observe(stop=threading.Event(), cancel=Cancel())))


SIGTERM_CHILD = """
import json, signal, sys
from locksmith import Cancel, Cancelled, Consul, LockManager

cancel = Cancel()
signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
with LockManager(Consul(sys.argv[1]), name=sys.argv[3]) as mgr:
    election = mgr.election(sys.argv[2])
    print(json.dumps({"event": "campaigning"}), flush=True)
    try:
        election.campaign(cancel=cancel)
        print(json.dumps({"event": "elected"}), flush=True)
    except Cancelled:
        print(json.dumps({"event": "cancelled"}), flush=True)
"""


def test_sigterm_ends_a_campaign_and_leaves_no_session(
    consul: Consul, consul_addr: str, key: str, make_manager: MakeManager, tmp_path: Path
) -> None:
    leader = make_manager()
    held = leader.election(key).campaign(timeout=10)
    script = tmp_path / "campaign.py"
    script.write_text(SIGTERM_CHILD)
    name = unique("sigterm-candidate")
    proc = Proc.python(str(script), consul_addr, key, name)
    try:
        proc.wait_event(lambda e: e["event"] == "campaigning", 20, "campaigning")
        wait_for(lambda: any(s.name == name for s in consul.sessions.list()), 10, "its session")
        proc.signal(signal.SIGTERM)
        proc.wait_event(lambda e: e["event"] == "cancelled", 10, "cancelled")
        assert proc.popen.wait(10) == 0
    finally:
        proc.stop()
    assert not any(s.name == name for s in consul.sessions.list())  # destroyed on the way out
    entry = consul.kv.get(key)
    assert entry is not None and entry.session == held.session_id


def test_cancel_from_a_signal_handler_never_deadlocks() -> None:
    """A handler runs between two bytecodes of the main thread, maybe inside the lock of
    the very Event that cancel() sets (a plain lock): cancel() must not wait for it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run on the main thread; this test is not on it")
    linked = threading.Event()
    cancel = Cancel()
    assert cancel.link(linked)
    lock = linked._cond  # type: ignore[attr-defined]  # the Event's own lock
    lock.acquire()  # as if the handler interrupted linked.clear() or linked.wait()
    rescued = threading.Event()

    def rescue() -> None:
        rescued.set()
        lock.release()

    timer = threading.Timer(5.0, rescue)
    timer.start()
    started = time.monotonic()
    cancel.cancel()
    took = time.monotonic() - started
    timer.cancel()
    if not rescued.is_set():
        lock.release()
    assert not rescued.is_set(), f"cancel() waited {took:.1f} s for a lock its thread held"
    assert cancel.cancelled
    assert linked.wait(5)  # set a moment later, by the cancel thread
