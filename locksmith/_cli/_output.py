"""What the ``locksmith`` command prints: lines, tables, JSON and the rows behind them.

Results go to stdout, messages to stderr. The documented ``--json`` field names live here
(``docs/cli.md`` lists them; tests check both), with the functions that turn sessions, KV
lock entries and election leaders into those objects and into table text. Nothing here
talks to Consul.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from locksmith._compat import (
    CONSUL_LOCK_FLAGS,
    CONSUL_SEMAPHORE_FLAGS,
    FAIR_QUEUE_FLAGS,
    FAIR_RELEASED_FLAGS,
    is_fair_flags,
)
from locksmith._durations import format_duration

if TYPE_CHECKING:  # annotations only: --help and --version need no data classes
    from locksmith._models import KVEntry, QueryMeta, Session

__all__ = [
    "KIND_CONSUL_LOCK",
    "KIND_CONSUL_SEMAPHORE",
    "KIND_FAIR",
    "KIND_LOCKSMITH",
    "KIND_OTHER",
    "LEADER_FIELDS",
    "LOCK_FIELDS",
    "META_FIELDS",
    "PROG",
    "SESSION_FIELDS",
    "err",
    "kind_of",
    "leader_json",
    "leader_text",
    "lock_rows",
    "lock_state_text",
    "meta_json",
    "out",
    "print_json",
    "semaphore_state",
    "session_detail",
    "session_json",
    "sessions_table",
    "table",
]

#: The program name: usage lines, error lines (``locksmith: error: ...``) and log lines.
PROG = "locksmith"

#: KV flags → the lock recipe that writes them (``locks`` reports this as ``kind``).
KIND_LOCKSMITH = "locksmith"
KIND_CONSUL_LOCK = "consul-lock"
KIND_CONSUL_SEMAPHORE = "consul-semaphore"
KIND_FAIR = "locksmith-fair"
KIND_OTHER = "other"
_KINDS = {CONSUL_LOCK_FLAGS: KIND_CONSUL_LOCK, CONSUL_SEMAPHORE_FLAGS: KIND_CONSUL_SEMAPHORE}

#: Field names of the ``--json`` outputs (documented in docs/cli.md; tests check them).
SESSION_FIELDS = (
    "id",
    "name",
    "node",
    "behavior",
    "ttl",
    "lock_delay",
    "node_checks",
    "service_checks",
    "create_index",
    "modify_index",
)
META_FIELDS = ("index", "known_leader", "last_contact")
LOCK_FIELDS = (
    "key",
    "kind",
    "flags",
    "state",
    "session",
    "session_name",
    "node",
    "lock_index",
    "fencing_token",
    "since_index",
    "limit",
    "holders",
    "maybe_lock_delay",
)
LEADER_FIELDS = ("key", "leader", "value", "session", "session_name", "node", "since_index")


# -- printing ------------------------------------------------------------------------------
def out(text: str = "") -> None:
    """One line of result on stdout."""
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    """One line of message on stderr, flushed."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (field order kept)."""
    out(json.dumps(data, indent=2, sort_keys=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align columns: two spaces apart, the last column unpadded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(round(seconds, 3))


# -- sessions ------------------------------------------------------------------------------
def session_json(s: Session) -> dict[str, Any]:
    """The documented JSON object for a session (durations in seconds)."""
    return {
        "id": s.id,
        "name": s.name,
        "node": s.node,
        "behavior": s.behavior,
        "ttl": s.ttl,
        "lock_delay": s.lock_delay,
        "node_checks": list(s.node_checks),
        "service_checks": [{"id": c.id, "namespace": c.namespace} for c in s.service_checks],
        "create_index": s.create_index,
        "modify_index": s.modify_index,
    }


def meta_json(m: QueryMeta) -> dict[str, Any]:
    """The documented JSON object for a read's query meta (last_contact in seconds)."""
    return {"index": m.index, "known_leader": m.known_leader, "last_contact": m.last_contact}


def _checks_text(s: Session) -> str:
    items = list(s.node_checks) + [
        f"{c.id}@{c.namespace}" if c.namespace else c.id for c in s.service_checks
    ]
    return ",".join(items) or "-"


def sessions_table(sessions: Sequence[Session]) -> str:
    """The ``sessions list``/``node`` table, sorted by node, name and ID."""
    rows = [
        [
            s.id,
            s.name or "-",
            s.node,
            s.behavior,
            _dur(s.ttl),
            _dur(s.lock_delay),
            _checks_text(s),
        ]
        for s in sorted(sessions, key=lambda x: (x.node, x.name, x.id))
    ]
    return table(["ID", "NAME", "NODE", "BEHAVIOR", "TTL", "LOCK-DELAY", "CHECKS"], rows)


def session_detail(s: Session) -> str:
    """One session as ``Field  value`` lines (``sessions info``/``renew``)."""
    rows = [
        ["ID", s.id],
        ["Name", s.name or "-"],
        ["Node", s.node],
        ["Behavior", s.behavior],
        ["TTL", _dur(s.ttl)],
        ["LockDelay", _dur(s.lock_delay)],
        ["NodeChecks", ",".join(s.node_checks) or "-"],
        [
            "ServiceChecks",
            ",".join(f"{c.id}@{c.namespace}" if c.namespace else c.id for c in s.service_checks)
            or "-",
        ],
        ["CreateIndex", str(s.create_index)],
        ["ModifyIndex", str(s.modify_index)],
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


# -- locks ---------------------------------------------------------------------------------
def kind_of(flags: int) -> str:
    """The lock recipe a KV entry's flags belong to."""
    if flags == 0:
        return KIND_LOCKSMITH
    if is_fair_flags(flags):
        return KIND_FAIR
    return _KINDS.get(flags, KIND_OTHER)


def semaphore_state(entry: KVEntry) -> tuple[int | None, list[str]]:
    """A Consul semaphore ``.lock`` entry's limit and holders (``(None, [])`` if unreadable)."""
    try:
        data = json.loads(entry.value or b"{}")
        limit = int(data.get("Limit") or 0) or None
        holders = sorted(k for k, v in (data.get("Holders") or {}).items() if v)
    except (ValueError, TypeError, AttributeError):
        return None, []
    return limit, holders


def lock_rows(entries: Sequence[KVEntry], sessions: Mapping[str, Session]) -> list[dict[str, Any]]:
    """Turn KV entries into the ``locks`` rows (documented JSON fields, see LOCK_FIELDS)."""
    semaphores: dict[str, tuple[int | None, list[str]]] = {}
    for e in entries:
        if e.flags == CONSUL_SEMAPHORE_FLAGS and e.key.rsplit("/", 1)[-1] == ".lock":
            semaphores[e.key.rsplit("/", 1)[0] if "/" in e.key else ""] = semaphore_state(e)
    queues = _fair_queues(entries)
    rows: list[dict[str, Any]] = []
    for e in sorted(entries, key=lambda x: x.key):
        kind = kind_of(e.flags)
        if kind == KIND_FAIR:
            rows.append(_fair_row(e, queues, sessions))
            continue
        if e.session is None and kind in (KIND_LOCKSMITH, KIND_OTHER):
            continue  # an ordinary key, not a lock
        row: dict[str, Any] = dict.fromkeys(LOCK_FIELDS)
        row.update(
            key=e.key,
            kind=kind,
            flags=e.flags,
            lock_index=e.lock_index,
            maybe_lock_delay=False,
        )
        parent = e.key.rsplit("/", 1)[0] if "/" in e.key else ""
        is_sem_lock = kind == KIND_CONSUL_SEMAPHORE and e.key.rsplit("/", 1)[-1] == ".lock"
        if is_sem_lock:
            limit, holders = semaphores.get(parent, (None, []))
            row.update(state="semaphore", limit=limit, holders=holders)
        elif e.session is not None:
            s = sessions.get(e.session)
            state = "held"
            if kind == KIND_CONSUL_SEMAPHORE and parent in semaphores:
                state = "held" if e.session in semaphores[parent][1] else "waiting"
            row.update(
                state=state,
                session=e.session,
                session_name=s.name if s else None,
                node=s.node if s else None,
                fencing_token=e.modify_index if state == "held" else None,
                since_index=e.modify_index,
            )
        else:
            row.update(state="free", maybe_lock_delay=True)
        rows.append(row)
    return rows


def _fair_queues(entries: Sequence[KVEntry]) -> dict[str, tuple[set[str], set[str]]]:
    """Per fair queue prefix: (keys of the entries that hold, their sessions)."""
    from locksmith._exceptions import LockConflict  # noqa: PLC0415 - start-up stays light
    from locksmith._queue import decode_queue  # noqa: PLC0415

    by_parent: dict[str, list[KVEntry]] = {}
    for e in entries:
        if is_fair_flags(e.flags) and "/" in e.key:
            by_parent.setdefault(e.key.rsplit("/", 1)[0], []).append(e)
    out: dict[str, tuple[set[str], set[str]]] = {}
    for parent, group in by_parent.items():
        fair = [e for e in group if e.key.endswith("/.lock") or e.flags != FAIR_QUEUE_FLAGS]
        try:
            holders = decode_queue(fair, parent).holders()
        except LockConflict:  # pragma: no cover - fair flags only, by construction
            continue
        out[parent] = ({h.key for h in holders}, {h.session for h in holders if h.session})
    return out


def _fair_row(
    e: KVEntry,
    queues: Mapping[str, tuple[set[str], set[str]]],
    sessions: Mapping[str, Session],
) -> dict[str, Any]:
    """A ``locks`` row for a fair queue's marker or entry (see docs/cli.md)."""
    parent = e.key.rsplit("/", 1)[0] if "/" in e.key else ""
    holding, holders = queues.get(parent, (set(), set()))
    row: dict[str, Any] = dict.fromkeys(LOCK_FIELDS)
    row.update(key=e.key, kind=KIND_FAIR, flags=e.flags, lock_index=e.lock_index)
    row.update(maybe_lock_delay=False)
    if e.flags == FAIR_QUEUE_FLAGS:
        row.update(state="queue", holders=sorted(holders))
        return row
    if e.flags == FAIR_RELEASED_FLAGS or e.session is None:
        row.update(state="released", session=e.session)
        return row
    s = sessions.get(e.session)
    held = e.key in holding
    row.update(
        state="held" if held else "waiting",
        session=e.session,
        session_name=s.name if s else None,
        node=s.node if s else None,
        fencing_token=e.create_index if held else None,
        since_index=e.create_index,
    )
    return row


def lock_state_text(row: Mapping[str, Any]) -> str:
    """The STATE column of a ``locks`` row."""
    if row["state"] == "queue":
        return f"queue, {len(row['holders'])} holding"
    if row["state"] == "semaphore":
        limit = row["limit"] if row["limit"] is not None else "?"
        return f"{len(row['holders'])}/{limit} held"
    if row["state"] == "free":
        return "free (maybe in lock-delay)"
    return str(row["state"])


# -- leader --------------------------------------------------------------------------------
def leader_json(key: str, info: Any) -> dict[str, Any]:
    """The documented JSON object for ``leader`` (``leader`` false when nobody leads)."""
    if info is None:
        return {
            "key": key,
            "leader": False,
            "value": None,
            "session": None,
            "session_name": None,
            "node": None,
            "since_index": None,
        }
    return {
        "key": key,
        "leader": True,
        "value": info.value.decode("utf-8", "replace"),
        "session": info.session_id,
        "session_name": info.session_name,
        "node": info.node,
        "since_index": info.since_index,
    }


def leader_text(key: str, info: Any) -> str:
    """The one-line text form of ``leader``."""
    if info is None:
        return f"{key}: no leader"
    value = info.value.decode("utf-8", "replace")
    return (
        f"{key}: leader {value!r} session {info.session_id} "
        f"name {info.session_name or '-'!r} node {info.node or '-'} since index "
        f"{info.since_index}"
    )
