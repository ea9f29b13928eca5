"""A Consul cluster in Linux network namespaces, with real network partitions.

:class:`NetnsCluster` builds a small data centre out of network namespaces it creates and
always removes, so that a partition can be made between *machines* whose processes all keep
running, each side seeing a different world:

* a **switch**: a namespace holding a Linux bridge (``br0``), and nothing else;
* **server hosts** ``s0``, ``s1``, ... : one Consul server each;
* **agent hosts** ``h0``, ``h1``, ... : one Consul client agent each (as on every application
  machine in production);
* **application hosts** ``a0``, ``a1``, ... : where the application processes of agent host
  ``hK`` run. Each ``aK`` has one point-to-point link, to ``hK`` only, and no route anywhere
  else: applications can talk to their local agent and to nothing else, as in production.
  Giving them a namespace of their own is how "the app is cut off from its agent" is made: in
  production both would share a machine, and the cut stands for a hung agent or a broken
  loopback path.

Every host is linked to the switch by a veth pair (``eth0`` in the host, ``p-<host>`` on the
bridge). Addresses come from 198.18.0.0/15 only (RFC 2544's benchmarking range): the switch
subnet is 198.18.0.0/24 (servers .11 and up, agent hosts .21 and up), the link of agent host K
to its applications 198.19.K.0/24 (agent side .1, applications .2). Nothing at all is added to
the machine's own network namespace.

**What a cut is.** This machine has neither ``nft`` nor ``iptables``, and its kernel has no tc
actions (``tc netem`` and ``tc ... action drop`` both fail), so a cut is made from what
``ip`` always offers:

* ``drop`` (the default): every host knows every neighbour's MAC address statically
  (permanent neighbour entries, no ARP ever). Cutting A from B rewrites, in A, B's entry to a
  MAC address nobody has, and in B, A's entry likewise. Frames then leave the sender and are
  discarded: on the switch, the bridge forwards that MAC to a sink port whose peer drops them;
  on a point-to-point link the receiver drops frames not addressed to it. The effect is that of
  a DROP rule on both sides: packets vanish silently, in both directions, only between the
  pairs named, while both hosts' links stay up. Healing writes the true MACs back.
* ``link``: the switch-side end of a host's veth (or the agent side of an application link) is
  set down: the host sees its carrier go, every packet it sends is dropped, nothing reaches
  it. That is a pulled cable; :meth:`NetnsCluster.flap` toggles it.

Neither kind sends a reset, an ICMP error or a FIN: an established TCP connection just stops
getting answers, which is what a partition looks like to a process.

**Cleanup.** Names start with ``lsnp-<owner pid>-<owner start time>-<n>-``. The cluster is a
context manager; an ``atexit`` hook closes any cluster still open; processes get
``PR_SET_PDEATHSIG`` (``setpriv``) so they die with the interpreter; and every
:meth:`NetnsCluster.start` first removes the namespaces (killing the processes inside) and work
directories of owners that no longer run (:func:`cleanup_leftovers`), so even a SIGKILLed run
leaves nothing behind for long.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self, TypeVar

from ._agent import ConsulStartError, _pdeathsig_prefix, _register, http_get, terminate
from ._binary import find_consul

__all__ = [
    "BLACKHOLE_MAC",
    "NAME_PREFIX",
    "CutKind",
    "NetnsCluster",
    "NetnsHost",
    "NetnsUnavailableError",
    "cleanup_leftovers",
    "netns_unavailable_reason",
]

T = TypeVar("T")

#: Every namespace and work directory this module makes starts with this.
NAME_PREFIX = "lsnp-"
#: The MAC address a cut points a neighbour at: nobody has it (locally administered).
BLACKHOLE_MAC = "02:18:de:ad:00:00"
NETNS_DIR = Path("/run/netns")
SWITCH_NET = ipaddress.IPv4Network("198.18.0.0/24")
HTTP_PORT = 8500
SERVER_PORT = 8300
_CLONE_NEWNET = 0x40000000
_NAME_RE = re.compile(r"^lsnp-(\d+)-(\d+)-(\d+)-")

CutKind = Literal["drop", "link"]


class NetnsUnavailableError(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, no netns support)."""


# --------------------------------------------------------------------------- helpers


def _proc_start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_proc_start_ticks(pid) or 0}"


def _owner_alive(pid: int, ticks: int) -> bool:
    return _proc_start_ticks(pid) == ticks


def _run(cmd: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    out = subprocess.run(
        list(cmd), input=input_text, capture_output=True, text=True, timeout=30, check=False
    )
    if check and out.returncode != 0:
        raise NetnsUnavailableError(
            f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout}"
        )
    return out.stdout


def _ip_batch(per_ns: Mapping[str, Iterable[str]], *, check: bool = True) -> None:
    """Run ``ip`` commands (one per line, without ``ip``), namespace by namespace, with one
    ``ip -n NS -batch -`` process per namespace, in the mapping's order."""
    for ns, lines in per_ns.items():
        text = "\n".join(lines)
        if text:
            _run(["ip", "-n", ns, "-batch", "-"], input_text=text + "\n", check=check)


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if they can (checked by making one)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (this process is not uid 0)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{NAME_PREFIX}{_owner_tag()}-0-probe{threading.get_ident() % 10000}"
    try:
        _run(["ip", "netns", "add", probe])
    except (NetnsUnavailableError, OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` failed: {exc}"
    try:
        _run(["ip", "-n", probe, "link", "add", "t0", "type", "veth", "peer", "name", "t1"])
        _run(["ip", "-n", probe, "link", "add", "b0", "type", "bridge"])
    except NetnsUnavailableError as exc:
        return f"veth pairs or bridges cannot be made: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def _netns_names() -> list[str]:
    out = _run(["ip", "-j", "netns", "list"], check=False).strip()
    if not out:
        return []
    try:
        return [str(entry["name"]) for entry in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_netns(name: str) -> None:
    """SIGKILL every process in namespace ``name``, then delete it (its links go with it)."""
    for _ in range(3):
        pids = [int(p) for p in _run(["ip", "netns", "pids", name], check=False).split()]
        if not pids:
            break
        for pid in pids:
            if pid == os.getpid():
                continue  # never: only a thread of ours can be in there (see call())
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _run(["ip", "netns", "del", name], check=False)


def cleanup_leftovers(*, include_own: bool = False) -> list[str]:
    """Remove namespaces and work directories left by runs whose process is gone.

    A name carries its owner's PID and start time, so a namespace whose owner still runs
    (another test session, say) is left alone, and a reused PID is not mistaken for the
    owner. Processes still inside a leftover namespace are SIGKILLed first.

    Args:
        include_own: Also remove this process's own namespaces (for tests of this function).

    Returns:
        The names removed.
    """
    removed: list[str] = []
    own = _owner_tag()
    for name in _netns_names():
        m = _NAME_RE.match(name)
        if m is None:
            continue
        pid, ticks = int(m.group(1)), int(m.group(2))
        if f"{pid}-{ticks}" == own and not include_own:
            continue
        if f"{pid}-{ticks}" != own and _owner_alive(pid, ticks):
            continue
        _kill_netns(name)
        removed.append(name)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{NAME_PREFIX}*"):
        m = _NAME_RE.match(path.name + "-")
        if m is None:
            continue
        pid, ticks = int(m.group(1)), int(m.group(2))
        mine = f"{pid}-{ticks}" == own
        if (mine and include_own) or (not mine and not _owner_alive(pid, ticks)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


# --------------------------------------------------------------------------- entering a netns

_libc: Any = None


def _setns(path: Path) -> None:
    """Move the calling *thread* into the network namespace at ``path``."""
    global _libc  # noqa: PLW0603 - loaded once
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- topology


@dataclass
class NetnsHost:
    """One namespace of the topology.

    Attributes:
        name: Short name (``s0``, ``h1``, ``a1``, ``sw``).
        role: ``server``, ``agent``, ``app`` or ``switch``.
        netns: The namespace's full name.
        ip: Its address on the switch (agent side of the app link for ``app`` hosts: None).
        mac: MAC of its ``eth0``.
        port: Name of its veth end on the bridge (switch-attached hosts only).
        index: Index within its role.
    """

    name: str
    role: str
    netns: str
    ip: str | None
    mac: str | None
    port: str | None
    index: int


@dataclass
class _Proc:
    host: str
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes] | None = None


@dataclass
class _Link:
    """One neighbour entry the cluster manages: in ``host``'s namespace, ``ip`` via ``dev``."""

    host: str
    dev: str
    ip: str
    mac: str


@dataclass
class _CutState:
    pairs: set[frozenset[str]] = field(default_factory=set)  # drop cuts between two hosts
    down: set[str] = field(default_factory=set)  # hosts whose link is down


_open: weakref.WeakSet[NetnsCluster] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for cluster in list(_open):
        with contextlib.suppress(Exception):
            cluster.close()


atexit.register(_close_all_at_exit)

_counter_lock = threading.Lock()
_counter = [0]


class NetnsCluster:
    """Consul servers, client agents and application hosts in namespaces (module docstring).

    Args:
        servers: Number of Consul servers (3 or 5).
        agents: Number of agent hosts, each with its application host.
        binary: The consul binary (default: :func:`find_consul`).
        raft_multiplier: ``performance.raft_multiplier`` of the servers (1: elections in
            seconds; Consul's default 5: 10-16 s).
        workdir: Where data, logs and configs go (default: a ``/tmp/lsnp-...`` directory that
            :meth:`close` removes).
        keep_workdir: Keep a default work directory after close (for post-mortems).
        ready_timeout: Seconds :meth:`start` waits for a leader and for every agent.
        log: Where progress lines go.

    Raises:
        NetnsUnavailableError: From :meth:`start`, when namespaces cannot be made.
    """

    def __init__(
        self,
        servers: int = 3,
        agents: int = 3,
        *,
        binary: Path | str | None = None,
        raft_multiplier: int = 1,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        ready_timeout: float = 90.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if servers < 1 or agents < 0:
            raise ValueError("need at least one server")
        if agents > 200 or servers > 9:
            raise ValueError("at most 9 servers and 200 agent hosts")
        with _counter_lock:
            _counter[0] += 1
            seq = _counter[0]
        self.tag = f"{NAME_PREFIX}{_owner_tag()}-{seq}"
        self.n_servers = servers
        self.n_agents = agents
        self.raft_multiplier = raft_multiplier
        self.ready_timeout = ready_timeout
        self._binary = Path(binary) if binary is not None else None
        self._own_workdir = workdir is None
        self._keep_workdir = keep_workdir
        self._workdir = workdir
        self._log = log or (lambda _msg: None)
        self.hosts: dict[str, NetnsHost] = {}
        self._procs: list[_Proc] = []
        self._links: dict[tuple[str, str], _Link] = {}  # (host, peer) -> the true entry
        self._cuts = _CutState()
        self._mu = threading.RLock()
        self._executors: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._made: list[str] = []
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ names

    @property
    def servers(self) -> list[str]:
        """Server host names, ``s0``, ``s1``, ..."""
        return [f"s{i}" for i in range(self.n_servers)]

    @property
    def agents(self) -> list[str]:
        """Agent host names, ``h0``, ``h1``, ..."""
        return [f"h{i}" for i in range(self.n_agents)]

    @property
    def apps(self) -> list[str]:
        """Application host names, ``a0``, ``a1``, ... (``aK`` talks to ``hK`` only)."""
        return [f"a{i}" for i in range(self.n_agents)]

    @property
    def workdir(self) -> Path:
        """The work directory (data dirs, logs, configs)."""
        if self._workdir is None:
            raise ConsulStartError("cluster not started")
        return self._workdir

    @property
    def binary(self) -> Path:
        """The consul binary."""
        if self._binary is None:
            self._binary = find_consul()
        return self._binary

    def netns(self, host: str) -> str:
        """The full namespace name of ``host``."""
        return self.hosts[host].netns

    def agent_addr(self, k: int) -> str:
        """``IP:PORT`` of agent ``hK``'s HTTP API as its application host ``aK`` sees it."""
        return f"{self._app_net(k)[1]}:{HTTP_PORT}"

    def server_ip(self, host: str) -> str:
        """The switch address of a server (or agent) host."""
        ip = self.hosts[host].ip
        if ip is None:
            raise ValueError(f"{host} is not on the switch")
        return ip

    @staticmethod
    def _app_net(k: int) -> tuple[ipaddress.IPv4Network, str, str]:
        net = ipaddress.IPv4Network(f"198.19.{k}.0/24")
        return net, str(net.network_address + 1), str(net.network_address + 2)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Build the namespaces and links, start the servers and agents, wait until ready.

        Raises:
            NetnsUnavailableError: Namespaces cannot be made here.
            ConsulStartError: Consul did not come up (log tails included).
        """
        if self._started:
            raise RuntimeError("already started")
        reason = netns_unavailable_reason()
        if reason is not None:
            raise NetnsUnavailableError(reason)
        for name in cleanup_leftovers():
            self._log(f"removed leftover {name}")
        self._started = True
        _open.add(self)
        try:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix=self.tag + "-"))
            self._build()
            self._start_consul()
        except BaseException:
            self.close()
            raise
        return self

    def _host(self, name: str, role: str, index: int, ip: str | None, port: bool) -> NetnsHost:
        n = len(self.hosts)
        host = NetnsHost(
            name=name,
            role=role,
            netns=f"{self.tag}-{name}",
            ip=ip,
            mac=f"02:18:00:00:{n // 256:02x}:{n % 256:02x}",
            port=f"p-{name}" if port else None,
            index=index,
        )
        self.hosts[name] = host
        return host

    def _build(self) -> None:
        sw = self._host("sw", "switch", 0, None, port=False)
        switched: list[NetnsHost] = []
        for i in range(self.n_servers):
            switched.append(self._host(f"s{i}", "server", i, str(SWITCH_NET[11 + i]), port=True))
        for k in range(self.n_agents):
            switched.append(self._host(f"h{k}", "agent", k, str(SWITCH_NET[21 + k]), port=True))
        apps = [self._host(f"a{k}", "app", k, None, port=False) for k in range(self.n_agents)]
        for host in self.hosts.values():
            _run(["ip", "netns", "add", host.netns])
            self._made.append(host.netns)
        prefix = SWITCH_NET.prefixlen
        cmds: dict[str, list[str]] = {h.netns: [] for h in self.hosts.values()}
        cmds[sw.netns] += [
            "link set lo up",
            "link add br0 type bridge",
            "link set br0 up",
            # The sink: frames for BLACKHOLE_MAC go to sink0 and die at sink1.
            "link add sink0 type veth peer name sink1",
            "link set sink0 master br0 up",
            "link set sink1 up",
        ]
        for h in switched:
            cmds[sw.netns] += [
                f"link add {h.port} type veth peer name eth0 netns {h.netns} address {h.mac}",
                f"link set {h.port} master br0 up",
            ]
            cmds[h.netns] += [
                f"addr add {h.ip}/{prefix} dev eth0",
                "link set eth0 up",
                "link set lo up",
            ]
        for a in apps:
            h = self.hosts[f"h{a.index}"]
            net, agent_ip, app_ip = self._app_net(a.index)
            agent_mac = f"02:19:00:00:{a.index // 256:02x}:{a.index % 256:02x}"
            assert a.mac is not None
            cmds[h.netns] += [
                f"link add app0 address {agent_mac} type veth peer name eth0 "
                f"netns {a.netns} address {a.mac}",
                f"addr add {agent_ip}/{net.prefixlen} dev app0",
                "link set app0 up",
            ]
            cmds[a.netns] += [
                f"addr add {app_ip}/{net.prefixlen} dev eth0",
                "link set eth0 up",
                "link set lo up",
            ]
            self._links[(a.name, h.name)] = _Link(a.name, "eth0", agent_ip, agent_mac)
            self._links[(h.name, a.name)] = _Link(h.name, "app0", app_ip, a.mac)
        for x in switched:
            for y in switched:
                if x is not y:
                    assert y.ip is not None and y.mac is not None
                    self._links[(x.name, y.name)] = _Link(x.name, "eth0", y.ip, y.mac)
        # The switch first (it makes the veth pairs), then agent hosts (app links), then the rest.
        order = [sw.netns] + [self.hosts[h].netns for h in self.agents]
        order += [ns for ns in cmds if ns not in order]
        _ip_batch({ns: cmds[ns] for ns in order})
        fdb = ["fdb", "add", BLACKHOLE_MAC, "dev", "sink0", "master", "static"]
        _run(["bridge", "-n", sw.netns, *fdb])
        neigh: dict[str, list[str]] = {}
        for link in self._links.values():
            neigh.setdefault(self.netns(link.host), []).append(self._neigh_cmd(link, link.mac))
        _ip_batch(neigh)
        self._log(f"namespaces up: {self.tag}-* ({len(self.hosts)} hosts)")

    @staticmethod
    def _neigh_cmd(link: _Link, mac: str) -> str:
        return f"neigh replace {link.ip} lladdr {mac} nud permanent dev {link.dev}"

    # ------------------------------------------------------------------ processes

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace (``ip netns exec``).

        The process gets PR_SET_PDEATHSIG (when spawned from the main thread), is stopped by
        :meth:`close` and, as a last resort, killed with its namespace.

        Args:
            host: Host name (``a0``, ``h1``, ...).
            argv: The command.
            name: A label for logs (default: ``argv[0]``'s name).
            log_path: File for its stdout and stderr (default: discarded).
            env: Environment (default: this process's).
            stdin: Its stdin (default: /dev/null).
            cwd: Working directory.
        """
        cmd = [*_pdeathsig_prefix(), "ip", "netns", "exec", self.netns(host), *argv]
        fh = log_path.open("ab") if log_path is not None else None
        popen = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=fh if fh is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if fh is not None else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        _register(popen)
        with self._mu:
            self._procs.append(_Proc(host, name or Path(argv[0]).name, popen, fh))
        return popen

    def stop_process(self, popen: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """Stop a process started by :meth:`spawn` (SIGTERM, then SIGKILL) and reap it."""
        terminate(popen, timeout)
        with self._mu:
            for p in self._procs:
                if p.popen is popen and p.log is not None:
                    p.log.close()
                    p.log = None

    def _consul_cmd(self, host: NetnsHost, data: Path, extra: Sequence[str]) -> list[str]:
        assert host.ip is not None
        joins = [f"-retry-join={self.server_ip(s)}" for s in self.servers if s != host.name]
        return [
            str(self.binary),
            "agent",
            "-node",
            host.name,
            "-bind",
            host.ip,
            "-advertise",
            host.ip,
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-data-dir",
            str(data),
            "-retry-interval=1s",
            "-log-level",
            "info",
            *joins,
            *extra,
        ]

    def _start_consul(self) -> None:
        root = self.workdir
        for s in self.servers:
            host = self.hosts[s]
            d = root / s
            (d / "data").mkdir(parents=True, exist_ok=True)
            conf = d / "server.json"
            conf.write_text(json.dumps({"performance": {"raft_multiplier": self.raft_multiplier}}))
            cmd = self._consul_cmd(
                host,
                d / "data",
                [
                    "-server",
                    f"-bootstrap-expect={self.n_servers}",
                    "-client",
                    f"127.0.0.1 {host.ip}",
                    "-config-file",
                    str(conf),
                ],
            )
            self.spawn(s, cmd, name=f"consul-{s}", log_path=d / "consul.log")
        self.wait_for_leader(self.ready_timeout, all_servers=True)
        for k, h in enumerate(self.agents):
            host = self.hosts[h]
            d = root / h
            (d / "data").mkdir(parents=True, exist_ok=True)
            _, agent_ip, _ = self._app_net(k)
            cmd = self._consul_cmd(host, d / "data", ["-client", f"127.0.0.1 {agent_ip}"])
            self.spawn(h, cmd, name=f"consul-{h}", log_path=d / "consul.log")
        deadline = time.monotonic() + self.ready_timeout
        for h in self.agents:
            while not self._agent_ready(h):
                self._check_consul_alive()
                if time.monotonic() > deadline:
                    raise ConsulStartError(f"agent {h} not ready\n{self.log_tails()}")
                time.sleep(0.2)
        self._log(f"consul up: servers {self.servers}, agents {self.agents}")

    def _check_consul_alive(self) -> None:
        with self._mu:
            procs = list(self._procs)
        for p in procs:
            if p.name.startswith("consul-") and p.popen.poll() is not None:
                raise ConsulStartError(
                    f"{p.name} exited with {p.popen.returncode}\n{self.log_tails()}"
                )

    def log_tails(self, max_chars: int = 2500) -> str:
        """The tail of every Consul log (for error messages)."""
        if self._workdir is None:
            return ""
        parts = []
        for name in [*self.servers, *self.agents]:
            path = self._workdir / name / "consul.log"
            with contextlib.suppress(OSError):
                parts.append(
                    f"--- {name}:\n{path.read_bytes()[-max_chars:].decode(errors='replace')}"
                )
        return "\n".join(parts)

    def _agent_ready(self, h: str) -> bool:
        status, body = self.http(h, "/v1/status/leader", timeout=1.0)
        if status != 200 or body.strip() in ('""', ""):
            return False
        status, body = self.http(h, f"/v1/catalog/node/{h}", timeout=1.0)
        return status == 200 and body.strip() not in ("", "null")

    def close(self) -> None:
        """Stop every process, delete every namespace (and so every link), remove the work
        directory. Idempotent; safe after a failed :meth:`start`."""
        with self._mu:
            if self._closed:
                return
            self._closed = True
            procs = list(self._procs)
        _open.discard(self)
        for p in procs:  # SIGKILL is fine: nothing here needs a graceful leave
            if p.popen.poll() is None:
                with contextlib.suppress(OSError):
                    p.popen.send_signal(signal.SIGCONT)
                    p.popen.kill()
        for p in procs:
            terminate(p.popen, timeout=5)
            if p.log is not None:
                p.log.close()
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()
        for ns in reversed(self._made):
            _kill_netns(ns)
        self._made.clear()
        if self._own_workdir and not self._keep_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespaces(self) -> list[str]:
        """The namespaces of this cluster that exist right now (for tests)."""
        return [n for n in _netns_names() if n.startswith(self.tag + "-")]

    # ------------------------------------------------------------------ running code inside

    def call(self, host: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn()`` on a thread that lives in ``host``'s namespace; return its result.

        Sockets ``fn`` opens belong to that namespace (a socket keeps the namespace it was
        made in), so ``fn`` can talk to 127.0.0.1 of that host, or to its neighbours.
        """
        with self._mu:
            if self._closed:
                raise RuntimeError("cluster closed")
            ex = self._executors.get(host)
            if ex is None:
                path = NETNS_DIR / self.netns(host)
                ex = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2,
                    thread_name_prefix=f"netns-{host}",
                    initializer=_setns,
                    initargs=(path,),
                )
                self._executors[host] = ex
        return ex.submit(fn).result(timeout=timeout)

    def http(self, host: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """GET ``http://127.0.0.1:8500<path>`` inside ``host`` (a server or agent host);
        (0, error text) if it cannot be reached."""

        def get() -> tuple[int, str]:
            try:
                return http_get(f"http://127.0.0.1:{HTTP_PORT}{path}", timeout=timeout)
            except (OSError, TimeoutError) as exc:
                return 0, str(exc)

        try:
            return self.call(host, get, timeout=timeout + 10)
        except concurrent.futures.TimeoutError:
            return 0, "timeout"

    def json(self, host: str, path: str, timeout: float = 2.0) -> Any:
        """:meth:`http`, decoded; None unless the answer is 200 with JSON."""
        status, body = self.http(host, path, timeout)
        if status != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    # ------------------------------------------------------------------ leadership

    def _server_by_rpc_addr(self, addr: str) -> str | None:
        ip = addr.rsplit(":", 1)[0]
        for s in self.servers:
            if self.hosts[s].ip == ip:
                return s
        return None

    def leader_views(self) -> dict[str, str | None]:
        """What each server answers to ``/v1/status/leader`` right now (None: no leader)."""
        views: dict[str, str | None] = {}
        for s in self.servers:
            value = self.json(s, "/v1/status/leader", timeout=1.0)
            views[s] = self._server_by_rpc_addr(value) if isinstance(value, str) else None
        return views

    def leader(self) -> str | None:
        """The leader a majority of servers names (and that names itself), or None."""
        views = self.leader_views()
        counts: dict[str, int] = {}
        for v in views.values():
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        for s, n in counts.items():
            if n > self.n_servers // 2 and views.get(s) == s:
                return s
        return None

    def wait_for_leader(self, timeout: float = 60.0, *, all_servers: bool = False) -> str:
        """Wait for a majority leader (``all_servers``: named by every server); return it."""
        deadline = time.monotonic() + timeout
        while True:
            views = self.leader_views()
            lead = self.leader()
            if lead is not None and (not all_servers or all(v == lead for v in views.values())):
                return lead
            self._check_consul_alive()
            if time.monotonic() > deadline:
                raise ConsulStartError(
                    f"no leader after {timeout}s (views {views})\n{self.log_tails()}"
                )
            time.sleep(0.2)

    def consistent(self, path: str, timeout: float = 3.0) -> Any:
        """A ``?consistent`` GET through a server that has a leader (the leader first);
        None if no server could answer."""
        sep = "&" if "?" in path else "?"
        order = [s for s in [self.leader()] if s is not None]
        order += [s for s in self.servers if s not in order]
        for s in order:
            status, body = self.http(s, f"{path}{sep}consistent", timeout)
            if status == 200:
                try:
                    return json.loads(body)
                except ValueError:
                    return None
            if status == 404:
                return []
        return None

    # ------------------------------------------------------------------ cuts

    def _pair_links(self, a: str, b: str) -> list[_Link]:
        out = [self._links[k] for k in ((a, b), (b, a)) if k in self._links]
        if not out:
            raise ValueError(f"{a} and {b} share no link")
        return out

    def _apply(self) -> None:
        """Make the neighbour tables and links match ``self._cuts``."""
        cmds: dict[str, list[str]] = {}
        for (host, peer), link in self._links.items():
            cut = frozenset((host, peer)) in self._cuts.pairs
            mac = BLACKHOLE_MAC if cut else link.mac
            cmds.setdefault(self.netns(host), []).append(self._neigh_cmd(link, mac))
        for name, node in self.hosts.items():
            state = "down" if name in self._cuts.down else "up"
            if node.port is not None:
                cmds.setdefault(self.netns("sw"), []).append(f"link set {node.port} {state}")
            elif node.role == "app":
                agent_ns = self.netns(f"h{node.index}")
                cmds.setdefault(agent_ns, []).append(f"link set app0 {state}")
        _ip_batch(cmds)

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between hosts ``a`` and ``b``, both ways (``drop`` kind)."""
        with self._mu:
            self._pair_links(a, b)
            self._cuts.pairs.add(frozenset((a, b)))
            self._apply()

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every pair of switch hosts that are in different ``groups`` (``drop`` kind).

        Hosts named in no group keep talking to everyone. Application hosts follow their
        agent host (they reach nothing else anyway).
        """
        sets = [{h for h in g if self.hosts[h].port is not None} for g in groups]
        with self._mu:
            for i, g1 in enumerate(sets):
                for g2 in sets[i + 1 :]:
                    for a in g1:
                        for b in g2:
                            if a != b:
                                self._cuts.pairs.add(frozenset((a, b)))
            self._apply()

    def isolate(self, host: str, how: CutKind = "drop") -> None:
        """Cut ``host`` off from everyone.

        ``drop``: from every other switch host (an app host: from its agent). ``link``: its
        link is set down (switch port, or the agent side of an app host's link).
        """
        with self._mu:
            h = self.hosts[host]
            if how == "link":
                if h.role == "switch":
                    raise ValueError("the switch has no link of its own")
                self._cuts.down.add(host)
            elif h.role == "app":
                self._cuts.pairs.add(frozenset((host, f"h{h.index}")))
            else:
                for other, o in self.hosts.items():
                    if other != host and o.port is not None:
                        self._cuts.pairs.add(frozenset((host, other)))
            self._apply()

    def cut_app(self, k: int, how: CutKind = "drop") -> None:
        """Cut application host ``aK`` from its agent ``hK``."""
        self.isolate(f"a{k}", how)

    def cut_agent(self, k: int) -> None:
        """Cut agent host ``hK`` from every server (it still reaches the other agents)."""
        with self._mu:
            for s in self.servers:
                self._cuts.pairs.add(frozenset((f"h{k}", s)))
            self._apply()

    def set_link(self, host: str, up: bool) -> None:
        """Set ``host``'s link up or down (``link`` kind)."""
        with self._mu:
            if up:
                self._cuts.down.discard(host)
            else:
                self._cuts.down.add(host)
            self._apply()

    def flap(
        self,
        host: str,
        periods: Sequence[tuple[float, float]],
        stop: threading.Event | None = None,
    ) -> int:
        """Flap ``host``'s link: for each ``(down, up)`` in ``periods``, down for ``down``
        seconds, then up for ``up``. Returns the number of flaps done (``stop`` ends early)."""
        done = 0
        for down, up in periods:
            if stop is not None and stop.is_set():
                break
            self.set_link(host, False)
            (stop.wait if stop is not None else time.sleep)(down)
            self.set_link(host, True)
            done += 1
            (stop.wait if stop is not None else time.sleep)(up)
        return done

    def heal(self) -> None:
        """Undo every cut: true MACs back, every link up."""
        with self._mu:
            self._cuts = _CutState()
            self._apply()

    def active_cuts(self) -> dict[str, Any]:
        """The cuts in force: ``{"pairs": [[a, b], ...], "down": [host, ...]}``."""
        with self._mu:
            return {
                "pairs": sorted(sorted(p) for p in self._cuts.pairs),
                "down": sorted(self._cuts.down),
            }

    def can_reach(self, src: str, dst_ip: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from ``src``'s namespace to ``dst_ip:port`` succeeds."""

        def probe() -> bool:
            try:
                with socket.create_connection((dst_ip, port), timeout=timeout):
                    return True
            except OSError:
                return False

        return self.call(src, probe, timeout=timeout + 10)

    def __repr__(self) -> str:
        return f"<NetnsCluster {self.tag} servers={self.n_servers} agents={self.n_agents}>"
