"""The typed Consul client: every Session endpoint, and the KV/txn calls locks need.

:class:`Consul` is the entry point. ``consul.sessions`` covers ``/v1/session/*`` with
every option of the seed document; ``consul.kv`` covers the KV and transaction calls
that locks, recipes and the CLI use. Every read takes ``index``/``wait`` (a blocking
query) and a consistency mode; the ``*_with_meta`` variants also hand back
X-Consul-Index, KnownLeader and LastContact.

Inputs are validated before any request; answers are parsed into frozen dataclasses
with durations in float seconds.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from locksmith._config import ConnectionConfig
from locksmith._consul2 import RawResponse, Transport, blocking_timeout
from locksmith._durations import Duration, format_duration, from_nanoseconds, parse_duration
from locksmith._exceptions import (
    ACLNotFound,
    BadRequest,
    ConsulError,
    ConsulUnavailable,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    ValidationError,
)
from locksmith._validate import (
    Behavior,
    Consistency,
    check_behavior,
    check_checks,
    check_consistency,
    check_index,
    check_key,
    check_lock_delay,
    check_name,
    check_path_segment,
    check_session_id,
    check_ttl,
    check_value,
    check_wait,
)

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

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceCheck:
    """A service health check a session is bound to."""

    id: str
    namespace: str = ""


@dataclass(frozen=True)
class Session:
    """A Consul session as the server describes it.

    Attributes:
        id: The session ID (a UUID).
        name: Human-readable name ("" when none was given).
        node: The node the session is bound to.
        behavior: ``"release"`` or ``"delete"``: what happens to held keys on invalidation.
        ttl: The TTL in seconds, or None for a session without TTL. After a renewal this
            is the TTL the server asks for, which may be higher than the one requested.
        lock_delay: Seconds that keys held by this session stay unacquirable after it is
            invalidated.
        node_checks: Node health checks the session is bound to (``NodeChecks`` plus any
            legacy ``Checks``).
        service_checks: Service health checks the session is bound to.
        create_index: Raft index of the session's creation.
        modify_index: Raft index of its last modification.
    """

    id: str
    name: str
    node: str
    behavior: Behavior
    ttl: float | None
    lock_delay: float
    node_checks: tuple[str, ...]
    service_checks: tuple[ServiceCheck, ...]
    create_index: int
    modify_index: int

    @classmethod
    def from_json(cls, data: Any) -> Session:
        """Parse one session object of Consul's JSON.

        Raises:
            ProtocolError: The object lacks the documented fields.
        """
        try:
            ttl_text = data.get("TTL") or ""
            ttl = parse_duration(ttl_text, field="TTL") if ttl_text else None
            # Consul >= 1.7 reports NodeChecks and, for a session created with the legacy
            # "Checks" field, those checks separately; the session is bound to both.
            node_checks = list(data.get("NodeChecks") or [])
            node_checks += [c for c in data.get("Checks") or [] if c not in node_checks]
            return cls(
                id=str(data["ID"]),
                name=str(data.get("Name") or ""),
                node=str(data.get("Node") or ""),
                behavior=check_behavior(data.get("Behavior") or "release", "Behavior"),
                ttl=ttl or None,
                lock_delay=from_nanoseconds(data.get("LockDelay", 0), field="LockDelay"),
                node_checks=tuple(str(c) for c in node_checks),
                service_checks=tuple(
                    ServiceCheck(id=str(c["ID"]), namespace=str(c.get("Namespace") or ""))
                    for c in (data.get("ServiceChecks") or [])
                ),
                create_index=int(data.get("CreateIndex", 0)),
                modify_index=int(data.get("ModifyIndex", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"unexpected session object from Consul: {exc!r}") from exc


@dataclass(frozen=True)
class KVEntry:
    """One KV entry.

    Attributes:
        key: The key.
        value: The value (``b""`` when empty).
        flags: The 64-bit flags field (lock recipes mark their keys with it).
        session: The session holding the key, or None.
        lock_index: How many times the key was acquired (reset by plain PUTs and DELETEs,
            so it is not a fencing token; see :attr:`modify_index`).
        create_index: Raft index of the key's creation.
        modify_index: Raft index of its last modification.
    """

    key: str
    value: bytes
    flags: int
    session: str | None
    lock_index: int
    create_index: int
    modify_index: int

    @classmethod
    def from_json(cls, data: Any) -> KVEntry:
        """Parse one KV object of Consul's JSON (base64 value)."""
        try:
            raw = data.get("Value")
            return cls(
                key=str(data["Key"]),
                value=base64.b64decode(raw) if raw else b"",
                flags=int(data.get("Flags") or 0),
                session=str(data["Session"]) if data.get("Session") else None,
                lock_index=int(data.get("LockIndex") or 0),
                create_index=int(data.get("CreateIndex") or 0),
                modify_index=int(data.get("ModifyIndex") or 0),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"unexpected KV object from Consul: {exc!r}") from exc


@dataclass(frozen=True)
class QueryMeta:
    """What Consul says about a read besides its result.

    Attributes:
        index: X-Consul-Index: pass it as ``index`` to block until something changes.
        known_leader: X-Consul-KnownLeader: whether the answering server knew a leader.
        last_contact: X-Consul-LastContact in seconds: how stale a ``stale`` read may be.
    """

    index: int
    known_leader: bool
    last_contact: float

    @classmethod
    def from_headers(cls, headers: dict[str, str] | Any) -> QueryMeta:
        """Read the X-Consul-* headers of an answer."""
        try:
            index = int(headers.get("x-consul-index", "0") or 0)
            last_ms = int(headers.get("x-consul-lastcontact", "0") or 0)
        except ValueError as exc:
            raise ProtocolError(f"malformed X-Consul headers: {exc}") from exc
        known = str(headers.get("x-consul-knownleader", "false")).lower() == "true"
        return cls(index=index, known_leader=known, last_contact=last_ms / 1000.0)


@dataclass(frozen=True)
class QueryResult(Generic[T]):
    """A read's result together with its :class:`QueryMeta`."""

    value: T
    meta: QueryMeta


def next_index(previous: int, returned: int) -> int:
    """The index to block on next, following Consul's rules.

    An index that went backwards (a snapshot restore, a leader change, or an index sent
    that was above the server's) means "start over": 0.

    Args:
        previous: The index the last query blocked on (0 for a first query).
        returned: The X-Consul-Index of its answer.

    Returns:
        The index to pass to the next query.
    """
    if returned < previous or returned < 0:
        return 0
    return returned


class _Api:
    """Shared plumbing of the endpoint groups."""

    def __init__(self, transport: Transport, config: ConnectionConfig) -> None:
        self._transport = transport
        self._config = config

    def _dc_params(self, dc: str | None) -> list[tuple[str, str]]:
        if dc is not None:
            return [("dc", check_name(dc, "dc"))]
        if self._config.datacenter:
            return [("dc", self._config.datacenter)]
        return []

    def _read_params(
        self,
        index: int | None,
        wait: Duration | None,
        consistency: Consistency,
        dc: str | None,
    ) -> tuple[list[tuple[str, str]], float]:
        index = check_index(index)
        wait_s = check_wait(wait)
        check_consistency(consistency)
        params = self._dc_params(dc)
        timeout = self._config.timeout
        if index:
            params.append(("index", str(index)))
            wait_s = 300.0 if wait_s is None else max(round(wait_s, 3), 0.001)  # Consul's default
            params.append(("wait", format_duration(wait_s)))
            timeout = blocking_timeout(timeout, wait_s)
        if consistency != "default":
            params.append((consistency, ""))
        return params, timeout

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        resource: str = "",
        params: Sequence[tuple[str, str]] = (),
        body: bytes | str | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        ok: Iterable[int] = (200,),
    ) -> RawResponse:
        try:
            resp = self._transport.request(
                method, path, params=params, body=body, timeout=timeout, idempotent=idempotent
            )
        except ConsulError as exc:
            exc.operation, exc.resource = operation, resource
            raise
        if resp.status not in tuple(ok):
            raise _error_for(resp, operation, resource)
        return resp


def _json(resp: RawResponse, operation: str) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError as exc:
        raise ProtocolError(
            f"{operation}: Consul answered HTTP {resp.status} with a body that is not JSON: "
            f"{resp.text[:200]!r}"
        ) from exc


def _json_list(resp: RawResponse, operation: str) -> list[Any]:
    """The body as a JSON list (null counts as empty); anything else is a ProtocolError."""
    data = _json(resp, operation)
    if data is None:
        return []
    if not isinstance(data, list):
        raise ProtocolError(
            f"{operation}: expected a JSON list from Consul, got {type(data).__name__}: "
            f"{resp.text[:200]!r}"
        )
    return data


def _json_bool(resp: RawResponse, operation: str) -> bool:
    """The body as JSON true/false; anything else is a ProtocolError."""
    data = _json(resp, operation)
    if not isinstance(data, bool):
        raise ProtocolError(
            f"{operation}: expected true or false from Consul, got {resp.text[:200]!r}"
        )
    return data


_UNAVAILABLE_MARKERS = (
    "no cluster leader",
    "rpc error",
    "failed to get conn",
    "stream closed",
    "connection refused",
    "i/o timeout",
    "leadership lost",
    "not the leader",
    "no leader",
    "raft",
    "timed out",
    "eof",
)

#: 5xx texts that name a problem with the request itself: retrying cannot help. Any other 5xx
#: is taken as the server being unable right now (a leader change answers with new texts in
#: new Consul versions; treating an unknown one as permanent would turn a blip into a crash).
_PERMANENT_MARKERS = (
    "invalid session ttl",
    "missing unit",
    "invalid behavior",
    "missing node registration",
    "missing check",
    "in critical state",
    "no path to datacenter",
    "conflicting flags",
    "request decode failed",
    "must be 36 characters",
    "invalid",
    "missing",
    "bad request",
    "too large",
)


#: Consul's texts for a session that does not exist (not "Invalid Session TTL ...").
_SESSION_GONE = re.compile(r"invalid session \"|session id '[^']*' not found", re.IGNORECASE)


#: Operations that only read; every other kv./session. operation writes.
_READS = frozenset({"kv.get", "kv.list", "session.info", "session.list", "session.node"})


def _denied(operation: str, resource: str) -> str:
    """The text of a 403: which ACL rule the operation needs (never the token)."""
    access = "read" if operation in _READS else "write"
    if operation.startswith("session."):
        if operation == "session.create":
            where = f"node {resource!r}" if resource else "the agent's node"
        elif operation == "session.node":
            where = f"node {resource!r}"
        elif operation == "session.list":
            where = "the sessions' nodes"
        else:
            where = "the session's node"
        rule = f"session:{access} on {where}"
    elif operation.startswith(("kv.", "semaphore.")):
        rule = f"key:{access} on {resource!r}" if resource else f"key:{access}"
    else:
        rule = "a rule for this operation"
    return f"permission denied: the ACL token lacks {rule}"


def _error_for(resp: RawResponse, operation: str, resource: str) -> ConsulError:
    """Turn a non-success answer into the matching locksmith exception."""
    body = resp.text.strip()
    what = f"{operation} {resource}".strip()
    kwargs: dict[str, Any] = {
        "status": resp.status,
        "body": body,
        "operation": operation,
        "resource": resource,
    }
    low = body.lower()
    if resp.status == 403:
        if "acl not found" in low:
            return ACLNotFound(
                f"{what}: Consul does not know the ACL token (unknown, deleted or expired)",
                **kwargs,
            )
        return PermissionDenied(f"{what}: {_denied(operation, resource)}", **kwargs)
    if "client sent an http request to an https server" in low:
        return BadRequest(
            f"{what}: the address serves HTTPS: use an https:// address, scheme='https' or "
            "CONSUL_HTTP_SSL=true",
            **kwargs,
        )
    if resp.status == 404 and operation.startswith("session."):
        return SessionNotFound(f"{what}: session not found", **kwargs)
    if _SESSION_GONE.search(body):
        return SessionNotFound(f"{what}: {body}", **kwargs)
    if resp.status in (400, 413):
        return BadRequest(f"{what}: Consul rejected the request: {body}", **kwargs)
    if resp.status == 429:
        return ConsulUnavailable(f"{what}: Consul is rate-limiting requests: {body}", **kwargs)
    if resp.status >= 500:
        transient = any(marker in low for marker in _UNAVAILABLE_MARKERS)
        if transient or not any(marker in low for marker in _PERMANENT_MARKERS):
            return ConsulUnavailable(f"{what}: Consul is unavailable: {body}", **kwargs)
        return BadRequest(f"{what}: Consul rejected the request: {body}", **kwargs)
    return ConsulError(f"{what}: unexpected HTTP {resp.status} from Consul: {body}", **kwargs)


class Sessions(_Api):
    """The ``/v1/session`` endpoints: create, destroy, info, node, list, renew."""

    def create(
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
        body: dict[str, Any] = {}
        if name is not None:
            body["Name"] = check_name(name, "name")
        if node is not None:
            body["Node"] = check_name(node, "node")
        checks_t = check_checks(checks, "checks")
        if checks_t is not None:
            body["Checks"] = list(checks_t)
        node_checks_t = check_checks(node_checks, "node_checks")
        if node_checks_t is not None:
            body["NodeChecks"] = list(node_checks_t)
        if service_checks is not None:
            if isinstance(service_checks, str | bytes):
                raise ValidationError(
                    "service_checks", "must be a list of check IDs, not a single string"
                )
            svc: list[dict[str, str]] = []
            for i, c in enumerate(service_checks):
                sc = c if isinstance(c, ServiceCheck) else ServiceCheck(id=c)
                entry = {"ID": check_name(sc.id, f"service_checks[{i}]")}
                if sc.namespace:
                    entry["Namespace"] = sc.namespace
                svc.append(entry)
            body["ServiceChecks"] = svc
        if lock_delay is not None:
            body["LockDelay"] = format_duration(check_lock_delay(lock_delay))
        if behavior is not None:
            body["Behavior"] = check_behavior(behavior)
        if ttl is not None:
            ttl_s = check_ttl(ttl)
            body["TTL"] = format_duration(ttl_s) if ttl_s else "0s"
        resp = self._call(
            "PUT",
            "/v1/session/create",
            operation="session.create",
            resource=str(body.get("Node", "")),
            params=self._dc_params(dc),
            body=json.dumps(body),
            idempotent=False,
        )
        data = _json(resp, "session.create")
        try:
            sid = check_session_id(data["ID"], "ID")
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"session.create: no ID in Consul's answer: {data!r}") from exc
        log.debug("session.created", session_id=sid, name=body.get("Name"), ttl=body.get("TTL"))
        return sid

    def destroy(
        self, session_id: str, *, dc: str | None = None, timeout: float | None = None
    ) -> None:
        """Destroy a session (its keys are released or deleted per its behavior).

        Destroying a session that does not exist succeeds, as in Consul.

        Args:
            session_id: The session.
            dc: Datacenter.
            timeout: Seconds allowed for this request (default: the client's).
        """
        sid = check_session_id(session_id)
        self._call(
            "PUT",
            f"/v1/session/destroy/{sid}",
            operation="session.destroy",
            resource=sid,
            params=self._dc_params(dc),
            timeout=timeout,
        )
        log.debug("session.destroyed", session_id=sid)

    def renew(
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
        sid = check_session_id(session_id)
        resp = self._call(
            "PUT",
            f"/v1/session/renew/{sid}",
            operation="session.renew",
            resource=sid,
            params=self._dc_params(dc),
            timeout=timeout,
        )
        data = _json(resp, "session.renew")
        if data is not None and not isinstance(data, list):
            raise ProtocolError(f"session.renew: expected a JSON list, got {type(data).__name__}")
        if not data:
            raise SessionNotFound(
                f"session.renew {sid}: session not found",
                status=resp.status,
                operation="session.renew",
                resource=sid,
            )
        return Session.from_json(data[0])

    def info_with_meta(
        self,
        session_id: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
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
        sid = check_session_id(session_id)
        params, timeout = self._read_params(index, wait, consistency, dc)
        resp = self._call(
            "GET",
            f"/v1/session/info/{sid}",
            operation="session.info",
            resource=sid,
            params=params,
            timeout=timeout,
        )
        data = _json(resp, "session.info")
        if data is not None and not isinstance(data, list):
            raise ProtocolError(f"session.info: expected a JSON list, got {type(data).__name__}")
        value = Session.from_json(data[0]) if data else None
        return QueryResult(value, QueryMeta.from_headers(resp.headers))

    def info(
        self,
        session_id: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> Session | None:
        """Read one session; None when it does not exist *or the token may not read it*.

        See :meth:`info_with_meta`: with ACLs, None does not prove the session is gone.
        """
        return self.info_with_meta(
            session_id, index=index, wait=wait, consistency=consistency, dc=dc
        ).value

    def _list(
        self,
        path: str,
        *,
        operation: str,
        resource: str,
        index: int | None,
        wait: Duration | None,
        consistency: Consistency,
        dc: str | None,
    ) -> QueryResult[builtins.list[Session]]:
        params, timeout = self._read_params(index, wait, consistency, dc)
        resp = self._call(
            "GET", path, operation=operation, resource=resource, params=params, timeout=timeout
        )
        data = _json(resp, operation) or []
        if not isinstance(data, list):
            raise ProtocolError(f"{operation}: expected a JSON list, got {type(data).__name__}")
        return QueryResult(
            [Session.from_json(d) for d in data], QueryMeta.from_headers(resp.headers)
        )

    def list_with_meta(
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
        return self._list(
            "/v1/session/list",
            operation="session.list",
            resource="",
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
        )

    def list(
        self,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> builtins.list[Session]:
        """List every active session of the datacenter."""
        return self.list_with_meta(index=index, wait=wait, consistency=consistency, dc=dc).value

    def node_with_meta(
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
        node = check_path_segment(node, "node")
        return self._list(
            f"/v1/session/node/{node}",
            operation="session.node",
            resource=node,
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
        )

    def node(
        self,
        node: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> builtins.list[Session]:
        """List the active sessions of one node."""
        return self.node_with_meta(
            node, index=index, wait=wait, consistency=consistency, dc=dc
        ).value


@dataclass(frozen=True)
class TxnOutcome:
    """The result of a transaction: entries on success, or Consul's error texts."""

    ok: bool
    entries: tuple[KVEntry | None, ...]
    errors: tuple[str, ...]
    index: int


class KVStore(_Api):
    """The KV calls locksmith needs: reads (blocking), acquire/release, CAS, txn."""

    def get_with_meta(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> QueryResult[KVEntry | None]:
        """Read one key (None when missing), with the query metadata; blocking with index."""
        key = check_key(key)
        params, timeout = self._read_params(index, wait, consistency, dc)
        resp = self._call(
            "GET",
            f"/v1/kv/{key}",
            operation="kv.get",
            resource=key,
            params=params,
            timeout=timeout,
            ok=(200, 404),
        )
        meta = QueryMeta.from_headers(resp.headers)
        if resp.status == 404:
            return QueryResult(None, meta)
        data = _json_list(resp, "kv.get")
        return QueryResult(KVEntry.from_json(data[0]) if data else None, meta)

    def get(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> KVEntry | None:
        """Read one key; None when missing."""
        return self.get_with_meta(key, index=index, wait=wait, consistency=consistency, dc=dc).value

    def list_with_meta(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> QueryResult[builtins.list[KVEntry]]:
        """Read every key under ``prefix`` ("" for all), with metadata; blocking with index."""
        if not isinstance(prefix, str) or prefix.startswith("/"):
            raise ValidationError(
                "prefix", f"must be a string not starting with '/', got {prefix!r}"
            )
        params, timeout = self._read_params(index, wait, consistency, dc)
        params.append(("recurse", ""))
        resp = self._call(
            "GET",
            f"/v1/kv/{prefix}",
            operation="kv.list",
            resource=prefix,
            params=params,
            timeout=timeout,
            ok=(200, 404),
        )
        meta = QueryMeta.from_headers(resp.headers)
        if resp.status == 404:
            return QueryResult([], meta)
        return QueryResult([KVEntry.from_json(d) for d in _json_list(resp, "kv.list")], meta)

    def list(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
    ) -> builtins.list[KVEntry]:
        """Read every key under ``prefix``; ``[]`` when there is none."""
        return self.list_with_meta(
            prefix, index=index, wait=wait, consistency=consistency, dc=dc
        ).value

    def put(
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
        key = check_key(key)
        data = check_value(value)
        given = [
            n
            for n, v in (("cas", cas), ("acquire", acquire), ("release", release))
            if v is not None
        ]
        if len(given) > 1:
            raise ValidationError(
                "+".join(given),
                "cas, acquire and release are mutually exclusive (Consul: Conflicting flags)",
            )
        params = self._dc_params(dc)
        if flags is not None:
            params.append(("flags", str(_check_flags(flags))))
        if cas is not None:
            params.append(("cas", str(check_index(cas, "cas"))))
        if acquire is not None:
            params.append(("acquire", check_session_id(acquire, "acquire")))
        if release is not None:
            params.append(("release", check_session_id(release, "release")))
        resp = self._call(
            "PUT",
            f"/v1/kv/{key}",
            operation="kv.put",
            resource=key,
            params=params,
            body=data,
            timeout=timeout,
        )
        return _json_bool(resp, "kv.put")

    def delete(
        self, key: str, *, cas: int | None = None, recurse: bool = False, dc: str | None = None
    ) -> bool:
        """Delete a key (or a whole prefix with ``recurse``); with ``cas``, conditionally."""
        if recurse:
            if not isinstance(key, str) or key.startswith("/"):
                raise ValidationError("key", f"must be a prefix not starting with '/', got {key!r}")
        else:
            key = check_key(key)
        params = self._dc_params(dc)
        if cas is not None:
            params.append(("cas", str(check_index(cas, "cas"))))
        if recurse:
            params.append(("recurse", ""))
        resp = self._call(
            "DELETE", f"/v1/kv/{key}", operation="kv.delete", resource=key, params=params
        )
        return _json_bool(resp, "kv.delete")

    def txn(
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
        """
        resp = self._call(
            "PUT",
            "/v1/txn",
            operation=operation,
            resource=resource,
            params=self._dc_params(dc),
            body=json.dumps(list(ops)),
            timeout=timeout,
            ok=(200, 409),
        )
        data = _json(resp, operation)
        if not isinstance(data, dict) or (resp.status == 200 and "Results" not in data):
            raise ProtocolError(
                f"{operation}: Consul's transaction answer is not the documented object "
                f"with Results/Errors: {resp.text[:200]!r}"
            )
        meta = QueryMeta.from_headers(resp.headers)
        if resp.status == 409:
            errors = tuple(str(e.get("What", e)) for e in (data.get("Errors") or []))
            for text in errors:
                if _SESSION_GONE.search(text):
                    raise SessionNotFound(
                        f"{operation} {resource}: {text}",
                        status=409,
                        body=resp.text,
                        operation=operation,
                        resource=resource,
                    )
                if "permission denied" in text.lower():
                    raise PermissionDenied(
                        f"{operation} {resource}: {_denied(operation, resource)}",
                        status=409,
                        body=resp.text,
                        operation=operation,
                        resource=resource,
                    )
            return TxnOutcome(False, (), errors, meta.index)
        entries = tuple(
            KVEntry.from_json(r["KV"]) if r.get("KV") else None for r in (data.get("Results") or [])
        )
        return TxnOutcome(True, entries, (), meta.index)

    def lock(
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

        Returns:
            The entry on success; None if the key is held by another session or in a
            lock-delay window.

        Raises:
            SessionNotFound: The session is gone.
        """
        key = check_key(key)
        data = check_value(value)
        op = {
            "KV": {
                "Verb": "lock",
                "Key": key,
                "Value": base64.b64encode(data).decode("ascii"),
                "Flags": _check_flags(flags),
                "Session": check_session_id(session_id),
            }
        }
        out = self.txn([op], operation="kv.acquire", resource=key, timeout=timeout)
        if not out.ok:
            return None
        entry = out.entries[0] if out.entries else None
        if entry is None:
            raise ProtocolError(f"kv.acquire {key}: Consul's txn answer had no KV result")
        # A txn's results leave the value out; it is the one this acquire wrote.
        return dataclasses.replace(entry, value=data)


def _check_flags(flags: int) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 2**64:
        raise ValidationError("flags", f"must be an unsigned 64-bit integer, got {flags!r}")
    return flags


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
        self._api = _Api(self._transport, self.config)
        self.sessions = Sessions(self._transport, self.config)
        self.kv = KVStore(self._transport, self.config)

    def __repr__(self) -> str:
        return f"<Consul {self.config.url} dc={self.config.datacenter or 'default'}>"

    @property
    def consul2(self) -> Any:
        """python-consul2's client object, sharing this client's connections and settings.

        An escape hatch for endpoints locksmith does not wrap; its wrappers keep
        python-consul2's conventions and exceptions.
        """
        return self._transport.consul2

    @property
    def open_connections(self) -> int:
        """HTTP connections this client holds open (one per thread that used it)."""
        return self._transport.open_connections

    def leader(self) -> str:
        """The Raft leader's address ("" when there is none): a cheap liveness probe."""
        resp = self._api._call("GET", "/v1/status/leader", operation="status.leader")
        return str(_json(resp, "status.leader") or "")

    def agent_node(self) -> str:
        """The node name of the agent this client talks to."""
        resp = self._api._call("GET", "/v1/agent/self", operation="agent.self")
        try:
            return str(_json(resp, "agent.self")["Config"]["NodeName"])
        except (KeyError, TypeError) as exc:
            raise ProtocolError("agent.self: no Config.NodeName in Consul's answer") from exc

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
