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

Every pytest run of an environment that installs locksmith loads the plugin, and with it
this package: so the names below are imported from their modules on first use (PEP 562),
and an unrelated test run loads none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._acl import ACLConsulAgent, ACLError, ACLToken
    from ._agent import AgentPorts, ConsulAgent, ConsulStartError, pick_ports
    from ._binary import ConsulNotFoundError, cache_dir, consul_version, find_consul
    from ._checker import CheckConfig, CheckResult, Violation, check_consul_lock, check_history
    from ._cluster import ConsulCluster, NodeState
    from ._docker import DockerConsul, docker_available
    from ._history import History, read_history
    from ._netns import (
        NetnsCluster,
        NetnsUnavailableError,
        cleanup_leftovers,
        netns_unavailable_reason,
    )
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

#: Each public name, by the module that defines it.
_HOMES = {
    "ACLConsulAgent": "_acl",
    "ACLError": "_acl",
    "ACLToken": "_acl",
    "AgentPorts": "_agent",
    "ConsulAgent": "_agent",
    "ConsulStartError": "_agent",
    "pick_ports": "_agent",
    "ConsulNotFoundError": "_binary",
    "cache_dir": "_binary",
    "consul_version": "_binary",
    "find_consul": "_binary",
    "CheckConfig": "_checker",
    "CheckResult": "_checker",
    "Violation": "_checker",
    "check_consul_lock": "_checker",
    "check_history": "_checker",
    "ConsulCluster": "_cluster",
    "NodeState": "_cluster",
    "DockerConsul": "_docker",
    "docker_available": "_docker",
    "History": "_history",
    "read_history": "_history",
    "NetnsCluster": "_netns",
    "NetnsUnavailableError": "_netns",
    "cleanup_leftovers": "_netns",
    "netns_unavailable_reason": "_netns",
    "ROUND_KINDS": "_partitions",
    "PartitionRun": "_partitions",
    "Round": "_partitions",
    "RunConfig": "_partitions",
    "RunResult": "_partitions",
    "make_schedule": "_partitions",
    "render_report": "_partitions",
    "FaultProxy": "_proxy",
    "TLSConsulAgent": "_tls",
    "TLSMaterial": "_tls",
    "make_tls_material": "_tls",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
