"""A lock manager's settings, validated once for the threaded and the asyncio front-ends.

:meth:`ManagerSettings.resolve` checks every argument of ``LockManager``/``AsyncLockManager``
before any I/O and raises :class:`~locksmith.ValidationError` naming the field; the resolved
settings then build the state machine's configuration and the session's creation request,
so both managers validate, and behave, the same.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from locksmith._backoff import Backoff
from locksmith._clock import Clock, SystemClock
from locksmith._compat import LOCK_KEY
from locksmith._core import session_node_checks
from locksmith._durations import Duration
from locksmith._endpoints import lock_ops
from locksmith._exceptions import ValidationError
from locksmith._machine import MachineConfig
from locksmith._validate import (
    MAX_TXN_BODY_BYTES,
    MAX_TXN_OPS,
    Behavior,
    check_behavior,
    check_callback,
    check_checks,
    check_key,
    check_lock_delay,
    check_name,
    check_session_id,
    check_ttl,
)

__all__ = ["ManagerSettings", "SessionSpec", "check_keys"]


@dataclass(frozen=True)
class SessionSpec:
    """How a manager creates its session."""

    name: str | None
    node: str | None
    node_checks: tuple[str, ...] | None
    service_checks: tuple[str, ...] | None
    lock_delay: float
    behavior: Behavior
    ttl: float | None


@dataclass(frozen=True)
class ManagerSettings:
    """The validated settings of a lock manager (see ``LockManager`` for each one)."""

    ttl: float | None
    lock_delay: float
    behavior: Behavior
    name: str | None
    checks: tuple[str, ...] | None
    service_checks: tuple[str, ...] | None
    node_checks: tuple[str, ...] | None
    node: str | None
    session_id: str | None
    renew_fraction: float
    clock: Clock
    unsafe_no_ttl: bool
    watch_budget: int
    rng: Callable[[], float]

    @classmethod
    def resolve(
        cls,
        *,
        ttl: Duration | None,
        lock_delay: Duration,
        behavior: Behavior,
        name: str | None,
        checks: Iterable[str] | None,
        service_checks: Iterable[str] | None,
        node: str | None,
        session_id: str | None,
        renew_fraction: float,
        clock: Clock | None,
        unsafe_no_ttl: bool,
        watch_budget: int,
        rng: Callable[[], float] | None,
    ) -> ManagerSettings:
        """Check every argument (no I/O).

        Raises:
            ValidationError: An argument is out of range; the error names it.
        """
        if not isinstance(unsafe_no_ttl, bool):
            raise ValidationError("unsafe_no_ttl", f"must be True or False, got {unsafe_no_ttl!r}")
        seconds = check_ttl(ttl)
        if seconds is None and not unsafe_no_ttl:
            raise ValidationError(
                "ttl",
                "a lock needs a lease deadline: without a TTL, a holder cut off from Consul "
                "would keep believing it holds its locks while another client takes them. "
                "Give a TTL (10s..86400s), or pass unsafe_no_ttl=True to accept that",
            )
        delay = check_lock_delay(lock_delay)
        node_checks = check_checks(checks, "checks")
        svc_checks = check_checks(service_checks, "service_checks")
        if (
            isinstance(renew_fraction, bool)
            or not isinstance(renew_fraction, int | float)
            or not 0 < renew_fraction < 1
        ):
            raise ValidationError("renew_fraction", f"must be in (0, 1), got {renew_fraction!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise ValidationError("clock", f"must be a locksmith.Clock, got {clock!r}")
        if isinstance(watch_budget, bool) or not isinstance(watch_budget, int) or watch_budget < 1:
            raise ValidationError("watch_budget", f"must be an integer >= 1, got {watch_budget!r}")
        if rng is not None:
            check_callback(rng, "rng")
        return cls(
            ttl=seconds,
            lock_delay=delay,
            behavior=check_behavior(behavior),
            name=check_name(name, "name") if name is not None else None,
            checks=node_checks,
            service_checks=svc_checks,
            node_checks=session_node_checks(seconds, delay, node_checks, svc_checks),
            node=check_name(node, "node") if node is not None else None,
            session_id=check_session_id(session_id) if session_id is not None else None,
            renew_fraction=float(renew_fraction),
            clock=clock if clock is not None else SystemClock(),
            unsafe_no_ttl=unsafe_no_ttl,
            watch_budget=watch_budget,
            rng=rng or random.random,
        )

    def machine_config(self, request_timeout: float) -> MachineConfig:
        """The state machine's configuration for a client with ``request_timeout``."""
        draw = self.rng
        return MachineConfig(
            ttl=self.ttl,
            lock_delay=self.lock_delay,
            renew_fraction=self.renew_fraction,
            request_timeout=request_timeout,
            adopt=self.session_id,
            watch_budget=self.watch_budget,
            retry=Backoff(start=0.05, cap=2.0, rng=draw),
            cleanup=Backoff(start=0.25, cap=2.0, rng=draw),
            window=Backoff(start=0.05, cap=5.0, rng=draw),
            log_enabled=logging.getLogger("locksmith.manager").isEnabledFor,
        )

    def session_spec(self) -> SessionSpec:
        """What the session is created with."""
        return SessionSpec(
            name=self.name,
            node=self.node,
            node_checks=self.node_checks,
            service_checks=self.service_checks,
            lock_delay=self.lock_delay,
            behavior=self.behavior,
            ttl=self.ttl,
        )

    def renew_backoff(self) -> Backoff:
        """The renewal loop's retry policy: never more than a tenth of the TTL apart."""
        return Backoff(start=0.1, cap=max(0.5, (self.ttl or 10.0) / 10), rng=self.rng)

    def companion_kwargs(self) -> dict[str, Any]:
        """The settings of the ``Behavior=delete`` companion manager of recipes.

        Lock-delay buys nothing for keys unique to a session or an instance, so it is 0,
        except when health checks are bound: then it must cover the TTL (see ``_core``).
        """
        bound = bool(self.checks) or bool(self.service_checks)
        return {
            "ttl": self.ttl if self.ttl is not None else 0,
            "lock_delay": self.ttl if (bound and self.ttl is not None) else 0,
            "behavior": "delete",
            "name": f"{self.name or 'locksmith'}-ephemeral",
            "checks": self.checks,
            "service_checks": self.service_checks,
            "node": self.node,
            "renew_fraction": self.renew_fraction,
            "clock": self.clock,
            "unsafe_no_ttl": self.unsafe_no_ttl,
            "watch_budget": self.watch_budget,
            "rng": self.rng,
        }


_SESSION_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


def check_keys(keys: Iterable[str], value: bytes) -> tuple[str, ...]:
    """Validate a set's keys (sorted, distinct) and check each batch fits one transaction.

    Raises:
        ValidationError: Not an iterable of keys, empty, a duplicate, a recipe's
            ``.lock`` key, or a value too large for 64 keys per transaction.
    """
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        raise ValidationError("keys", f"must be an iterable of keys, got {keys!r}")
    checked: list[str] = []
    for key in keys:
        if not isinstance(key, str):
            raise ValidationError("keys", f"every key must be a string, got {key!r}")
        checked.append(check_key(key, "keys"))
    if not checked:
        raise ValidationError("keys", "must name at least one key")
    ordered = sorted(checked)
    for a, b in itertools.pairwise(ordered):
        if a == b:
            raise ValidationError("keys", f"{a!r} is named twice")
    for key in ordered:
        if key.rsplit("/", 1)[-1] == LOCK_KEY:
            raise ValidationError(
                "keys",
                f"{key!r} is a '{LOCK_KEY}' key, the layout of consul_lock and semaphores: "
                "lock_many takes plain lock keys",
            )
    for start in range(0, len(ordered), MAX_TXN_OPS):
        batch = ordered[start : start + MAX_TXN_OPS]
        size = len(json.dumps(lock_ops(batch, value, _SESSION_PLACEHOLDER)))
        if size > MAX_TXN_BODY_BYTES:
            raise ValidationError(
                "value",
                f"{len(batch)} keys of {len(value)} bytes each make a {size}-byte transaction;"
                f" Consul accepts at most {MAX_TXN_BODY_BYTES}: use a smaller value",
            )
    return tuple(ordered)
