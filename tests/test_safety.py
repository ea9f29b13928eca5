"""The safety promise against a real Consul: every way a hostile review broke it, closed.

locksmith promises that a holder never believes it holds a lock someone else can hold, that
fencing tokens only increase, and that nothing is left on the server. Each test below is one
case of the core redesign, reproduced as it was found (fork, a Lock shared by threads,
callbacks that raise or stall, a release answered false, watch errors, Ctrl-C, a partition,
watches over unrelated writes, a semaphore under faults, a SIGKILLed supervisor, exit without
close), and each fails on the manager before the redesign. ``tests/test_machine.py`` has the
same cases as event sequences of the state machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support import (
    MakeManager,
    Recorder,
    child_env,
    ctrl_c_after,
    in_thread,
    unique,
    wait_for,
)

from locksmith import (
    CONSUL_SEMAPHORE_FLAGS,
    Consul,
    ConsulUnavailable,
    FakeClock,
    Lease,
    LockLost,
    LockManager,
    LockState,
    LockTimeout,
    LossEvent,
    LossReason,
    ValidationError,
    WatchTarget,
)
from locksmith.testing import FaultProxy


def _run_script(code: str, timeout: float = 60) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- case 1: fork


def test_case1_a_forked_child_holds_nothing_and_uses_its_own_session(
    consul: Consul, consul_addr: str, key: str
) -> None:
    out = _run_script(
        f"""
        import json, os, sys
        from locksmith import Consul, LockLost, LockManager
        consul = Consul({consul_addr!r})
        mgr = LockManager(consul, ttl="10s", lock_delay=0, name="fork-parent")
        lock = mgr.lock({key!r})
        lease = lock.acquire(timeout=10)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            seen = {{"held": lock.held, "lease": lock.lease is not None}}
            try:
                lock.fenced_put({key!r} + "-data", b"from the child")
                seen["fenced"] = "accepted"
            except LockLost:
                seen["fenced"] = "refused"
            # The parent holds the key: the child's own session must not get it.
            seen["reacquired"] = mgr.lock({key!r}).acquire(blocking=False) is not None
            own = mgr.lock({key!r} + "-child").acquire(timeout=10)
            seen["child_session"] = own.session_id
            os.write(w, json.dumps(seen).encode())
            os.close(w)
            sys.exit(0)  # a normal exit: the child's manager closes at exit, not the parent's
        os.close(w)
        seen = json.loads(os.read(r, 65536))
        os.waitpid(pid, 0)
        seen["parent_session"] = lease.session_id
        seen["parent_held"] = lock.held
        seen["parent_key_session"] = consul.kv.get({key!r}).session
        child_key = consul.kv.get({key!r} + "-child")
        seen["child_key_session"] = child_key.session if child_key else None
        seen["child_session_alive"] = consul.sessions.info(seen["child_session"]) is not None
        seen["parent_session_alive"] = consul.sessions.info(lease.session_id) is not None
        mgr.close()
        print(json.dumps(seen))
        """
    )
    assert out["held"] is False and out["lease"] is False
    assert out["fenced"] == "refused"
    assert out["reacquired"] is False
    assert out["child_session"] != out["parent_session"]
    # The child's exit released its own key and destroyed its own session, nothing else.
    assert out["child_key_session"] is None and out["child_session_alive"] is False
    assert out["parent_held"] is True and out["parent_session_alive"] is True
    assert out["parent_key_session"] == out["parent_session"]
    assert consul.kv.get(key + "-data") is None


# ---------------------------------------------------------------- case 2: a Lock, two threads


def test_case2_a_stale_lease_never_touches_a_newer_one(
    consul: Consul, make_manager: MakeManager, key: str
) -> None:
    mgr = make_manager(lock_delay=0)
    lock = mgr.lock(key)
    lost: Recorder[LossEvent] = Recorder()
    lock.on_lost(lost)
    data = key + "-data"
    inside: list[Lease] = []
    leave = threading.Event()

    def t1() -> None:
        with lock as lease:
            inside.append(lease)
            leave.wait(30)  # its lease is lost while it is still inside the block

    thread = threading.Thread(target=t1)
    thread.start()
    first: Lease = wait_for(lambda: inside[0] if inside else None, 10, "T1 to hold the lock")
    assert consul.kv.delete(key)  # someone deletes the key: T1's lease is lost
    assert lost.wait(1, timeout=15)
    second = lock.acquire(timeout=10)  # T2: the same Lock object, the same session
    assert second is not None and second.session_id == first.session_id
    assert second.fencing_token > first.fencing_token
    with pytest.raises(LockLost):
        lock.fenced_put(data, b"stale", lease=first)
    leave.set()
    thread.join(10)  # T1's with-exit: it may release only its own (lost) lease
    entry = consul.kv.get(key)
    assert entry is not None and entry.session == second.session_id
    assert lock.lease is second
    assert lock.fenced_put(data, b"fresh", lease=second) > second.fencing_token
    data_entry = consul.kv.get(data)
    assert data_entry is not None and data_entry.value == b"fresh"
    assert lock.release(second) is True


# --------------------------------------------------------------------------- case 3: callbacks


def test_case3_callbacks_that_raise_or_stall_never_hold_back_a_loss(
    consul: Consul, make_manager: MakeManager, key: str
) -> None:
    mgr = make_manager(lock_delay=0)
    order: list[str] = []
    unblock = threading.Event()

    def exits(event: LossEvent) -> None:
        raise SystemExit(3)

    def stalls(event: LossEvent) -> None:
        order.append("slow callback started")
        unblock.wait(30)
        order.append("slow callback ended")

    mgr.on_lost(exits)
    mgr.on_lost(stalls)
    election = mgr.election(key, b"leader")

    def lead(lease: Lease, cancel: threading.Event) -> str:
        assert cancel.wait(30)
        order.append("cancelled")
        return "done"

    thread, result = in_thread(lambda: election.run(lead, rejoin=False))
    lease = wait_for(lambda: election.lease, 10, "the election")
    consul.sessions.destroy(lease.session_id)
    wait_for(lambda: "cancelled" in order, 15, "run()'s cancel")
    assert "slow callback ended" not in order  # the cancel did not wait for it
    unblock.set()
    thread.join(10)
    assert len(result) == 1 and isinstance(result[0], LockLost)
    # The callback thread outlived SystemExit and the stall: later losses still arrive.
    later: Recorder[LossEvent] = Recorder()
    mgr.on_lost(later)
    other = mgr.lock(key + "-2")
    assert other.acquire(timeout=10) is not None
    assert consul.kv.delete(other.key)
    assert later.wait(1, timeout=15)
    assert later.events[0].key == other.key


# --------------------------------------------------------------------------- case 4: no TTL


def test_case4_a_manager_without_ttl_is_refused_unless_asked_for(consul: Consul) -> None:
    with pytest.raises(ValidationError, match="unsafe_no_ttl") as info:
        LockManager(consul, ttl=None)
    assert info.value.field == "ttl"
    mgr = LockManager(consul, ttl=None, lock_delay=0, unsafe_no_ttl=True, name="no-ttl")
    try:
        lock = mgr.lock(unique("locksmith-test/no-ttl"))
        lease = lock.acquire(timeout=10)
        assert lease is not None and lock.held
        session = consul.sessions.info(lease.session_id)
        assert session is not None and session.ttl is None
        lock.release(lease)
        consul.kv.delete(lock.key)
    finally:
        mgr.close()


# ---------------------------------------------------------------- case 5: release is false


@pytest.mark.parametrize("trial", range(4))
def test_case5_a_release_after_a_takeover_is_a_loss(
    consul: Consul, make_manager: MakeManager, key: str, trial: int
) -> None:
    mgr = make_manager(lock_delay=0)
    lock = mgr.lock(key)
    lost: Recorder[LossEvent] = Recorder()
    lock.on_lost(lost)
    lease = lock.acquire(timeout=10)
    assert lease is not None
    thief = consul.sessions.create(ttl="10s", lock_delay="0s", name="thief")
    try:
        assert consul.kv.delete(key)
        assert consul.kv.put(key, b"mine now", acquire=thief)
        # Whether the watch noticed first or not: the lease is gone, and it is said once.
        assert lock.release(lease) is False
        assert lost.wait(1, timeout=10)
        assert not lost.wait(2, timeout=1.0)
        assert lost.events[0].reason in (LossReason.KEY_DELETED, LossReason.KEY_TAKEN)
        entry = consul.kv.get(key)
        assert entry is not None and entry.session == thief  # the thief's hold untouched
    finally:
        consul.sessions.destroy(thief)


# --------------------------------------------------------------------------- case 6: watch errors


def test_case6_the_watch_survives_any_error_and_still_notices_a_loss(
    consul: Consul, consul_addr: str, make_manager: MakeManager, key: str
) -> None:
    with FaultProxy(consul_addr) as proxy:
        mgr = make_manager(addr=proxy.addr, ttl="30s", lock_delay=0, timeout=2.0)
        lock = mgr.lock(key)
        lost: Recorder[LossEvent] = Recorder()
        lock.on_lost(lost)
        assert lock.acquire(timeout=10) is not None
        wait_for(lambda: mgr.snapshot().watches == (WatchTarget(key),), 10, "the watch")
        answers: list[tuple[int, bytes, bytes | None]] = [
            (400, b"Request decode failed", None),
            (403, b"Permission denied", None),
            (0, b"", b"this is not HTTP\r\n\r\n"),
        ]
        for status, body, raw in answers:
            seen = proxy.stats.requests
            proxy.answer(status, body, raw=raw)
            proxy.reset_connections()  # the watch's query dies; its retries meet the answer
            target = seen + 2
            wait_for(lambda: proxy.stats.requests >= target, 15, "the watch to retry")  # noqa: B023
        proxy.heal()
        assert lock.held and lost.events == []
        assert consul.kv.delete(key)  # straight to the agent
        assert lost.wait(1, timeout=20)
        assert lost.events[0].reason is LossReason.KEY_DELETED


# ---------------------------------------------------------------- case 7: Ctrl-C in acquire


def test_case7_ctrl_c_after_the_acquire_was_applied_leaves_no_hold(
    consul: Consul, consul_addr: str, make_manager: MakeManager, key: str
) -> None:
    with FaultProxy(consul_addr) as proxy:
        mgr = make_manager(addr=proxy.addr, lock_delay=0, timeout=3.0)
        lock = mgr.lock(key)
        warm = lock.acquire(timeout=10)  # the session exists, the key's flags are known
        assert warm is not None and lock.release(warm)
        proxy.delay(2.0, direction="down")  # requests reach Consul; answers come 2 s late
        with ctrl_c_after(0.5), pytest.raises(KeyboardInterrupt):
            lock.acquire(timeout=10)
        proxy.heal()
        assert lock.state is LockState.UNLOCKED and not lock.held
        # The acquire was applied (only its answer was late): our session held the key with
        # no lease anyone knew of. It is given back.
        sid = warm.session_id

        def given_back() -> bool:
            entry = consul.kv.get(key)
            return (
                entry is not None
                and entry.session is None
                and entry.modify_index > warm.fencing_token + 1
            )

        wait_for(given_back, 20, "the ambiguous hold to be given back")
        assert mgr.current_session_id == sid
        mgr.close()
    assert consul.sessions.info(sid) is None


# ---------------------------------------------------------------- case 8: Ctrl-C while waiting


def test_case8_ctrl_c_while_waiting_leaves_a_working_connection_and_close_releases_first(
    consul: Consul, make_manager: MakeManager, key: str
) -> None:
    holder = make_manager(lock_delay=0)
    mgr = make_manager(lock_delay="30s")  # keys destroyed before release would wait 30 s
    mine = mgr.lock(key + "-mine").acquire(timeout=10)
    assert mine is not None
    assert holder.lock(key).acquire(timeout=10) is not None
    with ctrl_c_after(0.5), pytest.raises(KeyboardInterrupt):
        mgr.lock(key).acquire(timeout=20)  # blocked, waiting for the holder
    assert mgr.snapshot().waiting == ()
    entry = mgr.consul.kv.get(key + "-mine")  # the same thread: no false "cannot reach Consul"
    assert entry is not None and entry.session == mine.session_id
    mgr.close()  # releases, then destroys: no lock-delay for the next holder
    taker = make_manager(lock_delay=0)
    assert taker.lock(key + "-mine").acquire(timeout=10) is not None  # << 30 s lock-delay


# --------------------------------------------------------------------------- case 9: partitions


def test_case9_every_time_limit_holds_under_a_partition(
    consul_addr: str, make_manager: MakeManager, key: str
) -> None:
    with FaultProxy(consul_addr) as proxy:
        # A 30 s request timeout: no call below may take anything like it.
        mgr = make_manager(addr=proxy.addr, timeout=30.0, lock_delay=0)
        for i in range(5):
            assert mgr.lock(f"{key}/{i}").acquire(timeout=10) is not None
        proxy.blackhole()
        proxy.reset_connections()
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            mgr.lock(f"{key}/x").acquire(timeout=1)
        assert time.monotonic() - started < 10
        started = time.monotonic()
        with pytest.raises(ConsulUnavailable):
            mgr.lock(f"{key}/y").acquire(blocking=False, timeout=1)
        assert time.monotonic() - started < 10
        started = time.monotonic()
        mgr.close(timeout=2)
        assert time.monotonic() - started < 10
        proxy.heal()


# --------------------------------------------------------------------------- case 10: watch scope


def test_case10_writes_elsewhere_cost_a_holder_nothing(
    consul: Consul, consul_addr: str, make_manager: MakeManager
) -> None:
    a, b = unique("locksmith-test-alpha"), unique("locksmith-test-beta")
    sibling_dir = unique("locksmith-test/dir")
    with FaultProxy(consul_addr) as proxy:
        mgr = make_manager(addr=proxy.addr, ttl="60s")
        neighbours = [make_manager(addr=proxy.addr, ttl="60s") for _ in range(3)]
        assert mgr.lock(a).acquire(timeout=10) is not None
        assert mgr.lock(b).acquire(timeout=10) is not None
        for i, n in enumerate(neighbours):  # holders of single keys in one directory
            assert n.lock(f"{sibling_dir}/holder-{i}").acquire(timeout=10) is not None
        wait_for(
            lambda: set(mgr.snapshot().watches) == {WatchTarget(a), WatchTarget(b)},
            10,
            "one watch per unrelated key",
        )
        time.sleep(0.5)  # let the watches settle into their blocking queries
        before = proxy.stats.bytes_down
        for i in range(100):  # writes anywhere else: the store's root, the holders' directory
            consul.kv.put(unique("locksmith-test/elsewhere"), b"x" * 1000)
            consul.kv.put(f"{sibling_dir}/other-{i}", b"x" * 1000)
        time.sleep(1.0)
        cost = proxy.stats.bytes_down - before
    consul.kv.delete("locksmith-test/elsewhere", recurse=True)
    consul.kv.delete(sibling_dir, recurse=True)
    for k in (a, b):
        consul.kv.delete(k)
    # 200 writes of 1 kB next to 5 held keys: nothing reached the holders (renewals aside).
    assert cost < 20_000, cost


# --------------------------------------------------------------------------- case 11: semaphore


def test_case11_a_semaphore_release_during_a_500_still_frees_the_slot(
    consul: Consul, consul_addr: str, prefix: str
) -> None:
    with FaultProxy(consul_addr) as proxy:
        holder = LockManager(Consul(proxy.addr, timeout=2.0), ttl="10s", name="sem-500")
        try:
            sem = holder.semaphore(prefix, 1)
            assert sem.acquire(timeout=10) is not None
            proxy.answer(500, b"rpc error making call: No cluster leader")
            sem.release()  # never raises; the contender key goes through the cleaner
            assert not sem.held
            proxy.heal()
            with LockManager(consul, ttl="10s", name="sem-next") as other:
                lease = other.semaphore(prefix, 1).acquire(timeout=20)
                assert lease is not None
                assert other.semaphore(prefix, 1).holders() == [lease.session_id]
        finally:
            holder.close()


def test_case11_an_outside_reset_of_the_semaphore_is_a_loss(consul: Consul, prefix: str) -> None:
    with LockManager(consul, ttl="10s", name="sem-reset") as mgr:
        sem = mgr.semaphore(prefix, 1)
        lost: Recorder[LossEvent] = Recorder()
        sem.on_lost(lost)
        lease = sem.acquire(timeout=10)
        assert lease is not None
        ended = sem.ended(lease)
        reset = json.dumps({"Limit": 1, "Holders": {}}).encode()
        assert consul.kv.put(f"{prefix}/.lock", reset, flags=CONSUL_SEMAPHORE_FLAGS)
        assert lost.wait(1, timeout=15)
        assert lost.events[0].reason is LossReason.RELEASED_BY_OTHER
        assert ended.is_set() and not sem.held


# --------------------------------------------------------------------------- case 12: run's child


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_case12_the_child_of_a_sigkilled_supervisor_does_not_outlive_it(
    consul_addr: str, prefix: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locksmith",
            "--address",
            consul_addr,
            "run",
            prefix,
            "--",
            sys.executable,
            "-c",
            child,
        ],
        env=child_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        text: str = wait_for(
            lambda: pidfile.read_text() if pidfile.exists() else None, 30, "the child"
        )
        pid = int(text)
        assert _alive(pid)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(10)
        wait_for(lambda: not _alive(pid), 10, "the child to die with its supervisor")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# --------------------------------------------------------------------------- case 14: exit


def test_case14_an_exit_without_close_hands_over_at_once(
    consul: Consul, consul_addr: str, key: str
) -> None:
    out = _run_script(
        f"""
        import json
        from locksmith import Consul, LockManager
        mgr = LockManager(Consul({consul_addr!r}), ttl="15s", lock_delay="15s", name="exit")
        lease = mgr.lock({key!r}).acquire(timeout=10)
        print(json.dumps({{"session": lease.session_id}}))
        """  # no close(): the interpreter exits with the lock held
    )
    entry = consul.kv.get(key)
    assert entry is not None and entry.session is None  # released, not left for 2xTTL
    assert consul.sessions.info(str(out["session"])) is None


# --------------------------------------------------------------------------- clocks


def test_a_fake_clock_drives_a_started_manager(make_manager: MakeManager, key: str) -> None:
    clock = FakeClock(start=1000.0)
    mgr = make_manager(lock_delay=0, clock=clock)
    lock = mgr.lock(key)
    lost: Recorder[LossEvent] = Recorder()
    lock.on_lost(lost)
    lease = lock.acquire(timeout=10)
    assert lease is not None
    ended = lock.ended(lease)
    assert lock.held and not ended.is_set()
    clock.advance(16.0)  # past the 15 s lease deadline without a renewal
    assert not lock.held  # at once: held reads the deadline
    assert ended.wait(10)  # and the renewer, woken by the fake time, says so
    assert lost.wait(1, timeout=10)
    assert lost.events[0].reason is LossReason.LEASE_EXPIRED


# --------------------------------------------------------------------------- partition finding P2


def test_p2_a_release_that_lands_late_cannot_free_a_newer_acquisition(
    consul_addr: str, key: str
) -> None:
    """A server without a leader holds a write and carries it out after its client gave up
    (here: a proxy that delivers abandoned requests 3 s late). The manager must not take the
    key again with the same session while that release can still land, or it would free the
    new acquisition (partition finding P2, docs/faults.md)."""
    with FaultProxy(consul_addr) as proxy:
        mgr = LockManager(Consul(proxy.addr, timeout=1.0), ttl=30, lock_delay=0, name="p2")
        try:
            lock = mgr.lock(key)
            lost: Recorder[LossEvent] = Recorder()
            lock.on_lost(lost)
            first = lock.acquire(timeout=10)
            assert first is not None
            started = time.monotonic()
            proxy.delay(3.0, direction="up", deliver_abandoned=True)
            assert lock.release(first) is True  # given up on after 1 s: deferred
            proxy.heal()
            second = lock.acquire(timeout=30)
            assert second is not None and second.session_id == first.session_id
            # Every request given up on has landed by now (each was held for 3 s).
            time.sleep(max(0.0, started + 6.0 - time.monotonic()))
            with Consul(consul_addr) as direct:
                entry = direct.kv.get(key)
            assert entry is not None and entry.session == second.session_id
            assert lock.lease is second and not lost.events
        finally:
            proxy.heal()
            mgr.close()
            mgr.consul.close()


def test_case12_the_child_checks_its_parent_before_running(tmp_path: Path) -> None:
    """The parent-death signal is armed by ``setpriv`` in the child; a shell then checks the
    child is still ours (the supervisor may have died before the signal was armed)."""
    from locksmith._child import _setpriv, _with_parent_death_signal

    if _setpriv() is None:
        pytest.skip("no setpriv here: the preexec_fn path (and its own check) is used")
    argv, preexec = _with_parent_death_signal(["echo", "ran"], False)
    assert preexec is None and argv[:4] == [_setpriv(), "--pdeathsig", "KILL", "--"]
    ours = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    assert (ours.returncode, ours.stdout) == (0, "ran\n")
    # Started by another process (as if the supervisor had died first): it refuses to run.
    orphan = subprocess.run(
        ["/bin/sh", "-c", 'exec "$@"; :', "sh", "/bin/sh", "-c", '"$@"', "sh", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert orphan.returncode == 76 and orphan.stdout == ""
    # --shell: the command runs in that shell, with no positional parameters of ours.
    shell_argv, _ = _with_parent_death_signal(['echo "$#" && echo', "shell"], True)
    out = subprocess.run(shell_argv, capture_output=True, text=True, check=False, timeout=10)
    assert (out.returncode, out.stdout) == (0, "0\nshell\n")
