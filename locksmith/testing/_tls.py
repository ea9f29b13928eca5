"""TLS material made by Consul itself, and a dev agent serving HTTPS with client certificates.

:func:`make_tls_material` runs ``consul tls ca create`` and ``consul tls cert create -server`` /
``-client`` in a directory (Consul's own certificate tooling, so the certificates look exactly
like a production setup made the documented way). :class:`TLSConsulAgent` is a dev agent whose
HTTPS port requires a client certificate (``verify_incoming``).

The server certificate names ``server.<dc>.consul``, ``localhost`` and ``127.0.0.1``; the client
certificate ``client.<dc>.consul``, ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._agent import ConsulAgent, ConsulStartError, remove_temp_dir, track_temp_dir
from ._binary import find_consul

__all__ = ["TLSConsulAgent", "TLSMaterial", "make_tls_material"]


@dataclass(frozen=True)
class TLSMaterial:
    """Paths of a CA and the certificates it signed (all PEM).

    Attributes:
        directory: Where the files are.
        ca_file: The CA certificate (what clients trust: ``CONSUL_CACERT``).
        ca_path: A directory holding only the CA certificate (``CONSUL_CAPATH``).
        ca_key: The CA's private key.
        server_cert: ``server.<dc>.consul`` certificate for the agent.
        server_key: Its key.
        client_cert: ``client.<dc>.consul`` certificate (``CONSUL_CLIENT_CERT``).
        client_key: Its key (``CONSUL_CLIENT_KEY``).
        server_name: The DNS name in the server certificate, ``server.<dc>.consul``.
    """

    directory: Path
    ca_file: Path
    ca_path: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_name: str


def _run(binary: Path, args: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(
        [str(binary), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ConsulStartError(
            f"`consul {' '.join(args)}` failed ({proc.returncode}): {proc.stderr or proc.stdout}"
        )


def make_tls_material(
    directory: Path | str, *, binary: Path | str | None = None, dc: str = "dc1"
) -> TLSMaterial:
    """Make a CA, a server and a client certificate with ``consul tls``.

    Args:
        directory: An empty (or new) directory for the files.
        binary: The consul binary (default: :func:`find_consul`).
        dc: Datacenter named in the certificates.

    Returns:
        The paths.

    Raises:
        ConsulStartError: A ``consul tls`` command failed.
    """
    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    exe = Path(binary) if binary is not None else find_consul()
    _run(exe, ["tls", "ca", "create", "-days", "365"], where)
    _run(exe, ["tls", "cert", "create", "-server", "-dc", dc, "-days", "365"], where)
    _run(exe, ["tls", "cert", "create", "-client", "-dc", dc, "-days", "365"], where)
    ca_dir = where / "ca.d"
    ca_dir.mkdir(exist_ok=True)
    shutil.copyfile(where / "consul-agent-ca.pem", ca_dir / "consul-agent-ca.pem")
    for name in os.listdir(where):
        if name.endswith("-key.pem"):
            (where / name).chmod(0o600)
    return TLSMaterial(
        directory=where,
        ca_file=where / "consul-agent-ca.pem",
        ca_path=ca_dir,
        ca_key=where / "consul-agent-ca-key.pem",
        server_cert=where / f"{dc}-server-consul-0.pem",
        server_key=where / f"{dc}-server-consul-0-key.pem",
        client_cert=where / f"{dc}-client-consul-0.pem",
        client_key=where / f"{dc}-client-consul-0-key.pem",
        server_name=f"server.{dc}.consul",
    )


class TLSConsulAgent(ConsulAgent):
    """A dev agent that also serves HTTPS and requires a client certificate there.

    The certificates are made at :meth:`start` with :func:`make_tls_material` in a temporary
    directory removed at :meth:`stop`. The plain HTTP port stays open (the harness checks
    readiness there); point clients at :attr:`https_addr`.

    Args:
        verify_incoming: Require a client certificate signed by the CA (default True).
        **kwargs: Further :class:`ConsulAgent` arguments (``extra_config`` comes after the
            TLS settings, so it can override them).
    """

    def __init__(self, *, verify_incoming: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("node_name", "locksmith-tls")
        kwargs["https_port"] = kwargs.get("https_port") or True
        super().__init__(**kwargs)
        self.verify_incoming = verify_incoming
        self._user_configs = list(self._configs)
        self._tls: TLSMaterial | None = None
        self._tls_dir: Path | None = None

    @property
    def tls(self) -> TLSMaterial:
        """The CA and certificates (available once started)."""
        if self._tls is None:
            raise ConsulStartError("TLS agent not started")
        return self._tls

    @property
    def ca_file(self) -> str:
        """The CA certificate clients must trust."""
        return str(self.tls.ca_file)

    @property
    def ca_path(self) -> str:
        """A directory holding only the CA certificate."""
        return str(self.tls.ca_path)

    @property
    def client_cert(self) -> str:
        """A client certificate the agent accepts."""
        return str(self.tls.client_cert)

    @property
    def client_key(self) -> str:
        """The client certificate's key."""
        return str(self.tls.client_key)

    @property
    def server_name(self) -> str:
        """The DNS name in the agent's certificate (``server.dc1.consul``)."""
        return self.tls.server_name

    def start(self, *, wait: bool = True, attempts: int = 5) -> TLSConsulAgent:
        """Make the certificates (first start only), then start the agent."""
        if self._tls is None:
            self._tls_dir = track_temp_dir(Path(tempfile.mkdtemp(prefix="consul-tls-")))
            self._tls = make_tls_material(self._tls_dir, binary=self.binary)
            tls = self._tls
            settings = {
                "ca_file": str(tls.ca_file),
                "cert_file": str(tls.server_cert),
                "key_file": str(tls.server_key),
                "verify_incoming": self.verify_incoming,
                "verify_incoming_https": self.verify_incoming,
                "verify_outgoing": True,
            }
            self._configs = [settings, *self._user_configs]
        super().start(wait=wait, attempts=attempts)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the agent and remove its certificates."""
        try:
            super().stop(timeout)
        finally:
            if self._tls_dir is not None:
                remove_temp_dir(self._tls_dir)
                self._tls_dir = None
                self._tls = None
                self._configs = list(self._user_configs)
