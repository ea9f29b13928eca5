"""The endpoint groups of :class:`~locksmith.Consul`: ``/v1/session/*``, KV and transactions.

:class:`Sessions` covers every session endpoint with every option of Consul's API;
:class:`KVStore` covers the KV and transaction calls that locks, recipes and the CLI use.
Every read takes ``index``/``wait`` (a blocking query) and a consistency mode; the
``*_with_meta`` variants also hand back X-Consul-Index, KnownLeader and LastContact.

Inputs are validated before any request (``locksmith._validate``); answers are parsed into
the frozen types of ``locksmith._models``; non-success answers become exceptions in
``locksmith._error_map``. Requests go through ``locksmith._transport``.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

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
        timeout: float | None = None,
    ) -> tuple[list[tuple[str, str]], float]:
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
        cancel: Cancel | None = None,
    ) -> RawResponse:
        try:
            resp = self._transport.request(
                method,
                path,
                params=params,
                body=body,
                timeout=timeout,
                idempotent=idempotent,
                cancel=cancel,
            )
        except ConsulError as exc:
            exc.operation, exc.resource = operation, resource
            raise
        if resp.status not in tuple(ok):
            raise _error_for(resp, operation, resource)
        return resp


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
        sid = check_session_id(session_id)
        params, timeout = self._read_params(index, wait, consistency, dc, timeout)
        resp = self._call(
            "GET",
            f"/v1/session/info/{sid}",
            operation="session.info",
            resource=sid,
            params=params,
            timeout=timeout,
            cancel=cancel,
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
        timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> QueryResult[KVEntry | None]:
        """Read one key (None when missing), with the query metadata; blocking with index."""
        key = check_key(key)
        params, timeout = self._read_params(index, wait, consistency, dc, timeout)
        resp = self._call(
            "GET",
            f"/v1/kv/{key}",
            operation="kv.get",
            resource=key,
            params=params,
            timeout=timeout,
            cancel=cancel,
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
        prefix = check_prefix(prefix)
        params, timeout = self._read_params(index, wait, consistency, dc, timeout)
        params.append(("recurse", ""))
        resp = self._call(
            "GET",
            f"/v1/kv/{prefix}",
            operation="kv.list",
            resource=prefix,
            params=params,
            timeout=timeout,
            cancel=cancel,
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
        key = check_prefix(key, "key") if recurse else check_key(key)
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

        Raises:
            ValidationError: The encoded transaction exceeds Consul's 512 KiB body limit
                (:data:`MAX_TXN_BODY_BYTES`; values count base64-encoded), before any request.
        """
        body = json.dumps(list(ops)).encode("ascii")
        if len(body) > MAX_TXN_BODY_BYTES:
            raise ValidationError(
                "ops",
                f"the transaction is {len(body)} bytes of JSON; Consul accepts at most "
                f"{MAX_TXN_BODY_BYTES} (MAX_TXN_BODY_BYTES, txn_max_req_len; values count "
                "base64-encoded, 4 bytes per 3)",
            )
        resp = self._call(
            "PUT",
            "/v1/txn",
            operation=operation,
            resource=resource,
            params=self._dc_params(dc),
            body=body,
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
        out = self.txn([op], operation="kv.acquire", resource=key, timeout=timeout)
        if not out.ok:
            return None
        entry = out.entries[0] if out.entries else None
        if entry is None:
            raise ProtocolError(f"kv.acquire {key}: Consul's txn answer had no KV result")
        # A txn's results leave the value out; it is the one this acquire wrote.
        return dataclasses.replace(entry, value=data)

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
        if not 0 < len(keys) <= MAX_TXN_OPS:
            raise ValidationError(
                "keys", f"one transaction takes 1 to {MAX_TXN_OPS} keys, got {len(keys)}"
            )
        data = check_txn_value(value)
        ops = lock_ops([check_key(k) for k in keys], data, check_session_id(session_id))
        out = self.txn(ops, operation="kv.acquire", resource=keys[0], timeout=timeout)
        if not out.ok:
            refused = next((keys[i] for i in out.failed if 0 <= i < len(keys)), keys[0])
            return (), refused
        entries = tuple(dataclasses.replace(e, value=data) for e in out.entries if e is not None)
        if len(entries) != len(keys):
            raise ProtocolError(
                f"kv.acquire {keys[0]}: Consul answered {len(entries)} entries for {len(keys)} keys"
            )
        return entries, None


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
