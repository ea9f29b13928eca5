"""Consul in a Docker container (testcontainers), for machines without a consul binary.

:func:`docker_available` asks the engine testcontainers would use (``$DOCKER_HOST`` or the
default unix socket) for ``/_ping`` over a raw socket with a short timeout, so it answers
quickly and imports nothing heavy. ``testcontainers`` is imported only when a container starts.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from types import TracebackType
from typing import Any, Self

from ._agent import ConsulStartError, leader_of

__all__ = ["DEFAULT_IMAGE", "DockerConsul", "docker_available"]

DEFAULT_IMAGE = os.environ.get("LOCKSMITH_CONSUL_IMAGE", "hashicorp/consul:1.18")
"""Image :class:`DockerConsul` runs unless told otherwise (``$LOCKSMITH_CONSUL_IMAGE``)."""
_DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def _ping(sock: socket.socket, host_header: str) -> str:
    sock.sendall(f"GET /_ping HTTP/1.0\r\nHost: {host_header}\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
        if len(data) > 65536:
            break
    return data.decode("latin-1")


def docker_available(timeout: float = 2.0) -> tuple[bool, str]:
    """Tell whether a Docker engine answers, without importing the Docker SDK.

    Args:
        timeout: Seconds for connecting and reading.

    Returns:
        ``(True, "<endpoint>")`` if the engine answered ``/_ping`` with 200, else
        ``(False, reason)``.
    """
    endpoint = os.environ.get("DOCKER_HOST") or _DEFAULT_SOCKET
    parsed = urllib.parse.urlparse(endpoint)
    try:
        if parsed.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
                reply = _ping(sock, "docker")
        elif parsed.scheme in ("tcp", "http"):
            if os.environ.get("DOCKER_TLS_VERIFY"):
                return False, f"{endpoint} needs TLS; this check only speaks plain HTTP"
            host, port = parsed.hostname or "localhost", parsed.port or 2375
            with socket.create_connection((host, port), timeout=timeout) as sock:
                reply = _ping(sock, f"{host}:{port}")
        else:
            return False, f"unsupported DOCKER_HOST scheme in {endpoint!r}"
    except OSError as exc:
        return False, f"cannot connect to {endpoint}: {exc}"
    status_line = reply.split("\r\n", 1)[0]
    if " 200 " not in f"{status_line} ":
        return False, f"{endpoint} answered {status_line!r} to /_ping"
    return True, endpoint


class DockerConsul:
    """A dev Consul agent in a container, with the same ``http_addr`` API as ConsulAgent.

    Args:
        image: Image to run.
        extra_args: Extra arguments after ``agent -dev -client 0.0.0.0``.
        ready_timeout: Seconds to wait for a leader.
    """

    HTTP_PORT = 8500

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        *,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.image = image
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self._container: Any = None
        self._addr: str | None = None

    @property
    def http_addr(self) -> str:
        """``"HOST:PORT"`` of the container's HTTP API as mapped on this machine."""
        if self._addr is None:
            raise ConsulStartError("container not started")
        return self._addr

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT`` of the HTTP API."""
        return f"http://{self.http_addr}"

    def start(self) -> Self:
        """Start the container and wait for a leader.

        Raises:
            ConsulStartError: If Docker is unavailable or the agent is not ready in time.
        """
        ok, why = docker_available()
        if not ok:
            raise ConsulStartError(f"no Docker engine answers: {why}")
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415 - lazy

        cmd = ["agent", "-dev", "-client", "0.0.0.0", *self.extra_args]  # noqa: S104
        container = DockerContainer(self.image).with_command(cmd)
        container = container.with_exposed_ports(self.HTTP_PORT)
        container.start()
        self._container = container
        host = container.get_container_host_ip()
        port = container.get_exposed_port(self.HTTP_PORT)
        self._addr = f"{host}:{port}"
        deadline = time.monotonic() + self.ready_timeout
        while not leader_of(self.http_url, timeout=1.0):
            if time.monotonic() > deadline:
                logs = self.logs()
                self.stop()
                raise ConsulStartError(f"consul container not ready; logs:\n{logs}")
            time.sleep(0.2)
        return self

    def logs(self) -> str:
        """The container's stdout and stderr so far."""
        if self._container is None:
            return ""
        out, err = self._container.get_logs()
        return f"{out.decode(errors='replace')}{err.decode(errors='replace')}"

    def stop(self) -> None:
        """Stop and remove the container."""
        if self._container is not None:
            self._container.stop()
            self._container = None

    def __enter__(self) -> Self:
        if self._container is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
