"""A real ``consul agent`` process on free loopback ports, for tests.

:class:`ConsulAgent` runs a dev agent (``-dev``, in-memory) by default; :class:`ConsulCluster`
reuses it for server nodes (``dev=False`` with fixed ports and a persistent work dir). Every
process started here is tracked in a module registry: an ``atexit`` hook kills whatever a test
run left behind, and on Linux the agent also gets ``PR_SET_PDEATHSIG`` (through ``setpriv``) so it
dies with the interpreter even when that is killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._binary import find_consul

__all__ = ["AgentPorts", "ConsulAgent", "ConsulStartError", "pick_ports"]

_ADDR_IN_USE = "address already in use"


class ConsulStartError(RuntimeError):
    """A consul agent did not start or did not become ready."""


@dataclass(frozen=True)
class AgentPorts:
    """The ports one agent listens on (``https`` is None unless requested)."""

    http: int
    serf_lan: int
    serf_wan: int
    server: int
    https: int | None = None


# --------------------------------------------------------------------------- process registry

_live: dict[int, subprocess.Popen[bytes]] = {}
_temp_dirs: set[Path] = set()
_live_lock = threading.Lock()


def track_temp_dir(path: Path) -> Path:
    """Have the ``atexit`` safety net remove *path* unless :func:`remove_temp_dir` did."""
    with _live_lock:
        _temp_dirs.add(path)
    return path


def remove_temp_dir(path: Path) -> None:
    """Remove a directory registered with :func:`track_temp_dir`."""
    shutil.rmtree(path, ignore_errors=True)
    with _live_lock:
        _temp_dirs.discard(path)


def _register(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live[proc.pid] = proc


def _unregister(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live.pop(proc.pid, None)


def _kill_all_at_exit() -> None:
    """Safety net: SIGCONT + SIGKILL and reap every consul process still tracked; rm temp dirs."""
    with _live_lock:
        procs = list(_live.values())
        dirs = list(_temp_dirs)
        _live.clear()
        _temp_dirs.clear()
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            proc.wait(timeout=5)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_kill_all_at_exit)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop *proc*: SIGCONT (in case it is stopped), SIGTERM, SIGKILL after *timeout*; reap it."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(timeout=10)
    _unregister(proc)


# --------------------------------------------------------------------------- ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_free(host: str, port: int) -> bool:
    """True if *port* can be bound on *host* for both TCP and UDP (serf needs both)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def pick_ports(count: int, hosts: Sequence[str] = ("127.0.0.1",)) -> list[int]:
    """Pick *count* distinct ports free (TCP and UDP) on every one of *hosts*.

    Ports come from below the kernel's ephemeral range so outgoing connections do not take
    them between picking and binding; a race with another process is still possible, which is
    why agents retry with fresh ports when a bind fails.
    """
    low_eph, _ = _ephemeral_range()
    low, high = (10000, low_eph - 1) if low_eph > 12000 else (20000, 30000)
    chosen: list[int] = []
    rng = random.Random()
    for _ in range(2000):
        port = rng.randint(low, high)
        if port in chosen:
            continue
        if all(_port_free(h, port) for h in hosts):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise ConsulStartError(f"could not find {count} free ports on {list(hosts)}")


# --------------------------------------------------------------------------- helpers


def http_get(url: str, timeout: float = 2.0, token: str | None = None) -> tuple[int, str]:
    """GET *url* (with *token* if given); return (status, body). Raises OSError if unreachable."""
    headers = {"X-Consul-Token": token} if token else {}
    req = urllib.request.Request(url, method="GET", headers=headers)  # noqa: S310 - our URLs
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode("utf-8", "replace")


def node_registered(http_url: str, node: str, token: str | None, timeout: float = 2.0) -> bool:
    """Whether *node* is in the catalog yet (sessions on it fail with "Missing node registration"
    until it is, which can be a few milliseconds after a leader is known)."""
    try:
        status, body = http_get(f"{http_url}/v1/catalog/node/{node}", timeout=timeout, token=token)
    except (OSError, TimeoutError):
        return False
    return status == 200 and body.strip() not in ("", "null")


def leader_of(http_url: str, timeout: float = 2.0) -> str:
    """Return ``GET /v1/status/leader`` of an agent ("" if none known or unreachable)."""
    try:
        status, body = http_get(f"{http_url}/v1/status/leader", timeout=timeout)
    except (OSError, TimeoutError):
        return ""
    if status != 200:
        return ""
    try:
        value = json.loads(body)
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""


_setpriv_ok: bool | None = None


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` where available and safe (main thread only, Linux)."""
    global _setpriv_ok  # noqa: PLW0603 - cached probe
    if threading.current_thread() is not threading.main_thread():
        return []  # PDEATHSIG fires when the *thread* that forked exits
    if _setpriv_ok is None:
        exe = shutil.which("setpriv")
        _setpriv_ok = False
        if exe:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                out = subprocess.run(
                    [exe, "--help"], capture_output=True, text=True, timeout=5, check=False
                )
                _setpriv_ok = "--pdeathsig" in out.stdout
    return ["setpriv", "--pdeathsig", "KILL", "--"] if _setpriv_ok else []


def _render_config(config: str | Mapping[str, Any]) -> tuple[str, str]:
    """Return (file suffix, text) for a config given as HCL/JSON text or a mapping."""
    if isinstance(config, Mapping):
        return ".json", json.dumps(config, indent=2)
    return (".json" if config.lstrip().startswith("{") else ".hcl"), config


# --------------------------------------------------------------------------- the agent


class ConsulAgent:
    """One ``consul agent`` process on loopback ports it picks itself.

    Args:
        node_name: ``-node`` name.
        binary: The consul binary; defaults to :func:`find_consul`.
        bind: Address for ``-bind``, ``-client`` and ``-advertise``.
        extra_config: Extra config (HCL or JSON text, or a mapping written as JSON), or a
            sequence of those; each becomes a ``-config-file``.
        extra_args: Extra command-line arguments, appended last.
        https_port: True to pick an HTTPS port (or an int to use that one); the caller must
            supply the TLS settings (``cert_file``, ``key_file``, ...) in *extra_config*.
        acl_master_token: Enables ACLs with ``default_policy = "deny"`` and this master token.
        dev: Run with ``-dev`` (in-memory single server). Cluster nodes pass False.
        ports: Fixed ports (no retry on conflict); default: picked per start.
        workdir: Directory for logs/config/data, kept at stop; default: a temp dir that
            :meth:`stop` removes.
        ready_timeout: Seconds :meth:`start` waits for a leader.
        log_level: ``-log-level`` (``debug`` logs every HTTP request).
    """

    def __init__(
        self,
        *,
        node_name: str = "locksmith-dev",
        binary: Path | str | None = None,
        bind: str = "127.0.0.1",
        extra_config: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None = None,
        extra_args: Sequence[str] = (),
        https_port: bool | int = False,
        acl_master_token: str | None = None,
        dev: bool = True,
        ports: AgentPorts | None = None,
        workdir: Path | None = None,
        ready_timeout: float = 30.0,
        log_level: str = "info",
    ) -> None:
        self.log_level = log_level
        self.node_name = node_name
        self.bind = bind
        self.dev = dev
        self.acl_master_token = acl_master_token
        self.ready_timeout = ready_timeout
        self._binary = Path(binary) if binary is not None else None
        if extra_config is None:
            self._configs: list[str | Mapping[str, Any]] = []
        elif isinstance(extra_config, str | Mapping):
            self._configs = [extra_config]
        else:
            self._configs = list(extra_config)
        self._extra_args = list(extra_args)
        self._https = https_port
        self._fixed_ports = ports
        self.ports: AgentPorts | None = ports
        self._own_workdir = workdir is None
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None

    # ------------------------------------------------------------------ properties

    @property
    def binary(self) -> Path:
        """The consul binary used (resolved on first use)."""
        if self._binary is None:
            self._binary = find_consul()
        return self._binary

    def _ports(self) -> AgentPorts:
        if self.ports is None:
            raise ConsulStartError("agent not started")
        return self.ports

    @property
    def http_addr(self) -> str:
        """``"IP:PORT"`` of the HTTP API."""
        return f"{self.bind}:{self._ports().http}"

    @property
    def http_url(self) -> str:
        """``http://IP:PORT`` of the HTTP API."""
        return f"http://{self.http_addr}"

    @property
    def https_addr(self) -> str | None:
        """``"IP:PORT"`` of the HTTPS API, or None if not enabled."""
        https = self._ports().https
        return None if https is None else f"{self.bind}:{https}"

    @property
    def https_url(self) -> str | None:
        """``https://IP:PORT`` of the HTTPS API, or None if not enabled."""
        addr = self.https_addr
        return None if addr is None else f"https://{addr}"

    @property
    def server_addr(self) -> str:
        """``"IP:PORT"`` of the server RPC port (what ``/v1/status/leader`` reports)."""
        return f"{self.bind}:{self._ports().server}"

    @property
    def pid(self) -> int | None:
        """PID of the consul process, or None if never started."""
        return None if self._proc is None else self._proc.pid

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The underlying process object."""
        return self._proc

    @property
    def workdir(self) -> Path:
        """Directory holding the log, generated config and (non-dev) data."""
        if self._workdir is None:
            raise ConsulStartError("agent not started")
        return self._workdir

    @property
    def data_dir(self) -> Path:
        """``-data-dir`` of the agent."""
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        """File receiving the agent's stdout and stderr."""
        return self.workdir / "consul.log"

    def log_tail(self, max_chars: int = 6000) -> str:
        """Return the last *max_chars* characters of the agent's log ("" if none)."""
        try:
            data = self.log_path.read_bytes()
        except (OSError, ConsulStartError):
            return ""
        return data[-max_chars:].decode("utf-8", "replace")

    def is_running(self) -> bool:
        """True while the process exists (also when SIGSTOPped)."""
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        """The full consul command line for the current ports and work dir."""
        ports = self._ports()
        cmd = [
            str(self.binary),
            "agent",
            "-node",
            self.node_name,
            "-bind",
            self.bind,
            "-client",
            self.bind,
            "-advertise",
            self.bind,
            "-http-port",
            str(ports.http),
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-serf-lan-port",
            str(ports.serf_lan),
            "-serf-wan-port",
            str(ports.serf_wan),
            "-server-port",
            str(ports.server),
            "-data-dir",
            str(self.data_dir),
            "-log-level",
            self.log_level,
        ]
        if self.dev:
            cmd.insert(2, "-dev")
        generated: dict[str, Any] = {}
        if ports.https is not None:
            generated["ports"] = {"https": ports.https}
        if self.acl_master_token is not None:
            generated["acl"] = {
                "enabled": True,
                "default_policy": "deny",
                "enable_token_persistence": False,
                "tokens": {"master": self.acl_master_token, "agent": self.acl_master_token},
            }
        configs: list[str | Mapping[str, Any]] = [generated] if generated else []
        configs += self._configs
        for i, config in enumerate(configs):
            suffix, text = _render_config(config)
            path = self.workdir / f"extra-{i}{suffix}"
            path.write_text(text)
            cmd += ["-config-file", str(path)]
        return cmd + self._extra_args

    def _choose_ports(self) -> AgentPorts:
        if self._fixed_ports is not None:
            return self._fixed_ports
        n = 5 if self._https else 4
        picked = pick_ports(n, (self.bind,))
        https: int | None = None
        if isinstance(self._https, int) and not isinstance(self._https, bool):
            https = self._https
        elif self._https:
            https = picked[4]
        return AgentPorts(picked[0], picked[1], picked[2], picked[3], https)

    def start(self, *, wait: bool = True, attempts: int = 5) -> Self:
        """Start the agent and (by default) wait until it reports a leader.

        Args:
            wait: Wait for readiness (``GET /v1/status/leader`` non-empty).
            attempts: Tries with fresh ports when a port turns out to be taken.

        Raises:
            ConsulStartError: With the log tail, if it does not start or become ready.
        """
        if self.is_running():
            raise ConsulStartError(f"agent {self.node_name} already running (pid {self.pid})")
        if self._workdir is None:
            self._workdir = track_temp_dir(
                Path(tempfile.mkdtemp(prefix=f"consul-{self.node_name}-"))
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.ports = self._choose_ports()
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(self.ready_timeout)
                return self
            except ConsulStartError:
                in_use = _ADDR_IN_USE in self.log_tail(20000).lower()
                self._halt()
                if not in_use or self._fixed_ports is not None or attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        cmd = _pdeathsig_prefix() + self.command()
        self._close_log()
        self._log_fh = self.log_path.open("ab")
        self._log_fh.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        self._log_fh.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        _register(self._proc)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the agent reports a leader and its own node is in the catalog.

        Raises:
            ConsulStartError: If the process exits or *timeout* passes first.
        """
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        url = self.http_url
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ConsulStartError(
                    f"consul agent {self.node_name} exited with {code} before it was ready; "
                    f"log tail:\n{self.log_tail()}"
                )
            if leader_of(url, timeout=1.0) and node_registered(
                url, self.node_name, self.acl_master_token, timeout=1.0
            ):
                return
            if time.monotonic() > deadline:
                raise ConsulStartError(
                    f"consul agent {self.node_name} at {self.http_addr} not ready after "
                    f"{timeout}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _halt(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            terminate(self._proc, timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def send_signal(self, sig: int) -> None:
        """Send *sig* to the process (no-op if it is not running)."""
        if self.is_running() and self._proc is not None:
            self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the process and reap it (keeps the work dir for a restart)."""
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.wait(timeout=10)
            _unregister(self._proc)
        self._close_log()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the agent (SIGTERM, SIGKILL after *timeout*), reap it, remove its temp dir."""
        self._halt(timeout)
        if self._own_workdir and self._workdir is not None:
            remove_temp_dir(self._workdir)
            self._workdir = None

    def __enter__(self) -> Self:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        addr = self.http_addr if self.ports else "-"
        return f"<ConsulAgent {self.node_name} {addr} pid={self.pid}>"
