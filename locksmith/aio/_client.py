"""The async Consul client: :class:`AsyncConsul`, the twin of :class:`~locksmith.Consul`."""

from __future__ import annotations

import os
from types import TracebackType

from locksmith._config import ConnectionConfig
from locksmith._endpoints import agent_node_exchange, leader_exchange
from locksmith.aio._endpoints import AsyncKVStore, AsyncSessions, drive
from locksmith.aio._transport import DEFAULT_MAX_CONNECTIONS, AsyncTransport

__all__ = ["AsyncConsul"]


class AsyncConsul:
    """An async Consul HTTP API client: ``sessions`` and ``kv``, on asyncio or trio (anyio).

    The same settings, resolved the same way, as :class:`~locksmith.Consul` (arguments,
    then Consul's environment variables, then defaults: see :class:`ConnectionConfig`);
    ``consul.sessions`` and ``consul.kv`` have an ``async def`` twin of every sync method
    with the same name, arguments and result (no ``cancel=``: cancel the task or an
    enclosing cancel scope instead). Constructing it does no I/O (a token file aside).

    Requests share a pool of at most ``max_connections`` keep-alive connections; blocking
    queries (reads with ``index``) may hold all of them but one, so that short requests
    (renewals, acquires) always get through. A request cancelled at any point drops its
    connection, never leaving it in the pool half-used. A client belongs to one event loop.

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
        timeout: Seconds allowed for a non-blocking request, waiting for a free connection
            included (blocking queries get their wait on top).
        max_connections: The most connections open at once (default 4, at least 2).

    Raises:
        ConfigurationError: Malformed settings or an unreadable token file. (Unreadable
            CA or client-certificate files raise it on the first request.)

    Requests raise what the sync client's raise: :class:`PermissionDenied` /
    :class:`ACLNotFound`, :class:`SessionNotFound`, :class:`BadRequest`,
    :class:`TLSError` and :class:`ConsulUnavailable` (also for a timeout, and for requests
    cut short by :meth:`aclose`). No message, ``repr`` or log line contains the token.
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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
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
        self._transport = AsyncTransport(self.config, max_connections=max_connections)
        self.sessions = AsyncSessions(self._transport, self.config)
        self.kv = AsyncKVStore(self._transport, self.config)

    def __repr__(self) -> str:
        return f"<AsyncConsul {self.config.url} dc={self.config.datacenter or 'default'}>"

    @property
    def max_connections(self) -> int:
        """The most HTTP connections this client opens at once."""
        return self._transport.max_connections

    @property
    def open_connections(self) -> int:
        """HTTP connections this client holds open right now (idle or in use)."""
        return self._transport.open_connections

    async def leader(self) -> str:
        """The Raft leader's address ("" when there is none): a cheap liveness probe."""
        return await drive(self._transport, leader_exchange())

    async def agent_node(self) -> str:
        """The node name of the agent this client talks to."""
        return await drive(self._transport, agent_node_exchange())

    async def aclose(self) -> None:
        """Close the client's connections; requests in flight raise ConsulUnavailable."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncConsul:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
