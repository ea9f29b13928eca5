"""A three-server Consul cluster on loopback aliases (127.0.0.2, .3, .4), for failover tests.

Every node uses the same ports on its own IP (Linux answers on all of 127.0.0.0/8 without any
configuration), its own data dir, ``-server -bootstrap-expect=N`` and ``-retry-join`` to the
others. Helpers find the leader, SIGKILL / SIGSTOP / SIGCONT nodes and restart them on the same
data dir and ports.
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from ._agent import (
    AgentPorts,
    ConsulAgent,
    ConsulStartError,
    leader_of,
    pick_ports,
    remove_temp_dir,
    track_temp_dir,
)
from ._binary import find_consul

__all__ = ["ConsulCluster", "NodeState"]

NodeState = Literal["running", "stopped", "killed"]
"""``running``; ``stopped`` (SIGSTOP, frozen); ``killed`` (SIGKILL or stopped, not running)."""


class ConsulCluster:
    """N (default 3) Consul servers on 127.0.0.2 and up.

    Args:
        size: Number of servers (all voters; ``-bootstrap-expect`` = size).
        raft_multiplier: ``performance.raft_multiplier``; 1 (the default) fails over in ~3 s,
            Consul's default of 5 in ~15 s.
        binary: The consul binary; defaults to :func:`find_consul`.
        first_ip: Last octet of the first node's 127.0.0.x address.
        extra_config: Extra config for every node (HCL/JSON text or mapping).
        extra_args: Extra command-line arguments for every node.
        name_prefix: Node names are ``<prefix><i>``.
        ready_timeout: Seconds :meth:`start` waits for a leader.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        raft_multiplier: int = 1,
        binary: Path | str | None = None,
        first_ip: int = 2,
        extra_config: str | Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        name_prefix: str = "server",
        ready_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.raft_multiplier = raft_multiplier
        self.ips = [f"127.0.0.{first_ip + i}" for i in range(size)]
        self.ready_timeout = ready_timeout
        self._binary = Path(binary) if binary is not None else None
        self._extra_config = extra_config
        self._extra_args = list(extra_args)
        self._name_prefix = name_prefix
        self._root: Path | None = None
        self.nodes: list[ConsulAgent] = []
        self._state: list[NodeState] = []
        self.ports: AgentPorts | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def http_addrs(self) -> list[str]:
        """``"IP:PORT"`` of each node's HTTP API, by node index."""
        return [n.http_addr for n in self.nodes]

    @property
    def http_urls(self) -> list[str]:
        """``http://IP:PORT`` of each node's HTTP API, by node index."""
        return [n.http_url for n in self.nodes]

    @property
    def server_addrs(self) -> list[str]:
        """``"IP:PORT"`` of each node's server RPC port (as ``/v1/status/leader`` names it)."""
        return [n.server_addr for n in self.nodes]

    @property
    def pids(self) -> list[int | None]:
        """PID of each node's current process."""
        return [n.pid for n in self.nodes]

    def state(self, i: int) -> NodeState:
        """The state the harness put node *i* in."""
        return self._state[i]

    # ------------------------------------------------------------------ lifecycle

    def _make_nodes(self, ports: AgentPorts, root: Path) -> list[ConsulAgent]:
        nodes = []
        for i, ip in enumerate(self.ips):
            joins = [f"-retry-join={other}:{ports.serf_lan}" for other in self.ips if other != ip]
            configs: list[str | Mapping[str, Any]] = [
                {"performance": {"raft_multiplier": self.raft_multiplier}}
            ]
            if self._extra_config is not None:
                configs.append(self._extra_config)
            workdir = root / f"node{i}"
            workdir.mkdir(exist_ok=True)
            nodes.append(
                ConsulAgent(
                    node_name=f"{self._name_prefix}{i}",
                    binary=self._binary,
                    bind=ip,
                    dev=False,
                    ports=ports,
                    workdir=workdir,
                    extra_config=configs,
                    extra_args=[
                        "-server",
                        f"-bootstrap-expect={self.size}",
                        "-retry-interval=1s",
                        *joins,
                        *self._extra_args,
                    ],
                    ready_timeout=self.ready_timeout,
                )
            )
        return nodes

    def start(self, attempts: int = 3) -> Self:
        """Start all nodes and wait until they agree on a leader.

        Raises:
            ConsulStartError: With the nodes' log tails, if no leader appears in time.
        """
        if self._binary is None:
            self._binary = find_consul()
        for attempt in range(1, attempts + 1):
            self._root = track_temp_dir(Path(tempfile.mkdtemp(prefix="consul-cluster-")))
            p = pick_ports(4, self.ips)
            self.ports = AgentPorts(http=p[0], serf_lan=p[1], serf_wan=p[2], server=p[3])
            self.nodes = self._make_nodes(self.ports, self._root)
            self._state = ["running"] * self.size
            try:
                for node in self.nodes:
                    node.start(wait=False)
                self.wait_for_leader(self.ready_timeout, all_nodes=True)
                return self
            except ConsulStartError:
                in_use = any("address already in use" in n.log_tail(20000) for n in self.nodes)
                self.stop()
                if not in_use or attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, i: int) -> ConsulAgent:
        if not 0 <= i < len(self.nodes):
            raise IndexError(f"no node {i} (cluster of {len(self.nodes)})")
        return self.nodes[i]

    def kill(self, i: int) -> None:
        """SIGKILL node *i* (its data dir stays, for :meth:`restart`)."""
        node = self._check(i)
        node.send_signal(signal.SIGCONT)
        node.kill()
        self._state[i] = "killed"

    def stop_node(self, i: int) -> None:
        """Gracefully stop node *i* (SIGTERM; data dir stays)."""
        self._check(i)._halt()
        self._state[i] = "killed"

    def freeze(self, i: int) -> None:
        """SIGSTOP node *i*: it stays alive but stops answering (alias: :meth:`stop` with i)."""
        self._check(i).send_signal(signal.SIGSTOP)
        self._state[i] = "stopped"

    def cont(self, i: int) -> None:
        """SIGCONT node *i* after :meth:`freeze`."""
        self._check(i).send_signal(signal.SIGCONT)
        if self.nodes[i].is_running():
            self._state[i] = "running"

    def restart(self, i: int, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start node *i* again with the same data dir and ports (killing it first if needed).

        Args:
            i: Node index.
            wait: Wait until the node reports a leader again.
            timeout: Seconds for that wait (default: ``ready_timeout``).
        """
        node = self._check(i)
        if node.is_running():
            self.kill(i)
        node.start(wait=False)
        self._state[i] = "running"
        if wait:
            node.wait_ready(self.ready_timeout if timeout is None else timeout)

    def stop(self, i: int | None = None) -> None:
        """With *i*: SIGSTOP node *i* (see :meth:`freeze`). Without: stop all, remove dirs."""
        if i is not None:
            self.freeze(i)
            return
        for node in self.nodes:
            node.send_signal(signal.SIGCONT)
        for node in self.nodes:
            node.kill()  # servers' graceful leave would only slow the teardown down
        self._state = ["killed"] * len(self.nodes)
        if self._root is not None:
            remove_temp_dir(self._root)
            self._root = None

    def __enter__(self) -> Self:
        if not self.nodes:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ leadership

    def running(self) -> list[int]:
        """Indices of nodes that are running (not killed, not frozen)."""
        return [
            i for i, n in enumerate(self.nodes) if self._state[i] == "running" and n.is_running()
        ]

    def _index_of_server_addr(self, addr: str) -> int | None:
        host = addr.rsplit(":", 1)[0]
        return self.ips.index(host) if host in self.ips else None

    def leader(self) -> int | None:
        """Index of the current leader, or None if there is none right now.

        A leader counts only if it is running and names itself as the leader; frozen and
        killed nodes are never asked (they would hang or refuse).
        """
        for i in self.running():
            idx = self._index_of_server_addr(leader_of(self.nodes[i].http_url, timeout=1.0))
            if idx is None or idx not in self.running():
                continue
            if idx == i or self._index_of_server_addr(leader_of(self.http_urls[idx], 1.0)) == idx:
                return idx
        return None

    def leader_addr(self) -> str | None:
        """HTTP ``"IP:PORT"`` of the current leader, or None."""
        idx = self.leader()
        return None if idx is None else self.http_addrs[idx]

    def followers(self) -> list[int]:
        """Running nodes other than the current leader."""
        lead = self.leader()
        return [i for i in self.running() if i != lead]

    def wait_for_leader(
        self,
        timeout: float = 30.0,
        *,
        exclude: Sequence[int] = (),
        all_nodes: bool = False,
    ) -> int:
        """Wait for a leader and return its index.

        Args:
            timeout: Seconds to wait.
            exclude: Indices that do not count (e.g. the old leader after a freeze).
            all_nodes: Also wait until every running node names that leader.

        Raises:
            ConsulStartError: With each node's log tail, on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            idx = self.leader()
            if idx is not None and idx not in exclude:
                if not all_nodes:
                    return idx
                want = self.server_addrs[idx]
                if all(leader_of(self.nodes[i].http_url, 1.0) == want for i in self.running()):
                    return idx
            for i, node in enumerate(self.nodes):
                if self._state[i] == "running" and not node.is_running():
                    raise ConsulStartError(
                        f"cluster node {i} exited ({node.process and node.process.returncode});"
                        f" log tail:\n{node.log_tail()}"
                    )
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- node {i} ({self._state[i]}):\n{n.log_tail(3000)}"
                    for i, n in enumerate(self.nodes)
                )
                raise ConsulStartError(f"no cluster leader after {timeout}s\n{tails}")
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"<ConsulCluster {self.http_addrs} states={self._state}>"
