"""Which health checks a manager's session is bound to, and the lock-delay rule that keeps
the client's lease deadline ahead of the server when checks are bound."""

from __future__ import annotations

import pytest

from locksmith import Consul, LockManager, ValidationError
from locksmith._core import session_node_checks


@pytest.mark.parametrize(
    ("ttl", "lock_delay", "checks", "service_checks", "expected"),
    [
        (15.0, 0.0, None, None, ()),  # TTL session, default: no checks, any lock-delay is safe
        (None, 0.0, None, None, None),  # no TTL: the server default (serfHealth) must stay
        (15.0, 15.0, ("serfHealth",), None, ("serfHealth",)),
        (15.0, 20.0, ("a", "b"), None, ("a", "b")),
        (15.0, 0.0, (), None, ()),  # explicitly none
        (15.0, 15.0, None, ("svc",), ()),
        (None, 0.0, ("serfHealth",), None, ("serfHealth",)),  # no TTL: no deadline to protect
    ],
)
def test_session_node_checks(
    ttl: float | None,
    lock_delay: float,
    checks: tuple[str, ...] | None,
    service_checks: tuple[str, ...] | None,
    expected: tuple[str, ...] | None,
) -> None:
    assert session_node_checks(ttl, lock_delay, checks, service_checks) == expected


@pytest.mark.parametrize(
    ("checks", "service_checks"),
    [(("serfHealth",), None), (None, ("svc",)), (("a",), ("svc",))],
)
def test_bound_checks_need_lock_delay_at_least_ttl(
    checks: tuple[str, ...] | None, service_checks: tuple[str, ...] | None
) -> None:
    with pytest.raises(ValidationError) as info:
        session_node_checks(15.0, 14.9, checks, service_checks)
    assert info.value.field == "lock_delay"
    assert "shorter than the TTL" in str(info.value)


def test_manager_rejects_unsafe_checks_before_any_request(consul_addr: str) -> None:
    with Consul(consul_addr) as consul:
        before = {s.id for s in consul.sessions.list()}
        with pytest.raises(ValidationError, match="lock_delay"):
            LockManager(consul, ttl="10s", lock_delay="2s", checks=["serfHealth"])
        assert {s.id for s in consul.sessions.list()} == before


def test_default_ttl_session_is_bound_to_no_check(consul_addr: str) -> None:
    with Consul(consul_addr) as consul, LockManager(consul, ttl="10s", lock_delay=0) as mgr:
        lease = mgr.lock("session-checks/default").acquire(timeout=10)
        assert lease is not None
        session = consul.sessions.info(lease.session_id)
        assert session is not None
        assert session.node_checks == ()
        assert session.service_checks == ()


def test_explicit_checks_are_bound(consul_addr: str) -> None:
    with (
        Consul(consul_addr) as consul,
        LockManager(consul, ttl="10s", lock_delay="10s", checks=["serfHealth"]) as mgr,
    ):
        lease = mgr.lock("session-checks/explicit").acquire(timeout=10)
        assert lease is not None
        session = consul.sessions.info(lease.session_id)
        assert session is not None
        assert session.node_checks == ("serfHealth",)
