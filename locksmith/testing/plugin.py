"""pytest plugin with fixtures running real Consul agents (entry point ``pytest11``).

Fixtures:
    consul_agent (session): a dev agent, one per xdist worker; or, when asked explicitly
        with ``--consul-addr HOST:PORT`` or ``$LOCKSMITH_TEST_CONSUL_ADDR``, that agent
        (nothing is started or stopped; ``$LOCKSMITH_TEST_CONSUL_TOKEN`` is its token).
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

A good citizen of every pytest run, since every run of an environment that installs locksmith
loads it:

- Importing it loads pytest and this module only: the harness (agents, binary lookup, TLS,
  Docker...) is imported by the fixture that needs it.
- ``$CONSUL_HTTP_ADDR`` is never used: a shell set up for a production cluster must not run
  tests against it. An agent of your own is used only when named with ``--consul-addr`` or
  ``$LOCKSMITH_TEST_CONSUL_ADDR``.
- Fetching a consul binary (Debian's package, about 66 MB) is announced on the terminal, and
  ``LOCKSMITH_CONSUL_DOWNLOAD=0`` refuses it.

A missing consul binary fails the fixtures with the explanation from :func:`find_consul`: a CI
run must not silently skip. When a test fails, the tail of the agent's log is added to its report.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import sys
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import pytest

if TYPE_CHECKING:
    from ._acl import ACLConsulAgent, ACLError, ACLToken
    from ._agent import ConsulAgent
    from ._binary import ConsulNotFoundError
    from ._cluster import ConsulCluster
    from ._docker import DockerConsul
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
    "resolve_consul",
]

CLUSTER_XDIST_GROUP = "locksmith-consul-cluster"
#: The option and the variables that name an agent of your own (never $CONSUL_HTTP_ADDR).
ADDR_OPTION = "--consul-addr"
ADDR_ENV = "LOCKSMITH_TEST_CONSUL_ADDR"
TOKEN_ENV = "LOCKSMITH_TEST_CONSUL_TOKEN"  # noqa: S105 - a variable name, not a token
#: The fixtures whose tests talk to Consul (for the note about $CONSUL_HTTP_ADDR).
_FIXTURES = frozenset(
    {
        "consul_agent",
        "consul_addr",
        "consul_agent_factory",
        "consul_cluster",
        "consul_container",
        "consul_acl_agent",
        "make_acl_token",
        "consul_tls_agent",
    }
)
#: Names re-exported from the harness modules, imported on first use.
_REEXPORTS = {
    "ACLConsulAgent": "_acl",
    "ACLError": "_acl",
    "ACLToken": "_acl",
    "TLSConsulAgent": "_tls",
    "TLSMaterial": "_tls",
    "make_tls_material": "_tls",
}


def __getattr__(name: str) -> Any:
    # Not listed by dir(): pytest and pluggy scan this module's names, which must not
    # import the harness.
    home = _REEXPORTS.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"locksmith.testing.{home}"), name)


@dataclass(frozen=True)
class ExternalConsul:
    """An agent you run (``--consul-addr``); the harness neither starts nor stops it.

    Attributes:
        http_addr: ``"host:port"``.
        scheme: ``http`` or ``https``.
        acl_master_token: ``$LOCKSMITH_TEST_CONSUL_TOKEN`` if set.
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
    def from_address(cls, value: str, token: str | None = None) -> ExternalConsul:
        """Parse ``host:port`` or ``http[s]://host:port``.

        Raises:
            ValueError: Not an address.
        """
        parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
        if not parsed.netloc or parsed.scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not host:port or http(s)://host:port")
        return cls(parsed.netloc, parsed.scheme, token or None)


class _Agent(Protocol):
    def start(self) -> Any: ...

    def stop(self) -> None: ...


AgentT = TypeVar("AgentT", bound=_Agent)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _external(config: pytest.Config) -> ExternalConsul | None:
    """The agent named with ``--consul-addr`` or ``$LOCKSMITH_TEST_CONSUL_ADDR``, if any."""
    value = config.getoption("locksmith_consul_addr", None) or os.environ.get(ADDR_ENV)
    if not value:
        return None
    return ExternalConsul.from_address(value, os.environ.get(TOKEN_ENV))


def _announce_on_terminal(config: pytest.Config) -> Callable[[str], None]:
    """An announcer writing past pytest's capture: the terminal, or stderr in xdist workers."""

    def announce(line: str) -> None:
        capman = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            if reporter is not None and not hasattr(config, "workerinput"):
                reporter.write_line(line)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()

    return announce


def resolve_consul(config: pytest.Config) -> Path:
    """The consul binary, as :func:`find_consul` finds it, announcing a download on the
    terminal (``LOCKSMITH_CONSUL_DOWNLOAD=0`` refuses it).

    Raises:
        ConsulNotFoundError: No binary, with what to do about it.
    """
    from ._binary import find_consul, set_announcer  # noqa: PLC0415 - on first use

    set_announcer(_announce_on_terminal(config))
    try:
        return find_consul()
    finally:
        set_announcer(None)


def _binary_or_fail(config: pytest.Config) -> Path:
    from ._binary import ConsulNotFoundError  # noqa: PLC0415 - on first use

    try:
        return resolve_consul(config)
    except ConsulNotFoundError as exc:
        _fail_not_found(exc)


def _fail_not_found(exc: ConsulNotFoundError) -> NoReturn:
    pytest.fail(f"locksmith.testing: {exc}", pytrace=False)


def _running(agent: AgentT) -> Iterator[AgentT]:
    """Start ``agent`` for a fixture, stop it after."""
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


# --------------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--consul-addr``: run the Consul fixtures against an agent you run."""
    group = parser.getgroup("locksmith", "locksmith.testing (Consul fixtures)")
    group.addoption(
        ADDR_OPTION,
        dest="locksmith_consul_addr",
        metavar="HOST:PORT",
        default=None,
        help=(
            f"use this Consul agent instead of starting one (also ${ADDR_ENV}; its token: "
            f"${TOKEN_ENV}). $CONSUL_HTTP_ADDR is never used."
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the markers the fixtures use; check an external agent's address early."""
    config.addinivalue_line("markers", "cluster: needs the 3-server loopback cluster")
    config.addinivalue_line("markers", "docker: needs a Docker engine (testcontainers)")
    try:
        _external(config)
    except ValueError as exc:
        raise pytest.UsageError(f"{ADDR_OPTION} / {ADDR_ENV}: {exc}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say so when the tests use an agent of yours."""
    external = _external(config)
    if external is None:
        return []
    return [
        f"locksmith.testing: external Consul agent at {external.http_url} "
        f"({ADDR_OPTION} / {ADDR_ENV}); no agent is started"
    ]


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """When Consul fixtures are used with ``$CONSUL_HTTP_ADDR`` set, say that it is ignored."""
    if not os.environ.get("CONSUL_HTTP_ADDR") or _external(config) is not None:
        return []
    if not any(_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in items):
        return []
    return [
        "locksmith.testing: CONSUL_HTTP_ADDR is ignored; the fixtures start their own agents "
        f"(use {ADDR_OPTION} or {ADDR_ENV} to test against an agent of yours)"
    ]


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
            tail = getattr(funcargs.get(name), "log_tail", None)
            text = tail(4000) if callable(tail) else ""
            if text:
                report.sections.append((f"{name} log (tail)", text))
        cluster = funcargs.get("consul_cluster")
        for i, node in enumerate(getattr(cluster, "nodes", ()) or ()):
            report.sections.append((f"consul cluster node {i} log (tail)", node.log_tail(2000)))
    return report


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def consul_agent(request: pytest.FixtureRequest) -> Iterator[ConsulAgent | ExternalConsul]:
    """A dev Consul agent for the session (per xdist worker), or the agent named with
    ``--consul-addr`` / ``$LOCKSMITH_TEST_CONSUL_ADDR``."""
    external = _external(request.config)
    if external is not None:
        yield external
        return
    from ._agent import ConsulAgent  # noqa: PLC0415 - on first use

    binary = _binary_or_fail(request.config)
    yield from _running(ConsulAgent(node_name=f"locksmith-{_worker()}", binary=binary))


@pytest.fixture(scope="session")
def consul_addr(consul_agent: ConsulAgent | ExternalConsul) -> str:
    """``"host:port"`` of the session's Consul HTTP API."""
    return consul_agent.http_addr


@pytest.fixture
def consul_agent_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., ConsulAgent]]:
    """Factory starting extra agents (keyword arguments of :class:`ConsulAgent`).

    Example:
        ``agent = consul_agent_factory(acl_master_token="root")``
    """
    from ._agent import ConsulAgent, ConsulStartError  # noqa: PLC0415 - on first use

    agents: list[ConsulAgent] = []
    counter = itertools.count(1)

    def make(**kwargs: Any) -> ConsulAgent:
        kwargs.setdefault("node_name", f"locksmith-{_worker()}-extra{next(counter)}")
        if kwargs.get("binary") is None:
            kwargs["binary"] = _binary_or_fail(request.config)
        agent = ConsulAgent(**kwargs)
        agents.append(agent)
        return agent.start()

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
def consul_cluster(request: pytest.FixtureRequest) -> Iterator[ConsulCluster]:
    """A fresh 3-server loopback cluster per module (raft_multiplier 1: ~3 s failover)."""
    from ._cluster import ConsulCluster  # noqa: PLC0415 - on first use

    binary = _binary_or_fail(request.config)
    cluster = ConsulCluster(binary=binary, name_prefix=f"{_worker()}-server")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def consul_container() -> Iterator[DockerConsul]:
    """A dev Consul agent in Docker; skipped (with the reason) when no Docker engine answers."""
    from ._docker import DockerConsul, docker_available  # noqa: PLC0415 - on first use

    ok, why = docker_available()
    if not ok:
        pytest.skip(f"no Docker engine answers: {why}")
    container = DockerConsul().start()
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="session")
def consul_acl_agent(request: pytest.FixtureRequest) -> Iterator[ACLConsulAgent]:
    """A dev agent with ACLs on (default deny) and a master token, per xdist worker.

    ``.acl_master_token`` is the master token; ``.make_token(rules_hcl)`` makes a token whose
    only policy is ``rules_hcl`` and returns its secret.
    """
    from ._acl import ACLConsulAgent  # noqa: PLC0415 - on first use

    binary = _binary_or_fail(request.config)
    yield from _running(ACLConsulAgent(node_name=f"locksmith-acl-{_worker()}", binary=binary))


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
def consul_tls_agent(request: pytest.FixtureRequest) -> Iterator[TLSConsulAgent]:
    """A dev agent serving HTTPS with ``verify_incoming`` (client certificates), per xdist worker.

    Clients connect to ``.https_addr`` with ``.ca_file`` (or ``.ca_path``), ``.client_cert`` and
    ``.client_key``; the server certificate names ``.server_name``, ``localhost`` and
    ``127.0.0.1``.
    """
    from ._tls import TLSConsulAgent  # noqa: PLC0415 - on first use

    binary = _binary_or_fail(request.config)
    yield from _running(TLSConsulAgent(node_name=f"locksmith-tls-{_worker()}", binary=binary))
