"""The endpoint groups of :class:`~locksmith.Consul`: ``/v1/session/*``, KV and transactions.

:class:`Sessions` covers every session endpoint with every option of Consul's API;
:class:`KVStore` covers the KV and transaction calls that locks, recipes and the CLI use.
Every read takes ``index``/``wait`` (a blocking query) and a consistency mode; the
``*_with_meta`` variants also hand back X-Consul-Index, KnownLeader and LastContact.

Each endpoint is written once, sans-IO, for the sync client and the async one
(``locksmith.aio``): an *exchange* is a generator that validates its inputs, yields the
:class:`_Request` to send, receives the :class:`RawResponse` and returns the parsed result::

    resp = yield _Request("PUT", "/v1/session/renew/<id>", "session.renew", sid, ...)
    return Session.from_json(...)

:class:`SessionOps`, :class:`KVOps` and :func:`leader_exchange`/:func:`agent_node_exchange`
build the exchanges; a driver carries them out: :func:`drive` here on the sync transport,
``locksmith.aio._endpoints.drive`` on the async one. Both drivers map a non-success answer
with ``locksmith._error_map`` (only statuses in :attr:`_Request.ok` reach the exchange) and
stamp transport errors with the request's operation and resource.

Inputs are validated before any request (``locksmith._validate``): the exchange's first
step runs before the driver sends anything. Answers are parsed into the frozen types of
``locksmith._models``.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import json
from collections.abc import Generator, Iterable, Sequence
from typing import Any, TypeVar, cast

from locksmith._cancel import Cancel
from locksmith._config import ConnectionConfig
from locksmith._durations import Duration, format_duration
from locksmith._error_map import _SESSION_GONE, _denied, _error_for, _json, _json_bool, _json_list
from locksmith._exceptions import (
    ConsulError,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
    ValidationError,
)
from locksmith._models import KVEntry, QueryMeta, QueryResult, ServiceCheck, Session, TxnOutcome
from locksmith._transport import RawResponse, Transport, blocking_timeout
from locksmith._validate import (
    MAX_TXN_BODY_BYTES,
    MAX_TXN_OPS,
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
    check_prefix,
    check_session_id,
    check_ttl,
    check_txn_value,
    check_value,
    check_wait,
)

__all__ = ["KVStore", "Sessions"]

T = TypeVar("T")

_OK = (200,)
_OK_OR_404 = (200, 404)
_OK_OR_409 = (200, 409)


class _Request:
    """One request an exchange asks its driver to send.

    Attributes:
        method: ``GET``, ``PUT`` or ``DELETE``.
        path: The API path, unquoted.
        operation: What is being done, for errors (``"kv.put"``).
        resource: The key, session or node concerned, for errors.
        params: Query parameters, in order.
        body: The request body, if any.
        timeout: Seconds for the whole request; None: the client's (a blocking read always
            sets it: its wait, Consul's jitter and the client's timeout).
        idempotent: Whether it may be sent again after dying on a stale keep-alive connection.
        ok: The statuses handed back to the exchange; any other is mapped to an exception.
        blocking: A blocking query (``index`` given): it may hold its connection for minutes.
    """

    __slots__ = (
        "blocking",
        "body",
        "idempotent",
        "method",
        "ok",
        "operation",
        "params",
        "path",
        "resource",
        "timeout",
    )

    def __init__(
        self,
        method: str,
        path: str,
        operation: str,
        resource: str = "",
        *,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | str | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        ok: tuple[int, ...] = _OK,
        blocking: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.operation = operation
        self.resource = resource
        self.params = params
        self.body = body
        self.timeout = timeout
        self.idempotent = idempotent
        self.ok = ok
        self.blocking = blocking

    def __repr__(self) -> str:
        return f"<_Request {self.method} {self.path} {self.operation}>"


#: A sans-IO endpoint call: yields requests, receives their answers, returns the result.
Exchange = Generator[_Request, RawResponse, T]


def drive(transport: Transport, exchange: Exchange[T], cancel: Cancel | None = None) -> T:
    """Carry out an exchange on the sync transport and return its result.

    Raises:
        ConsulError: A transport error (stamped with the request's operation and resource)
            or a non-success answer mapped by ``locksmith._error_map``.
    """
    request = transport.request
    req = next(exchange)
    while True:
        try:
            resp = request(
                req.method,
                req.path,
                params=req.params,
                body=req.body,
                timeout=req.timeout,
                idempotent=req.idempotent,
                cancel=cancel,
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


def leader_exchange() -> Exchange[str]:
    """``GET /v1/status/leader``: the Raft leader's address ("" when there is none)."""
    resp = yield _Request("GET", "/v1/status/leader", "status.leader")
    return str(_json(resp, "status.leader") or "")


def agent_node_exchange() -> Exchange[str]:
    """``GET /v1/agent/self``: the node name of the agent."""
    resp = yield _Request("GET", "/v1/agent/self", "agent.self")
    try:
        return str(_json(resp, "agent.self")["Config"]["NodeName"])
    except (KeyError, TypeError) as exc:
        raise ProtocolError("agent.self: no Config.NodeName in Consul's answer") from exc


class _Ops:
    """Shared request building of the sans-IO endpoint groups."""

    __slots__ = ("_config",)

    def __init__(self, config: ConnectionConfig) -> None:
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
        timeout: float | None = None,
    ) -> tuple[list[tuple[str, str]], float, bool]:
        """Parameters, timeout and whether it blocks, of a read."""
        index = check_index(index)
        wait_s = check_wait(wait)
        check_consistency(consistency)
        params = self._dc_params(dc)
        if timeout is None:
            timeout = self._config.timeout
        if index:
            params.append(("index", str(index)))
            wait_s = 300.0 if wait_s is None else max(round(wait_s, 3), 0.001)  # Consul's default
            params.append(("wait", format_duration(wait_s)))
            timeout = blocking_timeout(timeout, wait_s)
        if consistency != "default":
            params.append((consistency, ""))
        return params, timeout, bool(index)


class SessionOps(_Ops):
    """The ``/v1/session`` endpoints as exchanges (arguments as in :class:`Sessions`)."""

    __slots__ = ()

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
        timeout: float | None = None,
    ) -> Exchange[str]:
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
        resp = yield _Request(
            "PUT",
            "/v1/session/create",
            "session.create",
            str(body.get("Node", "")),
            params=self._dc_params(dc),
            body=json.dumps(body),
            timeout=timeout,
            idempotent=False,
        )
        data = _json(resp, "session.create")
        try:
            sid = check_session_id(data["ID"], "ID")
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"session.create: no ID in Consul's answer: {data!r}") from exc
        return sid

    def destroy(
        self, session_id: str, *, dc: str | None = None, timeout: float | None = None
    ) -> Exchange[None]:
        sid = check_session_id(session_id)
        yield _Request(
            "PUT",
            f"/v1/session/destroy/{sid}",
            "session.destroy",
            sid,
            params=self._dc_params(dc),
            timeout=timeout,
        )

    def renew(
        self, session_id: str, *, dc: str | None = None, timeout: float | None = None
    ) -> Exchange[Session]:
        sid = check_session_id(session_id)
        resp = yield _Request(
            "PUT",
            f"/v1/session/renew/{sid}",
            "session.renew",
            sid,
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
        timeout: float | None = None,
    ) -> Exchange[QueryResult[Session | None]]:
        sid = check_session_id(session_id)
        params, timeout, blocking = self._read_params(index, wait, consistency, dc, timeout)
        resp = yield _Request(
            "GET",
            f"/v1/session/info/{sid}",
            "session.info",
            sid,
            params=params,
            timeout=timeout,
            blocking=blocking,
        )
        data = _json(resp, "session.info")
        if data is not None and not isinstance(data, list):
            raise ProtocolError(f"session.info: expected a JSON list, got {type(data).__name__}")
        value = Session.from_json(data[0]) if data else None
        return QueryResult(value, QueryMeta.from_headers(resp.headers))

    def _sessions(
        self,
        path: str,
        operation: str,
        resource: str,
        *,
        index: int | None,
        wait: Duration | None,
        consistency: Consistency,
        dc: str | None,
        timeout: float | None = None,
    ) -> Exchange[QueryResult[builtins.list[Session]]]:
        params, timeout, blocking = self._read_params(index, wait, consistency, dc, timeout)
        resp = yield _Request(
            "GET", path, operation, resource, params=params, timeout=timeout, blocking=blocking
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
        timeout: float | None = None,
    ) -> Exchange[QueryResult[builtins.list[Session]]]:
        return self._sessions(
            "/v1/session/list",
            "session.list",
            "",
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
            timeout=timeout,
        )

    def node_with_meta(
        self,
        node: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> Exchange[QueryResult[builtins.list[Session]]]:
        node = check_path_segment(node, "node")
        return self._sessions(
            f"/v1/session/node/{node}",
            "session.node",
            node,
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
            timeout=timeout,
        )


class KVOps(_Ops):
    """The KV and transaction calls as exchanges (arguments as in :class:`KVStore`)."""

    __slots__ = ()

    def get_with_meta(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> Exchange[QueryResult[KVEntry | None]]:
        key = check_key(key)
        params, timeout, blocking = self._read_params(index, wait, consistency, dc, timeout)
        resp = yield _Request(
            "GET",
            f"/v1/kv/{key}",
            "kv.get",
            key,
            params=params,
            timeout=timeout,
            ok=_OK_OR_404,
            blocking=blocking,
        )
        meta = QueryMeta.from_headers(resp.headers)
        if resp.status == 404:
            return QueryResult(None, meta)
        data = _json_list(resp, "kv.get")
        return QueryResult(KVEntry.from_json(data[0]) if data else None, meta)

    def list_with_meta(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
    ) -> Exchange[QueryResult[builtins.list[KVEntry]]]:
        prefix = check_prefix(prefix)
        params, timeout, blocking = self._read_params(index, wait, consistency, dc, timeout)
        params.append(("recurse", ""))
        resp = yield _Request(
            "GET",
            f"/v1/kv/{prefix}",
            "kv.list",
            prefix,
            params=params,
            timeout=timeout,
            ok=_OK_OR_404,
            blocking=blocking,
        )
        meta = QueryMeta.from_headers(resp.headers)
        if resp.status == 404:
            return QueryResult([], meta)
        return QueryResult([KVEntry.from_json(d) for d in _json_list(resp, "kv.list")], meta)

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
    ) -> Exchange[bool]:
        key = check_key(key)
        data = check_value(value)
        if (cas is not None) + (acquire is not None) + (release is not None) > 1:
            given = [
                n
                for n, v in (("cas", cas), ("acquire", acquire), ("release", release))
                if v is not None
            ]
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
        resp = yield _Request(
            "PUT", f"/v1/kv/{key}", "kv.put", key, params=params, body=data, timeout=timeout
        )
        return _json_bool(resp, "kv.put")

    def delete(
        self,
        key: str,
        *,
        cas: int | None = None,
        recurse: bool = False,
        dc: str | None = None,
        timeout: float | None = None,
    ) -> Exchange[bool]:
        key = check_prefix(key, "key") if recurse else check_key(key)
        params = self._dc_params(dc)
        if cas is not None:
            params.append(("cas", str(check_index(cas, "cas"))))
        if recurse:
            params.append(("recurse", ""))
        resp = yield _Request(
            "DELETE", f"/v1/kv/{key}", "kv.delete", key, params=params, timeout=timeout
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
    ) -> Exchange[TxnOutcome]:
        body = json.dumps(list(ops)).encode("ascii")
        if len(body) > MAX_TXN_BODY_BYTES:
            raise ValidationError(
                "ops",
                f"the transaction is {len(body)} bytes of JSON; Consul accepts at most "
                f"{MAX_TXN_BODY_BYTES} (MAX_TXN_BODY_BYTES, txn_max_req_len; values count "
                "base64-encoded, 4 bytes per 3)",
            )
        resp = yield _Request(
            "PUT",
            "/v1/txn",
            operation,
            resource,
            params=self._dc_params(dc),
            body=body,
            timeout=timeout,
            ok=_OK_OR_409,
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
            failed = tuple(
                e["OpIndex"]
                for e in (data.get("Errors") or [])
                if isinstance(e, dict) and isinstance(e.get("OpIndex"), int)
            )
            return TxnOutcome(False, (), errors, meta.index, failed)
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
    ) -> Exchange[KVEntry | None]:
        key = check_key(key)
        data = check_txn_value(value)
        op = {
            "KV": {
                "Verb": "lock",
                "Key": key,
                "Value": base64.b64encode(data).decode("ascii"),
                "Flags": _check_flags(flags),
                "Session": check_session_id(session_id),
            }
        }
        out = yield from self.txn([op], operation="kv.acquire", resource=key, timeout=timeout)
        if not out.ok:
            return None
        entry = out.entries[0] if out.entries else None
        if entry is None:
            raise ProtocolError(f"kv.acquire {key}: Consul's txn answer had no KV result")
        # A txn's results leave the value out; it is the one this acquire wrote. (Built
        # directly: dataclasses.replace costs ~2 us, a share of a sub-millisecond acquire.)
        return KVEntry(
            entry.key,
            data,
            entry.flags,
            entry.session,
            entry.lock_index,
            entry.create_index,
            entry.modify_index,
        )

    def lock_many(
        self,
        keys: Sequence[str],
        value: bytes,
        session_id: str,
        *,
        timeout: float | None = None,
    ) -> Exchange[tuple[tuple[KVEntry, ...], str | None]]:
        if not 0 < len(keys) <= MAX_TXN_OPS:
            raise ValidationError(
                "keys", f"one transaction takes 1 to {MAX_TXN_OPS} keys, got {len(keys)}"
            )
        data = check_txn_value(value)
        ops = lock_ops([check_key(k) for k in keys], data, check_session_id(session_id))
        out = yield from self.txn(ops, operation="kv.acquire", resource=keys[0], timeout=timeout)
        if not out.ok:
            refused = next((keys[i] for i in out.failed if 0 <= i < len(keys)), keys[0])
            return (), refused
        entries = tuple(dataclasses.replace(e, value=data) for e in out.entries if e is not None)
        if len(entries) != len(keys):
            raise ProtocolError(
                f"kv.acquire {keys[0]}: Consul answered {len(entries)} entries for {len(keys)} keys"
            )
        return entries, None


class _Api:
    """Shared plumbing of the sync endpoint groups: the transport and the settings."""

    def __init__(self, transport: Transport, config: ConnectionConfig) -> None:
        self._transport = transport
        self._config = config


class Sessions(_Api):
    """The ``/v1/session`` endpoints: create, destroy, info, node, list, renew."""

    def __init__(self, transport: Transport, config: ConnectionConfig) -> None:
        super().__init__(transport, config)
        self._ops = SessionOps(config)

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
        return drive(
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
        drive(self._transport, self._ops.destroy(session_id, dc=dc, timeout=timeout))

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
        return drive(self._transport, self._ops.renew(session_id, dc=dc, timeout=timeout))

    def info_with_meta(
        self,
        session_id: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
        cancel: Cancel | None = None,
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
        return drive(
            self._transport,
            self._ops.info_with_meta(
                session_id,
                index=index,
                wait=wait,
                consistency=consistency,
                dc=dc,
                timeout=timeout,
            ),
            cancel,
        )

    def info(
        self,
        session_id: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> Session | None:
        """Read one session; None when it does not exist *or the token may not read it*.

        See :meth:`info_with_meta`: with ACLs, None does not prove the session is gone.
        """
        return self.info_with_meta(
            session_id,
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
            timeout=timeout,
            cancel=cancel,
        ).value

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
        return drive(
            self._transport,
            self._ops.list_with_meta(index=index, wait=wait, consistency=consistency, dc=dc),
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
        return drive(
            self._transport,
            self._ops.node_with_meta(node, index=index, wait=wait, consistency=consistency, dc=dc),
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


class KVStore(_Api):
    """The KV calls locksmith needs: reads (blocking), acquire/release, CAS, txn."""

    def __init__(self, transport: Transport, config: ConnectionConfig) -> None:
        super().__init__(transport, config)
        self._ops = KVOps(config)

    def get_with_meta(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> QueryResult[KVEntry | None]:
        """Read one key (None when missing), with the query metadata; blocking with index."""
        return drive(
            self._transport,
            self._ops.get_with_meta(
                key, index=index, wait=wait, consistency=consistency, dc=dc, timeout=timeout
            ),
            cancel,
        )

    def get(
        self,
        key: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> KVEntry | None:
        """Read one key; None when missing."""
        return self.get_with_meta(
            key,
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
            timeout=timeout,
            cancel=cancel,
        ).value

    def list_with_meta(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> QueryResult[builtins.list[KVEntry]]:
        """Read every key under ``prefix`` ("" for all), with metadata; blocking with index."""
        return drive(
            self._transport,
            self._ops.list_with_meta(
                prefix, index=index, wait=wait, consistency=consistency, dc=dc, timeout=timeout
            ),
            cancel,
        )

    def list(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: Duration | None = None,
        consistency: Consistency = "default",
        dc: str | None = None,
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> builtins.list[KVEntry]:
        """Read every key under ``prefix``; ``[]`` when there is none."""
        return self.list_with_meta(
            prefix,
            index=index,
            wait=wait,
            consistency=consistency,
            dc=dc,
            timeout=timeout,
            cancel=cancel,
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
        return drive(
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

    def delete(
        self, key: str, *, cas: int | None = None, recurse: bool = False, dc: str | None = None
    ) -> bool:
        """Delete a key (or a whole prefix with ``recurse``); with ``cas``, conditionally."""
        return drive(self._transport, self._ops.delete(key, cas=cas, recurse=recurse, dc=dc))

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

        Raises:
            ValidationError: The encoded transaction exceeds Consul's 512 KiB body limit
                (:data:`MAX_TXN_BODY_BYTES`; values count base64-encoded), before any request.
        """
        return drive(
            self._transport,
            self._ops.txn(ops, operation=operation, resource=resource, dc=dc, timeout=timeout),
        )

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
        return drive(
            self._transport, self._ops.lock(key, value, session_id, flags=flags, timeout=timeout)
        )

    def lock_many(
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
        return drive(self._transport, self._ops.lock_many(keys, value, session_id, timeout=timeout))


def lock_ops(keys: Sequence[str], value: bytes, session_id: str) -> list[dict[str, Any]]:
    """The ``/v1/txn`` operations that acquire ``keys`` with a session (pure)."""
    encoded = base64.b64encode(value).decode("ascii")
    return [
        {"KV": {"Verb": "lock", "Key": k, "Value": encoded, "Flags": 0, "Session": session_id}}
        for k in keys
    ]


def _check_flags(flags: int) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 2**64:
        raise ValidationError("flags", f"must be an unsigned 64-bit integer, got {flags!r}")
    return flags
