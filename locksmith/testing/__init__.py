"""Test harness: real Consul agents, a 3-server cluster and a Docker variant, plus a pytest plugin.

Example:
    >>> from locksmith.testing import ConsulAgent
    >>> with ConsulAgent() as agent:  # doctest: +SKIP
    ...     print(agent.http_addr)

The pytest plugin (:mod:`locksmith.testing.plugin`) is registered through the ``pytest11``
entry point and provides ``consul_agent``, ``consul_addr``, ``consul_cluster``,
``consul_container``, ``consul_agent_factory``, ``consul_acl_agent``, ``make_acl_token`` and
``consul_tls_agent``.

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
    from ._cluster import ConsulCluster, NodeState
    from ._docker import DockerConsul, docker_available
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
    "ConsulCluster": "_cluster",
    "NodeState": "_cluster",
    "DockerConsul": "_docker",
    "docker_available": "_docker",
    "FaultProxy": "_proxy",
    "TLSConsulAgent": "_tls",
    "TLSMaterial": "_tls",
    "make_tls_material": "_tls",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
