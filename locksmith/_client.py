"""The typed Consul client: :class:`Consul`, the entry point.

``consul.sessions`` (:class:`Sessions`) covers ``/v1/session/*``; ``consul.kv``
(:class:`KVStore`) the KV and transaction calls that locks, recipes and the CLI use. The
pieces live in their own modules: the answer types in ``_models``, the endpoint groups in
``_endpoints``, the error mapping in ``_error_map``, the HTTP transport in ``_transport``
and python-consul2 (imported only when :attr:`Consul.consul2` is first used) in
``_adapter``. The names other modules import from here are re-exported.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from locksmith._config import ConnectionConfig
from locksmith._endpoints import (
    KVStore,
    Sessions,
    agent_node_exchange,
    drive,
    leader_exchange,
)
from locksmith._models import (
    KVEntry,
    QueryMeta,
    QueryResult,
    ServiceCheck,
    Session,
    TxnOutcome,
    next_index,
)
from locksmith._transport import Transport

__all__ = [
    "Consul",
    "KVEntry",
    "KVStore",
    "QueryMeta",
    "QueryResult",
    "ServiceCheck",
    "Session",
    "Sessions",
    "TxnOutcome",
    "next_index",
]


class Consul:
    """A Consul HTTP API client: ``sessions`` and ``kv``.

    Settings come from the arguments first, then Consul's environment variables, then
    defaults (see :class:`ConnectionConfig`). Constructing it does no I/O (a token file
    aside): connections are opened, and TLS files loaded, on first use; one per thread.

    Args:
        address: ``host:port`` or ``http(s)://host:port`` (``CONSUL_HTTP_ADDR``).
        token: ACL token (``CONSUL_HTTP_TOKEN``); sent only in the X-Consul-Token header.
        token_file: File holding the token (``CONSUL_HTTP_TOKEN_FILE``).
        datacenter: Default datacenter for requests.
        scheme: ``http`` or ``https`` (``CONSUL_HTTP_SSL``).
        ca_file: CA bundle (``CONSUL_CACERT``).
        ca_path: CA directory (``CONSUL_CAPATH``).
        client_cert: Client certificate (``CONSUL_CLIENT_CERT``).
        client_key: Client key (``CONSUL_CLIENT_KEY``).
        verify: Verify the server certificate (``CONSUL_HTTP_SSL_VERIFY``), default True.
        tls_server_name: Name to verify the server certificate against
            (``CONSUL_TLS_SERVER_NAME``).
        timeout: Seconds allowed for a non-blocking request (blocking queries get their
            wait on top).

    Raises:
        ConfigurationError: Malformed settings or an unreadable token file. (Unreadable
            CA or client-certificate files raise it on the first request.)

    Every request may raise :class:`PermissionDenied` (HTTP 403: the token lacks a rule;
    the message names the operation, the key or session, and the rule) or its subclass
    :class:`ACLNotFound` (Consul does not know the token), :class:`TLSError` (untrusted or
    mismatched server certificate, client certificate refused) and
    :class:`ConsulUnavailable`. No message, ``repr`` or log line contains the token.

    ACL caveat: Consul hides what a token may not read instead of refusing it:
    ``sessions.info`` answers None and ``sessions.list``/``node`` leave sessions out, also
    for live sessions; KV reads of keys without ``key:read`` are refused (403).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        datacenter: str | None = None,
        scheme: str | None = None,
        ca_file: str | None = None,
        ca_path: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        verify: bool | None = None,
        tls_server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.config = ConnectionConfig.resolve(
            address,
            token=token,
            token_file=token_file,
            datacenter=datacenter,
            scheme=scheme,
            ca_file=ca_file,
            ca_path=ca_path,
            client_cert=client_cert,
            client_key=client_key,
            verify=verify,
            tls_server_name=tls_server_name,
            timeout=timeout,
        )
        self._transport = Transport(self.config)
        self.sessions = Sessions(self._transport, self.config)
        self.kv = KVStore(self._transport, self.config)
        self._consul2: Any = None
        self._consul2_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Consul {self.config.url} dc={self.config.datacenter or 'default'}>"

    @property
    def consul2(self) -> Any:
        """python-consul2's client object, sharing this client's connections and settings.

        An escape hatch for endpoints locksmith does not wrap; its wrappers keep
        python-consul2's conventions (string indexes) and exceptions. python-consul2 is
        imported on first access, not by ``import locksmith``.
        """
        with self._consul2_lock:
            if self._consul2 is None:
                # Deferred: python-consul2 pulls in requests and urllib3.
                from locksmith._adapter import make_consul2  # noqa: PLC0415

                self._consul2 = make_consul2(self._transport)
            return self._consul2

    @property
    def open_connections(self) -> int:
        """HTTP connections this client holds open (one per thread that used it)."""
        return self._transport.open_connections

    def leader(self) -> str:
        """The Raft leader's address ("" when there is none): a cheap liveness probe."""
        return drive(self._transport, leader_exchange())

    def agent_node(self) -> str:
        """The node name of the agent this client talks to."""
        return drive(self._transport, agent_node_exchange())

    def _interrupt(self, ident: int) -> bool:
        """Cut short the blocking request thread ``ident`` waits in (package-internal)."""
        return self._transport.interrupt(ident)

    def close(self) -> None:
        """Close the client's connections."""
        self._transport.close()

    def __enter__(self) -> Consul:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
