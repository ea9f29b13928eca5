"""The invariants a fault scenario must keep, checked on its event log afterwards.

Input: the holders' events (see :mod:`faults.holder`) and the runner's fault log. Output: a
list of violations (human-readable strings); empty means every invariant held.

Invariants, per lock key, over the holds sorted by fencing token (A, then the next one B):

* **tokens**: no token is handed out twice; each holder's tokens on a key increase with time;
* **fencing**: every write Consul accepted for A (fenced, or the stale write after a loss) has
  A.token < index < B.token: nobody's write lands inside someone else's tenure;
* **exclusion in time**: A's belief ends before B acquired. A believes it holds from ``acquire``
  until the last time ``lock.held`` was seen True (it is checked before every write and before
  the release); locksmith's claim is that ``held`` turns False at *last renew start + TTL*,
  before the server can free the key, so no margin beyond that is allowed;
* **loss reported first**: when A's hold ended in a loss, A's loss callback fired before B
  acquired (unless A's process was paused or killed meanwhile: it cannot run callbacks);
* **every loss reported**: each hold that ended in a loss saw its ``on_lost`` callback;
* **pause**: a holder process SIGSTOPped past 2xTTL while holding reports LEASE_EXPIRED on
  resume, its fenced write with the old lease is refused locally, and Consul refuses the same
  write sent with the old session;
* **clean end**: every hold of a holder that closed normally has an ``end`` event.

External interference (a key deleted from outside; a bound health check going critical, whose
lock-delay Consul 1.8.7 does not always enforce) can let the next holder in at once: that hold is
exempt from the time-based checks, never from fencing (see ``EXEMPTING_FAULTS``).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

#: Fault kinds that free a key with no lock-delay and no way for the holder to know first:
#: a DELETE from outside (no lock-delay by design), and a bound health check going critical
#: (measured on a 3-server Consul 1.8.7 cluster: the lock-delay of a session invalidated that
#: way was not enforced in about 1 case out of 4; a destroy always enforced it). Such holds are
#: exempt from the time-based checks, never from fencing. ``key_delete`` names its key;
#: ``check_critical`` lists the holders bound to the check in ``detail["holders"]``.
EXEMPTING_FAULTS = frozenset({"key_delete", "check_critical"})


@dataclass
class Hold:
    """One acquisition, assembled from its events."""

    holder: str
    key: str
    token: int
    session: str
    t_acq: float
    writes: list[Event] = field(default_factory=list)
    refused: list[Event] = field(default_factory=list)
    lost: Event | None = None
    end: Event | None = None

    @property
    def belief_end(self) -> float:
        """The last instant the holder is known to have believed it held the lock."""
        ts = [self.t_acq]
        ts += [w["held_at"] for w in self.writes]
        ts += [w["held_at"] for w in self.refused]
        if self.end is not None:
            ts.append(self.end["last_held"])
        return max(ts)

    def accepted_writes(self) -> list[tuple[str, int]]:
        """(what, index) of every write Consul accepted for this hold."""
        out = [("fenced write", int(w["index"])) for w in self.writes]
        if self.end is not None and self.end.get("stale_ok"):
            out.append(("stale write after the loss", int(self.end["stale_index"])))
        return out

    def __str__(self) -> str:
        return f"{self.holder}#{self.token}"


@dataclass
class Fault:
    """One injected fault, as the runner logged it."""

    kind: str
    t_start: float
    t_end: float
    holder: str | None = None
    key: str | None = None
    session: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def build_holds(events: list[Event]) -> tuple[dict[str, list[Hold]], list[str]]:
    """Group events into holds per key. Returns (holds by key, problems found on the way)."""
    problems: list[str] = []
    holds: dict[tuple[str, str, int], Hold] = {}
    for ev in sorted(events, key=lambda e: float(e.get("t", 0.0))):
        kind = ev.get("ev")
        if kind not in ("acquire", "write", "write_refused", "lost", "end"):
            continue
        ident = (str(ev["holder"]), str(ev["key"]), int(ev["token"]))
        if kind == "acquire":
            if ident in holds:
                problems.append(f"{ident[0]} acquired {ident[1]} twice with token {ident[2]}")
                continue
            holds[ident] = Hold(ident[0], ident[1], ident[2], str(ev["session"]), float(ev["t"]))
            continue
        hold = holds.get(ident)
        if hold is None:
            problems.append(f"{kind} event for an unknown hold {ident}: {ev}")
            continue
        if kind == "write":
            hold.writes.append(ev)
        elif kind == "write_refused":
            hold.refused.append(ev)
        elif kind == "lost":
            if hold.lost is not None:
                problems.append(f"{hold} on {hold.key}: on_lost fired twice for one lease")
            hold.lost = ev
        else:
            hold.end = ev
    by_key: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds.values():
        by_key[hold.key].append(hold)
    for lst in by_key.values():
        lst.sort(key=lambda h: h.token)
    return dict(by_key), problems


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 <= b1 and b0 <= a1


def check(
    events: list[Event],
    faults: list[Fault],
    *,
    ttl: float,
    paused: dict[str, list[tuple[float, float]]] | None = None,
    killed: dict[str, float] | None = None,
    closed: set[str] | None = None,
) -> list[str]:
    """Check every invariant; return the violations (empty: all held).

    Args:
        events: All holders' events.
        faults: The runner's fault log.
        ttl: The session TTL the holders used.
        paused: Per holder, the (SIGSTOP, SIGCONT) instants of its pauses.
        killed: Per holder, when it was SIGKILLed.
        closed: Holders that stopped normally (they must have ended every hold).
    """
    paused = paused or {}
    killed = killed or {}
    closed = closed or set()
    by_key, violations = build_holds(events)

    def out_of_action(holder: str, t0: float, t1: float) -> bool:
        if holder in killed and killed[holder] <= t1:
            return True
        return any(_overlaps(s, c, t0, t1) for s, c in paused.get(holder, []))

    def exempt(hold: Hold, until: float) -> str | None:
        for f in faults:
            hit = f.key == hold.key or hold.holder in f.detail.get("holders", ())
            if f.kind in EXEMPTING_FAULTS and hit and hold.t_acq <= f.t_end and f.t_start <= until:
                return f.kind
        return None

    for key, holds in sorted(by_key.items()):
        # tokens: unique per key
        seen: dict[int, Hold] = {}
        for h in holds:
            if h.token in seen:
                violations.append(
                    f"{key}: token {h.token} handed to both {seen[h.token].holder} and {h.holder}"
                )
            seen[h.token] = h
        # tokens: increasing per holder over time
        per_holder: dict[str, list[Hold]] = defaultdict(list)
        for h in holds:
            per_holder[h.holder].append(h)
        for holder, hs in per_holder.items():
            by_time = sorted(hs, key=lambda h: h.t_acq)
            for x, y in itertools.pairwise(by_time):
                if y.token <= x.token:
                    violations.append(
                        f"{key}: {holder}'s tokens went from {x.token} to {y.token} over time"
                    )
        for i, a in enumerate(holds):
            b = holds[i + 1] if i + 1 < len(holds) else None
            upper = b.token if b is not None else None
            # fencing
            for what, index in a.accepted_writes():
                if index <= a.token or (upper is not None and index >= upper):
                    violations.append(
                        f"{key}: {what} of {a} landed at index {index}, outside its tenure "
                        f"({a.token}, {upper if upper is not None else 'inf'})"
                    )
            if b is None:
                continue
            why_exempt = exempt(a, b.t_acq)
            if why_exempt is not None:
                continue
            # exclusion in time
            if a.belief_end >= b.t_acq:
                violations.append(
                    f"{key}: {a} still believed it held at {a.belief_end:.3f}, but {b} acquired "
                    f"at {b.t_acq:.3f} ({a.belief_end - b.t_acq:.3f}s of overlap)"
                )
            # loss reported before the next holder acquired
            if (
                a.end is not None
                and a.end.get("how") == "lost"
                and not out_of_action(a.holder, a.t_acq, b.t_acq)
            ):
                if a.lost is None:
                    violations.append(f"{key}: {a} lost its lock but on_lost never fired")
                elif float(a.lost["t"]) >= b.t_acq:
                    violations.append(
                        f"{key}: {a}'s loss ({a.lost['reason']}) was reported at "
                        f"{float(a.lost['t']):.3f}, after {b} acquired at {b.t_acq:.3f}"
                    )
        # every loss reported; clean end
        for h in holds:
            if h.end is not None and h.end.get("how") == "lost" and not h.end.get("loss_seen"):
                violations.append(f"{key}: {h} ended in a loss but on_lost did not fire")
            if h.end is None and h.holder in closed:
                violations.append(f"{key}: {h} never ended although its holder closed normally")
    violations += _check_pauses(by_key, paused, ttl)
    return violations


def _check_pauses(
    by_key: dict[str, list[Hold]], paused: dict[str, list[tuple[float, float]]], ttl: float
) -> list[str]:
    out: list[str] = []
    for holder, windows in paused.items():
        for t_stop, t_cont in windows:
            if t_cont - t_stop <= 2 * ttl:
                continue  # not past the server's reaping: nothing certain to check
            for holds in by_key.values():
                for h in holds:
                    if h.holder != holder or h.t_acq >= t_stop:
                        continue
                    if h.end is not None and float(h.end["t"]) < t_stop:
                        continue  # ended before the pause
                    where = f"{h.key}: {h} (paused {t_cont - t_stop:.1f}s while holding)"
                    if h.end is None:
                        out.append(f"{where}: the hold never ended after the resume")
                        continue
                    if h.end.get("how") != "lost":
                        out.append(f"{where}: ended as {h.end.get('how')!r}, not as a loss")
                        continue
                    if h.lost is None or h.lost.get("reason") != "lease_expired":
                        reason = h.lost.get("reason") if h.lost else None
                        out.append(f"{where}: loss reason {reason!r}, expected 'lease_expired'")
                    if h.lost is not None and float(h.lost["t"]) < t_cont:
                        out.append(f"{where}: loss reported while the process was stopped?")
                    if not h.end.get("local_refused"):
                        out.append(f"{where}: fenced_put with the old lease was not refused")
                    if h.end.get("stale_ok") is not False:
                        out.append(
                            f"{where}: Consul did not refuse the write with the old session "
                            f"(stale_ok={h.end.get('stale_ok')!r})"
                        )
    return out
