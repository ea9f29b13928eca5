"""How Consul's answers become locksmith's exceptions.

A non-success answer is mapped by its status and body text onto the exception tree
(:func:`_error_for`): 403 to :class:`PermissionDenied` naming the ACL rule the operation
needs (never the token), a gone session to :class:`SessionNotFound`, a request Consul
refused to :class:`BadRequest`, a server that cannot answer right now to
:class:`ConsulUnavailable`. A success answer whose body is not the documented JSON shape
is a :class:`ProtocolError` (the ``_json*`` helpers).
"""

from __future__ import annotations

import json
import re
from typing import Any

from locksmith._exceptions import (
    ACLNotFound,
    BadRequest,
    ConsulError,
    ConsulUnavailable,
    PermissionDenied,
    ProtocolError,
    SessionNotFound,
)
from locksmith._transport import RawResponse

__all__: list[str] = []

#: 5xx texts of a server that cannot answer right now (a leader change, a lost RPC link).
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


def _json(resp: RawResponse, operation: str) -> Any:
    """The body as JSON; a body that is not JSON is a ProtocolError."""
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
