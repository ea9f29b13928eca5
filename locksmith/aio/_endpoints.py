"""The endpoint groups of :class:`~locksmith.aio.AsyncConsul`: async twins of the sync ones.

Each method has the name, arguments (less ``cancel=``: cancel scopes do that) and result
of its sync twin in ``locksmith._endpoints``, and runs the very same sans-IO exchange
(validation, request, parsing); only the driver differs: :func:`drive` awaits
:class:`~locksmith.aio._transport.AsyncTransport`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

from locksmith._config import ConnectionConfig
from locksmith._durations import Duration
from locksmith._endpoints import Exchange, KVOps, SessionOps
from locksmith._error_map import _error_for
from locksmith._exceptions import ConsulError
from locksmith._models import KVEntry, QueryResult, ServiceCheck, Session, TxnOutcome
from locksmith._validate import Behavior, Consistency
from locksmith.aio._transport import AsyncTransport

__all__ = ["AsyncKVStore", "AsyncSessions", "drive"]

T = TypeVar("T")


async def drive(transport: AsyncTransport, exchange: Exchange[T]) -> T:
    """Carry out an exchange on the async transport and return its result.

    Raises:
        ConsulError: A transport error (stamped with the request's operation and resource)
            or a non-success answer mapped by ``locksmith._error_map``.
    """
    request = transport.request
    req = next(exchange)
    while True:
        try:
            resp = await request(
                req.method,
                req.path,
                params=req.params,
                body=req.body,
                timeout=req.timeout,
                idempotent=req.idempotent,
                blocking=req.blocking,
            )
        except ConsulError as exc:
            exc.operation, exc.resource = req.operation, req.resource
            raise
        if resp.status not in req.ok:
            raise _error_for(resp, req.operation, req.resource)
        try:
            req = exchange.send(resp)
        except StopIteration as stop:
            return cast(T, stop.value)


class _AsyncApi:
    """Shared plumbing of the async endpoint groups: the transport and the settings."""

    def __init__(self, transport: AsyncTransport, config: ConnectionConfig) -> None:
        self._transport = transport
        self._config = config


class AsyncSessions(_AsyncApi):
    """The ``/v1/session`` endpoints, async: the twins of :class:`~locksmith.Sessions`."""

    def __init__(self, transport: AsyncTransport, config: ConnectionConfig) -> None:
        super().__init__(transport, config)
        self._ops = SessionOps(config)

    async def create(
        self,
        *,
        name: str | None = None,
        node: str | None = None,
        checks: Iterable[str] | None = None,
        node_checks: Iterable[str] | None = None,
        service_checks: Iterable[str | ServiceCheck] | None = None,
        lock_delay: Duration | None = None,
        behavior: Behavior | None = None,
        ttl: Duration | None = None,
        dc: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Create a session and return its ID.

        Every field left as None takes the server's default (node: the agent's; lock-delay
        15s; behavior release; no TTL; node checks ``["serfHealth"]``).

        Args:
            name: Human-readable name.
            node: Node to bind the session to (must be registered).
            checks: Legacy ``Checks`` list (Consul keeps serfHealth alongside it).
            node_checks: Node check IDs; replaces serfHealth (``[]`` binds to no node check).
            service_checks: Service check IDs (or :class:`ServiceCheck` with namespace).
            lock_delay: 0..60s; 0 is sent as a real 0.
            behavior: ``"release"`` or ``"delete"``.
            ttl: 0/None for none, otherwise 10s..86400s.
            dc: Datacenter (default: the client's, else the agent's).

        Raises:
            ValidationError: A field is out of range (before any request).
            BadRequest: Consul refused (unknown node or check, check critical).
            PermissionDenied: The token lacks ``session:write`` on the node.
        """
        return await drive(
            self._transport,
            self._ops.create(
                name=name,
                node=node,
                checks=checks,
                node_checks=node_checks,
                service_checks=service_checks,
                lock_delay=lock_delay,
                behavior=behavior,
                ttl=ttl,
                dc=dc,
                timeout=timeout,
            ),
        )

    async def destroy(
        self, session_id: str, *, dc: str | None = None, timeout: float | None = None
    ) -> None:
        """Destroy a session (its keys are released or deleted per its behavior).

        Destroying a session that does not exist succeeds, as in Consul.

        Args:
            session_id: The session.
            dc: Datacenter.
            timeout: Seconds allowed for this request (default: the client's).
        """
        await drive(self._transport, self._ops.destroy(session_id, dc=dc, timeout=timeout))

    async def renew(
        self, session_id: str, *, dc: str | None = None, timeout: float | None = None
    ) -> Session:
        """Renew a session's TTL and return the session as the server sent it.

        The returned ``ttl`` may be higher than the one requested: the server is asking
        clients to renew less often.

        Args:
            session_id: The session.
            dc: Datacenter.
            timeout: Seconds allowed for this request (e.g. what is left of a lease).

        Raises:
            SessionNotFound: The session is gone (destroyed, expired, invalidated).
        """
        return await drive(self._transport, self._ops.renew(session_id, dc=dc, timeout=timeout))

    async def info_with_meta(
        self,
        session_id: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> QueryResult[Session | None]:
        """Read one session (None when it does not exist), with the query metadata.

        With ``index`` this is a blocking query: it returns when the session changes or
        after ``wait`` (default 5 minutes, at most 10).

        Warning:
            With ACLs, Consul answers ``[]`` (so this returns None) also for a *live*
            session the token may not read (no ``session:read`` on its node): None does not
            prove that a session is gone. Only an operation the token may do tells the two
            apart: :meth:`renew` raises :class:`SessionNotFound` for a session that is gone.
            (:class:`LockManager` confirms its own session only by renewing it.)
        """
        return await drive(
            self._transport,
            self._ops.info_with_meta(
                session_id,
                index=index,
                wait=wait,
                consistency=consistency,
                dc=dc,
                timeout=timeout,
            ),
        )

    async def info(
        self,
        session_id: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> Session | None:
        """Read one session; None when it does not exist *or the token may not read it*.

        See :meth:`info_with_meta`: with ACLs, None does not prove the session is gone.
        """
        return (
            await self.info_with_meta(
                session_id,
                index=index,
                wait=wait,
                consistency=consistency,
                dc=dc,
                timeout=timeout,
            )
        ).value

    async def list_with_meta(
        self,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> QueryResult[builtins.list[Session]]:
        """List every active session of the datacenter, with the query metadata.

        With ACLs, sessions on nodes the token may not read (``session:read``) are left out.
        """
        return await drive(
            self._transport,
            self._ops.list_with_meta(index=index, wait=wait, consistency=consistency, dc=dc),
        )

    async def list(
        self,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> builtins.list[Session]:
        """List every active session of the datacenter."""
        return (
            await self.list_with_meta(index=index, wait=wait, consistency=consistency, dc=dc)
        ).value

    async def node_with_meta(
        self,
        node: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> QueryResult[builtins.list[Session]]:
        """List the active sessions of one node, with the query metadata.

        With ACLs, ``[]`` when the token may not read the node's sessions (``session:read``).
        """
        return await drive(
            self._transport,
            self._ops.node_with_meta(node, index=index, wait=wait, consistency=consistency, dc=dc),
        )

    async def node(
        self,
        node: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> builtins.list[Session]:
        """List the active sessions of one node."""
        return (
            await self.node_with_meta(node, index=index, wait=wait, consistency=consistency, dc=dc)
        ).value


class AsyncKVStore(_AsyncApi):
    """The KV and transaction calls, async: the twins of :class:`~locksmith.KVStore`."""

    def __init__(self, transport: AsyncTransport, config: ConnectionConfig) -> None:
        super().__init__(transport, config)
        self._ops = KVOps(config)

    async def get_with_meta(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> QueryResult[KVEntry | None]:
        """Read one key (None when missing), with the query metadata; blocking with index."""
        return await drive(
            self._transport,
            self._ops.get_with_meta(
                key, index=index, wait=wait, consistency=consistency, dc=dc, timeout=timeout
            ),
        )

    async def get(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> KVEntry | None:
        """Read one key; None when missing."""
        return (
            await self.get_with_meta(
                key,
                index=index,
                wait=wait,
                consistency=consistency,
                dc=dc,
                timeout=timeout,
            )
        ).value

    async def list_with_meta(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> QueryResult[builtins.list[KVEntry]]:
        """Read every key under ``prefix`` ("" for all), with metadata; blocking with index."""
        return await drive(
            self._transport,
            self._ops.list_with_meta(
                prefix, index=index, wait=wait, consistency=consistency, dc=dc, timeout=timeout
            ),
        )

    async def list(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> builtins.list[KVEntry]:
        """Read every key under ``prefix``; ``[]`` when there is none."""
        return (
            await self.list_with_meta(
                prefix,
                index=index,
                wait=wait,
                consistency=consistency,
                dc=dc,
                timeout=timeout,
            )
        ).value

    async def put(
        self,
        key: str,
        value: bytes | str = b"",
        *,
        flags: int | None = None,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
        dc: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Write a key; with ``acquire``/``release``/``cas`` the write is conditional.

        Args:
            key: The key.
            value: The value (str is UTF-8 encoded); at most 512 KiB.
            flags: Unsigned 64-bit flags to store with the value.
            cas: Write only if the key's ModifyIndex is this (0: only if it does not exist).
            acquire: Session ID: write only if the key is free or already this session's,
                and take the lock.
            release: Session ID: release the lock this session holds, writing the value.
            dc: Datacenter.
            timeout: Seconds allowed for this request.

        Returns:
            Whether the write took effect (False: held by another session, in a
            lock-delay window, or the CAS index did not match).

        Raises:
            ValidationError: Bad key, value, flags, or more than one of
                ``cas``/``acquire``/``release`` (Consul answers "Conflicting flags").
            SessionNotFound: The ``acquire`` session does not exist.
        """
        return await drive(
            self._transport,
            self._ops.put(
                key,
                value,
                flags=flags,
                cas=cas,
                acquire=acquire,
                release=release,
                dc=dc,
                timeout=timeout,
            ),
        )

    async def delete(
        self, key: str, *, cas: int | None = None, recurse: bool = False, dc: str | None = None
    ) -> bool:
        """Delete a key (or a whole prefix with ``recurse``); with ``cas``, conditionally."""
        return await drive(self._transport, self._ops.delete(key, cas=cas, recurse=recurse, dc=dc))

    async def txn(
        self,
        ops: Sequence[dict[str, Any]],
        *,
        operation: str = "kv.txn",
        resource: str = "",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> TxnOutcome:
        """Run a transaction of KV operations (Consul's ``/v1/txn`` JSON shape).

        Values in ``ops`` must already be base64 text. A rolled-back transaction is not an
        exception: it returns ``ok=False`` with Consul's error texts.

        Raises:
            ValidationError: The encoded transaction exceeds Consul's 512 KiB body limit
                (:data:`MAX_TXN_BODY_BYTES`; values count base64-encoded), before any request.
        """
        return await drive(
            self._transport,
            self._ops.txn(ops, operation=operation, resource=resource, dc=dc, timeout=timeout),
        )

    async def lock(
        self,
        key: str,
        value: bytes,
        session_id: str,
        *,
        flags: int = 0,
        timeout: float | None = None,
    ) -> KVEntry | None:
        """Acquire ``key`` with a session, atomically returning the written entry.

        Uses the txn ``lock`` verb, so the entry's ``modify_index`` (the fencing token) is
        the one this very acquire wrote.

        Args:
            key: The key.
            value: The value to write; at most :data:`MAX_TXN_VALUE_BYTES` (383901) bytes,
                less than a plain PUT takes: in a transaction it travels base64-encoded.
            session_id: The session that takes the lock.
            flags: Unsigned 64-bit flags to store with the value.
            timeout: Seconds allowed for this request.

        Returns:
            The entry on success; None if the key is held by another session or in a
            lock-delay window.

        Raises:
            ValidationError: Bad key, value, session ID or flags (before any request).
            SessionNotFound: The session is gone.
        """
        return await drive(
            self._transport, self._ops.lock(key, value, session_id, flags=flags, timeout=timeout)
        )

    async def lock_many(
        self,
        keys: Sequence[str],
        value: bytes,
        session_id: str,
        *,
        timeout: float | None = None,
    ) -> tuple[tuple[KVEntry, ...], str | None]:
        """Acquire up to 64 keys with a session in one transaction, all or none.

        Args:
            keys: The keys (each a plain lock key).
            value: Written to every key.
            session_id: The session that takes them.
            timeout: Seconds allowed for this request.

        Returns:
            ``(entries, None)`` with the written entries, in ``keys`` order; or
            ``((), key)`` when Consul refused the transaction because of ``key`` (held by
            another session, or in a lock-delay window); nothing was written then.

        Raises:
            ValidationError: Bad keys, value or session ID, or more than 64 keys.
            SessionNotFound: The session is gone.
        """
        return await drive(
            self._transport, self._ops.lock_many(keys, value, session_id, timeout=timeout)
        )
