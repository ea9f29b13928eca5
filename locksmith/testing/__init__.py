"""Test harness: real Consul agents, a 3-server cluster and a Docker variant, plus a pytest plugin.

Example:
    >>> from locksmith.testing import ConsulAgent
    >>> with ConsulAgent() as agent:  # doctest: +SKIP
    ...     print(agent.http_addr)

The pytest plugin (:mod:`locksmith.testing.plugin`) is registered through the ``pytest11``
entry point and provides ``consul_agent``, ``consul_addr``, ``consul_cluster``,
``consul_container``, ``consul_agent_factory``, ``consul_acl_agent``, ``make_acl_token`` and
``consul_tls_agent``.

For network partitions between machines, :class:`NetnsCluster` runs Consul servers, client
agents and applications in Linux network namespaces and cuts links between them;
:class:`PartitionRun` plays seeded partition schedules against lock, election and semaphore
workloads and checks their histories (:func:`check_history`); see ``docs/faults.md``.
"""

from ._acl import ACLConsulAgent, ACLError, ACLToken
from ._agent import AgentPorts, ConsulAgent, ConsulStartError, pick_ports
from ._binary import ConsulNotFoundError, cache_dir, consul_version, find_consul
from ._checker import CheckConfig, CheckResult, Violation, check_consul_lock, check_history
from ._cluster import ConsulCluster, NodeState
from ._docker import DockerConsul, docker_available
from ._history import History, read_history
from ._netns import NetnsCluster, NetnsUnavailableError, cleanup_leftovers, netns_unavailable_reason
from ._partitions import (
    ROUND_KINDS,
    PartitionRun,
    Round,
    RunConfig,
    RunResult,
    make_schedule,
    render_report,
)
from ._proxy import FaultProxy
from ._tls import TLSConsulAgent, TLSMaterial, make_tls_material

__all__ = [
    "ROUND_KINDS",
    "ACLConsulAgent",
    "ACLError",
    "ACLToken",
    "AgentPorts",
    "CheckConfig",
    "CheckResult",
    "ConsulAgent",
    "ConsulCluster",
    "ConsulNotFoundError",
    "ConsulStartError",
    "DockerConsul",
    "FaultProxy",
    "History",
    "NetnsCluster",
    "NetnsUnavailableError",
    "NodeState",
    "PartitionRun",
    "Round",
    "RunConfig",
    "RunResult",
    "TLSConsulAgent",
    "TLSMaterial",
    "Violation",
    "cache_dir",
    "check_consul_lock",
    "check_history",
    "cleanup_leftovers",
    "consul_version",
    "docker_available",
    "find_consul",
    "make_schedule",
    "make_tls_material",
    "netns_unavailable_reason",
    "pick_ports",
    "read_history",
    "render_report",
]
