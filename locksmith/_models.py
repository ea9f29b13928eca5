"""The answers of Consul's API as frozen dataclasses, and the blocking-query index rule.

Every type here is parsed from Consul's JSON (or its ``X-Consul-*`` headers) with durations
in float seconds; a body without the documented fields raises :class:`ProtocolError`.
Nothing here sends a request.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from locksmith._durations import from_nanoseconds, parse_duration
from locksmith._exceptions import ProtocolError
from locksmith._validate import Behavior, check_behavior

__all__ = [
    "KVEntry",
    "QueryMeta",
    "QueryResult",
    "ServiceCheck",
    "Session",
    "TxnOutcome",
    "next_index",
]

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


@dataclass(frozen=True)
class TxnOutcome:
    """The result of a transaction: entries on success, or Consul's error texts.

    Attributes:
        failed: On failure, the positions (OpIndex) of the operations Consul refused.
    """

    ok: bool
    entries: tuple[KVEntry | None, ...]
    errors: tuple[str, ...]
    index: int
    failed: tuple[int, ...] = ()


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
