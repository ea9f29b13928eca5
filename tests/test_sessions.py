"""The Session API against a real Consul agent: every endpoint, option and read mode."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import agent_call, unique

from locksmith._client import Consul, QueryResult, ServiceCheck, Session, next_index
from locksmith._exceptions import BadRequest, ProtocolError, SessionNotFound

#: Upper bound for a woken blocking query to come back; the query itself waits far longer.
WOKEN_WITHIN = 30.0
LONG_WAIT = "60s"


class Agent:
    """Tiny helper for the agent's local check/service registration API."""

    def __init__(self, addr: str) -> None:
        self.addr = addr

    def _put(self, path: str, body: Any = None) -> None:
        status, _ = agent_call(self.addr, "PUT", path, body)
        assert status == 200

    def register_check(self, check_id: str, status: str = "passing") -> None:
        self._put(
            "/v1/agent/check/register",
            {"ID": check_id, "Name": check_id, "TTL": "10m", "Status": status},
        )

    def deregister_check(self, check_id: str) -> None:
        self._put(f"/v1/agent/check/deregister/{check_id}")

    def register_service(self, service_id: str, check_id: str) -> None:
        self._put(
            "/v1/agent/service/register",
            {
                "ID": service_id,
                "Name": service_id,
                "Check": {"CheckID": check_id, "TTL": "10m", "Status": "passing"},
            },
        )

    def deregister_service(self, service_id: str) -> None:
        self._put(f"/v1/agent/service/deregister/{service_id}")


@pytest.fixture
def agent(consul_addr: str) -> Agent:
    return Agent(consul_addr)


@pytest.fixture
def node(consul: Consul) -> str:
    return consul.agent_node()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _info(consul: Consul, sid: str) -> Session:
    session = consul.sessions.info(sid)
    assert session is not None
    return session


# -- create ----------------------------------------------------------------------------------


def test_create_with_server_defaults(
    consul: Consul, new_session: Callable[..., str], node: str
) -> None:
    sid = new_session()
    uuid.UUID(sid)
    session = _info(consul, sid)
    assert session.id == sid
    assert session.name == ""
    assert session.node == node
    assert session.lock_delay == 15.0
    assert session.behavior == "release"
    assert session.ttl is None
    assert session.node_checks == ("serfHealth",)
    assert session.service_checks == ()
    assert session.create_index > 0
    assert session.modify_index >= session.create_index


def test_create_with_every_plain_option(
    consul: Consul, new_session: Callable[..., str], node: str
) -> None:
    sid = new_session(
        name="every-option", node=node, lock_delay="0s", behavior="delete", ttl="10s", dc="dc1"
    )
    session = _info(consul, sid)
    assert session.name == "every-option"
    assert session.node == node
    assert session.lock_delay == 0.0  # a real 0, not the 15s default
    assert session.behavior == "delete"
    assert session.ttl == 10.0


@pytest.mark.parametrize(
    ("lock_delay", "seconds"), [(0, 0.0), (5, 5.0), ("250ms", 0.25), ("1m", 60.0), (60, 60.0)]
)
def test_create_lock_delay(
    consul: Consul, new_session: Callable[..., str], lock_delay: Any, seconds: float
) -> None:
    assert _info(consul, new_session(lock_delay=lock_delay)).lock_delay == seconds


@pytest.mark.parametrize(
    ("ttl", "seconds"), [(0, None), ("0s", None), (10, 10.0), ("1m30s", 90.0), ("24h", 86400.0)]
)
def test_create_ttl(
    consul: Consul, new_session: Callable[..., str], ttl: Any, seconds: float | None
) -> None:
    assert _info(consul, new_session(ttl=ttl)).ttl == seconds


@pytest.mark.parametrize("behavior", ["release", "delete"])
def test_create_behavior(consul: Consul, new_session: Callable[..., str], behavior: str) -> None:
    assert _info(consul, new_session(behavior=behavior)).behavior == behavior


def test_create_in_the_client_datacenter(consul_addr: str) -> None:
    with Consul(consul_addr, datacenter="dc1") as client:
        sid = client.sessions.create(name="dc-default")
        try:
            assert _info(client, sid).name == "dc-default"
        finally:
            client.sessions.destroy(sid)


def test_create_in_unknown_datacenter(consul: Consul) -> None:
    with pytest.raises(BadRequest, match="datacenter") as info:
        consul.sessions.create(dc="no-such-dc")
    assert info.value.status == 500
    assert info.value.operation == "session.create"


def test_create_with_legacy_checks_keeps_serf_health(
    consul: Consul, new_session: Callable[..., str], agent: Agent
) -> None:
    check = unique("legacy")
    agent.register_check(check)
    try:
        session = _info(consul, new_session(checks=[check]))
        assert set(session.node_checks) == {"serfHealth", check}
    finally:
        agent.deregister_check(check)


def test_create_with_node_checks_replaces_serf_health(
    consul: Consul, new_session: Callable[..., str], agent: Agent
) -> None:
    check = unique("nodecheck")
    agent.register_check(check)
    try:
        session = _info(consul, new_session(node_checks=[check]))
        assert session.node_checks == (check,)
    finally:
        agent.deregister_check(check)


@pytest.mark.parametrize("kwargs", [{"node_checks": []}, {"checks": []}])
def test_create_without_any_node_check(
    consul: Consul, new_session: Callable[..., str], kwargs: dict[str, Any]
) -> None:
    assert _info(consul, new_session(**kwargs)).node_checks == ()


def test_create_with_service_checks(
    consul: Consul, new_session: Callable[..., str], agent: Agent
) -> None:
    service, check = unique("svc"), unique("svccheck")
    agent.register_service(service, check)
    try:
        by_id = _info(consul, new_session(service_checks=[check], node_checks=[]))
        assert by_id.service_checks == (ServiceCheck(id=check),)
        assert by_id.node_checks == ()
        as_obj = _info(consul, new_session(service_checks=[ServiceCheck(id=check)]))
        assert as_obj.service_checks == (ServiceCheck(id=check),)
        assert as_obj.node_checks == ("serfHealth",)
    finally:
        agent.deregister_service(service)


def test_session_bound_to_service_check_dies_with_it(
    consul: Consul, new_session: Callable[..., str], agent: Agent, pool: ThreadPoolExecutor
) -> None:
    service, check = unique("svc"), unique("svccheck")
    agent.register_service(service, check)
    sid = new_session(service_checks=[check])
    first = consul.sessions.info_with_meta(sid)
    assert first.value is not None
    future = pool.submit(
        consul.sessions.info_with_meta, sid, index=first.meta.index, wait=LONG_WAIT
    )
    agent.deregister_service(service)
    woken = future.result(timeout=WOKEN_WITHIN)
    assert woken.value is None
    assert woken.meta.index > first.meta.index


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node": "no-such-node"}, "Missing node registration"),
        ({"checks": ["no-such-check"]}, "Missing check 'no-such-check' registration"),
        ({"node_checks": ["no-such-check"]}, "Missing check 'no-such-check' registration"),
        ({"service_checks": ["no-such-check"]}, "no-such-check"),
    ],
)
def test_create_with_unknown_node_or_check(
    consul: Consul, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        consul.sessions.create(**kwargs)
    assert info.value.status == 500
    assert message in info.value.body


def test_create_with_critical_check(consul: Consul, agent: Agent) -> None:
    check = unique("critical")
    agent.register_check(check, status="critical")
    try:
        with pytest.raises(BadRequest, match="critical"):
            consul.sessions.create(node_checks=[check])
    finally:
        agent.deregister_check(check)


def test_create_with_warning_check_is_fine(
    consul: Consul, new_session: Callable[..., str], agent: Agent
) -> None:
    check = unique("warning")
    agent.register_check(check, status="warning")
    try:
        assert _info(consul, new_session(node_checks=[check])).node_checks == (check,)
    finally:
        agent.deregister_check(check)


# -- destroy, renew, info, node, list ----------------------------------------------------------


def test_destroy_is_idempotent(consul: Consul) -> None:
    sid = consul.sessions.create()
    consul.sessions.destroy(sid)
    assert consul.sessions.info(sid) is None
    consul.sessions.destroy(sid)  # already gone: still fine
    consul.sessions.destroy(str(uuid.uuid4()))  # never existed: still fine
    assert consul.sessions.info(sid) is None


def test_info_of_missing_session_is_none_with_an_index(consul: Consul) -> None:
    result = consul.sessions.info_with_meta(str(uuid.uuid4()))
    assert result.value is None
    assert result.meta.index > 0
    assert result.meta.known_leader is True


def test_renew_returns_the_session_with_its_ttl(
    consul: Consul, new_session: Callable[..., str], node: str
) -> None:
    sid = new_session(name="renewed", ttl="15s", behavior="delete", lock_delay=1)
    renewed = consul.sessions.renew(sid)
    assert renewed.id == sid
    assert renewed.name == "renewed"
    assert renewed.node == node
    assert renewed.behavior == "delete"
    assert renewed.lock_delay == 1.0
    # The server may raise the TTL under load; it never lowers it.
    assert renewed.ttl is not None
    assert renewed.ttl >= 15.0
    assert renewed == _info(consul, sid)


def test_renew_without_ttl(consul: Consul, new_session: Callable[..., str]) -> None:
    sid = new_session()
    assert consul.sessions.renew(sid).ttl is None


def test_renew_destroyed_session(consul: Consul) -> None:
    sid = consul.sessions.create(ttl="10s")
    consul.sessions.destroy(sid)
    with pytest.raises(SessionNotFound) as info:
        consul.sessions.renew(sid)
    assert info.value.status == 404
    assert info.value.operation == "session.renew"
    assert info.value.resource == sid
    assert sid in info.value.body


def test_renew_never_existing_session(consul: Consul) -> None:
    with pytest.raises(SessionNotFound):
        consul.sessions.renew(str(uuid.uuid4()))


def test_list_and_node(consul: Consul, new_session: Callable[..., str], node: str) -> None:
    a, b = new_session(name="list-a"), new_session(name="list-b", ttl="20s")
    listed = {s.id: s for s in consul.sessions.list()}
    assert {a, b} <= set(listed)
    assert listed[b].ttl == 20.0
    assert listed[a] == _info(consul, a)
    on_node = {s.id for s in consul.sessions.node(node)}
    assert {a, b} <= on_node
    consul.sessions.destroy(a)
    assert a not in {s.id for s in consul.sessions.list()}
    assert a not in {s.id for s in consul.sessions.node(node)}


def test_node_unknown_is_empty(consul: Consul) -> None:
    result = consul.sessions.node_with_meta("no-such-node")
    assert result.value == []
    assert result.meta.index > 0


CONSISTENCY_MODES = ["default", "consistent", "stale"]


@pytest.mark.parametrize("mode", CONSISTENCY_MODES)
def test_reads_in_each_consistency_mode(
    consul: Consul, new_session: Callable[..., str], node: str, mode: Any
) -> None:
    sid = new_session(name=f"mode-{mode}")
    results: list[QueryResult[Any]] = [
        consul.sessions.info_with_meta(sid, consistency=mode),
        consul.sessions.list_with_meta(consistency=mode),
        consul.sessions.node_with_meta(node, consistency=mode),
    ]
    info, listed, on_node = results
    assert info.value is not None
    assert info.value.id == sid
    assert sid in {s.id for s in listed.value}
    assert sid in {s.id for s in on_node.value}
    for result in results:
        assert result.meta.index >= info.value.create_index
        assert result.meta.known_leader is True
        assert result.meta.last_contact >= 0.0
    assert consul.sessions.info(sid, consistency=mode) == info.value
    assert sid in {s.id for s in consul.sessions.list(consistency=mode)}
    assert sid in {s.id for s in consul.sessions.node(node, consistency=mode)}


# -- blocking queries ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", CONSISTENCY_MODES)
def test_blocking_info_woken_by_destroy(
    consul: Consul, pool: ThreadPoolExecutor, mode: Any
) -> None:
    sid = consul.sessions.create(name="blocked-info")
    first = consul.sessions.info_with_meta(sid, consistency=mode)
    assert first.value is not None
    future = pool.submit(
        consul.sessions.info_with_meta,
        sid,
        index=first.meta.index,
        wait=LONG_WAIT,
        consistency=mode,
    )
    consul.sessions.destroy(sid)
    woken = future.result(timeout=WOKEN_WITHIN)
    assert woken.value is None
    assert woken.meta.index > first.meta.index
    assert next_index(first.meta.index, woken.meta.index) == woken.meta.index


def test_blocking_info_woken_by_ttl_renewal_is_not_a_change(
    consul: Consul, new_session: Callable[..., str], pool: ThreadPoolExecutor
) -> None:
    """A renewal changes no Raft state: a blocking read sees the same index after its wait."""
    sid = new_session(ttl="10s")
    first = consul.sessions.info_with_meta(sid)
    future = pool.submit(consul.sessions.info_with_meta, sid, index=first.meta.index, wait="1s")
    consul.sessions.renew(sid)
    after = future.result(timeout=WOKEN_WITHIN)
    assert after.meta.index == first.meta.index
    assert after.value == first.value


def test_blocking_list_woken_by_create(
    consul: Consul, new_session: Callable[..., str], pool: ThreadPoolExecutor
) -> None:
    first = consul.sessions.list_with_meta()
    future = pool.submit(consul.sessions.list_with_meta, index=first.meta.index, wait=LONG_WAIT)
    sid = new_session(name="wakes-list")
    woken = future.result(timeout=WOKEN_WITHIN)
    assert woken.meta.index > first.meta.index
    assert sid in {s.id for s in woken.value}


def test_blocking_node_woken_by_create(
    consul: Consul, new_session: Callable[..., str], node: str, pool: ThreadPoolExecutor
) -> None:
    first = consul.sessions.node_with_meta(node)
    future = pool.submit(
        consul.sessions.node_with_meta, node, index=first.meta.index, wait=LONG_WAIT
    )
    sid = new_session(name="wakes-node")
    woken = future.result(timeout=WOKEN_WITHIN)
    assert woken.meta.index > first.meta.index
    assert sid in {s.id for s in woken.value}


def test_blocking_query_without_change_returns_the_same_index(
    consul: Consul, new_session: Callable[..., str]
) -> None:
    sid = new_session()
    first = consul.sessions.info_with_meta(sid)
    again = consul.sessions.info_with_meta(sid, index=first.meta.index, wait="500ms")
    assert again.meta.index == first.meta.index
    assert again.value == first.value


@pytest.mark.parametrize("endpoint", ["info", "list", "node"])
def test_index_above_the_servers_goes_backwards_and_resets(
    consul: Consul, new_session: Callable[..., str], node: str, endpoint: str
) -> None:
    sid = new_session()
    current = consul.sessions.info_with_meta(sid).meta.index
    sent = current + 1_000_000
    result: QueryResult[Any]
    if endpoint == "info":
        result = consul.sessions.info_with_meta(sid, index=sent, wait="1s")
    elif endpoint == "list":
        result = consul.sessions.list_with_meta(index=sent, wait="1s")
    else:
        result = consul.sessions.node_with_meta(node, index=sent, wait="1s")
    assert 0 < result.meta.index < sent
    assert next_index(sent, result.meta.index) == 0


# -- pure logic --------------------------------------------------------------------------------


def test_next_index_rules() -> None:
    assert next_index(0, 5) == 5
    assert next_index(5, 5) == 5
    assert next_index(5, 9) == 9
    assert next_index(9, 5) == 0
    assert next_index(0, -1) == 0


def test_session_from_json_parses_consul_shapes() -> None:
    session = Session.from_json(
        {
            "ID": "adf4238a-882b-9ddc-4a9d-5b6758e4159e",
            "Name": "n",
            "Node": "foobar",
            "LockDelay": 1.5e10,
            "Behavior": "delete",
            "TTL": "30s",
            "Checks": ["serfHealth", "c"],
            "ServiceChecks": [{"ID": "svc", "Namespace": "ns"}],
            "CreateIndex": 7,
            "ModifyIndex": 9,
        }
    )
    assert session.lock_delay == 15.0
    assert session.ttl == 30.0
    assert session.node_checks == ("serfHealth", "c")  # legacy Checks when no NodeChecks
    assert session.service_checks == (ServiceCheck(id="svc", namespace="ns"),)
    assert (session.create_index, session.modify_index) == (7, 9)


@pytest.mark.parametrize(
    "data", [{}, None, {"ID": "x", "Behavior": "Delete"}, {"ID": "x", "TTL": "15"}, []]
)
def test_session_from_json_rejects_bad_objects(data: Any) -> None:
    with pytest.raises(ProtocolError):
        Session.from_json(data)
