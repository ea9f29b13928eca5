"""pytest plugin with fixtures running real Consul agents (entry point ``pytest11``).

Fixtures:
    consul_agent (session): a dev agent, one per xdist worker; or, if ``$CONSUL_HTTP_ADDR``
        is set, that agent (nothing is started or stopped).
    consul_addr (session): ``consul_agent.http_addr`` (``"host:port"``).
    consul_agent_factory (function): starts extra agents with custom config (ACL, TLS, ...);
        stops them at teardown.
    consul_cluster (module): a 3-server loopback :class:`ConsulCluster` (tests break it, so
        each module gets a fresh one). Tests using it are put in one xdist group.
    consul_container (session): a :class:`DockerConsul`; skipped when no Docker engine answers.
    consul_acl_agent (session): an :class:`ACLConsulAgent`: ACLs on, ``default_policy = "deny"``,
        ``.acl_master_token``, ``.make_token(rules_hcl)`` to mint tokens for your own policies.
    make_acl_token (function): ``make_acl_token(rules_hcl) -> secret`` on ``consul_acl_agent``;
        the tokens and policies are deleted at teardown.
    consul_tls_agent (session): a :class:`TLSConsulAgent` serving HTTPS with ``verify_incoming``,
        certificates made with ``consul tls``: ``.https_addr``, ``.ca_file``, ``.ca_path``,
        ``.client_cert``, ``.client_key``, ``.server_name``.

A missing consul binary fails the fixtures with the explanation from :func:`find_consul`: a CI
run must not silently skip. When a test fails, the tail of the agent's log is added to its report.
"""

from __future__ import annotations

import itertools
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import pytest

from ._acl import ACLConsulAgent, ACLError, ACLToken
from ._agent import ConsulAgent, ConsulStartError
from ._binary import ConsulNotFoundError, find_consul
from ._cluster import ConsulCluster
from ._docker import DockerConsul, docker_available
from ._tls import TLSConsulAgent, TLSMaterial, make_tls_material

__all__ = [
    "ACLConsulAgent",
    "ACLError",
    "ACLToken",
    "ExternalConsul",
    "TLSConsulAgent",
    "TLSMaterial",
    "consul_acl_agent",
    "consul_addr",
    "consul_agent",
    "consul_agent_factory",
    "consul_cluster",
    "consul_container",
    "consul_tls_agent",
    "make_acl_token",
    "make_tls_material",
]

CLUSTER_XDIST_GROUP = "locksmith-consul-cluster"


@dataclass(frozen=True)
class ExternalConsul:
    """An agent the user runs (``$CONSUL_HTTP_ADDR``); the harness neither starts nor stops it.

    Attributes:
        http_addr: ``"host:port"``.
        scheme: ``http`` or ``https``.
        acl_master_token: ``$CONSUL_HTTP_TOKEN`` if set.
    """

    http_addr: str
    scheme: str = "http"
    acl_master_token: str | None = None
    node_name: str = "external"
    pid: None = None

    @property
    def http_url(self) -> str:
        """``scheme://host:port``."""
        return f"{self.scheme}://{self.http_addr}"

    def log_tail(self, max_chars: int = 6000) -> str:
        """No log is available for an external agent."""
        del max_chars
        return ""

    @classmethod
    def from_env(cls, value: str) -> ExternalConsul:
        """Parse ``CONSUL_HTTP_ADDR`` (``host:port`` or ``http[s]://host:port``)."""
        parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
        if not parsed.netloc:
            raise ValueError(f"CONSUL_HTTP_ADDR={value!r} is not host:port")
        return cls(parsed.netloc, parsed.scheme, os.environ.get("CONSUL_HTTP_TOKEN") or None)


AgentT = TypeVar("AgentT", bound=ConsulAgent)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _fail_not_found(exc: ConsulNotFoundError) -> NoReturn:
    pytest.fail(f"locksmith.testing: {exc}", pytrace=False)


def _running(agent: AgentT) -> Iterator[AgentT]:
    """Start ``agent`` for a fixture (failing clearly without a consul binary), stop it after."""
    try:
        agent.start()
    except ConsulNotFoundError as exc:
        _fail_not_found(exc)
    try:
        yield agent
    finally:
        agent.stop()


def pytest_configure(config: pytest.Config) -> None:
    """Declare the markers the fixtures use (harmless if the project declares them too)."""
    config.addinivalue_line("markers", "cluster: needs the 3-server loopback cluster")
    config.addinivalue_line("markers", "docker: needs a Docker engine (testcontainers)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put all cluster tests into one xdist group (before xdist reads the groups)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return  # the xdist_group marker is unknown without xdist (--strict-markers)
    for item in items:
        uses_cluster = "consul_cluster" in getattr(item, "fixturenames", ())
        if uses_cluster or item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.xdist_group(CLUSTER_XDIST_GROUP))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of the agent/cluster logs to a failed test's report."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for name in ("consul_agent", "consul_acl_agent", "consul_tls_agent"):
            agent = funcargs.get(name)
            if isinstance(agent, ConsulAgent):
                report.sections.append((f"{name} log (tail)", agent.log_tail(4000)))
        cluster = funcargs.get("consul_cluster")
        if isinstance(cluster, ConsulCluster):
            for i, node in enumerate(cluster.nodes):
                text = node.log_tail(2000)
                report.sections.append((f"consul cluster node {i} log (tail)", text))
    return report


@pytest.fixture(scope="session")
def consul_agent() -> Iterator[ConsulAgent | ExternalConsul]:
    """A dev Consul agent for the session (per xdist worker), or ``$CONSUL_HTTP_ADDR``'s agent."""
    external = os.environ.get("CONSUL_HTTP_ADDR")
    if external:
        yield ExternalConsul.from_env(external)
        return
    yield from _running(ConsulAgent(node_name=f"locksmith-{_worker()}"))


@pytest.fixture(scope="session")
def consul_addr(consul_agent: ConsulAgent | ExternalConsul) -> str:
    """``"host:port"`` of the session's Consul HTTP API."""
    return consul_agent.http_addr


@pytest.fixture
def consul_agent_factory() -> Iterator[Callable[..., ConsulAgent]]:
    """Factory starting extra agents (keyword arguments of :class:`ConsulAgent`).

    Example:
        ``agent = consul_agent_factory(acl_master_token="root")``
    """
    agents: list[ConsulAgent] = []
    counter = itertools.count(1)

    def make(**kwargs: Any) -> ConsulAgent:
        kwargs.setdefault("node_name", f"locksmith-{_worker()}-extra{next(counter)}")
        agent = ConsulAgent(**kwargs)
        agents.append(agent)
        try:
            return agent.start()
        except ConsulNotFoundError as exc:
            _fail_not_found(exc)

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for agent in reversed(agents):
            try:
                agent.stop()
            except (OSError, ConsulStartError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def consul_cluster() -> Iterator[ConsulCluster]:
    """A fresh 3-server loopback cluster per module (raft_multiplier 1: ~3 s failover)."""
    try:
        binary = find_consul()
    except ConsulNotFoundError as exc:
        _fail_not_found(exc)
    cluster = ConsulCluster(binary=binary, name_prefix=f"{_worker()}-server")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def consul_container() -> Iterator[DockerConsul]:
    """A dev Consul agent in Docker; skipped (with the reason) when no Docker engine answers."""
    ok, why = docker_available()
    if not ok:
        pytest.skip(f"no Docker engine answers: {why}")
    container = DockerConsul().start()
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="session")
def consul_acl_agent() -> Iterator[ACLConsulAgent]:
    """A dev agent with ACLs on (default deny) and a master token, per xdist worker.

    ``.acl_master_token`` is the master token; ``.make_token(rules_hcl)`` makes a token whose
    only policy is ``rules_hcl`` and returns its secret.
    """
    yield from _running(ACLConsulAgent(node_name=f"locksmith-acl-{_worker()}"))


@pytest.fixture
def make_acl_token(consul_acl_agent: ACLConsulAgent) -> Iterator[Callable[..., str]]:
    """``make_acl_token(rules_hcl) -> secret`` on ``consul_acl_agent``; deleted at teardown."""
    made: list[str] = []

    def make(rules: str | None = None, *, description: str = "") -> str:
        secret = consul_acl_agent.make_token(rules, description=description)
        made.append(secret)
        return secret

    try:
        yield make
    finally:
        for secret in made:
            consul_acl_agent.delete_token(secret)


@pytest.fixture(scope="session")
def consul_tls_agent() -> Iterator[TLSConsulAgent]:
    """A dev agent serving HTTPS with ``verify_incoming`` (client certificates), per xdist worker.

    Clients connect to ``.https_addr`` with ``.ca_file`` (or ``.ca_path``), ``.client_cert`` and
    ``.client_key``; the server certificate names ``.server_name``, ``localhost`` and
    ``127.0.0.1``.
    """
    yield from _running(TLSConsulAgent(node_name=f"locksmith-tls-{_worker()}"))
