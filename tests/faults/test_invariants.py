"""The invariant checker itself: each rule must flag a log that breaks it (no Consul needed)."""

from __future__ import annotations

from typing import Any

from faults.invariants import Fault, check

K = "faults/x/locks/k0"


def acq(holder: str, token: int, t: float, session: str = "s") -> dict[str, Any]:
    return {"ev": "acquire", "holder": holder, "key": K, "token": token, "session": session, "t": t}


def write(holder: str, token: int, index: int, held_at: float) -> dict[str, Any]:
    return {
        "ev": "write",
        "holder": holder,
        "key": K,
        "token": token,
        "index": index,
        "held_at": held_at,
        "t": held_at + 0.01,
    }


def end(holder: str, token: int, t: float, how: str = "released", **kw: Any) -> dict[str, Any]:
    ev = {"ev": "end", "holder": holder, "key": K, "token": token, "how": how, "t": t}
    ev.setdefault("last_held", kw.pop("last_held", t - 0.01))
    ev.update(kw)
    return ev


def lost(holder: str, token: int, t: float, reason: str = "lease_expired") -> dict[str, Any]:
    return {"ev": "lost", "holder": holder, "key": K, "token": token, "reason": reason, "t": t}


def good_log() -> list[dict[str, Any]]:
    return [
        acq("a", 10, 1.0),
        write("a", 10, 11, 1.1),
        end("a", 10, 2.0),
        acq("b", 20, 2.5),
        write("b", 20, 21, 2.6),
        end("b", 20, 3.0),
    ]


def test_a_clean_log_passes() -> None:
    assert check(good_log(), [], ttl=10, closed={"a", "b"}) == []


def test_overlap_in_time_is_flagged() -> None:
    log = good_log()
    log[2] = end("a", 10, 3.0, last_held=2.7)  # a still believed at 2.7, b acquired at 2.5
    out = check(log, [], ttl=10)
    assert len(out) == 1 and "still believed" in out[0]


def test_write_outside_tenure_is_flagged() -> None:
    log = good_log()
    log[1] = write("a", 10, 25, 1.1)  # landed after b's acquisition (token 20)
    out = check(log, [], ttl=10)
    assert any("outside its tenure" in v for v in out)


def test_duplicate_token_is_flagged() -> None:
    log = good_log()
    log[3] = acq("b", 10, 2.5)
    log[4] = write("b", 10, 12, 2.6)
    log[5] = end("b", 10, 3.0)
    assert any("handed to both" in v for v in check(log, [], ttl=10))


def test_late_loss_report_is_flagged_unless_paused() -> None:
    log = good_log()
    log[2] = end("a", 10, 3.5, how="lost", last_held=1.9, loss_seen=True)
    log.append(lost("a", 10, 3.4))  # reported after b acquired at 2.5
    out = check(log, [], ttl=10)
    assert any("was reported" in v for v in out)
    assert not any("was reported" in v for v in check(log, [], ttl=10, paused={"a": [(1.5, 3)]}))


def test_unreported_loss_is_flagged() -> None:
    log = good_log()
    log[2] = end("a", 10, 2.0, how="lost", last_held=1.9, loss_seen=False)
    out = check(log, [], ttl=10)
    assert any("on_lost never fired" in v for v in out)
    assert any("did not fire" in v for v in out)


def test_key_delete_exempts_time_checks_not_fencing() -> None:
    log = good_log()
    log[2] = end("a", 10, 3.0, last_held=2.7)
    fault = Fault("key_delete", 2.0, 2.1, key=K)
    assert check(log, [fault], ttl=10) == []
    log[1] = write("a", 10, 25, 1.1)
    assert any("outside its tenure" in v for v in check(log, [fault], ttl=10))


def test_pause_expectations() -> None:
    log = [
        acq("p", 10, 1.0),
        end(
            "p",
            10,
            40.0,
            how="lost",
            loss_seen=True,
            local_refused=True,
            stale_ok=True,
            stale_index=15,
        ),
        lost("p", 10, 39.9, reason="session_invalidated"),
    ]
    out = check(log, [], ttl=10, paused={"p": [(2.0, 30.0)]})
    assert any("expected 'lease_expired'" in v for v in out)
    assert any("did not refuse the write" in v for v in out)


def test_unended_hold_of_closed_holder_is_flagged() -> None:
    log = good_log()[:2]
    assert any("never ended" in v for v in check(log, [], ttl=10, closed={"a"}))
    assert check(log, [], ttl=10, killed={"a": 5.0}) == []


def test_check_critical_exempts_only_the_bound_holders() -> None:
    log = good_log()
    log[2] = end("a", 10, 3.0, last_held=2.7)
    bound = Fault("check_critical", 2.0, 2.1, detail={"holders": ["a"]})
    other = Fault("check_critical", 2.0, 2.1, detail={"holders": ["z"]})
    assert check(log, [bound], ttl=10) == []
    assert any("still believed" in v for v in check(log, [other], ttl=10))
