"""Writes guarded by a lease, written once for the threaded and the asyncio locks.

A fenced write (``fenced_put``) and a holder's rewrite of its own key (``rewrite``, an
election's proclaim) run one transaction that first checks, on the server, that the lock key
still carries the lease's session (``check-session``) and has not been acquired again since
the lease's own latest write (``check-index``). :func:`guarded_write` is that procedure
without I/O: a generator that yields the requests to make and receives their answers, so
that :class:`~locksmith.Lock` drives it with the blocking client and the asyncio lock with
the async one.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from locksmith._deadline import Deadline
from locksmith._exceptions import LockLost
from locksmith._lease import Lease
from locksmith._models import KVEntry, TxnOutcome

__all__ = ["ReadLockKey", "RunTxn", "Step", "Wrote", "guarded_write"]


@dataclass(frozen=True, slots=True)
class RunTxn:
    """Run ``ops`` in ``/v1/txn`` with ``timeout``; send back the :class:`TxnOutcome`."""

    ops: list[dict[str, Any]]
    timeout: float


@dataclass(frozen=True, slots=True)
class ReadLockKey:
    """Read the lock key with ``consistent``; send back the entry (or None)."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Wrote:
    """Tell the manager the lease's key was written at ``index`` (send back None)."""

    index: int


#: What :func:`guarded_write` asks its driver to do.
Step = RunTxn | ReadLockKey | Wrote


def guarded_write(  # noqa: PLR0917 - one call site per lock front-end
    lock_key: str,
    lease: Lease | None,
    op: dict[str, Any],
    fence: Callable[[Lease], tuple[int, float] | None],
    now: Callable[[], float],
    request_timeout: float,
    what: str,
) -> Generator[Step, TxnOutcome | KVEntry | None, TxnOutcome]:
    """Run ``op`` under ``lease``'s checks; return the transaction's outcome.

    If the only failed check is the index and the key still carries our session, someone
    rewrote the key without taking it (a plain PUT keeps the session): Consul still counts the
    lock ours, so the key's new index is adopted (:class:`Wrote`) and the write tried again,
    as long as this lease is still the lock's current one (``fence`` says so).

    Args:
        lock_key: The lock's key.
        lease: The lease to write under.
        op: The transaction operation to guard (a ``lock`` op gets the session filled in).
        fence: The manager's view: (index of our latest write to the key, seconds left), or
            None when the lease is not held.
        now: The manager's clock.
        request_timeout: The client's timeout; a request gets at most the time left.
        what: Names the write in messages.

    Raises:
        LockLost: The lease is gone (locally, or refused by Consul).
    """
    for _ in range(3):
        fenced = fence(lease) if lease is not None else None
        if lease is None or fenced is None:
            raise LockLost(f"{what}: the lock on {lock_key!r} is not held")
        key_index, remaining = fenced
        if op["KV"]["Verb"] == "lock":
            op["KV"]["Session"] = lease.session_id
        ops: list[dict[str, Any]] = [
            {"KV": {"Verb": "check-index", "Key": lock_key, "Index": key_index}},
            {"KV": {"Verb": "check-session", "Key": lock_key, "Session": lease.session_id}},
            op,
        ]
        t = now()
        timeout = Deadline.after(t, remaining).budget(t, request_timeout)
        out = yield RunTxn(ops, timeout)
        assert isinstance(out, TxnOutcome)
        if out.ok:
            return out
        if not all("index check" in e for e in out.errors):
            break
        entry = yield ReadLockKey(timeout)
        if not isinstance(entry, KVEntry) or entry.session != lease.session_id:
            break
        yield Wrote(entry.modify_index)
    raise LockLost(
        f"{what} refused: the lock on {lock_key!r} is no longer held by this lease "
        f"(token {lease.fencing_token if lease else None})"
    )
