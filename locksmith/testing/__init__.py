"""Test harness: real Consul agents, a 3-server cluster and a Docker variant, plus a pytest plugin.

Example:
    >>> from locksmith.testing import ConsulAgent
    >>> with ConsulAgent() as agent:  # doctest: +SKIP
    ...     print(agent.http_addr)

The pytest plugin (:mod:`locksmith.testing.plugin`) is registered through the ``pytest11``
entry point and provides ``consul_agent``, ``consul_addr``, ``consul_cluster``,
``consul_container`` and ``consul_agent_factory``.
"""

from ._agent import AgentPorts, ConsulAgent, ConsulStartError, pick_ports
from ._binary import ConsulNotFoundError, cache_dir, consul_version, find_consul
from ._cluster import ConsulCluster, NodeState
from ._docker import DockerConsul, docker_available

__all__ = [
    "AgentPorts",
    "ConsulAgent",
    "ConsulCluster",
    "ConsulNotFoundError",
    "ConsulStartError",
    "DockerConsul",
    "NodeState",
    "cache_dir",
    "consul_version",
    "docker_available",
    "find_consul",
    "pick_ports",
]
