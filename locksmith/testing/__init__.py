"""Test harness: real Consul agents, a 3-server cluster and a Docker variant, plus a pytest plugin.

Example:
    >>> from locksmith.testing import ConsulAgent
    >>> with ConsulAgent() as agent:  # doctest: +SKIP
    ...     print(agent.http_addr)

The pytest plugin (:mod:`locksmith.testing.plugin`) is registered through the ``pytest11``
entry point and provides ``consul_agent``, ``consul_addr``, ``consul_cluster``,
``consul_container``, ``consul_agent_factory``, ``consul_acl_agent``, ``make_acl_token`` and
``consul_tls_agent``.
"""

from ._acl import ACLConsulAgent, ACLError, ACLToken
from ._agent import AgentPorts, ConsulAgent, ConsulStartError, pick_ports
from ._binary import ConsulNotFoundError, cache_dir, consul_version, find_consul
from ._cluster import ConsulCluster, NodeState
from ._docker import DockerConsul, docker_available
from ._proxy import FaultProxy
from ._tls import TLSConsulAgent, TLSMaterial, make_tls_material

__all__ = [
    "ACLConsulAgent",
    "ACLError",
    "ACLToken",
    "AgentPorts",
    "ConsulAgent",
    "ConsulCluster",
    "ConsulNotFoundError",
    "ConsulStartError",
    "DockerConsul",
    "FaultProxy",
    "NodeState",
    "TLSConsulAgent",
    "TLSMaterial",
    "cache_dir",
    "consul_version",
    "docker_available",
    "find_consul",
    "make_tls_material",
    "pick_ports",
]
